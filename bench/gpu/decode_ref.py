#!/usr/bin/env python3
"""decode_ref.py: the reference side of bench/gpu/decode.sh: one decode step
(T = 1) of mamba_ssm's selective_state_update (Mamba-2, H=64 P=64 N=128, one
group of B and C, the per-head A, dt and D broadcast over P and N with stride
0 as Mamba-2's decode passes them) and of flash-linear-attention's fused
recurrent gated delta rule (H=16 K=128 V=128), at batch 1, 16, 64 and 256,
with the signatures bench_decode.c times (inputs and outputs bf16, params
f32, states f32 or bf16) and sequences on rows 2b+1 of a pool of 2 x batch
rows.

Timed as bench_decode.c times: each step after an L2 flush (a 256 MiB
zero_), between two CUDA events on the current stream; the median of --iters.
The bytes of a row are counted as bench_decode.c counts them, so `pct`
(memory floor over 4.8 TB/s / time) compares. Where a kernel cannot index
the pool by row (fla without ssm_state_indices), the rows are gathered before
the timed call and the final state written to a new tensor (impl says
"gathered"); gates a kernel does not compute itself (fla's g and beta) are
computed before the timed call (impl says so).

Prints `BENCH side=ref case=... impl=... key=value ...` lines, and
`BENCHERR side=ref case=... err=...` for what cannot run (mamba_ssm or fla not
importable, no GPU): it never fails the caller. Needs torch with CUDA; the
references are found on PYTHONPATH (the lead's git-ignored harness puts them
there)."""
import argparse
import inspect
import sys

PEAK = 4.8e12


def err(case, msg):
    print(f"BENCHERR side=ref case={case} err={str(msg).replace(chr(10), ' ')[:300]}", flush=True)


def timed(torch, fn, iters):
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    times = []
    for i in range(iters + 5):
        flush.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        if i >= 5:
            times.append((a, b))
    torch.cuda.synchronize()
    ms = sorted(a.elapsed_time(b) for a, b in times)
    n = len(ms)
    return ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])


def report(case, impl, sig, batch, rows, moved, ms):
    floor = moved / PEAK * 1e3
    print(f"BENCH side=ref case={case} impl={impl} sig={sig} batch={batch} rows={rows} bytes={moved} ms={ms:.5f} "
          f"floor_ms={floor:.5f} gbps={moved / (ms * 1e-3) / 1e9:.1f} pct={100 * floor / ms:.1f}", flush=True)


def mamba2(torch, args, batches, sigs):
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception as e:  # not installed, or its Triton does not load
        err("mamba2_decode", f"mamba_ssm: {e}")
        return
    H, P, N = 64, 64, 128
    params = inspect.signature(selective_state_update).parameters
    for sname, sdt in sigs:
        for batch in batches:
            case = f"mamba2_decode_b{batch}"
            try:
                rows = 2 * batch
                dev, io = "cuda", torch.bfloat16
                state = torch.randn(rows, H, P, N, device=dev, dtype=sdt) * 0.1
                x = torch.randn(batch, H, P, device=dev, dtype=io)
                dt = torch.randn(batch, H, device=dev, dtype=io)
                Bm = torch.randn(batch, 1, N, device=dev, dtype=io)
                Cm = torch.randn(batch, 1, N, device=dev, dtype=io)
                A = -torch.rand(H, device=dev, dtype=torch.float32) - 0.5
                D = torch.randn(H, device=dev, dtype=torch.float32)
                dt_bias = torch.randn(H, device=dev, dtype=torch.float32)
                idx = (torch.arange(batch, device=dev, dtype=torch.int32) * 2 + 1) % rows
                # Mamba-2's decode: per-head scalars broadcast over P (and N) with stride 0
                A_e = A[:, None, None].expand(H, P, N)
                dt_e = dt[:, :, None].expand(batch, H, P)
                D_e = D[:, None].expand(H, P)
                bias_e = dt_bias[:, None].expand(H, P)
                kw = dict(D=D_e, z=None, dt_bias=bias_e, dt_softplus=True)
                if "state_batch_indices" in params:
                    kw["state_batch_indices"] = idx
                    impl = "mamba_ssm.selective_state_update"
                    fn = lambda: selective_state_update(state, x, dt_e, A_e, Bm, Cm, **kw)
                else:
                    impl = "mamba_ssm.selective_state_update(gathered)"
                    st = state[idx.long()].contiguous()
                    fn = lambda: selective_state_update(st, x, dt_e, A_e, Bm, Cm, **kw)
                fn()
                ms = timed(torch, fn, args.iters)
                es = 4 if sdt == torch.float32 else 2
                moved = (2 * batch * H * P * N * es + (batch * H * P * 2 + batch * H + 2 * batch * N) * 2
                         + 3 * H * 4 + batch * 4)
                report(case, impl, sname, batch, rows, moved, ms)
            except Exception as e:
                err(case, f"{type(e).__name__}: {e}")


