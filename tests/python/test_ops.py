"""test_ops.py: every function of ssmc.ops against the loop-over-t reference
of its flash-linear-attention / mamba_ssm semantics (naive.py), on the CPU:
values, final states and gradients (of every tensor argument and the initial
state), with an initial state, with cu_seqlens (an empty sequence among
them) and with reverse; the option flags; dtypes; and the errors for what is
not supported. One gradcheck through the ops on the interpreter.
"""
import pytest
import torch
import torch.nn.functional as F

import naive
import ssmc
from ssmc import _lib, ops

GRAD = _lib.library().has_grad
B, T, H, K, V = 2, 7, 2, 4, 3
CU = [0, 3, 3, 7]  # three sequences, the second empty


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rnd(*shape, g, lo=None, hi=None):
    if lo is None:
        return torch.randn(*shape, generator=g)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def compare(fn, ref, tensors, n_out, tol=2e-5, grad_tol=2e-4):
    """fn(*tensors) and ref(*tensors) (its outputs: n_out tensors, None
    allowed) agree in value and in the gradients of a random loss with
    respect to every tensor."""
    ins = [t.detach().clone().requires_grad_(GRAD) for t in tensors]
    refs = [t.detach().double().requires_grad_() for t in tensors]
    got, want = fn(*ins), ref(*refs)
    got, want = list(got)[:n_out], list(want)[:n_out]
    g = gen(99)
    loss_got, loss_want = 0, 0
    for a, b in zip(got, want):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape, (a.shape, b.shape)
        assert rel(a, b) < tol
        w = torch.randn(b.shape, generator=g, dtype=torch.float64)
        loss_got = loss_got + (a.double() * w).sum()
        loss_want = loss_want + (b * w).sum()
    if not GRAD:
        return got
    loss_got.backward()
    loss_want.backward()
    for i, (a, b) in enumerate(zip(ins, refs)):
        if b.grad is None:
            assert a.grad is None or a.grad.abs().max() == 0, i
            continue
        assert a.grad is not None and a.grad.dtype == a.dtype, i
        assert rel(a.grad, b.grad) < grad_tol, i
    return got


def qkv(seed, batch=B, hv=H):
    g = gen(seed)
    return (rnd(batch, T, H, K, g=g), rnd(batch, T, H, K, g=g), rnd(batch, T, hv, V, g=g),
            rnd(batch if batch > 1 else 3, hv, K, V, g=g), g)


# ---- the gated linear attentions

LINEAR = [
    # name, fla function, its gate arguments, the reference's gate arguments
    ("chunk_linear_attn", lambda q, k, v, gates, **kw: ops.chunk_linear_attn(q, k, v, normalize=False, **kw), {}),
    ("fused_recurrent_linear_attn", lambda q, k, v, gates, **kw: ops.fused_recurrent_linear_attn(q, k, v, **kw), {}),
    ("chunk_simple_gla", lambda q, k, v, gates, **kw: ops.chunk_simple_gla(q, k, v, gates["g"], **kw), {"g": "h"}),
    ("fused_recurrent_simple_gla",
     lambda q, k, v, gates, **kw: ops.fused_recurrent_simple_gla(q, k, v, g=gates["g"], **kw), {"g": "h"}),
    ("chunk_gla", lambda q, k, v, gates, **kw: ops.chunk_gla(q, k, v, gates["gk"], **kw), {"gk": "k"}),
    ("fused_recurrent_gla", lambda q, k, v, gates, **kw: ops.fused_recurrent_gla(q, k, v, gk=gates["gk"], **kw),
     {"gk": "k"}),
    ("fused_recurrent_gla (gk, gv)",
     lambda q, k, v, gates, **kw: ops.fused_recurrent_gla(q, k, v, gates["gk"], gates["gv"], **kw),
     {"gk": "k", "gv": "v"}),
    ("fused_recurrent_gla (gv)",
     lambda q, k, v, gates, **kw: ops.fused_recurrent_gla(q, k, v, gv=gates["gv"], **kw), {"gv": "v"}),
]
GATE_SHAPE = {"h": lambda b: (b, T, H), "k": lambda b: (b, T, H, K), "v": lambda b: (b, T, H, V)}


