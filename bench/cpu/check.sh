#!/usr/bin/env bash
# bench/cpu/check.sh: checks that the hand-written C loops (loops.c) compute the same function as
# the .ssm models: for each model, `loops --dump` writes random inputs/params and its output y, then
# `ssmc run --device interp` (the f64 reference interpreter) runs the .ssm file on the same inputs,
# and the two outputs must agree to a relative max error below 1e-4. Exit 1 on any mismatch.
# Usage: bench/cpu/check.sh [SSMC] (default build/ssmc). Builds the loops with make first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SSMC=${1:-$ROOT/build/ssmc}
OUT=${OUT:-/tmp/ssmc-bench-cpu}
make -s -C "$HERE" OUT="$OUT" >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
# model | dims for loops (D1 D2 D3) | -D flags for ssmc | inputs/params given with --in
while IFS='|' read -r model dims defs names; do
    d="$TMP/$model"
    mkdir -p "$d"
    # shellcheck disable=SC2086
    "$OUT/loops" --dump "$d" "$model" 2 24 $dims
    ins=()
    for n in $names; do ins+=(--in "$n=$d/$n.npy"); done
    # shellcheck disable=SC2086
    "$SSMC" run "$ROOT/examples/$model.ssm" --device interp --batch 2 --seqlen 24 $defs "${ins[@]}" --out "$d/ref" >/dev/null
    err=$("$OUT/loops" --compare "$d/y.npy" "$d/ref/y.npy")
    ok=$(awk -v e="$err" 'BEGIN { print (e < 1e-4) ? "ok" : "FAIL" }')
    printf '%-16s rel max err %s  %s\n' "$model" "$err" "$ok"
    [ "$ok" = ok ] || fail=1
done <<'MODELS'
mamba2|3 8 16|-D H=3 -D P=8 -D N=16|x dt B C A_log D dt_bias
mamba|24 8 0|-D E=24 -D N=8|x z dt B C A_log D dt_bias
gla|3 16 8|-D H=3 -D K=16 -D V=8|q k v gk
rwkv6|3 16 8|-D H=3 -D K=16 -D V=8|r k v wlog u
gated_deltanet|3 16 8|-D H=3 -D K=16 -D V=8|q k v a b A_log dt_bias
MODELS
exit $fail
