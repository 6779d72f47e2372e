"""examples/train_lm.py: a small character-level language model trained with ssmc layers.

    /usr/bin/python3 examples/train_lm.py                       # CPU, ssmc, a couple of minutes
    python examples/train_lm.py --device cuda --impl fla --out runs  # the same model on fla's kernels
    python examples/train_lm.py --device cuda --impl ssmc --out runs
    python examples/train_lm.py --plot docs/train_lm_loss.png --out runs   # both curves in one picture

The model: a byte embedding, --layers blocks of [RMSNorm, token mixer,
residual, RMSNorm, MLP, residual], RMSNorm and a linear head. The token mixer
is a Gated DeltaNet layer (--mixer gdn: q, k, v, the gate
-exp(A_log) * softplus(a + dt_bias), beta = sigmoid(b), the recurrence
chunk_gated_delta_rule with the L2 norm of q and k), a GLA layer (--mixer gla:
chunk_gla with the gate logsigmoid(x) / 16) or a Mamba-2 mixer (--mixer
mamba2: mamba_chunk_scan_combined). The recurrence comes from `ssmc.ops`
(--impl ssmc) or from flash-linear-attention / mamba_ssm (--impl fla, imported
only then): the same function names and arguments, so the layer code is
the same for both; only the import differs.

The text is the project's own documentation (README.md and docs/*.md; an
installed package without them falls back to a generated text), 90% for
training and 10% held out. Every --eval-every steps the held-out loss is
measured; the run writes OUT/loss_<impl>_<device>.csv (step, train loss,
held-out loss, seconds) and, with --plot, a picture of every such file in OUT.
"""
import argparse
import csv
import glob
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_ops(impl):
    """The four functions the mixers call, from ssmc.ops or from fla/mamba_ssm."""
    if impl == "ssmc":
        sys.path.insert(0, os.path.join(ROOT, "python"))
        from ssmc import ops
        return {"gdn": ops.chunk_gated_delta_rule, "gla": ops.chunk_gla, "mamba2": ops.mamba_chunk_scan_combined}
    out = {}
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.gla import chunk_gla
    out = {"gdn": chunk_gated_delta_rule, "gla": chunk_gla}
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        out["mamba2"] = mamba_chunk_scan_combined
    except ImportError:
        pass
    return out


