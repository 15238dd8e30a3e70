# cython: language_level=3
"""The BLAS floor of a cell: exactly the BLAS calls of its kernels, with no elementwise work.

Benchmarks time it beside the kernels: a kernel cannot beat the time of its own matrix products,
so kernel / floor is what the elementwise passes and the loop's overhead cost. Every cell makes
the same calls with G = n_gates blocks (T = n_steps, N = n_batch, D = n_input, H = n_hidden):

    forward:   A = X @ Wx                   (T*N, G*H) = (T*N, D)(D, G*H)       once
               A[t] += h_{t-1} @ Wh         (N, G*H)  += (N, H)(H, G*H)          per step
    backward:  dh_{t-1} = dA[t] @ Wh.T      (N, H)     = (N, G*H)(H, G*H)'       per step
               dWx = X.T @ dA               (D, G*H)   = (T*N, D)'(T*N, G*H)     once
               dWh = H_prev.T @ dA          (H, G*H)   = (T*N, H)'(T*N, G*H)     once
               dx = dA @ Wx.T               (T*N, D)   = (T*N, G*H)(D, G*H)'     once

At N = 1 the per-step products go through GEMV, as in the kernels (``_blas.gemm`` picks it).
"""
from cython cimport floating

from _blas cimport gemm


def floor(const floating[:, :, ::1] x, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
          floating[:, :, ::1] A, floating[:, :, ::1] h, floating[:, ::1] carry,
          floating[:, :, ::1] dx, floating[:, ::1] dWx, floating[:, ::1] dWh, bint backward):
    """Run the BLAS calls of forward (and backward) of a cell with A (T, N, G*H) and
    h (T, N, H) as the buffers they read and write; the values are meaningless."""
    cdef int n_steps = x.shape[0], n_batch = x.shape[1], n_input = x.shape[2]
    cdef int n_hidden = Wh.shape[0], gh = Wh.shape[1]
    cdef Py_ssize_t block = <Py_ssize_t> n_batch * gh, hblock = <Py_ssize_t> n_batch * n_hidden
    cdef Py_ssize_t t
    cdef floating* Ap = &A[0, 0, 0]
    cdef floating* hp = &h[0, 0, 0]
    with nogil:
        # A = X @ Wx     (T*N,GH) = (T*N,D)(D,GH)
        gemm(False, False, n_steps * n_batch, gh, n_input,
             1, &x[0, 0, 0], n_input, &Wx[0, 0], gh, 0, Ap, gh)
        for t in range(1, n_steps):
            # A[t] += h[t-1] @ Wh     (N,GH) += (N,H)(H,GH)
            gemm(False, False, n_batch, gh, n_hidden,
                 1, hp + (t - 1) * hblock, n_hidden, &Wh[0, 0], gh, 1, Ap + t * block, gh)
        if backward:
            _backward_floor(x, Wx, Wh, Ap, hp, carry, dx, dWx, dWh)


cdef void _backward_floor(const floating[:, :, ::1] x, const floating[:, ::1] Wx,
                          const floating[:, ::1] Wh, floating* Ap, floating* hp,
                          floating[:, ::1] carry, floating[:, :, ::1] dx,
                          floating[:, ::1] dWx, floating[:, ::1] dWh) noexcept nogil:
    cdef int n_steps = x.shape[0], n_batch = x.shape[1], n_input = x.shape[2]
    cdef int n_hidden = Wh.shape[0], gh = Wh.shape[1]
    cdef Py_ssize_t block = <Py_ssize_t> n_batch * gh
    cdef Py_ssize_t t
    for t in range(n_steps - 1, -1, -1):
        # carry = A[t] @ Wh.T     (N,H) = (N,GH)(H,GH)'
        gemm(False, True, n_batch, n_hidden, gh,
             1, Ap + t * block, gh, &Wh[0, 0], gh, 0, &carry[0, 0], n_hidden)
    # dWx = X.T @ dA     (D,GH) = (T*N,D)'(T*N,GH)
    gemm(True, False, n_input, gh, n_steps * n_batch,
         1, &x[0, 0, 0], n_input, Ap, gh, 1, &dWx[0, 0], gh)
    # dWh = H_prev.T @ dA     (H,GH) = (T*N,H)'(T*N,GH)
    gemm(True, False, n_hidden, gh, n_steps * n_batch,
         1, hp, n_hidden, Ap, gh, 1, &dWh[0, 0], gh)
    # dx = dA @ Wx.T     (T*N,D) = (T*N,GH)(D,GH)'
    gemm(False, True, n_steps * n_batch, n_input, gh,
         1, Ap, gh, &Wx[0, 0], gh, 0, &dx[0, 0, 0], n_input)
