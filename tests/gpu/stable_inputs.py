#!/usr/bin/env python3
"""stable_inputs.py: inputs in a model's stable domain, for checks at long T.

    stable_inputs.py SSMC MODEL.ssm OUTDIR B T [-D NAME=V ...]

`ssmc run --verify` draws what it is not given uniformly from [-1, 1). For
most examples that is a fine test; for two it is not a model anyone runs:
fla_retention's g_gamma is a log decay, and +1 makes every step grow the state
by e (max |ref| 1e51 at T=200, past f32's range); fla_gated_delta_rule's
I - beta k k^T expands when beta k^T k > 2 (uniform k of K=8 has k^T k ~ 2.7)
and its g is a log decay too. The f64 reference itself explodes there, so no
dtype can be compared with it. This script writes, for those models, the
tensors as the models' authors define them (fla's conventions):
  fla_retention:        g_gamma[h] = log(1 - 2^(-5 - h))        (chunk_retention)
  fla_gated_delta_rule: g = log(sigmoid(x)), beta = sigmoid(x), k rows of unit norm
(x uniform in [-3, 3), seeded), as <f8 .npy files in OUTDIR, and prints the
`--in NAME=FILE` arguments for them (nothing for other models). Everything
else keeps ssmc's own random draw. No numpy needed.
"""
import math
import os
import random
import re
import struct
import subprocess
import sys


def write_npy(path, shape, values):
    h = "{'descr': '<f8', 'fortran_order': False, 'shape': (%s), }" % "".join("%d, " % s for s in shape)
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
        f.write(struct.pack("<%dd" % len(values), *values))


def main(argv):
    if len(argv) < 6:
        sys.stderr.write(__doc__)
        return 2
    ssmc, model, outdir, B, T = argv[1], argv[2], argv[3], int(argv[4]), int(argv[5])
    defs = argv[6:]
    ir = subprocess.run([ssmc, "emit", model, "--emit=ir"] + defs, capture_output=True, text=True, check=True).stdout
    dims = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*dim (\w+) = (\d+)", ir, re.M)}
    name = re.search(r"^model (\w+)", ir, re.M).group(1)
    rng = random.Random(1234)
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))
    draw = lambda: rng.uniform(-3.0, 3.0)
    os.makedirs(outdir, exist_ok=True)
    made = {}
    if name == "fla_retention":
        made["g_gamma"] = ([dims["H"]], [math.log(1.0 - 2.0 ** (-5 - h)) for h in range(dims["H"])])
    elif name == "fla_gated_delta_rule":
        HV, H, K = dims["HV"], dims["H"], dims["K"]
        made["g"] = ([B, T, HV], [math.log(sig(draw())) for _ in range(B * T * HV)])
        made["beta"] = ([B, T, HV], [sig(draw()) for _ in range(B * T * HV)])
        k = []
        for _ in range(B * T * H):
            row = [rng.gauss(0.0, 1.0) for _ in range(K)]
            n = math.sqrt(sum(x * x for x in row)) or 1.0
            k += [x / n for x in row]
        made["k"] = ([B, T, H, K], k)
    args = []
    for t, (shape, vals) in made.items():
        path = os.path.join(outdir, "%s_%s.npy" % (name, t))
        write_npy(path, shape, vals)
        args.append("--in %s=%s" % (t, path))
    print(" ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
