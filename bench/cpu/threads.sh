#!/usr/bin/env bash
# bench/cpu/threads.sh: bench_threads (bench/cpu/threads.c) on the five benchmark models of issue 3,
# batch 1 and 8, T = 2048: 1-thread runs, 2-thread runs and the 2-CPU ceiling interleaved in one process.
# Usage: bench/cpu/threads.sh [BENCH_THREADS] [CPU_A CPU_B]   (default build/bench_threads, CPUs 0 1)
# Env: ROUNDS (default 41), MODELS (default: all five), BATCHES (default "1 8").
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-$ROOT/build/bench_threads}
A=${2:-0}
B=${3:-1}
ROUNDS=${ROUNDS:-41}
MODELS=${MODELS:-mamba2 mamba gla rwkv6 gated_deltanet}
BATCHES=${BATCHES:-1 8}
dims_of() {
    case $1 in
    mamba2) echo "-D H=16 -D P=64 -D N=128" ;;
    mamba) echo "-D E=1024 -D N=16" ;;
    *) echo "-D H=8 -D K=64 -D V=64" ;;
    esac
}
echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; CPUs A=$A B=$B; $(date -u)"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $BIN; ROUNDS=$ROUNDS T=2048"
printf '%-15s %2s %7s %7s %7s %7s %7s %7s | %7s %7s %7s %6s\n' model B t1_med t1_min t2_med t2_min pa_med pb_med \
    speedup sp_mins ceiling share
for model in $MODELS; do
    for batch in $BATCHES; do
        # shellcheck disable=SC2046
        "$BIN" "$ROOT/examples/$model.ssm" $(dims_of "$model") --seqlen 2048 --batch "$batch" --rounds "$ROUNDS" \
            --cpus "$A,$B" || echo "# $model B=$batch: failed"
    done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# times in ms over ROUNDS rounds; speedup: median of per-round t1/t2; sp_mins: min t1 / min t2;"
echo "# ceiling: median of per-round t1/pa + t1/pb; share: median of per-round speedup/ceiling."
