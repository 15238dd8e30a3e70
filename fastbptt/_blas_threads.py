"""How many threads BLAS may use inside a kernel call (default: one).

The kernels' BLAS calls are many small per-step products plus a few hoisted ones. OpenBLAS's
thread pool helps neither: on a busy machine its workers spin waiting for a core, and two
Python threads running kernels on independent sequences (the GIL is released) would fight
the pool for the same cores. Measured on a 2-core machine with a third process busy: RNN
forward+backward N=32, T=100, D=64, H=128 took 64 ms with OpenBLAS's default pool and 41 ms
with one thread. So each kernel call runs BLAS on one thread, and parallelism comes from
independent sequences on Python threads.

The thread count is looked up through SciPy's ``cython_blas`` module, whose BLAS the kernels
call, so NumPy's own OpenBLAS is never touched. OpenBLAS's thread count is
process-wide: it is set on entry to a kernel call and restored when the last concurrent kernel
call returns. Where SciPy's BLAS is not OpenBLAS (another BLAS, a platform without ``dladdr``),
BLAS keeps its own threading.
"""
import contextlib
import ctypes
import threading

_state = {"threads": 1, "set_threads": None, "searched": False, "active": 0, "saved": None}
_lock = threading.Lock()


def _find_set_threads():
    """(set, get) of the thread count of SciPy's OpenBLAS, or None where that is not OpenBLAS."""
    import scipy.linalg.cython_blas as cython_blas
    try:
        # symbols looked up through this handle come from cython_blas's own dependencies:
        # SciPy's BLAS, never NumPy's
        lib = ctypes.CDLL(cython_blas.__file__)
    except OSError:
        return None
    for prefix in ("scipy_", ""):
        try:
            setter = getattr(lib, prefix + "openblas_set_num_threads")
            getter = getattr(lib, prefix + "openblas_get_num_threads")
        except AttributeError:
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], None
        getter.argtypes, getter.restype = [], ctypes.c_int
        return setter, getter
    return None


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


@contextlib.contextmanager
def kernel_threads():
    """Run the enclosed kernel call with the chosen number of BLAS threads.

    OpenBLAS's count is process-wide, so the first of overlapping kernel calls (Python threads
    run them concurrently) saves it and sets ours, and the last one restores it.
    """
    controls = _controls()
    if controls is None or _state["threads"] is None:
        yield
        return
    setter, getter = controls
    with _lock:
        if _state["active"] == 0:
            _state["saved"] = getter()
            if _state["saved"] != _state["threads"]:
                setter(_state["threads"])
        _state["active"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["active"] -= 1
            if _state["active"] == 0 and _state["saved"] != _state["threads"]:
                setter(_state["saved"])
