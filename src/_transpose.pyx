# cython: language_level=3
"""``transposed(a)``: ``np.ascontiguousarray(a.T)`` for a matrix, made faster than NumPy's copy.

``fastbptt.torch``'s modules keep torch's weight layout, (G*H, D), and lay each weight out as the
kernels' (D, G*H) on every call, and each weight gradient back. NumPy makes such a copy one
element at a time, about one a cycle (12 us for a float32 (400, 100) matrix); here whole 8 x 8
blocks are transposed in registers (``src/_transpose.h``), several times faster in the AVX2
build (built twice like the kernels, setup.py). The copy is exact: the same bits as NumPy's.

The fast path takes a float32 or float64 matrix in native byte order whose elements lie next to
each other along each row (any row stride: a C-contiguous array or rows of a larger one); any
other input goes to NumPy, with the same result.
"""
cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef extern from "_transpose.h" nogil:
    void transpose_s(Py_ssize_t rows, Py_ssize_t cols, const float* a, Py_ssize_t lda,
                     float* b)
    void transpose_d(Py_ssize_t rows, Py_ssize_t cols, const double* a, Py_ssize_t lda,
                     double* b)

# copies of at least this many bytes release the GIL (smaller ones take less time than that)
cdef Py_ssize_t NOGIL_BYTES = 1 << 16


def transposed(a):
    """A C-contiguous array equal to ``a.T`` for a 2-D array ``a``: a new array, or ``a.T``
    itself where that is C-contiguous already, as ``np.ascontiguousarray(a.T)``."""
    cdef cnp.ndarray src, out
    cdef int type_num
    cdef Py_ssize_t rows, cols, itemsize, row_stride
    cdef cnp.npy_intp dims[2]
    if not cnp.PyArray_Check(a):
        return np.ascontiguousarray(np.asarray(a).T)
    src = <cnp.ndarray> a
    if cnp.PyArray_NDIM(src) != 2:
        return np.ascontiguousarray(a.T)
    if cnp.PyArray_IS_F_CONTIGUOUS(src):
        return a.T                      # contiguous already: NumPy's view
    type_num = cnp.PyArray_TYPE(src)
    itemsize = cnp.PyArray_ITEMSIZE(src)
    rows, cols = cnp.PyArray_DIM(src, 0), cnp.PyArray_DIM(src, 1)
    row_stride = cnp.PyArray_STRIDE(src, 0)
    if ((type_num != cnp.NPY_FLOAT and type_num != cnp.NPY_DOUBLE)
            or not cnp.PyArray_ISNOTSWAPPED(src) or not cnp.PyArray_ISALIGNED(src)
            or cnp.PyArray_STRIDE(src, 1) != itemsize or row_stride < 0
            or row_stride % itemsize != 0 or rows == 0 or cols == 0):
        return np.ascontiguousarray(a.T)
    dims[0], dims[1] = cols, rows
    out = cnp.PyArray_EMPTY(2, dims, type_num, 0)
    if rows * cols * itemsize >= NOGIL_BYTES:
        with nogil:
            _copy(type_num, rows, cols, cnp.PyArray_DATA(src), row_stride // itemsize,
                  cnp.PyArray_DATA(out))
    else:
        _copy(type_num, rows, cols, cnp.PyArray_DATA(src), row_stride // itemsize,
              cnp.PyArray_DATA(out))
    return out


cdef void _copy(int type_num, Py_ssize_t rows, Py_ssize_t cols, const void* a, Py_ssize_t lda,
                void* b) noexcept nogil:
    """b (cols, rows) = a.T, a (rows, cols) of row stride lda elements."""
    if type_num == cnp.NPY_FLOAT:
        transpose_s(rows, cols, <const float*> a, lda, <float*> b)
    else:
        transpose_d(rows, cols, <const double*> a, lda, <double*> b)
