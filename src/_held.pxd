# cython: language_level=3
"""The arrays of one cache, held for its kernels between calls.

Each cell's kernel module has a ``Buffers`` class (``src/_rnn.pyx``, ...): the kernels' view of
one cache, made once per cache and kept on it (``fastbptt._buffers.kernel_buffers``). It holds
every array the kernels read or write, the cache's and the workspaces, each in a ``Py_buffer``:
a buffer export, so the array stays alive and cannot be resized while it is held, and a kernel
reads it by name, as ``<const floating*> bufs.held.h.buf``. Only the arrays of one call (dh, xi, the
carries, dx, the weight gradients, the norms) are still passed to the kernel.

``hold`` takes an array into a Py_buffer, unless that one holds it already (an identity check,
what a call costs when nothing changed), and checks once what a typed memoryview checked on
every call: its items are those of the cache's dtype (``itemsize`` bytes), its shape is the one
the kernels walk, it is laid out as forward made it (C-contiguous; for a per-step array, the view
by step (T, N, W) of an array C-contiguous in the caller's layout, ``src/_layout.pxd``), and it
is writeable where the kernels write it. Otherwise: a ValueError (a BufferError if read-only),
and the Py_buffer keeps what it held. A Py_buffer that holds nothing has ``obj == NULL``
(``holds_nothing``).

Sizes (``Dims``) are taken from the cache once: T, N and the layout from ``x``, H from ``Wh``.

What every cell's ``Buffers`` holds is one ``Held``: the sizes, the arrays every cell's cache
has (x, h0, Wx, Wh, b, h) and the workspaces every cell's kernels use (packed, norm_parts);
``begin_held``, ``refresh_held`` and ``release_held`` make, hold again and let go of them, and
the cell's class adds its own arrays.
"""
from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_STRIDES, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)

from _layout cimport Steps, steps_of
from _packed cimport hidden_packed_len


cdef struct Dims:
    Steps steps           # T, N and the row strides of the per-step arrays (src/_layout.pxd)
    int n_input, n_hidden
    bint time_major       # the caller's layout
    Py_ssize_t itemsize   # 4 (float32) or 8 (float64)


cdef inline Dims dims_of(cache) except *:
    """The sizes of a cache's arrays: T, N, D from its x (T, N, D), H from its Wh (H, G*H)."""
    cdef Dims d
    x_shape = cache.x.shape
    d.time_major = cache.time_major
    # steps_of takes the dimensions of the caller's layout: (T, N) or (N, T)
    if d.time_major:
        d.steps = steps_of(x_shape[0], x_shape[1], True)
    else:
        d.steps = steps_of(x_shape[1], x_shape[0], False)
    d.n_input = x_shape[2]
    d.n_hidden = cache.Wh.shape[0]
    d.itemsize = cache.dtype.itemsize
    return d


cdef inline int check_itemsize(const Dims* d, Py_ssize_t itemsize) except -1:
    """The arrays of one call have the items of the cache's: a TypeError otherwise."""
    if d.itemsize != itemsize:
        raise TypeError(f"the arrays of this call have {itemsize}-byte items, the cache's "
                        f"{d.itemsize}-byte ones")
    return 0


cdef inline bint holds_nothing(Py_buffer* view) noexcept:
    """``view`` holds no array (a workspace not made yet). (Its ``obj`` is read as a pointer:
    as an object, NULL would be taken a reference to.)"""
    return <void*> view.obj == NULL


cdef inline int hold(Py_buffer* view, object array, str name, Py_ssize_t itemsize,
                     bint writable, int ndim, const Py_ssize_t* shape,
                     const Py_ssize_t* strides) except -1:
    """``array`` held in ``view`` (which lets go of what it held before), unless ``view`` holds
    it already; ``ndim``, ``shape`` and ``strides`` (in items) are what the kernels walk, the
    stride of a dimension of length 1 being free. ``name`` names it in the error."""
    cdef Py_buffer new
    cdef int i
    cdef bint ok
    if <void*> view.obj == <void*> array:
        return 0
    PyObject_GetBuffer(array, &new,
                       PyBUF_STRIDES | PyBUF_FORMAT | (PyBUF_WRITABLE if writable else 0))
    ok = (new.ndim == ndim and new.itemsize == itemsize and new.format[0] in b"fd"
          and new.format[1] == 0)
    for i in range(ndim if ok else 0):
        ok = ok and new.shape[i] == shape[i]
        ok = ok and (shape[i] == 1 or new.strides[i] == strides[i] * itemsize)
    if not ok:
        got = [new.shape[i] for i in range(new.ndim)]
        want = [shape[i] for i in range(ndim)]
        PyBuffer_Release(&new)
        raise ValueError(
            f"{name} must be a {'float32' if itemsize == 4 else 'float64'} array of shape "
            f"{tuple(want)} laid out as forward made it, got shape {tuple(got)}")
    PyBuffer_Release(view)
    view[0] = new
    return 0


