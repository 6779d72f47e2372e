"""ssmc: recurrent sequence models compiled by ssmc, as PyTorch modules.

    import ssmc
    m = ssmc.load("examples/mamba2.ssm", dims={"H": 8})
    out = m(x=x, dt=dt, B=B, C=C, A_log=A_log, D=D, dt_bias=dt_bias,
            initial_state={"S": s0}, output_final_state=True)
    out["y"], out["S"]            # [B, T, H, P] and the final state [B, H, P, N]

The package binds libssmc.so with ctypes (no build against torch's C++ ABI,
so it works with any torch >= 1.13). `ssmc.ops` holds drop-in replacements
for flash-linear-attention's and mamba_ssm's kernels. See docs/python.md.
"""
import ctypes
import itertools
import os
import weakref

import torch

from . import _core, _lib, _torchop
from ._lib import Error, find_library

__all__ = ["load", "Model", "Error", "find_library", "example_path", "__version__"]
__version__ = "0.1.0"

_HOST_FLOAT = {"interp": torch.float64}


def example_path(name):
    """The path of a model of the project's zoo (examples/NAME.ssm), installed
    with the package or in the checkout it lives in."""
    here = os.path.dirname(os.path.abspath(__file__))
    fname = name if name.endswith(".ssm") else name + ".ssm"
    for d in (os.path.join(here, "models"), os.path.join(os.path.dirname(os.path.dirname(here)), "examples")):
        p = os.path.join(d, fname)
        if os.path.isfile(p):
            return p
    raise Error(f"no model file {fname} in the package's models or the checkout's examples/")


def _read_source(path_or_source):
    if isinstance(path_or_source, os.PathLike):
        path_or_source = os.fspath(path_or_source)
    if not isinstance(path_or_source, str):
        raise Error(f"ssmc.load takes a path or source text, not {type(path_or_source).__name__}")
    if "{" in path_or_source or "\n" in path_or_source:
        return path_or_source, "<source>"
    if not os.path.isfile(path_or_source):
        raise Error(f"{path_or_source}: no such file (ssmc.load takes a path to a .ssm file or source text)")
    with open(path_or_source, encoding="utf-8") as f:
        return f.read(), path_or_source


def load(path_or_source, dims=None, model=None, device=None, *, threads=0, algo="auto", chunk=0):
    """Compiles a model and returns it as a torch.nn.Module (ssmc.Model).

    path_or_source: a .ssm file or the source text itself. dims: {name:
    size} overrides of the file's dims. model: which model of the file (the
    first by default). device: "cpu" (LLVM), "cuda" (NVRTC, tensors on
    cuda:0), "interp" (the f64 reference interpreter), or None: the device of
    the tensors of each call. threads: CPU workers (0: all cores). algo: the
    algorithm override (SPEC §3); chunk: the chunked algorithm's chunk
    length (0: its default). A bad source raises ssmc.Error with the
    compiler's diagnostics."""
    source, filename = _read_source(path_or_source)
    if device is not None and device not in _core.DEVICES:
        raise Error(f"unknown device {device!r}: use 'cpu', 'cuda', 'interp' or None")
    if algo not in _lib.ALGOS:
        raise Error(f"unknown algo {algo!r}: use one of {', '.join(_lib.ALGOS)}")
    return Model(source, filename, dims, model, device, threads, algo, chunk)


_keys = itertools.count()
_registry = weakref.WeakValueDictionary()  # for the torch.library op: key -> Model


