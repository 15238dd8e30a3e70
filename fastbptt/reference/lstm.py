"""LSTM in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    [a_i a_f a_g a_o] = x_t Wx + h_{t-1} Wh + b
    i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
    c_t = f * c_{t-1} + i * g,        h_t = o * tanh(c_t)
    backward, with dh_t = dh[t] + carry_h:
    dc_t = carry_c + dh_t * o * (1 - tanh(c_t)^2)
    dA_t = [dc_t g i(1-i),  dc_t c_{t-1} f(1-f),  dc_t i (1-g^2),  dh_t tanh(c_t) o(1-o)]
    carry_h <- xi_t * dA_t Wh^T,      carry_c <- xi_t * dc_t * f
"""
import numpy as np

from .._buffers import backward_buffers, initial_states, make_cache, step_outputs
from .._caches import LSTMCache
from .._cells import LSTM
from .._checkpoint import CheckpointCache, checkpointed_backward, checkpointed_forward
from .._grads import Grads
from .._layout import readonly, swap_major
from .._sharing import begin, end
from .._validation import check_backward, check_forward, check_lengths
from ._math import sigmoid
from ._walk import final_state, walk


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None,
                 checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Same contract as ``fastbptt.lstm_forward``."""
    if checkpoint is not None or type(out) is CheckpointCache:
        return checkpointed_forward(
            LSTM, lstm_forward, checkpoint, x, {"h0": h0, "c0": c0},
            {"Wx": Wx, "Wh": Wh, "b": b}, {},
            time_major=time_major, out=out, lengths=lengths, reverse=reverse,
            check_finite=check_finite)
    inputs = check_forward(LSTM, x, {"h0": h0, "c0": c0}, {"Wx": Wx, "Wh": Wh, "b": b},
                           time_major=time_major, out=out, check_finite=check_finite)
    lengths = check_lengths(lengths, inputs.n_batch, inputs.n_steps, reverse)
    if out is not None:
        begin(out, "refill", inputs.writes)     # out= needs the cache alone
    done = False
    try:
        states = initial_states(inputs, out)
        steps = step_outputs(LSTMCache, inputs, out)   # in x's layout, as the kernels make them
        x, w, H = inputs.x, inputs.weights, inputs.n_hidden
        h, c, gates = (swap_major(steps[name], inputs.time_major) for name in ("h", "c", "gates"))
        if lengths is not None:
            for arr in (h, c, gates):
                arr.fill(0)                 # the padded steps
        for at, before, rows in walk(inputs.n_steps, lengths, reverse):
            if before is None:
                h_prev, c_prev = states["h0"][rows], states["c0"][rows]
            else:
                h_prev, c_prev = h[before], c[before]
            pre = x[at] @ w["Wx"] + h_prev @ w["Wh"] + w["b"]
            i = sigmoid(pre[:, :H])
            f = sigmoid(pre[:, H:2 * H])
            g = np.tanh(pre[:, 2 * H:3 * H])
            o = sigmoid(pre[:, 3 * H:])
            gates[at] = np.concatenate([i, f, g, o], axis=1)
            c_t = f * c_prev + i * g
            c[at] = c_t
            h[at] = o * np.tanh(c_t)
        by_length = {} if lengths is None else {
            "lengths": lengths, "reverse": bool(reverse),
            "_hT": final_state(h, states["h0"], lengths, reverse),
            "_cT": final_state(c, states["c0"], lengths, reverse)}
        cache = make_cache(LSTMCache, out, inputs, states, steps, **by_length)
        done = True
    finally:
        if out is not None:
            end(out, "refill", inputs.writes, refill_failed=not done)
    return readonly(steps["h"]), cache


def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.lstm_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    if type(cache) is CheckpointCache:
        return checkpointed_backward(
            LSTM, lstm_forward, lstm_backward, dh, cache, {"dhT": dhT, "dcT": dcT}, xi=xi,
            grads=grads, h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
            out=out, check_finite=check_finite)
    inputs = check_backward(LSTM, dh, cache, {"dhT": dhT, "dcT": dcT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, check_finite=check_finite)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(LSTM, cache, inputs)
        dx_t = swap_major(dx, cache.time_major)
        if cache.lengths is not None:
            dx_t.fill(0)                    # the padded steps
        # (N, H) each, in place: the arrays backward_buffers gave, new or out's
        carry_h, carry_c = carries["dhT"], carries["dcT"]
        steps = walk(cache.h.shape[0], cache.lengths, cache.reverse)
        for s in reversed(range(len(steps))):
            at, before, rows = steps[s]
            if before is None:
                h_prev, c_prev = cache.h0[rows], cache.c0[rows]
            else:
                h_prev, c_prev = cache.h[before], cache.c[before]
            i, f, g, o = np.split(cache.gates[at], 4, axis=1)
            dh_s = inputs.dh[at] + carry_h[rows]
            if h_grad_norms is not None:
                h_grad_norms[s] = np.linalg.norm(dh_s)
            tanh_c = np.tanh(cache.c[at])
            dc = carry_c[rows] + dh_s * o * (1 - tanh_c * tanh_c)
            dA = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                 dc * i * (1 - g * g), dh_s * tanh_c * o * (1 - o)], axis=1)
            wg["dWx"] += cache.x[at].T @ dA
            wg["dWh"] += h_prev.T @ dA
            wg["db"] += dA.sum(axis=0)
            dx_t[at] = dA @ cache.Wx.T
            # where xi_s == 0 nothing flows back through Wh (not even a NaN), as in the kernels
            carry_h[rows] = inputs.xi[s] * (dA @ cache.Wh.T) if inputs.xi[s] else 0
            carry_c[rows] = inputs.xi[s] * (dc * f)
    finally:
        end(cache, mode, inputs.writes)
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"], dc0=carries["dcT"])
