"""test_model.py: ssmc.load and ssmc.Model on the CPU and the interpreter.

- every example: gradcheck on device="interp" (f64), and the CPU backend
  against the interpreter, values and gradients, from an initial state;
- cu_seqlens against separate runs, values and gradients;
- dtypes, non-contiguous inputs, the compile cache, the library search;
- errors: a bad source, a wrong shape, dtype, name or device, bad cu_seqlens.
Run by ctest (label python) with SSMC_LIBRARY set to the build's libssmc.so.
"""
import glob
import os

import pytest
import torch
import torch.nn.functional as F

import ssmc
import ssmc.ops
from ssmc import _core, _lib, _torchop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRAD = _lib.library().has_grad
needs_grad = pytest.mark.skipif(not GRAD, reason="the loaded libssmc.so has no gradient API (ssmc_backward)")

# small dims for every example (H = G * R and the like kept); a new example
# without a line here fails test_every_example_listed
DIMS = {
    "deltanet": {"H": 2, "K": 3, "V": 2},
    "gated_deltanet": {"H": 2, "K": 3, "V": 2},
    "gla": {"H": 2, "K": 3, "V": 2},
    "linear_attn": {"H": 2, "K": 3, "V": 2},
    "lstm": {"E": 3, "H": 2},
    "mamba": {"E": 3, "N": 2},
    "mamba2": {"H": 2, "P": 2, "N": 3},
    "mamba2_conv": {"H": 4, "P": 2, "N": 2, "G": 2, "R": 2, "W": 3},
    "mamba3": {"H": 2, "P": 2, "N": 2},
    "mom": {"M": 3, "E": 2, "K": 2, "V": 2},
    "ttt_linear": {"H": 2, "K": 3, "V": 2, "L": 2},
    "retnet": {"H": 2, "K": 3, "V": 2},
    "rwkv6": {"H": 2, "K": 3, "V": 2},
    "fla_linear_attn": {"H": 2, "K": 3, "V": 2},
    "fla_retention": {"H": 2, "K": 3, "V": 2},
    "fla_simple_gla": {"H": 2, "K": 3, "V": 2},
    "fla_gla": {"H": 2, "K": 3, "V": 2},
    "fla_gla_kv": {"H": 2, "K": 3, "V": 2},
    "fla_delta_rule": {"H": 2, "K": 3, "V": 2},
    "fla_gated_delta_rule": {"H": 1, "HV": 2, "R": 2, "K": 3, "V": 2},
    "mamba2_ssd": {"H": 2, "P": 2, "G": 1, "R": 2, "N": 3},
    "mamba2_ssd_z": {"H": 2, "P": 2, "G": 1, "R": 2, "N": 3},
    "mamba_ssu": {"H": 2, "P": 2, "G": 1, "R": 2, "N": 3},
    "mamba_ssu_z": {"H": 2, "P": 2, "G": 1, "R": 2, "N": 3},
}
EXAMPLES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "examples", "*.ssm")))


def example(name, device, dims=None):
    return ssmc.load(os.path.join(ROOT, "examples", name + ".ssm"), dims=DIMS[name] if dims is None else dims,
                     device=device)


