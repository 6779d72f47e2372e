#!/bin/sh
# check_grad.sh: the CUDA backend's gradients against the interpreter's
# through the CLI (tests/unit/test_gpu_grad.c runs it; also usable alone).
#   sh tests/gpu/check_grad.sh [path/to/ssmc]      (default: build-gpu/ssmc)
# Every example and every model of tests/gpu/edge.ssm at its declared dims,
# in f32 and bf16, batch 2, T = 37 (several checkpoint chunks), through
# `ssmc run --device cuda --grad --verify` (the CLI compares every gradient
# with the interpreter's and exits 1 on a mismatch). Prints one line per run;
# exits 1 if any run fails, 77 when there is no GPU. SSMC_CHECK_DEVICE=cpu
# runs the same sweep on another device, to check the script without a GPU.
set -u
device=${SSMC_CHECK_DEVICE:-cuda}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ssmc=${1:-$repo/build-gpu/ssmc}

probe=$("$ssmc" run "$repo/examples/retnet.ssm" --device "$device" --seqlen 1 2>&1)
case $probe in
  *"no GPU to run on"*) echo "check_grad: no GPU: $probe"; exit 77 ;;
esac

pass=0
fail=0
run() { # label args...
  label=$1
  shift
  if out=$("$ssmc" run "$@" --device "$device" --grad --verify --batch 2 --seqlen 37 2>&1); then
    pass=$((pass + 1))
    worst=$(echo "$out" | awk '$1 == "verify" && $2 == "grad" { if ($5 > w) w = $5 } END { printf "%.2e", w }')
    echo "ok    $label (worst relative error $worst)"
  else
    fail=$((fail + 1))
    echo "FAIL  $label"
    echo "$out" | sed 's/^/      /' | tail -20
  fi
}

for f in "$repo"/examples/*.ssm; do
  for dt in f32 bf16; do run "$(basename "$f") $dt" "$f" --dtype "$dt"; done
done
for m in dense mix big v2_ops v2_lag v2_init scale_sum; do
  for dt in f32 bf16; do run "edge.ssm $m $dt" "$repo/tests/gpu/edge.ssm" --model "$m" --dtype "$dt"; done
done
echo "check_grad: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
