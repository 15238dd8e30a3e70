# cython: language_level=3
"""What a cell kernel's call knows before its loops start: one ``Call``, made by ``begin_call``.

Every kernel of the RNN, the LSTM and the GRU, forward or backward, starts from the same things:
the sizes of its cache (``Dims``, ``src/_held.pxd``), the strides of the per-step buffers in the
caller's layout (``src/_layout.pxd``), the rows that run at each step (``src/_active.pxd``), the
threads and the shards of sequences it runs on (``src/_shards.pxd``) and the watch for Ctrl-C
(``src/_interrupt.pxd``). ``begin_call`` derives them once, holding the GIL, after the checks
every call makes (the arrays of the call have the cache's items; BLAS takes the leading
dimensions); the loops then read the fields of the ``Call``.

The kernels' arguments, alike in every cell (shapes are checked by the caller; N >= 1):

    forward(bufs, x, active=None, n_threads=1)
    backward(bufs, dh, xi, carries, dx, weight_grads, norms=None, [overwrite_cache,]
             write_weight_grads=False, active=None, n_threads=1)

bufs holds the cache's arrays (its ``Buffers``). x is the cache's x and dh, dx are in its
layout: (N, T, .), or (T, N, .) if time-major. active (T,) int32, time-major only: step t runs
its first active[t] rows, the other rows of the states are set to zero, a row's carries wait
unchanged until its last step, and padded rows give no gradient (their dx is zero). n_threads:
the threads the call may use, one shard of sequences each. xi (T,): the truncation multipliers
(``src/_truncation.pxd``). carries (N, H) hold the gradients into the final states on entry
(dhT, ...) and those into the initial ones on exit (dL/dh0, ...); dx is overwritten; the arrays
of weight_grads are accumulated into, or with write_weight_grads written (every element, as a
BLAS product with beta = 0 writes C: new uninitialised arrays may be passed); norms (T,) receives
||dL/dh_t|| unless it is None.

In an H-wide per-step buffer (h, c, dh, hn), row n of step t starts at element
``t * step + n * ld``; a buffer G*H wide (the gates, dA) multiplies both by G.

Sequences of unequal lengths (``active``, time-major buffers of sequences sorted by length,
longest first; ``src/_active.pxd``): step t runs its first active[t] rows only, and the products
over all steps take the rows that run; the padded rows of the states and of the
pre-activations' gradients are set to zero. On several threads (``n_threads``,
``src/_shards.pxd``) each shard runs, at step t, those of its rows that run (its first ones:
``rows_forward``, ``rows_backward``, which also say when Ctrl-C stops the loop), and skips a
step that runs none of them; with ``active`` the products over all steps run by steps on the
calling thread, not split between threads (``input_product`` for forward's X @ Wx). One
sequence (N = 1) has one shard; where its per-step product is wide enough, each step's columns
are split between ``n_parts`` threads instead (``src/_columns.pxd``), and the products over all
steps run on those threads.
"""
from cython cimport floating

from _active cimport active_rows, input_by_steps, run_steps, running_rows
from _blas cimport NO_TRANS
from _columns cimport column_parts, split_ended
from _held cimport Dims, check_itemsize
from _interrupt cimport Watch, raise_pending, watch
from _layout cimport check_blas_ld
from _shards cimport Shard, rows_product, shard_interrupted


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
    int n_threads              # threads the call may use: for one sequence, n_parts
    int n_parts                # threads sharing each step's columns (src/_columns.pxd)
    bint went_alone            # a split call's calling thread finished it alone
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
    # one sequence: each step's columns split between threads where it pays, else on one
    # thread (src/_columns.pxd, src/_shards.pxd)
    c.n_parts = column_parts(c.n_batch, width, n_threads)
    c.went_alone = False
    c.n_threads = n_threads if c.n_batch > 1 else c.n_parts
    c.n_shards = c.n_threads if c.n_threads < c.n_batch else c.n_batch
    return c


cdef inline int end_call(Call* c) except -1:
    """The end of a kernel call, holding the GIL again: a split call tells its module's next
    calls whether it had to go on alone (``src/_columns.pxd``); the exception of Ctrl-C, if the
    call was interrupted, is raised (``src/_interrupt.pxd``)."""
    if c.n_parts > 1:
        split_ended(c.went_alone)
    raise_pending(&c.w)
    return 0


cdef inline void input_product(Call* c, int width, const floating* x, const floating* Wx,
                               const floating* b, floating* out) noexcept nogil:
    """out = b + X @ Wx over all steps (T*N, width), or X @ Wx where b is NULL, rows in the
    caller's order: split between the call's threads (``src/_shards.pxd``); with rows that run
    (``c.act``), over those, by steps, on the calling thread (``src/_active.pxd``: those
    products are not split between threads)."""
    if c.act == NULL:
        # out = b + X @ Wx     (T*N,W) = (W,) + (T*N,D)(D,W)
        rows_product(&c.w, c.n_threads, NO_TRANS, c.n_steps * c.n_batch, width, c.n_input,
                     1, x, c.n_input, Wx, width, 1 if b != NULL else 0, out, width, b)
    else:
        input_by_steps(&c.w, c.act, c.n_run, c.n_batch, width, c.n_input, x, Wx, b, out)


cdef inline int rows_forward(Call* c, int s, const Shard* sh, Py_ssize_t t) noexcept nogil:
    """The rows shard s runs at step t of a forward (its first ones, ``running_rows``), or 0:
    stop, as none of them runs at this step or a later one (rows never grow), or the call was
    interrupted (at step 0, during the input product; from step 1 on, looked for here)."""
    cdef int rows = running_rows(c.act, t, c.n_batch, sh.n0, sh.n1)
    if rows == 0 or (shard_interrupted(&c.w, s) if t else c.w.stopped):
        return 0
    return rows


cdef inline int rows_backward(Call* c, int s, const Shard* sh, Py_ssize_t t,
                              floating* norms) noexcept nogil:
    """The rows shard s runs at step t of a backward; 0 where none of them runs (no gradient
    there, the carries wait; the shard's norm at t, unless ``norms`` is NULL, is 0); -1 to stop,
    the call interrupted."""
    cdef int rows = running_rows(c.act, t, c.n_batch, sh.n0, sh.n1)
    if rows == 0:
        if norms != NULL:
            norms[t] = 0
        return 0
    if shard_interrupted(&c.w, s):
        return -1
    return rows
