#!/bin/sh
# Summarises a libFuzzer log in a few lines: how many inputs ran and how fast,
# the coverage and corpus at the end, and what was found. tests/fuzz/run.sh
# keeps the whole log beside the build and prints this instead (the log of a
# minute's run is ~1,700 lines). Usage: tests/fuzz/summary.sh LOG
set -eu
[ $# -eq 1 ] || { echo "usage: $0 LOG" >&2; exit 2; }
awk '
BEGIN { nfound = 0 }
/^#[0-9]+/ { last = $0 }
/^stat::number_of_executed_units:/ { runs = $2 }
/^Done [0-9]+ runs in [0-9]+ second/ { secs = $5 }
/^stat::average_exec_per_sec:/ { speed = $2 }
/^stat::new_units_added:/ { added = $2 }
/^stat::peak_rss_mb:/ { rss = $2 }
/^==[0-9]+== ?ERROR|^SUMMARY: |deadly signal|^fuzz_frontend: |Test unit written|^runtime error|: runtime error: / {
  if (nfound < 8) found[nfound] = $0
  nfound++
}
END {
  if (runs != "") printf "fuzz: %s inputs run%s (%s/s), %s added to the corpus, peak RSS %s MB\n", runs, secs != "" ? " in " secs " s" : "", speed, added, rss
  else print "fuzz: no final statistics in the log (the fuzzer did not finish)"
  if (last != "") {
    sub(/^#[0-9]+[ \t:]*/, "", last)
    sub(/^(DONE|INITED|NEW|REDUCE|pulse)[ \t]*/, "", last)
    printf "fuzz: at the end: %s\n", last
  }
  if (nfound == 0) print "fuzz: findings: none"
  else {
    printf "fuzz: findings (%d lines of reports; the first):\n", nfound
    for (i = 0; i < nfound && i < 8; i++) printf "  %s\n", found[i]
  }
}' "$1"
