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
    rows         running_rows(...)        rows step t runs of a shard's sequences n0 .. n1 - 1

The products over all steps take the rows that run only: the first n_full steps, all of whose
rows run, as one product as before, then each later step's active rows as one product each
(``product_by_steps``, ``sum_by_steps``, ``hidden_grad_by_steps``).
"""
from cython cimport floating
from libc.string cimport memset

from _blas cimport NO_TRANS, TRANS, gemm
from _hoisted cimport add_hidden_weight_grad, product_by_rows, sum_by_rows, sum_rows, zero_matrix
from _interrupt cimport Watch


cdef inline int rows_at(const int* active, Py_ssize_t t, int n_batch) noexcept nogil:
    """The rows step t runs: active[t], or all n_batch where active is NULL."""
    return n_batch if active == NULL else active[t]


cdef inline int running_rows(const int* active, Py_ssize_t t, int n_batch, Py_ssize_t n0,
                             Py_ssize_t n1) noexcept nogil:
    """The rows step t runs of the shard of sequences n0 .. n1 - 1 (``src/_shards.pxd``): its
    first ones, as the rows are sorted longest first; rows_at(active, t, n_batch) - n0 clipped
    to 0 .. n1 - n0."""
    cdef Py_ssize_t rows = rows_at(active, t, n_batch) - n0
    if rows < 0:
        return 0
    return <int> (n1 - n0 if rows > n1 - n0 else rows)


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
                              const floating* b, int ldb, floating beta, floating* c,
                              int ldc) noexcept nogil:
    """``sum_by_rows`` (C = alpha * A.T @ B + beta * C, beta 0 or 1) over the rows that run of
    the n_steps time-major steps of n_batch rows each of A and B: the first product (the
    leading steps all of whose rows run, none or more) takes beta, the later steps add."""
    cdef int n_full = full_steps(active, n_steps, n_batch)
    cdef Py_ssize_t t, N = n_batch
    sum_by_rows(w, m, n, n_full * n_batch, alpha, a, lda, b, ldb, beta, c, ldc)
    for t in range(n_full, n_steps):
        sum_by_rows(w, m, n, active[t], alpha, a + t * N * lda, lda, b + t * N * ldb, ldb,
                    1, c, ldc)


cdef inline void hidden_grad_by_steps(Watch* w, const int* active, bint by_step, int n_steps,
                                      int n_batch, int n_hidden, int n_cols, const floating* h0,
                                      const floating* h, const floating* dA, Py_ssize_t width,
                                      floating beta, floating* dWh) noexcept nogil:
    """``add_hidden_weight_grad`` (dWh = sum_t h_{t-1}.T @ dA_t + beta * dWh, beta 0 or 1) over
    the rows that run (the buffers time-major where active is not NULL): the first step's
    product takes beta, the later ones add; no step (n_steps = 0) with beta 0 writes zeros."""
    cdef int n_full = full_steps(active, n_steps, n_batch), t_first = n_full
    cdef Py_ssize_t t, N = n_batch, H = n_hidden
    if n_full:
        add_hidden_weight_grad(w, by_step, n_full, n_batch, n_hidden, n_cols, h0, h, dA, width,
                               beta, dWh)
    elif n_steps:
        # dWh = h0[:a].T @ dA[0, :a] + beta * dWh     (H,C) = (a,H)'(a,C), a = active[0]
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, active[0],
             1, h0, n_hidden, dA, <int> width, beta, dWh, n_cols)
        t_first = 1
    elif beta == 0:
        zero_matrix(dWh, n_hidden, n_cols, n_cols)      # no step: an empty sum
    for t in range(t_first, n_steps):
        # dWh += h[t-1, :a].T @ dA[t, :a]     (H,C) += (a,H)'(a,C), a = active[t]
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, active[t],
             1, h + (t - 1) * N * H, n_hidden, dA + t * N * width, <int> width, 1, dWh, n_cols)


cdef inline void grads_by_steps(Watch* w, const int* active, bint by_step, int n_run,
                                int n_steps, int n_batch, int n_input, int n_hidden, int n_cols,
                                const floating* x, const floating* h0, const floating* h,
                                floating* dA, const floating* Wx, floating* dx, bint write,
                                floating* dWx, floating* dWh, floating* db) noexcept nogil:
    """The weight gradients and dx over the rows that run of a cell whose pre-activations are
    x_t Wx + h_{t-1} Wh + b (the RNN's and the LSTM's, n_cols = G*H): from dA (T, N, n_cols),
    whose padded rows are set to zero here, dWx, dWh and db are written (``write``: every
    element, zeros where no row runs) or accumulated into, and dx (T, N, D) is overwritten, zero
    in the padded rows and the steps no row runs."""
    cdef floating beta = 0 if write else 1
    zero_inactive(dA, n_cols, n_run, n_batch, active)
    # dWx (+)= X.T @ dA     (D,C) (+)= (T*N,D)'(T*N,C), the rows that run
    sum_by_steps(w, active, n_run, n_batch, n_input, n_cols,
                 1, x, n_input, dA, n_cols, beta, dWx, n_cols)
    # dWh (+)= sum_t h_{t-1}.T @ dA[t]     (H,C) (+)= (N,H)'(N,C) summed over t
    hidden_grad_by_steps(w, active, by_step, n_run, n_batch, n_hidden, n_cols,
                         h0, h, dA, n_cols, beta, dWh)
    # db (+)= dA.sum(axis=(0, 1))
    sum_rows(<Py_ssize_t> n_run * n_batch, n_cols, dA, n_cols, write, db)
    # dx = dA @ Wx.T     (T*N,D) = (T*N,C)(D,C)', the rows that run
    product_by_steps(w, active, n_run, n_batch, TRANS, n_input, n_cols,
                     1, dA, n_cols, Wx, n_cols, 0, dx, n_input)
    # the steps no row runs (time-major: the last ones) have dx = 0
    zero_inactive(dx, n_input, n_run, n_batch, active)
    zero_steps(dx, <Py_ssize_t> n_batch * n_input, n_run, n_steps)


cdef inline void input_by_steps(Watch* w, const int* active, int n_run, int n_batch, int n_cols,
                                int n_input, const floating* x, const floating* Wx,
                                const floating* b, floating* c) noexcept nogil:
    """Forward's product over all steps, C = b + X @ Wx (T, N, n_cols), over the rows that run
    of the first n_run steps (C = X @ Wx where b is NULL); the other rows of C are left as they
    were, or hold b."""
    cdef Py_ssize_t i
    cdef int j
    if b != NULL:
        for i in range(<Py_ssize_t> n_run * n_batch):
            for j in range(n_cols):
                c[i * n_cols + j] = b[j]
    # C (+)= X @ Wx     (T*N,C) (+)= (T*N,D)(D,C), the rows that run
    product_by_steps(w, active, n_run, n_batch, NO_TRANS, n_cols, n_input,
                     1, x, n_input, Wx, n_cols, 0 if b == NULL else 1, c, n_cols)
