"""GRU on the compiled kernels (``src/_gru.pyx``)."""
import numpy as np

from ._blas_threads import largest_product, run_kernel
from ._kernels import load
from ._results import (Grads, _readonly, dx_buffer, new_cache, packed_weights,
                       weight_grad_buffers, workspace)
from ._validation import check_backward, check_forward, empty_steps, from_time_major, to_time_major

_gru = load("_gru")


def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None):
    """Run a GRU over all time steps (PyTorch semantics, gate blocks r, z, n)::

        [xr xz xn] = x_t Wx + b,   [hr hz hn] = h_{t-1} Wh + bh
        r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters
    ----------
    x : (N, T, D) array, or (T, N, D) if ``time_major``; float32 or float64.
    h0 : (N, H) array or None (zeros).
    Wx : (D, 3H), Wh : (H, 3H), b : (3H,) arrays of x's dtype; b is the input-side bias.
    bh : (3H,) hidden-side bias, or None (zeros).
    out : a cache from an earlier ``gru_forward`` with the same shapes, dtype and layout, or
        None. Its arrays are refilled instead of allocating new ones (a loop over the chunks of
        a stream), and it is returned as the cache; the hidden states it returned before are
        overwritten. ``h0`` may be a view of its own final state (``out.hT``).

    Returns
    -------
    h : (N, T, H) (or (T, N, H)) hidden states, read-only (backward differentiates them).
    cache : for ``gru_backward``; ``cache.hT`` is the final state.
    """
    a = check_forward("gru", x, h0, Wx, Wh, b, time_major=time_major, bh=bh, out=out)
    tm = a.time_major
    if out is None:   # in x's layout
        h = empty_steps(a.n_steps, a.n_batch, a.n_hidden, a.dtype, tm)
        gates = empty_steps(a.n_steps, a.n_batch, 3 * a.n_hidden, a.dtype, tm)
        hn = empty_steps(a.n_steps, a.n_batch, a.n_hidden, a.dtype, tm)
    else:
        h, gates, hn = (from_time_major(arr, tm) for arr in (out.h, out.gates, out.hn))
    cache = new_cache(out, "gru", tm, x=a.x, h0=a.h0, Wx=a.Wx, Wh=a.Wh, b=a.b, bh=a.bh,
                      h=to_time_major(h, tm), gates=to_time_major(gates, tm),
                      hn=to_time_major(hn, tm))
    if a.n_batch:
        hh = workspace(cache, "hh", (a.n_batch, 3 * a.n_hidden))   # h_{t-1} @ Wh of a step
        run_kernel(_gru.forward, largest_product(a.x, a.Wh),
                   a.x_buffer, a.h0, a.Wx, a.Wh, a.b, a.bh, h, gates, hn, hh, tm,
                   packed=packed_weights(_gru, out, a.n_batch, a.n_hidden, a.dtype))
    return _readonly(h), cache


def gru_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None):
    """Backpropagate through every time step of ``gru_forward``.

    Parameters
    ----------
    dh : (N, T, H) (or (T, N, H)) array: dL/dh_t for every t; None means zeros.
    cache : from ``gru_forward``.
    dhT : (N, H) gradient flowing into the final state from a later segment, or None.
    xi : (T,) truncation multipliers (``fastbptt.truncation``); None is full BPTT. ``xi[t]``
        scales all the gradient flowing from step t into the state it received (``xi[0]``: h0),
        through Wh and through the direct ``z * h_{t-1}`` path alike.
    grads : a ``Grads`` (or anything with arrays ``dWx``, ``dWh``, ``db``, ``dbh``) to add the
        weight gradients into in place instead of allocating them.
    h_grad_norms : (T,) array of the cache's dtype, or None. If given, receives for every step
        the Frobenius norm of dL/dh_t, the whole gradient reaching h_t; computed inside the loop.
    overwrite_cache : bool. If True, backward writes its workspace, (T, N, 3H) hidden-side
        and (T, N, H) input-side gradients, over the cache's gates and hn instead of allocating
        it (as SciPy's ``overwrite_a``): the cache is then consumed, and another backward on it
        raises a ValueError (``forward(..., out=cache)`` refills it). ``cache.hT`` and the
        hidden states forward returned stay as they were.
    out : the result of an earlier ``gru_backward`` with the same shapes, or None. Its
        arrays receive this call's gradients instead of new ones: dx, dh0 and, unless
        ``grads`` is given, the weight gradients, all overwritten; the result holds them.
        With ``forward(..., out=cache)`` as well, a loop over chunks allocates nothing after
        its first (backward's scratch arrays, if it needs them, stay on the cache).

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)`` with the hidden-bias gradient as ``.dbh``.
    """
    g = check_backward("gru", dh, cache, dhT=dhT, xi=xi, grads=grads,
                       h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache, out=out)
    n_steps, n_batch, n_hidden = cache.h.shape
    tm = cache.time_major
    x = from_time_major(cache.x, tm)
    dx = dx_buffer(cache, out)   # in x's layout; the kernel writes every element
    out = weight_grad_buffers(cache, g.grads, out)
    carry = g.dhT
    if n_batch:
        gates, hn = from_time_major(cache.gates, tm), from_time_major(cache.hn, tm)
        if g.overwrite_cache:
            # dAh_t and dxn_t overwrite gates_t and hn_t once step t has read them
            dAh, dxn = gates, hn
        else:
            dAh, dxn = workspace(cache, "dAh", gates.shape), workspace(cache, "dxn", hn.shape)
        run_kernel(_gru.backward, largest_product(cache.x, cache.Wh),
                   g.dh_buffer, from_time_major(cache.h, tm), cache.h0, x, cache.Wx, cache.Wh,
                   gates, hn, g.xi, carry, dAh, dxn, dx, out["dWx"], out["dWh"],
                   out["db"], out["dbh"], g.h_grad_norms, tm,
                   packed=packed_weights(_gru, cache, n_batch, n_hidden, cache.dtype))
    else:
        g.h_grad_norms[...] = 0
    return Grads(dx, carry, out["dWx"], out["dWh"], out["db"], dbh=out["dbh"])
