"""_core.py: compiled models and the runs of one call, on torch tensors.

A `Compiled` is one ssmc_model (a source, its dims, one device) with its own
context; compiled models are cached for the process by (source, file name,
model, dims, device, threads, algo, chunk), and the library keeps their kernels in
its on-disk cache. A `Call` is what one call of ssmc.Model resolved: the
device, B, T, the sequences of cu_seqlens, the dtypes of the results. The
functions at the end run a Call's forward (optionally keeping tapes for the
backward) and its backward, on host tensors (interp, cpu) or on CUDA tensors
on torch's current stream.

Gradients: the library derives the backward (ssmc_forward_train and
ssmc_backward, their _device forms on CUDA tensors). A device whose backend
refuses it (SSMC_ERR_UNSUPPORTED with a model that the interpreter
differentiates: a chunked core the CUDA core backward does not render) gets
its gradients from a twin of the model on a device that does: the backward
then reruns the training forward there on host copies of the tensors and
casts the gradients back. That is exact (the same function, differentiated by
the same adjoint), only slower; docs/python.md says where it happens.

cu_seqlens: the C API runs batches of equal lengths, so a packed batch runs
one sequence at a time, each from its own initial state and to its own final
state (exactly the varlen semantics of SPEC §3); the per-step tensors of a
packed batch ([1, T, ...], contiguous) are sliced in place, never copied.
"""
import ctypes
import threading

import torch

from . import _lib
from ._lib import Error

_DTYPES = {torch.float32: _lib.F32, torch.float16: _lib.F16, torch.bfloat16: _lib.BF16, torch.float64: _lib.F64}
DEVICES = {"interp": _lib.DEVICE_INTERP, "cpu": _lib.DEVICE_CPU, "cuda": _lib.DEVICE_CUDA}


def dtype_code(t, what):
    try:
        return _DTYPES[t.dtype]
    except KeyError:
        raise Error(f"{what} has dtype {t.dtype}; ssmc takes float32, float16 or bfloat16 "
                    f"(float64 on device='interp')") from None


class TensorSpec:
    """One public tensor of a model (ssmc_tensor_info)."""
    __slots__ = ("name", "bname", "role", "per_step", "shape")

    def __init__(self, info):
        self.name = info.name.decode()
        self.bname = info.name
        self.role = info.role
        self.per_step = bool(info.per_step)
        self.shape = tuple(info.shape[i] for i in range(info.rank))

    def full_shape(self, B, T):
        """SPEC §5: an input or output [B, T, ...], a state [B, ...], a param as declared."""
        if self.role == _lib.ROLE_PARAM:
            return self.shape
        if self.per_step:
            return (B, T) + self.shape
        return (B,) + self.shape


class Compiled:
    """One compiled model: the library's model and context, used under a lock
    (a context serves one thread at a time)."""

    def __init__(self, source, filename, model, dims, device, threads, algo, chunk=0):
        lib = self.lib = _lib.library()
        self.device = device
        self.lock = threading.Lock()
        self.ctx = lib.ctx_new()
        self.ptr = None
        if not self.ctx:
            raise Error("out of memory (ssmc_ctx_new)")
        src = source.encode()
        dim_arr = (_lib.Dim * max(len(dims), 1))()
        keep = []
        for i, (k, v) in enumerate(dims):
            keep.append(k.encode())
            dim_arr[i].name, dim_arr[i].value = keep[-1], int(v)
        opts = _lib.Options()
        opts.model = model.encode() if model else None
        opts.dims, opts.ndims = dim_arr, len(dims)
        opts.device, opts.algo, opts.threads, opts.chunk = DEVICES[device], _lib.ALGOS[algo], threads, chunk
        out = ctypes.c_void_p()
        st = lib.compile(self.ctx, filename.encode(), src, len(src), ctypes.byref(opts), ctypes.byref(out))
        if st != _lib.OK:
            msg = self.error_text(st)
            lib.ctx_free(self.ctx)
            self.ctx = None
            raise Error(msg, lib.status_text(st))
        self.ptr = out
        self.name = lib.model_name(out).decode()
        self.tensors = []
        info = _lib.TensorInfo()
        for i in range(lib.model_num_tensors(out)):
            lib.model_tensor(out, i, ctypes.byref(info))
            self.tensors.append(TensorSpec(info))
        # gradients: None until asked; then "native" or a twin Compiled on another device
        self.grad_via = None
        # every device runs its own backward (CUDA on device pointers); a
        # refusal at the training forward turns this off (ssmc.Model's forward)
        self.device_grad = True

    def error_text(self, status):
        text = self.lib.ctx_error(self.ctx).decode().rstrip("\n")
        return text or f"ssmc: {self.lib.status_text(status)}"

    def check(self, status, what):
        if status != _lib.OK:
            raise Error(f"{what}: {self.error_text(status)}", self.lib.status_text(status))

    def __del__(self):
        lib = getattr(self, "lib", None)
        if lib is None:
            return
        if getattr(self, "ptr", None):
            lib.model_free(self.ptr)
        if getattr(self, "ctx", None):
            lib.ctx_free(self.ctx)


