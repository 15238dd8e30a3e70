"""The CS231n assignment's RNN layer API (``rnn_layers.py``), on fastbptt.

Same names, argument order, shapes and return values as the assignment, so that code written for
it runs here by changing one import::

    from fastbptt.compat.cs231n import *      # instead of: from cs231n.rnn_layers import *

Shapes: N batch, T time steps, D input features, H hidden units, V vocabulary size, M output size.

===========================  ======================================================================
function                     returns
===========================  ======================================================================
affine_forward               out (N, M), cache = (x, w, b)            x (N, d_1, ..., d_k)
affine_backward              dx (N, d_1, ..., d_k), dw, db
rnn_step_forward             next_h (N, H), cache
rnn_step_backward            dx, dprev_h, dWx, dWh, db
rnn_forward                  h (N, T, H), cache                      (compiled kernels)
rnn_backward                 dx, dh0, dWx, dWh, db                   (compiled kernels)
lstm_step_forward            next_h, next_c (N, H), cache
lstm_step_backward           dx, dprev_h, dprev_c, dWx, dWh, db
lstm_forward                 h (N, T, H), cache                      (compiled kernels)
lstm_backward                dx, dh0, dWx, dWh, db                   (compiled kernels)
word_embedding_forward       out (*x.shape, D), cache = (x, W)       x indices of any shape
word_embedding_backward      dW (V, D)
temporal_affine_forward      out (N, T, M), cache = (x, w, b, out)
temporal_affine_backward     dx, dw, db
temporal_softmax_loss        loss, dx (N, T, V)
sigmoid                      the logistic function, without overflow
===========================  ======================================================================

It behaves as the NumPy code it replaces, where fastbptt's own API is stricter:

- Mixed dtypes are computed in the type NumPy would use (``np.result_type`` of the arguments:
  float32 with float64 gives float64, integers with float32 give float64) and the results have
  that type; fastbptt's core never upcasts. A combination that NumPy would compute in another
  type than float32 or float64 (all integers, float16 alone, complex) raises a TypeError.
- ``word_embedding_forward`` takes word indices of any shape, as ``W[x]`` does: a scalar (a
  start token) gives (D,), a 1-D (N,) array gives (N, D); negative indices count from the end.
- The step functions broadcast as the NumPy expressions they stand for
  (``x @ Wx + prev_h @ Wh + b``): an (D,) embedding of one start token with an (N, H) state
  gives (N, H). Their backward returns each gradient in its argument's own shape, summed over
  the axes it was broadcast along.

Differences from the assignment's code, all deliberate:

- The LSTM's gate blocks (column blocks of ``Wx``, ``Wh``, ``b``) are in CS231n's order
  **i, f, o, g** (fastbptt and PyTorch use i, f, g, o); ``lstm_forward`` starts from a zero
  cell state. The sequence functions permute the blocks on the way in and the gradients on the
  way out, so you never see fastbptt's order.
- The step functions are single NumPy steps (nothing to gain from a kernel for one step); the
  sequence functions run the whole time loop in fastbptt's kernels.
- ``rnn_forward`` and ``lstm_forward`` return ``h`` read-only: it is shared with the cache, which
  backward differentiates. Copy it (``h.copy()``) before writing into it.
- The caches of the step and sequence functions are objects, where the assignment's code
  returns tuples of its own choosing. Code that only hands a cache to the matching backward (the
  assignment's models and notebooks) runs unchanged; code that unpacks or indexes one
  (``x, prev_h, Wx, Wh, next_h = cache``, ``cache[0]``), such as a backward of one's own fed
  the caches of this module's forward, or the other way round, breaks: use this module's
  forward and backward together. ``affine_forward``, ``word_embedding_forward`` and
  ``temporal_affine_forward`` return the tuples above, as the assignment's solutions do.
- The backward functions return fastbptt's ``Grads``, a named tuple that unpacks as CS231n's
  five-tuple; ``lstm_backward``'s also carries ``.dc0``.
- Bad input raises a TypeError or ValueError naming the argument, as everywhere in fastbptt, and
  so do NaN and infinity, which NumPy would carry through.
"""
import numpy as np

