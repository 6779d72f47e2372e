#!/bin/sh
# Installs what building and testing ssmc needs, on Debian 12, when missing:
# a C compiler, CMake, Ninja, re2c, CMocka, LLVM 19 (the CPU backend),
# clang 19 with its runtime (sanitizer and fuzzing builds), pkg-config (the
# install test), and Debian's PyTorch, NumPy, Matplotlib and pytest for
# /usr/bin/python3 (the Python package's tests and examples/train_lm.py).
# Needs root or sudo only when something is missing.
set -eu
pkgs="build-essential cmake ninja-build re2c libcmocka-dev llvm-19-dev clang-19 libclang-rt-19-dev pkg-config
      python3-torch python3-numpy python3-matplotlib python3-pytest"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "setup: installing$missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq $missing >/dev/null
