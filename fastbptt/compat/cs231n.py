"""The CS231n assignment's RNN layer API (``rnn_layers.py``), on fastbptt.

Same names, argument order, shapes and return values as the assignment, so that code written for
it runs here by changing one import::

    from fastbptt.compat.cs231n import *      # instead of: from cs231n.rnn_layers import *

Shapes: N batch, T time steps, D input features, H hidden units, V vocabulary size, M output size.

===========================  ======================================================================
function                     returns
===========================  ======================================================================
rnn_step_forward             next_h (N, H), cache
rnn_step_backward            dx, dprev_h, dWx, dWh, db
rnn_forward                  h (N, T, H), cache                      (compiled kernels)
rnn_backward                 dx, dh0, dWx, dWh, db                   (compiled kernels)
lstm_step_forward            next_h, next_c (N, H), cache
lstm_step_backward           dx, dprev_h, dprev_c, dWx, dWh, db
lstm_forward                 h (N, T, H), cache                      (compiled kernels)
lstm_backward                dx, dh0, dWx, dWh, db                   (compiled kernels)
word_embedding_forward       out (N, T, D), cache
word_embedding_backward      dW (V, D)
temporal_affine_forward      out (N, T, M), cache
temporal_affine_backward     dx, dw, db
temporal_softmax_loss        loss, dx (N, T, V)
===========================  ======================================================================

Differences from fastbptt's own API, all CS231n's conventions:

- The RNN is ``tanh``. The LSTM's gate blocks (column blocks of ``Wx``, ``Wh``, ``b``) are in the
  order **i, f, o, g** (fastbptt and PyTorch use i, f, g, o); ``lstm_forward`` starts from a zero
  cell state. The sequence functions permute the blocks on the way in and the gradients on the
  way out, so you never see fastbptt's order.
- The step functions are single NumPy steps (nothing to gain from a kernel for one step); the
  sequence functions run the whole time loop in fastbptt's kernels.
- ``rnn_forward`` and ``lstm_forward`` return ``h`` read-only: it is shared with the cache, which
  backward differentiates. Copy it (``h.copy()``) before writing into it.
- The backward functions return fastbptt's ``Grads``, a named tuple that unpacks as CS231n's
  five-tuple; ``lstm_backward``'s also carries ``.dc0``.

Inputs are float32 or float64 (CS231n uses float64), one dtype per call, never upcast; word
indices and labels are integer arrays. Bad input raises a TypeError or ValueError naming the
argument, as everywhere in fastbptt.
"""
import numpy as np

from .. import lstm_backward as _lstm_backward
from .. import lstm_forward as _lstm_forward
from .. import rnn_backward as _rnn_backward
from .. import rnn_forward as _rnn_forward
from .._grads import Grads
from .._validation import as_float_array, check_array
from ..reference._math import sigmoid

__all__ = [
    "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
    "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
    "word_embedding_forward", "word_embedding_backward",
    "temporal_affine_forward", "temporal_affine_backward", "temporal_softmax_loss",
]


# ---------------------------------------------------------------------------------------------
# helpers

class _StepCache:
    """What a step's forward hands to its backward; ``cell`` says which step made it."""

    def __init__(self, cell, **arrays):
        self.cell = cell
        self.__dict__.update(arrays)

    def __repr__(self):
        return f"<fastbptt.compat.cs231n {self.cell}_step cache>"


def _check_step(cell, x, prev_h, Wx, Wh, b, prev_c=None):
    """Arguments of ``<cell>_step_forward``: x (N, D), prev_h (N, H), Wx (D, G*H), Wh (H, G*H),
    b (G*H,), prev_c (N, H) for the LSTM; all finite, in x's dtype."""
    n_gates, g = (4, "4*") if cell == "lstm" else (1, "")
    x = as_float_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (N, D) for one time step, got shape {x.shape}")
    dtype = x.dtype
    n_batch, n_input = x.shape
    Wh = as_float_array("Wh", Wh)
    if Wh.ndim != 2 or Wh.shape[0] == 0 or Wh.shape[1] != n_gates * Wh.shape[0]:
        raise ValueError(f"Wh must have shape (H, {g}H) with H >= 1, got {Wh.shape}")
    n_hidden = Wh.shape[0]
    out = [
        check_array("x", x, x.shape, dtype, "(N, D)"),
        check_array("prev_h", prev_h, (n_batch, n_hidden), dtype, "(N, H)"),
        check_array("Wx", Wx, (n_input, n_gates * n_hidden), dtype, f"(D, {g}H)"),
        check_array("Wh", Wh, Wh.shape, dtype, f"(H, {g}H)"),
        check_array("b", b, (n_gates * n_hidden,), dtype, f"({g}H,)"),
    ]
    if cell == "lstm":
        out.append(check_array("prev_c", prev_c, (n_batch, n_hidden), dtype, "(N, H)"))
    return out