def make_gates(spec, batch, g):
    return {name: F.logsigmoid(rnd(*GATE_SHAPE[axis](batch), g=g)) for name, axis in spec.items()}


# fla's chunk_ functions have no reverse argument
CASES = [(x, mode) for x in LINEAR for mode in ("plain", "varlen", "reverse", "varlen_reverse")
         if x[0].startswith("fused_recurrent") or "reverse" not in mode]


@pytest.mark.parametrize("case,mode", CASES, ids=[f"{x[0]}-{m}" for x, m in CASES])
def test_gated_linear(case, mode):
    name, fn, spec = case
    varlen, reverse = "varlen" in mode, "reverse" in mode
    batch = 1 if varlen else B
    q, k, v, h0, g = qkv(1, batch)
    gates = make_gates(spec, batch, g)
    names = list(gates)
    cu = torch.tensor(CU) if varlen else None
    kw = {"cu_seqlens": cu, "output_final_state": True}
    if reverse:
        kw["reverse"] = True
    scale = 0.7

    def run(q, k, v, h0, *gs):
        return fn(q, k, v, dict(zip(names, gs)), scale=scale, initial_state=h0, **kw)

    def ref(q, k, v, h0, *gs):
        return naive.gated_linear(q, k, v, scale=scale, h0=h0, cu=CU if varlen else None, reverse=reverse,
                                  **dict(zip(names, gs)))

    o, ht = compare(run, ref, [q, k, v, h0] + [gates[n] for n in names], 2)
    assert o.dtype == v.dtype and ht.dtype == torch.float32


@pytest.mark.parametrize("fn", [ops.chunk_retention, ops.fused_recurrent_retention])
@pytest.mark.parametrize("varlen", [False, True])
def test_retention(fn, varlen):
    batch = 1 if varlen else B
    q, k, v, h0, g = qkv(2, batch)
    cu = CU if varlen else None
    gamma = (1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float64))).log()
    compare(lambda q, k, v, h0: fn(q, k, v, initial_state=h0, output_final_state=True,
                                   cu_seqlens=None if cu is None else torch.tensor(cu)),
            lambda q, k, v, h0: naive.gated_linear(q, k, v, g=gamma.expand(batch, T, H), h0=h0, cu=cu),
            [q, k, v, h0], 2)


def test_simple_gla_g_gamma_and_defaults():
    q, k, v, h0, g = qkv(3)
    gg = -torch.rand(H, generator=g)
    gt = F.logsigmoid(rnd(B, T, H, g=g))
    compare(lambda q, k, v: ops.chunk_simple_gla(q, k, v, g_gamma=gg),
            lambda q, k, v: naive.gated_linear(q, k, v, g=gg.expand(B, T, H)), [q, k, v], 1)
    compare(lambda q, k, v: ops.fused_recurrent_simple_gla(q, k, v, gt, gg),  # both gates: their sum
            lambda q, k, v: naive.gated_linear(q, k, v, g=gt + gg), [q, k, v], 1)
    o, ht = ops.chunk_simple_gla(q, k, v, gt)
    assert ht is None  # output_final_state=False
    assert rel(o, naive.gated_linear(q, k, v, g=gt, scale=K ** -0.5)[0]) < 2e-5  # scale K^-1/2 by default


def test_state_v_first():
    q, k, v, h0, g = qkv(4)
    gk = F.logsigmoid(rnd(B, T, H, K, g=g))
    o1, h1 = ops.chunk_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    o2, h2 = ops.chunk_gla(q, k, v, gk, initial_state=h0.transpose(-1, -2).contiguous(), output_final_state=True,
                           state_v_first=True)
    assert torch.equal(o1, o2) and h2.shape == (B, H, V, K) and torch.equal(h1.transpose(-1, -2), h2)
    o3, h3 = ops.fused_recurrent_gla(q, k, v, gk, initial_state=h0.transpose(-1, -2).contiguous(),
                                     output_final_state=True, transpose_state_layout=True)  # its old name
    assert rel(o3, o1) < 2e-5 and rel(h3, h2) < 2e-5


