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
from .._grads import Grads
from .._layout import readonly, swap_major
from .._sharing import begin, end
from .._validation import check_backward, check_forward
from ._math import sigmoid


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.lstm_forward``."""
    inputs = check_forward(LSTM, x, {"h0": h0, "c0": c0}, {"Wx": Wx, "Wh": Wh, "b": b},
                           time_major=time_major, out=out, check_finite=check_finite)
    if out is not None:
        begin(out, "refill", inputs.writes)     # out= needs the cache alone
    done = False
    try:
        states = initial_states(inputs, out)
        steps = step_outputs(LSTMCache, inputs, out)   # in x's layout, as the kernels make them
        x, w, H = inputs.x, inputs.weights, inputs.n_hidden
        h, c, gates = (swap_major(steps[name], inputs.time_major) for name in ("h", "c", "gates"))
        h_prev, c_prev = states["h0"], states["c0"]
        for t in range(inputs.n_steps):
            pre = x[t] @ w["Wx"] + h_prev @ w["Wh"] + w["b"]
            i = sigmoid(pre[:, :H])
            f = sigmoid(pre[:, H:2 * H])
            g = np.tanh(pre[:, 2 * H:3 * H])
            o = sigmoid(pre[:, 3 * H:])
            gates[t] = np.concatenate([i, f, g, o], axis=1)
            c_prev = c[t] = f * c_prev + i * g
            h_prev = h[t] = o * np.tanh(c_prev)
        cache = make_cache(LSTMCache, out, inputs, states, steps)
        done = True
    finally:
        if out is not None:
            end(out, "refill", inputs.writes, refill_failed=not done)
    return readonly(steps["h"]), cache


def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.lstm_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    inputs = check_backward(LSTM, dh, cache, {"dhT": dhT, "dcT": dcT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, check_finite=check_finite)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(LSTM, cache, inputs)
        dx_t = swap_major(dx, cache.time_major)
        carry_h, carry_c = carries["dhT"], carries["dcT"]
        for t in reversed(range(cache.h.shape[0])):
            h_prev = cache.h[t - 1] if t else cache.h0
            c_prev = cache.c[t - 1] if t else cache.c0
            i, f, g, o = np.split(cache.gates[t], 4, axis=1)
            dh_t = inputs.dh[t] + carry_h
            if h_grad_norms is not None:
                h_grad_norms[t] = np.linalg.norm(dh_t)
            tanh_c = np.tanh(cache.c[t])
            dc = carry_c + dh_t * o * (1 - tanh_c * tanh_c)
            dA = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                 dc * i * (1 - g * g), dh_t * tanh_c * o * (1 - o)], axis=1)
            wg["dWx"] += cache.x[t].T @ dA
            wg["dWh"] += h_prev.T @ dA
            wg["db"] += dA.sum(axis=0)
            dx_t[t] = dA @ cache.Wx.T
            # where xi_t == 0 nothing flows back through Wh (not even a NaN), as in the kernels
            carry_h = (inputs.xi[t] * (dA @ cache.Wh.T) if inputs.xi[t]
                       else np.zeros_like(carry_h))
            carry_c = inputs.xi[t] * (dc * f)
        carries["dhT"][...] = carry_h   # into the arrays backward_buffers gave: new, or out's
        carries["dcT"][...] = carry_c
    finally:
        end(cache, mode, inputs.writes)
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"], dc0=carries["dcT"])
