# cython: language_level=3
"""The products over many steps that the cell kernels hoist out of their time-step loops.

A product that needs no result of the step before it runs once over all the steps it covers
instead of once per step: forward's ``X @ Wx`` and backward's ``X.T @ dA`` and ``dA @ Wx.T``
are single GEMMs on the (T*N, W) matrices of ``src/_layout.pxd``, written out where they are
called. The hidden weight's gradient pairs each step's dA with the state of the step before,
which the layouts make one GEMM only where the rows go by step; it is here, shared by the
cells.

A product over very many rows (a sequence of a million steps) runs in blocks of rows, each at
most BLOCK_WORK (2**30) multiply-adds, tens of milliseconds, with a look for signals between
them (``src/_interrupt.pxd``), so that Ctrl-C stops even a call whose hoisted products take
seconds: ``product_by_rows`` (C = A @ op(B), rows of A and C independent) and ``sum_by_rows``
(C = A.T @ B or C += A.T @ B, a sum over rows, added block by block). The blocks depend on the
shapes alone; every product of fewer than 2**30 multiply-adds is one BLAS call, as it always was.

A backward's weight gradients are written (beta = 0 on the first product that touches each, as
BLAS users expect: the arrays may be new and uninitialised) unless the caller asked for them to
be added into its own arrays (beta = 1): the functions here that sum into C take that ``beta``
for their first product, and their later ones add. ``sum_rows`` is the same for a bias's sum.
"""
from cython cimport floating

from _blas cimport NO_TRANS, TRANS, gemm
from _interrupt cimport Watch, interrupted_now

cdef extern from *:
    """
    #define FASTBPTT_BLOCK_WORK 1073741824.0   /* 2**30 multiply-adds */
    """
    double BLOCK_WORK "FASTBPTT_BLOCK_WORK"


cdef inline Py_ssize_t block_rows(Py_ssize_t rows, double row_work) noexcept nogil:
    """Rows per block of a product over ``rows`` rows of ``row_work`` multiply-adds each: all of
    them, unless that is more than BLOCK_WORK."""
    cdef Py_ssize_t r
    if <double> rows * row_work <= BLOCK_WORK:
        return rows
    r = <Py_ssize_t> (BLOCK_WORK / row_work)
    return r if r > 1 else 1


cdef inline bint stopped(const Watch* w) noexcept nogil:
    return w != NULL and w.stopped


cdef inline void zero_matrix(floating* c, int m, int n, Py_ssize_t ldc) noexcept nogil:
    """C (m, n), rows ldc apart, set to zero: an empty sum written."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = 0


cdef inline void sum_rows(Py_ssize_t n_rows, Py_ssize_t n_cols, const floating* a,
                          Py_ssize_t lda, bint write, floating* total) noexcept nogil:
    """total (n_cols,) += a.sum(axis=0) over the n_rows rows of ``a``, lda apart, each column
    summed in row order; with ``write``, total = that sum (zeros for no rows), the first row
    stored rather than added, total's contents not read."""
    cdef Py_ssize_t i, j, first = 0
    if write:
        if n_rows <= 0:
            for j in range(n_cols):
                total[j] = 0
            return
        for j in range(n_cols):
            total[j] = a[j]
        first = 1
    for i in range(first, n_rows):
        for j in range(n_cols):
            total[j] += a[i * lda + j]


cdef inline void product_by_rows(Watch* w, bint trans_b, int m, int n, int k, floating alpha,
                                 const floating* a, int lda, const floating* b, int ldb,
                                 floating beta, floating* c, int ldc) noexcept nogil:
    """C = alpha * A @ op(B) + beta * C, ``_blas.gemm(NO_TRANS, trans_b, ...)``, in blocks of the
    m rows of A and C (``block_rows``), looking for signals between blocks; once interrupted
    (``w``), the blocks left are skipped."""
    product_in_blocks(w, block_rows(m, <double> n * k), trans_b, m, n, k, alpha, a, lda, b, ldb,
                      beta, c, ldc)


cdef inline void product_in_blocks(Watch* w, Py_ssize_t rows, bint trans_b, int m, int n, int k,
                                   floating alpha, const floating* a, int lda, const floating* b,
                                   int ldb, floating beta, floating* c, int ldc) noexcept nogil:
    """``product_by_rows`` in blocks of ``rows`` rows (the test hooks pass small ones)."""
    cdef Py_ssize_t r0 = 0
    while r0 < m:
        if stopped(w) or (r0 and interrupted_now(w)):
            return
        gemm(NO_TRANS, trans_b, <int> (rows if m - r0 > rows else m - r0), n, k,
             alpha, a + r0 * lda, lda, b, ldb, beta, c + r0 * ldc, ldc)
        r0 += rows


