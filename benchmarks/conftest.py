"""Shared set-up of the pytest-benchmark suites of the time-step loop.

Run (from the repository root; ``python -m pytest`` alone collects ``tests/`` only)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json

What this file does:

- collects ``bench_*.py`` (pytest's default pattern is ``test_*.py``);
- runs everything on one thread: ``OPENBLAS_NUM_THREADS=1`` (set here, before NumPy is
  imported, unless already set) for NumPy's BLAS, which the reference uses; the kernels and the
  floor set SciPy's BLAS to one thread themselves (``fastbptt.set_blas_threads``); PyTorch gets
  ``torch.set_num_threads(1)``. Parallelism is measured separately, by ``bench_threads.py``;
- chooses the number of rounds of each benchmark from one timed call, so that each takes about
  ``--bench-budget`` seconds (at least 5 rounds; 3 for the calls of case L, over 0.25 s): the
  default run stays affordable on 2 cores (about 6 minutes idle; ``--bench-cases S,C,M`` for a
  quick one);
- stores in each benchmark's ``extra_info`` what ``report.py`` needs (cell, case, dtype, pass,
  implementation, and the 1-minute load average when it ran), and in the JSON's
  ``machine_info`` the library versions, the BLAS thread settings, the load at start and end,
  and the command line.
"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy is imported (it is not yet)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastbptt  # noqa: E402
from fastbptt.benchmarking import CASES, import_torch  # noqa: E402

# the hidden-state cells; Jordan's network is timed by benchmarks/jordan_interleaved.py
CELLS = tuple(name for name, cell in fastbptt.CELLS.items() if not cell.output_feedback)

DTYPES = {"float32": np.float32, "float64": np.float64}
DTYPE_IDS = {"float32": "f32", "float64": "f64"}
MIN_ROUNDS = 5
MIN_ROUNDS_LONG = 3
MAX_ROUNDS = 2000
_LOAD_AT_START = os.getloadavg()


def pytest_addoption(parser):
    group = parser.getgroup("fastbptt benchmarks")
    group.addoption("--bench-cells", default=",".join(CELLS),
                    help="comma-separated cells to time (default: all)")
    group.addoption("--bench-cases", default=",".join(CASES),
                    help="comma-separated cases among " + ",".join(CASES) + " (default: all)")
    group.addoption("--bench-dtypes", default="float32,float64",
                    help="comma-separated dtypes (default: float32,float64)")
    group.addoption("--bench-reference-cases", default="S,C,M",
                    help="cases on which the (slow) NumPy reference is timed and its memory "
                         "measured (default: S,C,M)")
    group.addoption("--bench-thread-cases", default="S,C,M",
                    help="cases of the thread-scaling benchmark (default: S,C,M)")
    group.addoption("--bench-budget", type=float, default=0.4,
                    help="seconds of timing per benchmark, at least 5 rounds (default: 0.4)")
    group.addoption("--bench-no-torch", action="store_true",
                    help="leave PyTorch out even where it is installed")


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself, whatever its name
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _split(config, name):
    return [v for v in config.getoption(name).split(",") if v]


def selected(config, name):
    """The values of a comma-separated option, checked."""
    values = _split(config, name)
    allowed = {"--bench-cells": CELLS, "--bench-dtypes": tuple(DTYPES)}.get(name, tuple(CASES))
    for v in values:
        if v not in allowed:
            raise pytest.UsageError(f"{name}: unknown value {v!r}; choose among "
                                    f"{', '.join(allowed)}")
    return values


_TORCH = {}


def get_torch(config):
    """torch (one thread) or None where it is not installed or ``--bench-no-torch``."""
    if config.getoption("--bench-no-torch"):
        return None
    if "module" not in _TORCH:
        _TORCH["module"] = import_torch()
    return _TORCH["module"]


def torch_marks(config):
    """Marks for a PyTorch parameter: skipped (with the reason) where torch is absent."""
    if get_torch(config) is not None:
        return ()
    reason = ("--bench-no-torch" if config.getoption("--bench-no-torch")
              else "PyTorch is not installed")
    return (pytest.mark.skip(reason=reason),)


@pytest.fixture
def measure(request):
    """measure(benchmark, fn, group, **info): time ``fn`` (set up beforehand) with pytest-benchmark.

    A timed warm-up call (first-call allocations, caches), one more timed call unless the warm-up
    took over 0.1 s, then rounds of one call each, as many as fit in ``--bench-budget`` seconds:
    5 to 2000, or 3 for calls over 0.25 s (case L), whose median is steady enough and whose
    rounds are most of the suite's time. pytest-benchmark reports the median.
    """
    budget = request.config.getoption("--bench-budget")

    def run(benchmark, fn, group, **info):
        t0 = time.perf_counter()
        fn()
        one = time.perf_counter() - t0
        if one < 0.1:
            t0 = time.perf_counter()
            fn()
            one = time.perf_counter() - t0
        least = MIN_ROUNDS_LONG if one > 0.25 else MIN_ROUNDS
        rounds = int(min(MAX_ROUNDS, max(least, budget / max(one, 1e-7))))
        benchmark.group = group
        benchmark.extra_info.update(info)
        benchmark.extra_info["load_1min"] = os.getloadavg()[0]
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return run


def _blas_threads():
    """The thread counts of NumPy's and SciPy's OpenBLAS, where they can be read."""
    import ctypes
    out = {}
    seen = set()
    with open("/proc/self/maps") as maps:
        paths = [line.split()[-1] for line in maps if "openblas" in line.lower()]
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                     "openblas_get_num_threads64_", "openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                out[os.path.basename(path)] = fn()
                break
    return out


def pytest_benchmark_update_machine_info(config, machine_info):
    import platform

    import scipy
    torch = None if config.getoption("--bench-no-torch") else _TORCH.get("module")
    machine_info["fastbptt"] = {
        "version": fastbptt.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "cores": os.cpu_count(),
        "blas_threads_outside_kernels": _blas_threads(),
        "kernel_blas_threads": fastbptt._blas_threads._state["threads"],
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                               "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")},
        "load_at_start": list(_LOAD_AT_START),
        "load_at_end": list(os.getloadavg()),
        "command": " ".join([os.path.basename(sys.executable), "-m", "pytest", *sys.argv[1:]]),
        "platform": platform.platform(),
    }


def pytest_generate_tests(metafunc):
    """Parametrize the suites from the options, in the order that keeps a group's
    implementations next to each other (their timings then see the same load)."""
    config = metafunc.config
    names = metafunc.fixturenames
    if not {"time_case", "thread_case", "memory_case"} & set(names):
        return
    cells = selected(config, "--bench-cells")
    dtypes = selected(config, "--bench-dtypes")
    params, ids = [], []
    if "time_case" in names:
        cases = selected(config, "--bench-cases")
        reference_cases = selected(config, "--bench-reference-cases")
        for cell in cells:
            for case in cases:
                for dtype in dtypes:
                    for pass_ in ("fwd", "fwd+bwd"):
                        impls = ["kernel", "floor", "torch"]
                        if case in reference_cases:
                            impls.append("reference")
                        for impl in impls:
                            marks = torch_marks(config) if impl == "torch" else ()
                            params.append(pytest.param((cell, case, dtype, pass_, impl),
                                                       marks=marks))
                            ids.append(f"{cell}-{case}-{DTYPE_IDS[dtype]}-{pass_}-{impl}")
        metafunc.parametrize("time_case", params, ids=ids)
    elif "thread_case" in names:
        for cell in cells:
            for case in selected(config, "--bench-thread-cases"):
                for dtype in dtypes:
                    for impl in ("kernel", "floor"):
                        for threads in (1, 2):
                            params.append((cell, case, dtype, impl, threads))
                            ids.append(f"{cell}-{case}-{DTYPE_IDS[dtype]}-{impl}-{threads}thr")
        metafunc.parametrize("thread_case", params, ids=ids)
    else:
        reference_cases = selected(config, "--bench-reference-cases")
        for cell in cells:
            for case in selected(config, "--bench-cases"):
                for dtype in dtypes:
                    params.append((cell, case, dtype, case in reference_cases))
                    ids.append(f"{cell}-{case}-{DTYPE_IDS[dtype]}")
        metafunc.parametrize("memory_case", params, ids=ids)
