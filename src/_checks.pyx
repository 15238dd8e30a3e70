# cython: language_level=3
"""Input checks that NumPy makes slow for small arrays: which of several arrays holds a NaN or
an infinity. ``np.isfinite(a.sum())`` costs ~5 us a call however small ``a`` is, and a forward
call checks five arrays; here one call checks them all.

x - x is exactly +0.0 (all bits zero) for every finite x and NaN for NaN and infinities, so the
bits of x - x OR-ed over an array are zero exactly when all of it is finite. An integer OR may be
reordered, so the loop vectorises without -ffast-math (a float sum would not: its order of
additions is fixed); without -ffinite-math-only the compiler may not fold x - x to 0.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy


cdef bint _nonfinite_f64(const double* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double zero
    cdef uint64_t bits, bad = 0
    for i in range(n):
        zero = a[i] - a[i]
        memcpy(&bits, &zero, 8)
        bad |= bits
    return bad != 0


cdef bint _nonfinite_f32(const float* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float zero
    cdef uint32_t bits, bad = 0
    for i in range(n):
        zero = a[i] - a[i]
        memcpy(&bits, &zero, 4)
        bad |= bits
    return bad != 0


def first_nonfinite(arrays):
    """Index of the first array in ``arrays`` holding a NaN or an infinity, or -1.

    Each must be a float32 or float64 array, either 1-D and C-contiguous (``a.reshape(-1)`` of
    a C-contiguous array is one, without a copy) or 2-D with contiguous rows at any row stride
    (a state such as ``cache.hT``, a row of a batch-major (N, T, H) array), scanned row by row
    without a copy."""
    cdef const double[::1] a64
    cdef const float[::1] a32
    cdef const double[:, :] m64
    cdef const float[:, :] m32
    cdef Py_ssize_t k = 0, i
    cdef bint bad = False
    for arr in arrays:
        if arr.ndim == 2:
            if arr.itemsize == 8:
                m64 = arr
                if m64.shape[1]:
                    with nogil:
                        for i in range(m64.shape[0]):
                            bad = bad or _nonfinite_f64(&m64[i, 0], m64.shape[1])
            else:
                m32 = arr
                if m32.shape[1]:
                    with nogil:
                        for i in range(m32.shape[0]):
                            bad = bad or _nonfinite_f32(&m32[i, 0], m32.shape[1])
            if bad:
                return k
        elif arr.itemsize == 8:
            a64 = arr
            if a64.shape[0]:
                with nogil:
                    bad = _nonfinite_f64(&a64[0], a64.shape[0])
                if bad:
                    return k
        else:
            a32 = arr
            if a32.shape[0]:
                with nogil:
                    bad = _nonfinite_f32(&a32[0], a32.shape[0])
                if bad:
                    return k
        k += 1
    return -1
