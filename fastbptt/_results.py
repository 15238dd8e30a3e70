"""What forward hands to backward (``Cache``) and what backward returns (``Grads``).

Both are shared by the kernels and the reference, so a cache made by one is accepted by the other.
"""
from collections import namedtuple

import numpy as np


class Cache:
    """Everything backward needs from forward.

    Attributes common to every cell: ``cell`` ('rnn', 'lstm', 'gru'), ``time_major`` (the layout
    the caller used), ``x``, ``h0``, ``Wx``, ``Wh``, ``b``, ``h`` (all hidden states). Each cell
    adds its own (``nonlinearity``; ``c``, ``gates``; ...). ``hT`` (and ``cT`` for the LSTM) is
    the final state, to pass as ``h0`` (``c0``) of the next segment of a stream.

    The per-step arrays (``x``, ``h``, ``c``, ``gates``, ...) are indexed by step: (T, N, ...),
    ``cache.h[t]`` is step t. They are time-major views of arrays that are C-contiguous in the
    caller's layout: batch-major (N, T, ...) unless ``time_major``, and the kernels pass them to
    BLAS as they are. ``x``, like ``h0`` and the weights, is a view of the caller's own array
    wherever that was C-contiguous (no copy): change none of them before backward.

    The hidden states returned by forward are a read-only view of ``h``: they are what backward
    differentiates, so they must not change in between.

    ``consumed`` is True once a backward with ``overwrite_cache=True`` has run on the cache: it
    may then have used the gate values as its workspace, and a later backward on the cache
    raises a ValueError. The states (``h``, ``c``, ``hT``, ``cT``) are never overwritten.
    """

    def __init__(self, cell, time_major, **arrays):
        self.cell = cell
        self.time_major = time_major
        self.consumed = False
        self.__dict__.update(arrays)

    @property
    def dtype(self):
        return self.h.dtype

    @property
    def hT(self):
        """The final hidden state (N, H), read-only."""
        return _readonly(self.h[-1])

    @property
    def cT(self):
        """The final cell state (N, H) of an LSTM, read-only."""
        if self.cell != "lstm":
            raise AttributeError(f"a {self.cell} cache has no cell state cT")
        return _readonly(self.c[-1])

    def __repr__(self):
        n_steps, n_batch, n_hidden = self.h.shape
        return (f"<fastbptt {self.cell} cache: T={n_steps} N={n_batch} H={n_hidden} "
                f"{self.dtype}{' consumed' if self.consumed else ''}>")


def _readonly(view):
    view = view.view()
    view.flags.writeable = False
    return view


_GradsBase = namedtuple("Grads", "dx dh0 dWx dWh db")


class Grads(_GradsBase):
    """The five gradients ``dx, dh0, dWx, dWh, db``, unpacking as CS231n's do.

    What a cell has beyond the five is an attribute: ``dc0`` (LSTM), ``dbh`` (GRU). Pass a
    ``Grads`` back as ``grads=`` to accumulate the next backward's weight gradients into it.
    """

    def __new__(cls, dx, dh0, dWx, dWh, db, **extra):
        self = super().__new__(cls, dx, dh0, dWx, dWh, db)
        self.__dict__.update(extra)
        return self

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.__dict__.items())
        return super().__repr__()[:-1] + extra + ")"


def weight_grad_buffers(cache, grads=None, out=None):
    """The arrays backward accumulates weight gradients into: ``grads``' (checked by
    ``check_grads``), else those of ``out`` (an earlier result, checked by
    ``check_backward_out``) set to zero, else new zeros. Keys dWx, dWh, db, and dbh for a GRU."""
    names = ("dWx", "dWh", "db", "dbh") if cache.cell == "gru" else ("dWx", "dWh", "db")
    if grads is not None:
        return {name: getattr(grads, name) for name in names}
    if out is not None:
        arrays = {name: getattr(out, name) for name in names}
        for arr in arrays.values():
            arr.fill(0)
        return arrays
    # np.zeros, not np.zeros_like: the latter costs ~3 us a call, which shows on short sequences
    return {name: np.zeros(getattr(cache, name[1:]).shape, cache.dtype) for name in names}


def new_cache(out, cell, time_major, **arrays):
    """A new ``Cache`` of ``arrays``, or ``out`` (a cache forward refilled) holding them."""
    if out is None:
        return Cache(cell, time_major, **arrays)
    out.__dict__.update(arrays)
    out.consumed = False    # refilled: a backward may run on it again
    return out


def dx_buffer(cache, out):
    """The array backward writes dx into, in x's layout: new, or ``out.dx`` (checked)."""
    if out is None:
        shape = cache.x.shape if cache.time_major else cache.x.swapaxes(0, 1).shape
        return np.empty(shape, cache.dtype)
    return out.dx


def workspace(cache, name, shape):
    """A scratch array of ``shape`` kept on the cache under ``name``: made by the first call
    that needs it and reused by the next backward on the same cache (or on a cache that
    forward refilled with out=), so a loop over chunks allocates nothing after its first. It
    is freed with the cache."""
    key = "_work_" + name
    work = cache.__dict__.get(key)
    if work is None or work.shape != shape or work.dtype != cache.dtype:
        work = np.empty(shape, cache.dtype)
        setattr(cache, key, work)
    return work


def packed_weights(kernels, cache, n_batch, n_hidden, dtype):
    """The buffer a cell's kernels pack Wh into once per call (``src/_packed.pxd``), of
    ``kernels.packed_buffer_len`` elements (none where they call BLAS for every product): the
    workspace of ``cache`` (backward's, or a cache forward refills with out=), else a new one."""
    shape = (kernels.packed_buffer_len(n_batch, n_hidden, np.dtype(dtype).itemsize),)
    if cache is None:
        return np.empty(shape, dtype)
    return workspace(cache, "packed", shape)