@pytest.mark.parametrize("fn", [ops.chunk_linear_attn, ops.fused_recurrent_linear_attn])
def test_linear_attn_normalize(fn):
    q, k, v, h0, g = qkv(5)
    q, k = q.abs(), k.abs()  # the normaliser away from zero
    z0 = torch.rand(B, 1, H, K, generator=g)

    def ref(q, k, v, h0, z0):
        o, ht = naive.gated_linear(q, k, v, scale=0.5, h0=h0)
        on, z = naive.normalize(o, q, k, 0.5, z0)
        return on, ht, z

    def run(q, k, v, h0, z0):
        o, (ht, z) = fn(q, k, v, scale=0.5, initial_state=(h0, z0), output_final_state=True, normalize=True)
        return o, ht, z

    compare(run, ref, [q, k, v, h0, z0], 3, tol=1e-4)
    o, (ht, z) = ops.chunk_linear_attn(q, k, v)  # normalize=True is chunk's default; z comes back anyway
    assert ht is None and z.shape == (B, 1, H, K)


# ---- the delta rules


@pytest.mark.parametrize("fn", ["chunk", "fused_recurrent"])
@pytest.mark.parametrize("mode", ["plain", "l2norm", "varlen"])
def test_delta_rule(fn, mode):
    varlen = mode == "varlen"
    batch = 1 if varlen else B
    q, k, v, h0, g = qkv(6, batch)
    if mode != "l2norm":
        k = k * 0.4  # |k|^2 < 1: the reference stays tame
    beta = torch.rand(batch, T, H, generator=g)
    f = getattr(ops, fn + "_delta_rule")
    cu = CU if varlen else None
    compare(lambda q, k, v, beta, h0: f(q, k, v, beta, initial_state=h0, output_final_state=True,
                                        use_qk_l2norm_in_kernel=mode == "l2norm",
                                        cu_seqlens=None if cu is None else torch.tensor(cu)),
            lambda q, k, v, beta, h0: naive.delta_rule(q, k, v, beta, h0=h0, cu=cu, l2norm=mode == "l2norm"),
            [q, k, v, beta, h0], 2, tol=5e-5, grad_tol=5e-4)


def test_fused_recurrent_delta_rule_beta_defaults_to_one():
    q, k, v, _, g = qkv(7)
    k = k * 0.4
    compare(lambda q, k, v: ops.fused_recurrent_delta_rule(q, k, v, scale=0.9),
            lambda q, k, v: naive.delta_rule(q, k, v, torch.ones(B, T, H, dtype=torch.float64), scale=0.9),
            [q, k, v], 1, tol=5e-5, grad_tol=5e-4)


@pytest.mark.parametrize("fn", ["chunk", "fused_recurrent"])
@pytest.mark.parametrize("mode", ["plain", "gva", "varlen_gva"])
def test_gated_delta_rule(fn, mode):
    varlen = mode == "varlen_gva"
    hv = 2 * H if "gva" in mode else H
    batch = 1 if varlen else B
    q, k, v, h0, g = qkv(8, batch, hv)
    gl = F.logsigmoid(rnd(batch, T, hv, g=g))
    beta = torch.rand(batch, T, hv, generator=g)
    f = getattr(ops, fn + "_gated_delta_rule")
    cu = CU if varlen else None
    compare(lambda q, k, v, gl, beta, h0: f(q, k, v, g=gl, beta=beta, initial_state=h0, output_final_state=True,
                                            use_qk_l2norm_in_kernel=True,
                                            cu_seqlens=None if cu is None else torch.tensor(cu)),
            lambda q, k, v, gl, beta, h0: naive.delta_rule(q, k, v, beta, g=gl, h0=h0, cu=cu, l2norm=True),
            [q, k, v, gl, beta, h0], 2, tol=5e-5, grad_tol=5e-4)