_cache_lock = threading.Lock()
_cache = {}


def compiled(source, filename, model, dims, device, threads=0, algo="auto", chunk=0):
    """The process-wide compiled model for these settings (compiled once)."""
    key = (source, filename, model, dims, device, threads, algo, chunk)
    with _cache_lock:
        c = _cache.get(key)
    if c is None:
        c = Compiled(source, filename, model, dims, device, threads, algo, chunk)
        with _cache_lock:
            c = _cache.setdefault(key, c)
    return c


class Tape:
    """An ssmc_tape, freed with its owner."""
    __slots__ = ("lib", "ptr")

    def __init__(self, lib, ptr):
        self.lib, self.ptr = lib, ptr

    def __del__(self):
        if self.ptr:
            self.lib.tape_free(self.ptr)
            self.ptr = None


class Call:
    """What one call resolved (see ssmc.Model.forward)."""

    def __init__(self, model, device, B, T, nseq, seqs, names, out_dtype, state_dtypes, final_states, torch_device):
        self.model = model              # the ssmc.Model
        self.device = device            # "interp" | "cpu" | "cuda"
        self.B, self.T = B, T           # the tensors' B and T (B = 1 with cu_seqlens)
        self.nseq = nseq                # sequences: B, or N of cu_seqlens
        self.seqs = seqs                # None, or [(bos, eos)] of cu_seqlens (unknown under shapes_only)
        self.names = names              # the flat tensor list's names: inputs, params, states
        self.out_dtype = out_dtype
        self.state_dtypes = state_dtypes  # one per state: the final state's dtype
        self.final_states = final_states  # output_final_state
        self.torch_device = torch_device


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def _stream(call):
    if call.device != "cuda":
        return None
    return ctypes.c_void_p(torch.cuda.current_stream(call.torch_device).cuda_stream)


def _pieces(call):
    """(batch, T, slice of the per-step axis, slice of the state axis) of each
    library call: the whole batch, or one sequence of cu_seqlens at a time."""
    if call.seqs is None:
        return [(call.B, call.T, slice(None), slice(None))]
    return [(1, eos - bos, slice(bos, eos), slice(i, i + 1)) for i, (bos, eos) in enumerate(call.seqs)]


def _cut(spec, t, steps, seqs):
    """The part of tensor t (contiguous) that one library call reads or writes."""
    if spec.role == _lib.ROLE_PARAM:
        return t
    if spec.per_step:
        return t[:, steps]
    return t[seqs]


