#!/bin/sh
# The main job: builds ssmc and runs a model from examples/, on the GPU when
# one is present, else on the CPU (LLVM JIT), verified against the f64
# interpreter. Builds into build-demo/ (Release). Usage:
# scripts/demo.sh [FILE.ssm] [extra ssmc run options]
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
# a tree of its own: scripts/test.sh builds build/ as RelWithDebInfo, and one
# tree configured two ways would be rebuilt whole by each in turn
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-demo
model=${1:-examples/mamba2.ssm}
[ $# -gt 0 ] && shift
device=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=cuda; fi
echo "demo: running $model on $device"
exec build-demo/ssmc run "$model" --device "$device" --batch 2 --seqlen 256 --seed 1 --verify "$@"
