"""Elman RNN in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t)
    backward:  dA_t = (dh_t + carry) * phi'(a_t),   carry <- xi_t * dA_t Wh^T
"""
import numpy as np

from .._buffers import backward_buffers, initial_states, make_cache, step_outputs
from .._caches import RNNCache
from .._cells import RNN
from .._checkpoint import CheckpointCache, checkpointed_backward, checkpointed_forward
from .._grads import Grads
from .._layout import readonly, swap_major
from .._sharing import begin, end
from .._validation import check_backward, check_forward, check_lengths, check_option
from ._math import DPHI, PHI
from ._walk import final_state, walk


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", time_major=False, out=None,
                checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Same contract as ``fastbptt.rnn_forward``."""
    check_option(RNN, "nonlinearity", nonlinearity)
    if checkpoint is not None or type(out) is CheckpointCache:
        return checkpointed_forward(
            RNN, rnn_forward, checkpoint, x, {"h0": h0},
            {"Wx": Wx, "Wh": Wh, "b": b}, {"nonlinearity": nonlinearity},
            time_major=time_major, out=out, lengths=lengths, reverse=reverse,
            check_finite=check_finite)
    inputs = check_forward(RNN, x, {"h0": h0}, {"Wx": Wx, "Wh": Wh, "b": b},
                           time_major=time_major, out=out, check_finite=check_finite)
    lengths = check_lengths(lengths, inputs.n_batch, inputs.n_steps, reverse)
    if out is not None:
        begin(out, "refill", inputs.writes)     # out= needs the cache alone
    done = False
    try:
        states = initial_states(inputs, out)
        steps = step_outputs(RNNCache, inputs, out)   # in x's layout, as the kernels make them
        x, w, phi = inputs.x, inputs.weights, PHI[nonlinearity]
        h = swap_major(steps["h"], inputs.time_major)
        if lengths is not None:
            h.fill(0)                       # the padded steps
        for at, before, rows in walk(inputs.n_steps, lengths, reverse):
            h_prev = states["h0"][rows] if before is None else h[before]
            h[at] = phi(x[at] @ w["Wx"] + h_prev @ w["Wh"] + w["b"])
        by_length = {} if lengths is None else {
            "lengths": lengths, "reverse": bool(reverse),
            "_hT": final_state(h, states["h0"], lengths, reverse)}
        cache = make_cache(RNNCache, out, inputs, states, steps, nonlinearity=nonlinearity,
                           **by_length)
        done = True
    finally:
        if out is not None:
            end(out, "refill", inputs.writes, refill_failed=not done)
    return readonly(steps["h"]), cache


def rnn_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.rnn_backward`` (``overwrite_cache=True`` consumes the
    cache)."""
    if type(cache) is CheckpointCache:
        return checkpointed_backward(
            RNN, rnn_forward, rnn_backward, dh, cache, {"dhT": dhT}, xi=xi,
            grads=grads, h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
            out=out, check_finite=check_finite)
    inputs = check_backward(RNN, dh, cache, {"dhT": dhT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, check_finite=check_finite)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(RNN, cache, inputs)
        dphi = DPHI[cache.nonlinearity]
        dx_t = swap_major(dx, cache.time_major)
        if cache.lengths is not None:
            dx_t.fill(0)                    # the padded steps
        carry = carries["dhT"]              # (N, H), in place: new, or out's
        steps = walk(cache.h.shape[0], cache.lengths, cache.reverse)
        for s in reversed(range(len(steps))):
            at, before, rows = steps[s]
            h_prev = cache.h0[rows] if before is None else cache.h[before]
            dh_s = inputs.dh[at] + carry[rows]
            if h_grad_norms is not None:
                h_grad_norms[s] = np.linalg.norm(dh_s)
            dA = dh_s * dphi(cache.h[at])
            wg["dWx"] += cache.x[at].T @ dA
            wg["dWh"] += h_prev.T @ dA
            wg["db"] += dA.sum(axis=0)
            dx_t[at] = dA @ cache.Wx.T
            # where xi_s == 0 nothing flows back through Wh (not even a NaN), as in the kernels
            carry[rows] = inputs.xi[s] * (dA @ cache.Wh.T) if inputs.xi[s] else 0
    finally:
        end(cache, mode, inputs.writes)
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"])