@pytest.mark.parametrize("fn", ["chunk", "fused_recurrent"])
def test_gated_delta_rule_in_kernel_options(fn):
    """use_gate_in_kernel (g = -exp(A_log) softplus(g + dt_bias)),
    use_beta_sigmoid_in_kernel and allow_neg_eigval."""
    q, k, v, h0, g = qkv(9)
    graw, braw = rnd(B, T, H, g=g), rnd(B, T, H, g=g)
    A_log, dt_bias = rnd(H, g=g) * 0.3, rnd(H, g=g) * 0.3
    f = getattr(ops, fn + "_gated_delta_rule")

    def ref(q, k, v, graw, braw, A_log, dt_bias):
        gl = -A_log.exp() * F.softplus(graw + dt_bias)
        return naive.delta_rule(q, k, v, 2 * torch.sigmoid(braw), g=gl, l2norm=True)

    compare(lambda q, k, v, graw, braw, A_log, dt_bias:
            f(q, k, v, g=graw, beta=braw, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=A_log,
              dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True, allow_neg_eigval=True),
            ref, [q, k, v, graw, braw, A_log, dt_bias], 1, tol=5e-5, grad_tol=5e-4)


# ---- mamba_ssm


@pytest.mark.parametrize("mode", ["plain", "z", "no_D", "D_per_channel", "dt_limit", "seq_idx"])
def test_mamba_chunk_scan_combined(mode):
    g = gen(10)
    P, G, N, Hm = 3, 1, 4, 2
    batch = 1 if mode == "seq_idx" else B
    x, dt = rnd(batch, T, Hm, P, g=g), rnd(batch, T, Hm, g=g)
    A, Bm, Cm = -torch.rand(Hm, generator=g), rnd(batch, T, G, N, g=g), rnd(batch, T, G, N, g=g)
    D = rnd(Hm, P, g=g) if mode == "D_per_channel" else rnd(Hm, g=g)
    z, dtb, s0 = rnd(batch, T, Hm, P, g=g), rnd(Hm, g=g), rnd(batch, Hm, P, N, g=g)
    limit = (0.2, 0.9) if mode == "dt_limit" else (0.0, float("inf"))
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 2, 2]], dtype=torch.int32) if mode == "seq_idx" else None
    segs = [(0, 3), (3, 5), (5, 7)] if mode == "seq_idx" else None
    use_z, use_D = mode == "z", mode != "no_D"

    def run(x, dt, A, Bm, Cm, D, z, dtb, s0):
        return ops.mamba_chunk_scan_combined(x, dt, A, Bm, Cm, 64, D=D if use_D else None, z=z if use_z else None,
                                             dt_bias=dtb, initial_states=s0, seq_idx=seq_idx, dt_softplus=True,
                                             dt_limit=limit, return_final_states=True)

    def ref(x, dt, A, Bm, Cm, D, z, dtb, s0):
        return naive.ssd(x, dt, A, Bm, Cm, D=D if use_D else None, z=z if use_z else None, dt_bias=dtb, h0=s0,
                         dt_softplus=True, dt_limit=limit, segments=segs)

    y, fs = compare(run, ref, [x, dt, A, Bm, Cm, D, z, dtb, s0], 2, tol=5e-5, grad_tol=5e-4)
    assert y.dtype == x.dtype and fs.dtype == torch.float32


def test_mamba_chunk_scan_combined_varlen_states_and_dtypes():
    g = gen(11)
    P, G, N, Hm = 2, 2, 3, 4
    x, dt = rnd(1, T, Hm, P, g=g).bfloat16(), rnd(1, T, Hm, g=g).bfloat16()
    A, Bm, Cm = -torch.rand(Hm, generator=g), rnd(1, T, G, N, g=g).bfloat16(), rnd(1, T, G, N, g=g).bfloat16()
    seq_idx = torch.tensor([[0, 0, 1, 1, 1, 2, 2]])
    cu = torch.tensor([0, 2, 5, 7])
    y, fs, vs = ops.mamba_chunk_scan_combined(x, dt, A, Bm, Cm, 16, seq_idx=seq_idx, cu_seqlens=cu, dt_softplus=True,
                                              return_final_states=True, return_varlen_states=True)
    assert y.dtype == torch.bfloat16 and fs.dtype == torch.float32 and vs.dtype == torch.bfloat16
    assert vs.shape == (3, Hm, P, N) and fs.shape == (1, Hm, P, N)
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        _, s = naive.ssd(x[:, a:b], dt[:, a:b], A, Bm[:, a:b], Cm[:, a:b], dt_softplus=True)
        assert rel(vs[i], s[0]) < 2e-2
    assert rel(fs[0], vs[-1]) < 1e-2
    y2 = ops.mamba_chunk_scan_combined(x, dt, A, Bm, Cm, 16, seq_idx=seq_idx, dt_softplus=True)
    assert torch.equal(y, y2)