from .. import lstm_backward as _lstm_backward
from .. import lstm_forward as _lstm_forward
from .. import rnn_backward as _rnn_backward
from .. import rnn_forward as _rnn_forward
from .._caches import Cache
from .._cells import LSTM, RNN
from .._grads import Grads
from .._validation import check_all_finite, check_array
from ..reference._math import sigmoid as _sigmoid

__all__ = [
    "affine_forward", "affine_backward",
    "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
    "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
    "word_embedding_forward", "word_embedding_backward",
    "temporal_affine_forward", "temporal_affine_backward", "temporal_softmax_loss",
    "sigmoid",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------------
# helpers

def _real_array(name, value):
    """``value`` as an array of real numbers (bool, integer or float), else a TypeError."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr


def _common(with_dtype=None, **named):
    """The arrays of ``named`` (name -> value, None left out) in the one dtype NumPy would
    compute them in (with an array of ``with_dtype``, if given): ``np.result_type``, which must
    be float32 or float64; checked finite. Returns (dict of arrays, dtype)."""
    arrays = {name: _real_array(name, value) for name, value in named.items()
              if value is not None}
    extra = [] if with_dtype is None else [np.dtype(with_dtype)]
    dtype = np.result_type(*arrays.values(), *extra)
    if dtype not in _FLOATS:
        if len(arrays) == 1 and not extra:
            (name, arr), = arrays.items()
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
        given = ", ".join(f"{name} {arr.dtype}" for name, arr in arrays.items())
        raise TypeError(f"{given}: NumPy would compute these in {dtype}; fastbptt computes in "
                        "float32 or float64 (pass float arrays)")
    arrays = {name: arr.astype(dtype, copy=False) for name, arr in arrays.items()}
    check_all_finite(list(arrays.items()))
    return arrays, dtype


def _unbroadcast(grad, shape):
    """The gradient of an argument of ``shape`` that was broadcast to ``grad.shape``: ``grad``
    summed over the axes broadcasting added or stretched."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _matmul_grads(dout, a, w):
    """Gradients of ``a @ w`` (a (..., K), w (K, M)), broadcast to ``dout``'s shape (..., M):
    (da in a's shape, dw)."""
    dout_own = _unbroadcast(dout, a.shape[:-1] + (w.shape[1],))     # a @ w before broadcasting
    da = dout_own @ w.T
    dw = a.reshape(-1, a.shape[-1]).T @ dout_own.reshape(-1, w.shape[1])
    return da, dw


class _StepCache:
    """What a step's forward hands to its backward; ``cell`` says which step made it."""

    def __init__(self, cell, **arrays):
        self.cell = cell
        self.__dict__.update(arrays)

    def __repr__(self):
        return f"<fastbptt.compat.cs231n {self.cell}_step cache>"


def _check_step(cell, x, prev_h, Wx, Wh, b, prev_c=None):
    """Arguments of the step forward of ``cell`` (a ``Cell`` record) in their common dtype:
    x (..., D), prev_h (..., H), Wx (D, G*H), Wh (H, G*H), b (G*H,) or anything that broadcasts
    with the products, prev_c (..., H) where the cell has a state c; all finite."""
    n_gates, with_c = cell.n_gates, "c" in cell.states
    g = f"{n_gates}*" if n_gates > 1 else ""
    arrays, dtype = _common(x=x, prev_h=prev_h, Wx=Wx, Wh=Wh, b=b, prev_c=prev_c)
    if with_c and prev_c is None:
        raise TypeError("prev_c must be an array (N, H), got None")
    x, prev_h, Wx, Wh, b = (arrays[name] for name in ("x", "prev_h", "Wx", "Wh", "b"))
    if Wh.ndim != 2 or Wh.shape[0] == 0 or Wh.shape[1] != n_gates * Wh.shape[0]:
        raise ValueError(f"Wh must have shape (H, {g}H) with H >= 1, got {Wh.shape}")
    n_hidden = Wh.shape[0]
    gh = n_gates * n_hidden
    if x.ndim == 0:
        raise ValueError("x must be an array (N, D) (or (D,)) of inputs, got a scalar")
    if Wx.shape != (x.shape[-1], gh):
        raise ValueError(f"Wx must have shape (D, {g}H) = {(x.shape[-1], gh)}, got {Wx.shape}")
    if prev_h.ndim == 0 or prev_h.shape[-1] != n_hidden:
        raise ValueError(f"prev_h must have shape (N, H) with H = {n_hidden} (the rows of Wh), "
                         f"got {prev_h.shape}")
    if b.ndim and b.shape[-1] not in (1, gh):
        raise ValueError(f"b must have shape ({g}H,) = ({gh},), got {b.shape}")
    states = {"x @ Wx": x.shape[:-1] + (gh,), "prev_h @ Wh": prev_h.shape[:-1] + (gh,),
              "b": b.shape}
    try:
        shape = np.broadcast_shapes(*states.values())
    except ValueError:
        spelled = ", ".join(f"{name} {s}" for name, s in states.items())
        raise ValueError(f"x, prev_h and b do not broadcast together: {spelled}; "
                         f"expected x (N, D), prev_h (N, H), b ({g}H,)") from None
    if shape[-1] != gh:
        raise ValueError(f"b must have shape ({g}H,) = ({gh},), got {b.shape}")
    if with_c:
        prev_c = arrays["prev_c"]
        state = shape[:-1] + (n_hidden,)
        try:
            np.broadcast_shapes(state, prev_c.shape)
        except ValueError:
            raise ValueError(f"prev_c must have shape (N, H) = {state} or one that broadcasts "
                             f"to it, got {prev_c.shape}") from None
        return x, prev_h, Wx, Wh, b, prev_c
    return x, prev_h, Wx, Wh, b


def _check_step_cache(cell, cache):
    if not isinstance(cache, _StepCache) or cache.cell != cell:
        made_by = (f"{cache.cell}_step_forward" if isinstance(cache, _StepCache)
                   else type(cache).__name__)
        raise TypeError(f"cache must be the cache returned by {cell}_step_forward, "
                        f"got one from {made_by}")
    return cache


def _check_step_grads(cache, shape, **named):
    """The upstream gradients of a step, in next_h's ``shape``; with the cache's arrays, all in
    the dtype NumPy would compute them in. Returns (gradients, cache's arrays by name)."""
    saved = {name: value for name, value in vars(cache).items()
             if isinstance(value, np.ndarray)}
    arrays, dtype = _common(with_dtype=saved["x"].dtype, **named)
    for name, arr in arrays.items():
        check_array(name, arr, shape, dtype, "(N, H)", like="next_h", scan=None)
    saved = {name: value.astype(dtype, copy=False) for name, value in saved.items()}
    return [arrays[name] for name in named], saved


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
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array {expected}, got shape {arr.shape}")
    return arr


def _check_indices(name, arr, size, what, low=0):
    if arr.size and (arr.min() < low or arr.max() >= size):
        raise ValueError(f"{name} must hold {what} in [{low}, {size}), "
                         f"got values from {arr.min()} to {arr.max()}")


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    return _sigmoid(np.asarray(x))


# ---------------------------------------------------------------------------------------------
# affine

def affine_forward(x, w, b):
    """A fully connected layer: ``out = x.reshape(N, D) @ w + b``.

    x (N, d_1, ..., d_k) with D = d_1 * ... * d_k, w (D, M), b (M,)  ->  out (N, M),
    cache = (x, w, b).
    """
    arrays, _ = _common(x=x, w=w, b=b)
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    if x.ndim < 2:
        raise ValueError(f"x must be an array (N, d_1, ..., d_k) of N examples, got shape "
                         f"{x.shape}")
    n_input = int(np.prod(x.shape[1:]))
    if w.ndim != 2 or w.shape[0] != n_input:
        raise ValueError(f"w must have shape (D, M) with D = {n_input} (the features of each "
                         f"example of x {x.shape}), got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape (M,) = ({w.shape[1]},), got {b.shape}")
    return x.reshape(x.shape[0], n_input) @ w + b, (x, w, b)


def affine_backward(dout, cache):
    """Backward of ``affine_forward``: dout (N, M) -> dx (N, d_1, ..., d_k), dw (D, M), db (M,)."""
    if not (isinstance(cache, tuple) and len(cache) == 3
            and all(isinstance(a, np.ndarray) for a in cache)):
        raise TypeError("cache must be the cache (x, w, b) returned by affine_forward")
    x, w, b = cache
    arrays, dtype = _common(dout=dout, x=x, w=w)
    dout, x, w = arrays["dout"], arrays["x"], arrays["w"]
    check_array("dout", dout, (x.shape[0], w.shape[1]), dtype, "(N, M)", like="x", scan=None)
    x2 = x.reshape(x.shape[0], -1)
    return (dout @ w.T).reshape(x.shape), x2.T @ dout, dout.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# vanilla RNN

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step of a tanh RNN: ``next_h = tanh(x @ Wx + prev_h @ Wh + b)``.

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,)  ->  next_h (N, H), cache. Arguments
    that NumPy broadcasts in that expression are taken (x (D,) with prev_h (N, H)).
    """
    x, prev_h, Wx, Wh, b = _check_step(RNN, x, prev_h, Wx, Wh, b)
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, _StepCache("rnn", x=x, prev_h=prev_h, Wx=Wx, Wh=Wh, b=b, next_h=next_h)


def rnn_step_backward(dnext_h, cache):
    """Backward of ``rnn_step_forward``: dnext_h (N, H) -> dx, dprev_h, dWx, dWh, db, each in
    the shape of its argument."""
    c = _check_step_cache("rnn", cache)
    (dnext_h,), s = _check_step_grads(c, c.next_h.shape, dnext_h=dnext_h)
    da = dnext_h * (1 - s["next_h"] * s["next_h"])        # tanh' = 1 - tanh^2
    dx, dWx = _matmul_grads(da, s["x"], s["Wx"])
    dprev_h, dWh = _matmul_grads(da, s["prev_h"], s["Wh"])
    return dx, dprev_h, dWx, dWh, _unbroadcast(da, s["b"].shape)


def _sequence_args(**named):
    """The arguments of a sequence function in their common dtype (fastbptt checks the rest)."""
    arrays, _ = _common(**named)
    return [arrays[name] for name in named]


def _backward_dtype(dh, cache):
    """The dtype a sequence backward computes in, NumPy's for dh with the forward's arrays;
    and dh as an array."""
    dh = _real_array("dh", dh)
    return dh, np.result_type(dh.dtype, cache.dtype)


def rnn_forward(x, h0, Wx, Wh, b):
    """A tanh RNN over a whole sequence, in fastbptt's kernels.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,)  ->  h (N, T, H) (read-only), cache.
    """
    return _rnn_forward(*_sequence_args(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b))


def rnn_backward(dh, cache):
    """Backward of ``rnn_forward``: dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx, dWh, db.

    A ``dh`` of a wider dtype than the forward's runs the forward again in that dtype first."""
    if not isinstance(cache, Cache) or cache.cell != "rnn":
        raise TypeError("cache must be the cache returned by fastbptt.compat.cs231n.rnn_forward, "
                        f"got {type(cache).__name__}")
    dh, dtype = _backward_dtype(dh, cache)
    if dtype != cache.dtype:
        inputs = (cache.x.swapaxes(0, 1), cache.h0, cache.Wx, cache.Wh, cache.b)
        _, cache = _rnn_forward(*(a.astype(dtype) for a in inputs))
    return _rnn_backward(dh.astype(dtype, copy=False), cache)


