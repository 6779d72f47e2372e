"""test_gpu.py: ssmc in PyTorch on CUDA (ctest label gpu; skipped without a GPU).

- every example on cuda:0 against the interpreter, f32 and bf16, from an
  initial state, on torch's current stream (a side stream included), and
  its gradients;
- ssmc.ops on CUDA against the loop-over-t references (naive.py);
- ssmc.ops against flash-linear-attention's and mamba_ssm's own functions,
  values and gradients, where those packages are installed;
- torch.compile (torch >= 2.4) over a layer that uses ssmc: no graph break
  (fullgraph=True), the same values and gradients as eager, and the
  torch.library op called eagerly against the autograd.Function path.
"""
import pytest
import torch
import torch.nn.functional as F

import naive
import ssmc
from ssmc import _lib, _torchop, ops
from test_model import DIMS, EXAMPLES, example, grad_or_skip, random_args, rel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
GRAD = _lib.library().has_grad
DEV = "cuda:0"


def nrel(a, b):
    """||a - b|| / ||b||: the error measure for bf16 comparisons."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_cuda_against_interp(name, dtype, tol):
    mg, mi = example(name, "cuda"), example(name, "interp")
    args, init = random_args(mg, 3, 33, seed=1)
    args = {k: v.to(dtype).double() for k, v in args.items()}  # the values both sides see
    init = {k: v.to(dtype).double() for k, v in init.items()}
    oi = mi(**args, initial_state=init, output_final_state=True)
    og = mg(**{k: v.to(DEV, dtype) for k, v in args.items()},
            initial_state={k: v.to(DEV, dtype) for k, v in init.items()}, output_final_state=True)
    torch.cuda.synchronize()
    for k in oi:
        assert og[k].device.type == "cuda"
        assert og[k].dtype == (dtype if k in mg.outputs else torch.float32)
        assert rel(og[k].cpu(), oi[k]) < tol, k


def test_side_stream():
    """The kernels go on torch's current stream: a run inside a side stream,
    waited for with that stream only, gives the default stream's result."""
    m = example("mamba2", "cuda", {"H": 8, "P": 64, "N": 64})
    args, init = random_args(m, 4, 512, torch.float32, seed=2)
    args = {k: v.to(DEV) for k, v in args.items()}
    ref = m(**args)["y"]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out = m(**args)["y"]
    s.synchronize()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("name", ["mamba2", "fla_gated_delta_rule", "fla_gla", "mamba2_ssd_z"])
def test_cuda_gradients_against_interp(name):
    mg, mi = example(name, "cuda"), example(name, "interp")
    grad_or_skip(mg)
    args, init = random_args(mg, 2, 9, seed=3)
    grads = []
    for m, dev, dt in ((mg, DEV, torch.float32), (mi, "cpu", torch.float64)):
        a = {k: v.to(dev, dt).requires_grad_() for k, v in args.items()}
        i = {k: v.to(dev, dt).requires_grad_() for k, v in init.items()}
        out = m(**a, initial_state=i, output_final_state=True)
        sum(out[k].double().square().sum() for k in out).backward()
        grads.append({**{k: v.grad for k, v in a.items()}, **{"S0 " + k: v.grad for k, v in i.items()}})
    for k in grads[1]:
        assert grads[0][k].device.type == "cuda"
        assert rel(grads[0][k].cpu(), grads[1][k]) < 1e-4, k


def test_cu_seqlens_on_cuda():
    m = example("fla_simple_gla", "cuda")
    cu = torch.tensor([0, 5, 5, 17], dtype=torch.int32, device=DEV)
    args, _ = random_args(m, 1, 17, torch.float32, seed=4)
    args = {k: v.to(DEV) for k, v in args.items()}
    out = m(**args, output_final_state=True, cu_seqlens=cu)
    for i, (a, b) in enumerate([(0, 5), (5, 5), (5, 17)]):
        if a == b:
            assert out["S"][i].abs().max() == 0
            continue
        one = m(**{k: (v[:, a:b] if k in m.inputs else v) for k, v in args.items()}, output_final_state=True)
        assert rel(out["o"][:, a:b], one["o"]) < 1e-6 and rel(out["S"][i:i + 1], one["S"]) < 1e-6


# ---- ssmc.ops on CUDA against the references


