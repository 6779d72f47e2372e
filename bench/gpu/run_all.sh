#!/usr/bin/env bash
# run_all.sh: the whole GPU benchmark in one command, on the device machine.
#   bash bench/gpu/run_all.sh          (from the repository root; carry [".bench"])
# 1. builds ssmc without LLVM and without tests into build-gpu, and bench_gpu
#    against it (bench/gpu/build.sh: device mode if ssmc_run_device exists);
# 2. runs bench_gpu (ssmc: cold compile, cache hit, median of 50 runs);
# 3. runs .bench/gpu/bench_ref.py if present (fla and mamba_ssm Triton kernels
#    from the carried sources in .bench/third_party; git-ignored, not committed);
# 4. prints one table, ours against each reference, as the last output.
# Full logs go to $OUT (or /tmp/bench-out when OUT is unset). Each stage has a time
# limit so the whole stays under the device machine's 10 minutes a command:
# build 150 s, ours 180 s, reference 240 s (override with BENCH_T_BUILD/OURS/REF).
# BENCH_ARGS and BENCH_REF_ARGS add arguments to bench_gpu and bench_ref.py.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
out=${OUT:-/tmp/bench-out}
mkdir -p "$out"
t_build=${BENCH_T_BUILD:-150}
t_ours=${BENCH_T_OURS:-180}
t_ref=${BENCH_T_REF:-240}
start=$(date +%s)
stamp() { echo "[run_all $(($(date +%s) - start))s] $*"; }

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
    uname -a
    python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' 2>&1
} > "$out/machine.txt"
cat "$out/machine.txt"

stamp "building ssmc (build-gpu)"
if timeout "$t_build" bash -c 'cmake -S . -B build-gpu -DSSMC_LLVM=OFF -DSSMC_TESTS=OFF -DCMAKE_BUILD_TYPE=Release &&
        cmake --build build-gpu -j16 && bash bench/gpu/build.sh build-gpu' > "$out/build.log" 2>&1; then
    grep '^build.sh:' "$out/build.log"
    stamp "running bench_gpu"
    timeout "$t_ours" build-gpu/bench_gpu --repo "$repo" ${BENCH_ARGS:-} 2>&1 | tee "$out/ours.log"
else
    tail -30 "$out/build.log"
    echo "BENCHERR side=ours case=all err=build failed (see build.log)" | tee "$out/ours.log"
fi

if [ -f .bench/gpu/bench_ref.py ]; then
    stamp "running .bench/gpu/bench_ref.py"
    export PYTHONPATH="$repo/.bench/third_party/fla:$repo/.bench/third_party/mamba${PYTHONPATH:+:$PYTHONPATH}"
    export TRITON_CACHE_DIR=$(mktemp -d /tmp/triton-cold-XXXXXX)
    PYTHONUNBUFFERED=1 timeout "$t_ref" python3 .bench/gpu/bench_ref.py \
        --budget $((t_ref - 70)) ${BENCH_REF_ARGS:-} 2>&1 | tee "$out/ref.log"
else
    echo "BENCHERR side=ref case=all err=.bench/gpu/bench_ref.py not carried" | tee "$out/ref.log"
fi

stamp "done"
cat "$out/ours.log" "$out/ref.log" | grep -E '^BENCH(ERR)? ' > "$out/results.txt"
python3 - "$out/results.txt" <<'EOF' | tee "$out/table.txt"
# One table from the BENCH lines of both sides: ours, each reference, ratio.
import sys
rows, errs = [], []
for line in open(sys.argv[1]):
    kind, *kv = line.split(' ')
    d = dict(x.split('=', 1) for x in kv if '=' in x)
    if kind == 'BENCHERR':
        errs.append(line.strip())
        continue
    rows.append(d)
cases = ['simple_gla', 'gla', 'gated_deltanet', 'mamba2', 'mamba2_decode']
cases += sorted({r['case'] for r in rows} - set(cases))
f = lambda d, k: float(d.get(k, 'nan'))
print()
print('ssmc vs reference on the device machine (median ms; GB/s = bytes read once + written once / time; '
      '% of 4.3 TB/s)')
hdr = f'{"case":<15} {"impl":<42} {"ms":>10} {"GB/s":>8} {"%peak":>6} {"ours/ref":>9} {"cold ms":>9}'
print(hdr)
print('-' * len(hdr))
for c in cases:
    ours = [r for r in rows if r['case'] == c and r['side'] == 'ours']
    refs = [r for r in rows if r['case'] == c and r['side'] == 'ref']
    o = ours[0] if ours else None
    for r in ours + refs:
        ratio = '' if r is o or o is None else f'{f(o, "ms") / f(r, "ms"):.2f}x'
        tag = ('ours ' if r['side'] == 'ours' else 'ref  ') + r['impl']
        print(f'{c:<15} {tag:<42} {f(r, "ms"):>10.4f} {f(r, "gbps"):>8.1f} {f(r, "pct"):>6.1f} {ratio:>9} '
              f'{f(r, "cold_ms"):>9.1f}')
    if not ours and not refs:
        print(f'{c:<15} (no result)')
for r in rows:
    if r['side'] == 'ours':
        print(f'ours {r["case"]}: mode={r.get("mode")} reps={r.get("reps")} pipelined_ms={r.get("pipelined_ms")} '
              f'compile cold {r.get("compile_cold_ms")} ms + first run {r.get("first_run_ms")} ms; '
              f'cache hit {r.get("compile_hit_ms")} ms + first run {r.get("hit_first_run_ms")} ms')
for side in ('ours', 'ref'):
    if not any(r['side'] == side for r in rows):
        print(f'{side}: no results at all (see {side}.log)')
if errs:
    print('errors:')
    for e in errs:
        print('  ' + e[:300])
print('ratio = ours ms / ref ms (below 1: ssmc faster). cold ms: ours = compile with an empty cache + first run;'
      ' ref = first call (Triton JIT/autotune, empty TRITON_CACHE_DIR).')
EOF
