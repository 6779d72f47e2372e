#!/bin/sh
# The C package from an installed tree: `cmake --install BUILD --prefix TMP`,
# then examples/api_example.c built against TMP only, with find_package(ssmc)
# (shared and static targets) and with pkg-config (shared, then static), and
# each program run. Usage: run.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/ssmc.h bin/ssmc; do
  [ -e "$prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
pc=$(find "$prefix" -name ssmc.pc)
libdir=$(dirname "$(dirname "$pc")")
for f in libssmc.a libssmc.so cmake/ssmc/ssmcConfig.cmake cmake/ssmc/ssmcTargets.cmake; do
  [ -e "$libdir/$f" ] || { echo "FAIL: $libdir/$f not installed"; exit 1; }
done
check() { # program, how it was built
  out=$("$1") || { echo "FAIL: $2: exit status $?"; exit 1; }
  case $out in *"model mamba2 on the"*) echo "ok: $2: $out" ;; *) echo "FAIL: $2: $out"; exit 1 ;; esac
}
# find_package(ssmc)
cmake -S "$src/tests/install/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DSSMC_EXAMPLE="$src/examples/api_example.c" >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
cmake --build "$tmp/cmake" >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
check "$tmp/cmake/api_example_shared" "find_package, ssmc::ssmc"
check "$tmp/cmake/api_example_static" "find_package, ssmc::ssmc_static"
ldd "$tmp/cmake/api_example_shared" | grep -q "$libdir/libssmc.so" || { echo "FAIL: not linked to the installed libssmc.so"; exit 1; }
# pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc=${CC:-cc}
$cc -o "$tmp/pc_shared" "$src/examples/api_example.c" $(pkg-config --cflags --libs ssmc) -lm -Wl,-rpath,"$libdir"  # the example itself uses libm
check "$tmp/pc_shared" "pkg-config ssmc"
$cc -o "$tmp/pc_static" "$src/examples/api_example.c" $(pkg-config --cflags ssmc) "$libdir/libssmc.a" \
  $(pkg-config --static --libs-only-L --libs-only-other ssmc) $(pkg-config --static --libs-only-l ssmc | sed 's/-lssmc//')
check "$tmp/pc_static" "pkg-config --static ssmc"
if ldd "$tmp/pc_static" | grep -q libssmc; then echo "FAIL: the static program loads libssmc.so"; exit 1; fi
echo "install: 4 programs built against $prefix and run"
