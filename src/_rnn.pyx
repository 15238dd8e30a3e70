# cython: language_level=3
"""Elman RNN kernels: the forward time-step loop and backpropagation through time.

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t),    phi in {tanh, sigmoid, relu}

Every per-step buffer (x, h, dh, dA, dx) is C-contiguous in the caller's layout, batch-major
(N, T, .) or time-major (T, N, .) (``time_major``), and no copy is made of either: step t is an
(N, .) matrix whose rows are n_rows * width apart (``src/_layout.pxd``). Below, buf[t] is step t
of a buffer in either layout. Math symbols and variables (shapes; T = n_steps, N = n_batch,
D = n_input, H = n_hidden):

    x_t          x[t]           (N, D)   input of step t
    h_{t-1}      h0 or h[t-1]   (N, H)   state step t receives
    a_t, h_t     h[t]           (N, H)   a_t is written there, then overwritten by phi(a_t)
    Wx, Wh, b    Wx, Wh, b      (D, H), (H, H), (H,)
    dL/dh_t      dh[t]          (N, H)   upstream gradient of step t's output
    dL/da_t      dA[t]          (N, H)   workspace of backward
    xi_t         xi[t]                   truncation multiplier of the flow from step t into h_{t-1}
    carry        carry          (N, H)   gradient reaching h_t through step t+1: dhT at the start,
                                         dL/dh0 at the end
    ||dL/dh_t||  norms[t]                Frobenius norm of dh[t] + carry, only if norms has T entries

phi'(a_t) is computed from h_t: tanh' = 1 - h^2, sigmoid' = h (1 - h), relu' = [h > 0].
Forward: one hoisted GEMM X @ Wx for all steps, then per step one GEMM and one fused phi pass.
Backward: per step one fused pass giving dA_t and one GEMM dA_t @ Wh.T (skipped where
xi_t == 0); then the weight gradients and dx as four products over all steps. Gradients of the
weights are accumulated into the arrays passed in. The elementwise passes walk one row at a time
(one flat loop over the step where its rows are back to back, time-major).
"""
from cython cimport floating
from libc.math cimport sqrt

from _blas cimport gemm
from _layout cimport add_hidden_weight_grad, check_blas_ld
from _vmath cimport sigmoid_, tanh_

cdef enum:
    TANH = 0
    SIGMOID = 1
    RELU = 2

NONLINEARITIES = {"tanh": TANH, "sigmoid": SIGMOID, "relu": RELU}


