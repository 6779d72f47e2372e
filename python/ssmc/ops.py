"""ssmc.ops: drop-in replacements for flash-linear-attention's and mamba_ssm's kernels.

    from ssmc.ops import chunk_gated_delta_rule   # was: from fla.ops.gated_delta_rule import ...
    o, ht = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)

Each function takes the arguments of its namesake (flash-linear-attention at
the commit after v0.5.2 that docs/python.md names; mamba_ssm 2.x): the same
names, defaults, layouts ([B, T, H, ...]), dtypes and return values, and is
differentiable. Each is a thin wrapper over a model of examples/ (fla_*.ssm,
mamba2_ssd*.ssm, mamba_ssu*.ssm) run by ssmc.Model, compiled once per shape
and device. What the wrapper does itself is elementwise and exact: the
query scale, fla's in-kernel options (the L2 norm of q and k, the sigmoid of
beta, the gate -exp(A_log) * softplus(g + dt_bias)), mamba's dt (dt_bias,
softplus, dt_limit), the running normaliser of linear attention, `reverse`
(time flipped per sequence) and the V-first state layout. An argument that
changes what is computed and is not supported raises ssmc.Error; arguments
that only tune a kernel (chunk_size, cu_seqlens_cpu, chunk_indices) are
accepted and have no effect. docs/python.md lists both.

Tensors on the CPU run through the LLVM backend, on cuda:0 through the CUDA
backend on torch's current stream; `use_device("interp")` runs every op on
the f64 interpreter instead (for checks).
"""
import contextlib
import threading

import torch
import torch.nn.functional as F

from . import Error, _torchop, example_path, load

__all__ = [
    "chunk_linear_attn", "fused_recurrent_linear_attn",
    "chunk_retention", "fused_recurrent_retention",
    "chunk_simple_gla", "fused_recurrent_simple_gla",
    "chunk_gla", "fused_recurrent_gla",
    "chunk_delta_rule", "fused_recurrent_delta_rule",
    "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule",
    "mamba_chunk_scan_combined", "selective_state_update",
    "use_device",
]

_local = threading.local()
_models = {}
_models_lock = threading.Lock()


@contextlib.contextmanager
def use_device(device):
    """Runs the ops of this thread on `device` ("interp", "cpu", "cuda" or
    None: the tensors' device) inside the block."""
    old = getattr(_local, "device", None)
    _local.device = device
    try:
        yield
    finally:
        _local.device = old


def _model(name, dims, device=None):
    key = (name, tuple(sorted(dims.items())), device)
    with _models_lock:
        m = _models.get(key)
    if m is None:
        m = load(example_path(name), dims=dims, device=device)
        with _models_lock:
            m = _models.setdefault(key, m)
    return m


def _signature(name, dims_items):
    """What torch.compile needs of a model: the key of the torch.library op
    and its tensors' names (constant for Dynamo: loading is not traced)."""
    m = _model(name, dict(dims_items))
    return (m._key, tuple(m._input_names), tuple(m._param_names), tuple(s.name for s in m._states),
            tuple(s.name for s in m._outputs))


if _torchop.AVAILABLE:
    import torch._dynamo
    _signature = torch._dynamo.assume_constant_result(_signature)


def _call(name, dims, tensors, initial_state, output_final_state, cu_seqlens, out_dtype):
    """The model's results by name: eagerly through ssmc.Model (on the
    thread's use_device), under torch.compile as one torch.library op."""
    if _torchop.compiling():
        sig = _signature(name, tuple(sorted(dims.items())))
        return _torchop.call(sig, tensors, initial_state, output_final_state, cu_seqlens, out_dtype)
    m = _model(name, dims, getattr(_local, "device", None))
    return m(**tensors, initial_state=initial_state, output_final_state=output_final_state, cu_seqlens=cu_seqlens,
             out_dtype=out_dtype)


