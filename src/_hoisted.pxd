# cython: language_level=3
"""The products over many steps that the cell kernels hoist out of their time-step loops.

A product that needs no result of the step before it runs once over all the steps it covers
instead of once per step: forward's ``X @ Wx`` and backward's ``X.T @ dA`` and ``dA @ Wx.T``
are single GEMMs on the (T*N, W) matrices of ``src/_layout.pxd``, written out where they are
called. The hidden weight's gradient pairs each step's dA with the state of the step before,
which the layouts make one GEMM only where the rows go by step; it is here, shared by the
cells.
"""
from cython cimport floating

from _blas cimport NO_TRANS, TRANS, gemm


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
