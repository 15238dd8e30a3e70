# cython: language_level=3
"""Test-only entry points to the BLAS wrappers of ``_blas.pxd``, to the packed products of
``_packed.pxd`` and to the blocked products of ``_hoisted.pxd``, so that tests/ can check them
against NumPy for both dtypes, both transposes, the one-row (GEMV) path, the edges of the packed
panels and blocks of any number of rows; and to where one sequence's steps are cut between
threads (``_columns.pxd``). Built like the cell kernels, for the
baseline and with AVX2+FMA (``fastbptt._blas_hooks_avx2``), where the packed products run."""
import numpy as np

from cython cimport floating

from _blas cimport gemm
from _columns cimport column_parts, part_first
from _hoisted cimport BLOCK_WORK, block_rows, product_in_blocks, sum_in_blocks
from _packed cimport FEW_GEMM, PACKED_GEMM, PACKED_NR_D, PACKED_NR_S, gemm_b, pack, packed_len

PACKED = bool(PACKED_GEMM)   # this build runs the per-step products on packed panels
FEW = bool(FEW_GEMM)         # and those of up to 4 rows on Wh as it is, unpacked


def gemm_hook(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] a,
              const floating[:, ::1] b, double beta, floating[:, ::1] c):
    """c = alpha * op(a) @ op(b) + beta * c, in place (row-major; op = transpose if asked)."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
         <floating> beta, &c[0, 0], c.shape[1])


def packed_gemm_hook(bint trans_b, double alpha, const floating[:, :] a, const floating[:, :] b,
                     double beta, floating[:, :] c, bint packed=True):
    """c = alpha * a @ op(b) + beta * c, in place, as the kernels run a per-step product: op(b)
    packed once (``pack``), then ``gemm_b`` on the panels (the AVX2 build) or BLAS; with
    packed=False, ``gemm_b`` on b as it is (the AVX2 build's few-rows loops for c of up to 4
    rows, else BLAS). The rows of a, b and c may be any number of elements apart (the last
    axis contiguous), as a step's rows are in a batch-major buffer. Returns whether b was
    packed."""
    cdef int m = c.shape[0], n = c.shape[1], k = a.shape[1]
    cdef Py_ssize_t item = sizeof(floating)
    if a.strides[1] != item or b.strides[1] != item or c.strides[1] != item:
        raise ValueError("the last axis of a, b and c must be contiguous")
    cdef int lda = <int> (a.strides[0] // item), ldb = <int> (b.strides[0] // item)
    cdef int ldc = <int> (c.strides[0] // item)
    cdef floating[::1] buf = np.empty(max(packed_len(m, k, n, item), 1),
                                      np.float32 if floating is float else np.float64)
    cdef floating* bp = pack(trans_b, m, k, n, &b[0, 0], ldb, &buf[0], buf.shape[0]) \
        if packed else NULL
    gemm_b(bp, trans_b, m, n, k, <floating> alpha, &a[0, 0], lda, &b[0, 0], ldb,
           <floating> beta, &c[0, 0], ldc)
    return bp != NULL


def rows_hook(bint trans_b, Py_ssize_t rows, double alpha, const floating[:, ::1] a,
              const floating[:, ::1] b, double beta, floating[:, ::1] c):
    """c = alpha * a @ op(b) + beta * c in blocks of ``rows`` rows (``product_by_rows``)."""
    cdef int m = c.shape[0], n = c.shape[1], k = a.shape[1]
    product_in_blocks(NULL, rows, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1],
                      &b[0, 0], b.shape[1], <floating> beta, &c[0, 0], c.shape[1])


def sum_hook(Py_ssize_t rows, double alpha, const floating[:, ::1] a, const floating[:, ::1] b,
             floating[:, ::1] c, double beta=1):
    """c = alpha * a.T @ b + beta * c (beta 0: c written, its contents not read; 1: added
    into), the sum over the rows of a and b in blocks of ``rows`` rows (``sum_by_rows``)."""
    cdef int m = c.shape[0], n = c.shape[1], k = a.shape[0]
    sum_in_blocks(NULL, rows, m, n, k, <floating> alpha, &a[0, 0], a.shape[1], &b[0, 0],
                  b.shape[1], <floating> beta, &c[0, 0], c.shape[1])


def block_rows_hook(Py_ssize_t rows, double row_work):
    """Rows per block of a product over ``rows`` rows of ``row_work`` multiply-adds each."""
    return block_rows(rows, row_work)


BLOCK = BLOCK_WORK   # the most multiply-adds of one block of a product over all steps


def column_parts_hook(int n_batch, int width, int n_threads, int itemsize):
    """Where a one-sequence kernel call of n_batch sequences allowed n_threads cuts a step's
    ``width`` columns (``src/_columns.pxd``), at the packed panels of ``itemsize``-byte items:
    [0, ..., width], one part (no split) unless one sequence and wide enough."""
    cdef int n = column_parts(n_batch, width, n_threads)
    cdef int unit = PACKED_NR_S if itemsize == 4 else PACKED_NR_D
    return [part_first(width, unit, n, s) for s in range(n + 1)]