cdef void _phi(floating* a, Py_ssize_t size, int nonlinearity) noexcept nogil:
    """a[:size] = phi(a[:size]) in place; one loop per nonlinearity so each vectorises."""
    cdef Py_ssize_t i
    if nonlinearity == TANH:
        for i in range(size):
            a[i] = <floating> tanh_(a[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            a[i] = <floating> sigmoid_(a[i])
    else:
        for i in range(size):
            a[i] = a[i] if a[i] > 0 else 0


cdef void _forward_step(const floating* h_prev, Py_ssize_t ld_prev, floating* h_t, Py_ssize_t ld,
                        const floating* Wh, int n_batch, int n_hidden,
                        int nonlinearity) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of h_t ld apart."""
    cdef Py_ssize_t n
    # h_t += h_prev @ Wh     (N,H) += (N,H)(H,H); h_t holds x_t Wx + b
    gemm(False, False, n_batch, n_hidden, n_hidden,
         1, h_prev, <int> ld_prev, Wh, n_hidden, 1, h_t, <int> ld)
    if ld == n_hidden:                  # rows back to back: one flat pass
        _phi(h_t, <Py_ssize_t> n_batch * n_hidden, nonlinearity)
        return
    for n in range(n_batch):
        _phi(h_t + n * ld, n_hidden, nonlinearity)


def forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
            const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[::1] b,
            floating[:, :, ::1] h, int nonlinearity, bint time_major):
    """Fill h with the hidden states. x (N, T, D) and h (N, T, H), or (T, N, D) and (T, N, H) if
    time_major. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0] if time_major else x.shape[1]
    cdef int n_batch = x.shape[1] if time_major else x.shape[0]
    cdef int n_input = x.shape[2], n_hidden = Wh.shape[0]
    # rows from step t to t+1 and from sequence n to n+1 (src/_layout.pxd)
    cdef bint by_step = time_major or n_batch == 1   # rows in time-major order
    cdef Py_ssize_t t_rows = n_batch if by_step else 1
    cdef Py_ssize_t n_rows = 1 if by_step else n_steps
    cdef Py_ssize_t ld = n_rows * n_hidden
    cdef Py_ssize_t i, t
    cdef int j
    cdef floating* hp = &h[0, 0, 0]
    check_blas_ld(n_rows, n_hidden)
    with nogil:
        for i in range(<Py_ssize_t> n_steps * n_batch):
            for j in range(n_hidden):
                hp[i * n_hidden + j] = b[j]
        # h += X @ Wx     (T*N,H) += (T*N,D)(D,H), rows in the caller's order
        gemm(False, False, n_steps * n_batch, n_hidden, n_input,
             1, &x[0, 0, 0], n_input, &Wx[0, 0], n_hidden, 1, hp, n_hidden)
        _forward_step(&h0[0, 0], n_hidden, hp, ld, &Wh[0, 0], n_batch, n_hidden, nonlinearity)
        for t in range(1, n_steps):
            _forward_step(hp + (t - 1) * t_rows * n_hidden, ld, hp + t * t_rows * n_hidden, ld,
                          &Wh[0, 0], n_batch, n_hidden, nonlinearity)


cdef void _dA_row(const floating* dh, const floating* h, const floating* carry, floating* dA,
                  Py_ssize_t size, int nonlinearity) noexcept nogil:
    """dA = (dh + carry) * phi'(a) over size elements, phi'(a) from h = phi(a)."""
    cdef Py_ssize_t i
    if nonlinearity == TANH:
        for i in range(size):
            dA[i] = (dh[i] + carry[i]) * (1 - h[i] * h[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            dA[i] = (dh[i] + carry[i]) * (h[i] * (1 - h[i]))
    else:
        for i in range(size):
            dA[i] = (dh[i] + carry[i]) if h[i] > 0 else 0


cdef void _backward_step(const floating* dh_t, const floating* h_t, floating* dA_t, Py_ssize_t ld,
                         floating* carry, const floating* Wh, floating xi_t, floating* norm_t,
                         int n_batch, int n_hidden, int nonlinearity) noexcept nogil:
    """Rows of dh_t, h_t and dA_t are ld apart, those of carry n_hidden."""
    cdef Py_ssize_t i, n, H = n_hidden
    cdef double sq = 0
    if norm_t != NULL:
        # ||dL/dh_t|| = ||dh[t] + carry||
        for n in range(n_batch):
            for i in range(H):
                sq += (dh_t[n * ld + i] + carry[n * H + i]) * (dh_t[n * ld + i] + carry[n * H + i])
        norm_t[0] = <floating> sqrt(sq)
    # dA_t = (dh[t] + carry) * phi'(a_t)
    if ld == H:                         # rows back to back: one flat pass
        _dA_row(dh_t, h_t, carry, dA_t, n_batch * H, nonlinearity)
    else:
        for n in range(n_batch):
            _dA_row(dh_t + n * ld, h_t + n * ld, carry + n * H, dA_t + n * ld, H, nonlinearity)
    if xi_t == 0:
        for i in range(n_batch * H):
            carry[i] = 0
        return
    # carry = xi_t * dA_t @ Wh.T     (N,H) = (N,H)(H,H)'
    gemm(False, True, n_batch, n_hidden, n_hidden,
         xi_t, dA_t, <int> ld, Wh, n_hidden, 0, carry, n_hidden)


def backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] h,
             const floating[:, ::1] h0, const floating[:, :, ::1] x,
             const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[::1] xi,
             floating[:, ::1] carry, floating[:, :, ::1] dA, floating[:, :, ::1] dx,
             floating[:, ::1] dWx, floating[:, ::1] dWh, floating[::1] db, floating[::1] norms,
             int nonlinearity, bint time_major):
    """BPTT. dh, h, x, dA and dx are in one layout: (N, T, .), or (T, N, .) if time_major.
    carry holds dhT on entry and dL/dh0 on exit; dx is overwritten; dWx, dWh, db are
    accumulated into; norms (T,) receives ||dL/dh_t|| unless it is empty. dA (like h) is
    workspace. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0] if time_major else x.shape[1]
    cdef int n_batch = x.shape[1] if time_major else x.shape[0]
    cdef int n_input = x.shape[2], n_hidden = Wh.shape[0]
    cdef bint by_step = time_major or n_batch == 1   # rows in time-major order
    cdef Py_ssize_t t_rows = n_batch if by_step else 1
    cdef Py_ssize_t n_rows = 1 if by_step else n_steps
    cdef Py_ssize_t ld = n_rows * n_hidden, step = t_rows * n_hidden
    cdef Py_ssize_t i, t
    cdef int j
    cdef floating* dAp = &dA[0, 0, 0]
    cdef const floating* dhp = &dh[0, 0, 0]
    cdef const floating* hp = &h[0, 0, 0]
    cdef bint want_norms = norms.shape[0] == n_steps
    check_blas_ld(n_rows, n_hidden)
    with nogil:
        for t in range(n_steps - 1, -1, -1):
            _backward_step(dhp + t * step, hp + t * step, dAp + t * step, ld, &carry[0, 0],
                           &Wh[0, 0], xi[t], &norms[t] if want_norms else NULL,
                           n_batch, n_hidden, nonlinearity)
        # dWx += X.T @ dA     (D,H) += (T*N,D)'(T*N,H)
        gemm(True, False, n_input, n_hidden, n_steps * n_batch,
             1, &x[0, 0, 0], n_input, dAp, n_hidden, 1, &dWx[0, 0], n_hidden)
        # dWh += sum_t h_{t-1}.T @ dA[t]     (H,H) += (N,H)'(N,H) summed over t
        add_hidden_weight_grad(by_step, n_steps, n_batch, n_hidden, n_hidden,
                               &h0[0, 0], hp, dAp, n_hidden, &dWh[0, 0])
        # db += dA.sum(axis=(0, 1))
        for i in range(<Py_ssize_t> n_steps * n_batch):
            for j in range(n_hidden):
                db[j] += dAp[i * n_hidden + j]
        # dx = dA @ Wx.T     (T*N,D) = (T*N,H)(D,H)'
        gemm(False, True, n_steps * n_batch, n_input, n_hidden,
             1, dAp, n_hidden, &Wx[0, 0], n_hidden, 0, &dx[0, 0, 0], n_input)
