"""Gradient clipping, in place: by global norm (Pascanu et al. 2013) and by value (min-char-rnn).

Exploding gradients are tamed by rescaling or clipping the weight
gradients before the update::

    g = fastbptt.rnn_backward(dh, cache)
    norm = fastbptt.clip.clip_grad_norm(g, max_norm=5.0)   # dWx, dWh, db rescaled together
    norm = fastbptt.clip.clip_grad_value(g, 5.0)           # or: each entry into [-5, 5]

``grads`` is any of

- a ``Grads`` returned by a backward: its *weight* gradients ``dWx, dWh, db`` (and ``dbh`` for
  the GRU) are clipped; ``dx`` and ``dh0`` are left alone (they are not parameter gradients);
- a ``WeightGrads`` (``fastbptt.tbptt``), a mapping of name -> array (its values), a single
  array, or any iterable of arrays (e.g. your output layer's ``dWy`` beside the RNN's).

Every array must be a writeable float32/float64 NumPy array, each listed once (arrays that share
memory are refused: clipping one would clip the other again). Both functions return the global
L2 norm of all the arrays *before* clipping, as a Python float (computed in float64, and
safely even where squaring a float32 entry would overflow). The scale ``max_norm / norm`` is
applied in float64 where it would underflow in the arrays' dtype (float32 gradients near 3e38
with a tiny ``max_norm``), so clipping never turns a gradient into zeros.

Non-finite gradients: by default both functions raise ``NonFiniteGradientError`` (a
``FloatingPointError`` and a ``ValueError``) before touching anything. With
``error_if_nonfinite=False`` they return the non-finite norm (``nan`` or ``inf``) instead, so a
training loop can skip the update: ``clip_grad_norm`` then leaves the arrays unchanged (a scale
of ``max_norm / inf`` would only turn them into zeros and NaNs), while ``clip_grad_value`` still
clips (``+-inf`` become ``+-clip_value``; NaN stays NaN).
"""
import math
from collections.abc import Mapping

import numpy as np

from ._grads import Grads

__all__ = ["clip_grad_norm", "clip_grad_value", "global_norm", "NonFiniteGradientError"]


class NonFiniteGradientError(FloatingPointError, ValueError):
    """The gradients contain NaN or infinity, so their norm is not finite."""


def _arrays(grads, writeable=True):
    """The list of arrays ``grads`` stands for (see the module docstring)."""
    if isinstance(grads, np.ndarray):
        arrays = [grads]
    elif isinstance(grads, Grads):
        arrays = [grads.dWx, grads.dWh, grads.db]
        if getattr(grads, "dbh", None) is not None:
            arrays.append(grads.dbh)
    elif isinstance(grads, Mapping):
        arrays = list(grads.values())
    else:
        try:
            arrays = list(grads)
        except TypeError:
            raise TypeError("grads must be an array, a Grads, a mapping of arrays or an "
                            f"iterable of arrays, got {type(grads).__name__}") from None
    for i, arr in enumerate(arrays):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"grads[{i}] must be a NumPy array, got {type(arr).__name__}")
        if arr.dtype not in (np.float32, np.float64):
            raise TypeError(f"grads[{i}] must be a float32 or float64 array, "
                            f"got dtype {arr.dtype}")
        if writeable and not arr.flags.writeable:
            raise ValueError(f"grads[{i}] is read-only; clipping works in place")
        for j in range(i):
            if np.may_share_memory(arrays[j], arr):
                raise ValueError(
                    f"grads[{j}] and grads[{i}] " + ("are the same array" if arrays[j] is arr
                                                     else "share memory")
                    + ": each gradient must be listed once (it would be counted, and scaled, "
                    "twice)")
    return arrays


def _norm(arrays):
    """The global L2 norm in float64: nan if any entry is NaN, inf if any is infinite, and
    finite (by rescaling) where the entries are finite but their squares overflow."""
    flats = [a.reshape(-1).astype(np.float64, copy=False) for a in arrays]
    with np.errstate(over="ignore", invalid="ignore"):
        total = sum(float(np.dot(f, f)) for f in flats)
    if math.isfinite(total):
        return math.sqrt(total)
    if any(np.isnan(f).any() for f in flats):
        return math.nan
    if any(np.isinf(f).any() for f in flats):
        return math.inf
    scale = max(float(np.abs(f).max()) for f in flats if f.size)
    return scale * math.sqrt(sum(float(np.dot(f / scale, f / scale)) for f in flats))


def _positive(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not value > 0:   # also NaN
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def _raise_nonfinite(norm):
    raise NonFiniteGradientError(
        f"the gradient norm is {norm}: the gradients contain NaN or infinity (pass "
        "error_if_nonfinite=False to get the norm back and skip the update instead)")


def global_norm(grads):
    """The L2 norm of all the arrays in ``grads`` taken together, as a float (nan or inf where
    they are not finite). Nothing is modified."""
    return _norm(_arrays(grads, writeable=False))


def clip_grad_norm(grads, max_norm, *, error_if_nonfinite=True):
    """Rescale ``grads`` in place so that their global L2 norm is at most ``max_norm``.

    If ``norm = ||(g_1, ..., g_n)||_2 > max_norm``, every array is multiplied by
    ``max_norm / norm`` (Pascanu, Mikolov and Bengio 2013, "On the difficulty of training
    recurrent neural networks", algorithm 1): the direction is kept, only the step shrinks.
    Otherwise nothing changes.

    Parameters
    ----------
    grads : the gradient arrays (see the module docstring); modified in place.
    max_norm : positive float (``inf``: only measure).
    error_if_nonfinite : raise ``NonFiniteGradientError`` (default) where the norm is NaN or
        inf; if False, return that norm and leave the arrays unchanged.

    Returns
    -------
    norm : float, the global norm before clipping.
    """
    max_norm = _positive("max_norm", max_norm)
    arrays = _arrays(grads)
    norm = _norm(arrays)
    if not math.isfinite(norm):
        if error_if_nonfinite:
            _raise_nonfinite(norm)
        return norm
    if norm > max_norm:
        scale = max_norm / norm
        for arr in arrays:
            if scale >= np.finfo(arr.dtype).tiny:
                arr *= arr.dtype.type(scale)
            else:
                # the scale underflows in the arrays' dtype (even in float64 where norm is
                # near its largest): divide by norm, then multiply by max_norm, in float64
                np.divide(arr, norm, out=arr, dtype=np.float64, casting="same_kind")
                np.multiply(arr, max_norm, out=arr, dtype=np.float64, casting="same_kind")
    return norm


def clip_grad_value(grads, clip_value, *, error_if_nonfinite=True):
    """Clip every entry of ``grads`` into ``[-clip_value, clip_value]`` in place.

    This is min-char-rnn's ``np.clip(dparam, -5, 5, out=dparam)``: it bounds each entry
    separately, so unlike ``clip_grad_norm`` it can change the gradient's direction.

    Parameters
    ----------
    grads : the gradient arrays (see the module docstring); modified in place.
    clip_value : positive float.
    error_if_nonfinite : raise ``NonFiniteGradientError`` (default, nothing modified) where
        the gradients contain NaN or inf; if False, clip anyway (``+-inf`` become
        ``+-clip_value``, NaN stays) and return the non-finite norm.

    Returns
    -------
    norm : float, the global L2 norm before clipping.
    """
    clip_value = _positive("clip_value", clip_value)
    arrays = _arrays(grads)
    norm = _norm(arrays)
    if not math.isfinite(norm) and error_if_nonfinite:
        _raise_nonfinite(norm)
    for arr in arrays:
        np.clip(arr, -clip_value, clip_value, out=arr)
    return norm
