# cython: language_level=3
"""Sequences of unequal lengths in one call: the rows each step runs.

A batch whose sequences have lengths L_0 >= L_1 >= ... >= L_{N-1} (sorted, longest first) runs
step t on its first active[t] = #{n : L_n > t} rows only, a count that never grows with t: the
sequences still running at step t are a prefix of those that ran at step t-1, so the per-step
products and elementwise passes simply take fewer rows, and no work is done for the padding.
The buffers are time-major (T, N, W), so step t's active rows are one block of active[t] * W
elements. The padded rows of a buffer (n >= active[t]) hold no step's values: the kernels set
those of h and of the gradients of the pre-activations to zero, so the products over all
steps (X @ Wx, X.T @ dA, h_{t-1}.T @ dA, dA @ Wx.T) read zeros there and the padding adds
nothing to the weight gradients and gives dx = 0.

    active       active[t]          (T,)  rows step t runs; NULL: all N rows, every step
    n_run        run_steps(...)           steps with at least one active row (the longest length)
"""
from cython cimport floating
from libc.string cimport memset


cdef inline int rows_at(const int* active, Py_ssize_t t, int n_batch) noexcept nogil:
    """The rows step t runs: active[t], or all n_batch where active is NULL."""
    return n_batch if active == NULL else active[t]


cdef inline int run_steps(const int* active, int n_steps) noexcept nogil:
    """The steps that run at least one row: the longest length (active never grows)."""
    cdef int t = n_steps
    if active == NULL:
        return n_steps
    while t > 0 and active[t - 1] == 0:
        t -= 1
    return t


cdef inline void zero_inactive(floating* buf, Py_ssize_t width, int n_steps, int n_batch,
                               const int* active) noexcept nogil:
    """Rows active[t] .. N-1 of each step t of the time-major (T, N, width) buf set to zero
    (nothing where active is NULL)."""
    cdef Py_ssize_t t
    if active == NULL:
        return
    for t in range(n_steps):
        if active[t] < n_batch:
            memset(buf + (t * n_batch + active[t]) * width, 0,
                   (n_batch - active[t]) * width * sizeof(floating))


cdef inline const int* active_rows(object active, bint time_major, int n_steps,
                                   int n_batch) except? NULL:
    """The (T,) int32 counts ``active`` as a pointer (NULL for None), checked: T of them, each
    in 0 .. N, never growing, over time-major buffers (a ValueError otherwise). The caller
    keeps ``active`` alive."""
    cdef const int[::1] counts
    cdef Py_ssize_t t
    if active is None:
        return NULL
    if not time_major:
        raise ValueError("active rows need time-major buffers")
    counts = active
    if counts.shape[0] != n_steps:
        raise ValueError(f"active must have shape (T,) = ({n_steps},), got ({counts.shape[0]},)")
    for t in range(n_steps):
        if counts[t] < 0 or counts[t] > n_batch or (t and counts[t] > counts[t - 1]):
            raise ValueError("active must count 0 .. N rows per step, never growing")
    return &counts[0]


cdef inline void zero_steps(floating* buf, Py_ssize_t step, int t_first,
                            int n_steps) noexcept nogil:
    """Steps t_first .. n_steps - 1 of the time-major buf, step elements each, set to zero."""
    if t_first < n_steps:
        memset(buf + t_first * step, 0, (n_steps - t_first) * step * sizeof(floating))
