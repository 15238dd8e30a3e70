"""Sequences of unequal lengths, and sequences run backwards, on the compiled kernels.

A batch whose sequence n has lengths[n] real steps (PyTorch's packed sequences) runs on the
kernels in their own order: the sequences sorted by length, longest first, time-major, each
sequence's steps in the order they run (from lengths[n]-1 down to 0 where ``reverse``). There
the sequences still running at step s are the first active[s] rows of step s, so each step's
product and elementwise pass take just those rows and the padding costs no work
(``src/_active.pxd``). One gather lays the caller's x (and dh) out in that order, one more
lays h (and dx) back in the caller's, as one permutation of rows, the same for every per-step
array: ``Order``.

The cache of such a call is the caller's layout (x, h: zeros at the padded steps) plus the
kernels' own one, a plain time-major cache (``_inner``), which backward runs on; its other
per-step arrays (gates, ...) are laid out in the caller's order only if read. A cache made by
the reference (or unpickled) has no ``_inner``: backward lays its arrays out once.
"""
import threading

import numpy as np

from ._blas_threads import run_kernel
from ._buffers import backward_buffers, initial_states, kernel_buffers
from ._grads import cell_grads
from ._layout import empty_steps, readonly, swap_major
from ._sharing import begin, end

_scratch_arrays = threading.local()


def scratch(name, shape, dtype):
    """A per-thread array of ``shape`` and ``dtype`` for one call's own use, kept for the next
    call in the same thread: backward's dh and dx in the kernels' order. New arrays of
    megabytes come from fresh memory, each of whose pages faults when first written (measured:
    2,500 faults, 4 ms of a 7 ms forward and backward of case M's RNN)."""
    arrays = _scratch_arrays.__dict__.setdefault("arrays", {})
    size = int(np.prod(shape))
    arr = arrays.get((name, dtype))
    if arr is None or arr.size < size:
        arr = arrays[(name, dtype)] = np.empty(size, dtype)
    return arr[:size].reshape(shape)


class Order:
    """Where the kernels run each step of a batch of sequences of unequal lengths.

    order : (N,) the sequences by length, longest first (ties in their order): row k of every
        step of the kernels' arrays is sequence order[k].
    active : (T,) int32, the sequences running at step s (those with lengths > s).
    rows : (T*N,) for row (s, k) of the kernels' time-major arrays, the row of the caller's
        array (C-contiguous in its layout, as (T*N, W)) that holds the same step: sequence
        order[k] at time s, or lengths-1-s where ``reverse``; a padded step (s >= lengths)
        pairs with the caller's padded row at time s. A permutation of the rows, made where
        first used (a ``flipped`` batch uses none).
    n_run : the steps run at all, the longest length.
    flipped : every sequence runs all T steps in reverse (a bidirectional layer's reverse
        direction without lengths): the kernels' arrays are the caller's with time reversed,
        which a strided copy lays out in a third to half the time of the gather by ``rows``,
        and the kernels run them as any batch of whole sequences (no ``active``: their
        products over all steps split between threads).
    """

    __slots__ = ("lengths", "reverse", "order", "sorted_lengths", "active", "_rows",
                 "n_run", "n_steps", "time_major", "flipped", "_inverse")

    def __init__(self, lengths, reverse, n_steps, time_major):
        n_batch = len(lengths)
        self.lengths, self.reverse, self.n_steps = lengths, reverse, n_steps
        self.order = np.argsort(-lengths, kind="stable")
        self.sorted_lengths = longest_first = lengths[self.order]
        self.time_major = time_major
        self.flipped = bool(reverse and n_batch and longest_first[-1] == n_steps)
        steps = np.arange(n_steps)
        self.active = (n_batch - np.searchsorted(longest_first[::-1], steps, side="right")
                       ).astype(np.intc)
        self.n_run = int(longest_first[0]) if n_batch else 0
        self._inverse = self._rows = None

    @property
    def rows(self):
        """See the class docstring; made on first use (a flipped batch gathers no rows)."""
        if self._rows is None:
            n_steps, n_batch = self.n_steps, len(self.order)
            step = np.arange(n_steps)[:, None]
            if self.reverse:
                last = self.sorted_lengths[None, :] - 1
                time = np.where(step <= last, last - step, step)
            else:
                time = np.broadcast_to(step, (n_steps, n_batch))
            seq = self.order[None, :]
            rows = time * n_batch + seq if self.time_major else seq * n_steps + time
            self._rows = rows.ravel()
        return self._rows

    @property
    def kernel_active(self):
        """``active`` as the kernels take it: None where every sequence runs every step."""
        return None if self.flipped else self.active

    def to_inner(self, arr, out=None):
        """The caller's per-step array ``arr`` (C-contiguous in its layout) in the kernels'
        order: (T, N, W) C-contiguous, new or ``out``."""
        width = arr.shape[2]
        if out is None:
            out = np.empty((self.n_steps, len(self.order), width), arr.dtype)
        if self.flipped:
            np.copyto(out, (arr if self.time_major else arr.swapaxes(0, 1))[::-1])
            return out
        np.take(arr.reshape(-1, width), self.rows, axis=0, out=out.reshape(-1, width))
        return out

    def to_user(self, inner, out):
        """The kernels' (T, N, W) array ``inner`` written into ``out``, C-contiguous in the
        caller's layout."""
        if self.flipped:
            np.copyto(out if self.time_major else out.swapaxes(0, 1), inner[::-1])
            return out
        if self._inverse is None:
            inverse = np.empty_like(self.rows)
            inverse[self.rows] = np.arange(len(self.rows))
            self._inverse = inverse
        width = inner.shape[2]
        np.take(inner.reshape(-1, width), self._inverse, axis=0, out=out.reshape(-1, width))
        return out

    def final(self, inner, initial):
        """Each sequence's state after its last step, (N, H) in the caller's order, from the
        kernels' per-step states ``inner``; ``initial`` where a sequence has no step."""
        state = np.array(initial, order="C")
        ranks = np.flatnonzero(self.sorted_lengths)
        state[self.order[ranks]] = inner[self.sorted_lengths[ranks] - 1, ranks]
        return state


