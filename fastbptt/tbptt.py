"""Truncated BPTT over a long stream: the TBPTT(k1, k2) driver of Williams and Peng (1990).

Every ``k1`` steps the driver backpropagates through the last ``k2 >= k1`` steps: the loss
gradients of the ``k1`` new steps are injected, and the ``k2 - k1`` steps before them are
context that the gradient flows back through (so every loss term is backpropagated through at
least ``k2 - k1`` earlier steps). ``k1 == k2`` is plain chunked truncated BPTT. The state (h,
and c for the LSTM) is carried forward from block to block, so the forward pass is exactly the
forward over the whole stream; memory depends on ``k2`` and not on the stream's length.

Example (a character model; the output layer and its loss are yours)::

    import fastbptt
    from fastbptt import TBPTT, clip

    def loss_grad(h, t0, y):            # h: (N, m, H) hidden states of steps t0 .. t0+m-1
        scores = h @ Wy + by            # y: (N, m) targets of the same steps
        loss, dscores = softmax_loss(scores, y)
        dWy[...] += ...                 # your layer's own gradients
        return loss, dscores @ Wy.T     # dL/dh for those m steps

    tb = TBPTT(k1=25, k2=50, cell="lstm")
    for win in tb.windows(x, None, Wx, Wh, b, loss_grad, targets=y):
        clip.clip_grad_norm(win.grads, 5.0)
        Wx -= lr * win.grads.dWx        # update in place: the next window uses it
        ...

    # or: one gradient over the whole stream, no updates in between
    res = TBPTT(k1=25, k2=50, cell="lstm").run(x, None, Wx, Wh, b, loss_grad, targets=y)
    res.loss, res.grads.dWx, res.h, res.c

The driver runs the cell ``impl.CELLS[cell]`` of the implementation ``impl`` (default
``fastbptt``; ``fastbptt.reference`` works the same), so it runs any cell that ``impl`` has.
Windows that do not start on a block boundary are cut inside the oldest block with the
backward keyword ``xi`` (``fastbptt.truncation``); blocks are chained with ``dhT`` (``dcT``), and
weight gradients are added into one set of buffers with ``grads=``: nothing is recomputed.
"""
import importlib
import math
from collections import deque, namedtuple

import numpy as np

from ._buffers import weight_grad_buffers
from ._validation import check_array
from .truncation import _count

__all__ = ["TBPTT", "Window", "TBPTTResult", "WeightGrads"]

# ``run`` with k1 == k2 walks about this many (batch rows x steps) per forward/backward call:
# several windows at once, see ``TBPTT.run``. At N = 1 that is 512 steps: enough that the ~60 us
# a pair of calls costs in Python is a few percent of the kernels' time, and still a fixed bound
# on memory whatever the stream's length.
GROUP_ROWS = 512


class WeightGrads:
    """Weight-gradient buffers ``dWx, dWh, db`` (and ``dbh`` for the GRU).

    Pass it as ``grads=`` to a backward (or to ``TBPTT.run``/``windows``) to add into it in
    place. It iterates over its arrays, so ``fastbptt.clip`` takes it as it is; ``items()``
    gives (name, array) pairs, e.g. for an optimizer keyed by the weights' names.
    """

    def __init__(self, **arrays):
        self.__dict__.update(arrays)

    def names(self):
        return tuple(self.__dict__)

    def items(self):
        return self.__dict__.items()

    def __iter__(self):
        return iter(self.__dict__.values())

    def __len__(self):
        return len(self.__dict__)

    def zero(self):
        """Set every buffer to zero, in place."""
        for arr in self:
            arr.fill(0)

    def copy(self):
        return WeightGrads(**{name: arr.copy() for name, arr in self.items()})

    def __repr__(self):
        shapes = ", ".join(f"{name}={arr.shape}" for name, arr in self.items())
        return f"WeightGrads({shapes})"


Window = namedtuple("Window", "t0 t1 start loss grads h c")
Window.__doc__ = """One TBPTT window, as ``TBPTT.windows`` yields it.

t0, t1 : the new steps ``[t0, t1)`` of the stream whose loss gradients were injected.
start : the first step backpropagated through: ``max(0, t0 - (k2 - k1))``.
loss : what ``loss_grad`` returned for the new steps.
grads : ``WeightGrads``: this window's weight gradients (or the running sum, where the caller
    passed ``grads=``). Without ``grads=``, the driver reuses the buffers for the next window:
    use them (clip, update) before asking for it, or copy them.
h, c : the state after step t1 - 1 (read-only; c is None except for the LSTM).
"""