def prepare_tensors(tensors, host_dtype=None, host=False):
    """The tensors as the library takes them: contiguous, on the host and in
    host_dtype when asked (interp: float64)."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        if host:
            t = t.detach().to("cpu")
        if host_dtype is not None and t.dtype != host_dtype:
            t = t.to(host_dtype)
        out.append(t.detach().contiguous())
    return out


def run_forward(call, comp, tensors, train):
    """Runs the forward of `call` on `comp` with `tensors` (inputs, params,
    initial states: prepared), returning (outputs, final states, tapes)."""
    model = call.model
    lib = comp.lib
    dev = call.torch_device
    specs = model._specs
    n_in = len(model._input_names) + len(model._param_names)
    outs = [torch.empty(s.full_shape(call.B, call.T), dtype=call.out_dtype, device=dev) for s in model._outputs]
    states, flags = [], []
    for i, s in enumerate(model._states):
        init = tensors[n_in + i]
        if init is not None:
            states.append(init.to(dtype=call.state_dtypes[i], device=dev, copy=True).contiguous())
            flags.append(0)
        elif call.final_states or train:
            # not given: the library starts it from its init (zero without one)
            # and only writes the final state into the buffer
            states.append(torch.zeros((call.nseq,) + s.shape, dtype=call.state_dtypes[i], device=dev))
            flags.append(_lib.ARG_FINAL_ONLY)
        else:
            states.append(None)
            flags.append(0)
    values = list(tensors[:n_in])
    tapes = []
    stream = _stream(call)
    with comp.lock:
        for batch, T, steps, seqs in _pieces(call):
            if T == 0:  # an empty sequence: the final state is the initial state
                tapes.append(None)
                continue
            pairs = []
            for name, t in zip(call.names[:n_in], values):
                pairs.append((specs[name].bname, _DTYPES[t.dtype], _ptr(_cut(specs[name], t, steps, seqs))))
            for s, t, f in zip(model._states, states, flags):
                if t is not None:
                    pairs.append((s.bname, _DTYPES[t.dtype], _ptr(t[seqs]), f))
            for s, t in zip(model._outputs, outs):
                pairs.append((s.bname, _DTYPES[t.dtype], _ptr(t[:, steps])))
            arr, n = _lib.make_args(pairs)
            if train:
                tape = ctypes.c_void_p()
                if call.device == "cuda":
                    st = lib.forward_train_device(comp.ptr, batch, T, arr, n, ctypes.byref(tape), stream)
                else:
                    st = lib.forward_train(comp.ptr, batch, T, arr, n, ctypes.byref(tape))
                comp.check(st, f"{model.name}: the training forward")
                tapes.append(Tape(lib, tape))
            elif call.device == "cuda":
                comp.check(lib.run_device(comp.ptr, batch, T, arr, n, stream), model.name)
            else:
                comp.check(lib.run(comp.ptr, batch, T, arr, n), model.name)
    finals = [states[i] for i in range(len(model._states))] if call.final_states else []
    return outs, finals, tapes


def run_backward(call, comp, tensors, tapes, douts, needs, grad_dtypes):
    """The backward of `call` on `comp`: `tensors` the prepared inputs,
    params and initial states of the forward, `tapes` its tapes, `douts` the
    cotangents (outputs, then final states; None for zero), `needs` which of
    `tensors` want a gradient. Returns one gradient (or None) per tensor, in
    grad_dtypes on the tensors' device."""
    model = call.model
    lib = comp.lib
    dev = tensors[0].device if tensors and tensors[0] is not None else call.torch_device
    specs = model._specs
    n_in = len(model._input_names) + len(model._param_names)
    grads = [None] * len(tensors)
    param_acc = {}
    for i, name in enumerate(call.names):
        if not needs[i]:
            continue
        s = specs[name]
        if s.role == _lib.ROLE_PARAM:
            # the library sums over the batch and the steps; over the sequences
            # of cu_seqlens it is summed here, in the working precision
            acc_dtype = torch.float64 if call.device == "interp" else torch.float32
            param_acc[i] = torch.zeros(s.shape, dtype=acc_dtype, device=dev)
        elif s.role == _lib.ROLE_STATE:
            grads[i] = torch.zeros((call.nseq,) + s.shape, dtype=grad_dtypes[i], device=dev)
        else:
            grads[i] = torch.zeros((call.B, call.T) + s.shape, dtype=grad_dtypes[i], device=dev)
    douts = [None if d is None else d.contiguous() for d in douts]
    stream = _stream(call)
    with comp.lock:
        for (batch, T, steps, seqs), tape in zip(_pieces(call), tapes):
            if tape is None:  # an empty sequence: dL/dS0 = dL/dS(T)
                for j, s in enumerate(model._states):
                    i = n_in + j
                    d = douts[len(model._outputs) + j] if call.final_states else None
                    if grads[i] is not None and d is not None:
                        grads[i][seqs] = d[seqs].to(grads[i].dtype)
                continue
            vals = []
            for name, t in zip(call.names[:n_in], tensors[:n_in]):
                vals.append((specs[name].bname, _DTYPES[t.dtype], _ptr(_cut(specs[name], t, steps, seqs))))
            dts = []
            for s, d in zip(model._outputs, douts):
                if d is not None:
                    dts.append((s.bname, _DTYPES[d.dtype], _ptr(d[:, steps])))
            if call.final_states:
                for s, d in zip(model._states, douts[len(model._outputs):]):
                    if d is not None:
                        dts.append((s.bname, _DTYPES[d.dtype], _ptr(d[seqs])))
            gps = []
            piece_param = {}
            for i, name in enumerate(call.names):
                if not needs[i]:
                    continue
                s = specs[name]
                if s.role == _lib.ROLE_PARAM:
                    buf = param_acc[i] if call.seqs is None else torch.empty_like(param_acc[i])
                    piece_param[i] = buf
                    gps.append((s.bname, _DTYPES[buf.dtype], _ptr(buf)))
                else:
                    gps.append((s.bname, _DTYPES[grads[i].dtype], _ptr(_cut(s, grads[i], steps, seqs))))
            va, nv = _lib.make_args(vals)
            da, nd = _lib.make_args(dts)
            ga, ng = _lib.make_args(gps)
            if call.device == "cuda":
                st = lib.backward_device(comp.ptr, tape.ptr, va, nv, da, nd, ga, ng, stream)
            else:
                st = lib.backward(comp.ptr, tape.ptr, va, nv, da, nd, ga, ng)
            comp.check(st, f"{model.name}: the backward")
            if call.seqs is not None:
                for i, buf in piece_param.items():
                    param_acc[i] += buf
    for i, acc in param_acc.items():
        grads[i] = acc.to(grad_dtypes[i])
    return grads