def random_args(m, B, T, dtype=torch.float64, seed=0, scale=0.5):
    """Every input and param, and an initial state for every state, drawn
    from a seeded normal (scaled: the examples stay well conditioned)."""
    g = torch.Generator().manual_seed(seed)
    args = {}
    for name, shape in m.inputs.items():
        args[name] = (torch.randn((B, T) + shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    for name, shape in m.params.items():
        args[name] = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    init = {name: (torch.randn((B,) + shape, generator=g, dtype=torch.float64) * scale).to(dtype)
            for name, shape in m.states.items()}
    return args, init


def grad_or_skip(m):
    """Skips when the library cannot differentiate this model (it says why)."""
    if not GRAD:
        pytest.skip("the loaded libssmc.so has no gradient API (ssmc_backward)")
    try:
        m._grad_route(m._compiled(m.device or "cpu"))
    except ssmc.Error as e:
        if e.status == "unsupported":
            pytest.skip(f"the library cannot differentiate {m.name} yet: {e}")
        raise


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def test_every_example_listed():
    assert EXAMPLES and not set(EXAMPLES) - set(DIMS), f"examples without dims here: {set(EXAMPLES) - set(DIMS)}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_gradcheck_interp(name):
    """torch.autograd.gradcheck of every example on the interpreter: the
    gradients of every input, param and initial state, outputs and final
    states both in the loss."""
    m = example(name, "interp")
    grad_or_skip(m)
    args, init = random_args(m, 2, 4)
    names = list(args) + list(init)
    leaves = [t.requires_grad_() for t in list(args.values()) + list(init.values())]

    def f(*ts):
        a = dict(zip(names[:len(args)], ts[:len(args)]))
        i = dict(zip(names[len(args):], ts[len(args):]))
        out = m(**a, initial_state=i, output_final_state=True)
        return tuple(out.values())

    assert torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("name", EXAMPLES)
def test_cpu_against_interp(name):
    """The CPU backend (LLVM) against the interpreter: every output and final
    state, f32 against f64, from an initial state."""
    mc, mi = example(name, "cpu"), example(name, "interp")
    args, init = random_args(mc, 2, 6, seed=1)
    oc = mc(**{k: v.float() for k, v in args.items()}, initial_state={k: v.float() for k, v in init.items()},
            output_final_state=True)
    oi = mi(**args, initial_state=init, output_final_state=True)
    assert set(oc) == set(oi) == set(mc.outputs) | set(mc.states)
    for k in oi:
        assert oc[k].dtype == torch.float32 and oi[k].dtype == torch.float64
        assert rel(oc[k], oi[k]) < 1e-4, k


@pytest.mark.parametrize("name", EXAMPLES)
def test_cpu_gradients_against_interp(name):
    """The gradients of a random loss of every output and final state, with
    respect to every input, param and initial state, from a model loaded
    for the CPU (f32 tensors) against the interpreter's (f64)."""
    mc, mi = example(name, "cpu"), example(name, "interp")
    grad_or_skip(mc)
    args, init = random_args(mc, 2, 6, seed=1)
    oi = mi(**args, initial_state=init, output_final_state=True)
    g = torch.Generator().manual_seed(2)
    w = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in oi.items()}
    grads = []
    for m, dt in ((mc, torch.float32), (mi, torch.float64)):
        a = {k: v.to(dt).requires_grad_() for k, v in args.items()}
        i = {k: v.to(dt).requires_grad_() for k, v in init.items()}
        out = m(**a, initial_state=i, output_final_state=True)
        sum((out[k].double() * w[k]).sum() for k in out).backward()
        grads.append({**{k: v.grad for k, v in a.items()}, **{"init " + k: v.grad for k, v in i.items()}})
    for k in grads[1]:
        assert grads[0][k].dtype == torch.float32, k
        assert rel(grads[0][k], grads[1][k]) < 1e-4, k


def test_cu_seqlens_equals_separate_runs():
    m = example("mamba2", "cpu")
    lens = [3, 0, 5, 1]
    offs = [0]
    for n in lens:
        offs.append(offs[-1] + n)
    args, init = random_args(m, 1, offs[-1], torch.float32, seed=3)
    init = {k: torch.randn((len(lens),) + v.shape[1:]) for k, v in init.items()}
    for cu in (torch.tensor(offs, dtype=torch.int32), torch.tensor(offs), offs):
        out = m(**args, initial_state=init, output_final_state=True, cu_seqlens=cu)
        for i, (a, b) in enumerate(zip(offs[:-1], offs[1:])):
            if b == a:
                assert torch.equal(out["S"][i], init["S"][i])
                continue
            one = m(**{k: (v[:, a:b] if k in m.inputs else v) for k, v in args.items()},
                    initial_state={k: v[i:i + 1] for k, v in init.items()}, output_final_state=True)
            assert torch.allclose(out["y"][:, a:b], one["y"], rtol=1e-6, atol=1e-6)
            assert torch.allclose(out["S"][i:i + 1], one["S"], rtol=1e-6, atol=1e-6)


@needs_grad
def test_cu_seqlens_gradients():
    """Gradients through a packed batch on the interpreter: gradcheck with an
    empty sequence among them (its final state is its initial state)."""
    m = example("fla_gated_delta_rule", "interp")
    grad_or_skip(m)
    args, _ = random_args(m, 1, 7, seed=4)
    cu = torch.tensor([0, 2, 2, 7])
    s0 = torch.randn(3, *m.states["S"], dtype=torch.float64)
    names = list(args)
    leaves = [t.requires_grad_() for t in args.values()] + [s0.requires_grad_()]

    def f(*ts):
        out = m(**dict(zip(names, ts[:-1])), initial_state={"S": ts[-1]}, output_final_state=True, cu_seqlens=cu)
        return out["o"], out["S"]

    assert torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_dtypes():
    """f32, f16 and bf16 per tensor; outputs in the inputs' dtype (promoted
    when they differ, or out_dtype), final states float32."""
    m = example("fla_simple_gla", "cpu", {"H": 2, "K": 8, "V": 8})
    args, init = random_args(m, 2, 16, torch.float32, seed=5)
    ref = m(**args, initial_state=init, output_final_state=True)
    for dt, tol in ((torch.float16, 5e-3), (torch.bfloat16, 3e-2)):
        a = {k: (v.to(dt) if k in m.inputs else v) for k, v in args.items()}
        out = m(**a, initial_state={k: v.to(dt) for k, v in init.items()}, output_final_state=True)
        assert out["o"].dtype == dt and out["S"].dtype == torch.float32
        assert rel(out["o"], ref["o"]) < tol and rel(out["S"], ref["S"]) < tol
    mixed = dict(args, q=args["q"].to(torch.bfloat16), k=args["k"].to(torch.float16))
    assert m(**mixed)["o"].dtype == torch.float32
    assert m(**args, out_dtype=torch.bfloat16)["o"].dtype == torch.bfloat16


def test_noncontiguous_inputs():
    m = example("fla_gla", "cpu")
    args, init = random_args(m, 2, 5, torch.float32, seed=6)
    ref = m(**args, initial_state=init, output_final_state=True)
    nc = {k: (v.transpose(0, 1).contiguous().transpose(0, 1) if v.dim() > 1 else v) for k, v in args.items()}
    assert not nc["q"].is_contiguous()
    out = m(**nc, initial_state={k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in init.items()},
            output_final_state=True)
    for k in ref:
        assert torch.equal(out[k], ref[k])


def test_initial_state_is_not_modified():
    m = example("mamba2", "cpu")
    args, init = random_args(m, 2, 4, torch.float32, seed=7)
    s0 = init["S"].clone()
    m(**args, initial_state=init, output_final_state=True)
    assert torch.equal(init["S"], s0)


INIT_MODEL = """
model m {
  dim N = 3;
  input x[T,N];
  param w0[N,N], lam;
  state P[N,N];
  output y[T,N];
  init P[i,j] = select(i == j, 1, 0) * lam + w0[i,j];
  P[i,j] = 0.5 * P[i,j] + x[t,i] * x[t,j];
  y[t,i] = sum(j: P[i,j] * x[t,j]);
}
"""


@pytest.mark.parametrize("device", ["interp", "cpu"])
def test_state_not_given_starts_from_its_init(device):
    """SPEC §1: an init statement gives a state's initial value when the
    caller gives none, whether or not the final state is asked for and
    whether or not a gradient is needed (the state buffer the binding makes
    for the final state is only written)."""
    m = ssmc.load(INIT_MODEL, device=device)
    dt = torch.float64 if device == "interp" else torch.float32
    g = torch.Generator().manual_seed(3)
    x, w0 = torch.randn(2, 5, 3, generator=g).to(dt), torch.randn(3, 3, generator=g).to(dt)
    lam = torch.tensor(0.7, dtype=dt)
    p0 = (torch.eye(3, dtype=dt) * lam + w0).expand(2, 3, 3).contiguous()
    ref = m(x=x, w0=w0, lam=lam, initial_state={"P": p0}, output_final_state=True)
    plain = m(x=x, w0=w0, lam=lam)
    final = m(x=x, w0=w0, lam=lam, output_final_state=True)
    assert rel(plain["y"], ref["y"]) < 1e-6
    assert rel(final["y"], ref["y"]) < 1e-6 and rel(final["P"], ref["P"]) < 1e-6
    if not GRAD:
        return
    # the gradient of w0 and lam reaches them through the init too
    leaves = [w0.clone().requires_grad_(), lam.clone().requires_grad_()]
    out = m(x=x, w0=leaves[0], lam=leaves[1], output_final_state=True)
    assert rel(out["y"], ref["y"]) < 1e-6
    (out["y"].sum() + out["P"].sum()).backward()
    rleaves = [w0.clone().requires_grad_(), lam.clone().requires_grad_()]
    rp0 = (torch.eye(3, dtype=dt) * rleaves[1] + rleaves[0]).expand(2, 3, 3)
    rout = m(x=x, w0=rleaves[0], lam=rleaves[1], initial_state={"P": rp0}, output_final_state=True)
    (rout["y"].sum() + rout["P"].sum()).backward()
    for a, b in zip(leaves, rleaves):
        assert rel(a.grad, b.grad) < 1e-5


def test_compile_cache():
    """A second load of the same (source, dims, device) reuses the compiled model."""
    example("mamba", "cpu")(**random_args(example("mamba", "cpu"), 1, 2, torch.float32)[0])
    n = len(_core._cache)
    m = example("mamba", "cpu")
    m(**random_args(m, 1, 2, torch.float32)[0])
    assert len(_core._cache) == n
    example("mamba", "cpu", {"E": 4, "N": 2})
    assert len(_core._cache) == n + 1


def test_device_follows_tensors():
    m = example("retnet", None)
    args, _ = random_args(m, 1, 3, torch.float32)
    assert m(**args)["y"].device.type == "cpu"
    assert (m.device, m.name) == (None, "retnet")
    assert m.inputs == {"q": (2, 3), "k": (2, 3), "v": (2, 2)} and m.params == {"scale": (2,)}
    assert m.states == {"S": (2, 3, 2)} and m.outputs == {"y": (2, 2)}


def test_source_text_and_path(tmp_path):
    src = "model ema { dim N = 3; input x[T,N]; param a[N]; state S[N]; output y[T,N];\n" \
          "  S[n] = sigmoid(a[n]) * S[n] + x[t,n]; y[t,n] = S[n]; }\n"
    p = tmp_path / "ema.ssm"
    p.write_text(src)
    x, a = torch.randn(2, 4, 3), torch.randn(3)
    y1 = ssmc.load(src, device="cpu")(x=x, a=a)["y"]
    y2 = ssmc.load(p, device="cpu")(x=x, a=a)["y"]
    y3 = ssmc.load(str(p), device="interp")(x=x, a=a)["y"]
    assert torch.equal(y1, y2) and rel(y1, y3) < 1e-6


def test_errors():
    with pytest.raises(ssmc.Error) as e:
        ssmc.load("model m { input x[T]; output y[T];\n  y[t] = x[t] + q;\n}\n")
    assert "<source>:2:17: error:" in str(e.value) and "^" in str(e.value) and e.value.status == "source error"
    with pytest.raises(ssmc.Error, match="no such file"):
        ssmc.load("no/such/model.ssm")
    with pytest.raises(ssmc.Error, match="unknown device"):
        ssmc.load(os.path.join(ROOT, "examples", "gla.ssm"), device="tpu")
    with pytest.raises(ssmc.Error, match="no model 'nope'|has no model|nope"):
        ssmc.load(os.path.join(ROOT, "examples", "gla.ssm"), model="nope")
    with pytest.raises(ssmc.Error, match="unknown dim|no dim|'Z'"):
        ssmc.load(os.path.join(ROOT, "examples", "gla.ssm"), dims={"Z": 3})
    m = example("mamba2", "cpu")
    args, init = random_args(m, 2, 3, torch.float32)
    with pytest.raises(ssmc.Error, match=r"input 'x' of model 'mamba2' must have shape \[2, 3, 2, 2\]"):
        m(**dict(args, x=args["x"][..., :1]))
    with pytest.raises(ssmc.Error, match="param 'D'"):
        m(**dict(args, D=torch.zeros(3)))
    with pytest.raises(ssmc.Error, match="dtype torch.int64"):
        m(**dict(args, dt=args["dt"].long()))
    with pytest.raises(ssmc.Error, match="missing input 'C'"):
        m(**{k: v for k, v in args.items() if k != "C"})
    with pytest.raises(ssmc.Error, match="no input or param named 'w'"):
        m(**args, w=args["x"])
    with pytest.raises(ssmc.Error, match="'S' is a state"):
        m(**args, S=init["S"])
    with pytest.raises(ssmc.Error, match="'y' is an output"):
        m(**args, y=args["x"])
    with pytest.raises(ssmc.Error, match="no state named 'Q'"):
        m(**args, initial_state={"Q": init["S"]})
    with pytest.raises(ssmc.Error, match="initial state 'S'"):
        m(**args, initial_state={"S": init["S"][:1]})
    with pytest.raises(ssmc.Error, match="batch of one"):
        m(**args, cu_seqlens=[0, 1, 3])
    one = {k: (v[:1] if k in m.inputs else v) for k, v in args.items()}
    with pytest.raises(ssmc.Error, match="rise from 0 to T = 3"):
        m(**one, cu_seqlens=[0, 2, 1, 3])
    with pytest.raises(ssmc.Error, match="1-D int32 or int64"):
        m(**one, cu_seqlens=torch.tensor([0.0, 3.0]))
    with pytest.raises(ssmc.Error, match=r"\[N, \.\.\.\]"):
        m(**one, cu_seqlens=[0, 1, 3], initial_state={"S": init["S"][:1]})
    mi = example("mamba2", "interp")
    if torch.cuda.is_available():
        with pytest.raises(ssmc.Error, match="device 'interp'"):
            mi(**{k: v.cuda() for k, v in args.items()})
        with pytest.raises(ssmc.Error, match="one device"):
            m(**dict(args, x=args["x"].cuda()))


def test_no_gradient_api_is_an_error():
    """Without ssmc_backward in the library a gradient is refused, not faked."""
    if GRAD:
        pytest.skip("the loaded library has the gradient API")
    m = example("mamba2", "cpu")
    args, _ = random_args(m, 1, 3, torch.float32)
    args["x"].requires_grad_()
    with pytest.raises(ssmc.Error, match="gradients need ssmc_forward_train and ssmc_backward"):
        m(**args)


def test_library_search(monkeypatch):
    path = _lib.find_library()
    assert os.path.isfile(path)
    monkeypatch.setenv("SSMC_LIBRARY", "/no/such/libssmc.so")
    with pytest.raises(ssmc.Error, match="SSMC_LIBRARY"):
        _lib.find_library()
    monkeypatch.delenv("SSMC_LIBRARY")
    p = _lib.find_library()  # beside the package, else the checkout's build/
    assert p.endswith("libssmc.so")


@pytest.mark.skipif(not _torchop.AVAILABLE, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_on_the_cpu():
    """torch.compile captures a function that calls a model and an ssmc.ops
    function in one graph (fullgraph=True: a graph break is an error), with
    the eager values and gradients (aot_eager: no C++ compiler needed)."""
    m = example("mamba2", "cpu")
    args, _ = random_args(m, 2, 5, torch.float32, seed=8)

    def f(x, dt):
        y = m(**dict(args, x=x, dt=dt))["y"]
        o, _ = ssmc.ops.chunk_simple_gla(y, y, y, F.logsigmoid(dt))
        return o

    x, dt = args["x"].clone().requires_grad_(), args["dt"].clone().requires_grad_()
    ref = f(x, dt)
    if GRAD:
        ref.sum().backward()
        gx = x.grad.clone()
        x.grad = None
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, dt)
    assert rel(out, ref) < 1e-6
    if GRAD:
        out.sum().backward()
        assert rel(x.grad, gx) < 1e-6


@needs_grad
def test_backward_twice_reuses_the_tape():
    m = example("fla_simple_gla", "interp")
    args, init = random_args(m, 2, 5, seed=9)
    q = args["q"].requires_grad_()
    out = m(**args, initial_state=init, output_final_state=True)
    loss = out["o"].square().sum() + out["S"].sum()
    loss.backward(retain_graph=True)
    g1 = q.grad.clone()
    loss.backward()
    assert torch.allclose(q.grad, 2 * g1, rtol=1e-12, atol=0)
