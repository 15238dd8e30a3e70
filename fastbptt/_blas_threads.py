"""How many threads BLAS may use inside a kernel call (default: one).

The kernels' BLAS calls are many small per-step products plus a few hoisted ones. OpenBLAS's
thread pool helps neither: on a busy machine its workers spin waiting for a core, and two
Python threads running kernels on independent sequences (the GIL is released) would fight
the pool for the same cores. Measured on a 2-core machine with a third process busy: RNN
forward+backward N=32, T=100, D=64, H=128 took 64 ms with OpenBLAS's default pool and 41 ms
with one thread. So each kernel call runs BLAS on one thread, and parallelism comes from
independent sequences on Python threads.

This uses ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27, which SciPy's wheels bundle):
it changes the calling thread only, so concurrent kernel calls and NumPy (its own OpenBLAS)
are not affected, and the previous value is restored after each call. Where SciPy's BLAS is not
such an OpenBLAS (another BLAS, another platform), BLAS keeps its own threading.
"""
import contextlib
import ctypes

_state = {"threads": 1, "set_local": None, "searched": False}


def _find_set_local():
    """SciPy's OpenBLAS ``openblas_set_num_threads_local``, or None."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths, key=lambda p: "scipy" not in p):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def set_blas_threads(n_threads):
    """Set how many BLAS threads each kernel call may use: an int >= 1, or None to leave BLAS's
    own setting alone. Returns whether fastbptt can control it on this installation."""
    if n_threads is not None and (not isinstance(n_threads, int) or isinstance(n_threads, bool)
                                  or n_threads < 1):
        raise ValueError(f"n_threads must be an int >= 1 or None, got {n_threads!r}")
    _state["threads"] = n_threads
    return _setter() is not None


def _setter():
    if not _state["searched"]:
        _state["set_local"] = _find_set_local()
        _state["searched"] = True
    return _state["set_local"]


@contextlib.contextmanager
def kernel_threads():
    """Run the enclosed kernel call with the chosen number of BLAS threads (this thread only)."""
    set_local = _setter()
    if set_local is None or _state["threads"] is None:
        yield
        return
    previous = set_local(_state["threads"])
    try:
        yield
    finally:
        set_local(previous)
