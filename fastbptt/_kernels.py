"""Loads a cell's compiled kernels: the AVX2+FMA build where the CPU has it, else the baseline.

Both builds come from the same source (see setup.py) and agree with the reference to the same
tolerances. FASTBPTT_SIMD=baseline in the environment forces the baseline build.
"""
import importlib
import os

from ._cpu import has_avx2_fma

USE_AVX2 = os.environ.get("FASTBPTT_SIMD", "") != "baseline" and has_avx2_fma()


def load(name):
    """The module fastbptt.<name>_avx2 if it can run here, else fastbptt.<name>."""
    if USE_AVX2:
        try:
            return importlib.import_module(f"fastbptt.{name}_avx2")
        except ImportError:
            pass
    return importlib.import_module(f"fastbptt.{name}")


def variants(name):
    """Every build of fastbptt.<name> that can run on this CPU (for the tests)."""
    found = [importlib.import_module(f"fastbptt.{name}")]
    if has_avx2_fma():
        try:
            found.append(importlib.import_module(f"fastbptt.{name}_avx2"))
        except ImportError:
            pass
    return found
