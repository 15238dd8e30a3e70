"""LSTM on the compiled kernels (``src/_lstm.pyx``)."""
import numpy as np

from ._blas_threads import largest_product, run_kernel
from ._kernels import load
from ._results import (Grads, _readonly, dx_buffer, new_cache, packed_weights,
                       weight_grad_buffers, workspace)
from ._validation import check_backward, check_forward, empty_steps, from_time_major, to_time_major

_lstm = load("_lstm")


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None):
    """Run an LSTM over all time steps, gate blocks (i, f, g, o) as in PyTorch::

        [a_i a_f a_g a_o] = x_t Wx + h_{t-1} Wh + b
        i, f, o = sigma(a_i), sigma(a_f), sigma(a_o);   g = tanh(a_g)
        c_t = f * c_{t-1} + i * g;                      h_t = o * tanh(c_t)

    Parameters
    ----------
    x : (N, T, D) array, or (T, N, D) if ``time_major``; float32 or float64.
    h0 : (N, H) array or None (zeros).
    Wx : (D, 4H), Wh : (H, 4H), b : (4H,) arrays of x's dtype; column blocks i, f, g, o.
    c0 : (N, H) initial cell state, or None (zeros).
    out : a cache from an earlier ``lstm_forward`` with the same shapes, dtype and layout, or
        None. Its arrays are refilled instead of allocating new ones (a loop over the chunks of
        a stream), and it is returned as the cache; the hidden states it returned before are
        overwritten. ``h0`` and ``c0`` may be views of its own final states (``out.hT``,
        ``out.cT``).

    Returns
    -------
    h : (N, T, H) (or (T, N, H)) hidden states, read-only (backward differentiates them).
    cache : for ``lstm_backward``; ``cache.hT`` and ``cache.cT`` are the final states.
    """
    a = check_forward("lstm", x, h0, Wx, Wh, b, time_major=time_major, c0=c0, out=out)
    tm = a.time_major
    if out is None:   # in x's layout
        h = empty_steps(a.n_steps, a.n_batch, a.n_hidden, a.dtype, tm)
        c = empty_steps(a.n_steps, a.n_batch, a.n_hidden, a.dtype, tm)
        gates = empty_steps(a.n_steps, a.n_batch, 4 * a.n_hidden, a.dtype, tm)
    else:
        h, c, gates = (from_time_major(arr, tm) for arr in (out.h, out.c, out.gates))
    packed = packed_weights(_lstm, out, a.n_batch, a.n_hidden, a.dtype)
    if a.n_batch:
        run_kernel(_lstm.forward, largest_product(a.x, a.Wh),
                   a.x_buffer, a.h0, a.c0, a.Wx, a.Wh, a.b, h, c, gates, tm, packed=packed)
    cache = new_cache(out, "lstm", tm, x=a.x, h0=a.h0, c0=a.c0, Wx=a.Wx, Wh=a.Wh, b=a.b,
                      h=to_time_major(h, tm), c=to_time_major(c, tm),
                      gates=to_time_major(gates, tm))
    return _readonly(h), cache


def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None):
    """Backpropagate through every time step of ``lstm_forward``.

    Parameters
    ----------
    dh : (N, T, H) (or (T, N, H)) array: dL/dh_t for every t; None means zeros.
    cache : from ``lstm_forward``; only read (unless ``overwrite_cache``), so backward may run on
        it more than once.
    dhT, dcT : (N, H) gradients flowing into the final hidden and cell states from a later
        segment, or None.
    xi : (T,) truncation multipliers (``fastbptt.truncation``); None is full BPTT. ``xi[t]``
        scales both the h- and the c-gradient flowing from step t into the states it received
        (``xi[0]``: h0 and c0).
    grads : a ``Grads`` (or anything with arrays ``dWx``, ``dWh``, ``db``) to add the weight
        gradients into in place instead of allocating them.
    h_grad_norms : (T,) array of the cache's dtype, or None. If given, receives for every step
        the Frobenius norm of dL/dh_t, the whole gradient reaching h_t; computed inside the
        loop, no extra pass.
    overwrite_cache : bool. If True, backward writes its (T, N, 4H) workspace over the cache's
        gate values instead of allocating one (as SciPy's ``overwrite_a``): the cache is then
        consumed, and another backward on it raises a ValueError (``forward(..., out=cache)``
        refills it). ``cache.hT``, ``cache.cT`` and the hidden states forward returned stay as
        they were.
    out : the result of an earlier ``lstm_backward`` with the same shapes, or None. Its
        arrays receive this call's gradients instead of new ones: dx, dh0, dc0 and, unless
        ``grads`` is given, the weight gradients, all overwritten; the result holds them.
        With ``forward(..., out=cache)`` as well, a loop over chunks allocates nothing after
        its first (backward's scratch array, if it needs one, stays on the cache).

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)`` with the attribute ``dc0``.
    """
    g = check_backward("lstm", dh, cache, dhT=dhT, dcT=dcT, xi=xi, grads=grads,
                       h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache, out=out)
    n_steps, n_batch, n_hidden = cache.h.shape
    tm = cache.time_major
    x = from_time_major(cache.x, tm)
    dx = dx_buffer(cache, out)   # in x's layout; the kernel writes every element
    out = weight_grad_buffers(cache, g.grads, out)
    carry_h, carry_c = g.dhT, g.dcT
    if n_batch:
        gates = from_time_major(cache.gates, tm)
        # dA_t overwrites gates_t once step t has read it
        dA = gates if g.overwrite_cache else workspace(cache, "dA", gates.shape)
        run_kernel(_lstm.backward, largest_product(cache.x, cache.Wh),
                   g.dh_buffer, from_time_major(cache.h, tm), from_time_major(cache.c, tm),
                   gates, cache.h0, cache.c0, x, cache.Wx, cache.Wh, g.xi, carry_h, carry_c,
                   dA, dx, out["dWx"], out["dWh"], out["db"], g.h_grad_norms, tm,
                   packed=packed_weights(_lstm, cache, n_batch, n_hidden, cache.dtype))
    else:
        g.h_grad_norms[...] = 0
    return Grads(dx, carry_h, out["dWx"], out["dWh"], out["db"], dc0=carry_c)