TBPTTResult = namedtuple("TBPTTResult", "loss grads h c n_steps n_windows")
TBPTTResult.__doc__ = """What ``TBPTT.run`` returns.

loss : the sum of the losses of all windows (each step's loss counted once).
grads : ``WeightGrads``, the weight gradients summed over all windows.
h, c : the final state (c is None except for the LSTM): pass them as ``h0``/``c0`` to go on.
n_steps, n_windows : the stream's length and the number of windows.
"""


def _time_slice(arr, start, stop, axis):
    return arr[start:stop] if axis == 0 else arr[:, start:stop]


class TBPTT:
    """Truncated backpropagation through time, TBPTT(k1, k2), over a long stream.

    Parameters
    ----------
    k1 : int >= 1, the steps between two backward passes (the new steps of each window).
    k2 : int >= k1, the steps each backward pass goes through; None means ``k1``.
    cell : a cell's name in ``impl.CELLS``: 'rnn', 'lstm' or 'gru'.
    impl : the implementation, ``fastbptt`` (default) or ``fastbptt.reference``, or anything
        with a ``CELLS`` registry of the same kind. ``module`` is another name for it.

    Memory: the caches of the last ``ceil(k2 / k1)`` blocks of ``k1`` steps, and one block of
    the stream at a time where it comes as an iterator; ``run`` with ``k1 == k2`` holds one
    group of windows of about ``GROUP_ROWS`` (= 512) batch rows x steps instead.
    """

    def __init__(self, k1, k2=None, *, cell="rnn", impl=None, module=None):
        self.k1 = _count("k1", k1, 1)
        self.k2 = self.k1 if k2 is None else _count("k2", k2, 1)
        if self.k2 < self.k1:
            raise ValueError(f"k2 must be >= k1 (k2 steps are backpropagated every k1 steps), "
                             f"got k1={self.k1}, k2={self.k2}")
        if impl is not None and module is not None and impl is not module:
            raise TypeError("pass the implementation once, as impl= (module= is its old name)")
        impl = impl if impl is not None else module
        if impl is None:
            impl = importlib.import_module(__package__)
        name = getattr(impl, "__name__", type(impl).__name__)
        cells = getattr(impl, "CELLS", None)
        if cells is None:
            raise ValueError(f"impl must be fastbptt, fastbptt.reference or another "
                             f"implementation with a CELLS registry; {name} has none")
        if cell not in cells:
            raise ValueError(f"cell must be one of {tuple(cells)}, got {cell!r}")
        self.cell = cell
        self.impl = impl
        self._cell = cells[cell]

    @property
    def module(self):
        """The implementation (``impl``), under its old name."""
        return self.impl

    def __repr__(self):
        name = getattr(self.impl, "__name__", "?")
        return f"TBPTT(k1={self.k1}, k2={self.k2}, cell={self.cell!r}, impl={name})"

    def windows(self, x, h0, Wx, Wh, b, loss_grad, *, targets=None, grads=None,
                **forward_kwargs):
        """Walk the stream, yielding a ``Window`` after each backward pass.

        Parameters
        ----------
        x : the stream, either one array (N, T, D) ((T, N, D) if ``time_major``) cut into
            blocks of k1 steps, or any other iterable of chunks, each an array (N, T_i, D)
            or a pair ``(x_i, y_i)`` of inputs and targets of T_i steps; chunks of any
            lengths are re-cut into blocks of k1 steps (the last block may be shorter).
        h0, Wx, Wh, b : as for ``<cell>_forward``. The weights are read at every block:
            update them in place between windows, and the next window uses the new values
            (blocks of earlier windows still in a k2 > k1 window are then backpropagated with
            the new weights through states computed with the old: the usual online TBPTT).
        loss_grad : callable ``loss_grad(h, t0) -> (loss, dh)``, or ``loss_grad(h, t0, y)``
            where there are targets. ``h`` (N, m, H) (time-major: (m, N, H)) holds the hidden
            states of the m new steps ``t0 .. t0+m-1``, read-only; ``y`` their targets, sliced
            along the time axis like x; ``dh`` is dL/dh for those steps in h's shape (None:
            zeros), ``loss`` a number.
        targets : with an array x, an array whose first two axes are (N, T) ((T, N) if
            ``time_major``), sliced with x and passed to ``loss_grad``. With an iterator,
            pass the targets inside it as pairs instead.
        grads : None: each window's weight gradients alone, in buffers the driver reuses. A
            ``WeightGrads`` (or any object with arrays ``dWx, dWh, db`` (``dbh``)): add the
            gradients of every window into it, in place.
        **forward_kwargs : the rest of ``<cell>_forward``'s keywords: ``time_major``,
            ``nonlinearity`` (RNN), ``c0`` (LSTM, the initial cell state), ``bh`` (GRU).

        Yields
        ------
        ``Window(t0, t1, start, loss, grads, h, c)``.
        """
        job = self._start(x, targets, loss_grad, forward_kwargs)
        return self._walk(job, h0, Wx, Wh, b, loss_grad, grads, grads is None, forward_kwargs)

    def run(self, x, h0, Wx, Wh, b, loss_grad, *, targets=None, grads=None, **forward_kwargs):
        """Walk the whole stream, summing the weight gradients of all windows.

        Same arguments as ``windows``; the weights are not changed. ``grads``: buffers to add
        into (None: new zeros).

        Returns
        -------
        ``TBPTTResult(loss, grads, h, c, n_steps, n_windows)``.

        With ``k1 == k2`` the windows do not overlap and no weight changes between them, so
        ``run`` takes several windows (about ``GROUP_ROWS`` batch rows x steps) through one
        forward and one backward call, with ``xi`` zero at each window's first step: the same
        products as one call per window, summed in another order (equal to rounding), without
        the per-call overhead that dominates short windows of one stream. ``loss_grad`` is
        still called once per window with that window's steps, but may be called for the
        next windows of a group before the earlier ones are backpropagated.
        """
        job = self._start(x, targets, loss_grad, forward_kwargs)
        if self.k1 == self.k2:
            return self._run_grouped(job, h0, Wx, Wh, b, loss_grad, grads, forward_kwargs)
        loss, n_windows, win = 0.0, 0, None
        for win in self._walk(job, h0, Wx, Wh, b, loss_grad, grads, False, forward_kwargs):
            loss += win.loss
            n_windows += 1
        return TBPTTResult(loss, win.grads, win.h, win.c, win.t1, n_windows)

    # -- the stream ------------------------------------------------------------------------

    def _start(self, x, targets, loss_grad, forward_kwargs):
        """Check what can be checked before the first block; return (chunks, axis,
        has_targets), the chunks being (x_i, y_i or None) pairs."""
        if not callable(loss_grad):
            raise TypeError(f"loss_grad must be a callable loss_grad(h, t0[, y]) -> (loss, dh), "
                            f"got {type(loss_grad).__name__}")
        time_major = forward_kwargs.get("time_major", False)
        if not isinstance(time_major, (bool, np.bool_)):
            raise TypeError(f"time_major must be True or False, got {time_major!r}")
        axis = 0 if time_major else 1
        if isinstance(x, np.ndarray):
            if x.ndim != 3:
                layout = "(T, N, D)" if time_major else "(N, T, D)"
                raise ValueError(f"x must be a 3-D array {layout} or an iterable of chunks, "
                                 f"got shape {x.shape}")
            if x.shape[axis] == 0:
                raise ValueError(f"x must have at least one time step, got shape {x.shape}")
            if targets is not None:
                targets = np.asarray(targets)
                if targets.ndim < 2 or targets.shape[:2] != x.shape[:2]:
                    raise ValueError(f"targets must have the first two axes of x, "
                                     f"{x.shape[:2]}, got shape {targets.shape}")
            chunks = iter([(x, targets)])
            has_targets = targets is not None
        else:
            if targets is not None:
                raise TypeError("targets= goes with an array x; an iterator of chunks carries "
                                "its targets itself, as (x_i, y_i) pairs")
            try:
                it = iter(x)
            except TypeError:
                raise TypeError(f"x must be an array or an iterable of chunks, "
                                f"got {type(x).__name__}") from None
            chunks, has_targets = self._pairs(it, axis)
        return chunks, axis, has_targets

    @staticmethod
    def _pairs(it, axis):
        """(x_i, y_i or None) from an iterator of chunks, checked for consistent shapes."""
        first = next(it, None)
        if first is None:
            raise ValueError("the stream has no time steps (the iterator of chunks is empty)")
        has_targets = isinstance(first, tuple)

        def checked(i, item):
            if isinstance(item, tuple) != has_targets or (has_targets and len(item) != 2):
                raise TypeError(f"chunk {i}: every chunk must be an array or every chunk an "
                                f"(x, y) pair, as the first one; got {type(item).__name__}")
            xc, yc = item if has_targets else (item, None)
            if not isinstance(xc, np.ndarray) or xc.ndim != 3:
                raise ValueError(f"chunk {i}: x must be a 3-D array, got "
                                 f"{getattr(xc, 'shape', type(xc).__name__)}")
            if has_targets:
                yc = np.asarray(yc)
                if yc.ndim < 2 or yc.shape[:2] != xc.shape[:2]:
                    raise ValueError(f"chunk {i}: y must have the first two axes of x, "
                                     f"{xc.shape[:2]}, got shape {yc.shape}")
            return xc, yc

        def gen():
            xc, yc = checked(0, first)
            batch_axis = 1 - axis
            shape = (xc.shape[batch_axis], xc.shape[2])
            yield xc, yc
            for i, item in enumerate(it, 1):
                xc, yc = checked(i, item)
                if (xc.shape[batch_axis], xc.shape[2]) != shape:
                    raise ValueError(f"chunk {i}: x has shape {xc.shape}, but the stream's "
                                     f"batch and feature sizes (N, D) are {shape}")
                yield xc, yc

        return gen(), has_targets

    def _blocks(self, chunks, axis, windows_per_block=lambda n_batch: 1):
        """Re-cut chunks of any lengths into (x, y, t0) blocks of k1 steps (the last shorter),
        or of ``windows_per_block(N) * k1`` steps, N read off the first chunk."""
        k1 = None
        pending = deque()   # [x, y] pieces not yet handed out
        buffered = 0
        t0 = 0

        def take(n):
            if pending[0][0].shape[axis] == n:    # one piece, whole (a stream of one array)
                return tuple(pending.popleft())
            xs, ys = [], []
            while n:
                piece = pending[0]
                m = piece[0].shape[axis]
                if m <= n:
                    pending.popleft()
                    xs.append(piece[0])
                    ys.append(piece[1])
                    n -= m
                else:
                    xs.append(_time_slice(piece[0], 0, n, axis))
                    piece[0] = _time_slice(piece[0], n, m, axis)
                    if piece[1] is not None:
                        ys.append(_time_slice(piece[1], 0, n, axis))
                        piece[1] = _time_slice(piece[1], n, m, axis)
                    else:
                        ys.append(None)
                    n = 0
            join = (lambda parts: parts[0]) if len(xs) == 1 else (
                lambda parts: np.concatenate(parts, axis=axis))
            return join(xs), (None if ys[0] is None else join(ys))

        for xc, yc in chunks:
            m = xc.shape[axis]
            if m == 0:
                continue
            if k1 is None:
                k1 = self.k1 * windows_per_block(xc.shape[1 - axis])
            pending.append([xc, yc])
            buffered += m
            while buffered >= k1:
                xb, yb = take(k1)
                yield xb, yb, t0
                buffered -= k1
                t0 += k1
        if buffered:
            xb, yb = take(buffered)
            yield xb, yb, t0
        elif t0 == 0:
            raise ValueError("the stream has no time steps")

    # -- the windows -----------------------------------------------------------------------

    def _call_loss_grad(self, loss_grad, hb, t0, yb, has_targets):
        out = loss_grad(hb, t0, yb) if has_targets else loss_grad(hb, t0)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"loss_grad must return a pair (loss, dh), got "
                            f"{type(out).__name__}")
        loss, dh = out
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            raise TypeError(f"loss_grad must return (loss, dh) with loss a number, got "
                            f"{type(loss).__name__}") from None
        return loss, dh

    def _run_grouped(self, job, h0, Wx, Wh, b, loss_grad, grads, forward_kwargs):
        """``run`` for k1 == k2: a group of windows per forward and backward call.

        What one call per window would redo is done once per run or per group: without
        ``grads=``, the first group's backward makes the weight gradients (no zeros to add into,
        no checks of buffers), and the later groups add into them; xi is made once per group
        length, and a group of one window needs none (its xi would be zero at step 0 alone,
        which changes only the initial state's gradient, which ``run`` does not return); the
        loss gradients of a group of one window go to backward as ``loss_grad`` returned them,
        where a group of several is copied into one array."""
        chunks, axis, has_targets = job
        k1 = self.k1
        blocks = self._blocks(chunks, axis,
                              lambda n_batch: max(1, -(-GROUP_ROWS // (k1 * max(n_batch, 1)))))
        cell = self._cell
        forward, backward = cell.forward, cell.backward
        forward_kwargs = dict(forward_kwargs)
        state = {name: forward_kwargs.pop(name, None) for name in cell.extra_states}
        time_major = forward_kwargs.get("time_major", False)
        h, loss, n_windows, t1 = h0, 0.0, 0, 0
        cache = res = group_dh = group_xi = None     # the dh and xi of groups of several
        for xb, yb, t0 in blocks:
            # the arrays of the group before are refilled (out=), except for a shorter last one
            same = cache is not None and cache.h.shape[0] == xb.shape[axis]
            if cache is not None and not same:   # free the group before, keeping its state
                h = h.copy()
                state = {name: value.copy() for name, value in state.items()}
                hb = cache = res = None
            hb, cache = forward(xb, h, Wx, Wh, b, out=cache if same else None, **state,
                                **forward_kwargs)
            n_steps = cache.h.shape[0]
            t1 = t0 + n_steps
            if n_steps > k1 and (group_dh is None or group_dh.shape != hb.shape):
                group_dh = np.empty(hb.shape, cache.dtype)   # the last group may be shorter
                group_xi = np.ones(n_steps, cache.dtype)
                group_xi[::k1] = 0    # no gradient crosses a window's start, nor reaches h0
            # one window: its dh as loss_grad returned it, and no xi
            dh, xi = (None, None) if n_steps <= k1 else (group_dh, group_xi)
            for w0 in range(0, n_steps, k1):
                w1 = min(w0 + k1, n_steps)
                hw = _time_slice(hb, w0, w1, axis)
                yw = _time_slice(yb, w0, w1, axis) if has_targets else None
                win_loss, dhw = self._call_loss_grad(loss_grad, hw, t0 + w0, yw, has_targets)
                loss += win_loss
                n_windows += 1
                if dhw is not None:
                    expected = "(m, N, H)" if time_major else "(N, m, H)"
                    dhw = check_array("dh (returned by loss_grad)", dhw, hw.shape, cache.dtype,
                                      expected, like="the hidden states", scan=None)
                if xi is None:
                    dh = dhw
                elif dhw is None:
                    _time_slice(dh, w0, w1, axis)[...] = 0
                else:
                    _time_slice(dh, w0, w1, axis)[...] = dhw
            # each group is backpropagated once: its gate values may become the workspace
            res = backward(dh, cache, xi=xi, grads=grads, out=res if same else None,
                           overwrite_cache=True)
            if grads is None:    # the first group's weight gradients: the later ones add in
                grads = WeightGrads(**{name: getattr(res, name) for name in cell.weight_grads})
            h = _final_state(cell, cache)     # forward copies it before it refills the cache
            state = _extra_final_states(cell, cache)
        return TBPTTResult(loss, grads, h, state.get("c0"), t1, n_windows)

    def _walk(self, job, h0, Wx, Wh, b, loss_grad, grads, zero_each_window, forward_kwargs):
        chunks, axis, has_targets = job
        blocks = self._blocks(chunks, axis)
        cell = self._cell
        forward, backward = cell.forward, cell.backward
        forward_kwargs = dict(forward_kwargs)
        state = {name: forward_kwargs.pop(name, None) for name in cell.extra_states}
        context = deque(maxlen=math.ceil((self.k2 - self.k1) / self.k1))   # (cache, s, e)
        h = h0
        for xb, yb, t0 in blocks:
            hb, cache = forward(xb, h, Wx, Wh, b, **state, **forward_kwargs)
            t1 = t0 + cache.h.shape[0]
            if grads is None:
                grads = WeightGrads(**weight_grad_buffers(cell, cache))
            elif zero_each_window:
                grads.zero()
            loss, dh = self._call_loss_grad(loss_grad, hb, t0, yb, has_targets)
            res = backward(dh, cache, grads=grads)
            start = max(0, t0 - (self.k2 - self.k1))
            for old, s, e in reversed(context):   # newest first, back to the window's start
                if e <= start:
                    break
                xi = None
                if s < start:   # cut inside this block: nothing flows into the state at start
                    xi = np.ones(e - s)
                    xi[:start - s + 1] = 0
                carried = {f"d{s}T": getattr(res, f"d{s}0") for s in cell.states}
                res = backward(None, old, xi=xi, grads=grads, **carried)
            context.append((cache, t0, t1))
            h = _final_state(cell, cache)
            state = _extra_final_states(cell, cache)
            yield Window(t0, t1, start, loss, grads, h, state.get("c0"))


def _final_state(cell, cache):
    """The final state the next block's forward takes second: ``cache.hT``, or for Jordan's
    network, whose state is its output, ``cache.yT``."""
    state = cell.states[0]      # 'h', or Jordan's 'y'
    return getattr(cache, state + "T")


def _extra_final_states(cell, cache):
    """The final states beyond h of ``cache``, as the next block's forward keywords:
    {'c0': cache.cT} for the LSTM."""
    return {f"{s}0": getattr(cache, f"{s}T") for s in cell.states[1:]}