def _f32(x):
    """x in float32 for the elementwise work the kernels do in float32 (a
    float64 tensor stays float64, so that checks on the interpreter keep
    their precision)."""
    return x if x.dtype == torch.float64 else x.float()


def _scalar(v):
    return torch.tensor(float(v), dtype=torch.float32)


# ---- shared pieces


def _check_kwargs(fn, kwargs, accepted=(), head_first=True, transpose=False):
    """fla's **kwargs: head_first is refused as fla refuses it; the kernel
    tuning knobs are accepted; anything else is an error."""
    kwargs = dict(kwargs)
    state_v_first = None
    if head_first and "head_first" in kwargs:
        raise DeprecationWarning("head_first has been removed. Inputs must be in `[B, T, H, ...]` format.")
    if transpose and "transpose_state_layout" in kwargs:
        state_v_first = bool(kwargs.pop("transpose_state_layout"))
    for k in accepted:
        kwargs.pop(k, None)
    if kwargs:
        raise Error(f"{fn}: ssmc.ops does not support the argument(s) {', '.join(sorted(kwargs))}")
    return state_v_first


def _check_varlen(q, initial_state, cu_seqlens):
    if cu_seqlens is None:
        return
    if q.shape[0] != 1:
        raise ValueError(f"The batch size is expected to be 1 rather than {q.shape[0]} when using `cu_seqlens`. "
                         f"Please flatten variable-length inputs before processing.")
    if initial_state is not None and initial_state.shape[0] != len(cu_seqlens) - 1:
        raise ValueError(f"The number of initial states is expected to be equal to the number of input sequences, "
                         f"i.e., {len(cu_seqlens) - 1} rather than {initial_state.shape[0]}.")


def _host_offsets(cu_seqlens, cu_seqlens_cpu=None):
    if cu_seqlens is None:
        return None
    src = cu_seqlens_cpu if cu_seqlens_cpu is not None else cu_seqlens
    return [int(v) for v in (src.tolist() if isinstance(src, torch.Tensor) else src)]


def _flip_offsets(offs):
    return None if offs is None else [offs[-1] - o for o in reversed(offs)]


def _flip_states(t, offs):
    return t if t is None or offs is None else t.flip(0)


def _run(name, dims, tensors, initial_state, output_final_state, offs, out_dtype, reverse=False):
    """Runs model `name` (state S, one output); reverse scans each sequence
    from its end: every per-step tensor flipped along T (which also reverses
    the order of packed sequences, hence their offsets and states), the
    model run forwards, its output flipped back. Returns (output, final S)."""
    init, run_offs = initial_state, offs
    if reverse:  # the per-step tensors are those of rank 3 and more ([B, T, H, ...])
        tensors = {k: (v.flip(1) if v.dim() >= 3 else v) for k, v in tensors.items()}
        init = _flip_states(init, offs)
        run_offs = _flip_offsets(offs)
    out = _call(name, dims, tensors, None if init is None else {"S": init}, output_final_state, run_offs, out_dtype)
    o, ht = out["o"], out.get("S")
    if reverse:
        o, ht = o.flip(1), _flip_states(ht, offs)
    return o, ht


def _state_in(initial_state, state_v_first):
    if initial_state is None:
        return None
    return initial_state.transpose(-1, -2) if state_v_first else initial_state


def _state_out(ht, state_v_first):
    if ht is None:
        return None
    return ht.transpose(-1, -2).contiguous() if state_v_first else ht


def _l2norm(x):
    """fla's in-kernel L2 norm: x / sqrt(sum(x^2) + 1e-6), in float32."""
    x = _f32(x)
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _cumsum_seq(x, offs):
    """Cumulative sum over T within each sequence."""
    if offs is None:
        return x.cumsum(1)
    return torch.cat([x[:, a:b].cumsum(1) for a, b in zip(offs[:-1], offs[1:])], 1)