# ---------------------------------------------------------------------------------------------
# LSTM, gate blocks (i, f, o, g)

def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step, gate blocks (i, f, o, g) as in CS231n::

        a = x Wx + prev_h Wh + b = [a_i a_f a_o a_g]
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
        next_c = f * prev_c + i * g;                         next_h = o * tanh(next_c)

    x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    ->  next_h (N, H), next_c (N, H), cache. Arguments that NumPy broadcasts in these
    expressions are taken.
    """
    x, prev_h, Wx, Wh, b, prev_c = _check_step(LSTM, x, prev_h, Wx, Wh, b, prev_c)
    n_hidden = Wh.shape[0]
    a = x @ Wx + prev_h @ Wh + b
    ifo = sigmoid(a[..., :3 * n_hidden])
    i, f, o = ifo[..., :n_hidden], ifo[..., n_hidden:2 * n_hidden], ifo[..., 2 * n_hidden:]
    g = np.tanh(a[..., 3 * n_hidden:])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    cache = _StepCache("lstm", x=x, prev_h=prev_h, prev_c=prev_c, Wx=Wx, Wh=Wh, b=b,
                       i=i, f=f, o=o, g=g, tanh_c=tanh_c)
    return next_h, next_c, cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward of ``lstm_step_forward``: dnext_h, dnext_c (N, H)
    -> dx (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,), each in
    the shape of its argument."""
    c = _check_step_cache("lstm", cache)
    (dnext_h, dnext_c), s = _check_step_grads(c, c.tanh_c.shape, dnext_h=dnext_h,
                                              dnext_c=dnext_c)
    i, f, o, g, tanh_c = (s[name] for name in ("i", "f", "o", "g", "tanh_c"))
    gates = i.shape                          # i, f, o, g before broadcasting with prev_c
    dc = dnext_c + dnext_h * o * (1 - tanh_c * tanh_c)      # all the gradient reaching next_c
    da = np.concatenate([
        _unbroadcast(dc * g, gates) * i * (1 - i),                 # d a_i (sigmoid' = s (1 - s))
        _unbroadcast(dc * s["prev_c"], gates) * f * (1 - f),       # d a_f
        _unbroadcast(dnext_h * tanh_c, gates) * o * (1 - o),       # d a_o
        _unbroadcast(dc * i, gates) * (1 - g * g),                 # d a_g (tanh' = 1 - tanh^2)
    ], axis=-1)
    dx, dWx = _matmul_grads(da, s["x"], s["Wx"])
    dprev_h, dWh = _matmul_grads(da, s["prev_h"], s["Wh"])
    dprev_c = _unbroadcast(dc * f, s["prev_c"].shape)
    return dx, dprev_h, dprev_c, dWx, dWh, _unbroadcast(da, s["b"].shape)


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
    x, h0, Wx, Wh, b = _sequence_args(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)
    h, cache = _lstm_forward(x, h0, _swap_og(Wx), _swap_og(Wh), _swap_og(b))
    return h, LSTMCache(cache)