@pytest.mark.parametrize("mode", ["heads", "mamba1", "tie", "z", "indices"])
def test_selective_state_update(mode):
    g = gen(12)
    P, G, N, Hm = 3, 1, 4, 2
    state = rnd(B, Hm, P, N, g=g)
    x, dt = rnd(B, Hm, P, g=g), rnd(B, Hm, P, g=g)
    A, Bm, Cm = -torch.rand(Hm, P, N, generator=g), rnd(B, G, N, g=g), rnd(B, G, N, g=g)
    D, z, dtb = rnd(Hm, P, g=g), rnd(B, Hm, P, g=g), rnd(Hm, P, g=g)
    if mode == "tie":  # Mamba-2's decode: A, dt and dt_bias broadcast with stride 0
        A = (-torch.rand(Hm, generator=g))[:, None, None].expand(Hm, P, N)
        dt = rnd(B, Hm, g=g)[:, :, None].expand(B, Hm, P)
        dtb = rnd(Hm, g=g)[:, None].expand(Hm, P)
    zz = z if mode == "z" else None
    ro, rs = naive.state_update(state, x, dt, A, Bm, Cm, D=D, z=zz, dt_bias=dtb, dt_softplus=True)
    if mode == "mamba1":  # no heads axis: state (batch, dim, dstate)
        st = state[:, 0].clone()
        out = ops.selective_state_update(st, x[:, 0], dt[:, 0], A[0], Bm[:, 0], Cm[:, 0], D=D[0], dt_bias=dtb[0],
                                         dt_softplus=True)
        assert out.shape == (B, P) and rel(out, ro[:, 0]) < 2e-5 and rel(st, rs[:, 0]) < 2e-5
        return
    st = state.clone()
    if mode == "indices":
        pool = torch.zeros(5, Hm, P, N)
        pool[3], pool[1] = state[0], state[1]
        idx = torch.tensor([3, 1], dtype=torch.int32)
        out = ops.selective_state_update(pool, x, dt, A, Bm, Cm, D=D, dt_bias=dtb, dt_softplus=True,
                                         state_batch_indices=idx)
        assert rel(out, ro) < 2e-5 and rel(pool[3], rs[0]) < 2e-5 and rel(pool[1], rs[1]) < 2e-5
        assert pool[0].abs().max() == 0 and pool[2].abs().max() == 0
        out = ops.selective_state_update(pool, x, dt, A, Bm, Cm, state_batch_indices=torch.tensor([-1, 1]))
        assert out[0].abs().max() == 0  # a padding slot: no update, output 0
        return
    out = ops.selective_state_update(st, x, dt, A, Bm, Cm, D=D, z=zz, dt_bias=dtb, dt_softplus=True)
    assert out.dtype == x.dtype and rel(out, ro) < 2e-5 and rel(st, rs) < 2e-5
    sb = state.bfloat16()
    out = ops.selective_state_update(sb, x.bfloat16(), dt, A, Bm, Cm, D=D, z=zz, dt_bias=dtb, dt_softplus=True)
    assert out.dtype == torch.bfloat16 and sb.dtype == torch.bfloat16 and rel(sb, rs) < 3e-2


# ---- dtypes, errors, the interpreter


def test_bf16_layouts_and_dtypes():
    q, k, v, h0, g = qkv(13)
    gk = F.logsigmoid(rnd(B, T, H, K, g=g))
    o, ht = ops.chunk_gla(q.bfloat16(), k.bfloat16(), v.bfloat16(), gk.bfloat16(), initial_state=h0,
                          output_final_state=True)
    ro, rh = naive.gated_linear(q.bfloat16(), k.bfloat16(), v.bfloat16(), gk=gk.bfloat16(), h0=h0)
    assert o.dtype == torch.bfloat16 and o.shape == (B, T, H, V) and ht.dtype == torch.float32
    assert rel(o, ro) < 2e-2 and rel(ht, rh) < 1e-4