def _normalize(o, q, k, scale, z_init, offs, reverse):
    """fla's normalize=True: o / (<q * scale, z_t> + 1e-10) with z_t the
    running sum of k (from z_init), and the z state [N, 1, H, K] it ends at."""
    kf = _f32(k)
    if reverse:
        kf, offs_r = kf.flip(1), _flip_offsets(offs)
        kc = _cumsum_seq(kf, offs_r).flip(1)
    else:
        kc = _cumsum_seq(kf, offs)
    if z_init is not None:
        zi = _f32(z_init)
        if offs is not None:
            lens = torch.tensor([b - a for a, b in zip(offs[:-1], offs[1:])], device=k.device)
            zi = zi.squeeze(1).repeat_interleave(lens, dim=0).unsqueeze(0)
        kc = kc + zi
    kc = kc.to(k.dtype)
    denom = _f32((q * scale * kc).sum(-1, keepdim=True)) + 1e-10
    out = (_f32(o) / denom).to(o.dtype)
    if offs is not None:
        idx = torch.tensor(offs[:-1] if reverse else [b - 1 for b in offs[1:]], device=k.device)
        z = kc[0, idx].unsqueeze(1).contiguous()
    else:
        z = (kc[:, :1] if reverse else kc[:, -1:]).contiguous()
    return out, z


def _dims_qkv(q, v, **extra):
    d = {"H": q.shape[2], "K": q.shape[3], "V": v.shape[3]}
    d.update(extra)
    return d


def _linear_family(fn, q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, reverse,
                   state_v_first, offs, cu_seqlens):
    """The gated linear attentions: picks the model for the gates given."""
    _check_varlen(q, initial_state, cu_seqlens)
    if scale is None:
        scale = k.shape[-1] ** -0.5
    dims = _dims_qkv(q, v)
    t = {"q": q, "k": k, "v": v, "scale": _scalar(scale)}
    if g is not None and g_gamma is not None:
        g = _f32(g) + _f32(g_gamma)
        g_gamma = None
    if gk is not None or gv is not None:
        if g is not None or g_gamma is not None:
            raise Error(f"{fn}: a head-wise gate together with gk/gv is not supported")
        if gv is None:
            name, t["g"] = "fla_gla", gk
        else:
            name = "fla_gla_kv"
            t["gk"] = gk if gk is not None else torch.zeros_like(q)
            t["gv"] = gv
    elif g is not None:
        name, t["g"] = "fla_simple_gla", g
    elif g_gamma is not None:
        name, t["g_gamma"] = "fla_retention", g_gamma
    else:
        name = "fla_linear_attn"
    o, ht = _run(name, dims, t, _state_in(initial_state, state_v_first), output_final_state, offs, v.dtype,
                 reverse)
    return o, _state_out(ht, state_v_first)


def _retention_gamma(q):
    h = torch.arange(q.shape[2], dtype=torch.float32)
    return (1 - torch.pow(2.0, -5.0 - h)).log().to(q.device)


# ---- linear attention


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False, normalize=True,
                      cu_seqlens=None):
    """fla.ops.linear_attn.chunk_linear_attn."""
    return _linear_attn("chunk_linear_attn", q, k, v, scale, initial_state, output_final_state, False, normalize,
                        cu_seqlens)


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False, reverse=False,
                                normalize=False, cu_seqlens=None):
    """fla.ops.linear_attn.fused_recurrent_linear_attn."""
    return _linear_attn("fused_recurrent_linear_attn", q, k, v, scale, initial_state, output_final_state, reverse,
                        normalize, cu_seqlens)


def _linear_attn(fn, q, k, v, scale, initial_state, output_final_state, reverse, normalize, cu_seqlens):
    if normalize and isinstance(initial_state, tuple):
        kv_init, z_init = initial_state
    else:
        kv_init, z_init = initial_state, None
    _check_varlen(q, kv_init, cu_seqlens)
    if scale is None:
        scale = k.shape[-1] ** -0.5
    offs = _host_offsets(cu_seqlens)
    o, ht = _linear_family(fn, q, k, v, None, None, None, None, scale, kv_init, output_final_state, reverse, False,
                           offs, cu_seqlens)
    if normalize:
        o, z = _normalize(o, q, k, scale, z_init, offs, reverse)
        return o, (ht, z)
    return o, ht


