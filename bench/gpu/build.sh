#!/usr/bin/env bash
# build.sh: builds bench/gpu/bench_gpu against an existing ssmc build's libssmc.a.
#   bash bench/gpu/build.sh [BUILD_DIR]      (default: build-gpu; output BUILD_DIR/bench_gpu)
# Device mode (tensors on the GPU, no copies timed) when include/ssmc.h declares
# ssmc_run_device and bench_gpu.c compiles against it; otherwise host mode
# (ssmc_run on host tensors: the times include the copies). Prints which.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-gpu}
case $build in /*) ;; *) build=$repo/$build ;; esac
lib=$build/libssmc.a
[ -f "$lib" ] || { echo "build.sh: $lib not found: build ssmc first" >&2; exit 1; }
cc=${CC:-cc}
cflags=(-std=c11 -O2 -Wall -Wextra -Wpedantic -Wno-unused-parameter -I"$repo/include" -I"$repo")
libs=("$lib" -lpthread -ldl -lm)
if grep -q 'SSMC_HAVE_LLVM:INTERNAL=ON\|SSMC_HAVE_LLVM=1' "$build/CMakeCache.txt" 2>/dev/null ||
   nm -A "$lib" 2>/dev/null | grep -q ' U LLVM'; then
    llvm_config=$(command -v llvm-config-19 || echo /usr/lib/llvm-19/bin/llvm-config)
    libs+=(-L"$("$llvm_config" --libdir)" -lLLVM-19)
fi
out=$build/bench_gpu
if grep -q 'ssmc_run_device' "$repo/include/ssmc.h" &&
   $cc "${cflags[@]}" -DBENCH_HAVE_RUN_DEVICE -o "$out" "$repo/bench/gpu/bench_gpu.c" "${libs[@]}"; then
    echo "build.sh: $out (device mode: ssmc_run_device)"
elif $cc "${cflags[@]}" -o "$out" "$repo/bench/gpu/bench_gpu.c" "${libs[@]}"; then
    grep -q 'ssmc_run_device' "$repo/include/ssmc.h" &&
        echo "build.sh: WARNING: ssmc_run_device is declared but bench_gpu.c does not compile against it" >&2
    echo "build.sh: $out (host mode: times include host<->device copies)"
else
    echo "build.sh: bench_gpu failed to build" >&2
    exit 1
fi
