"""Elman RNN on the compiled kernels (``src/_rnn.pyx``)."""
import numpy as np

from ._blas_threads import largest_product, run_kernel
from ._kernels import load
from ._results import (Grads, _readonly, dx_buffer, new_cache, packed_weights,
                       weight_grad_buffers, workspace)
from ._validation import (check_backward, check_forward, check_nonlinearity, empty_steps,
                          from_time_major, to_time_major)

_rnn = load("_rnn")


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", time_major=False, out=None):
    """Run an Elman RNN over all time steps: ``h_t = phi(x_t Wx + h_{t-1} Wh + b)``.

    Parameters
    ----------
    x : (N, T, D) array, or (T, N, D) if ``time_major``; float32 or float64.
    h0 : (N, H) array or None (zeros).
    Wx : (D, H), Wh : (H, H), b : (H,) arrays of x's dtype.
    nonlinearity : 'tanh', 'sigmoid' or 'relu'.
    out : a cache from an earlier ``rnn_forward`` with the same shapes, dtype and layout, or
        None. Its arrays are refilled instead of allocating new ones (a loop over the chunks of
        a stream), and it is returned as the cache; the hidden states it returned before are
        overwritten. ``h0`` may be a view of its own final state (``out.hT``).

    Returns
    -------
    h : (N, T, H) (or (T, N, H)) hidden states, read-only (backward differentiates them).
    cache : for ``rnn_backward``; ``cache.hT`` is the final state.
    """
    nonlinearity = check_nonlinearity(nonlinearity)
    a = check_forward("rnn", x, h0, Wx, Wh, b, time_major=time_major, out=out)
    tm = a.time_major
    if out is None:
        h = empty_steps(a.n_steps, a.n_batch, a.n_hidden, a.dtype, tm)   # in x's layout
    else:
        h = from_time_major(out.h, tm)
    if a.n_batch:
        run_kernel(_rnn.forward, largest_product(a.x, a.Wh),
                   a.x_buffer, a.h0, a.Wx, a.Wh, a.b, h, _rnn.NONLINEARITIES[nonlinearity], tm,
                   packed=packed_weights(_rnn, out, a.n_batch, a.n_hidden, a.dtype))
    cache = new_cache(out, "rnn", tm, x=a.x, h0=a.h0, Wx=a.Wx, Wh=a.Wh, b=a.b,
                      h=to_time_major(h, tm),
                  nonlinearity=nonlinearity)
    return _readonly(h), cache


LEAN_ROWS = 64   # rows (steps x sequences) per block of the lean backward; see lean_block_steps


def lean_block_steps(n_steps, n_batch, time_major):
    """Steps per block B of the lean backward (``overwrite_cache=True``), its workspace being
    (B, N, H).

    Where a block's rows are consecutive (time-major, or N == 1), its weight gradients and dx
    are one product each over its B*N rows: B = LEAN_ROWS // N (at least 1, at most T).
    Measured (``benchmarks/rnn_lean_interleaved.py``, forward+backward against the default,
    time-major, min of 10 rounds): at N = 1, T = 1000 blocks of 4 and 16 rows cost 31-46% and
    8-12% more time, 64 rows and more within 1%; at N = 1, T = 25 (case C) blocks of 4, 8, 13
    steps cost 21-26%, 8-10% and 5-8%, all 25 within 2%. So 64 rows, and no cap below T: a
    short sequence keeps a workspace as large as its states, which is at most 64 rows of H.
    Batch-major with N > 1 the rows of a step are T apart, and the products go step by step
    over its N rows, with B = 1. (Tried instead: per sequence over a block of B steps, 3N
    products per block; on cases M and L, against the default, it took 1.13-1.37x at B = 16
    and 1.01-1.16x at B = 32, where step by step took 1.05-1.09x in the same rounds.)"""
    if not (time_major or n_batch == 1):
        return 1
    return max(1, min(n_steps, LEAN_ROWS // n_batch))


def rnn_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None):
    """Backpropagate through every time step of ``rnn_forward``.

    Parameters
    ----------
    dh : (N, T, H) (or (T, N, H)) array: dL/dh_t for every t; None means zeros.
    cache : from ``rnn_forward``.
    dhT : (N, H) gradient flowing into the final state from a later segment, or None.
    xi : (T,) truncation multipliers (``fastbptt.truncation``); None is full BPTT. ``xi[t]``
        scales the gradient flowing from step t into the state it received (``xi[0]``: h0).
    grads : a ``Grads`` (or anything with arrays ``dWx``, ``dWh``, ``db``) to add the weight
        gradients into in place instead of allocating them.
    h_grad_norms : (T,) array of the cache's dtype, or None. If given, receives for every step
        the Frobenius norm of dL/dh_t, the whole gradient reaching h_t (what
        ``fastbptt gradflow`` plots); computed inside the loop, no extra pass.
    overwrite_cache : bool, as for ``lstm_backward`` and ``gru_backward``: True consumes the
        cache (another backward on it raises a ValueError). The RNN's cache holds no gate values
        to overwrite, only the hidden states forward returned, which stay as they were; instead,
        True runs the lean backward, whose workspace is a few steps (``lean_block_steps``)
        instead of the (T, N, H) of the default: it adds the weight gradients and dx block by
        block, in products over fewer rows (the same results to rounding).
    out : the result of an earlier ``rnn_backward`` with the same shapes, or None. Its
        arrays receive this call's gradients instead of new ones: dx, dh0 and, unless
        ``grads`` is given, the weight gradients, all overwritten; the result holds them.
        With ``forward(..., out=cache)`` as well, a loop over chunks allocates nothing after
        its first (backward's scratch array, if it needs one, stays on the cache).

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)``.
    """
    g = check_backward("rnn", dh, cache, dhT=dhT, xi=xi, grads=grads,
                       h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache, out=out)
    n_steps, n_batch, n_hidden = cache.h.shape
    tm = cache.time_major
    x = from_time_major(cache.x, tm)
    dx = dx_buffer(cache, out)   # in x's layout; the kernel writes every element
    out = weight_grad_buffers(cache, g.grads, out)
    carry = g.dhT
    if n_batch:
        h = from_time_major(cache.h, tm)
        if g.overwrite_cache:
            n_block = lean_block_steps(n_steps, n_batch, tm)
            dA = workspace(cache, "dA_lean", (n_block, n_batch, n_hidden))
            kernel = _rnn.backward_lean
        else:
            dA = workspace(cache, "dA", h.shape)
            kernel = _rnn.backward
        run_kernel(kernel, largest_product(cache.x, cache.Wh),
                   g.dh_buffer, h, cache.h0, x, cache.Wx, cache.Wh, g.xi,
                   carry, dA, dx, out["dWx"], out["dWh"], out["db"], g.h_grad_norms,
                   _rnn.NONLINEARITIES[cache.nonlinearity], tm,
                   packed=packed_weights(_rnn, cache, n_batch, n_hidden, cache.dtype))
    else:
        g.h_grad_norms[...] = 0
    return Grads(dx, carry, out["dWx"], out["dWh"], out["db"])
