#!/usr/bin/env bash
# build.sh: builds bench/gpu/bench_gpu against an existing ssmc build's libssmc.a.
#   bash bench/gpu/build.sh [BUILD_DIR]      (default: build-gpu; output BUILD_DIR/bench_gpu)
# Device mode (tensors on the GPU, no copies timed) when include/ssmc.h declares
# ssmc_run_device and bench_gpu.c compiles against it, with the training step
# (bench_gpu --grad) when it declares ssmc_backward_device too; otherwise host
# mode (ssmc_run on host tensors: the times include the copies; no --grad).
# Prints which.
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
h=$repo/include/ssmc.h
defs=()
grep -q 'ssmc_run_device' "$h" && defs+=(-DBENCH_HAVE_RUN_DEVICE)
grep -q 'ssmc_run_device' "$h" && grep -q 'ssmc_backward_device' "$h" && defs+=(-DBENCH_HAVE_GRAD_DEVICE)
if [ ${#defs[@]} -gt 0 ] &&
   $cc "${cflags[@]}" "${defs[@]}" -o "$out" "$repo/bench/gpu/bench_gpu.c" "${libs[@]}"; then
    case " ${defs[*]} " in
    *GRAD*) echo "build.sh: $out (device mode: ssmc_run_device; --grad: ssmc_backward_device)" ;;
    *) echo "build.sh: $out (device mode: ssmc_run_device; no --grad: ssmc_backward_device not declared)" ;;
    esac
elif $cc "${cflags[@]}" -o "$out" "$repo/bench/gpu/bench_gpu.c" "${libs[@]}"; then
    [ ${#defs[@]} -gt 0 ] &&
        echo "build.sh: WARNING: ssmc_run_device is declared but bench_gpu.c does not compile against it" >&2
    echo "build.sh: $out (host mode: times include host<->device copies; no --grad)"
else
    echo "build.sh: bench_gpu failed to build" >&2
    exit 1
fi
