#!/bin/sh
# Installs what building and testing ssmc needs, on Debian 12, when missing:
# a C compiler, CMake, Ninja, re2c, CMocka, LLVM 19 (the CPU backend) and
# clang 19 with its runtime (sanitizer and fuzzing builds). Needs root or sudo
# only when something is missing.
set -eu
pkgs="build-essential cmake ninja-build re2c libcmocka-dev llvm-19-dev clang-19 libclang-rt-19-dev"
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
