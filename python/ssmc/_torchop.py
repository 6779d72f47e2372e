"""_torchop.py: ssmc as torch.library custom ops, for torch.compile (torch >= 2.4).

Under torch.compile an ssmc.Model call becomes one node of the graph,
`torch.ops.ssmc.forward`, whose fake kernel gives the shapes and dtypes of
the results without running anything, so Dynamo captures the model with no
graph break. Its autograd formula calls `torch.ops.ssmc.backward`, which
reruns the training forward (an op keeps no tape between the two) and then
the library's backward. Outside of compilation the eager path
(ssmc._Function, which keeps the tape) runs instead; the two agree
(tests/python/test_gpu.py checks it where torch >= 2.4).

A model is named in the graph by a key into a registry of live models
(ssmc._registry). With torch < 2.4 nothing here is registered and
`compiling()` is always False.
"""
from typing import List, Optional

import torch

from . import _core
from ._lib import Error


def _version():
    parts = []
    for p in torch.__version__.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


AVAILABLE = _version() >= (2, 4) and hasattr(torch.library, "custom_op")


def compiling():
    """True while torch.compile traces (always False on torch < 2.4)."""
    if not AVAILABLE:
        return False
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(fn()) if fn else False


def _model(key):
    from . import _registry
    m = _registry.get(key)
    if m is None:
        raise Error(f"ssmc op: the model {key} is no longer alive")
    return m


def _unflatten(m, tensors, state_mask):
    """The flat list of ssmc.Model._resolve (None for absent initial states)."""
    n = len(m._input_names) + len(m._param_names)
    args = {k: t for k, t in zip(m._input_names + m._param_names, tensors[:n])}
    init, rest = {}, iter(tensors[n:])
    for s, present in zip(m._states, state_mask):
        if present:
            init[s.name] = next(rest)
    return args, init


if AVAILABLE:
    @torch.library.custom_op("ssmc::forward", mutates_args=())
    def _forward_op(key: str, tensors: List[torch.Tensor], state_mask: List[bool], final_states: bool,
                    cu_seqlens: Optional[torch.Tensor], out_dtype: Optional[torch.dtype]) -> List[torch.Tensor]:
        m = _model(key)
        args, init = _unflatten(m, tensors, state_mask)
        call, flat = m._resolve(args, init, final_states, cu_seqlens, out_dtype)
        comp = m._compiled(call.device)
        prepared = _core.prepare_tensors(flat, torch.float64 if call.device == "interp" else None)
        outs, finals, _ = _core.run_forward(call, comp, prepared, train=False)
        return outs + finals

    @_forward_op.register_fake
    def _forward_fake(key, tensors, state_mask, final_states, cu_seqlens, out_dtype):
        m = _model(key)
        args, init = _unflatten(m, tensors, state_mask)
        call, _ = m._resolve(args, init, final_states, cu_seqlens, out_dtype, shapes_only=True)
        dev = call.torch_device
        outs = [torch.empty(s.full_shape(call.B, call.T), dtype=call.out_dtype, device=dev) for s in m._outputs]
        if final_states:
            outs += [torch.empty((call.nseq,) + s.shape, dtype=d, device=dev)
                     for s, d in zip(m._states, call.state_dtypes)]
        return outs

    @torch.library.custom_op("ssmc::backward", mutates_args=())
    def _backward_op(key: str, tensors: List[torch.Tensor], state_mask: List[bool], final_states: bool,
                     cu_seqlens: Optional[torch.Tensor], out_dtype: Optional[torch.dtype], douts: List[torch.Tensor],
                     dout_mask: List[bool], needs: List[bool]) -> List[torch.Tensor]:
        m = _model(key)
        args, init = _unflatten(m, tensors, state_mask)
        call, flat = m._resolve(args, init, final_states, cu_seqlens, out_dtype)
        comp = m._compiled(call.device)
        route = m._grad_route(comp)
        it = iter(douts)
        dl = [next(it) if p else None for p in dout_mask]
        k = iter(needs)
        full_needs = [next(k) if t is not None else False for t in flat]
        prepared = _core.prepare_tensors(flat, torch.float64 if call.device == "interp" else None)
        grads = _core.gradients(call, comp, route, prepared, None, dl, full_needs,
                                [t.dtype if t is not None else None for t in flat])
        return [torch.empty(0, dtype=t.dtype, device=t.device) if g is None else g
                for t, g in zip(flat, grads) if t is not None]

    @_backward_op.register_fake
    def _backward_fake(key, tensors, state_mask, final_states, cu_seqlens, out_dtype, douts, dout_mask, needs):
        return [torch.empty_like(t) if n else torch.empty(0, dtype=t.dtype, device=t.device)
                for t, n in zip(tensors, needs)]

    def _setup_context(ctx, inputs, output):
        key, tensors, state_mask, final_states, cu_seqlens, out_dtype = inputs
        ctx.key, ctx.state_mask, ctx.final_states, ctx.out_dtype = key, state_mask, final_states, out_dtype
        ctx.has_cu = cu_seqlens is not None
        ctx.save_for_backward(*tensors, *([cu_seqlens] if cu_seqlens is not None else []))

    def _autograd_backward(ctx, grads):
        saved = list(ctx.saved_tensors)
        cu = saved.pop() if ctx.has_cu else None
        needs = list(ctx.needs_input_grad[1])
        douts = [g for g in grads if g is not None]
        mask = [g is not None for g in grads]
        res = torch.ops.ssmc.backward(ctx.key, saved, ctx.state_mask, ctx.final_states, cu, ctx.out_dtype,
                                      douts, mask, needs)
        return None, [r if n else None for r, n in zip(res, needs)], None, None, None, None

    _forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def forward(m, tensors, initial_state, final_states, cu_seqlens, out_dtype):
    """ssmc.Model.forward under torch.compile: one call of the op. The
    arguments are checked by the op's fake kernel (ssmc.Model._resolve) as
    Dynamo traces it."""
    sig = (m._key, tuple(m._input_names), tuple(m._param_names), tuple(s.name for s in m._states),
           tuple(s.name for s in m._outputs))
    return call(sig, tensors, initial_state, final_states, cu_seqlens, out_dtype)


def call(sig, tensors, initial_state, final_states, cu_seqlens, out_dtype):
    """torch.ops.ssmc.forward on a model's signature (key, input, param,
    state and output names), its results by name."""
    key, inputs, params, states, outputs = sig
    flat = []
    for k in inputs + params:
        if k not in tensors:
            raise Error(f"missing input or param '{k}'")
        t = tensors[k]
        flat.append(t if isinstance(t, torch.Tensor) else torch.tensor(float(t)))
    unknown = [k for k in tensors if k not in inputs and k not in params]
    if unknown:
        raise Error(f"no input or param named '{unknown[0]}'")
    initial_state = initial_state or {}
    mask = [s in initial_state for s in states]
    flat += [initial_state[s] for s in states if s in initial_state]
    if cu_seqlens is not None and not isinstance(cu_seqlens, torch.Tensor):
        cu_seqlens = torch.tensor(list(cu_seqlens), dtype=torch.int64)
    results = torch.ops.ssmc.forward(key, flat, mask, bool(final_states), cu_seqlens, out_dtype)
    names = list(outputs) + (list(states) if final_states else [])
    return dict(zip(names, results))
