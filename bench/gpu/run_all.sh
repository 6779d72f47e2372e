#!/usr/bin/env bash
# run_all.sh: the whole GPU benchmark in one command, on the device machine.
#   bash bench/gpu/run_all.sh          (from the repository root; carry [".bench"])
# 1. builds ssmc without LLVM and without tests into build-gpu, and bench_gpu
#    against it (bench/gpu/build.sh: device mode if ssmc_run_device exists);
# 2. runs bench_gpu (ssmc: cold compile, cache hit, median of 50 runs);
# 2b. with BENCH_GRAD=1, runs `bench_gpu --grad` too (the training step:
#    ssmc_forward_train_device + ssmc_backward_device; rows ssmc.fwdbwd,
#    ssmc.fwdtrain, ssmc.bwd) into ours_grad.log, with --max-case-s
#    $BENCH_GRAD_CASE_S (default 4) before BENCH_ARGS (which can override it);
# 3. runs .bench/gpu/bench_ref.py if present (fla and mamba_ssm Triton kernels
#    from the carried sources in .bench/third_party; git-ignored, not committed),
#    with --bwd when BENCH_GRAD=1 (its `.fwdbwd` rows: forward + autograd backward);
# 4. prints one table, ours against each reference, as the last output: forward
#    rows against forward rows, ssmc.fwdbwd against each `.fwdbwd`.
# Full logs go to $OUT (or /tmp/bench-out when OUT is unset). Each stage has a time
# limit so the whole stays under the device machine's 10 minutes a command:
# build 150 s, ours 180 s, reference 240 s; with BENCH_GRAD=1 build 150 s, ours 90 s,
# grad 120 s, reference 210 s (override with BENCH_T_BUILD/OURS/GRAD/REF; a warning
# when they add up to more than BENCH_T_TOTAL, default 590 s).
# BENCH_ARGS and BENCH_REF_ARGS add arguments to bench_gpu (both runs) and bench_ref.py;
# BENCH_GRAD_ARGS to the --grad run only, after BENCH_ARGS (so --algo recurrent there wins).
# BENCH_JOBS: the build's parallel jobs (default 16, the device machine's cores).
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
out=${OUT:-/tmp/bench-out}
mkdir -p "$out"
grad=${BENCH_GRAD:-0}
[ "$grad" = 1 ] || grad=0
t_build=${BENCH_T_BUILD:-150}
if [ "$grad" = 1 ]; then
    t_ours=${BENCH_T_OURS:-90}
    t_grad=${BENCH_T_GRAD:-120}
    t_ref=${BENCH_T_REF:-210}
else
    t_ours=${BENCH_T_OURS:-180}
    t_grad=0
    t_ref=${BENCH_T_REF:-240}
fi
start=$(date +%s)
stamp() { echo "[run_all $(($(date +%s) - start))s] $*"; }
total=$((t_build + t_ours + t_grad + t_ref))
stamp "limits: build ${t_build}s, ours ${t_ours}s$([ "$grad" = 1 ] && echo ", grad ${t_grad}s"), ref ${t_ref}s"
[ "$total" -le "${BENCH_T_TOTAL:-590}" ] ||
    echo "run_all: WARNING: the stage limits add up to ${total}s, over ${BENCH_T_TOTAL:-590}s (the device machine stops a command at 600s)"
rm -f "$out/ours.log" "$out/ours_grad.log" "$out/ref.log"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
    uname -a
    python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' 2>&1
} > "$out/machine.txt"
cat "$out/machine.txt"

stamp "building ssmc (build-gpu)"
export BENCH_JOBS
if timeout "$t_build" bash -c 'cmake -S . -B build-gpu -DSSMC_LLVM=OFF -DSSMC_TESTS=OFF -DCMAKE_BUILD_TYPE=Release &&
        cmake --build build-gpu -j"${BENCH_JOBS:-16}" && bash bench/gpu/build.sh build-gpu' > "$out/build.log" 2>&1; then
    grep '^build.sh:' "$out/build.log"
    stamp "running bench_gpu"
    timeout "$t_ours" build-gpu/bench_gpu --repo "$repo" ${BENCH_ARGS:-} 2>&1 | tee "$out/ours.log"
    [ "${PIPESTATUS[0]}" = 124 ] &&
        echo "BENCHERR side=ours case=all err=bench_gpu stopped at its ${t_ours}s limit (BENCH_T_OURS)" |
        tee -a "$out/ours.log"
    if [ "$grad" = 1 ]; then
        stamp "running bench_gpu --grad"
        timeout "$t_grad" build-gpu/bench_gpu --repo "$repo" --grad --max-case-s "${BENCH_GRAD_CASE_S:-4}" \
            ${BENCH_ARGS:-} ${BENCH_GRAD_ARGS:-} 2>&1 | tee "$out/ours_grad.log"
        [ "${PIPESTATUS[0]}" = 124 ] &&
            echo "BENCHERR side=ours case=all err=bench_gpu --grad stopped at its ${t_grad}s limit (BENCH_T_GRAD)" |
            tee -a "$out/ours_grad.log"
    fi
else
    tail -30 "$out/build.log"
    echo "BENCHERR side=ours case=all err=build failed (see build.log)" | tee "$out/ours.log"
fi

