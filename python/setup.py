"""setup.py: the ssmc package with libssmc.so and the example models inside it.

`pip install ./python` (from the checkout) runs this; SSMC_SOURCE_DIR names
the checkout when this directory has been copied elsewhere. The shared library is
the file SSMC_LIBRARY names, else it is built with CMake from the checkout
(target ssmc_shared, Release, no tests) in setuptools' build directory; it
is copied to ssmc/libssmc.so, where the package looks first after
SSMC_LIBRARY. examples/*.ssm go to ssmc/models/ (ssmc.example_path). The
package is pure Python otherwise (ctypes), so it works with any torch >= 1.13.
"""
import glob
import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("SSMC_SOURCE_DIR") or os.path.dirname(HERE)  # the checkout (python/..)


def version():
    with open(os.path.join(ROOT, "include", "ssmc.h")) as f:
        return re.search(r'#define SSMC_VERSION "([^"]+)"', f.read()).group(1)


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        pkg = os.path.join(self.build_lib, "ssmc")
        lib = os.environ.get("SSMC_LIBRARY")
        if not lib:
            build_temp = self.get_finalized_command("build").build_temp
            bdir = os.path.abspath(os.path.join(build_temp, "libssmc"))
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.check_call(["cmake", "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release", "-DSSMC_TESTS=OFF"]
                                  + gen)
            subprocess.check_call(["cmake", "--build", bdir, "--target", "ssmc_shared"])
            lib = os.path.join(bdir, "libssmc.so")
        shutil.copy2(os.path.realpath(lib), os.path.join(pkg, "libssmc.so"))
        models = os.path.join(pkg, "models")
        os.makedirs(models, exist_ok=True)
        for f in glob.glob(os.path.join(ROOT, "examples", "*.ssm")):
            shutil.copy2(f, models)


class BinaryDistribution(Distribution):
    """The wheel holds a shared library: it is tagged for this platform."""

    def has_ext_modules(self):
        return True


setup(version=version(), cmdclass={"build_py": BuildPyWithLibrary}, distclass=BinaryDistribution)