cdef inline int hold_steps(Py_buffer* view, object array, str name, const Dims* d,
                           Py_ssize_t width, bint writable) except -1:
    """A per-step array of width ``width`` as the cache keeps it: its view by step (T, N,
    width) of an array C-contiguous in the caller's layout."""
    cdef Py_ssize_t T = d.steps.n_steps, N = d.steps.n_batch
    cdef Py_ssize_t shape[3]
    cdef Py_ssize_t strides[3]
    shape[0], shape[1], shape[2] = T, N, width
    if d.time_major:
        strides[0], strides[1], strides[2] = N * width, width, 1
    else:
        strides[0], strides[1], strides[2] = width, T * width, 1
    return hold(view, array, name, d.itemsize, writable, 3, shape, strides)


cdef inline int hold_matrix(Py_buffer* view, object array, str name, const Dims* d,
                            Py_ssize_t rows, Py_ssize_t cols, bint writable) except -1:
    """A C-contiguous (rows, cols) array."""
    cdef Py_ssize_t shape[2]
    cdef Py_ssize_t strides[2]
    shape[0], shape[1] = rows, cols
    strides[0], strides[1] = cols, 1
    return hold(view, array, name, d.itemsize, writable, 2, shape, strides)


cdef inline int hold_vector(Py_buffer* view, object array, str name, const Dims* d,
                            Py_ssize_t size, bint writable) except -1:
    """A C-contiguous (size,) array."""
    cdef Py_ssize_t one = 1
    return hold(view, array, name, d.itemsize, writable, 1, &size, &one)


cdef inline int hold_new(Py_buffer* view, object array) except -1:
    """A workspace just made (C-contiguous, writeable) held in ``view``, which lets go of what it
    held before."""
    PyBuffer_Release(view)
    PyObject_GetBuffer(array, view, PyBUF_STRIDES | PyBUF_FORMAT | PyBUF_WRITABLE)
    return 0


cdef inline tuple steps_shape(const Dims* d, Py_ssize_t width):
    """The shape of a per-step array of width ``width`` in the caller's layout: (T, N, width)
    if time-major, else (N, T, width)."""
    if d.time_major:
        return (d.steps.n_steps, d.steps.n_batch, width)
    return (d.steps.n_batch, d.steps.n_steps, width)


cdef struct Held:
    Dims dims
    Py_buffer x, h0, Wx, Wh, b, h     # the arrays every cell's cache has
    Py_buffer packed        # Wh or Wh.T packed once per call (src/_packed.pxd), or nothing
    Py_buffer norm_parts    # a sharded backward's norms per shard (src/_shards.pxd)


cdef inline object begin_held(Held* held, object cache, int n_gates, object empty):
    """The start of a cell's ``Buffers`` for ``cache``, of n_gates gate blocks: its sizes
    (``dims_of``) and the workspace packed, made with ``empty`` (``numpy.empty``; a .pxd imports
    no module) where this build packs Wh for these sizes (``hidden_packed_len``; elsewhere
    packed holds nothing and the products call BLAS). Returns the cache's dtype; the cell's
    ``refresh`` then holds the cache's arrays."""
    cdef const Dims* d = &held.dims
    cdef Py_ssize_t packed_len
    held.dims = dims_of(cache)
    packed_len = hidden_packed_len(d.steps.n_batch, d.n_hidden, n_gates, d.itemsize,
                                   d.steps.n_steps)
    if packed_len:
        hold_new(&held.packed, empty(packed_len, cache.dtype))
    return cache.dtype


cdef inline int refresh_held(Held* held, object cache, int n_gates) except -1:
    """Hold the arrays every cell's cache has that ``held`` holds no longer (a forward with
    out=cache puts in the caller's x and weights): an identity check each. Wx, Wh and b have
    n_gates * H columns."""
    cdef const Dims* d = &held.dims
    cdef Py_ssize_t N = d.steps.n_batch, D = d.n_input, H = d.n_hidden
    hold_steps(&held.x, cache.x, "cache.x", d, D, False)
    hold_matrix(&held.h0, cache.h0, "cache.h0", d, N, H, False)
    hold_matrix(&held.Wx, cache.Wx, "cache.Wx", d, D, n_gates * H, False)
    hold_matrix(&held.Wh, cache.Wh, "cache.Wh", d, H, n_gates * H, False)
    hold_vector(&held.b, cache.b, "cache.b", d, n_gates * H, False)
    hold_steps(&held.h, cache.h, "cache.h", d, H, True)
    return 0


cdef inline void release_held(Held* held) noexcept:
    """Let go of every array ``held`` holds."""
    PyBuffer_Release(&held.x)
    PyBuffer_Release(&held.h0)
    PyBuffer_Release(&held.Wx)
    PyBuffer_Release(&held.Wh)
    PyBuffer_Release(&held.b)
    PyBuffer_Release(&held.h)
    PyBuffer_Release(&held.packed)
    PyBuffer_Release(&held.norm_parts)
