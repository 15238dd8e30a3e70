# cython: language_level=3
"""Row-major BLAS for the kernels, over ``scipy.linalg.cython_blas``.

This is the only module that names ``sgemm``/``dgemm``/``sgemv``/``dgemv``. Every wrapper is
``noexcept nogil`` and fused over float32/float64 (``cython.floating``).

All matrices are row-major (C order) with a leading dimension ``ld`` (the distance in elements
between two rows). A row-major matrix is the column-major matrix of its transpose, so the
row-major product ``C = op(A) @ op(B)`` is the column-major product ``C.T = op(B).T @ op(A).T``:
the wrappers swap the operands and never copy.

``gemm`` picks the routine by shape: when ``C`` has one row (one sequence, ``N == 1``) it calls
GEMV, which OpenBLAS runs several times faster than a 1-row GEMM.

Call sites name the transposes: ``gemm(TRANS, NO_TRANS, ...)`` is ``op(A) @ op(B)`` with
``op(A) = A.T`` and ``op(B) = B``.
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

cdef enum:
    NO_TRANS = 0     # op(M) = M
    TRANS = 1        # op(M) = M.T


cdef inline void gemv(bint trans, int m, int n, floating alpha, const floating* a, int lda,
                      const floating* x, int incx, floating beta, floating* y) noexcept nogil:
    """y = alpha * op(A) @ x + beta * y, A row-major (m, n); op(A) = A.T if trans.

    y is contiguous. beta == 0 overwrites y without reading it.
    """
    cdef char ta = b'N' if trans else b'T'   # row-major A is column-major A.T
    cdef int inc_y = 1, i
    cdef int len_y = n if trans else m
    if len_y <= 0:
        return
    if beta == 0:
        # some OpenBLAS versions compute 0 * y, which keeps a NaN left in an empty buffer
        for i in range(len_y):
            y[i] = 0
    if m <= 0 or n <= 0:
        if beta != 0 and beta != 1:
            for i in range(len_y):
                y[i] = beta * y[i]
        return
    if floating is float:
        sgemv(&ta, &n, &m, &alpha, <float*> a, &lda, <float*> x, &incx, &beta, y, &inc_y)
    else:
        dgemv(&ta, &n, &m, &alpha, <double*> a, &lda, <double*> x, &incx, &beta, y, &inc_y)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C = alpha * op(A) @ op(B) + beta * C, all row-major.

    op(A) is (m, k): A is stored (m, k) with row stride lda, or (k, m) if trans_a.
    op(B) is (k, n): B is stored (k, n) with row stride ldb, or (n, k) if trans_b.
    C is (m, n) with row stride ldc. beta == 0 overwrites C without reading it.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        # an empty sum; BLAS itself would reject the leading dimensions of empty operands
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if m == 1:
        # c (1, n) = alpha * a (1, k) @ op(B) + beta * c: one GEMV;
        # a's elements are lda apart if trans_a
        gemv(not trans_b, n if trans_b else k, k if trans_b else n, alpha, b, ldb,
             a, lda if trans_a else 1, beta, c)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda, &beta, c, &ldc)
