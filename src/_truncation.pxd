# cython: language_level=3
"""Truncation as a per-step multiplier, in the backward step of every cell kernel.

Backward runs dL/dh_{t-1} = dh[t-1] + xi_t * (the gradient at step t through its Jacobian), with
xi (T,): all ones is full BPTT, a zero every k steps is chunked truncated BPTT, and a random
{0, 1/p_t} is the unbiased randomized truncation. Where xi_t == 0 the flow into the step before
is cut: the carry is zero and the step skips its recurrent product (``cut``).
"""
from cython cimport floating


cdef inline bint cut(floating xi_t, floating* carry, Py_ssize_t size) noexcept nogil:
    """True where xi_t == 0, the flow from step t into the step before cut: then the carry
    (size elements) is set to zero, and the step skips its product. False otherwise."""
    cdef Py_ssize_t i
    if xi_t != 0:
        return False
    for i in range(size):
        carry[i] = 0
    return True