cdef inline void sum_by_rows(Watch* w, int m, int n, int k, floating alpha, const floating* a,
                             int lda, const floating* b, int ldb, floating beta, floating* c,
                             int ldc) noexcept nogil:
    """C = alpha * A.T @ B + beta * C, beta 0 (C written, its contents not read; zeros for
    k = 0) or 1 (added into), ``_blas.gemm(TRANS, NO_TRANS, ...)``, a sum over the k rows of
    A (k, m) and B (k, n): the first block (``block_rows``) with beta, the others added, looking
    for signals between blocks; once interrupted (``w``), the blocks left are skipped."""
    sum_in_blocks(w, block_rows(k, <double> m * n), m, n, k, alpha, a, lda, b, ldb, beta, c,
                  ldc)


cdef inline void sum_in_blocks(Watch* w, Py_ssize_t rows, int m, int n, int k, floating alpha,
                               const floating* a, int lda, const floating* b, int ldb,
                               floating beta, floating* c, int ldc) noexcept nogil:
    """``sum_by_rows`` in blocks of ``rows`` rows (the test hooks pass small ones)."""
    cdef Py_ssize_t r0 = 0
    if k <= 0:
        if beta == 0:
            zero_matrix(c, m, n, ldc)   # an empty sum written; added, it adds nothing
        return
    while r0 < k:
        if stopped(w) or (r0 and interrupted_now(w)):
            return
        gemm(TRANS, NO_TRANS, m, n, <int> (rows if k - r0 > rows else k - r0),
             alpha, a + r0 * lda, lda, b + r0 * ldb, ldb, beta if r0 == 0 else 1, c, ldc)
        r0 += rows


cdef inline void add_hidden_weight_grad(Watch* w, bint by_step, int n_steps, int n_batch,
                                        int n_hidden, int n_cols, const floating* h0,
                                        const floating* h, const floating* dA, Py_ssize_t width,
                                        floating beta, floating* dWh) noexcept nogil:
    """dWh (H, n_cols) = sum_t h_{t-1}.T @ dA_t + beta * dWh (beta 0: written, 1: added into),
    with h_{-1} = h0 (N, H) C-contiguous; the first product (h0's) takes beta, the others add.
    ``w`` (or NULL) is the call's watch for signals, looked at between blocks of rows.

    h (width H) and dA (width ``width`` >= n_cols: its first n_cols columns are used) are
    per-step buffers in the caller's layout, their rows in time-major order if by_step. Then
    h[:-1] and dA[1:] are one GEMM over (T-1)*N rows. Batch-major, the rows of h_{t-1} and dA_t
    pair up only within a sequence: one GEMM per sequence over its T-1 steps (no row is added
    and then taken away: the result is exact).
    """
    cdef Py_ssize_t H = n_hidden, n, T = n_steps
    if by_step:
        # dWh = h0.T @ dA[0] + beta * dWh     (H,C) = (N,H)'(N,C)
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, n_batch,
             1, h0, n_hidden, dA, <int> width, beta, dWh, n_cols)
        # dWh += h[:-1].T @ dA[1:]     (H,C) += ((T-1)*N,H)'((T-1)*N,C)
        sum_by_rows(w, n_hidden, n_cols, (n_steps - 1) * n_batch,
                    1, h, n_hidden, dA + n_batch * width, <int> width, 1, dWh, n_cols)
        return
    # dWh = h0.T @ dA[:, 0] + beta * dWh     (H,C) = (N,H)'(N,C); the rows of dA[:, 0] are
    # T*width apart
    gemm(TRANS, NO_TRANS, n_hidden, n_cols, n_batch,
         1, h0, n_hidden, dA, <int> (T * width), beta, dWh, n_cols)
    if n_steps == 1:
        return
    for n in range(n_batch):
        # dWh += h[n, :-1].T @ dA[n, 1:]     (H,C) += (T-1,H)'(T-1,C)
        sum_by_rows(w, n_hidden, n_cols, n_steps - 1,
                    1, h + n * T * H, n_hidden, dA + (n * T + 1) * width, <int> width, 1, dWh,
                    n_cols)
