# cython: language_level=3
"""What a cell kernel's call knows before its loops start: one ``Call``, made by ``begin_call``.

Every kernel of the RNN, the LSTM and the GRU, forward or backward, starts from the same things:
the sizes of its cache (``Dims``, ``src/_held.pxd``), the strides of the per-step buffers in the
caller's layout (``src/_layout.pxd``), the rows that run at each step (``src/_active.pxd``), the
threads and the shards of sequences it runs on (``src/_shards.pxd``) and the watch for Ctrl-C
(``src/_interrupt.pxd``). ``begin_call`` derives them once, holding the GIL, after the checks
every call makes (the arrays of the call have the cache's items; BLAS takes the leading
dimensions); the loops then read the fields of the ``Call``.

In an H-wide per-step buffer (h, c, dh, hn), row n of step t starts at element
``t * step + n * ld``; a buffer G*H wide (the gates, dA) multiplies both by G.
"""
from _active cimport active_rows, run_steps
from _held cimport Dims, check_itemsize
from _interrupt cimport Watch, watch
from _layout cimport check_blas_ld


cdef struct Call:
    int n_steps, n_batch       # T, N
    int n_input, n_hidden      # D, H
    bint by_step               # rows in time-major order (src/_layout.pxd)
    Py_ssize_t t_rows          # rows from step t to t+1
    Py_ssize_t n_rows          # rows from sequence n to n+1
    Py_ssize_t ld              # elements from one row of a step to the next (H wide)
    Py_ssize_t step            # elements from step t to step t+1 (H wide)
    const int* act             # rows that run at each step, or NULL: all of them
    int n_run                  # steps with a row to run
    int n_threads              # threads the call may use: one for one sequence
    int n_shards               # shards of sequences, one per thread, at most N
    Watch w                    # Ctrl-C


cdef inline Call begin_call(const Dims* d, Py_ssize_t itemsize, int n_gates, object active,
                            int n_threads) except *:
    """The ``Call`` of a kernel over a cache of sizes ``d`` whose per-step product is
    (N, H) @ (H, n_gates * H): ``active`` (T,) int32 or None (``_active.active_rows``, which
    checks it), ``n_threads`` the threads the caller allows. Raises a TypeError if ``itemsize``
    (the call's arrays') is not the cache's, a ValueError if a step's rows are too far apart for
    BLAS."""
    cdef Call c
    cdef int width = n_gates * d.n_hidden
    c.n_steps, c.n_batch = d.steps.n_steps, d.steps.n_batch
    c.n_input, c.n_hidden = d.n_input, d.n_hidden
    c.by_step = d.steps.by_step
    c.t_rows, c.n_rows = d.steps.t_rows, d.steps.n_rows
    c.ld, c.step = c.n_rows * c.n_hidden, c.t_rows * c.n_hidden
    c.act = active_rows(active, d.time_major, c.n_steps, c.n_batch)
    c.n_run = run_steps(c.act, c.n_steps)
    check_itemsize(d, itemsize)
    check_blas_ld(c.n_rows, width)
    c.w = watch(<double> c.n_batch * width * c.n_hidden)
    # one sequence: on one thread (src/_shards.pxd)
    c.n_threads = n_threads if c.n_batch > 1 else 1
    c.n_shards = c.n_threads if c.n_threads < c.n_batch else c.n_batch
    return c
