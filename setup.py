"""Builds the Cython kernels in src/ into the fastbptt package (metadata: pyproject.toml).

FASTBPTT_DEBUG=1 turns bounds and initialisation checks back on for debugging.
FASTBPTT_BUILD=_rnn,_lstm (developers) builds only those kernels, e.g. with
`python setup.py build_ext --inplace`, leaving the others' compiled modules as they are.

Compiler flags: -O3 vectorises the fused elementwise loops; -fno-trapping-math lets GCC turn
the branch-free selects of src/_vmath.pxd into SIMD blends (it changes no computed value, it only
stops treating floating-point exception flags as observable). No -ffast-math, no -march: a
wheel must run on any x86-64 and give the reference's answers.
"""
import os
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTBPTT_DEBUG", "") == "1"
ONLY = [name for name in os.environ.get("FASTBPTT_BUILD", "").split(",") if name]

extensions = [
    Extension(f"fastbptt.{Path(path).stem}", [path], extra_compile_args=["-O3", "-fno-trapping-math"])
    for path in sorted(glob("src/*.pyx"))
    if not ONLY or Path(path).stem in ONLY
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": False,
            "initializedcheck": DEBUG,
            "cdivision": True,
        },
    )
)
