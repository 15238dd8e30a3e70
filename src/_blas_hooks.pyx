# cython: language_level=3
"""Test-only entry points to the BLAS wrappers of ``_blas.pxd``, so that tests/ can check them
against NumPy for both dtypes, both transposes and the one-row (GEMV) path."""
from cython cimport floating

from _blas cimport gemm


def gemm_hook(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] a,
              const floating[:, ::1] b, double beta, floating[:, ::1] c):
    """c = alpha * op(a) @ op(b) + beta * c, in place (row-major; op = transpose if asked)."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
         <floating> beta, &c[0, 0], c.shape[1])
