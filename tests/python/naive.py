"""naive.py: plain PyTorch references of flash-linear-attention's and
mamba_ssm's semantics, a loop over t in float64, written for the tests (not
taken from either project). Every function takes and returns the layouts of
its fla / mamba_ssm namesake and handles cu_seqlens by running each sequence
on its own; being plain torch, each is differentiable by autograd.
"""
import torch
import torch.nn.functional as F


def _segments(T, cu):
    if cu is None:
        return None
    return list(zip([int(a) for a in cu[:-1]], [int(b) for b in cu[1:]]))


def _varlen(step_fn, T, cu, h0, per_seq):
    """Runs per_seq(slice, h0 of the sequence) over the sequences of cu (or
    the whole batch) and puts the outputs and final states together."""
    if cu is None:
        return per_seq(slice(None), h0)
    outs, hts = [], []
    for i, (a, b) in enumerate(_segments(T, cu)):
        o, ht = per_seq(slice(a, b), None if h0 is None else h0[i:i + 1])
        outs.append(o)
        hts.append(ht)
    return torch.cat(outs, 1), torch.cat(hts, 0)


def gated_linear(q, k, v, g=None, gk=None, gv=None, scale=None, h0=None, cu=None, reverse=False):
    """S_t = S_{t-1} * exp(g_t) * exp(gk_t)[:, None] * exp(gv_t)[None, :] + k_t v_t^T;
    o_t = scale * q_t^T S_t. States [N, H, K, V], float64."""
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale

    def run(sl, s0):
        qs, ks, vs = q[:, sl], k[:, sl], v[:, sl]
        n = qs.shape[1]
        S = torch.zeros(qs.shape[0], H, K, V, dtype=torch.float64) if s0 is None else s0.double().clone()
        o = [None] * n
        order = range(n - 1, -1, -1) if reverse else range(n)
        for t in order:
            d = torch.ones(qs.shape[0], H, K, V, dtype=torch.float64)
            if g is not None:
                d = d * g[:, sl][:, t].double().exp()[..., None, None]
            if gk is not None:
                d = d * gk[:, sl][:, t].double().exp()[..., :, None]
            if gv is not None:
                d = d * gv[:, sl][:, t].double().exp()[..., None, :]
            S = S * d + ks[:, t, :, :, None] * vs[:, t, :, None, :]
            o[t] = scale * (qs[:, t, :, :, None] * S).sum(-2)
        return (torch.stack(o, 1) if n else vs.new_zeros(qs.shape[0], 0, H, V)), S

    return _varlen(None, T, cu, h0, run)


def delta_rule(q, k, v, beta, g=None, scale=None, h0=None, cu=None, l2norm=False):
    """Gated delta rule with grouped value heads (v, g, beta have HV heads,
    q and k H): S' = exp(g) S; u = beta (v - S'^T k); S = S' + k u^T;
    o = scale S^T q."""
    q, k, v, beta = q.double(), k.double(), v.double(), beta.double()
    if l2norm:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    R = HV // H
    q = q.repeat_interleave(R, dim=2)
    k = k.repeat_interleave(R, dim=2)
    scale = K ** -0.5 if scale is None else scale

    def run(sl, s0):
        qs, ks, vs, bs = q[:, sl], k[:, sl], v[:, sl], beta[:, sl]
        n = qs.shape[1]
        S = torch.zeros(qs.shape[0], HV, K, V, dtype=torch.float64) if s0 is None else s0.double().clone()
        o = []
        for t in range(n):
            if g is not None:
                S = S * g[:, sl][:, t].double().exp()[..., None, None]
            u = bs[:, t, :, None] * (vs[:, t] - (ks[:, t, :, :, None] * S).sum(-2))
            S = S + ks[:, t, :, :, None] * u[:, :, None, :]
            o.append(scale * (qs[:, t, :, :, None] * S).sum(-2))
        return (torch.stack(o, 1) if n else vs.new_zeros(qs.shape[0], 0, HV, V)), S

    return _varlen(None, T, cu, h0, run)


def normalize(o, q, k, scale, z0=None):
    """fla's normalize=True on top of the unnormalised output (no cu_seqlens)."""
    kc = k.double().cumsum(1)
    if z0 is not None:
        kc = kc + z0.double()
    return o / ((q.double() * scale * kc).sum(-1, keepdim=True) + 1e-10), kc[:, -1:]


def ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, h0=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
        segments=None):
    """Mamba-2's scan as mamba_chunk_scan_combined defines it: dt through
    dt_bias, softplus and the clamp; S = exp(dt A) S + dt x B^T; y = S C + D x,
    times silu(z). segments: [(a, b)] of one batch row where the state resets
    (seq_idx), the first starting from h0."""
    x, B, C = x.double(), B.double(), C.double()
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    d = dt.double() + (0 if dt_bias is None else dt_bias.double())
    if dt_softplus:
        d = torch.where(d <= 20, F.softplus(d), d)
    d = d.clamp(dt_limit[0], dt_limit[1])
    Bh, Ch = B.repeat_interleave(R, dim=2), C.repeat_interleave(R, dim=2)
    Dm = None if D is None else (D.double() if D.dim() == 2 else D.double()[:, None].expand(H, P))
    S = torch.zeros(b, H, P, N, dtype=torch.float64) if h0 is None else h0.double().clone()
    starts = set(a for a, _ in segments[1:]) if segments else set()
    ys = []
    for t in range(T):
        if t in starts:
            S = torch.zeros_like(S)
        S = torch.exp(d[:, t] * A.double())[:, :, None, None] * S + \
            (d[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        y = (S * Ch[:, t, :, None, :]).sum(-1)
        if Dm is not None:
            y = y + Dm * x[:, t]
        if z is not None:
            y = y * F.silu(z[:, t].double())
        ys.append(y)
    return torch.stack(ys, 1), S


def state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """selective_state_update with heads: returns (out, new state), float64."""
    d = dt.double() + (0 if dt_bias is None else dt_bias.double())
    if dt_softplus:
        d = torch.where(d <= 20, F.softplus(d), d)
    H, G = x.shape[1], B.shape[1]
    Bh = B.double().repeat_interleave(H // G, dim=1)
    Ch = C.double().repeat_interleave(H // G, dim=1)
    S = state.double() * torch.exp(d[..., None] * A.double()) + (d * x.double())[..., None] * Bh[:, :, None, :]
    out = (S * Ch[:, :, None, :]).sum(-1)
    if D is not None:
        out = out + x.double() * D.double()
    if z is not None:
        out = out * F.silu(z.double())
    return out, S