def test_ops_on_cuda_against_naive():
    g = torch.Generator().manual_seed(5)
    B, T, H, K, V = 2, 40, 4, 16, 32
    q, k, v = (torch.randn(B, T, H, K if i < 2 else V, generator=g) for i in range(3))
    gl, beta = F.logsigmoid(torch.randn(B, T, H, generator=g)), torch.rand(B, T, H, generator=g)
    h0 = torch.randn(B, H, K, V, generator=g)
    c = lambda *ts: [t.to(DEV) for t in ts]
    o, ht = ops.chunk_gated_delta_rule(*c(q, k, v, gl, beta), initial_state=h0.to(DEV), output_final_state=True,
                                       use_qk_l2norm_in_kernel=True)
    ro, rh = naive.delta_rule(q, k, v, beta, g=gl, h0=h0, l2norm=True)
    assert rel(o.cpu(), ro) < 1e-4 and rel(ht.cpu(), rh) < 1e-4
    o, ht = ops.fused_recurrent_simple_gla(*c(q, k, v, gl), initial_state=h0.to(DEV), output_final_state=True,
                                           reverse=True)
    ro, rh = naive.gated_linear(q, k, v, g=gl, h0=h0, reverse=True)
    assert rel(o.cpu(), ro) < 1e-4 and rel(ht.cpu(), rh) < 1e-4


# ---- against flash-linear-attention and mamba_ssm


def _fla():
    return pytest.importorskip("fla")


FLA_CASES = ["chunk_linear_attn", "fused_recurrent_linear_attn", "chunk_retention", "fused_recurrent_retention",
             "chunk_simple_gla", "fused_recurrent_simple_gla", "chunk_gla", "fused_recurrent_gla",
             "chunk_delta_rule", "fused_recurrent_delta_rule", "chunk_gated_delta_rule",
             "fused_recurrent_gated_delta_rule"]


def _fla_fn(name):
    import importlib
    family = name.replace("chunk_", "").replace("fused_recurrent_", "")
    return getattr(importlib.import_module(f"fla.ops.{family}"), name)


def _fla_args(name, varlen, g):
    B, T, H, K, V = (1, 130, 4, 32, 32) if varlen else (2, 130, 4, 32, 32)
    bf = lambda *s: torch.randn(*s, generator=g).to(DEV, torch.bfloat16)
    q, k, v = bf(B, T, H, K), bf(B, T, H, K), bf(B, T, H, V)
    kw = {}
    if "delta" in name:
        k = F.normalize(k.float(), dim=-1).to(torch.bfloat16)
        kw["beta"] = torch.rand(B, T, H, generator=g).to(DEV, torch.bfloat16)
    if "simple_gla" in name or "gated_delta" in name:
        kw["g"] = F.logsigmoid(torch.randn(B, T, H, generator=g)).to(DEV, torch.float32)
    if name.endswith("_gla") and "simple" not in name:
        gk = (F.logsigmoid(torch.randn(B, T, H, K, generator=g)) / 16).to(DEV, torch.float32)
        kw["g" if name.startswith("chunk") else "gk"] = gk
    N = 3 if varlen else B
    h0 = torch.randn(N, H, K, V, generator=g).to(DEV)
    cu = torch.tensor([0, 50, 50, 130], dtype=torch.long, device=DEV) if varlen else None
    return (q, k, v), kw, h0, cu


def _refusal(e):
    """fla declining to run a backward here (not a failure of ssmc): its gated
    chunked backward refuses Triton >= 3.4, < 3.7.1 on Hopper (fla issue #640),
    and fused_recurrent_gated_delta_rule has no backward at all."""
    s = str(e)
    return isinstance(e, NotImplementedError) or (isinstance(e, RuntimeError) and "Triton" in s and "incorrect" in s)


def _run_op(fn, q, k, v, kw, h0, cu, extra, backward=True):
    """fn's outputs, final state and (backward) the gradients of q, k, v, the
    gates, beta and h0 for a fixed random cotangent."""
    ins = [t.clone().requires_grad_(backward) for t in (q, k, v)]
    kws = {key: t.clone().requires_grad_(backward) for key, t in kw.items()}
    s0 = h0.clone().requires_grad_(backward)
    o, ht = fn(*ins, **kws, **extra, initial_state=s0, output_final_state=True, cu_seqlens=cu)
    if not backward:
        return [o, ht]
    gg = torch.Generator(device=DEV).manual_seed(7)
    loss = (o.float() * torch.randn(o.shape, generator=gg, device=DEV)).sum() + \
        (ht * torch.randn(ht.shape, generator=gg, device=DEV)).sum()
    loss.backward()
    return [o, ht] + [t.grad for t in ins] + [t.grad for t in kws.values()] + [s0.grad]