def lstm_backward(dh, cache):
    """Backward of ``lstm_forward``: dh (N, T, H) -> dx (N, T, D), dh0 (N, H),
    dWx (D, 4H), dWh (H, 4H), db (4H,) with gate blocks (i, f, o, g); ``.dc0`` also there.

    A ``dh`` of a wider dtype than the forward's runs the forward again in that dtype first."""
    if not isinstance(cache, LSTMCache):
        raise TypeError("cache must be the cache returned by fastbptt.compat.cs231n.lstm_forward "
                        f"(gate order i, f, o, g), got {type(cache).__name__}")
    inner = cache.cache
    dh, dtype = _backward_dtype(dh, inner)
    if dtype != inner.dtype:     # the weights are in fastbptt's order already
        inputs = (inner.x.swapaxes(0, 1), inner.h0, inner.Wx, inner.Wh, inner.b)
        _, inner = _lstm_forward(*(a.astype(dtype) for a in inputs),
                                 c0=inner.c0.astype(dtype))
    grads = _lstm_backward(dh.astype(dtype, copy=False), inner)
    return Grads(grads.dx, grads.dh0, _swap_og(grads.dWx), _swap_og(grads.dWh),
                 _swap_og(grads.db), dc0=grads.dc0)


# ---------------------------------------------------------------------------------------------
# word embedding

