"""run.py: how ctest runs a file of tests/python: pytest on it, with
--gpu an exit status of 77 (ctest's "skipped") where torch sees no GPU, and
a run that collects no test counted as failed rather than passed."""
import sys

import pytest


def main(argv):
    gpu = "--gpu" in argv
    files = [a for a in argv if a != "--gpu"]
    if gpu:
        import torch
        if not torch.cuda.is_available():
            print("no GPU: torch.cuda.is_available() is False; skipped")
            return 77
    rc = pytest.main(["-q", "-rs", "-p", "no:cacheprovider"] + files)
    return 1 if rc == pytest.ExitCode.NO_TESTS_COLLECTED else int(rc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
