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

from .._cells import LSTM
from .._dispatch import cell_backward, cell_forward
from .._validation import NUMPY_CHECKS
from ._math import sigmoid
from ._walk import run_backward, run_forward


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None,
                 checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Same contract as ``fastbptt.lstm_forward``."""
    return cell_forward(LSTM, lstm_forward, run_forward, _forward_steps, NUMPY_CHECKS, x,
                        {"h0": h0, "c0": c0}, {"Wx": Wx, "Wh": Wh, "b": b}, {}, time_major,
                        out, checkpoint, lengths, reverse, check_finite)


def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.lstm_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    return cell_backward(LSTM, lstm_forward, lstm_backward, run_backward, _backward_steps,
                         NUMPY_CHECKS, dh, cache, {"dhT": dhT, "dcT": dcT}, xi, grads,
                         h_grad_norms, overwrite_cache, out, check_finite)


def _forward_steps(inputs, states, steps, walk):
    """h_t, c_t and the gate values of every step of ``walk`` (``_walk.run_forward``)."""
    x, w, H = inputs.x, inputs.weights, inputs.n_hidden
    h, c, gates = steps["h"], steps["c"], steps["gates"]
    for at, before, rows in walk:
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


def _backward_steps(cache, inputs, walk, dx, carries, wg):
    """Backpropagate through every step of ``walk``, from the last (``_walk.run_backward``)."""
    norms = inputs.h_grad_norms
    # (N, H) each, in place: the arrays backward_buffers gave, new or out's
    carry_h, carry_c = carries["dhT"], carries["dcT"]
    for s in reversed(range(len(walk))):
        at, before, rows = walk[s]
        if before is None:
            h_prev, c_prev = cache.h0[rows], cache.c0[rows]
        else:
            h_prev, c_prev = cache.h[before], cache.c[before]
        i, f, g, o = np.split(cache.gates[at], 4, axis=1)
        dh_s = inputs.dh[at] + carry_h[rows]
        if norms is not None:
            norms[s] = np.linalg.norm(dh_s)
        tanh_c = np.tanh(cache.c[at])
        dc = carry_c[rows] + dh_s * o * (1 - tanh_c * tanh_c)
        dA = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                             dc * i * (1 - g * g), dh_s * tanh_c * o * (1 - o)], axis=1)
        wg["dWx"] += cache.x[at].T @ dA
        wg["dWh"] += h_prev.T @ dA
        wg["db"] += dA.sum(axis=0)
        dx[at] = dA @ cache.Wx.T
        # where xi_s == 0 nothing flows back through Wh (not even a NaN), as in the kernels
        carry_h[rows] = inputs.xi[s] * (dA @ cache.Wh.T) if inputs.xi[s] else 0
        carry_c[rows] = inputs.xi[s] * (dc * f)

