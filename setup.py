"""Build the Cython kernels.

Compiled portably (no -march=native): the Hamming kernels pick the best popcount the CPU has at
run time, and the PDQ kernels must not let the compiler fuse multiply-adds
(-ffp-contract=off), or exact mode would stop being bit-identical to the C++ reference.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

COMMON_ARGS = ["-O3", "-ffp-contract=off", "-fno-fast-math"]

extensions = [
    Extension(
        "hashmatch._hamming",
        ["hashmatch/_hamming.pyx"],
        include_dirs=[numpy.get_include(), "hashmatch"],
        extra_compile_args=COMMON_ARGS + ["-fopenmp"],
        extra_link_args=["-fopenmp"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "hashmatch._imagecore",
        ["hashmatch/_imagecore.pyx"],
        include_dirs=[numpy.get_include(), "hashmatch"],
        extra_compile_args=COMMON_ARGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

# Developers may rebuild one kernel module alone: HASHMATCH_BUILD_ONLY=_hamming
_only = os.environ.get("HASHMATCH_BUILD_ONLY")
if _only:
    extensions = [e for e in extensions if e.name.endswith(_only)]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
