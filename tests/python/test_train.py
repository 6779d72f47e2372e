"""test_train.py: examples/train_lm.py runs a few steps with every mixer
(ssmc layers, the CPU) and writes its loss log and its picture."""
import csv
import os
import subprocess
import sys

import pytest

from ssmc import _lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(not _lib.library().has_grad, reason="training needs the gradient API (ssmc_backward)")
@pytest.mark.parametrize("mixer", ["gdn", "gla", "mamba2"])
def test_train_lm_runs(tmp_path, mixer):
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_lm.py"), "--steps", "4", "--eval-every", "2",
           "--batch", "2", "--seq", "16", "--d-model", "16", "--head-dim", "4", "--mixer", mixer,
           "--out", str(tmp_path), "--plot", str(tmp_path / "loss.png")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = list(csv.DictReader(open(tmp_path / "loss_ssmc_cpu.csv")))
    assert [int(x["step"]) for x in rows] == [1, 2, 3, 4]
    assert all(0 < float(x["train"]) < 10 for x in rows) and rows[1]["held_out"] and rows[3]["held_out"]
    assert (tmp_path / "loss.png").stat().st_size > 1000
