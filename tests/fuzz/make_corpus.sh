#!/bin/sh
# Seeds a libFuzzer corpus directory (created if missing) from the inputs the
# repository already has, so that none is committed twice:
#   examples/*.ssm, tests/golden/<stage>/*.ssm, tests/gpu/edge.ssm, tests/fuzz/regressions/*
# Usage: tests/fuzz/make_corpus.sh DIR
set -eu
[ $# -eq 1 ] || { echo "usage: $0 CORPUS_DIR" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
mkdir -p "$out"
n=0
for f in "$root"/examples/*.ssm "$root"/tests/golden/*/*.ssm "$root"/tests/gpu/edge.ssm "$root"/tests/fuzz/regressions/*; do
  [ -f "$f" ] || continue
  case $(basename "$f") in .*) continue ;; esac
  # a name from the path keeps seeds of the same base name apart
  name=$(printf '%s' "${f#"$root"/}" | tr '/' '_')
  cp "$f" "$out/seed_$name"
  n=$((n + 1))
done
echo "make_corpus: $n seeds in $out"
