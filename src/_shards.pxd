# cython: language_level=3
"""One kernel call on several threads: the sequences split into shards, the products over all
steps split into pieces.

The N sequences of a call are independent, so a kernel splits them into ``n_shards`` shards of
consecutive sequences, shard s holding sequences ``shard_first(N, n_shards, s)`` up to the next
shard's first (``shard_of``). Each shard runs the whole time-step loop, forward or backward,
over its rows only, on its own thread, with no synchronisation between steps: its rows of every
per-step buffer start ``n0 * n_rows`` rows into the buffer and keep the step stride of the full
array (``src/_layout.pxd``), its rows of the (N, H) states and carries start at ``n0 * H``, and
the packed Wh (or Wh.T) is shared, read-only. One sequence (N = 1) is one shard: it runs on
one thread, its products over all steps included, unless its per-step product is wide enough
for its columns to be split between threads (``src/_columns.pxd``). The threads are OpenMP's
(Cython ``prange``): made once per process and reused, their count per call passed by the
caller. One shard, or one thread, runs in the calling thread without a parallel region: even a
region of one thread costs two system calls (libgomp wakes its barriers' waiters with a futex
whether or not one waits), about 0.4 us, which a short call would pay per region. Without
OpenMP the loops run one after the other in the calling thread, with the same results.

The products hoisted out of the time loop run on all threads too, each thread on its own part
of the result, so that nothing is summed across threads and a thread count always gives the
same bits (BLAS may round a part of a product otherwise than the whole, so other counts agree
to rounding):

    rows_product    C = A @ op(B) (+ C), the rows of C split: forward's X @ Wx, backward's
                    dx = dA @ Wx.T
    cols_sum        C (+)= A.T @ B, the columns of C split: dWx = X.T @ dA
    cols_hidden     dWh (+)= sum_t h_{t-1}.T @ dA_t, the columns of dWh split
    cols_bias       db (+)= dA.sum(axis=(0, 1)), the columns split

The last three write their result (beta = 0, ``src/_hoisted.pxd``) or add it into C (beta = 1):
each column of C belongs to one thread's part, which writes all of its rows, so that every
element is written whatever the thread count (a part may be empty: more threads than columns).

Each is also there as ``<name>_part(..., s, n_threads, ...)``, thread s's part of it, so that a
kernel runs several of them in one parallel region (backward's weight gradients and dx: one
region, one join, instead of four; ``grads_and_dx`` for the RNN and the LSTM).

With sequences of unequal lengths (``src/_active.pxd``; rows sorted longest first) a shard runs,
at step t, its first ``running_rows`` rows, and no step where none of its rows runs.

A backward's norms ||dL/dh_t|| are summed per shard (``shard_norms``, into a workspace where
there are several) and joined after the loop (``join_norms``).

Ctrl-C: shard 0 (and piece 0) runs in the calling thread, the first of an OpenMP team, and alone
looks for signals (``src/_interrupt.pxd``); the other threads read its watch's ``stopped`` flag
between steps and blocks and stop with it.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

from _active cimport grads_by_steps
from _blas cimport NO_TRANS, TRANS, gemm
from _held cimport hold_new, holds_nothing
from _hoisted cimport add_hidden_weight_grad, block_rows, sum_by_rows, sum_rows, zero_matrix
from _interrupt cimport Watch, interrupted, interrupted_now

cdef extern from *:
    """
    /* a read the compiler may not hoist out of a loop: the flag is set by another thread */
    static inline int fastbptt_read_flag(const int* flag) {
        return *(const volatile int*) flag;
    }
    """
    bint read_flag "fastbptt_read_flag" (const bint* flag) noexcept nogil


cdef inline Py_ssize_t shard_first(Py_ssize_t n_batch, int n_shards, int s) noexcept nogil:
    """The first sequence of shard s of n_shards (shard n_shards: n_batch); shard sizes differ
    by at most one."""
    return n_batch * s // n_shards


cdef struct Shard:
    Py_ssize_t n0, n1       # its sequences: n0 .. n1 - 1
    Py_ssize_t first        # where its rows start in an H-wide per-step buffer (G*H: G * first)


cdef inline Shard shard_of(Py_ssize_t n_batch, int n_shards, int s,
                           Py_ssize_t ld) noexcept nogil:
    """Shard s of n_shards over n_batch sequences, the rows of one step ld elements apart in an
    H-wide per-step buffer (``src/_call.pxd``)."""
    cdef Shard sh
    sh.n0 = shard_first(n_batch, n_shards, s)
    sh.n1 = shard_first(n_batch, n_shards, s + 1)
    sh.first = sh.n0 * ld
    return sh


cdef inline bint shard_interrupted(Watch* w, int s) noexcept nogil:
    """``interrupted(w)`` for shard 0 (the calling thread); the others see whether it stopped."""
    if s == 0:
        return interrupted(w)
    return read_flag(&w.stopped)


cdef inline bint piece_stopped(Watch* w, int s, bint look) noexcept nogil:
    """Before a block of a product on thread s: shard 0 looks for signals (if ``look``), the
    others see whether it stopped. ``w`` may be NULL: never."""
    if w == NULL:
        return False
    if s == 0:
        return w.stopped or (look and interrupted_now(w))
    return read_flag(&w.stopped)


cdef inline void rows_product_part(Watch* w, int s, int n_threads, bint trans_b, int m, int n,
                                   int k, floating alpha, const floating* a, int lda,
                                   const floating* b, int ldb, floating beta, floating* c,
                                   int ldc, const floating* bias) noexcept nogil:
    """Part s of n_threads of ``rows_product``: its rows of C, in blocks of ``block_rows``."""
    cdef Py_ssize_t r0 = shard_first(m, n_threads, s), r1 = shard_first(m, n_threads, s + 1)
    cdef Py_ssize_t r = r0, i, j, rows = block_rows(m, <double> n * k)
    if bias != NULL:
        for i in range(r0, r1):
            for j in range(n):
                c[i * ldc + j] = bias[j]
    while r < r1:
        if piece_stopped(w, s, r > r0):
            return
        gemm(NO_TRANS, trans_b, <int> (rows if r1 - r > rows else r1 - r), n, k,
             alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc)
        r += rows


cdef inline void rows_product(Watch* w, int n_threads, bint trans_b, int m, int n, int k,
                              floating alpha, const floating* a, int lda, const floating* b,
                              int ldb, floating beta, floating* c, int ldc,
                              const floating* bias) noexcept nogil:
    """C = alpha * A @ op(B) + beta * C, ``product_by_rows``, the m rows of C split into
    n_threads parts. If bias is not NULL, every row of C is first set to bias (n,) (then beta
    is 1: C = bias + A @ op(B))."""
    cdef int s
    if n_threads <= 1:
        rows_product_part(w, 0, 1, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias)
        return
    for s in prange(n_threads, num_threads=n_threads, schedule="static"):
        rows_product_part(w, s, n_threads, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                          ldc, bias)


cdef inline void cols_sum_part(Watch* w, int s, int n_threads, int m, int n, int k,
                               floating alpha, const floating* a, int lda, const floating* b,
                               int ldb, floating beta, floating* c, int ldc) noexcept nogil:
    """Part s of n_threads of ``cols_sum``: its columns of C, summed over the k rows in
    blocks (those of ``sum_by_rows`` for one part), the first block with beta."""
    cdef Py_ssize_t c0 = shard_first(n, n_threads, s), c1 = shard_first(n, n_threads, s + 1)
    cdef Py_ssize_t r = 0, rows = block_rows(k, <double> m * (c1 - c0))
    if c1 == c0:
        return
    if k <= 0:
        if beta == 0:
            zero_matrix(c + c0, m, <int> (c1 - c0), ldc)   # an empty sum written
        return
    while r < k:
        if piece_stopped(w, s, r > 0):
            return
        # C[:, c0:c1] = A[r:r+rows].T @ B[r:r+rows, c0:c1] + beta * C[:, c0:c1], beta 1 after
        # the first block
        gemm(TRANS, NO_TRANS, m, <int> (c1 - c0), <int> (rows if k - r > rows else k - r),
             alpha, a + r * lda, lda, b + r * ldb + c0, ldb, beta if r == 0 else 1, c + c0, ldc)
        r += rows


cdef inline void cols_sum(Watch* w, int n_threads, int m, int n, int k, floating alpha,
                          const floating* a, int lda, const floating* b, int ldb, floating beta,
                          floating* c, int ldc) noexcept nogil:
    """C = alpha * A.T @ B + beta * C (beta 0: written, 1: added into), ``sum_by_rows``
    (A (k, m), B (k, n), C (m, n)), the n columns of B and C split into n_threads parts; each
    part sums over the k rows in blocks."""
    cdef int s
    if n_threads <= 1:
        sum_by_rows(w, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    for s in prange(n_threads, num_threads=n_threads, schedule="static"):
        cols_sum_part(w, s, n_threads, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void cols_hidden_part(Watch* w, int s, int n_threads, bint by_step, int n_steps,
                                  int n_batch, int n_hidden, int n_cols, const floating* h0,
                                  const floating* h, const floating* dA, Py_ssize_t width,
                                  floating beta, floating* dWh) noexcept nogil:
    """Part s of n_threads of ``cols_hidden``: dWh[:, c0:c1] = sum_t h_{t-1}.T @ dA_t[:, c0:c1]
    + beta * dWh[:, c0:c1] for its columns c0:c1, in the blocks of ``add_hidden_weight_grad``
    (the first product, h0's, takes beta; the others add)."""
    cdef Py_ssize_t H = n_hidden, T = n_steps, n, r, k, rows
    cdef Py_ssize_t c0 = shard_first(n_cols, n_threads, s)
    cdef int cols = <int> (shard_first(n_cols, n_threads, s + 1) - c0)
    if cols <= 0:
        return
    # dWh[:, c0:c1] = h0.T @ dA_0[:, c0:c1] + beta * dWh[:, c0:c1]     (H,C) = (N,H)'(N,C)
    gemm(TRANS, NO_TRANS, n_hidden, cols, n_batch,
         1, h0, n_hidden, dA + c0, <int> (width if by_step else T * width), beta, dWh + c0,
         n_cols)
    if by_step:
        # += h[:-1].T @ dA[1:]     ((T-1)*N rows, in blocks)
        k = (T - 1) * n_batch
        rows = block_rows(k, <double> H * cols)
        r = 0
        while r < k:
            if piece_stopped(w, s, r > 0):
                return
            gemm(TRANS, NO_TRANS, n_hidden, cols, <int> (rows if k - r > rows else k - r),
                 1, h + r * H, n_hidden, dA + (n_batch + r) * width + c0, <int> width,
                 1, dWh + c0, n_cols)
            r += rows
        return
    # batch-major: per sequence n, += h[n, :-1].T @ dA[n, 1:]
    k = T - 1
    rows = block_rows(k, <double> H * cols)
    for n in range(n_batch):
        r = 0
        while r < k:
            if piece_stopped(w, s, r > 0):
                return
            gemm(TRANS, NO_TRANS, n_hidden, cols, <int> (rows if k - r > rows else k - r),
                 1, h + (n * T + r) * H, n_hidden, dA + (n * T + 1 + r) * width + c0,
                 <int> width, 1, dWh + c0, n_cols)
            r += rows


cdef inline void cols_hidden(Watch* w, int n_threads, bint by_step, int n_steps, int n_batch,
                             int n_hidden, int n_cols, const floating* h0, const floating* h,
                             const floating* dA, Py_ssize_t width, floating beta,
                             floating* dWh) noexcept nogil:
    """dWh (H, n_cols) = sum_t h_{t-1}.T @ dA_t + beta * dWh (``_hoisted.add_hidden_weight_grad``,
    same arguments), the n_cols columns split into n_threads parts."""
    cdef int s
    if n_threads <= 1:
        add_hidden_weight_grad(w, by_step, n_steps, n_batch, n_hidden, n_cols, h0, h, dA, width,
                               beta, dWh)
        return
    for s in prange(n_threads, num_threads=n_threads, schedule="static"):
        cols_hidden_part(w, s, n_threads, by_step, n_steps, n_batch, n_hidden, n_cols, h0, h,
                         dA, width, beta, dWh)


cdef inline void cols_bias_part(int s, int n_threads, Py_ssize_t n_rows, int n_cols,
                                const floating* dA, Py_ssize_t width, bint write,
                                floating* db) noexcept nogil:
    """Part s of n_threads of ``cols_bias``: its columns, each summed in row order
    (``_hoisted.sum_rows``)."""
    cdef Py_ssize_t c0 = shard_first(n_cols, n_threads, s)
    cdef Py_ssize_t c1 = shard_first(n_cols, n_threads, s + 1)
    if c1 > c0:
        sum_rows(n_rows, c1 - c0, dA + c0, width, write, db + c0)


cdef inline void cols_bias(int n_threads, Py_ssize_t n_rows, int n_cols, const floating* dA,
                           Py_ssize_t width, bint write, floating* db) noexcept nogil:
    """db (n_cols,) += dA[:, :n_cols].sum(axis=0) over n_rows rows width apart (``write``:
    db = that sum), the columns split into n_threads parts (each column summed in row order,
    whatever the split)."""
    cdef int s
    if n_threads <= 1:
        cols_bias_part(0, 1, n_rows, n_cols, dA, width, write, db)
        return
    for s in prange(n_threads, num_threads=n_threads, schedule="static"):
        cols_bias_part(s, n_threads, n_rows, n_cols, dA, width, write, db)


cdef inline void _grads_and_dx_part(Watch* w, int s, int n_threads, bint by_step, int n_steps,
                                    int n_batch, int n_input, int n_hidden, int width,
                                    const floating* x, const floating* h0, const floating* h,
                                    floating* dA, const floating* Wx, floating* dx, bint write,
                                    floating* dWx, floating* dWh, floating* db) noexcept nogil:
    """Part s of n_threads of ``grads_and_dx`` (every step's rows)."""
    cdef Py_ssize_t n_rows = <Py_ssize_t> n_steps * n_batch
    cdef floating beta = 0 if write else 1
    # dWx (+)= X.T @ dA     (D,G*H) (+)= (T*N,D)'(T*N,G*H)
    cols_sum_part(w, s, n_threads, n_input, width, <int> n_rows, 1, x, n_input, dA, width,
                  beta, dWx, width)
    # dWh (+)= sum_t h_{t-1}.T @ dA[t]     (H,G*H) (+)= (N,H)'(N,G*H) summed over t
    cols_hidden_part(w, s, n_threads, by_step, n_steps, n_batch, n_hidden, width, h0, h, dA,
                     width, beta, dWh)
    # db (+)= dA.sum(axis=(0, 1))
    cols_bias_part(s, n_threads, n_rows, width, dA, width, write, db)
    # dx = dA @ Wx.T     (T*N,D) = (T*N,G*H)(D,G*H)'
    rows_product_part(w, s, n_threads, TRANS, <int> n_rows, n_input, width, 1, dA, width, Wx,
                      width, 0, dx, n_input, NULL)


cdef inline void grads_and_dx(Watch* w, int n_threads, const int* active, int n_run,
                              bint by_step, int n_steps, int n_batch, int n_input, int n_hidden,
                              int width, const floating* x, const floating* h0,
                              const floating* h, floating* dA, const floating* Wx, floating* dx,
                              bint write, floating* dWx, floating* dWh,
                              floating* db) noexcept nogil:
    """A backward's weight gradients and dx from its dA (T*N, G*H = ``width``), for the cells
    whose dA is one block of G*H columns (the RNN, G = 1; the LSTM, G = 4): dWx (+)= X.T @ dA,
    dWh (+)= sum_t h_{t-1}.T @ dA[t], db (+)= dA.sum(axis=(0, 1)), dx = dA @ Wx.T; the weight
    gradients written (``write``: the arrays' contents not read) or added into. x, h and dx are
    per-step buffers in the caller's layout, their rows in time-major order if by_step.

    In one parallel region, thread s its part of each (one thread: no region, whose barriers
    cost a system call each); with sequences of unequal lengths
    (``active``, ``n_run`` steps with a row to run), over the rows that run, by steps, on the
    calling thread (``src/_active.pxd``: those products are not split between threads)."""
    cdef int s
    if active != NULL:
        if not w.stopped:
            grads_by_steps(w, active, by_step, n_run, n_steps, n_batch, n_input, n_hidden, width,
                           x, h0, h, dA, Wx, dx, write, dWx, dWh, db)
        return
    if n_threads <= 1:          # on this thread, without a parallel region
        if not w.stopped:
            _grads_and_dx_part(w, 0, 1, by_step, n_steps, n_batch, n_input, n_hidden, width, x,
                               h0, h, dA, Wx, dx, write, dWx, dWh, db)
        return
    for s in prange(n_threads, num_threads=n_threads, schedule="static"):
        if w.stopped:
            continue
        _grads_and_dx_part(w, s, n_threads, by_step, n_steps, n_batch, n_input, n_hidden, width,
                           x, h0, h, dA, Wx, dx, write, dWx, dWh, db)


cdef inline floating* shard_norms(floating[::1] norms, int n_shards, Py_ssize_t n_steps,
                                  Py_buffer* parts) except? NULL:
    """Where a backward's shard s of n_shards writes ||dL/dh_t|| over its rows, at
    [s * T + t]; NULL if ``norms`` (T,) is None. One shard writes ``norms`` itself; several write
    the workspace ``parts`` (n_shards, T), held on the cache's ``Buffers`` (made again only for
    more shards or steps), which ``join_norms`` gathers into ``norms`` after the loop."""
    if norms is None:
        return NULL
    if n_shards == 1:
        return &norms[0]
    if holds_nothing(parts) or parts.len < n_shards * n_steps * <Py_ssize_t> sizeof(floating):
        import numpy as np
        hold_new(parts, np.empty((n_shards, n_steps),
                                 np.float32 if floating is float else np.float64))
    return <floating*> parts.buf


cdef inline void join_norms(const floating* parts, int n_shards, Py_ssize_t n_steps,
                            floating* norms) noexcept nogil:
    """norms[t] = ||dL/dh_t|| over all rows from parts (n_shards, T), the norms over each
    shard's rows: the root of the sum of their squares."""
    cdef Py_ssize_t t
    cdef int s
    cdef double sq
    for t in range(n_steps):
        sq = 0
        for s in range(n_shards):
            sq += <double> parts[s * n_steps + t] * parts[s * n_steps + t]
        norms[t] = <floating> sqrt(sq)
