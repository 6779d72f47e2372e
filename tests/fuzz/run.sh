#!/bin/sh
# Builds the front-end fuzz target with clang-19 and
# -fsanitize=fuzzer,address,undefined into BUILD_DIR and runs it for SECONDS
# (default 60) on a corpus seeded by make_corpus.sh (kept in
# BUILD_DIR/fuzz-corpus, so later runs start where earlier ones stopped).
# Exits non-zero on any crash, leak, timeout, out-of-memory or sanitizer
# report; the input that caused it is left in BUILD_DIR/fuzz-artifacts/. The
# fuzzer's output goes to BUILD_DIR/fuzz.log; what is printed is its summary
# (tests/fuzz/summary.sh), and the log's end when the fuzzer found something.
# Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]
#   JOBS=N runs N fuzzing processes in parallel (libFuzzer -fork=N).
set -eu
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 BUILD_DIR [SECONDS]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
seconds=${2:-60}
cc=${CC:-clang-19}
command -v "$cc" >/dev/null || { echo "run.sh: $cc not found (set CC to a clang with libFuzzer)" >&2; exit 2; }

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSSMC_FUZZ=ON -DSSMC_SANITIZE=ON -DSSMC_LLVM=OFF >/dev/null
ninja -C "$build" fuzz_frontend

corpus=$build/fuzz-corpus
artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"
sh "$root/tests/fuzz/make_corpus.sh" "$corpus"

# leaks count; UB stops the run (the build has -fno-sanitize-recover=undefined)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
set -- -max_len=4096 -timeout=10 -rss_limit_mb=2048 -max_total_time="$seconds" \
  -dict="$root/tests/fuzz/ssm.dict" -artifact_prefix="$artifacts/" -print_final_stats=1
[ -n "${JOBS:-}" ] && set -- "$@" -fork="$JOBS" -ignore_crashes=0 -ignore_timeouts=0 -ignore_ooms=0
# the whole output to a log beside the build, a summary on the terminal
# (SSMC_FUZZ_VERBOSE=1: the whole output as it comes)
log=$build/fuzz.log
status=0
if [ "${SSMC_FUZZ_VERBOSE:-0}" = 1 ]; then
  "$build/tests/fuzz/fuzz_frontend" "$@" "$corpus" 2>&1 | tee "$log"
  grep -q '^stat::number_of_executed_units' "$log" || status=1
  grep -qE '^==[0-9]+== ?ERROR|deadly signal|Test unit written' "$log" && status=1
else
  "$build/tests/fuzz/fuzz_frontend" "$@" "$corpus" >"$log" 2>&1 || status=$?
fi
sh "$root/tests/fuzz/summary.sh" "$log"
if [ $status -ne 0 ]; then
  echo "run.sh: the fuzzer stopped with status $status; the end of $log:" >&2
  tail -n 40 "$log" >&2
  echo "run.sh: inputs in $artifacts:" >&2
  ls -l "$artifacts" >&2
  exit 1
fi
echo "run.sh: $seconds s of fuzzing, no finding (the whole log: $log)"
