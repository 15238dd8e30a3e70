"""What forward hands to backward: one cache type per cell, with a declared set of fields.

Kernels and reference make and accept the same caches. A cache's fields are read-only
attributes: backward reads every array on it as forward left it, and an array of another shape
put in its place would be read out of bounds by a kernel. Its workspaces (scratch arrays a
backward keeps for the next call on the same cache) are declared too, in ``workspaces``, and
kept under private names.

The calls running on a cache are counted in ``_readers`` and ``_alone`` (``fastbptt._sharing``):
several backward calls may read a cache at once, a call that writes it needs it alone.
"""
import numpy as np

from ._layout import empty_steps, readonly, swap_major

# what a forward over sequences of unequal lengths (or reversed) adds to its cache's dict
BY_LENGTH = ("lengths", "reverse", "_hT", "_cT", "_inner", "_order")


class Cache:
    """Everything backward needs from forward.

    Fields common to every cell: ``time_major`` (the layout the caller used), ``x``, ``h0``,
    ``Wx``, ``Wh``, ``b``, ``h`` (all hidden states), ``dtype`` (theirs); each cell's cache adds
    its own (``RNNCache.nonlinearity``; ``LSTMCache.c0``, ``c``, ``gates``; ``GRUCache.bh``,
    ``gates``, ``hn``). ``cell`` is the cell's name. ``hT`` (and ``cT`` for the LSTM) is the final
    state, to pass as ``h0`` (``c0``) of the next segment of a stream.

    The per-step arrays (``x``, ``h``, ``c``, ``gates``, ...) are indexed by step: (T, N, ...),
    ``cache.h[t]`` is step t. They are time-major views of arrays that are C-contiguous in the
    caller's layout: batch-major (N, T, ...) unless ``time_major``, and the kernels pass them to
    BLAS as they are. ``x``, like ``h0`` and the weights, is a view of the caller's own array
    wherever that was C-contiguous (no copy): change none of them before backward.

    The hidden states returned by forward are a read-only view of ``h``: they are what backward
    differentiates, so they must not change in between.

    ``consumed`` is True once a backward with ``overwrite_cache=True`` has run on the cache: it
    may then have used the gate values as its workspace, and a later backward on the cache
    raises a ValueError. The states (``h``, ``c``, ``hT``, ``cT``) are never overwritten by it.
    A forward with ``out=cache`` that is interrupted (Ctrl-C) or fails while it refills the cache
    leaves it consumed too: half of it is the new call's. A forward with out= refills it.

    Threads: any number of backward calls without ``overwrite_cache`` may read one cache at
    once (each keeps its own workspace). A forward with ``out=cache`` or a backward with
    ``overwrite_cache=True`` needs the cache alone: started while another call runs on it, or
    another started while it runs, raises ``fastbptt.InUseError``.

    A cache survives ``pickle`` (as multiprocessing sends it): its arrays come back in the
    caller's layout and its workspaces are left behind.
    """

    cell = None                            # the cell's name, set by each subclass
    fields = ("x", "h0", "Wx", "Wh", "b", "h")
    by_step = ("x", "h")                   # fields indexed by step: (T, N, ...) views
    outputs = {"h": 1}                     # forward's per-step arrays: their widths in H
    workspaces = ("buffers",)              # the kernels' Buffers: these arrays and scratch
    lengths = None      # (N,) int64 steps of each sequence; None: all T (fastbptt/_lengths.py)
    reverse = False     # True: each sequence ran from its last step back to step 0

    def __init__(self, time_major, *parts):
        self.__dict__["time_major"] = time_major
        self._fill(*parts)

    def _fill(self, *parts):
        """Set the fields from ``parts``, dicts {field: value} that together name every field of
        ``fields`` (a forward refilling the cache with out= sets them all, so none is left from
        the call before). The cache is then not consumed. Written into the instance's dict:
        attribute assignment is the user's, and refused."""
        fields = self.__dict__
        if "lengths" in fields:             # the call before ran by length: none of it stays
            for key in BY_LENGTH + self.by_step:
                fields.pop(key, None)
        for part in parts:
            fields.update(part)
        fields["consumed"] = False
        fields["dtype"] = fields["h"].dtype     # a field, not a property: read on every call
        if "_readers" in fields:
            fields["_fills"] += 1               # what the kernels' Buffers last held
        else:                                   # a new cache
            fields["_fills"] = 1
            fields["_readers"] = []             # the calls running on it (fastbptt._sharing)

    def _consume(self, by="overwrite"):
        """Mark the cache consumed, ``by`` a backward with overwrite_cache ('overwrite') or a
        forward with out= stopped half-way ('interrupted'): backward refuses it."""
        self.__dict__["_consumed_by"] = by
        self.__dict__["consumed"] = True

    def _consumed_message(self):
        """What a backward on the consumed cache says."""
        if self.__dict__.get("_consumed_by") == "interrupted":
            return ("this cache is half-written: a forward with out= that was refilling it "
                    "was interrupted (or failed); run forward again")
        return ("this cache was consumed by a backward with overwrite_cache=True; run forward "
                "again (or pass overwrite_cache=False to keep a cache for more than one "
                "backward)")

    def __getattr__(self, name):
        """Only for a name not found: a per-step array of a kernels' cache of sequences of
        unequal lengths, which keeps them in the kernels' order (``fastbptt/_lengths.py``),
        laid out in the caller's on first request."""
        fields = self.__dict__
        inner = fields.get("_inner")
        if inner is None or name not in self.by_step:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        by_step = getattr(inner, name)
        n_steps, n_batch, width = by_step.shape
        arr = empty_steps(n_steps, n_batch, width, by_step.dtype, self.time_major)
        fields["_order"].to_user(by_step, arr)
        fields[name] = value = swap_major(arr, self.time_major)
        return value

    def __setattr__(self, name, value):
        raise AttributeError(
            f"a {self.cell} cache is read-only ({name!r}): backward reads its arrays as forward "
            "left them; run forward again (out= refills a cache) to change them")

    def __delattr__(self, name):
        self.__setattr__(name, None)

    def workspace(self, name, shape):
        """A scratch array of ``shape``, kept under the declared workspace ``name``: made by the
        first call that needs it and reused by the next backward on the same cache (or on a
        cache that forward refilled with out=), so a loop over chunks allocates nothing after
        its first. It is freed with the cache."""
        key = "_" + name
        work = self.__dict__.get(key)
        if work is None or work.shape != shape or work.dtype != self.dtype:
            work = self.__dict__[key] = np.empty(shape, self.dtype)
        return work

    @property
    def hT(self):
        """The final hidden state (N, H), read-only: each sequence's after its last step."""
        final = self.__dict__.get("_hT")
        return readonly(self.h[-1] if final is None else final)

    def __repr__(self):
        n_steps, n_batch, n_hidden = self.h.shape
        return (f"<fastbptt {self.cell} cache: T={n_steps} N={n_batch} H={n_hidden} "
                f"{self.dtype}{' consumed' if self.consumed else ''}>")

    def __reduce__(self):
        state = {name: getattr(self, name) for name in self.fields}
        state.update((key, self.__dict__[key]) for key in BY_LENGTH[:4]
                     if key in self.__dict__)
        consumed = self.consumed and self.__dict__.get("_consumed_by", True)
        return _restore, (type(self), self.time_major, consumed, state)


