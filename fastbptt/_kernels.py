"""Loads the compiled kernels, on first use: the AVX2+FMA build where the CPU has it, else the
baseline.

Both builds come from the same source (see setup.py) and agree with the reference to the same
tolerances. FASTBPTT_SIMD=baseline in the environment forces the baseline build. Nothing here is
loaded when ``fastbptt`` is imported, so the NumPy reference runs from the package's ``.py``
files alone; a kernel function called where the extensions were not built raises an ImportError
that says how to build them.
"""
import contextlib
import functools
import importlib
import os

BUILD_HINT = ("fastbptt's compiled kernels are not built; build them with `pip install .` "
              "(or, in a source checkout, `pip install -e .`). The NumPy reference, "
              "fastbptt.reference, runs without them.")


@contextlib.contextmanager
def _openmp_waits_asleep():
    """Loading a compiled module with OMP_WAIT_POLICY=PASSIVE in the environment, unless the
    user set it or GOMP_SPINCOUNT: the threads of a kernel call (OpenMP's, ``src/_shards.pxd``)
    then wait for work asleep instead of spinning. GNU OpenMP reads its environment once, as the
    first module linking it loads, so the variable is there for that moment only, and neither
    child processes nor another OpenMP runtime loaded later see it. Measured on a 2-core machine
    loaded 5x over (``benchmarks/RESULTS.md``, "Every core"): spinning threads, each waiting
    for the other to get a core, made a call on 2 threads take 2 to 6 times the CPU time and
    the wall time of the call on 1; asleep, the same as on 1. Where OpenMP was loaded before
    (another library's), its setting stays."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


def _import(name):
    try:
        with _openmp_waits_asleep():
            return importlib.import_module(f"fastbptt.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"fastbptt.{name}":
            raise
        raise ImportError(f"{BUILD_HINT} (missing: fastbptt.{name})") from None


@functools.lru_cache(maxsize=None)
def use_avx2():
    """True where the AVX2+FMA builds should run: the CPU has both and FASTBPTT_SIMD is not
    'baseline'."""
    if os.environ.get("FASTBPTT_SIMD", "") == "baseline":
        return False
    return bool(_import("_cpu").has_avx2_fma())


@functools.lru_cache(maxsize=None)
def load(name):
    """The module fastbptt.<name>_avx2 if it can run here, else fastbptt.<name>."""
    if use_avx2():
        try:
            with _openmp_waits_asleep():
                return importlib.import_module(f"fastbptt.{name}_avx2")
        except ImportError:
            pass
    return _import(name)


def variants(name):
    """Every build of fastbptt.<name> that can run on this CPU (for the tests)."""
    found = [_import(name)]
    if _import("_cpu").has_avx2_fma():
        try:
            found.append(importlib.import_module(f"fastbptt.{name}_avx2"))
        except ImportError:
            pass
    return found


class Kernels:
    """A compiled module of ``name``, loaded by ``load`` the first time one of its attributes
    is read; from then on its attributes are this object's own, read at no extra cost."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):      # only for attributes not copied here yet
        module = load(self._name)
        self.__dict__.update((k, v) for k, v in vars(module).items() if not k.startswith("__"))
        return getattr(module, attr)


# the compiled NaN scan of the input checks: ``checks.first_nonfinite(arrays)`` is the
# index of the first of ``arrays`` that holds NaN or inf, else -1 (``src/_checks.pyx``)
checks = Kernels("_checks")

# ``transpose.transposed(a)``: ``np.ascontiguousarray(a.T)`` of a matrix, in 8 x 8 blocks
# (``src/_transpose.pyx``), for fastbptt.torch's weights in torch's layout
transpose = Kernels("_transpose")
