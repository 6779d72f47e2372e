#!/bin/sh
# The whole test suite: builds ssmc and runs every test (ctest: unit, golden,
# examples; GPU tests are skipped where there is no GPU), then the same suite
# under AddressSanitizer + UndefinedBehaviorSanitizer, then a short fuzz run of
# the front end. Any failure fails the script.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# ctest in build dir $1 (log name $2, then VAR=VALUE settings), its output shown and kept;
# sh has no pipefail, so the status travels through a file
run_ctest() {
  dir=$1 name=$2
  shift 2
  { (cd "$dir" && env "$@" ctest --output-on-failure -j "$jobs"); echo $? >"$logs/$name.rc"; } 2>&1 | tee "$logs/$name.log"
  [ "$(cat "$logs/$name.rc" 2>/dev/null)" = 0 ] || { echo "== ctest failed in $dir"; exit 1; }
}

echo "== build and test"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
run_ctest build plain

echo "== sanitizers (ASan + UBSan)"
CC=clang-19 cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSSMC_SANITIZE=ON >/dev/null
cmake --build build-asan
run_ctest build-asan asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1

if [ -x tests/fuzz/run.sh ]; then
  echo "== fuzzing the front end (${SSMC_FUZZ_SECONDS:-60} s)"
  tests/fuzz/run.sh build-fuzz "${SSMC_FUZZ_SECONDS:-60}"
fi
# One closing line over both ctest runs (skipped: GPU tests on a machine without a GPU).
total=$(cat "$logs"/*.log | sed -n 's/.* tests failed out of \([0-9]*\)$/\1/p' | awk '{s += $1} END {print s + 0}')
skipped=$(cat "$logs"/*.log | grep -c '\*\*\*Skipped' || true)
echo "tests: $((total - skipped)) passed, 0 failed, $skipped skipped"