def _naive_delta(q, k, v, beta, g, initial_state, output_final_state, cu_seqlens):
    """naive.delta_rule on the CPU in f64, back on the GPU in the inputs' dtypes."""
    c = lambda t: t.cpu()
    o, ht = naive.delta_rule(c(q), c(k), c(v), c(beta), g=c(g), h0=c(initial_state),
                             cu=None if cu_seqlens is None else cu_seqlens.cpu())
    return o.to(DEV, q.dtype), ht.to(DEV, initial_state.dtype)


@pytest.mark.parametrize("name", FLA_CASES)
@pytest.mark.parametrize("varlen", [False, True])
def test_ops_against_fla(name, varlen):
    """ssmc.ops.X against fla.ops.X on the same bf16 tensors: outputs, final
    states and the gradients of q, k, v, the gates, beta and h0. Where fla
    refuses the backward on this machine (_refusal), the values are still
    compared with fla.ops.X and the gradients with the twin of X
    (chunk_ <-> fused_recurrent_) when its backward runs, else with the f64
    loop of naive.py; the refusal is printed."""
    _fla()
    g = torch.Generator().manual_seed(6)
    (q, k, v), kw, h0, cu = _fla_args(name, varlen, g)
    extra = {"normalize": False} if "linear_attn" in name else {}
    ours = _run_op(getattr(ops, name), q, k, v, kw, h0, cu, extra)
    try:
        ref = _run_op(_fla_fn(name), q, k, v, kw, h0, cu, extra)
    except (NotImplementedError, RuntimeError) as e:
        if not _refusal(e):
            raise
        print(f"fla.{name} refuses its backward here ({type(e).__name__}: {str(e)[:120]})")
        ref = _run_op(_fla_fn(name), q, k, v, kw, h0, cu, extra, backward=False)
        twin = name.replace("chunk_", "fused_recurrent_") if name.startswith("chunk_") else \
            name.replace("fused_recurrent_", "chunk_")
        try:
            grads = _run_op(_fla_fn(twin), q, k, v, kw, h0, cu, extra)[2:]
            print(f"  gradients compared with fla.{twin}")
        except (NotImplementedError, RuntimeError) as e2:
            if not _refusal(e2) or "gated_delta" not in name:
                raise
            grads = _run_op(_naive_delta, q, k, v, kw, h0, cu, {})[2:]
            print("  gradients compared with naive.delta_rule (f64)")
        ref = ref + grads
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        assert nrel(a, b) < 3e-2, (name, i, nrel(a, b))


def test_ops_against_mamba_ssm():
    pytest.importorskip("mamba_ssm")
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    g = torch.Generator().manual_seed(8)
    b, T, H, P, G, N = 2, 130, 4, 32, 2, 32
    bf = lambda *s: torch.randn(*s, generator=g).to(DEV, torch.bfloat16)
    x, dt, Bm, Cm, z = bf(b, T, H, P), bf(b, T, H), bf(b, T, G, N), bf(b, T, G, N), bf(b, T, H, P)
    A = -torch.rand(H, generator=g).to(DEV) - 0.5
    D, dtb, s0 = torch.randn(H, generator=g).to(DEV), torch.randn(H, generator=g).to(DEV), \
        torch.randn(b, H, P, N, generator=g).to(DEV)
    results = []
    for fn in (mamba_chunk_scan_combined, ops.mamba_chunk_scan_combined):
        ins = [t.clone().requires_grad_() for t in (x, dt, A, Bm, Cm, D, z, dtb, s0)]
        y, fs = fn(*ins[:5], 64, D=ins[5], z=ins[6], dt_bias=ins[7], initial_states=ins[8], dt_softplus=True,
                   return_final_states=True)
        (y.float().square().sum() + fs.square().sum()).backward()
        results.append([y, fs] + [t.grad for t in ins])
    for i, (a, c) in enumerate(zip(results[1], results[0])):
        assert nrel(a, c) < 3e-2, (i, nrel(a, c))
    # one decode step: Mamba-2's form (A, dt, dt_bias broadcast) and the general form
    st = torch.randn(b, H, P, N, generator=g).to(DEV)
    xs, zs = bf(b, H, P), bf(b, H, P)
    dts = torch.randn(b, H, generator=g).to(DEV)[:, :, None].expand(b, H, P)
    As = A[:, None, None].expand(H, P, N)
    dtbs = dtb[:, None].expand(H, P)
    Ds = D[:, None].expand(H, P)
    s1, s2 = st.clone(), st.clone()
    o1 = selective_state_update(s1, xs, dts, As, Bm[:, 0], Cm[:, 0], D=Ds, z=zs, dt_bias=dtbs, dt_softplus=True)
    o2 = ops.selective_state_update(s2, xs, dts, As, Bm[:, 0], Cm[:, 0], D=Ds, z=zs, dt_bias=dtbs, dt_softplus=True)
    assert o1.dtype == o2.dtype and nrel(o2, o1) < 2e-2 and nrel(s2, s1) < 1e-3
    Ag = -torch.rand(H, P, N, generator=g).to(DEV)
    dtg = torch.randn(b, H, P, generator=g).to(DEV)
    s1, s2 = st.clone(), st.clone()
    o1 = selective_state_update(s1, xs, dtg, Ag, Bm[:, 0], Cm[:, 0], D=Ds, dt_bias=dtbs, dt_softplus=True)
    o2 = ops.selective_state_update(s2, xs, dtg, Ag, Bm[:, 0], Cm[:, 0], D=Ds, dt_bias=dtbs, dt_softplus=True)
    assert nrel(o2, o1) < 2e-2 and nrel(s2, s1) < 1e-3