def _restore(cache_type, time_major, consumed, arrays):
    """A cache back from pickle. Pickle copies each array on its own, so a view by step of a
    batch-major array comes back C-contiguous by step: lay it out as forward does again.
    ``consumed`` is False, or what consumed it (True: a backward with overwrite_cache)."""
    for name in cache_type.by_step:
        arrays[name] = swap_major(
            np.ascontiguousarray(swap_major(arrays[name], time_major)), time_major)
    for name, value in arrays.items():
        if isinstance(value, np.ndarray) and name not in cache_type.by_step:
            arrays[name] = np.ascontiguousarray(value)
    cache = cache_type(time_major, arrays)
    if consumed:
        cache._consume("overwrite" if consumed is True else consumed)
    return cache


class RNNCache(Cache):
    """An Elman RNN's cache: the common fields and ``nonlinearity``."""
    cell = "rnn"
    fields = Cache.fields + ("nonlinearity",)
    workspaces = Cache.workspaces + ("dA_lean",)


class LSTMCache(Cache):
    """An LSTM's cache: the common fields, ``c0``, the cell states ``c`` and the gate values
    ``gates`` (i, f, g, o after their nonlinearities)."""
    cell = "lstm"
    fields = Cache.fields + ("c0", "c", "gates")
    by_step = Cache.by_step + ("c", "gates")
    outputs = {"h": 1, "c": 1, "gates": 4}

    @property
    def cT(self):
        """The final cell state (N, H), read-only: each sequence's after its last step."""
        final = self.__dict__.get("_cT")
        return readonly(self.c[-1] if final is None else final)


class GRUCache(Cache):
    """A GRU's cache: the common fields, ``bh``, the gate values ``gates`` (r, z, n after their
    nonlinearities) and ``hn``, the hidden side of the candidate's pre-activation."""
    cell = "gru"
    fields = Cache.fields + ("bh", "gates", "hn")
    by_step = Cache.by_step + ("gates", "hn")
    outputs = {"h": 1, "gates": 3, "hn": 1}


class JordanCache(Cache):
    """A Jordan network's cache: x, the initial output ``y0``, the weights ``Wx``, ``Wy``,
    ``b``, ``Wo``, ``bo``, the hidden states ``h`` (N, H per step), the outputs ``y`` (N, O per
    step, after phi_y) and both nonlinearities. ``yT``, the final output, is the state to pass
    as ``y0`` of the next segment of a stream. (It has no ``h0`` nor ``Wh``: the state carried
    from step to step is y.)"""
    cell = "jordan"
    fields = ("x", "y0", "Wx", "Wy", "b", "Wo", "bo", "h", "y", "nonlinearity",
              "output_nonlinearity")
    by_step = ("x", "h", "y")
    outputs = {"h": "H", "y": "O"}      # forward's per-step arrays and their widths
    workspaces = Cache.workspaces + ("dAh", "dAo")

    @property
    def yT(self):
        """The final output (N, O), read-only."""
        return readonly(self.y[-1])
