"""Truncation schedules: the per-step multipliers ``xi`` that every ``<cell>_backward`` takes.

Backward runs the recurrence

    dL/dh_{t-1} = dh[t-1] + xi[t] * (dL/dh_t through step t's Jacobian)

so ``xi[t]`` scales the gradient that flows from step t back into the state step t received
(``xi[0]``: into ``h0``, and ``c0`` for the LSTM). The three usual strategies (full
computation, regular truncation, randomized truncation) are three patterns:

==============================  ========================================================
``full(T)``                     all ones: full BPTT
``chunked(T, k)``               zeros at t = k, 2k, ...: backward over one call equals
                                separate calls on the chunks [0, k), [k, 2k), ... with the
                                state carried forward (truncated BPTT, k1 = k2 = k)
``randomized(T, p, rng)``       ``1/p_t`` with probability ``p_t``, else 0, independently:
                                each gradient path s <- t is scaled by a product of
                                independent factors of mean one, so the expected gradient is
                                the full one (Tallec and Ollivier, 2017)
==============================  ========================================================

Example::

    from fastbptt import rnn_backward, truncation
    g = rnn_backward(dh, cache, xi=truncation.chunked(T, 20))

Each function returns a new 1-D array of length ``T`` (float64 unless ``dtype`` says otherwise;
backward casts it to the cache's dtype). Where ``xi[t] == 0`` the kernels skip step t's recurrent
matrix product, so truncation costs nothing.
"""
import numbers
import operator

import numpy as np

__all__ = ["full", "chunked", "randomized"]


def _count(name, value, minimum):
    """``value`` as a Python int >= ``minimum``; bool, float and the like are a TypeError."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        got = f"{type(value).__name__} {value!r}"
        raise TypeError(f"{name} must be an integer, got {got}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def full(T, *, dtype=np.float64):
    """All ones: full BPTT (what backward does when ``xi`` is None).

    Parameters
    ----------
    T : int >= 1, the number of time steps.
    dtype : float32 or float64.

    Returns
    -------
    xi : (T,) array of ones.
    """
    return np.ones(_count("T", T, 1), _float_dtype(dtype))


def chunked(T, k, *, dtype=np.float64):
    """Regular truncation every ``k`` steps: ones, with zeros at t = k, 2k, ... (t < T).

    Backward with this ``xi`` over one call equals separate backward calls on the chunks
    ``[0, k), [k, 2k), ...`` (forward state carried from chunk to chunk, no gradient carried
    back across a boundary), with the weight gradients summed. ``xi[0] == 1``: the first chunk
    still returns ``dh0``. ``k >= T`` gives full BPTT.

    Parameters
    ----------
    T : int >= 1, the number of time steps.
    k : int >= 1, the chunk length.
    dtype : float32 or float64.

    Returns
    -------
    xi : (T,) array of zeros and ones.
    """
    xi = full(T, dtype=dtype)
    xi[_count("k", k, 1)::k] = 0
    return xi


def randomized(T, p, rng=None, *, dtype=np.float64):
    """Unbiased randomized truncation: ``xi[t] = 1/p[t]`` with probability ``p[t]``, else 0.

    The entries are independent with mean one. A gradient flowing from step t back to step s
    is multiplied by ``xi[s+1] * ... * xi[t]``, whose expectation is one, so the expected
    gradient equals the full-BPTT gradient (the "randomized truncation" of the source notes;
    Tallec and Ollivier, 2017, "Unbiasing truncated backpropagation through time"). A small p
    truncates often (cheap backward, high variance); p = 1 is full BPTT.

    Parameters
    ----------
    T : int >= 1, the number of time steps.
    p : float in (0, 1], or (T,) array of them: the probability that step t's gradient is kept.
    rng : ``numpy.random.Generator``, or anything ``numpy.random.default_rng`` takes (an int
        seed, a SeedSequence, None for fresh entropy). Pass a Generator, or a seed, to make
        the draw reproducible.
    dtype : float32 or float64.

    Returns
    -------
    xi : (T,) array with entries in {0, 1/p[t]}.
    """
    T = _count("T", T, 1)
    dtype = _float_dtype(dtype)
    if isinstance(p, (bool, np.bool_)):
        raise TypeError(f"p must be a probability in (0, 1] or a (T,) array of them, got {p!r}")
    if isinstance(p, numbers.Real):
        p_arr = np.float64(p)
    else:
        p_arr = np.asarray(p)
        if p_arr.dtype.kind not in "fiu":
            raise TypeError(f"p must be a probability in (0, 1] or a (T,) array of them, "
                            f"got dtype {p_arr.dtype}")
        if p_arr.shape not in ((), (T,)):
            raise ValueError(f"p must be a scalar or have shape (T,) = ({T},), got {p_arr.shape}")
        p_arr = p_arr.astype(np.float64)
    if not np.all((p_arr > 0) & (p_arr <= 1)):   # also rejects NaN
        bad = p_arr if p_arr.ndim == 0 else p_arr[~((p_arr > 0) & (p_arr <= 1))][0]
        raise ValueError(f"p must lie in (0, 1], got {float(bad)!r}")
    if not isinstance(rng, np.random.Generator):
        try:
            rng = np.random.default_rng(rng)
        except (TypeError, ValueError) as err:
            raise TypeError(f"rng must be a numpy.random.Generator or a seed for "
                            f"numpy.random.default_rng, got {type(rng).__name__}: {err}") from None
    keep = rng.random(T) < p_arr
    return np.where(keep, 1.0 / p_arr, 0.0).astype(dtype)
