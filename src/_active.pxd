# cython: language_level=3
"""Sequences of unequal lengths in one call: the rows each step runs.

A batch whose sequences have lengths L_0 >= L_1 >= ... >= L_{N-1} (sorted, longest first) runs
step t on its first active[t] = #{n : L_n > t} rows only, a count that never grows with t: the
sequences still running at step t are a prefix of those that ran at step t-1, so the per-step
products and elementwise passes simply take fewer rows, and no work is done for the padding.
The buffers are time-major (T, N, W), so step t's active rows are one block of active[t] * W
elements. The padded rows of a buffer (n >= active[t]) hold no step's values: the kernels set
those of h and of the gradients of the pre-activations to zero, so the products over all
steps (X @ Wx, X.T @ dA, h_{t-1}.T @ dA, dA @ Wx.T) read zeros there and the padding adds
nothing to the weight gradients and gives dx = 0.

    active       active[t]          (T,)  rows step t runs; NULL: all N rows, every step
    n_run        run_steps(...)           steps with at least one active row (the longest length)
    n_full       full_steps(...)          leading steps where all N rows run (the shortest length)

The products over all steps take the rows that run only: the first n_full steps, all of whose
rows run, as one product as before, then each later step's active rows as one product each
(``product_by_steps``, ``sum_by_steps``, ``hidden_grad_by_steps``).
"""
from cython cimport floating
from libc.string cimport memset

from _blas cimport NO_TRANS, TRANS, gemm
from _hoisted cimport add_hidden_weight_grad, product_by_rows, sum_by_rows
from _interrupt cimport Watch


cdef inline int rows_at(const int* active, Py_ssize_t t, int n_batch) noexcept nogil:
    """The rows step t runs: active[t], or all n_batch where active is NULL."""
    return n_batch if active == NULL else active[t]


cdef inline int run_steps(const int* active, int n_steps) noexcept nogil:
    """The steps that run at least one row: the longest length (active never grows)."""
    cdef int t = n_steps
    if active == NULL:
        return n_steps
    while t > 0 and active[t - 1] == 0:
        t -= 1
    return t


cdef inline void zero_inactive(floating* buf, Py_ssize_t width, int n_steps, int n_batch,
                               const int* active) noexcept nogil:
    """Rows active[t] .. N-1 of each step t of the time-major (T, N, width) buf set to zero
    (nothing where active is NULL)."""
    cdef Py_ssize_t t
    if active == NULL:
        return
    for t in range(n_steps):
        if active[t] < n_batch:
            memset(buf + (t * n_batch + active[t]) * width, 0,
                   (n_batch - active[t]) * width * sizeof(floating))


cdef inline const int* active_rows(object active, bint time_major, int n_steps,
                                   int n_batch) except? NULL:
    """The (T,) int32 counts ``active`` as a pointer (NULL for None), checked: T of them, each
    in 0 .. N, never growing, over time-major buffers (a ValueError otherwise). The caller
    keeps ``active`` alive."""
    cdef const int[::1] counts
    cdef Py_ssize_t t
    if active is None:
        return NULL
    if not time_major:
        raise ValueError("active rows need time-major buffers")
    counts = active
    if counts.shape[0] != n_steps:
        raise ValueError(f"active must have shape (T,) = ({n_steps},), got ({counts.shape[0]},)")
    for t in range(n_steps):
        if counts[t] < 0 or counts[t] > n_batch or (t and counts[t] > counts[t - 1]):
            raise ValueError("active must count 0 .. N rows per step, never growing")
    return &counts[0]


cdef inline void zero_steps(floating* buf, Py_ssize_t step, int t_first,
                            int n_steps) noexcept nogil:
    """Steps t_first .. n_steps - 1 of the time-major buf, step elements each, set to zero."""
    if t_first < n_steps:
        memset(buf + t_first * step, 0, (n_steps - t_first) * step * sizeof(floating))


cdef inline int full_steps(const int* active, int n_steps, int n_batch) noexcept nogil:
    """The leading steps that run all n_batch rows (all n_steps where active is NULL)."""
    cdef int t = 0
    if active == NULL:
        return n_steps
    while t < n_steps and active[t] == n_batch:
        t += 1
    return t


cdef inline void product_by_steps(Watch* w, const int* active, int n_steps, int n_batch,
                                  bint trans_b, int n, int k, floating alpha, const floating* a,
                                  int lda, const floating* b, int ldb, floating beta, floating* c,
                                  int ldc) noexcept nogil:
    """``product_by_rows`` (C = alpha * A @ op(B) + beta * C) over the rows that run of the
    n_steps time-major steps of n_batch rows each of A and C; the other rows of C are left as
    they were."""
    cdef int n_full = full_steps(active, n_steps, n_batch)
    cdef Py_ssize_t t, N = n_batch
    product_by_rows(w, trans_b, n_full * n_batch, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    for t in range(n_full, n_steps):
        product_by_rows(w, trans_b, active[t], n, k, alpha, a + t * N * lda, lda, b, ldb,
                        beta, c + t * N * ldc, ldc)


cdef inline void sum_by_steps(Watch* w, const int* active, int n_steps, int n_batch, int m,
                              int n, floating alpha, const floating* a, int lda,
                              const floating* b, int ldb, floating* c, int ldc) noexcept nogil:
    """``sum_by_rows`` (C += alpha * A.T @ B) over the rows that run of the n_steps time-major
    steps of n_batch rows each of A and B."""
    cdef int n_full = full_steps(active, n_steps, n_batch)
    cdef Py_ssize_t t, N = n_batch
    sum_by_rows(w, m, n, n_full * n_batch, alpha, a, lda, b, ldb, c, ldc)
    for t in range(n_full, n_steps):
        sum_by_rows(w, m, n, active[t], alpha, a + t * N * lda, lda, b + t * N * ldb, ldb,
                    c, ldc)


cdef inline void hidden_grad_by_steps(Watch* w, const int* active, bint by_step, int n_steps,
                                      int n_batch, int n_hidden, int n_cols, const floating* h0,
                                      const floating* h, const floating* dA, Py_ssize_t width,
                                      floating* dWh) noexcept nogil:
    """``add_hidden_weight_grad`` (dWh += sum_t h_{t-1}.T @ dA_t) over the rows that run (the
    buffers time-major where active is not NULL)."""
    cdef int n_full = full_steps(active, n_steps, n_batch), t_first = n_full
    cdef Py_ssize_t t, N = n_batch, H = n_hidden
    if n_full:
        add_hidden_weight_grad(w, by_step, n_full, n_batch, n_hidden, n_cols, h0, h, dA, width,
                               dWh)
    elif n_steps:
        # dWh += h0[:a].T @ dA[0, :a]     (H,C) += (a,H)'(a,C), a = active[0]
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, active[0],
             1, h0, n_hidden, dA, <int> width, 1, dWh, n_cols)
        t_first = 1
    for t in range(t_first, n_steps):
        # dWh += h[t-1, :a].T @ dA[t, :a]     (H,C) += (a,H)'(a,C), a = active[t]
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, active[t],
             1, h + (t - 1) * N * H, n_hidden, dA + t * N * width, <int> width, 1, dWh, n_cols)
