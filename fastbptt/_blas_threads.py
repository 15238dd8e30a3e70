"""How many threads BLAS may use inside a kernel call (default: one).

The kernels' BLAS calls are many small per-step products plus a few hoisted ones. OpenBLAS's
thread pool helps neither: on a busy machine its workers spin waiting for a core, and two
Python threads running kernels on independent sequences (the GIL is released) would fight
the pool for the same cores (measured in ``benchmarks/RESULTS.md``, "Notes behind the code").
So each kernel call runs BLAS on one thread, and parallelism comes from the call's own threads
(``fastbptt._threads``: one shard of sequences per thread, each calling BLAS on one thread) and
from independent sequences on Python threads. ``set_blas_threads`` applies to calls that run on
one fastbptt thread; a call on several runs BLAS on one thread in each whatever it says (BLAS
threads inside each of ours would ask for threads times as many cores).

The thread count is looked up through SciPy's ``cython_blas`` module, whose BLAS the kernels
call, so NumPy's own OpenBLAS is never touched. OpenBLAS's thread count is
process-wide: it is set on entry to a kernel call and restored when the last concurrent kernel
call returns. Where SciPy's BLAS is not OpenBLAS (another BLAS, a platform without ``dladdr``),
BLAS keeps its own threading.
"""
import contextlib
import ctypes
import threading

from ._threads import release, threads_for

_state = {"threads": 1, "set_threads": None, "searched": False, "active": 0, "saved": None,
          "set": None}
_lock = threading.Lock()


def _openblas_controls(module_file):
    """(set, get) of the thread count of the OpenBLAS that the compiled module ``module_file``
    links, or None where it links another BLAS. Symbols looked up through the module's handle
    come from its own dependencies, so SciPy's and NumPy's copies are never mixed up.

    Loaded as a ``PyDLL``: its functions run holding the GIL. They return at once, and a
    ``CDLL`` call releases the GIL and takes it back, which with other Python threads running
    kernels is a chance to lose it to them and wait, twice per kernel call."""
    try:
        lib = ctypes.PyDLL(module_file)
    except OSError:
        return None
    for prefix, suffix in (("scipy_", ""), ("scipy_", "64_"), ("", ""), ("", "64_")):
        try:
            setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
            getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
        except AttributeError:
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], None
        getter.argtypes, getter.restype = [], ctypes.c_int
        return setter, getter
    return None


def _find_set_threads():
    """(set, get) of the thread count of SciPy's OpenBLAS, which the kernels call, or None."""
    import scipy.linalg.cython_blas as cython_blas
    return _openblas_controls(cython_blas.__file__)


@contextlib.contextmanager
def numpy_blas_threads(n_threads):
    """Run the enclosed code with NumPy's own OpenBLAS (the reference, an output layer) on
    ``n_threads`` threads, restored afterwards. Process-wide, for a whole training run or
    benchmark, not per call. None, or a NumPy without OpenBLAS, leaves it alone."""
    try:
        from numpy._core import _multiarray_umath
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath
    controls = _openblas_controls(_multiarray_umath.__file__) if n_threads else None
    if controls is None:
        yield
        return
    setter, getter = controls
    previous = getter()
    setter(int(n_threads))
    try:
        yield
    finally:
        setter(previous)


def set_blas_threads(n_threads):
    """Set how many BLAS threads each kernel call may use: an int >= 1, or None to leave BLAS's
    own setting alone. Returns whether fastbptt can control it on this installation."""
    if n_threads is not None and (not isinstance(n_threads, int) or isinstance(n_threads, bool)
                                  or n_threads < 1):
        raise ValueError(f"n_threads must be an int >= 1 or None, got {n_threads!r}")
    _state["threads"] = n_threads
    return _controls() is not None


def _controls():
    if not _state["searched"]:
        _state["set_threads"] = _find_set_threads()
        _state["searched"] = True
    return _state["set_threads"]


# OpenBLAS runs a GEMM on one thread anyway when m*n*k is below 65536 * 4 (its
# SMP_THRESHOLD_MIN times GEMM_MULTITHREAD_THRESHOLD, the defaults of SciPy's builds): a kernel
# call whose largest product is that small skips the thread bookkeeping (two library calls and a
# lock, which would show on short sequences).
SINGLE_THREADED_WORK = 65536 * 4


def largest_product(x, Wh):
    """m*n*k of the largest matrix product of a cell's kernels on x (T, N, D) and Wh (H, G*H):
    the hoisted ones, (T*N, D) @ (D, G*H) and (H, T*N) @ (T*N, G*H)."""
    n_steps, n_batch, n_input = x.shape
    return n_steps * n_batch * Wh.shape[1] * max(n_input, Wh.shape[0])


def run_kernel(kernel, x, Wh, *args, sharded=True, **kwargs):
    """Call ``kernel(*args, **kwargs)`` with the chosen number of BLAS threads; ``x`` (T, N, D)
    and ``Wh`` (H, G*H) are the call's input and hidden weight, which give the size of its
    largest matrix product (``largest_product``, computed here: this runs twice per
    forward/backward, and a call more would show on short sequences).

    OpenBLAS's count is process-wide, so the first of overlapping kernel calls (Python threads
    run them concurrently) saves it and sets ours, and the last one restores it. A plain function
    rather than a context manager: a generator-based context manager would cost more than the
    rest of the call's bookkeeping.

    The call runs on as many threads as ``fastbptt._threads.threads_for`` gives it (passed to
    the kernel as ``n_threads`` where more than one), with BLAS on one thread in each; a kernel
    that runs on one thread only (``sharded`` False) gets no ``n_threads``.
    """
    n_steps, n_batch, n_input = x.shape
    n_hidden, n_cols = Wh.shape
    work = n_steps * n_batch * n_cols * (n_input if n_input > n_hidden else n_hidden)
    if work < SINGLE_THREADED_WORK:
        return kernel(*args, **kwargs)
    n_threads = threads_for(work) if sharded else 1
    if n_threads > 1:
        try:
            if _controls() is None:
                return kernel(*args, n_threads=n_threads, **kwargs)
            _enter(1)
            try:
                return kernel(*args, n_threads=n_threads, **kwargs)
            finally:
                _exit()
        finally:
            release()
    if _state["threads"] is None or _controls() is None:
        return kernel(*args, **kwargs)
    _enter(_state["threads"])
    try:
        return kernel(*args, **kwargs)
    finally:
        _exit()


def _enter(threads):
    controls = _controls()
    with _lock:
        _state["active"] += 1
        if _state["active"] == 1 and controls is not None and threads is not None:
            _state["saved"] = controls[1]()
            _state["set"] = threads
            if _state["saved"] != threads:
                controls[0](threads)


def _exit():
    with _lock:
        _state["active"] -= 1
        if _state["active"] == 0 and _state["set"] is not None:
            if _state["saved"] != _state["set"]:
                _state["set_threads"][0](_state["saved"])
            _state["set"] = None

