#!/bin/sh
# check_all.sh: the CUDA backend against the interpreter through the CLI, for
# machines without CMocka (tests/unit/test_gpu_examples.c is the CMocka twin).
#   sh tests/gpu/check_all.sh [path/to/ssmc]      (default: build-gpu/ssmc)
# Every example and every model of tests/gpu/edge.ssm, in f32 and bf16, at
# T = 1, 33 and 7, batch 2 and 3, at the declared dims and with every dim made
# odd, with an initial state (the final state of a random 5-step prefix on the
# interpreter, as a decode continues) and without, each through
# `ssmc run --device cuda --verify` (fresh random inputs, outputs poisoned with
# NaN, relative error <= 1e-5 in f32 and 2e-2 in bf16 for every output and
# final state). Prints one line per run; exits 1 if any run fails, 77 when
# there is no GPU. SSMC_CHECK_DEVICE=interp (or cpu) runs the same sweep on
# another device, to check the script itself without a GPU.
set -u
device=${SSMC_CHECK_DEVICE:-cuda}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ssmc=${1:-$repo/build-gpu/ssmc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

probe=$("$ssmc" run "$repo/examples/retnet.ssm" --device "$device" --seqlen 1 2>&1)
case $probe in
  *"no GPU to run on"*) echo "check_all: no GPU: $probe"; exit 77 ;;
esac

# The dims of a model as -D options, every value made odd.
odd_dims() { # file model
  "$ssmc" emit "$1" --model "$2" --emit=ir | awk '$1 == "dim" { v = $4; if (v % 2 == 0) v++; printf "-D %s=%d ", $2, v }'
}

# Writes --init-state options for a prefix state into $tmp/state.
prefix_state() { # file model batch seed dims...
  f=$1; m=$2; b=$3; s=$4; shift 4
  rm -rf "$tmp/state"
  out=$("$ssmc" run "$f" --model "$m" --device interp --batch "$b" --seqlen 5 --seed "$s" --out "$tmp/state" "$@") || return 1
  echo "$out" | awk -v dir="$tmp/state" '$1 == "state" { printf "--init-state %s=%s/%s.npy ", $2, dir, $2 }'
}

pass=0
fails=0
seed=1
check() { # file model dtype batch seqlen init(0/1) odd(0/1)
  f=$1; m=$2; dt=$3; b=$4; T=$5; init=$6; odd=$7
  dims=""
  [ "$odd" = 1 ] && dims=$(odd_dims "$f" "$m")
  seed=$((seed + 1))
  inits=""
  if [ "$init" = 1 ]; then
    # shellcheck disable=SC2086
    inits=$(prefix_state "$f" "$m" "$b" $((seed + 1000)) $dims) || { echo "FAIL $m: prefix run"; fails=$((fails + 1)); return; }
  fi
  what="$m $dt B=$b T=$T$([ "$init" = 1 ] && echo ' from-state')$([ "$odd" = 1 ] && echo ' odd-dims')"
  # shellcheck disable=SC2086
  out=$("$ssmc" run "$f" --model "$m" --device "$device" --dtype "$dt" --batch "$b" --seqlen "$T" --seed "$seed" \
        $dims $inits --verify 2>&1)
  rc=$?
  worst=$(echo "$out" | awk '$1 == "verify" { print $5 }' | sort -g | tail -1)
  if [ $rc -eq 0 ] && echo "$out" | grep -q '^verify'; then
    pass=$((pass + 1))
    printf 'ok   %-52s worst rel_err %s\n' "$what" "$worst"
  else
    fails=$((fails + 1))
    printf 'FAIL %-52s\n' "$what"
    echo "$out" | sed 's/^/     /' | head -20
  fi
}

models() { # file: the names of its models
  grep -o '^model [A-Za-z_][A-Za-z0-9_]*' "$1" | cut -d' ' -f2
}

for f in "$repo"/examples/*.ssm "$repo"/tests/gpu/edge.ssm; do
  for m in $(models "$f"); do
    for dt in f32 bf16; do
      check "$f" "$m" "$dt" 2 1 1 0
      check "$f" "$m" "$dt" 3 33 0 0
      check "$f" "$m" "$dt" 2 33 1 0
      # the edge models keep their own constraints (groups must divide); their
      # odd shapes are covered by test_gpu_examples
      case $f in */edge.ssm) continue ;; esac
      check "$f" "$m" "$dt" 3 7 1 1
      check "$f" "$m" "$dt" 2 1 0 1
    done
  done
done
echo "check_all: $pass passed, $fails failed"
[ $fails -eq 0 ]
