# cython: language_level=3
"""Elman RNN kernels: the forward time-step loop and backpropagation through time.

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t),    phi in {tanh, sigmoid, relu}

Every buffer is time-major and C-contiguous, so step t is the contiguous block ``buf[t]``.
Math symbols and variables (shapes; T = n_steps, N = n_batch, D = n_input, H = n_hidden):

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
weights are accumulated into the arrays passed in.
"""
from cython cimport floating
from libc.math cimport sqrt

from _blas cimport gemm
from _vmath cimport sigmoid_, tanh_

cdef enum:
    TANH = 0
    SIGMOID = 1
    RELU = 2

NONLINEARITIES = {"tanh": TANH, "sigmoid": SIGMOID, "relu": RELU}


cdef void _phi(floating* a, Py_ssize_t size, int nonlinearity) noexcept nogil:
    """a = phi(a) in place; one loop per nonlinearity so each vectorises."""
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


cdef void _forward_step(const floating* h_prev, floating* h_t, const floating* Wh,
                        int n_batch, int n_hidden, int nonlinearity) noexcept nogil:
    # h_t += h_prev @ Wh     (N,H) += (N,H)(H,H); h_t holds x_t Wx + b
    gemm(False, False, n_batch, n_hidden, n_hidden,
         1, h_prev, n_hidden, Wh, n_hidden, 1, h_t, n_hidden)
    _phi(h_t, <Py_ssize_t> n_batch * n_hidden, nonlinearity)


def forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
            const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[::1] b,
            floating[:, :, ::1] h, int nonlinearity):
    """Fill h (T, N, H) with the hidden states. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0], n_batch = x.shape[1], n_input = x.shape[2]
    cdef int n_hidden = Wh.shape[0]
    cdef Py_ssize_t block = <Py_ssize_t> n_batch * n_hidden
    cdef Py_ssize_t i, t
    cdef int j
    cdef floating* hp = &h[0, 0, 0]
    with nogil:
        for i in range(<Py_ssize_t> n_steps * n_batch):
            for j in range(n_hidden):
                hp[i * n_hidden + j] = b[j]
        # h += X @ Wx     (T*N,H) += (T*N,D)(D,H)
        gemm(False, False, n_steps * n_batch, n_hidden, n_input,
             1, &x[0, 0, 0], n_input, &Wx[0, 0], n_hidden, 1, hp, n_hidden)
        _forward_step(&h0[0, 0], hp, &Wh[0, 0], n_batch, n_hidden, nonlinearity)
        for t in range(1, n_steps):
            _forward_step(hp + (t - 1) * block, hp + t * block, &Wh[0, 0],
                          n_batch, n_hidden, nonlinearity)


cdef void _backward_step(const floating* dh_t, const floating* h_t, floating* dA_t,
                         floating* carry, const floating* Wh, floating xi_t, floating* norm_t,
                         int n_batch, int n_hidden, int nonlinearity) noexcept nogil:
    cdef Py_ssize_t i, size = <Py_ssize_t> n_batch * n_hidden
    cdef double sq = 0
    if norm_t != NULL:
        # ||dL/dh_t|| = ||dh[t] + carry||
        for i in range(size):
            sq += (dh_t[i] + carry[i]) * (dh_t[i] + carry[i])
        norm_t[0] = <floating> sqrt(sq)
    # dA_t = (dh[t] + carry) * phi'(a_t)
    if nonlinearity == TANH:
        for i in range(size):
            dA_t[i] = (dh_t[i] + carry[i]) * (1 - h_t[i] * h_t[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            dA_t[i] = (dh_t[i] + carry[i]) * (h_t[i] * (1 - h_t[i]))
    else:
        for i in range(size):
            dA_t[i] = (dh_t[i] + carry[i]) if h_t[i] > 0 else 0
    if xi_t == 0:
        for i in range(size):
            carry[i] = 0
        return
    # carry = xi_t * dA_t @ Wh.T     (N,H) = (N,H)(H,H)'
    gemm(False, True, n_batch, n_hidden, n_hidden,
         xi_t, dA_t, n_hidden, Wh, n_hidden, 0, carry, n_hidden)


def backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] h,
             const floating[:, ::1] h0, const floating[:, :, ::1] x,
             const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[::1] xi,
             floating[:, ::1] carry, floating[:, :, ::1] dA, floating[:, :, ::1] dx,
             floating[:, ::1] dWx, floating[:, ::1] dWh, floating[::1] db, floating[::1] norms,
             int nonlinearity):
    """BPTT. carry holds dhT on entry and dL/dh0 on exit; dx is overwritten; dWx, dWh, db are
    accumulated into; norms (T,) receives ||dL/dh_t|| unless it is empty. dA (T, N, H) is
    workspace. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0], n_batch = x.shape[1], n_input = x.shape[2]
    cdef int n_hidden = Wh.shape[0]
    cdef Py_ssize_t block = <Py_ssize_t> n_batch * n_hidden
    cdef Py_ssize_t i, t
    cdef int j
    cdef floating* dAp = &dA[0, 0, 0]
    cdef bint want_norms = norms.shape[0] == n_steps
    with nogil:
        for t in range(n_steps - 1, -1, -1):
            _backward_step(&dh[t, 0, 0], &h[t, 0, 0], dAp + t * block, &carry[0, 0],
                           &Wh[0, 0], xi[t], &norms[t] if want_norms else NULL,
                           n_batch, n_hidden, nonlinearity)
        # dWx += X.T @ dA     (D,H) += (T*N,D)'(T*N,H)
        gemm(True, False, n_input, n_hidden, n_steps * n_batch,
             1, &x[0, 0, 0], n_input, dAp, n_hidden, 1, &dWx[0, 0], n_hidden)
        # dWh += h0.T @ dA[0] + h[:-1].T @ dA[1:]     (H,H) += (N,H)'(N,H) + ((T-1)*N,H)'((T-1)*N,H)
        gemm(True, False, n_hidden, n_hidden, n_batch,
             1, &h0[0, 0], n_hidden, dAp, n_hidden, 1, &dWh[0, 0], n_hidden)
        gemm(True, False, n_hidden, n_hidden, (n_steps - 1) * n_batch,
             1, &h[0, 0, 0], n_hidden, dAp + block, n_hidden, 1, &dWh[0, 0], n_hidden)
        # db += dA.sum(axis=(0, 1))
        for i in range(<Py_ssize_t> n_steps * n_batch):
            for j in range(n_hidden):
                db[j] += dAp[i * n_hidden + j]
        # dx = dA @ Wx.T     (T*N,D) = (T*N,H)(D,H)'
        gemm(False, True, n_steps * n_batch, n_input, n_hidden,
             1, dAp, n_hidden, &Wx[0, 0], n_hidden, 0, &dx[0, 0, 0], n_input)