def twin_call(call, twin):
    """The call as the twin device runs it: host tensors, its working dtype."""
    dt = torch.float64 if twin.device == "interp" else torch.float32
    c = Call(call.model, twin.device, call.B, call.T, call.nseq, call.seqs, call.names, dt,
             [dt] * len(call.state_dtypes), call.final_states, torch.device("cpu"))
    return c, dt


def gradients(call, comp, route, tensors, tapes, douts, needs, dtypes):
    """The gradients of one call (None where not needed), each in its dtype
    on the call's device. route "native": comp's own backward, from `tapes`
    (None: a training forward first) and `tensors` prepared for comp; else
    route is the twin Compiled: a training forward and the backward there,
    on host copies."""
    if route == "native":
        if tapes is None:
            _, _, tapes = run_forward(call, comp, tensors, train=True)
        work = [torch.float64 if call.device == "interp" else d for d in dtypes]
        grads = run_backward(call, comp, tensors, tapes, douts, needs, work)
    else:
        tcall, dt = twin_call(call, route)
        host = prepare_tensors(tensors, dt, host=True)
        _, _, tapes = run_forward(tcall, route, host, train=True)
        hd = [None if d is None else d.detach().to("cpu", dt) for d in douts]
        grads = run_backward(tcall, route, host, tapes, hd, needs, [dt] * len(needs))
    return [None if g is None else g.to(device=call.torch_device, dtype=d) for g, d in zip(grads, dtypes)]