# ---- retention


def chunk_retention(q, k, v, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None, **kwargs):
    """fla.ops.retention.chunk_retention: decay 1 - 2^(-5-h) per head."""
    _check_kwargs("chunk_retention", kwargs, accepted=("chunk_size",))
    offs = _host_offsets(cu_seqlens)
    return _linear_family("chunk_retention", q, k, v, None, _retention_gamma(q), None, None, scale, initial_state,
                          output_final_state, False, False, offs, cu_seqlens)


def fused_recurrent_retention(q, k, v, scale=None, initial_state=None, output_final_state=False, reverse=False,
                              state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.retention.fused_recurrent_retention."""
    t = _check_kwargs("fused_recurrent_retention", kwargs, transpose=True, head_first=False)
    state_v_first = _v_first(state_v_first, t)
    offs = _host_offsets(cu_seqlens)
    return _linear_family("fused_recurrent_retention", q, k, v, None, _retention_gamma(q), None, None, scale,
                          initial_state, output_final_state, reverse, state_v_first, offs, cu_seqlens)


def _v_first(state_v_first, deprecated):
    if deprecated is None:
        return state_v_first
    if state_v_first:
        raise ValueError("Cannot pass both `state_v_first` and the deprecated `transpose_state_layout`.")
    return deprecated


# ---- simple GLA


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None, output_final_state=False,
                     state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, **kwargs):
    """fla.ops.simple_gla.chunk_simple_gla: g [B, T, H] or g_gamma [H], log space."""
    _check_kwargs("chunk_simple_gla", kwargs, accepted=("chunk_size",))
    offs = _host_offsets(cu_seqlens, cu_seqlens_cpu)
    return _linear_family("chunk_simple_gla", q, k, v, g, g_gamma, None, None, scale, initial_state,
                          output_final_state, False, state_v_first, offs, cu_seqlens)


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, reverse=False, state_v_first=False, cu_seqlens=None,
                               **kwargs):
    """fla.ops.simple_gla.fused_recurrent_simple_gla."""
    t = _check_kwargs("fused_recurrent_simple_gla", kwargs, transpose=True, head_first=False)
    state_v_first = _v_first(state_v_first, t)
    offs = _host_offsets(cu_seqlens)
    return _linear_family("fused_recurrent_simple_gla", q, k, v, g, g_gamma, None, None, scale, initial_state,
                          output_final_state, reverse, state_v_first, offs, cu_seqlens)


# ---- GLA


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, state_v_first=False,
              cu_seqlens=None, cu_seqlens_cpu=None):
    """fla.ops.gla.chunk_gla: g [B, T, H, K], log space."""
    if initial_state is not None and initial_state.dtype != torch.float32:
        raise AssertionError("initial_state must be in float32.")
    if not (q.shape == k.shape == g.shape):
        raise AssertionError("q, k, g must have the same shape.")
    if v.shape != (*q.shape[:3], v.shape[-1]):
        raise AssertionError("v must be of shape (batch size, seq len, num of head, head dim).")
    if scale is None:
        scale = q.shape[-1] ** -0.5
    offs = _host_offsets(cu_seqlens, cu_seqlens_cpu)
    return _linear_family("chunk_gla", q, k, v, None, None, g, None, scale, initial_state, output_final_state,
                          False, state_v_first, offs, cu_seqlens)


def fused_recurrent_gla(q, k, v, gk=None, gv=None, scale=None, initial_state=None, output_final_state=False,
                        reverse=False, state_v_first=False, cu_seqlens=None, **kwargs):
    """fla.ops.gla.fused_recurrent_gla: gk [B, T, H, K] and/or gv [B, T, H, V]."""
    t = _check_kwargs("fused_recurrent_gla", kwargs, transpose=True, head_first=False)
    state_v_first = _v_first(state_v_first, t)
    offs = _host_offsets(cu_seqlens)
    return _linear_family("fused_recurrent_gla", q, k, v, None, None, gk, gv, scale, initial_state,
                          output_final_state, reverse, state_v_first, offs, cu_seqlens)


# ---- delta rules


def _delta(fn, q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
           state_v_first, offs, cu_seqlens):
    _check_varlen(q, initial_state, cu_seqlens)
    if scale is None:
        scale = k.shape[-1] ** -0.5
    H, HV = q.shape[2], v.shape[2]
    if k.shape[2] != H:
        raise ValueError(f"q and k must have the same number of heads, but got q.shape[2]={H} and "
                         f"k.shape[2]={k.shape[2]}")
    if HV % H != 0:
        raise ValueError(f"For GVA, num_v_heads (HV={HV}) must be evenly divisible by num_heads (H={H}), "
                         f"but got HV % H = {HV % H}")
    if beta.dim() != 3:
        raise Error(f"{fn}: beta must be [B, T, HV] (a beta per value channel is not supported)")
    if use_qk_l2norm_in_kernel:
        q, k = _l2norm(q), _l2norm(k)
    t = {"q": q, "k": k, "v": v, "beta": beta, "scale": _scalar(scale)}
    if g is None and HV == H:
        name, dims = "fla_delta_rule", _dims_qkv(q, v)
    else:
        name = "fla_gated_delta_rule"
        dims = {"H": H, "HV": HV, "R": HV // H, "K": q.shape[3], "V": v.shape[3]}
        t["g"] = g if g is not None else torch.zeros_like(beta)
    o, ht = _run(name, dims, t, _state_in(initial_state, state_v_first), output_final_state, offs, v.dtype)
    return o, _state_out(ht, state_v_first)


def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None, cu_seqlens_cpu=None, **kwargs):
    """fla.ops.delta_rule.chunk_delta_rule: beta [B, T, H]."""
    _check_kwargs("chunk_delta_rule", kwargs, accepted=("chunk_size",))
    if len(beta.shape) != 3:
        raise AssertionError("beta must be of shape (batch size, num of head, seq len).")
    offs = _host_offsets(cu_seqlens, cu_seqlens_cpu)
    return _delta("chunk_delta_rule", q, k, v, None, beta, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, False, offs, cu_seqlens)


def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None, output_final_state=False,
                               use_qk_l2norm_in_kernel=False, cu_seqlens=None):
    """fla.ops.delta_rule.fused_recurrent_delta_rule: beta [B, T, H] (ones if None)."""
    if scale is not None and not scale > 0:
        raise AssertionError("scale must be positive")
    if beta is None:
        beta = torch.ones_like(q[..., 0])
    offs = _host_offsets(cu_seqlens)
    return _delta("fused_recurrent_delta_rule", q, k, v, None, beta, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, False, offs, cu_seqlens)


def _gdn_inputs(fn, g, beta, use_gate_in_kernel, A_log, dt_bias, use_beta_sigmoid_in_kernel, allow_neg_eigval):
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("`allow_neg_eigval=True` requires `use_beta_sigmoid_in_kernel=True`.")
    if use_gate_in_kernel:
        if A_log is None:
            raise ValueError("`A_log` must be provided when `use_gate_in_kernel=True`.")
        if g is None:
            raise ValueError("`g` (raw pre-activation) must be provided when `use_gate_in_kernel=True`.")
        x = _f32(g) if dt_bias is None else _f32(g) + _f32(dt_bias)
        g = -_f32(A_log).exp() * F.softplus(x)
    if use_beta_sigmoid_in_kernel:
        beta = torch.sigmoid(_f32(beta))
        if allow_neg_eigval:
            beta = beta * 2
    return g, beta


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                           use_qk_l2norm_in_kernel=False, use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                           state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None, chunk_indices=None,
                           cp_context=None, **kwargs):
    """fla.ops.gated_delta_rule.chunk_gated_delta_rule: g, beta [B, T, HV]; GVA when HV > H."""
    if cp_context is not None:
        raise Error("chunk_gated_delta_rule: context parallelism (cp_context) is not supported by ssmc.ops")
    extra = {k_: kwargs.pop(k_) for k_ in ("use_gate_in_kernel", "A_log", "dt_bias") if k_ in kwargs}
    t = _check_kwargs("chunk_gated_delta_rule", kwargs, accepted=("chunk_size",), transpose=True)
    state_v_first = _v_first(state_v_first, t)
    if extra.get("use_gate_in_kernel") and extra.get("A_log") is None:
        raise AssertionError("A_log must be provided when use_gate_in_kernel=True.")
    g, beta = _gdn_inputs("chunk_gated_delta_rule", g, beta, extra.get("use_gate_in_kernel", False),
                          extra.get("A_log"), extra.get("dt_bias"), use_beta_sigmoid_in_kernel, allow_neg_eigval)
    offs = _host_offsets(cu_seqlens, cu_seqlens_cpu)
    return _delta("chunk_gated_delta_rule", q, k, v, g, beta, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, state_v_first, offs, cu_seqlens)


def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None, initial_state=None,
                                     output_final_state=False, use_qk_l2norm_in_kernel=False,
                                     use_gate_in_kernel=False, A_log=None, dt_bias=None,
                                     use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, state_v_first=False,
                                     cu_seqlens=None, **kwargs):
    """fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule (gk and gv not supported)."""
    t = _check_kwargs("fused_recurrent_gated_delta_rule", kwargs, transpose=True, head_first=False)
    state_v_first = _v_first(state_v_first, t)
    if gk is not None or gv is not None:
        raise Error("fused_recurrent_gated_delta_rule: the key and value gates gk and gv are not supported by "
                    "ssmc.ops (g, the gate per head, is)")
    if beta is None:
        beta = torch.ones_like(v[..., 0])
    if not use_gate_in_kernel:
        A_log = dt_bias = None
    g, beta = _gdn_inputs("fused_recurrent_gated_delta_rule", g, beta, use_gate_in_kernel, A_log, dt_bias,
                          use_beta_sigmoid_in_kernel, allow_neg_eigval)
    offs = _host_offsets(cu_seqlens)
    return _delta("fused_recurrent_gated_delta_rule", q, k, v, g, beta, scale, initial_state, output_final_state,
                  use_qk_l2norm_in_kernel, state_v_first, offs, cu_seqlens)


# ---- mamba_ssm


def _softplus20(x):
    """mamba_ssm's softplus: x above 20, log(1 + exp(x)) below."""
    return torch.where(x <= 20.0, F.softplus(x), x)


def _segments(seq_idx_row):
    """Offsets of the runs of equal seq_idx along T (where the state resets)."""
    s = seq_idx_row.tolist()
    offs = [0] + [t for t in range(1, len(s)) if s[t] != s[t - 1]] + [len(s)]
    return offs


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False, state_dtype=None):
    """mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined."""
    batch, seqlen, nheads, headdim = x.shape
    _, _, ngroups, dstate = B.shape
    if nheads % ngroups != 0:
        raise AssertionError("nheads must be divisible by ngroups")
    if B.shape != (batch, seqlen, ngroups, dstate) or C.shape != B.shape:
        raise AssertionError("B and C must be (batch, seqlen, ngroups, dstate)")
    if dt.shape != (batch, seqlen, nheads) or A.shape != (nheads,):
        raise AssertionError("dt must be (batch, seqlen, nheads) and A (nheads,)")
    if z is not None and z.shape != x.shape:
        raise AssertionError("z must have the shape of x")
    if D is not None and D.shape not in ((nheads, headdim), (nheads,)):
        raise AssertionError("D must be (nheads, headdim) or (nheads,)")
    if initial_states is not None and initial_states.shape != (batch, nheads, headdim, dstate):
        raise AssertionError("initial_states must be (batch, nheads, headdim, dstate)")
    if int(chunk_size) < 1:
        raise AssertionError("chunk_size must be positive")
    if return_varlen_states and cu_seqlens is None:
        raise AssertionError("cu_seqlens must be provided if return_varlen_states is True")
    if return_varlen_states and seq_idx is None:
        raise Error("mamba_chunk_scan_combined: return_varlen_states needs seq_idx (without it mamba_ssm's "
                    "output runs the sequences into one another; ssmc.ops does not reproduce that mix)")
    # dt as the kernel makes it, in float32: + dt_bias, softplus, clamped to dt_limit (always)
    d = _f32(dt)
    if dt_bias is not None:
        d = d + _f32(dt_bias)
    if dt_softplus:
        d = _softplus20(d)
    d = d.clamp(min=dt_limit[0], max=dt_limit[1])
    if D is None:
        Dm = torch.zeros(nheads, headdim, dtype=torch.float32, device=x.device)
    else:
        Dm = D if D.dim() == 2 else D[:, None].expand(nheads, headdim)
    name = "mamba2_ssd" if z is None else "mamba2_ssd_z"
    dims = {"H": nheads, "P": headdim, "G": ngroups, "R": nheads // ngroups, "N": dstate}
    if seq_idx is None:
        t = {"x": x, "dt": d, "B": B, "C": C, "A": A, "D": Dm}
        if z is not None:
            t["z"] = z
        out = _call(name, dims, t, None if initial_states is None else {"S": initial_states}, return_final_states,
                    None, x.dtype)
        y, final = out["y"], out.get("S")
        varlen = None
    else:
        if seq_idx.shape != (batch, seqlen):
            raise AssertionError("seq_idx must be (batch, seqlen)")
        ys, finals, varlens = [], [], []
        for b in range(batch):
            offs = _segments(seq_idx[b])
            n = len(offs) - 1
            t = {"x": x[b:b + 1], "dt": d[b:b + 1], "B": B[b:b + 1], "C": C[b:b + 1], "A": A, "D": Dm}
            if z is not None:
                t["z"] = z[b:b + 1]
            init = None
            if initial_states is not None:  # mamba_ssm: the initial state of the first sequence only
                first = _f32(initial_states[b:b + 1])
                init = torch.cat([first, first.new_zeros((n - 1,) + tuple(first.shape[1:]))], 0)
            need_states = return_final_states or return_varlen_states
            out = _call(name, dims, t, None if init is None else {"S": init}, need_states, offs, x.dtype)
            ys.append(out["y"])
            if need_states:
                finals.append(out["S"][-1:])
                varlens.append(out["S"])
        y = torch.cat(ys, 0)
        final = torch.cat(finals, 0) if return_final_states else None
        varlen = None
        if return_varlen_states:
            if batch != 1:
                raise AssertionError("passing cu_seqlens to get the varlen states is only supported if batch "
                                     "dimension is 1")
            # the state at the end of each sequence of cu_seqlens
            ends = [int(e) for e in (cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor)
                                     else cu_seqlens)][1:]
            seg = _segments(seq_idx[0])
            idx = []
            for e in ends:
                if e not in seg[1:]:
                    raise Error("mamba_chunk_scan_combined: cu_seqlens and seq_idx disagree on where the "
                                "sequences end")
                idx.append(seg[1:].index(e))
            vdt = state_dtype if state_dtype is not None else C.dtype
            varlen = varlens[0][idx].to(vdt)
    if not return_varlen_states:
        return y if not return_final_states else (y, final)
    return (y, varlen) if not return_final_states else (y, final, varlen)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    """mamba_ssm.ops.triton.selective_state_update.selective_state_update:
    one decode step; `state` is updated in place and the output returned."""
    has_heads = state.dim() > 3
    st = state.unsqueeze(1) if state.dim() == 3 else state
    x = x.unsqueeze(1) if x.dim() == 2 else x
    dt = dt.unsqueeze(1) if dt.dim() == 2 else dt
    A = A.unsqueeze(0) if A.dim() == 2 else A
    B = B.unsqueeze(1) if B.dim() == 2 else B
    C = C.unsqueeze(1) if C.dim() == 2 else C
    if D is not None and D.dim() == 1:
        D = D.unsqueeze(0)
    if z is not None and z.dim() == 2:
        z = z.unsqueeze(1)
    if dt_bias is not None and dt_bias.dim() == 1:
        dt_bias = dt_bias.unsqueeze(0)
    _, nheads, dim, dstate = st.shape
    batch = x.shape[0]
    if x.shape != (batch, nheads, dim) or dt.shape != x.shape or A.shape != (nheads, dim, dstate):
        raise AssertionError("x, dt must be (batch, nheads, dim) and A (nheads, dim, dstate)")
    ngroups = B.shape[1]
    if nheads % ngroups != 0:
        raise AssertionError("nheads must be divisible by ngroups")
    if B.shape != (batch, ngroups, dstate) or C.shape != B.shape:
        raise AssertionError("B and C must be (batch, ngroups, dstate)")
    if D is not None and D.shape != (nheads, dim):
        raise AssertionError("D must be (nheads, dim)")
    if z is not None and z.shape != x.shape:
        raise AssertionError("z must have the shape of x")
    if dt_bias is not None and dt_bias.shape != (nheads, dim):
        raise AssertionError("dt_bias must be (nheads, dim)")
    # Mamba-2's decode passes A, dt and dt_bias broadcast over dim and dstate
    # (stride 0): one scalar decay per head, the SSD model
    tie = (A.stride(-1) == 0 and A.stride(-2) == 0 and dt.stride(-1) == 0 and dt_bias is not None
           and dt_bias.stride(-1) == 0)
    d = _f32(dt)
    if dt_bias is not None:
        d = d + _f32(dt_bias)
    if dt_softplus:
        d = _softplus20(d)
    idx = None
    s0 = st
    if state_batch_indices is not None:
        if state_batch_indices.shape != (batch,):
            raise AssertionError("state_batch_indices must be (batch,)")
        idx = state_batch_indices.long()
        keep = idx >= 0  # padding slots (< 0): no update, output 0
        s0 = st[idx.clamp(min=0)]
    Dm = D if D is not None else torch.zeros(nheads, dim, dtype=torch.float32, device=x.device)
    dims = {"H": nheads, "P": dim, "G": ngroups, "R": nheads // ngroups, "N": dstate}
    if tie:
        name = "mamba2_ssd" if z is None else "mamba2_ssd_z"
        t = {"x": x[:, None], "dt": d[:, None, :, 0], "B": B[:, None], "C": C[:, None], "A": A[:, 0, 0], "D": Dm}
    else:
        name = "mamba_ssu" if z is None else "mamba_ssu_z"
        t = {"x": x[:, None], "dt": d[:, None], "B": B[:, None], "C": C[:, None], "A": A, "D": Dm}
    if z is not None:
        t["z"] = z[:, None]
    out = _call(name, dims, t, {"S": s0}, True, None, x.dtype)
    y, new = out["y"][:, 0], out["S"].to(st.dtype)
    if idx is None:
        st.copy_(new)
    else:
        rows = idx[keep]
        st.index_copy_(0, rows, new[keep])
        y = torch.where(keep[:, None, None], y, torch.zeros_like(y))
    return y if has_heads else y.squeeze(1)

