#!/usr/bin/env bash
# decode.sh: the decode and bundle-load benchmark (issue 17 item 4), in one
# command on the device machine, from the repository root:
#   bash bench/gpu/decode.sh            (OUT=DIR keeps the logs there; default /tmp/decode-out)
# 1. builds ssmc without LLVM and tests into build-gpu (Release), and
#    bench/gpu/bench_decode.c against its libssmc.a;
# 2. builds two bundles with `ssmc build --target cuda:sm_XX` (XX: this GPU's
#    arch, from nvidia-smi) and --dtype bf16/f32/f32,bf16/f32/bf16: Mamba-2
#    (examples/mamba2.ssm, H=64 P=64 N=128) and gated DeltaNet
#    (examples/gated_deltanet.ssm, H=16 K=128 V=128);
# 3. per model: bundle load cold (a fresh process; the .so evicted from the
#    page cache) against the JIT path cold (empty kernel cache: NVRTC) and
#    with the cache filled, each in a process of its own; then the decode
#    step at batch 1, 16, 64, 256 through the bundle and the library, with
#    the memory floor of each row (bench_decode.c says how);
# 4. runs bench/gpu/decode_ref.py (mamba_ssm's selective_state_update, fla's
#    fused recurrent gated delta rule) when python3 can import torch; its
#    failures are BENCHERR lines, never the script's;
# 5. prints every BENCH line, then one table.
# BENCH_ITERS sets the timed steps per row (default 100); DECODE_REF_ARGS
# adds arguments to decode_ref.py. Stays well under 10 minutes.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
out=${OUT:-/tmp/decode-out}
mkdir -p "$out"
iters=${BENCH_ITERS:-100}
start=$(date +%s)
stamp() { echo "[decode.sh $(($(date +%s) - start))s] $*"; }

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,compute_cap --format=csv 2>&1
    uname -a
} > "$out/machine.txt"
cat "$out/machine.txt"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
arch=sm_${cap:-90}

stamp "building ssmc (build-gpu) and bench_decode"
if ! timeout 300 bash -c 'cmake -S . -B build-gpu -DSSMC_LLVM=OFF -DSSMC_TESTS=OFF -DCMAKE_BUILD_TYPE=Release &&
        cmake --build build-gpu -j16' > "$out/build.log" 2>&1; then
    tail -30 "$out/build.log"
    echo "BENCHERR side=ours case=all err=build failed (see $out/build.log)"
    exit 1
fi
cc=${CC:-cc}
if ! $cc -std=c11 -O2 -Wall -I"$repo/include" -I"$repo" -o build-gpu/bench_decode bench/gpu/bench_decode.c \
        build-gpu/libssmc.a -lpthread -ldl -lm >> "$out/build.log" 2>&1; then
    tail -20 "$out/build.log"
    echo "BENCHERR side=ours case=all err=bench_decode does not build"
    exit 1
fi

# model, dims for ssmc build (-D) and for bench_decode (H=..,..)
models=("mamba2:H=64,P=64,N=128" "gated_deltanet:H=16,K=128,V=128")
sigs=("bf16/f32/f32" "bf16/f32/bf16")
for entry in "${models[@]}"; do
    model=${entry%%:*}
    dims=${entry#*:}
    dflags=$(echo "$dims" | tr ',' '\n' | sed 's/^/-D /' | tr '\n' ' ')
    bdir=build-gpu/bundles/$model
    stamp "ssmc build $model --target cuda:$arch"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    if ! build-gpu/ssmc build "examples/$model.ssm" -o "$bdir" --target "cuda:$arch" --dtype "$(IFS=,; echo "${sigs[*]}")" \
            $dflags > "$out/bundle_$model.log" 2>&1; then
        cat "$out/bundle_$model.log"
        echo "BENCHERR side=ours case=${model}_build err=ssmc build failed"
        continue
    fi
    echo "BENCH side=ours case=${model}_build impl=ssmc_build arch=$arch build_s=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")" \
        | tee -a "$out/ours.log"
    for k in 0 1; do
        sig=${sigs[$k]}
        common=(--repo "$repo" --bundle "$bdir/lib$model.so" --model "$model" --dims "$dims" --sig "$k" --dtypes "$sig")
        cache=$(mktemp -d /tmp/ssmc-cache-XXXXXX)
        timeout 120 build-gpu/bench_decode "${common[@]}" --load bundle 2>&1 | tee -a "$out/ours.log"
        SSMC_CACHE_DIR=$cache timeout 120 build-gpu/bench_decode "${common[@]}" --load jit 2>&1 |
            sed 's/cache=[^ ]*/cache=cold/' | tee -a "$out/ours.log"
        SSMC_CACHE_DIR=$cache timeout 120 build-gpu/bench_decode "${common[@]}" --load jit 2>&1 |
            sed 's/cache=[^ ]*/cache=hit/' | tee -a "$out/ours.log"
        SSMC_CACHE_DIR=$cache timeout 180 build-gpu/bench_decode "${common[@]}" --decode --iters "$iters" 2>&1 |
            tee -a "$out/ours.log"
        rm -rf "$cache"
    done
done

stamp "reference kernels (bench/gpu/decode_ref.py)"
if python3 -c 'import torch' > /dev/null 2>&1; then
    PYTHONUNBUFFERED=1 timeout 240 python3 bench/gpu/decode_ref.py --iters "$iters" ${DECODE_REF_ARGS:-} 2>&1 |
        tee "$out/ref.log"
else
    echo "BENCHERR side=ref case=all err=no torch for python3" | tee "$out/ref.log"
fi

stamp "done"
cat "$out/ours.log" "$out/ref.log" | grep -E '^BENCH(ERR)? ' > "$out/results.txt"
python3 - "$out/results.txt" <<'EOF' | tee "$out/table.txt"
# The decode rows of both sides side by side, then the load rows.
import sys
rows, errs = [], []
for line in open(sys.argv[1]):
    kind, *kv = line.split()
    d = dict(x.split('=', 1) for x in kv if '=' in x)
    (errs if kind == 'BENCHERR' else rows).append(d if kind == 'BENCH' else line.strip())
f = lambda d, k: float(d.get(k, 'nan'))
print('\ndecode step (T = 1), median ms; floor = bytes moved / 4.8 TB/s; pct = floor / time')
hdr = f'{"case":<26} {"side":<5} {"impl":<44} {"sig":<13} {"ms":>9} {"floor_ms":>9} {"pct":>6}'
print(hdr)
print('-' * len(hdr))
for r in sorted((r for r in rows if '_decode_b' in r.get('case', '')), key=lambda r: (r['case'].split('_b')[0],
        int(r.get('batch', 0)), r.get('sig', ''), r['side'] != 'ours', r.get('impl', ''))):
    print(f'{r["case"]:<26} {r["side"]:<5} {r.get("impl", ""):<44} {r.get("sig", ""):<13} {f(r, "ms"):>9.4f} '
          f'{f(r, "floor_ms"):>9.4f} {f(r, "pct"):>6.1f}')
print('\nload and first call (ms): cuinit is paid by every path; cold = (load + open | compile) + first call')
for r in rows:
    if r.get('case', '').endswith('_load') or r.get('case', '').endswith('_build'):
        print('  ' + ' '.join(f'{k}={v}' for k, v in r.items()))
if errs:
    print('errors:')
    for e in errs:
        print('  ' + e[:300])
EOF
