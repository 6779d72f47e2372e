#!/bin/sh
# The whole test suite: builds ssmc and runs every test (ctest: unit, golden,
# examples; GPU tests are skipped where there is no GPU), then the same suite
# under AddressSanitizer + UndefinedBehaviorSanitizer, then a short fuzz run of
# the front end. Any failure fails the script.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)

echo "== build and test"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
(cd build && ctest --output-on-failure -j "$jobs")

echo "== sanitizers (ASan + UBSan)"
CC=clang-19 cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSSMC_SANITIZE=ON >/dev/null
cmake --build build-asan
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j "$jobs")

if [ -x tests/fuzz/run.sh ]; then
  echo "== fuzzing the front end (${SSMC_FUZZ_SECONDS:-60} s)"
  tests/fuzz/run.sh build-fuzz "${SSMC_FUZZ_SECONDS:-60}"
fi
echo "== all tests passed"