if [ -f .bench/gpu/bench_ref.py ]; then
    stamp "running .bench/gpu/bench_ref.py"
    export PYTHONPATH="$repo/.bench/third_party/fla:$repo/.bench/third_party/mamba${PYTHONPATH:+:$PYTHONPATH}"
    export TRITON_CACHE_DIR=$(mktemp -d /tmp/triton-cold-XXXXXX)
    bwd=; [ "$grad" = 1 ] && bwd=--bwd
    PYTHONUNBUFFERED=1 timeout "$t_ref" python3 .bench/gpu/bench_ref.py $bwd \
        --budget $((t_ref - 70)) ${BENCH_REF_ARGS:-} 2>&1 | tee "$out/ref.log"
else
    echo "BENCHERR side=ref case=all err=.bench/gpu/bench_ref.py not carried" | tee "$out/ref.log"
fi

stamp "done"
cat "$out/ours.log" "$out/ours_grad.log" "$out/ref.log" 2>/dev/null | grep -E '^BENCH(ERR)? ' > "$out/results.txt"
python3 - "$out/results.txt" <<'EOF' | tee "$out/table.txt"
# One table from the BENCH lines of both sides: ours, each reference, ratio. Forward rows
# are compared with forward rows; a case's ssmc.fwdbwd with each reference's .fwdbwd
# (ssmc.fwdtrain and ssmc.bwd, its two halves, have no reference counterpart).
import sys
rows, errs = [], []
for line in open(sys.argv[1]):
    kind, *kv = line.strip().split(' ')
    d = dict(x.split('=', 1) for x in kv if '=' in x)
    if kind == 'BENCHERR':
        errs.append(line.strip())
        continue
    rows.append(d)
def part(r):
    for p in ('fwdbwd', 'fwdtrain', 'bwd'):
        if r['impl'].endswith('.' + p):
            return p
    return 'fwd'
groups = (('fwd', ('fwd',)), ('fwdbwd', ('fwdbwd', 'fwdtrain', 'bwd')))
cases = ['simple_gla', 'gla', 'gated_deltanet', 'mamba2', 'mamba2_decode']
cases += sorted({r['case'] for r in rows} - set(cases))
f = lambda d, k: float(d.get(k, 'nan'))
print()
print('ssmc vs reference on the device machine (median ms; GB/s = bytes read once + written once / time; '
      '% of 4.3 TB/s)')
hdr = f'{"case":<15} {"impl":<52} {"ms":>10} {"GB/s":>8} {"%peak":>6} {"ours/ref":>9} {"cold ms":>9}'
print(hdr)
print('-' * len(hdr))
for c in cases:
    shown = 0
    for g, parts in groups:
        ours = sorted((r for r in rows if r['case'] == c and r['side'] == 'ours' and part(r) in parts),
                      key=lambda r: parts.index(part(r)))
        refs = [r for r in rows if r['case'] == c and r['side'] == 'ref' and part(r) == g]
        o = next((r for r in ours if part(r) == g), None)
        for r in ours + refs:
            ratio = f'{f(o, "ms") / f(r, "ms"):.2f}x' if r['side'] == 'ref' and o is not None else ''
            tag = ('ours ' if r['side'] == 'ours' else 'ref  ') + r['impl']
            if r['side'] == 'ours' and 'algo' in r:
                tag += f' ({r["algo"]})'
            print(f'{c:<15} {tag:<52} {f(r, "ms"):>10.4f} {f(r, "gbps"):>8.1f} {f(r, "pct"):>6.1f} {ratio:>9} '
                  f'{f(r, "cold_ms"):>9.1f}')
            shown += 1
    if not shown:
        print(f'{c:<15} (no result)')
for r in rows:
    if r['side'] != 'ours' or part(r) not in ('fwd', 'fwdbwd'):
        continue
    if part(r) == 'fwd':
        print(f'ours {r["case"]}: mode={r.get("mode")} reps={r.get("reps")} pipelined_ms={r.get("pipelined_ms")} '
              f'compile cold {r.get("compile_cold_ms")} ms + first run {r.get("first_run_ms")} ms; '
              f'cache hit {r.get("compile_hit_ms")} ms + first run {r.get("hit_first_run_ms")} ms')
    else:
        print(f'ours {r["case"]} fwd+bwd: algo={r.get("algo")} reps={r.get("reps")} tape {r.get("tape_bytes")} B '
              f'({r.get("tape_bytes_per_seq")} B a sequence, a checkpoint every {r.get("grad_chunk")} steps), '
              f'tape free {r.get("tape_free_ms")} ms (not in ms); compile cold {r.get("compile_cold_ms")} ms + '
              f'first step {r.get("first_run_ms")} ms; cache hit {r.get("compile_hit_ms")} ms + first step '
              f'{r.get("hit_first_run_ms")} ms')
for side in ('ours', 'ref'):
    if not any(r['side'] == side for r in rows):
        print(f'{side}: no results at all (see {side}.log)')
if errs:
    print('errors:')
    for e in errs:
        print('  ' + e[:300])
print('ratio = ours ms / ref ms (below 1: ssmc faster), forward against forward, ssmc.fwdbwd against .fwdbwd '
      '(training forward + backward, tensors on the device). cold ms: ours = compile with an empty cache + first '
      'run (fwdbwd: first step, which compiles the gradient models); ref = first call (Triton JIT/autotune, empty '
      'TRITON_CACHE_DIR).')
EOF
