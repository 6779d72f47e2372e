"""test_abi.py: the ctypes structs and constants of python/ssmc/_lib.py
against the layout a C compiler gives ssmc.h (abi_probe.c, built by CMake;
its path in SSMC_ABI_PROBE). A field added to a struct of the header fails
here until _lib.py has it."""
import ctypes
import os
import subprocess

import pytest

from ssmc import _lib

STRUCTS = {"ssmc_dim": _lib.Dim, "ssmc_options": _lib.Options, "ssmc_arg": _lib.Arg,
           "ssmc_tensor_info": _lib.TensorInfo, "ssmc_grad_info": _lib.GradInfo}
ENUMS = {"SSMC_F64": _lib.F64, "SSMC_DEVICE_CUDA": _lib.DEVICE_CUDA, "SSMC_ERR_NUMERIC": _lib.ERR_NUMERIC,
         "SSMC_ALGO_SCAN": _lib.ALGOS["scan"], "SSMC_OUTPUT": _lib.ROLE_OUTPUT, "SSMC_MAX_RANK": _lib.MAX_RANK}


def probe():
    exe = os.environ.get("SSMC_ABI_PROBE")
    if not exe:
        pytest.skip("SSMC_ABI_PROBE is not set (ctest sets it)")
    return subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split("\n")


def test_structs_match_the_header():
    seen = set()
    for line in probe():
        parts = line.split()
        if len(parts) < 3 or parts[0] == "enum":
            continue
        st = STRUCTS[parts[0]]
        if parts[1] == "-":
            # the fields _lib.py knows make a struct of the header's size (Options' _reserved
            # tail aside, zeros that a library with a longer struct reads as its defaults)
            known = type(parts[0], (ctypes.Structure,), {"_fields_": [f for f in st._fields_ if f[0] != "_reserved"]})
            assert ctypes.sizeof(known) == int(parts[2]), f"{parts[0]}: the header's struct has other fields"
            continue
        field = getattr(st, parts[1])
        assert (field.offset, field.size) == (int(parts[2]), int(parts[3])), f"{parts[0]}.{parts[1]}"
        seen.add((parts[0], parts[1]))
    for name, st in STRUCTS.items():
        for f in st._fields_:
            if f[0] != "_reserved":
                assert (name, f[0]) in seen, f"{name}.{f[0]} is not in the header (or not in abi_probe.c)"


def test_enums_match_the_header():
    for line in probe():
        parts = line.split()
        if parts and parts[0] == "enum":
            assert ENUMS[parts[1]] == int(parts[2]), parts[1]
