# cython: language_level=3
"""The products over many steps that the cell kernels hoist out of their time-step loops.

A product that needs no result of the step before it runs once over all the steps it covers
instead of once per step: forward's ``X @ Wx`` and backward's ``X.T @ dA`` and ``dA @ Wx.T``
are single GEMMs on the (T*N, W) matrices of ``src/_layout.pxd``, written out where they are
called. The hidden weight's gradient pairs each step's dA with the state of the step before,
which the layouts make one GEMM only where the rows go by step; it is here, shared by the
cells, as are the input-side products of the RNN and the LSTM (``input_product``,
``add_input_grads``), whose gate buffer is one (.., G*H) array, and the bias's gradient
(``add_column_sums``).
"""
from cython cimport floating

from _blas cimport NO_TRANS, TRANS, gemm
from _layout cimport Walk


cdef inline void add_hidden_weight_grad(bint by_step, int n_steps, int n_batch, int n_hidden,
                                        int n_cols, const floating* h0, const floating* h,
                                        const floating* dA, Py_ssize_t width,
                                        floating* dWh) noexcept nogil:
    """dWh (H, n_cols) += sum_t h_{t-1}.T @ dA_t, with h_{-1} = h0 (N, H) C-contiguous.

    h (width H) and dA (width ``width`` >= n_cols: its first n_cols columns are used) are
    per-step buffers in the caller's layout, their rows in time-major order if by_step. Then
    h[:-1] and dA[1:] are one GEMM over (T-1)*N rows. Batch-major, the rows of h_{t-1} and dA_t
    pair up only within a sequence: one GEMM per sequence over its T-1 steps (no row is added
    and then taken away: the result is exact).
    """
    cdef Py_ssize_t H = n_hidden, n, T = n_steps
    if by_step:
        # dWh += h0.T @ dA[0]     (H,C) += (N,H)'(N,C)
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, n_batch,
             1, h0, n_hidden, dA, <int> width, 1, dWh, n_cols)
        # dWh += h[:-1].T @ dA[1:]     (H,C) += ((T-1)*N,H)'((T-1)*N,C)
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, (n_steps - 1) * n_batch,
             1, h, n_hidden, dA + n_batch * width, <int> width, 1, dWh, n_cols)
        return
    # dWh += h0.T @ dA[:, 0]     (H,C) += (N,H)'(N,C); the rows of dA[:, 0] are T*width apart
    gemm(TRANS, NO_TRANS, n_hidden, n_cols, n_batch,
         1, h0, n_hidden, dA, <int> (T * width), 1, dWh, n_cols)
    if n_steps == 1:
        return
    for n in range(n_batch):
        # dWh += h[n, :-1].T @ dA[n, 1:]     (H,C) += (T-1,H)'(T-1,C)
        gemm(TRANS, NO_TRANS, n_hidden, n_cols, n_steps - 1,
             1, h + n * T * H, n_hidden, dA + (n * T + 1) * width, <int> width, 1, dWh, n_cols)


cdef inline void input_product(const Walk* w, int n_cols, const floating* x, const floating* Wx,
                               const floating* b, floating* A) noexcept nogil:
    """A = X @ Wx + b over all the steps of w, or A = X @ Wx where b is NULL: A and x are
    per-step buffers (widths C = n_cols and D) in the caller's layout, Wx (D, C), b (C,)."""
    cdef Py_ssize_t i
    cdef int j
    if b != NULL:
        for i in range(<Py_ssize_t> w.n_steps * w.n_batch):
            for j in range(n_cols):
                A[i * n_cols + j] = b[j]
    # A += X @ Wx     (T*N,C) += (T*N,D)(D,C), rows in the caller's order
    gemm(NO_TRANS, NO_TRANS, w.n_steps * w.n_batch, n_cols, w.n_input,
         1, x, w.n_input, Wx, n_cols, 1 if b != NULL else 0, A, n_cols)


cdef inline void add_column_sums(Py_ssize_t n_rows, int n_cols, const floating* dA,
                                 floating* db) noexcept nogil:
    """db (C,) += dA.sum(axis=0) over n_rows rows of C = n_cols back to back."""
    cdef Py_ssize_t i
    cdef int j
    for i in range(n_rows):
        for j in range(n_cols):
            db[j] += dA[i * n_cols + j]


cdef inline void add_input_grads(const Walk* w, int n_cols, const floating* x, const floating* h0,
                                 const floating* h, const floating* dA, const floating* Wx,
                                 floating* dx, floating* dWx, floating* dWh,
                                 floating* db) noexcept nogil:
    """The gradients of the products over all the steps of w from dA, a per-step buffer of
    width C = n_cols = G*H (x and dx width D, h width H; all in the caller's layout):
    dWx (D, C), dWh (H, C), db (C,) added to, dx overwritten."""
    # dWx += X.T @ dA     (D,C) += (T*N,D)'(T*N,C)
    gemm(TRANS, NO_TRANS, w.n_input, n_cols, w.n_steps * w.n_batch,
         1, x, w.n_input, dA, n_cols, 1, dWx, n_cols)
    # dWh += sum_t h_{t-1}.T @ dA[t]     (H,C) += (N,H)'(N,C) summed over t
    add_hidden_weight_grad(w.by_step, w.n_steps, w.n_batch, w.n_hidden, n_cols,
                           h0, h, dA, n_cols, dWh)
    # db += dA.sum(axis=(0, 1))
    add_column_sums(<Py_ssize_t> w.n_steps * w.n_batch, n_cols, dA, db)
    # dx = dA @ Wx.T     (T*N,D) = (T*N,C)(D,C)'
    gemm(NO_TRANS, TRANS, w.n_steps * w.n_batch, w.n_input, n_cols,
         1, dA, n_cols, Wx, n_cols, 0, dx, w.n_input)