def _check_step_cache(cell, cache):
    if not isinstance(cache, _StepCache) or cache.cell != cell:
        made_by = (f"{cache.cell}_step_forward" if isinstance(cache, _StepCache)
                   else type(cache).__name__)
        raise TypeError(f"cache must be the cache returned by {cell}_step_forward, "
                        f"got one from {made_by}")
    return cache


def _check_state_grad(name, value, cache):
    return check_array(name, value, cache.prev_h.shape, cache.prev_h.dtype, "(N, H)")


def _swap_og(a):
    """Swap the last two of four column blocks: (i, f, o, g) <-> (i, f, g, o).

    The permutation is its own inverse, so it serves both directions (weights in, gradients out).
    An array whose last axis does not split into four blocks is returned as it is, for fastbptt's
    checks to reject with its usual message.
    """
    a = np.asarray(a)
    if a.ndim == 0 or a.shape[-1] % 4:
        return a
    n_hidden = a.shape[-1] // 4
    return np.concatenate(
        [a[..., :2 * n_hidden], a[..., 3 * n_hidden:], a[..., 2 * n_hidden:3 * n_hidden]], axis=-1)


def _check_int_array(name, value, ndim, expected):
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array {expected}, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array {expected}, got shape {arr.shape}")
    return arr


def _check_indices(name, arr, size, what):
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        raise ValueError(f"{name} must hold {what} in [0, {size}), "
                         f"got values from {arr.min()} to {arr.max()}")


