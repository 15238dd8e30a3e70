# cython: language_level=3
"""The two layouts of the per-step buffers, shared by the cell kernels and the BLAS floor.

Every per-step buffer of a call (x, h, c, gates, dh, dA, dx) is C-contiguous in the caller's
layout: batch-major (N, T, W) or time-major (T, N, W), W its width. Either way its N*T rows of W
elements lie back to back, in the same order in every buffer, so a product over all steps (the
hoisted X @ Wx, X.T @ dA, dA @ Wx.T) is one GEMM on the (T*N, W) matrix with row stride W, the
same in both layouts. Within one step the N rows are strided: counting in rows,

    layout        step t to t+1 (t_rows)   sequence n to n+1 (n_rows)
    time-major    N                        1
    batch-major   1                        T

so row n of step t of a buffer of width W starts at element (t * t_rows + n * n_rows) * W, and
step t is an (N, W) matrix with leading dimension n_rows * W, which goes to BLAS as lda/ldc.
One sequence (N = 1) lies alike in both layouts, and the kernels take it as time-major
(``by_step``: rows in time-major order), so that a long stream never needs a leading dimension
of T * W. The initial states h0, c0 and the carries are (N, H) C-contiguous: leading
dimension H.
"""
cdef extern from "<limits.h>":
    int INT_MAX


cdef struct Steps:
    int n_steps, n_batch
    bint by_step          # rows in time-major order: time-major, or one sequence
    Py_ssize_t t_rows     # rows from step t to t+1
    Py_ssize_t n_rows     # rows from sequence n to n+1


cdef inline Steps steps_of(Py_ssize_t dim0, Py_ssize_t dim1, bint time_major) noexcept nogil:
    """T, N and the row strides of per-step buffers whose first two dimensions are (dim0, dim1):
    (T, N) if time_major, else (N, T). N = 1 is taken as time-major (the table above)."""
    cdef Steps s
    s.n_steps = <int> (dim0 if time_major else dim1)
    s.n_batch = <int> (dim1 if time_major else dim0)
    s.by_step = time_major or s.n_batch == 1
    s.t_rows = s.n_batch if s.by_step else 1
    s.n_rows = 1 if s.by_step else s.n_steps
    return s


cdef inline int check_blas_ld(Py_ssize_t n_rows, Py_ssize_t width) except -1:
    """BLAS takes leading dimensions as 32-bit ints: a ValueError if n_rows * width is not one."""
    if n_rows * width > INT_MAX:
        raise ValueError(
            f"T * {width} = {n_rows * width} elements between batch rows is too large for "
            "BLAS's 32-bit leading dimension in the batch-major layout; pass time_major=True")
    return 0
