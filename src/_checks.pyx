# cython: language_level=3
"""Input checks that NumPy makes slow for small arrays: which of several arrays holds a NaN or
an infinity (``first_nonfinite``), and which two of them share memory (``first_overlap``).
``np.isfinite(a.sum())`` costs ~5 us a call however small ``a`` is, and a forward call checks
five arrays; here one call checks them all, in place, whatever their layout.

x - x is exactly +0.0 (all bits zero) for every finite x and NaN for NaN and infinities, so the
bits of x - x OR-ed over an array are zero exactly when all of it is finite. An integer OR may be
reordered, so the loop vectorises without -ffast-math (a float sum would not: its order of
additions is fixed); without -ffinite-math-only the compiler may not fold x - x to 0.

Built twice like the kernels (setup.py): the AVX2 build scanned the float32 weights of an LSTM
of H = 100, D = 65 in 3.9 us against 8.5 us (float64: 11.5 against 13.8 us).

The arrays are read through the buffer protocol (``PyObject_GetBuffer``), not typed memoryviews:
a memoryview costs ~0.5 us to set up, several times the scan of a small state.
"""
from cpython.buffer cimport (PyBUF_RECORDS_RO, PyBUF_STRIDES, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

cimport numpy as cnp


cdef uint64_t _bits_f64(const char* a, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    """OR of the bits of x - x over n doubles ``stride`` bytes apart."""
    cdef Py_ssize_t i
    cdef double zero
    cdef uint64_t bits, bad = 0
    cdef const double* d = <const double*> a
    if stride == 8:
        for i in range(n):
            zero = d[i] - d[i]
            memcpy(&bits, &zero, 8)
            bad |= bits
        return bad
    for i in range(n):
        d = <const double*> (a + i * stride)
        zero = d[0] - d[0]
        memcpy(&bits, &zero, 8)
        bad |= bits
    return bad


cdef uint64_t _bits_f32(const char* a, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    """OR of the bits of x - x over n floats ``stride`` bytes apart."""
    cdef Py_ssize_t i
    cdef float zero
    cdef uint32_t bits, bad = 0
    cdef const float* f = <const float*> a
    if stride == 4:
        for i in range(n):
            zero = f[i] - f[i]
            memcpy(&bits, &zero, 4)
            bad |= bits
        return bad
    for i in range(n):
        f = <const float*> (a + i * stride)
        zero = f[0] - f[0]
        memcpy(&bits, &zero, 4)
        bad |= bits
    return bad


cdef bint _nonfinite(const Py_buffer* view) noexcept nogil:
    """Whether the float32/float64 buffer holds a NaN or an infinity: one flat pass where it is
    C-contiguous, else one pass per innermost line, the outer indices counted like an odometer."""
    cdef Py_ssize_t ndim = view.ndim, itemsize = view.itemsize, d, inner, inner_stride
    cdef Py_ssize_t index[64]
    cdef const char* line
    cdef uint64_t bad = 0
    cdef bint f64 = itemsize == 8
    if view.len == 0:
        return False
    if ndim == 0:
        return (_bits_f64(<const char*> view.buf, 1, 8) if f64
                else _bits_f32(<const char*> view.buf, 1, 4)) != 0
    # drop trailing dimensions that continue the one before them contiguously
    inner = view.shape[ndim - 1]
    inner_stride = view.strides[ndim - 1]
    while ndim > 1 and inner_stride == itemsize and view.strides[ndim - 2] == inner * itemsize:
        ndim -= 1
        inner *= view.shape[ndim - 1]
    for d in range(ndim):
        index[d] = 0
    while True:
        line = <const char*> view.buf
        for d in range(ndim - 1):
            line += index[d] * view.strides[d]
        bad |= (_bits_f64(line, inner, inner_stride) if f64
                else _bits_f32(line, inner, inner_stride))
        if bad:
            return True
        # next line: count up the outer indices, the last fastest
        d = ndim - 2
        while d >= 0:
            index[d] += 1
            if index[d] < view.shape[d]:
                break
            index[d] = 0
            d -= 1
        if d < 0:
            return False


# Arrays smaller than this are scanned holding the GIL: releasing it costs little alone, but with
# other Python threads running kernels each release is a chance to lose the GIL to them and wait
# for it back, for a scan of a few microseconds at most (256 KiB took 13 us here).
cdef Py_ssize_t NOGIL_BYTES = 1 << 18


def first_nonfinite(arrays):
    """Index of the first array in ``arrays`` holding a NaN or an infinity, or -1.

    Each must be a float32 or float64 array in native byte order (the callers' checks make
    sure), of any shape and strides: it is scanned in place, never copied."""
    cdef Py_buffer view
    cdef Py_ssize_t k = 0
    cdef bint bad
    for arr in arrays:
        PyObject_GetBuffer(arr, &view, PyBUF_RECORDS_RO)
        try:
            fmt = view.format if view.format != NULL else b"B"
            if fmt.lstrip(b"@=") not in (b"f", b"d"):
                raise TypeError(f"first_nonfinite takes native float32 or float64 arrays, "
                                f"got buffer format {fmt!r}")
            if view.len < NOGIL_BYTES:
                bad = _nonfinite(&view)
            else:
                with nogil:
                    bad = _nonfinite(&view)
        finally:
            PyBuffer_Release(&view)
        if bad:
            return k
        k += 1
    return -1


cdef struct Bounds:
    const char* lo      # the first byte of the array's memory
    const char* hi      # one past its last byte; lo == hi for an empty array


cdef int _bounds(object arr, Bounds* b) except -1:
    """The bytes an array's elements span, from its data pointer, shape and strides (a NumPy
    array's read from its header, anything else through a buffer export, ~0.1 us)."""
    cdef Py_buffer view
    cdef Py_ssize_t d, extent
    cdef cnp.ndarray a
    if cnp.PyArray_Check(arr):
        a = <cnp.ndarray> arr
        b.lo = b.hi = <const char*> cnp.PyArray_DATA(a)
        if cnp.PyArray_SIZE(a):
            for d in range(cnp.PyArray_NDIM(a)):
                extent = (cnp.PyArray_DIMS(a)[d] - 1) * cnp.PyArray_STRIDES(a)[d]
                if extent < 0:
                    b.lo += extent
                else:
                    b.hi += extent
            b.hi += cnp.PyArray_ITEMSIZE(a)
        return 0
    PyObject_GetBuffer(arr, &view, PyBUF_STRIDES)
    b.lo = b.hi = <const char*> view.buf
    if view.len:
        for d in range(view.ndim):
            extent = (view.shape[d] - 1) * view.strides[d]
            if extent < 0:
                b.lo += extent
            else:
                b.hi += extent
        b.hi += view.itemsize
    PyBuffer_Release(&view)
    return 0


cdef enum:
    FEW = 16        # calls with at most this many arrays keep their bounds on the stack


def first_overlap(writes, reads):
    """The names of the first two arrays whose memory bounds overlap, a write against a read or
    against a later write, or None: ``writes`` and ``reads`` are sequences of (name, array).
    The same answer as ``np.may_share_memory`` pair by pair (``fastbptt._validation``), without
    its cost per pair: each array's bounds are taken once."""
    cdef Py_ssize_t n_writes = len(writes), n = n_writes + len(reads), i, j
    cdef Bounds few[FEW]
    cdef Bounds* b = few
    if n > FEW:
        b = <Bounds*> PyMem_Malloc(n * sizeof(Bounds))
        if b == NULL:
            raise MemoryError()
    try:
        for i in range(n):
            _bounds((writes[i] if i < n_writes else reads[i - n_writes])[1], &b[i])
        for i in range(n_writes):
            if b[i].lo == b[i].hi:
                continue
            for j in range(i + 1, n):
                if b[j].lo < b[i].hi and b[i].lo < b[j].hi:
                    return (writes[i][0],
                            (writes[j] if j < n_writes else reads[j - n_writes])[0])
        return None
    finally:
        if b != few:
            PyMem_Free(b)


# -- the fast path of the input checks -------------------------------------------------------
#
# The checks of ``fastbptt._validation`` cost ~5 us in Python per call, as much as the kernels on
# a short sequence. Almost every call passes arrays that need nothing done to them: NumPy arrays
# of one native float dtype, C-contiguous, of matching shapes. ``forward_ready`` and
# ``backward_ready`` recognise exactly those, every call, in a fraction of a microsecond (they
# read the arrays' headers through NumPy's C API: a buffer export costs ~0.1 us an array), and
# scan them for NaN and inf on the way; anything else (a list, a strided view, a wrong shape, a
# NaN) they hand back to the full checks in Python, which convert it or raise the message that
# names the argument. They never raise and never accept what the full checks would refuse.

cnp.import_array()

cdef extern from "<limits.h>":
    int INT_MAX


cdef inline cnp.ndarray _plain(object arr, int typenum, int ndim):
    """``arr`` if it is a NumPy array (not a subclass) of ``ndim`` dimensions whose items are
    native floats of NumPy type ``typenum`` (NPY_FLOAT or NPY_DOUBLE; -1: either),
    C-contiguous; else None."""
    cdef cnp.ndarray a
    if type(arr) is not cnp.ndarray:
        return None
    a = <cnp.ndarray> arr
    if (cnp.PyArray_NDIM(a) == ndim and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISNOTSWAPPED(a)
            and (cnp.PyArray_TYPE(a) == typenum if typenum >= 0 else
                 cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT or cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE)):
        return a
    return None


cdef inline bint _finite(cnp.ndarray a) noexcept:
    """A C-contiguous native float32/float64 array holds no NaN and no infinity."""
    if cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE:
        return _bits_f64(<const char*> cnp.PyArray_DATA(a), cnp.PyArray_SIZE(a), 8) == 0
    return _bits_f32(<const char*> cnp.PyArray_DATA(a), cnp.PyArray_SIZE(a), 4) == 0


cdef inline bint _shaped(cnp.ndarray a, Py_ssize_t d0, Py_ssize_t d1) noexcept:
    """``a`` has shape (d0,) (``d1`` < 0) or (d0, d1)."""
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    return dims[0] == d0 and (d1 < 0 or dims[1] == d1)


def forward_ready(x, dict states, dict weights, int n_gates, time_major, bint check_finite):
    """(T, N, D, H) where the arguments of a cell's forward are ready for the kernels as they
    are, else None.

    Ready: ``time_major`` is True or False; x, the weights ``weights['Wx']`` (D, G*H),
    ``weights['Wh']`` (H, G*H) and the rest of ``weights`` (G*H,) (``b``, and the cell's extra
    ones, which may be None) and the states (``states``' values, (N, H) or None) are NumPy arrays
    of x's dtype, float32 or float64, native, C-contiguous; T, N, D, H >= 1, and every count
    fits the kernels' C ints (``fastbptt._validation.check_counts``); and, if ``check_finite``,
    no NaN or inf anywhere."""
    cdef cnp.ndarray xa, a
    cdef int typenum
    cdef Py_ssize_t T, N, D, H, GH
    cdef cnp.npy_intp* dims
    cdef bint tm
    if time_major is True or time_major is False:
        tm = time_major is True
    else:
        return None
    xa = _plain(x, -1, 3)
    if xa is None:
        return None
    typenum = cnp.PyArray_TYPE(xa)
    dims = cnp.PyArray_DIMS(xa)
    T, N = (dims[0], dims[1]) if tm else (dims[1], dims[0])
    D = dims[2]
    a = _plain(weights.get("Wh"), typenum, 2)
    if a is None:
        return None
    H = cnp.PyArray_DIMS(a)[0]
    GH = n_gates * H
    if T == 0 or N == 0 or D == 0 or H == 0 or not _shaped(a, H, GH):
        return None
    if (T * N > INT_MAX or D > INT_MAX or GH > INT_MAX
            or not (tm or N == 1 or T * (D + GH) <= INT_MAX)):
        return None
    if check_finite and not (_finite(xa) and _finite(a)):
        return None
    for name, value in weights.items():
        if name == "Wh":
            continue
        if name == "Wx":
            a = _plain(value, typenum, 2)
            if a is None or not _shaped(a, D, GH):
                return None
        elif value is not None or name == "b":
            a = _plain(value, typenum, 1)
            if a is None or not _shaped(a, GH, -1):
                return None
        else:
            continue
        if check_finite and not _finite(a):
            return None
    for value in states.values():
        if value is not None:
            a = _plain(value, typenum, 2)
            if a is None or not _shaped(a, N, H) or (check_finite and not _finite(a)):
                return None
    return T, N, D, H


def backward_ready(dh, dict final, Py_ssize_t itemsize, tuple dh_shape, Py_ssize_t n_batch,
                   bint check_finite, tuple out_arrays=None, tuple out_shapes=None):
    """Whether the arrays of a backward call are ready for the kernels as they are: dh a NumPy
    array of ``itemsize``-byte floats (the cache's dtype), native, C-contiguous, of shape
    ``dh_shape`` (the cache's layout: (N, T, H) or (T, N, H)), and ``final``'s values (N, H)
    arrays of the same kind, or None; and, if ``check_finite``, no NaN or inf anywhere; and
    each of ``out_arrays`` (the arrays of ``out=`` that the call writes) an array of the same
    kind, writeable, of the shape at the same place in ``out_shapes``. False: the full checks
    take over."""
    cdef int typenum = cnp.NPY_FLOAT if itemsize == 4 else cnp.NPY_DOUBLE
    cdef Py_ssize_t n_hidden = dh_shape[2], i, k, ndim
    cdef cnp.npy_intp* dims
    cdef tuple shape
    cdef cnp.ndarray a
    if out_arrays is not None:
        if out_shapes is None or len(out_shapes) != len(out_arrays):
            return False
        for i in range(len(out_arrays)):
            shape = <tuple> out_shapes[i]
            ndim = len(shape)
            a = _plain(out_arrays[i], typenum, <int> ndim)
            if a is None or not cnp.PyArray_ISWRITEABLE(a):
                return False
            dims = cnp.PyArray_DIMS(a)
            for k in range(ndim):
                if dims[k] != <Py_ssize_t> shape[k]:
                    return False
    a = _plain(dh, typenum, 3)
    if a is None:
        return False
    dims = cnp.PyArray_DIMS(a)
    if dims[0] != dh_shape[0] or dims[1] != dh_shape[1] or dims[2] != n_hidden:
        return False
    if check_finite and not _finite(a):
        return False
    for value in final.values():
        if value is not None:
            a = _plain(value, typenum, 2)
            if a is None or not _shaped(a, n_batch, n_hidden) or (
                    check_finite and not _finite(a)):
                return False
    return True