def forward_by_length(cell, kernels, inputs, out, lengths, reverse, extra):
    """A cell's forward on the kernels for sequences of ``lengths`` (checked), forward or in
    ``reverse``: (h, cache), as the cell's forward returns them. ``extra`` are the cache's
    fields beyond the common ones (the RNN's nonlinearity)."""
    cache_type = cell.cache_type
    tm = inputs.time_major
    if out is not None:
        begin(out, "refill", inputs.writes)     # out= needs the cache alone
    done = False
    try:
        order = Order(lengths, reverse, inputs.n_steps, tm)
        states = initial_states(inputs, out)
        inner_states = {name: state[order.order] for name, state in states.items()}
        x_inner = order.to_inner(inputs.x_buffer)
        shape = (inputs.n_steps, inputs.n_batch)
        inner_steps = {name: np.empty(shape + (width * inputs.n_hidden,), inputs.dtype)
                       for name, width in cache_type.outputs.items()}
        inner_steps["x"] = x_inner
        inner = cache_type(True, inputs.weights, inner_states, extra, inner_steps)
        if order.n_run:
            run_kernel(kernels.forward, x_inner, inputs.weights["Wh"],
                       kernel_buffers(kernels, inner), x_inner, order.kernel_active)
        else:                               # no sequence has a step
            for name in cache_type.outputs:
                inner_steps[name].fill(0)
        h = (swap_major(out.h, tm) if out is not None
             else empty_steps(inputs.n_steps, inputs.n_batch, inputs.n_hidden, inputs.dtype, tm))
        order.to_user(inner.h, h)
        added = {"lengths": lengths, "reverse": reverse, "_inner": inner, "_order": order,
                 "_hT": order.final(inner.h, states["h0"])}
        if "c" in cache_type.outputs:
            added["_cT"] = order.final(inner.c, states["c0"])
        by_step = {"x": inputs.x, "h": swap_major(h, tm)}
        if out is None:
            cache = cache_type(tm, inputs.weights, states, extra, by_step, added)
        else:
            out._fill(inputs.weights, states, extra, by_step, added)
            cache = out
        done = True
    finally:
        if out is not None:
            end(out, "refill", inputs.writes, refill_failed=not done)
    return readonly(h), cache


def inner_cache(cache):
    """The kernels' cache and ``Order`` for ``cache``, a cache of sequences by length: its own,
    or for one made by the reference (or unpickled) laid out now from its per-step arrays."""
    fields = cache.__dict__
    inner = fields.get("_inner")
    if inner is not None:
        return inner, fields["_order"]
    tm = cache.time_major
    n_steps = cache.h.shape[0]
    order = Order(cache.lengths, cache.reverse, n_steps, tm)
    by_step = {name: order.to_inner(np.ascontiguousarray(swap_major(getattr(cache, name), tm)))
               for name in cache.by_step}
    states = {state + "0": getattr(cache, state + "0")[order.order]
              for state in ("h", "c") if state + "0" in cache.fields}
    weights = {name: getattr(cache, name) for name in ("Wx", "Wh", "b", "bh")
               if name in cache.fields}
    extra = {name: getattr(cache, name) for name in cache.fields
             if name not in by_step and name not in states and name not in weights}
    inner = type(cache)(True, weights, states, extra, by_step)
    fields["_inner"], fields["_order"] = inner, order
    return inner, order


def backward_by_length(cell, kernels, cache, inputs, **options):
    """A cell's backward on the kernels for a cache of sequences by length (``inputs``
    checked); ``options`` are the kernel's keywords beyond the common ones (overwrite_cache).
    Returns the ``Grads``. Without ``grads=`` the kernel writes the weight gradients (they are
    zeros where no sequence has a step and no kernel runs)."""
    mode = "consume" if inputs.overwrite_cache else "read"
    shared = begin(cache, mode, inputs.writes)
    try:
        inner, order = inner_cache(cache)
        written = inputs.grads is None and order.n_run > 0
        dx, carries, wg = backward_buffers(cell, cache, inputs, written)
        inner_carries = {name: carry[order.order] for name, carry in carries.items()}
        dx_inner = scratch("dx", inner.x.shape, cache.dtype)
        if order.n_run:
            dh_inner = order.to_inner(inputs.dh_buffer,
                                      scratch("dh", inner.h.shape, cache.dtype))
            run_kernel(kernels.backward, inner.x, inner.Wh,
                       kernel_buffers(kernels, inner, shared), dh_inner, inputs.xi,
                       inner_carries, dx_inner, wg, inputs.h_grad_norms, active=order.kernel_active,
                       write_weight_grads=written, **options)
        else:
            dx_inner.fill(0)
            if inputs.h_grad_norms is not None:
                inputs.h_grad_norms[...] = 0
        for name, carry in carries.items():
            carry[order.order] = inner_carries[name]
        order.to_user(dx_inner, dx)
    finally:
        end(cache, mode, inputs.writes)
    return cell_grads(cell, dx, carries, wg)
