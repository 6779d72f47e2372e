#!/bin/sh
# The Python package installed with pip: python/ copied out of the checkout,
# `pip install` into a fresh virtual environment (with the system's torch),
# then, from another directory, the installed package's own libssmc.so and
# models run a model and an op. Usage: install.sh PYTHON SOURCE_DIR LIBSSMC
set -eu
py=$1 src=$2 lib=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv --system-site-packages "$tmp/venv"
cp -r "$src/python" "$tmp/pkg"
rm -rf "$tmp/pkg/build" "$tmp/pkg"/*.egg-info "$tmp/pkg/ssmc/libssmc.so" "$tmp/pkg/ssmc/models"
# offline: the build uses the system's setuptools (no isolated build environment)
SSMC_SOURCE_DIR="$src" SSMC_LIBRARY="$lib" "$tmp/venv/bin/pip" install -q --no-build-isolation --no-index "$tmp/pkg"
cd "$tmp"
env -u SSMC_LIBRARY -u PYTHONPATH "$tmp/venv/bin/python" - <<'PY'
import os, torch, ssmc, ssmc.ops
here = os.path.dirname(ssmc.__file__)
assert ssmc.find_library() == os.path.join(here, "libssmc.so"), ssmc.find_library()
assert ssmc.example_path("mamba2").startswith(os.path.join(here, "models"))
m = ssmc.load(ssmc.example_path("mamba2"), dims={"H": 2, "P": 4, "N": 8}, device="cpu")
y = m(x=torch.randn(2, 5, 2, 4), dt=torch.randn(2, 5, 2), B=torch.randn(2, 5, 8), C=torch.randn(2, 5, 8),
      A_log=torch.randn(2), D=torch.randn(2), dt_bias=torch.randn(2))["y"]
q = torch.randn(1, 6, 2, 4)
o, h = ssmc.ops.chunk_simple_gla(q, q, q, torch.nn.functional.logsigmoid(q[..., 0]), output_final_state=True)
assert y.shape == (2, 5, 2, 4) and o.shape == (1, 6, 2, 4) and h.shape == (1, 2, 4, 4)
print("python install: ok:", ssmc.find_library())
PY
