#!/usr/bin/env bash
# device_check.sh: every GPU check of the repository in one command, for the
# device machine (one call there: a build and seven stages in under 10 minutes).
#   bash tests/gpu/device_check.sh            (from the repository root)
#   CMOCKA_PREFIX=DIR: a CMocka install (DIR/include/cmocka.h, DIR/lib/libcmocka.so)
#   when the machine has none; without one the CMocka tests (stage 2) are not built.
# 1. builds ssmc without LLVM (Release) into build-gpu, with the tests;
# 2. ctest -L gpu: test_gpu_examples (every example, `ssmc bench --device cuda`'s
#    device timing), test_gpu_runtime, test_gpu_aot (CUDA bundles, decode on
#    pools), python_gpu (the package on CUDA tensors, where torch has CUDA);
# 3. tests/gpu/check_all.sh: the recurrent kernels against the interpreter;
# 4. the chunked algorithm against the interpreter: every example --algo=chunked
#    takes, at declared and odd dims, T = 1, 200 and 333, bf16, batch 2, and from
#    a state (inputs in the model's stable domain where uniform draws explode:
#    tests/gpu/stable_inputs.py);
# 5. gradients on CUDA against the interpreter's (`--grad --verify`), f32 and bf16;
# 6. packed sequences (`--cu-seqlens`) on CUDA, recurrent and chunked (--verify);
# 7. compute-sanitizer (memcheck) over a chunked run (scalar and per-key decay),
#    a backward and a packed run.
# Logs go to $OUT (or /tmp/device-check): one per stage, and summary.txt with a
# line per stage. Exits 1 when any stage failed, 77 without a GPU.
# DEVICE_CHECK_STAGES="2 6 7" runs only those stages after the build (default: all);
# DEVICE_CHECK_CTEST="-R test_gpu_grad" narrows stage 2's ctest;
# DEVICE_CHECK_MODELS="fla_retention gla" narrows stage 4 to those examples.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 1
out=${OUT:-/tmp/device-check}
scratch=$(mktemp -d /tmp/device-check-scratch.XXXXXX) # big files that need not come back
mkdir -p "$out"
stages=${DEVICE_CHECK_STAGES:-2 3 4 5 6 7}
want() { case " $stages " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
export SSMC_CACHE_DIR=${SSMC_CACHE_DIR:-/tmp/ssmc-cache} TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
start=$(date +%s)
failed=0
say() { echo "[device_check $(($(date +%s) - start))s] $*" | tee -a "$out/summary.txt"; }
stage_result() { # name ok-count fail-count
  say "$1: $2 ok, $3 failed"
  [ "$3" = 0 ] || failed=1
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/machine.txt" 2>&1 ||
  { echo "device_check: no GPU (nvidia-smi failed)"; exit 77; }
say "machine: $(cat "$out/machine.txt"); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# 1. build
cm=()
if [ -n "${CMOCKA_PREFIX:-}" ]; then
  cm=(-DCMOCKA_INCLUDE="$CMOCKA_PREFIX/include" -DCMOCKA_LIB="$CMOCKA_PREFIX/lib/libcmocka.so")
  export LD_LIBRARY_PATH="$CMOCKA_PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ! timeout 200 bash -c "cmake -S . -B build-gpu -DSSMC_LLVM=OFF -DCMAKE_BUILD_TYPE=Release ${cm[*]} >/dev/null &&
      cmake --build build-gpu -j$(nproc)" > "$out/build.log" 2>&1; then
  tail -30 "$out/build.log"
  say "build: FAILED (build.log)"
  exit 1
fi
say "build: ok"
S=build-gpu/ssmc

# 2. the CMocka GPU tests
if want 2 && [ -f build-gpu/CTestTestfile.cmake ]; then
  (cd build-gpu && timeout 240 ctest -L gpu ${DEVICE_CHECK_CTEST:-} --output-on-failure) > "$out/ctest_gpu.log" 2>&1
  ok=$(grep -c 'Test *#.*Passed' "$out/ctest_gpu.log"); bad=$(grep -cE 'Test *#.*(Failed|Timeout|Exception)' "$out/ctest_gpu.log")
  skipped=$(grep -c 'Skipped' "$out/ctest_gpu.log")
  stage_result "ctest -L gpu ($skipped skipped)" "$ok" "$bad"
fi

# 3. the recurrent kernels
if want 3; then
  timeout 150 sh tests/gpu/check_all.sh "$S" > "$out/check_all.log" 2>&1
  say "check_all: $(tail -1 "$out/check_all.log")"
  grep -q ' 0 failed' "$out/check_all.log" || failed=1
fi

# runs one `ssmc run ... --verify`; one line into $2: ok/FAIL, the case, the verify lines
verify_run() { # label logfile args...
  local label=$1 log=$2
  shift 2
  local r
  r=$(timeout 60 "$S" run "$@" --verify 2>&1)
  if echo "$r" | grep -q 'verify' && ! echo "$r" | grep -qE 'FAIL|error'; then
    echo "ok   $label" >> "$log"
  else
    echo "FAIL $label: $(echo "$r" | grep -E 'verify|error' | tr '\n' ' ' | cut -c1-300)" >> "$log"
  fi
}
count() { grep -c "^$2" "$1" 2>/dev/null || true; }

# 4. chunked vs the interpreter
stage4() {
log=$out/chunked.log
: > "$log"
for f in examples/*.ssm; do
  m=$(basename "$f" .ssm)
  case " ${DEVICE_CHECK_MODELS:-$m} " in *" $m "*) ;; *) continue ;; esac
  "$S" emit "$f" --emit=plan --algo chunked >/dev/null 2>&1 || continue # not chunkable: refused, as tested on the CPU
  odd=$("$S" emit "$f" --emit=ir | awk '$1 == "dim" { v = $4; if (v % 2 == 0) v++; printf "-D %s=%d ", $2, v }')
  # the models' stable domain where uniform [-1, 1) draws make the reference explode (stable_inputs.py)
  stable() { python3 tests/gpu/stable_inputs.py "$S" "$f" "$scratch/inputs" "$@"; }
  for T in 1 200 333; do
    # shellcheck disable=SC2046
    verify_run "$m T=$T" "$log" "$f" --device cuda --algo chunked --dtype bf16 --batch 2 --seqlen "$T" $(stable 2 "$T")
  done
  # shellcheck disable=SC2086,SC2046
  verify_run "$m T=77 odd dims" "$log" "$f" --device cuda --algo chunked --dtype bf16 --batch 3 --seqlen 77 $odd \
    $(stable 3 77 $odd)
  st=$("$S" emit "$f" --emit=ir | awk '$1 == "state" { print $2; exit }' | cut -d'[' -f1)
  # shellcheck disable=SC2046
  if [ -n "$st" ] && timeout 60 "$S" run "$f" --device cuda --seqlen 50 --batch 2 --out "$scratch/s0_$m" $(stable 2 50) >/dev/null 2>&1; then
    # shellcheck disable=SC2046
    verify_run "$m T=150 from a state" "$log" "$f" --device cuda --algo chunked --dtype bf16 --batch 2 --seqlen 150 \
      --init-state "$st=$scratch/s0_$m/$st.npy" $(stable 2 150)
  fi
done
stage_result "chunked vs interp" "$(count "$log" ok)" "$(count "$log" FAIL)"
}
want 4 && stage4

# 5. gradients on CUDA
stage5() {
log=$out/grad.log
: > "$log"
for f in examples/*.ssm; do
  m=$(basename "$f" .ssm)
  for dt in f32 bf16; do
    verify_run "$m grad $dt" "$log" "$f" --device cuda --dtype "$dt" --batch 2 --seqlen 37 --grad
  done
done
stage_result "grad on cuda vs interp" "$(count "$log" ok)" "$(count "$log" FAIL)"
}
want 5 && stage5

# packed sequences of lengths 1, 63, 1, 135, 133 (stages 6 and 7)
python3 - "$out/cu.npy" <<'EOF'
import struct, sys
v = [0, 1, 64, 65, 200, 333]
h = "{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }" % len(v)
h += ' ' * ((64 - (10 + len(h) + 1) % 64) % 64) + '\n'
open(sys.argv[1], 'wb').write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(h)) + h.encode() + struct.pack('<%dq' % len(v), *v))
EOF

# 6. packed sequences
stage6() {
log=$out/varlen.log
: > "$log"
for m in gla gated_deltanet mamba2 mamba2_conv lstm fla_gated_delta_rule; do
  verify_run "$m packed recurrent" "$log" "examples/$m.ssm" --device cuda --cu-seqlens "$out/cu.npy"
  if "$S" emit "examples/$m.ssm" --emit=plan --algo chunked >/dev/null 2>&1; then
    # shellcheck disable=SC2046
    verify_run "$m packed chunked" "$log" "examples/$m.ssm" --device cuda --algo chunked --dtype bf16 --cu-seqlens "$out/cu.npy" \
      $(python3 tests/gpu/stable_inputs.py "$S" "examples/$m.ssm" "$scratch/inputs" 1 333)
  fi
done
stage_result "cu_seqlens on cuda" "$(count "$log" ok)" "$(count "$log" FAIL)"
}
want 6 && stage6

# 7. compute-sanitizer
stage7() {
log=$out/sanitizer.log
: > "$log"
if command -v compute-sanitizer >/dev/null; then
  sanitize() { # label args...
    local label=$1
    shift
    local r
    r=$(timeout 120 compute-sanitizer --print-limit 10 --error-exitcode 9 "$S" run "$@" 2>&1)
    if [ $? = 0 ]; then echo "ok   $label" >> "$log"; else echo "FAIL $label: $(echo "$r" | tail -5 | tr '\n' ' ')" >> "$log"; fi
  }
  sanitize "chunked gated delta rule" examples/fla_gated_delta_rule.ssm --device cuda --algo chunked --dtype bf16 --seqlen 130 --batch 2
  sanitize "chunked simple gla odd" examples/fla_simple_gla.ssm --device cuda --algo chunked --dtype bf16 --seqlen 130 -D K=100 -D V=70
  sanitize "chunked gla (per key)" examples/gla.ssm --device cuda --algo chunked --dtype bf16 --seqlen 130 -D K=40 -D V=24
  sanitize "grad gla" examples/gla.ssm --device cuda --seqlen 40 --batch 2 --grad
  sanitize "grad lstm" examples/lstm.ssm --device cuda --seqlen 40 --batch 2 --grad
  sanitize "packed mamba2" examples/mamba2.ssm --device cuda --cu-seqlens "$out/cu.npy"
  stage_result "compute-sanitizer" "$(count "$log" ok)" "$(count "$log" FAIL)"
else
  say "compute-sanitizer: not found"
fi
}
want 7 && stage7
rm -rf "$scratch"
say "done: $([ $failed = 0 ] && echo all passed || echo FAILURES, see the logs)"
exit $failed