# ---- torch.compile


class Layer(torch.nn.Module):
    """A Gated DeltaNet-style layer whose recurrence is ssmc.ops."""

    def __init__(self, d=64, H=4, K=16):
        super().__init__()
        self.H, self.K = H, K
        self.qkv = torch.nn.Linear(d, 3 * H * K)
        self.ab = torch.nn.Linear(d, 2 * H)
        self.out = torch.nn.Linear(H * K, d)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, self.H, self.K) for t in self.qkv(x).chunk(3, -1))
        a, b = self.ab(x).chunk(2, -1)
        o, _ = ops.chunk_gated_delta_rule(q, k, v, F.logsigmoid(a), b.sigmoid(), use_qk_l2norm_in_kernel=True)
        return self.out(o.reshape(B, T, -1))


@pytest.mark.skipif(not _torchop.AVAILABLE, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_layer_without_graph_break():
    torch.manual_seed(9)
    layer = Layer().to(DEV)
    x = torch.randn(2, 50, 64, device=DEV, requires_grad=True)
    ref = layer(x)
    ref.square().sum().backward()
    gx, gw = x.grad.clone(), layer.qkv.weight.grad.clone()
    x.grad = None
    layer.zero_grad()
    compiled = torch.compile(layer, fullgraph=True)  # a graph break is an error
    out = compiled(x)
    out.square().sum().backward()
    assert rel(out, ref) < 1e-5 and rel(x.grad, gx) < 1e-4 and rel(layer.qkv.weight.grad, gw) < 1e-4
    explain = torch._dynamo.explain(layer)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1


@pytest.mark.skipif(not _torchop.AVAILABLE, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_library_op_against_function():
    """torch.ops.ssmc.forward/backward called eagerly agree with ssmc.Model's
    autograd.Function (the path outside torch.compile)."""
    m = example("fla_gated_delta_rule", "cuda")
    grad_or_skip(m)
    args, init = random_args(m, 2, 11, torch.float32, seed=10)
    res = []
    for path in ("function", "op"):
        a = {k: v.to(DEV).requires_grad_() for k, v in args.items()}
        i = {k: v.to(DEV).requires_grad_() for k, v in init.items()}
        if path == "function":
            out = m(**a, initial_state=i, output_final_state=True)
        else:
            out = _torchop.forward(m, a, i, True, None, None)
        (out["o"].square().sum() + out["S"].square().sum()).backward()
        res.append([out["o"], out["S"]] + [t.grad for t in a.values()] + [t.grad for t in i.values()])
    for x, y in zip(*res):
        assert rel(x, y) < 1e-5
    torch.library.opcheck(torch.ops.ssmc.forward.default,
                          (m._key, [v.to(DEV) for v in args.values()] + [init["S"].to(DEV)], [True], True, None,
                           None), test_utils=("test_schema", "test_faketensor"))
