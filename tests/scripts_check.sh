#!/bin/sh
# Checks the repository's scripts (the ctest `scripts`):
# - no build directory is configured with two build types by scripts/*.sh and
#   tests/fuzz/run.sh (demo.sh and test.sh used to share build/ as Release and
#   RelWithDebInfo, so that each rebuilt the other's tree whole);
# - tests/fuzz/summary.sh turns a libFuzzer log into its few lines, on a log
#   without findings and on one with a crash.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# ---- build directories: "-B DIR ... -DCMAKE_BUILD_TYPE=TYPE" on one line
pairs=$(for f in "$root"/scripts/*.sh "$root"/tests/fuzz/run.sh; do
  sed -n 's/.*-B \([^ ]*\).*-DCMAKE_BUILD_TYPE=\([A-Za-z]*\).*/\1 \2/p' "$f"
done | sort -u)
[ -n "$pairs" ] || fail "no cmake -B ... -DCMAKE_BUILD_TYPE=... line found in the scripts"
dup=$(printf '%s\n' "$pairs" | awk '{n[$1]++} END {for (d in n) if (n[d] > 1) print d}')
[ -z "$dup" ] || fail "build directories configured with two build types: $dup ($pairs)"

# ---- the fuzz log summary
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/clean.log" <<'LOG'
INFO: Running with entropic power schedule (0xFF, 100).
INFO: Seed: 1234
#2	INITED cov: 1500 ft: 3000 corp: 180/40Kb exec/s: 0 rss: 60Mb
#512	pulse  cov: 1600 ft: 3300 corp: 190/41Kb lim: 4096 exec/s: 256 rss: 70Mb
#9000	NEW    cov: 1650 ft: 3400 corp: 195/42Kb lim: 4096 exec/s: 150 rss: 80Mb L: 120/4096 MS: 2 ChangeBit-CopyPart-
#9000	DONE   cov: 1650 ft: 3400 corp: 195/42Kb lim: 4096 exec/s: 150 rss: 80Mb
Done 9000 runs in 60 second(s)
stat::number_of_executed_units: 9000
stat::average_exec_per_sec:     150
stat::new_units_added:          15
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              80
LOG
out=$(sh "$root/tests/fuzz/summary.sh" "$tmp/clean.log")
[ "$(printf '%s\n' "$out" | wc -l)" -eq 3 ] || fail "the summary of a clean log is not 3 lines: $out"
printf '%s\n' "$out" | grep -q '^fuzz: 9000 inputs run in 60 s (150/s), 15 added to the corpus, peak RSS 80 MB$' || fail "runs: $out"
printf '%s\n' "$out" | grep -q '^fuzz: at the end: cov: 1650 ft: 3400 corp: 195/42Kb' || fail "coverage: $out"
printf '%s\n' "$out" | grep -q '^fuzz: findings: none$' || fail "findings: $out"
cat >"$tmp/crash.log" <<'LOG'
#100	NEW    cov: 1650 ft: 3400 corp: 195/42Kb lim: 4096 exec/s: 150 rss: 80Mb
fuzz_frontend: two identical runs differ (an output element left unwritten, or nondeterminism)
y
==4242== ERROR: libFuzzer: deadly signal
SUMMARY: libFuzzer: deadly signal
Test unit written to ./fuzz-artifacts/crash-0123
LOG
out=$(sh "$root/tests/fuzz/summary.sh" "$tmp/crash.log")
printf '%s\n' "$out" | grep -q 'did not finish' || fail "a log without statistics: $out"
printf '%s\n' "$out" | grep -q '^fuzz: findings (4 lines' || fail "crash findings: $out"
printf '%s\n' "$out" | grep -q 'two identical runs differ' || fail "the finding's message: $out"
printf '%s\n' "$out" | grep -q 'crash-0123' || fail "the artifact: $out"

echo "scripts: $fails failed"
[ $fails -eq 0 ]
