#!/usr/bin/env bash
# bench/cpu/run.sh: the CPU benchmark (SPEC "bench/"; issue 3 item 6). In one run, for every model and
# shape below at batch 1 and 8 and at 1 and 2 threads, it times
#   - ssmc:  `ssmc bench FILE --device cpu --threads N` (median of ITERS runs; cold JIT compile time,
#            measured with an empty kernel cache, SSMC_CACHE_DIR=fresh temp dir),
#   - C:     the hand-written single-threaded loops of loops.c (gcc -O3 -march=native -fopenmp-simd)
#            and the same loops with -ffast-math (vectorised libm), both 1 thread, median of ITERS,
#   - ggml:  the git-ignored harness .bench/ggml/ggml_bench, when it has been built (ggml is never
#            part of this repository; see bench/RESULTS.md for how it was built),
# and prints one table, with the GFLOP/s of ssmc against the machine's measured f32 FMA peak (peak.c).
#
# Flops per step and sequence (hand-counted from examples/*.ssm; exp, log1p, sqrt, divide count 1,
# softplus 2, sigmoid 3, silu 4):
#   mamba2          5HPN + 3HP + 5H        mamba  7EN + 11E
#   gla             5HKV + 6HK             rwkv6  7HKV + 4HK
#   gated_deltanet  7HKV + 7HK + 2HV + 14H
# GFLOP/s = B * T * flops_per_step / time.
#
# Every time is the best (min) over R repeats (default 3) of a median of ITERS runs (default 5): the
# machine is shared, and the min over repeats drops the repeats that other processes disturbed.
# Usage: bench/cpu/run.sh [SSMC]   (default build/ssmc). Env: ITERS, R, OUT (C build dir),
# PEAK1_OVERRIDE / PEAK2_OVERRIDE (GFLOP/s at 1 / 2 threads, instead of the measured-or-nominal peak).
# Needs: gcc, make, awk. ssmc rows show "n/a" when `ssmc bench --device cpu` fails.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SSMC=${1:-$ROOT/build/ssmc}
ITERS=${ITERS:-5}
R=${R:-3}
OUT=${OUT:-/tmp/ssmc-bench-cpu}
GGML=$ROOT/.bench/ggml/ggml_bench
T=2048
make -s -C "$HERE" OUT="$OUT" >/dev/null || { echo "error: building the C loops failed" >&2; exit 1; }

echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine skew the 2-thread rows)"
echo "# ssmc: $SSMC; ggml: $([ -x "$GGML" ] && echo "$GGML" || echo "not built"); ITERS=$ITERS R=$R"
# Peak: the larger of (a) the FMA probe (peak.c, best of 5) and (b) the nominal peak at the base
# clock, 2 FMA ports x 16 f32 lanes x 2 flops x MHz per core (AVX-512 with FMA, from lscpu's flags and
# "CPU MHz"/BogoMIPS/2). (b) guards the % column when other processes load the machine during the probe.
peak_out=$("$OUT/peak" 2)
echo "$peak_out" | sed 's/^/# /'
mhz=$(awk -F: '/^cpu MHz/{print $2; exit}' /proc/cpuinfo)
lanes=$(grep -q avx512f /proc/cpuinfo && echo 16 || echo 8)
nominal=$(awk -v m="$mhz" -v l="$lanes" 'BEGIN { printf "%.1f", 2 * l * 2 * m / 1000 }')
echo "# nominal peak per core: 2 FMA x $lanes lanes x 2 flops x $mhz MHz = $nominal GFLOP/s"
PEAK1=$(echo "$peak_out" | awk -v n="$nominal" '/threads 1 /{print ($4 > n) ? $4 : n}')
PEAK2=$(echo "$peak_out" | awk -v n="$nominal" '/threads 2 /{print ($4 > 2 * n) ? $4 : 2 * n}')
PEAK1=${PEAK1_OVERRIDE:-$PEAK1}
PEAK2=${PEAK2_OVERRIDE:-$PEAK2}
[ -x "$GGML" ] || echo "# ggml: harness $GGML not built; ggml column n/a"

# model | D1 D2 D3 for the loops and ggml | -D flags for ssmc | shape label | flops per step (awk, D1 D2 D3 = a b c)
MODELS='mamba2|16 64 128|-D H=16 -D P=64 -D N=128|H16 P64 N128|5*a*b*c + 3*a*b + 5*a
mamba|1024 16 0|-D E=1024 -D N=16|E1024 N16|7*a*b + 11*a
gla|8 64 64|-D H=8 -D K=64 -D V=64|H8 K64 V64|5*a*b*c + 6*a*b
rwkv6|8 64 64|-D H=8 -D K=64 -D V=64|H8 K64 V64|7*a*b*c + 4*a*b
gated_deltanet|8 64 64|-D H=8 -D K=64 -D V=64|H8 K64 V64|7*a*b*c + 7*a*b + 2*a*c + 14*a'

