"""How many threads one kernel call may use: ``set_num_threads``, ``get_num_threads``,
``num_threads`` and the environment variable FASTBPTT_NUM_THREADS.

A kernel call splits its sequences into shards, one per thread, and runs the products over all
steps on every thread (``src/_shards.pxd``); the threads are OpenMP's, made once per process
and reused. The count is process-wide, as NumPy's BLAS and scikit-learn's are: by default the
cores this process may run on (``os.sched_getaffinity``), or FASTBPTT_NUM_THREADS if set;
``set_num_threads(n)`` changes it and ``with num_threads(n):`` changes it for a block.

What a call actually uses (``threads_for``):

- one thread where the call is small: a call of fewer than ``THREADED_WORK`` multiply-adds in
  its largest product (short sequences, small N or H) pays less for running alone than for
  waking and joining other threads, so it runs as it always did;
- one shard per sequence at most; one sequence (N = 1) splits each step's columns between the
  threads instead where its step is wide enough, else runs its time loop on one thread
  (``src/_columns.pxd``);
- no more than OpenMP allows the calling thread (``omp_get_max_threads``), so that
  ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` and OMP_NUM_THREADS limit it too;
- one thread while another kernel call of this process is using the threads: kernel calls
  running side by side in several Python threads (independent sequences) would otherwise each
  start a team and ask the machine for several times its cores. The first call takes the
  threads, calls that start while it runs run on one thread each;
- its share where the calling thread runs one of several calls that hold the threads together
  (``share``): a bidirectional layer's two directions at once (``fastbptt._directions``), each
  on its part of the threads, the team taken once for both.

BLAS inside a call stays on one thread per fastbptt thread (``fastbptt._blas_threads``): the
threads of the call are the parallelism, and OpenBLAS's own pool would only spin beside them.
"""
import contextlib
import operator
import os
import threading

ENV = "FASTBPTT_NUM_THREADS"

# below this many multiply-adds in a call's largest product (0.5 to 1 ms of work), the call runs
# on one thread: waking the other threads and joining them costs microseconds per parallel
# region on a quiet machine, two regions a call, and up to tens of microseconds each on a busy
# one, where a thread may wait for a core (benchmarks/RESULTS.md, "Every core")
THREADED_WORK = 1 << 23

_state = {"threads": None, "openmp": None}     # None: not looked up yet
_team = threading.Lock()      # held by the kernel call that is using the threads


class _Shares(threading.local):
    threads = 0     # this thread's share of a team held for it (``share``); 0: none


_shares = _Shares()


def available_cores():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):    # no sched_getaffinity on this platform
        return os.cpu_count() or 1


def _checked(n, name):
    if isinstance(n, bool):
        raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"{name} must be an int >= 1, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    return n


def _default():
    value = os.environ.get(ENV, "").strip()
    if not value:
        return available_cores()
    try:
        return _checked(int(value), f"the environment variable {ENV}")
    except ValueError:
        raise ValueError(f"the environment variable {ENV} must be an int >= 1, got {value!r}")\
            from None


def get_num_threads():
    """The number of threads a kernel call may use (see ``set_num_threads``)."""
    threads = _state["threads"]
    if threads is None:
        threads = _state["threads"] = _default()
    return threads


def set_num_threads(n):
    """Let each kernel call use up to ``n`` threads (an int >= 1), for the whole process.

    The default is the number of cores this process may run on, or the environment variable
    FASTBPTT_NUM_THREADS where set. A call uses fewer where it is small, has fewer sequences
    than threads, where OpenMP is limited (OMP_NUM_THREADS, threadpoolctl) or where another
    kernel call is using the threads; results are the same whatever the count, up to the order
    in which the gradients' sums are taken. Returns the previous value."""
    n = _checked(n, "n")
    previous = get_num_threads()
    _state["threads"] = n
    return previous


@contextlib.contextmanager
def num_threads(n):
    """``with fastbptt.num_threads(n):`` runs the block with ``set_num_threads(n)`` and puts the
    previous count back afterwards (process-wide, like ``set_num_threads``)."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        _state["threads"] = previous


def _openmp_threads():
    """omp_get_max_threads() of the calling thread, or 1 where the kernels were built without
    OpenMP."""
    limit = _state["openmp"]
    if limit is None:
        from ._kernels import load
        limit = _state["openmp"] = load("_cpu").openmp_max_threads
    return limit()


def threads_for(work):
    """How many threads a kernel call whose largest product is ``work`` multiply-adds may use
    now; more than one only if it holds ``_team`` (the caller releases it: ``release``)."""
    threads = _state["threads"]
    if threads is None:
        threads = get_num_threads()
    if threads == 1 or work < THREADED_WORK:
        return 1
    shared = _shares.threads
    if shared:      # the team is held for this thread and others, this thread's part
        return shared
    return _take_team(threads) or 1


def release():
    """The call that ``threads_for`` gave more than one thread is done with them."""
    if not _shares.threads:
        _team.release()


def team_threads():
    """The threads that calls holding the team together may share now: 0 where another call
    holds it or fewer than two are available, else the count (at least 2), the team taken
    (the caller releases it: ``_team.release()``)."""
    threads = get_num_threads()
    return _take_team(threads) if threads >= 2 else 0


def _take_team(threads):
    """``threads`` capped by what OpenMP allows the calling thread, with the team taken: 0 where
    fewer than two are left or another call holds the team."""
    limit = _openmp_threads()
    if limit < threads:
        threads = limit
    if threads < 2 or not _team.acquire(False):
        return 0
    return threads


@contextlib.contextmanager
def share(n):
    """Kernel calls of the calling thread in this block run on ``n`` threads where they are
    large enough (``threads_for``), a part of the team that the thread which set the shares
    holds (``team_threads``): they neither take nor release it."""
    _shares.threads = n
    try:
        yield
    finally:
        _shares.threads = 0