def corpus():
    """The project's documentation as bytes, or a generated text."""
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    parts = [open(f, "rb").read() for f in files if os.path.isfile(f)]
    if parts:
        return b"\n\n".join(parts)
    g = torch.Generator().manual_seed(0)
    words = b"the state of a recurrent layer decays and is updated by the keys and values of each step".split()
    idx = torch.randint(len(words), (40000,), generator=g).tolist()
    return b" ".join(words[i] for i in idx)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.w, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class Mixer(nn.Module):
    """The token mixer: projections around one recurrence of `ops`."""

    def __init__(self, kind, d, heads, head_dim, ops, dtype):
        super().__init__()
        self.kind, self.H, self.K, self.ops, self.dtype = kind, heads, head_dim, ops, dtype
        H, K = heads, head_dim
        if kind == "mamba2":
            self.G, self.N = 1, head_dim
            self.inp = nn.Linear(d, H * K + 2 * self.N + H + H * K, bias=False)  # x, B, C, dt, z
            self.A_log = nn.Parameter(torch.log(torch.linspace(1, 16, H)))
            self.D = nn.Parameter(torch.ones(H))
            self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.linspace(1e-3, 1e-1, H))))
        else:
            self.qkv = nn.Linear(d, 3 * H * K, bias=False)
            if kind == "gdn":
                self.ab = nn.Linear(d, 2 * H)
                self.A_log = nn.Parameter(torch.log(torch.linspace(1, 16, H)))
                self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.linspace(1e-3, 1e-1, H))))
            else:
                self.gk = nn.Sequential(nn.Linear(d, 16, bias=False), nn.Linear(16, H * K))
        self.out = nn.Linear(H * K, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, K, dt = self.H, self.K, self.dtype
        if self.kind == "mamba2":
            xs, Bm, Cm, dts, z = torch.split(self.inp(x), [H * K, self.N, self.N, H, H * K], -1)
            y = self.ops["mamba2"](F.silu(xs).view(B, T, H, K).to(dt), dts, -self.A_log.exp(),
                                   Bm.view(B, T, 1, self.N).to(dt), Cm.view(B, T, 1, self.N).to(dt), 64,
                                   D=self.D, z=z.view(B, T, H, K).to(dt), dt_bias=self.dt_bias, dt_softplus=True)
            return self.out(y.reshape(B, T, H * K).to(x.dtype))
        q, k, v = (F.silu(t).view(B, T, H, K).to(dt) for t in self.qkv(x).chunk(3, -1))
        if self.kind == "gdn":
            a, b = self.ab(x).float().chunk(2, -1)
            g = -self.A_log.exp() * F.softplus(a + self.dt_bias)
            o, _ = self.ops["gdn"](q, k, v, g, b.sigmoid(), use_qk_l2norm_in_kernel=True)
        else:
            g = F.logsigmoid(self.gk(x).float()) / 16
            o, _ = self.ops["gla"](q, k, v, g.view(B, T, H, K).to(dt))
        return self.out(o.reshape(B, T, H * K).to(x.dtype))


class LM(nn.Module):
    def __init__(self, args, ops, dtype):
        super().__init__()
        d = args.d_model
        self.emb = nn.Embedding(256, d)
        self.blocks = nn.ModuleList()
        for _ in range(args.layers):
            self.blocks.append(nn.ModuleDict({
                "n1": RMSNorm(d), "mix": Mixer(args.mixer, d, args.heads, args.head_dim, ops, dtype),
                "n2": RMSNorm(d), "mlp": nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))}))
        self.norm, self.head = RMSNorm(d), nn.Linear(d, 256, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = x + b["mix"](b["n1"](x))
            x = x + b["mlp"](b["n2"](x))
        return self.head(self.norm(x))


def batches(data, batch, seq, g, device):
    starts = torch.randint(len(data) - seq - 1, (batch,), generator=g)
    chunk = torch.stack([data[s:s + seq + 1] for s in starts.tolist()]).long().to(device)
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def held_out_loss(model, data, args, device, n=4):
    g = torch.Generator().manual_seed(1234)
    losses = []
    for _ in range(n):
        x, y = batches(data, args.batch, args.seq, g, device)
        losses.append(F.cross_entropy(model(x).float().flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)


def plot(out_dir, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for f in sorted(glob.glob(os.path.join(out_dir, "loss_*.csv"))):
        rows = list(csv.DictReader(open(f)))
        label = os.path.basename(f)[5:-4]
        steps = [int(r["step"]) for r in rows]
        ax.plot(steps, [float(r["train"]) for r in rows], alpha=0.45, label=f"{label}: train")
        ev = [(int(r["step"]), float(r["held_out"])) for r in rows if r["held_out"]]
        ax.plot([s for s, _ in ev], [v for _, v in ev], marker="o", ms=3, label=f"{label}: held out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.set_title("byte-level LM on the ssmc docs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    print(f"wrote {png}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--impl", default="ssmc", choices=["ssmc", "fla"])
    p.add_argument("--mixer", default="gdn", choices=["gdn", "gla", "mamba2"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--dtype", default=None, help="the recurrence's inputs: float32 (CPU default) or bfloat16")
    p.add_argument("--threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for loss_<impl>_<device>.csv")
    p.add_argument("--plot", default=None, help="write a PNG of every loss_*.csv in --out (after training)")
    p.add_argument("--plot-only", action="store_true", help="only draw --plot from the files in --out")
    args = p.parse_args()
    if args.plot_only:
        plot(args.out, args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    ops = load_ops(args.impl)
    if args.mixer not in ops:
        sys.exit(f"--impl {args.impl} has no {args.mixer} (mamba_ssm not installed?)")
    torch.manual_seed(args.seed)
    text = torch.tensor(list(corpus()), dtype=torch.uint8)
    cut = int(len(text) * 0.9)
    train, held = text[:cut], text[cut:]
    model = LM(args, ops, dtype).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.impl} {args.mixer} on {device}: {nparams} params, {len(train)} bytes to train on, "
          f"{args.steps} steps of {args.batch} x {args.seq}")
    rows, g, t0 = [], torch.Generator().manual_seed(args.seed), time.time()
    for step in range(1, args.steps + 1):
        x, y = batches(train, args.batch, args.seq, g, device)
        loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if not math.isfinite(loss.item()):
            sys.exit(f"step {step}: the loss is {loss.item()}")
        ev = ""
        if step % args.eval_every == 0 or step == args.steps:
            ev = held_out_loss(model, held, args, device)
            print(f"step {step:4d}  train {loss.item():.3f}  held out {ev:.3f}  {time.time() - t0:6.1f} s")
        rows.append({"step": step, "train": f"{loss.item():.5f}", "held_out": f"{ev:.5f}" if ev != "" else "",
                     "seconds": f"{time.time() - t0:.2f}"})
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"loss_{args.impl}_{device.type}.csv")
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "train", "held_out", "seconds"])
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {path}")
        if args.plot:
            plot(args.out, args.plot)


if __name__ == "__main__":
    main()