def gated_deltanet(torch, args, batches, sigs):
    try:
        from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule
    except Exception as e:
        err("gated_deltanet_decode", f"fla: {e}")
        return
    H, K, V = 16, 128, 128
    params = inspect.signature(fused_recurrent_gated_delta_rule).parameters
    for sname, sdt in sigs:
        for batch in batches:
            case = f"gated_deltanet_decode_b{batch}"
            try:
                rows = 2 * batch
                dev, io = "cuda", torch.bfloat16
                pool = torch.randn(rows, H, K, V, device=dev, dtype=sdt) * 0.01
                q = torch.randn(batch, 1, H, K, device=dev, dtype=io)
                k = torch.randn(batch, 1, H, K, device=dev, dtype=io)
                v = torch.randn(batch, 1, H, V, device=dev, dtype=io)
                a = torch.randn(batch, 1, H, device=dev, dtype=io)
                b = torch.randn(batch, 1, H, device=dev, dtype=io)
                A_log = torch.rand(H, device=dev, dtype=torch.float32)
                dt_bias = torch.randn(H, device=dev, dtype=torch.float32)
                idx = (torch.arange(batch, device=dev, dtype=torch.int32) * 2 + 1) % rows
                # the gates the kernel does not compute itself, before the timed call
                g = (-A_log.exp() * torch.nn.functional.softplus(a.float() + dt_bias)).to(io)
                beta = b.float().sigmoid().to(io)
                kw = dict(scale=K ** -0.5, use_qk_l2norm_in_kernel=True)
                notes = "gates precomputed"
                if "ssm_state_indices" in params and "inplace_final_state" in params:
                    kw.update(initial_state=pool, inplace_final_state=True, ssm_state_indices=idx,
                              cu_seqlens=torch.arange(batch + 1, device=dev, dtype=torch.int32))
                    # packed: one token per sequence, as vLLM calls it
                    q, k, v, g, beta = (t.reshape(1, batch, *t.shape[2:]) for t in (q, k, v, g, beta))
                    impl = f"fla.fused_recurrent_gated_delta_rule({notes})"
                else:
                    kw.update(initial_state=pool[idx.long()].contiguous(), output_final_state=True)
                    impl = f"fla.fused_recurrent_gated_delta_rule(gathered,{notes})"
                fn = lambda: fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, **kw)
                fn()
                ms = timed(torch, fn, args.iters)
                es = 4 if sdt == torch.float32 else 2
                moved = (2 * batch * H * K * V * es + (2 * batch * H * K + 2 * batch * H * V + 2 * batch * H) * 2
                         + 2 * H * 4 + batch * 4)
                report(case, impl.replace(" ", "_"), sname, batch, rows, moved, ms)
            except Exception as e:
                err(case, f"{type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--only", choices=["mamba2", "gated_deltanet"])
    args = ap.parse_args()
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
    except Exception as e:
        err("all", f"torch: {e}")
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    sigs = [("bf16/f32/f32", torch.float32), ("bf16/f32/bf16", torch.bfloat16)]
    if args.only != "gated_deltanet":
        mamba2(torch, args, batches, sigs)
    if args.only != "mamba2":
        gated_deltanet(torch, args, batches, sigs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