ms_of() { sed -n 's/.* run \([0-9.]*\) ms.*/\1/p' | head -1; }

# min over R repeats of a command's "run X ms" (each repeat already a median of ITERS runs)
best_ms() {
    local best="" x
    for _ in $(seq "$R"); do
        x=$("$@" 2>/dev/null | ms_of)
        [ -n "$x" ] && best=$(awk -v a="$best" -v b="$x" 'BEGIN { print (a == "" || b < a) ? b : a }')
    done
    echo "$best"
}

printf '\n%-15s %-13s %2s %3s %9s %9s %9s %9s %7s %8s %8s %7s %8s %7s %10s\n' model shape B thr ssmc_ms C_ms Cfm_ms ggml_ms C/ssmc Cfm/ssmc ggml/ssm 2t/1t GFLOP/s %peak compile_ms
while IFS='|' read -r model dims defs label flops; do
    for B in 1 8; do
        # shellcheck disable=SC2086
        c_ms=$(best_ms "$OUT/loops" "$model" "$B" "$T" $dims "$ITERS")
        # shellcheck disable=SC2086
        cfm_ms=$(best_ms "$OUT/loops_fastmath" "$model" "$B" "$T" $dims "$ITERS")
        s1_ms=""
        for thr in 1 2; do
            s_ms="" comp="" line=""
            for _ in $(seq "$R"); do
                cache=$(mktemp -d) # empty kernel cache: every compile is cold
                # shellcheck disable=SC2086
                line=$(SSMC_CACHE_DIR=$cache "$SSMC" bench "$ROOT/examples/$model.ssm" --device cpu $defs --batch "$B" \
                       --seqlen "$T" --threads "$thr" --iters "$ITERS" 2>&1)
                rm -rf "$cache"
                x=$(echo "$line" | ms_of)
                y=$(echo "$line" | sed -n 's/.* compile \([0-9.]*\) ms.*/\1/p' | head -1)
                [ -n "$x" ] && s_ms=$(awk -v a="$s_ms" -v b="$x" 'BEGIN { print (a == "" || b < a) ? b : a }')
                [ -n "$y" ] && comp=$(awk -v a="$comp" -v b="$y" 'BEGIN { print (a == "" || b < a) ? b : a }')
            done
            [ "$thr" = 1 ] && s1_ms=$s_ms
            g_ms=""
            # shellcheck disable=SC2086
            [ -x "$GGML" ] && g_ms=$(best_ms "$GGML" "$model" "$B" "$T" $dims "$thr" "$ITERS")
            peak=$([ "$thr" = 1 ] && echo "$PEAK1" || echo "$PEAK2")
            # shellcheck disable=SC2086
            set -- $dims
            awk -v m="$model" -v l="$label" -v B="$B" -v thr="$thr" -v s="$s_ms" -v c="$c_ms" -v f="$cfm_ms" \
                -v g="$g_ms" -v comp="$comp" -v peak="$peak" -v T="$T" -v a="$1" -v b="$2" -v cc="$3" -v s1="$s1_ms" '
                function v(x) { return x == "" ? "n/a" : sprintf("%.2f", x) }
                function r(x, y) { return (x == "" || y == "" || y == 0) ? "n/a" : sprintf("%.2fx", x / y) }
                BEGIN {
                    c3 = cc; flops = '"$(echo "$flops" | sed 's/\bc\b/c3/g')"';
                    gf = (s == "" || s == 0) ? "n/a" : sprintf("%.1f", B * T * flops / (s * 1e-3) * 1e-9);
                    pk = (gf == "n/a" || peak == "") ? "n/a" : sprintf("%.1f%%", 100 * gf / peak);
                    sp = thr == 1 ? "-" : r(s1, s);
                    printf "%-15s %-13s %2d %3d %9s %9s %9s %9s %7s %8s %8s %7s %8s %7s %10s\n", m, l, B, thr, v(s), v(c),
                           v(f), v(g), r(c, s), r(f, s), r(g, s), sp, gf, pk, v(comp)
                }'
            [ -z "$s_ms" ] && echo "#   ssmc: $(echo "$line" | grep -m1 -i error)"
        done
    done
done <<< "$MODELS"
echo
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# times: ms, best of R=$R repeats of a median of ITERS=$ITERS runs; compile_ms: best of R cold JIT compiles."
echo "# ratios: baseline time / ssmc time (> 1: ssmc faster). C and Cfm are 1-thread baselines in every row;"
echo "# 2t/1t: ssmc 1-thread time / ssmc 2-thread time."
echo "# peak: max(measured, nominal) f32 FMA peak for the row's thread count (1t ${PEAK1} GFLOP/s, 2t ${PEAK2} GFLOP/s)."
