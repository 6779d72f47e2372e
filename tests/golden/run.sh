#!/bin/sh
# Golden files: every tests/golden/<stage>/NAME.ssm goes through the CLI and its
# output is compared with NAME.<stage>:
#   errors/    `ssmc check`        -> .err  (stderr; the exit status must be 1)
#   ir/        `ssmc emit --emit=ir`       -> .ir
#   analysis/  `ssmc emit --emit=analysis` -> .analysis
#   grad/      `ssmc emit --emit=grad`     -> .grad (the adjoint model)
#   plan/      every examples/NAME.ssm: `ssmc emit --emit=plan --threads 8` -> NAME.cpu.plan
#              and `ssmc emit --emit=plan --device cuda` -> NAME.cuda.plan
# A file NAME.args beside the .ssm adds command-line arguments.
# SSMC_UPDATE_GOLDEN=1 rewrites the expected files instead of comparing.
set -u
dir=$(dirname "$0")
cli=${SSMC_CLI:?SSMC_CLI must name the ssmc binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
count=0
for stage in errors ir analysis grad; do
  [ -d "$dir/$stage" ] || continue
  for src in "$dir/$stage"/*.ssm; do
    [ -e "$src" ] || continue
    base=${src%.ssm}
    name=$(basename "$base")
    extra=""
    [ -f "$base.args" ] && extra=$(cat "$base.args")
    # golden files name the source relative to tests/golden so they do not depend on the checkout path
    rel="$stage/$name.ssm"
    case $stage in
      errors)   ext=err;      (cd "$dir" && "$cli" check "$rel" $extra) >/dev/null 2>"$tmp/out"; status=$?
                if [ $status -ne 1 ]; then echo "FAIL $rel: exit status $status, expected 1"; fails=$((fails+1)); fi ;;
      ir)       ext=ir;       (cd "$dir" && "$cli" emit "$rel" --emit=ir $extra) >"$tmp/out" 2>&1 ;;
      analysis) ext=analysis; (cd "$dir" && "$cli" emit "$rel" --emit=analysis $extra) >"$tmp/out" 2>&1 ;;
      grad)     ext=grad;     (cd "$dir" && "$cli" emit "$rel" --emit=grad $extra) >"$tmp/out" 2>&1 ;;
    esac
    count=$((count+1))
    if [ "${SSMC_UPDATE_GOLDEN:-0}" = 1 ]; then
      cp "$tmp/out" "$base.$ext"
    elif ! diff -u "$base.$ext" "$tmp/out"; then
      echo "FAIL $rel"
      fails=$((fails+1))
    fi
  done
done
# the kernel plan of every example, for both targets (the cpu target with a fixed
# worker count, so that the plan does not depend on the machine)
mkdir -p "$dir/plan"
for src in "$dir"/../../examples/*.ssm; do
  name=$(basename "${src%.ssm}")
  for target in cpu cuda; do
    rel="../../examples/$name.ssm"
    if [ $target = cpu ]; then args="--threads 8"; else args="--device cuda"; fi
    (cd "$dir" && "$cli" emit "$rel" --emit=plan $args) >"$tmp/out" 2>&1
    expect="$dir/plan/$name.$target.plan"
    count=$((count+1))
    if [ "${SSMC_UPDATE_GOLDEN:-0}" = 1 ]; then
      cp "$tmp/out" "$expect"
    elif ! diff -u "$expect" "$tmp/out"; then
      echo "FAIL plan $name ($target)"
      fails=$((fails+1))
    fi
  done
done
echo "golden: $count files, $fails failed"
[ $fails -eq 0 ] && [ $count -gt 0 ]
