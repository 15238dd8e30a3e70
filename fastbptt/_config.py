"""``fastbptt.show_config()``: how this installation was built and runs, as NumPy's.

What a bug report or a benchmark needs next to its numbers: fastbptt's version and place, which
build of the kernels runs (the AVX2+FMA one or the baseline, and why), the BLAS that SciPy
links (the kernels call it through ``scipy.linalg.cython_blas``) as built and as it runs (its
core type, its thread count), and the thread settings: fastbptt's own, the environment's, the
cores the process may use. Reading it loads the compiled CPU check and one kernel module, never
torch.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys
from typing import Any, Dict, List, Optional

ENVIRONMENT = ("FASTBPTT_SIMD", "FASTBPTT_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")


def _kernels_build() -> Dict[str, Any]:
    """Which build of the kernels runs here, and what decided it."""
    from . import _kernels

    avx2_present = importlib.util.find_spec("fastbptt._lstm_avx2") is not None
    try:
        cpu_has = bool(_kernels._import("_cpu").has_avx2_fma())
        running = _kernels.load("_lstm").__name__
    except ImportError:
        return {"built": False, "running": "none: the kernels are not built (pip install .)",
                "avx2+fma build present": avx2_present, "cpu has avx2+fma": None}
    return {"built": True,
            "running": "avx2+fma" if running.endswith("_avx2") else "baseline",
            "avx2+fma build present": avx2_present,
            "cpu has avx2+fma": cpu_has,
            "FASTBPTT_SIMD": os.environ.get("FASTBPTT_SIMD")}


def _openblas_string(name: str) -> Optional[str]:
    """``openblas_<name>()`` (get_config, get_corename) of the OpenBLAS that SciPy's
    ``cython_blas`` links, or None where it is another BLAS."""
    import scipy.linalg.cython_blas as cython_blas

    try:
        lib = ctypes.PyDLL(cython_blas.__file__)
    except OSError:
        return None
    for symbol in (f"scipy_openblas_{name}", f"scipy_openblas_{name}64_",
                   f"openblas_{name}", f"openblas_{name}64_"):
        function = getattr(lib, symbol, None)
        if function is not None:
            function.restype = ctypes.c_char_p
            value = function()
            return value.decode(errors="replace").strip() if value else None
    return None


def _blas() -> Dict[str, Any]:
    """SciPy's BLAS as SciPy was built with it, and as it runs."""
    import scipy

    built: Any = None
    try:
        built = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:        # SciPy < 1.11 has no dicts mode
        built = None
    info = {"scipy": scipy.__version__}
    if isinstance(built, dict):
        info.update({"name": built.get("name"), "version": built.get("version"),
                     "built with": built.get("openblas configuration")})
    info["openblas config"] = _openblas_string("get_config")
    info["openblas core"] = _openblas_string("get_corename")
    return info


def _threads() -> Dict[str, Any]:
    from . import _blas_threads

    controls = _blas_threads._find_set_threads()
    try:
        usable: Optional[int] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):     # not on Linux
        usable = None
    from . import _threads

    try:
        openmp: Optional[int] = _threads._openmp_threads()
    except ImportError:                   # the kernels are not built
        openmp = None
    return {
        # set_num_threads(n): threads of one kernel call (fastbptt._threads)
        "threads per kernel call": _threads.get_num_threads(),
        "openmp threads allowed": openmp,
        # set_blas_threads(n): BLAS threads inside one kernel call (None: BLAS's own setting)
        "blas threads per kernel call": _blas_threads._state["threads"],
        "openblas threads now": controls[1]() if controls is not None else None,
        "cpu count": os.cpu_count(),
        "cores usable by this process": usable,
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
    }


def config() -> Dict[str, Any]:
    """The configuration as nested dicts (``show_config(mode="dicts")``)."""
    import numpy

    from . import __version__

    return {
        "fastbptt": {"version": __version__,
                     "location": os.path.dirname(os.path.abspath(__file__))},
        "Python": {"version": platform.python_version(), "executable": sys.executable,
                   "machine": platform.machine(), "system": platform.system()},
        "numpy": numpy.__version__,
        "Kernels": _kernels_build(),
        "BLAS (SciPy's, which the kernels call)": _blas(),
        "Threads": _threads(),
    }


def _lines(value: Any, indent: int = 0) -> List[str]:
    pad = "  " * indent
    if not isinstance(value, dict):
        return [f"{pad}{value}"]
    out = []
    for key, item in value.items():
        if isinstance(item, dict):
            out.append(f"{pad}{key}:")
            out += _lines(item, indent + 1)
        else:
            out.append(f"{pad}{key}: {'-' if item is None else item}")
    return out


def show_config(mode: str = "stdout") -> Optional[Dict[str, Any]]:
    """Show how fastbptt was built and runs here, as ``numpy.show_config()``.

    mode : "stdout" (the default) prints it; "dicts" returns it as nested dicts instead.

    Sections: ``fastbptt`` (version, location), ``Python``, ``numpy``, ``Kernels`` (whether
    they are built, which build runs: "avx2+fma" or "baseline", and why), ``BLAS`` (SciPy's, as
    built and as it runs: OpenBLAS's configuration and core type) and ``Threads`` (fastbptt's
    BLAS threads per kernel call, OpenBLAS's thread count, the cores the process may use, the
    environment variables that change them).
    """
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    info = config()
    if mode == "dicts":
        return info
    print("\n".join(_lines(info)))
    return None