# ---------------------------------------------------------------------------------------------
# vanilla RNN

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step of a tanh RNN: ``next_h = tanh(x Wx + prev_h Wh + b)``.

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,)  ->  next_h (N, H), cache.
    """
    x, prev_h, Wx, Wh, b = _check_step("rnn", x, prev_h, Wx, Wh, b)
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, _StepCache("rnn", x=x, prev_h=prev_h, Wx=Wx, Wh=Wh, next_h=next_h)


def rnn_step_backward(dnext_h, cache):
    """Backward of ``rnn_step_forward``: dnext_h (N, H) -> dx, dprev_h, dWx, dWh, db."""
    c = _check_step_cache("rnn", cache)
    dnext_h = _check_state_grad("dnext_h", dnext_h, c)
    da = dnext_h * (1 - c.next_h * c.next_h)        # tanh' = 1 - tanh^2
    return da @ c.Wx.T, da @ c.Wh.T, c.x.T @ da, c.prev_h.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    """A tanh RNN over a whole sequence, in fastbptt's kernels.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,)  ->  h (N, T, H) (read-only), cache.
    """
    return _rnn_forward(x, h0, Wx, Wh, b)


def rnn_backward(dh, cache):
    """Backward of ``rnn_forward``: dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx, dWh, db."""
    return _rnn_backward(dh, cache)


# ---------------------------------------------------------------------------------------------
# LSTM, gate blocks (i, f, o, g)

def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step, gate blocks (i, f, o, g) as in CS231n::

        a = x Wx + prev_h Wh + b = [a_i a_f a_o a_g]
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
        next_c = f * prev_c + i * g;                         next_h = o * tanh(next_c)

    x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    ->  next_h (N, H), next_c (N, H), cache.
    """
    x, prev_h, Wx, Wh, b, prev_c = _check_step("lstm", x, prev_h, Wx, Wh, b, prev_c)
    n_hidden = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    ifo = sigmoid(a[:, :3 * n_hidden])
    i, f, o = ifo[:, :n_hidden], ifo[:, n_hidden:2 * n_hidden], ifo[:, 2 * n_hidden:]
    g = np.tanh(a[:, 3 * n_hidden:])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    cache = _StepCache("lstm", x=x, prev_h=prev_h, prev_c=prev_c, Wx=Wx, Wh=Wh,
                       i=i, f=f, o=o, g=g, tanh_c=tanh_c)
    return next_h, next_c, cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward of ``lstm_step_forward``: dnext_h, dnext_c (N, H)
    -> dx (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    c = _check_step_cache("lstm", cache)
    dnext_h = _check_state_grad("dnext_h", dnext_h, c)
    dnext_c = _check_state_grad("dnext_c", dnext_c, c)
    dc = dnext_c + dnext_h * c.o * (1 - c.tanh_c * c.tanh_c)   # all the gradient reaching next_c
    da = np.concatenate([
        dc * c.g * c.i * (1 - c.i),                  # d a_i   (sigmoid' = s (1 - s))
        dc * c.prev_c * c.f * (1 - c.f),             # d a_f
        dnext_h * c.tanh_c * c.o * (1 - c.o),        # d a_o
        dc * c.i * (1 - c.g * c.g),                  # d a_g   (tanh' = 1 - tanh^2)
    ], axis=1)
    return (da @ c.Wx.T, da @ c.Wh.T, dc * c.f,
            c.x.T @ da, c.prev_h.T @ da, da.sum(axis=0))


class LSTMCache:
    """The cache of ``lstm_forward``: fastbptt's cache (``.cache``, gates in fastbptt's order
    i, f, g, o) marked as coming from the CS231n gate order, so that only this module's
    ``lstm_backward`` takes it and permutes the gradients back. ``hT``, ``cT``: final states."""

    def __init__(self, cache):
        self.cache = cache

    @property
    def hT(self):
        return self.cache.hT

    @property
    def cT(self):
        return self.cache.cT

    def __repr__(self):
        return f"<fastbptt.compat.cs231n lstm cache, gates (i, f, o, g): {self.cache!r}>"


def lstm_forward(x, h0, Wx, Wh, b):
    """An LSTM over a whole sequence from a zero cell state, in fastbptt's kernels.

    x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,), gate blocks (i, f, o, g)
    ->  h (N, T, H) (read-only), cache.
    """
    h, cache = _lstm_forward(x, h0, _swap_og(Wx), _swap_og(Wh), _swap_og(b))
    return h, LSTMCache(cache)


def lstm_backward(dh, cache):
    """Backward of ``lstm_forward``: dh (N, T, H) -> dx (N, T, D), dh0 (N, H),
    dWx (D, 4H), dWh (H, 4H), db (4H,) with gate blocks (i, f, o, g); ``.dc0`` also there."""
    if not isinstance(cache, LSTMCache):
        raise TypeError("cache must be the cache returned by fastbptt.compat.cs231n.lstm_forward "
                        f"(gate order i, f, o, g), got {type(cache).__name__}")
    grads = _lstm_backward(dh, cache.cache)
    return Grads(grads.dx, grads.dh0, _swap_og(grads.dWx), _swap_og(grads.dWh),
                 _swap_og(grads.db), dc0=grads.dc0)


# ---------------------------------------------------------------------------------------------
# word embedding

def word_embedding_forward(x, W):
    """Look up the vectors of words: ``out[n, t] = W[x[n, t]]``.

    x (N, T) integer word indices in [0, V), W (V, D)  ->  out (N, T, D), cache.
    """
    W = as_float_array("W", W)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D array (V, D), got shape {W.shape}")
    check_array("W", W, W.shape, W.dtype, "(V, D)")
    x = _check_int_array("x", x, 2, "(N, T) of word indices")
    _check_indices("x", x, W.shape[0], "word indices")
    return W[x], (x, W.shape, W.dtype)


def word_embedding_backward(dout, cache):
    """Backward of ``word_embedding_forward``: dout (N, T, D) -> dW (V, D), the sum of the
    rows of dout over every occurrence of each word."""
    if not (isinstance(cache, tuple) and len(cache) == 3 and isinstance(cache[0], np.ndarray)):
        raise TypeError("cache must be the cache returned by word_embedding_forward")
    x, (n_words, n_dim), dtype = cache
    dout = as_float_array("dout", dout)
    if dout.dtype != dtype:
        raise TypeError(f"dout has dtype {dout.dtype} but W has dtype {dtype}; pass all arrays "
                        "in one float dtype (fastbptt does not upcast)")
    dout = check_array("dout", dout, x.shape + (n_dim,), dtype, "(N, T, D)")
    dW = np.zeros((n_words, n_dim), dtype)
    np.add.at(dW, x.ravel(), dout.reshape(-1, n_dim))
    return dW


# ---------------------------------------------------------------------------------------------
# temporal affine and softmax loss

def temporal_affine_forward(x, w, b):
    """The same affine map at every time step: ``out[n, t] = x[n, t] @ w + b``.

    x (N, T, D), w (D, M), b (M,)  ->  out (N, T, M), cache.
    """
    x = as_float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D array (N, T, D), got shape {x.shape}")
    x = check_array("x", x, x.shape, x.dtype, "(N, T, D)")
    w = as_float_array("w", w)
    if w.ndim != 2:
        raise ValueError(f"w must be a 2-D array (D, M), got shape {w.shape}")
    w = check_array("w", w, (x.shape[2], w.shape[1]), x.dtype, "(D, M)")
    b = check_array("b", b, (w.shape[1],), x.dtype, "(M,)")
    n_batch, n_steps, n_input = x.shape
    out = (x.reshape(-1, n_input) @ w + b).reshape(n_batch, n_steps, -1)
    return out, (x, w, b, out)


def temporal_affine_backward(dout, cache):
    """Backward of ``temporal_affine_forward``: dout (N, T, M) -> dx (N, T, D), dw (D, M),
    db (M,)."""
    if not (isinstance(cache, tuple) and len(cache) == 4):
        raise TypeError("cache must be the cache returned by temporal_affine_forward")
    x, w, _, out = cache
    dout = check_array("dout", dout, out.shape, out.dtype, "(N, T, M)")
    dout2 = dout.reshape(-1, w.shape[1])                            # (N*T, M)
    dx = (dout2 @ w.T).reshape(x.shape)                             # (N*T, D)
    dw = x.reshape(-1, w.shape[0]).T @ dout2                        # (D, N*T)(N*T, M)
    return dx, dw, dout2.sum(axis=0)


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Softmax cross-entropy at every time step, counted where ``mask`` is set.

    ``loss = -sum_{n,t} mask[n,t] * log softmax(x[n,t])[y[n,t]] / N``: summed over time and
    averaged over the batch, as CS231n does.

    x (N, T, V) scores, y (N, T) integer labels in [0, V), mask (N, T) booleans (0/1 numbers,
    or other non-negative weights, are taken as weights)  ->  loss (a scalar of x's dtype),
    dx (N, T, V). ``verbose`` prints the shapes involved.
    """
    x = as_float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D array (N, T, V) of scores, got shape {x.shape}")
    x = check_array("x", x, x.shape, x.dtype, "(N, T, V)")
    n_batch, n_steps, n_classes = x.shape
    if n_classes == 0:
        raise ValueError(f"x must have at least one class (V >= 1), got shape {x.shape}")
    y = _check_int_array("y", y, 2, "(N, T) of labels")
    if y.shape != (n_batch, n_steps):
        raise ValueError(f"y must have shape (N, T) = {(n_batch, n_steps)}, got {y.shape}")
    _check_indices("y", y, n_classes, "labels")
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"mask must be a boolean (or real) array (N, T), got dtype {mask.dtype}")
    if mask.shape != (n_batch, n_steps):
        raise ValueError(f"mask must have shape (N, T) = {(n_batch, n_steps)}, got {mask.shape}")
    mask = mask.astype(x.dtype)
    if not np.isfinite(mask).all() or (mask < 0).any():
        raise ValueError("mask must hold booleans or finite non-negative weights")

    shifted = x - x.max(axis=2, keepdims=True)        # log softmax without overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    rows, steps = np.indices((n_batch, n_steps))
    loss = -(mask * log_probs[rows, steps, y]).sum() / n_batch if n_batch else 0.0
    dx = np.exp(log_probs)                             # softmax ...
    dx[rows, steps, y] -= 1                            # ... minus the one-hot label
    dx *= mask[:, :, None] / max(n_batch, 1)
    if verbose:
        print(f"temporal_softmax_loss: x {x.shape}, y {y.shape}, mask {mask.shape}, "
              f"dx {dx.shape}")
    return x.dtype.type(loss), dx