def test_unsupported_arguments_raise():
    q, k, v, h0, g = qkv(14)
    gl, beta = F.logsigmoid(rnd(B, T, H, g=g)), torch.rand(B, T, H, generator=g)
    with pytest.raises(DeprecationWarning, match="head_first"):
        ops.chunk_simple_gla(q, k, v, gl, head_first=True)
    with pytest.raises(ssmc.Error, match="does not support the argument"):
        ops.chunk_retention(q, k, v, nonsense=1)
    with pytest.raises(ssmc.Error, match="context parallelism"):
        ops.chunk_gated_delta_rule(q, k, v, gl, beta, cp_context=object())
    with pytest.raises(ssmc.Error, match="gk and gv are not supported"):
        ops.fused_recurrent_gated_delta_rule(q, k, v, gk=q, beta=beta)
    with pytest.raises(ssmc.Error, match="beta per value channel"):
        ops.fused_recurrent_delta_rule(q, k, v, beta=torch.rand(B, T, H, V))
    with pytest.raises(ValueError, match="batch size is expected to be 1"):
        ops.chunk_delta_rule(q, k, v, beta, cu_seqlens=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="number of initial states"):
        ops.fused_recurrent_gla(q[:1], k[:1], v[:1], gk=q[:1], initial_state=h0, cu_seqlens=torch.tensor(CU))
    with pytest.raises(ValueError, match="allow_neg_eigval"):
        ops.chunk_gated_delta_rule(q, k, v, gl, beta, allow_neg_eigval=True)
    with pytest.raises(AssertionError, match="float32"):
        ops.chunk_gla(q, k, v, q, initial_state=h0.bfloat16())
    x = rnd(1, T, 2, 3, g=g)
    with pytest.raises(ssmc.Error, match="needs seq_idx"):
        ops.mamba_chunk_scan_combined(x, rnd(1, T, 2, g=g), -torch.rand(2), rnd(1, T, 1, 4, g=g),
                                      rnd(1, T, 1, 4, g=g), 64, cu_seqlens=torch.tensor([0, T]),
                                      return_varlen_states=True)


def test_gradcheck_through_ops_on_the_interpreter():
    """The drop-ins, run on the f64 interpreter, pass gradcheck."""
    if not GRAD:
        pytest.skip("the loaded libssmc.so has no gradient API (ssmc_backward)")
    g = gen(15)
    q, k, v = (rnd(1, 4, 1, 2, g=g).double() for _ in range(3))
    gl, beta = F.logsigmoid(rnd(1, 4, 1, g=g)).double(), torch.rand(1, 4, 1, generator=g).double()
    h0 = rnd(1, 1, 2, 2, g=g).double()
    leaves = [t.requires_grad_() for t in (q, k, v, gl, beta, h0)]
    with ops.use_device("interp"):
        assert torch.autograd.gradcheck(
            lambda *a: ops.chunk_gated_delta_rule(*a[:5], initial_state=a[5], output_final_state=True,
                                                  use_qk_l2norm_in_kernel=True),
            tuple(leaves), eps=1e-6, atol=1e-6, fast_mode=True)


def test_linear_attn_normalize_varlen():
    """normalize=True with cu_seqlens: each sequence from its own (kv, z)
    initial state, as separate calls give, z states [N, 1, H, K]."""
    q, k, v, _, g = qkv(16, 1)
    q, k = q.abs(), k.abs()
    h3, z3 = torch.randn(3, H, K, V, generator=g), torch.rand(3, 1, H, K, generator=g)
    o, (ht, z) = ops.fused_recurrent_linear_attn(q, k, v, initial_state=(h3, z3), output_final_state=True,
                                                 normalize=True, cu_seqlens=torch.tensor(CU))
    assert z.shape == (3, 1, H, K) and ht.shape == (3, H, K, V)
    for i, (a, b) in enumerate(zip(CU[:-1], CU[1:])):
        if a == b:
            assert torch.equal(ht[i], h3[i])
            continue
        oi, (hi, zi) = ops.fused_recurrent_linear_attn(q[:, a:b], k[:, a:b], v[:, a:b],
                                                       initial_state=(h3[i:i + 1], z3[i:i + 1]),
                                                       output_final_state=True, normalize=True)
        assert rel(o[:, a:b], oi) < 1e-6 and rel(ht[i:i + 1], hi) < 1e-6 and rel(z[i:i + 1], zi) < 1e-6
