# cython: language_level=3
"""The elementwise nonlinearities the Elman RNN and Jordan's network choose between, applied in
place, and their codes (the kernels' ``NONLINEARITIES`` map the names to these)."""
from cython cimport floating

from _vmath cimport sigmoid_, tanh_

cdef enum:
    IDENTITY = 0
    TANH = 1
    SIGMOID = 2
    RELU = 3


cdef inline void phi_in_place(floating* a, Py_ssize_t size, int nonlinearity) noexcept nogil:
    """a[:size] = phi(a[:size]); one loop per nonlinearity so each vectorises."""
    cdef Py_ssize_t i
    if nonlinearity == TANH:
        for i in range(size):
            a[i] = <floating> tanh_(a[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            a[i] = <floating> sigmoid_(a[i])
    elif nonlinearity == RELU:
        for i in range(size):
            a[i] = 0 if a[i] <= 0 else a[i]      # relu(NaN) is NaN, as np.maximum's