def word_embedding_forward(x, W):
    """Look up the vectors of words: ``out = W[x]``.

    x integer word indices in [-V, V) of any shape, as NumPy indexes (a scalar, (N,), (N, T)),
    W (V, D)  ->  out (*x.shape, D), cache = (x, W).
    """
    W = _common(W=W)[0]["W"]
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D array (V, D), got shape {W.shape}")
    x = _check_int_array("x", x, None, "of word indices")
    _check_indices("x", x, W.shape[0], "word indices", low=-W.shape[0])
    return W[x], (x, W)


def word_embedding_backward(dout, cache):
    """Backward of ``word_embedding_forward``: dout (*x.shape, D) -> dW (V, D), the sum of the
    rows of dout over every occurrence of each word."""
    if not (isinstance(cache, tuple) and len(cache) == 2
            and all(isinstance(a, np.ndarray) for a in cache)):
        raise TypeError("cache must be the cache (x, W) returned by word_embedding_forward")
    x, W = cache
    arrays, dtype = _common(dout=dout, W=W)
    spelled = "(N, T, D)" if x.ndim == 2 else "(*x.shape, D)"
    dout = check_array("dout", arrays["dout"], x.shape + (W.shape[1],), dtype, spelled,
                       like="W", scan=None)
    dW = np.zeros(W.shape, dtype)
    np.add.at(dW, x.ravel(), dout.reshape(-1, W.shape[1]))
    return dW