class Model(torch.nn.Module):
    """A compiled ssmc model. Call it with the model's inputs and params by
    name (torch tensors, shapes as in SPEC §5); see forward."""

    def __init__(self, source, filename, dims, model, device, threads, algo, chunk=0):
        super().__init__()
        if dims is None:
            dims = {}
        if not isinstance(dims, dict):
            raise Error("dims must be a dict {name: size}")
        self._source, self._filename, self._model = source, filename, model
        self._dims = tuple(sorted((str(k), int(v)) for k, v in dims.items()))
        self._device, self._threads, self._algo, self._chunk = device, int(threads), algo, int(chunk)
        base = self._compiled(device or "interp")  # the source is checked here
        self.name = base.name
        self._specs = {s.name: s for s in base.tensors}
        by = lambda role: [s for s in base.tensors if s.role == role]
        self._inputs, self._params = by(_lib.ROLE_INPUT), by(_lib.ROLE_PARAM)
        self._states, self._outputs = by(_lib.ROLE_STATE), by(_lib.ROLE_OUTPUT)
        self._input_names = [s.name for s in self._inputs]
        self._param_names = [s.name for s in self._params]
        self._arg_names = self._input_names + self._param_names + [s.name for s in self._states]
        self._key = f"{self.name}#{next(_keys)}"
        _registry[self._key] = self

    # ---- what the model takes and gives (declared axes; T and B excluded)
    @property
    def inputs(self):
        return {s.name: s.shape for s in self._inputs}

    @property
    def params(self):
        return {s.name: s.shape for s in self._params}

    @property
    def states(self):
        return {s.name: s.shape for s in self._states}

    @property
    def outputs(self):
        return {s.name: s.shape for s in self._outputs}

    @property
    def device(self):
        return self._device

    def extra_repr(self):
        dims = ", ".join(f"{k}={v}" for k, v in self._dims)
        return f"model={self.name!r}, file={self._filename!r}, device={self._device!r}" + (f", dims=({dims})" if dims else "")

    def _compiled(self, device):
        return _core.compiled(self._source, self._filename, self._model, self._dims, device, self._threads,
                              self._algo, self._chunk)

    # ---- one call
    def forward(self, initial_state=None, output_final_state=False, cu_seqlens=None, out_dtype=None, **tensors):
        """Runs the model. Keyword arguments: every input ([B, T, ...]) and
        param (as declared) by name; initial_state: {state: [B, ...]} ([N,
        ...] with cu_seqlens); output_final_state: also return the final
        states; cu_seqlens: offsets [N+1] of N sequences packed along T of a
        batch of one (int32/int64 tensor or list; first 0, last T). Returns
        {output: [B, T, ...]} plus {state: final state} when asked.
        Outputs take the inputs' dtype (their promotion, unless out_dtype
        says otherwise), final states float32 (float64 on interp).
        Differentiable with respect to every input, param and initial state."""
        if _torchop.compiling():
            return _torchop.forward(self, tensors, initial_state, bool(output_final_state), cu_seqlens, out_dtype)
        call, flat = self._resolve(tensors, initial_state, output_final_state, cu_seqlens, out_dtype)
        train = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in flat)
        results = _Function.apply(call, train, *flat)
        return self._result_dict(call, results)

    def _result_dict(self, call, results):
        names = [s.name for s in self._outputs] + ([s.name for s in self._states] if call.final_states else [])
        return dict(zip(names, results))

    def _resolve(self, tensors, initial_state, output_final_state, cu_seqlens, out_dtype=None, shapes_only=False):
        """Checks a call's arguments and decides its device, B, T, dtypes.
        Returns (Call, flat tensors: inputs, params, initial states or None).
        shapes_only: no host copy of cu_seqlens (the fake kernel under
        torch.compile), so the sequences are not known."""
        name = self.name
        for k in tensors:
            s = self._specs.get(k)
            if s is None:
                raise Error(f"model '{name}' has no input or param named '{k}' "
                            f"(inputs: {', '.join(self._input_names) or 'none'}; "
                            f"params: {', '.join(self._param_names) or 'none'})")
            if s.role == _lib.ROLE_STATE:
                raise Error(f"'{k}' is a state of model '{name}': give it as initial_state={{'{k}': tensor}}")
            if s.role == _lib.ROLE_OUTPUT:
                raise Error(f"'{k}' is an output of model '{name}', not an argument")
        if initial_state is None:
            initial_state = {}
        if not isinstance(initial_state, dict):
            raise Error("initial_state must be a dict {state name: tensor}")
        for k in initial_state:
            if k not in self._specs or self._specs[k].role != _lib.ROLE_STATE:
                raise Error(f"model '{name}' has no state named '{k}' "
                            f"(states: {', '.join(s.name for s in self._states) or 'none'})")
        flat = []
        for k in self._input_names + self._param_names:
            if k not in tensors:
                raise Error(f"missing {'input' if self._specs[k].role == _lib.ROLE_INPUT else 'param'} '{k}' "
                            f"of model '{name}'")
            t = tensors[k]
            if isinstance(t, (int, float)) and self._specs[k].role == _lib.ROLE_PARAM and not self._specs[k].shape:
                t = torch.tensor(float(t))
            if not isinstance(t, torch.Tensor):
                raise Error(f"'{k}' must be a torch.Tensor, not {type(t).__name__}")
            flat.append(t)
        for s in self._states:
            t = initial_state.get(s.name)
            if t is not None and not isinstance(t, torch.Tensor):
                raise Error(f"initial_state['{s.name}'] must be a torch.Tensor, not {type(t).__name__}")
            flat.append(t)

        # the device: one for every tensor (scalar params may sit on the CPU)
        tdev = None
        for k, t in zip(self._arg_names, flat):
            if t is None or (t.dim() == 0 and t.device.type == "cpu"):
                continue
            if tdev is None:
                tdev = t.device
            elif t.device != tdev:
                raise Error(f"'{k}' is on {t.device} but '{self._arg_names[0]}' and the others are on {tdev}: "
                            f"every tensor of a call must be on one device")
        if tdev is None:
            tdev = torch.device("cpu")
        kind = "cuda" if tdev.type == "cuda" else "cpu"
        if tdev.type not in ("cpu", "cuda", "meta"):
            raise Error(f"tensors on {tdev} are not supported: ssmc runs on the CPU and on cuda:0")
        if self._device == "interp":
            if kind == "cuda":
                raise Error(f"model '{name}' was loaded for device 'interp', which takes CPU tensors, "
                            f"but got tensors on {tdev}")
            device = "interp"
        elif self._device is None:
            device = kind
        elif self._device != kind:
            raise Error(f"model '{name}' was loaded for device '{self._device}' but got tensors on {tdev}")
        else:
            device = kind
        if device == "cuda" and tdev.index not in (None, 0):
            raise Error(f"tensors on {tdev}: ssmc's CUDA backend runs on cuda:0 (the primary context of device 0)")
        for i, (k, t) in enumerate(zip(self._arg_names, flat)):
            if t is not None and t.dim() == 0 and t.device != tdev:
                flat[i] = t.to(tdev)

        # shapes: B and T from the first input
        if not self._inputs:
            raise Error(f"model '{name}' has no input: nothing gives B and T")
        first = flat[0]
        if first.dim() != 2 + len(self._inputs[0].shape):
            raise Error(f"input '{self._inputs[0].name}' must be [B, T, {', '.join(map(str, self._inputs[0].shape))}]"
                        f" (rank {2 + len(self._inputs[0].shape)}), got shape {list(first.shape)}")
        B, T = int(first.shape[0]), int(first.shape[1])
        nseq, seqs = B, None
        if cu_seqlens is not None:
            if B != 1:
                raise Error(f"with cu_seqlens the sequences are packed along T of a batch of one, but B is {B}")
            if isinstance(cu_seqlens, torch.Tensor):
                if cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (torch.int32, torch.int64):
                    raise Error(f"cu_seqlens must be a 1-D int32 or int64 tensor, got {cu_seqlens.dtype} "
                                f"of shape {list(cu_seqlens.shape)}")
                nseq = int(cu_seqlens.shape[0]) - 1
                offs = None if shapes_only else [int(v) for v in cu_seqlens.tolist()]
            else:
                offs = [int(v) for v in cu_seqlens]
                nseq = len(offs) - 1
            if nseq < 1:
                raise Error("cu_seqlens must hold at least two offsets (one sequence)")
            if offs is not None:
                if offs[0] != 0 or offs[-1] != T or any(b < a for a, b in zip(offs, offs[1:])):
                    raise Error(f"cu_seqlens must rise from 0 to T = {T}, got {offs}")
                seqs = list(zip(offs[:-1], offs[1:]))
        for k, t in zip(self._arg_names, flat):
            if t is None:
                continue
            s = self._specs[k]
            if s.role == _lib.ROLE_PARAM:
                want, how = s.shape, "as declared"
            elif s.role == _lib.ROLE_STATE:
                want, how = (nseq,) + s.shape, ("[N, ...] with N sequences" if seqs is not None or cu_seqlens is not None
                                                 else "[B, ...]")
            else:
                want, how = (B, T) + s.shape, "[B, T, ...]"
            if tuple(t.shape) != want:
                what = {_lib.ROLE_PARAM: "param", _lib.ROLE_STATE: "initial state", _lib.ROLE_INPUT: "input"}[s.role]
                raise Error(f"{what} '{k}' of model '{name}' must have shape {list(want)} ({how}), "
                            f"got {list(t.shape)}")
            if device == "interp":
                if not t.dtype.is_floating_point:
                    raise Error(f"'{k}' has dtype {t.dtype}; ssmc takes floating-point tensors")
            else:
                _core.dtype_code(t, f"'{k}'")
        if device == "interp":
            out_dtype = torch.float64
            state_dtypes = [torch.float64] * len(self._states)
        else:
            if out_dtype is None:
                for t in flat[:len(self._input_names)]:
                    out_dtype = t.dtype if out_dtype is None else torch.promote_types(out_dtype, t.dtype)
            elif out_dtype not in _core._DTYPES:
                raise Error(f"out_dtype {out_dtype} is not one ssmc writes (float32, float16, bfloat16)")
            state_dtypes = [torch.float32] * len(self._states)
        call = _core.Call(self, device, B, T, nseq, seqs, self._arg_names, out_dtype, state_dtypes,
                          bool(output_final_state), tdev)
        return call, flat

    # ---- gradients
    def _grad_route(self, comp):
        """'native' when comp's device runs the backward, else the twin
        Compiled whose backward is used (see _core)."""
        if comp.grad_via is not None:
            return comp.grad_via
        lib = comp.lib
        if not lib.has_grad:
            raise Error(f"gradients need ssmc_forward_train and ssmc_backward, which the loaded library "
                        f"({lib.path}) does not have")
        info = _lib.GradInfo()
        with comp.lock:
            st = lib.grad_info_of(comp.ptr, 1, ctypes.byref(info))
        if st == _lib.OK and comp.device_grad:
            comp.grad_via = "native"
            return "native"
        if st not in (_lib.OK, _lib.ERR_UNSUPPORTED):
            comp.check(st, f"{self.name}: gradients")
        last = None
        for dev in ("cpu", "interp"):
            if dev == comp.device:
                continue
            try:
                twin = self._compiled(dev)
            except Error as e:
                last = e
                continue
            with twin.lock:
                st2 = lib.grad_info_of(twin.ptr, 1, ctypes.byref(info))
            if st2 == _lib.OK:
                comp.grad_via = twin
                return twin
            last = Error(f"{self.name}: gradients: {twin.error_text(st2)}", lib.status_text(st2))
        if st != _lib.OK:
            raise Error(f"{self.name}: gradients: {comp.error_text(st)}", lib.status_text(st))
        raise last


