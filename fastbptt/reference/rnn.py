"""Elman RNN in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t)
    backward:  dA_t = (dh_t + carry) * phi'(a_t),   carry <- xi_t * dA_t Wh^T
"""
import numpy as np

from .._buffers import backward_buffers, initial_states, make_cache, step_outputs
from .._caches import RNNCache
from .._cells import RNN
from .._grads import Grads
from .._layout import readonly, swap_major
from .._sharing import begin, end
from .._validation import check_backward, check_forward, check_option
from ._math import DPHI, PHI


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", time_major=False, out=None,
                check_finite=True):
    """Same contract as ``fastbptt.rnn_forward``."""
    check_option(RNN, "nonlinearity", nonlinearity)
    inputs = check_forward(RNN, x, {"h0": h0}, {"Wx": Wx, "Wh": Wh, "b": b},
                           time_major=time_major, out=out, check_finite=check_finite)
    if out is not None:
        begin(out, "refill", inputs.writes)     # out= needs the cache alone
    done = False
    try:
        states = initial_states(inputs, out)
        steps = step_outputs(RNNCache, inputs, out)   # in x's layout, as the kernels make them
        x, w, phi = inputs.x, inputs.weights, PHI[nonlinearity]
        h = swap_major(steps["h"], inputs.time_major)
        h_prev = states["h0"]
        for t in range(inputs.n_steps):
            h_prev = h[t] = phi(x[t] @ w["Wx"] + h_prev @ w["Wh"] + w["b"])
        cache = make_cache(RNNCache, out, inputs, states, steps, nonlinearity=nonlinearity)
        done = True
    finally:
        if out is not None:
            end(out, "refill", inputs.writes, refill_failed=not done)
    return readonly(steps["h"]), cache


def rnn_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.rnn_backward`` (``overwrite_cache=True`` consumes the
    cache)."""
    inputs = check_backward(RNN, dh, cache, {"dhT": dhT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, check_finite=check_finite)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(RNN, cache, inputs)
        dphi = DPHI[cache.nonlinearity]
        dx_t = swap_major(dx, cache.time_major)
        carry = carries["dhT"]
        for t in reversed(range(cache.h.shape[0])):
            h_prev = cache.h[t - 1] if t else cache.h0
            if h_grad_norms is not None:
                h_grad_norms[t] = np.linalg.norm(inputs.dh[t] + carry)
            dA = (inputs.dh[t] + carry) * dphi(cache.h[t])
            wg["dWx"] += cache.x[t].T @ dA
            wg["dWh"] += h_prev.T @ dA
            wg["db"] += dA.sum(axis=0)
            dx_t[t] = dA @ cache.Wx.T
            # where xi_t == 0 nothing flows back through Wh (not even a NaN), as in the kernels
            carry = inputs.xi[t] * (dA @ cache.Wh.T) if inputs.xi[t] else np.zeros_like(carry)
        carries["dhT"][...] = carry   # into the array backward_buffers gave: new, or out's
    finally:
        end(cache, mode, inputs.writes)
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"])