# ---------------------------------------------------------------------------------------------
# temporal affine and softmax loss

def temporal_affine_forward(x, w, b):
    """The same affine map at every time step: ``out[n, t] = x[n, t] @ w + b``.

    x (N, T, D), w (D, M), b (M,)  ->  out (N, T, M), cache = (x, w, b, out).
    """
    arrays, _ = _common(x=x, w=w, b=b)
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D array (N, T, D), got shape {x.shape}")
    if w.ndim != 2 or w.shape[0] != x.shape[2]:
        m = w.shape[1] if w.ndim == 2 else "M"
        raise ValueError(f"w must have shape (D, M) = ({x.shape[2]}, {m}), got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape (M,) = ({w.shape[1]},), got {b.shape}")
    n_batch, n_steps, n_input = x.shape
    out = (x.reshape(-1, n_input) @ w + b).reshape(n_batch, n_steps, -1)
    return out, (x, w, b, out)


def temporal_affine_backward(dout, cache):
    """Backward of ``temporal_affine_forward``: dout (N, T, M) -> dx (N, T, D), dw (D, M),
    db (M,)."""
    if not (isinstance(cache, tuple) and len(cache) == 4):
        raise TypeError("cache must be the cache returned by temporal_affine_forward")
    x, w, _, out = cache
    arrays, dtype = _common(dout=dout, x=x, w=w)
    dout, x, w = arrays["dout"], arrays["x"], arrays["w"]
    dout = check_array("dout", dout, out.shape, dtype, "(N, T, M)", like="x", scan=None)
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
    x = _common(x=x)[0]["x"]
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D array (N, T, V) of scores, got shape {x.shape}")
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