class _Function(torch.autograd.Function):
    """One call as an autograd node: the forward runs the library (keeping
    tapes when a gradient will be needed), the backward its derived adjoint."""

    @staticmethod
    def forward(ctx, call, train, *tensors):
        model = call.model
        comp = model._compiled(call.device)
        host_dtype = _HOST_FLOAT.get(call.device)
        prepared = _core.prepare_tensors(tensors, host_dtype)
        route = model._grad_route(comp) if train else None
        native = route == "native"
        try:
            outs, finals, tapes = _core.run_forward(call, comp, prepared, train=native)
        except Error as e:
            if not (native and call.device == "cuda" and e.status == "unsupported"):
                raise
            # the CUDA backend refuses this model's backward on device pointers (a chunked core it has no backward for)
            comp.device_grad, comp.grad_via = False, None
            route = model._grad_route(comp)
            native = False
            outs, finals, tapes = _core.run_forward(call, comp, prepared, train=False)
        ctx.call, ctx.comp, ctx.route, ctx.tapes = call, comp, route, tapes
        ctx.present = [t is not None for t in prepared]
        ctx.dtypes = [t.dtype if t is not None else None for t in tensors]
        if train:
            ctx.save_for_backward(*[t for t in prepared if t is not None])
        return tuple(outs + finals)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *douts):
        call = ctx.call
        needs = list(ctx.needs_input_grad[2:])
        if not any(needs):
            return (None, None) + (None,) * len(needs)
        if ctx.route is None:
            raise Error(f"{call.model.name}: no tape was kept for the backward (the forward ran without gradients)")
        saved = iter(ctx.saved_tensors)
        tensors = [next(saved) if p else None for p in ctx.present]
        needs = [n and p for n, p in zip(needs, ctx.present)]
        grads = _core.gradients(call, ctx.comp, ctx.route, tensors, ctx.tapes, list(douts), needs, ctx.dtypes)
        return (None, None) + tuple(grads)
