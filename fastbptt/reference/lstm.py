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

from .._results import Grads, _readonly, dx_buffer, new_cache, weight_grad_buffers
from .._validation import check_backward, check_forward, empty_by_step, from_time_major, to_time_major
from .rnn import _sigmoid


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None):
    """Same contract as ``fastbptt.lstm_forward``."""
    a = check_forward("lstm", x, h0, Wx, Wh, b, time_major=time_major, c0=c0, out=out)
    n_hidden = a.n_hidden
    # (T, N, .) views of arrays in x's layout, as the kernels make them
    if out is None:
        h, c, gates = (empty_by_step(a.n_steps, a.n_batch, width, a.dtype, a.time_major)
                       for width in (n_hidden, n_hidden, 4 * n_hidden))
    else:
        h, c, gates = out.h, out.c, out.gates
    h_prev, c_prev = a.h0, a.c0
    for t in range(a.n_steps):
        pre = a.x[t] @ a.Wx + h_prev @ a.Wh + a.b
        i = _sigmoid(pre[:, :n_hidden])
        f = _sigmoid(pre[:, n_hidden:2 * n_hidden])
        g = np.tanh(pre[:, 2 * n_hidden:3 * n_hidden])
        o = _sigmoid(pre[:, 3 * n_hidden:])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        c_prev = c[t] = f * c_prev + i * g
        h_prev = h[t] = o * np.tanh(c_prev)
    cache = new_cache(out, "lstm", a.time_major, x=a.x, h0=a.h0, c0=a.c0, Wx=a.Wx, Wh=a.Wh,
                      b=a.b, h=h, c=c, gates=gates)
    return _readonly(from_time_major(h, a.time_major)), cache


def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None):
    """Same contract as ``fastbptt.lstm_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    checked = check_backward("lstm", dh, cache, dhT=dhT, dcT=dcT, xi=xi, grads=grads,
                             h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                             out=out)
    dx = to_time_major(dx_buffer(cache, out), cache.time_major)
    out = weight_grad_buffers(cache, checked.grads, out)
    carry_h, carry_c = checked.dhT, checked.dcT
    for t in reversed(range(cache.h.shape[0])):
        h_prev = cache.h[t - 1] if t else cache.h0
        c_prev = cache.c[t - 1] if t else cache.c0
        i, f, g, o = np.split(cache.gates[t], 4, axis=1)
        dh_t = checked.dh[t] + carry_h
        if h_grad_norms is not None:
            h_grad_norms[t] = np.linalg.norm(dh_t)
        tanh_c = np.tanh(cache.c[t])
        dc = carry_c + dh_t * o * (1 - tanh_c * tanh_c)
        dA = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                             dc * i * (1 - g * g), dh_t * tanh_c * o * (1 - o)], axis=1)
        out["dWx"] += cache.x[t].T @ dA
        out["dWh"] += h_prev.T @ dA
        out["db"] += dA.sum(axis=0)
        dx[t] = dA @ cache.Wx.T
        carry_h = checked.xi[t] * (dA @ cache.Wh.T)
        carry_c = checked.xi[t] * (dc * f)
    checked.dhT[...] = carry_h   # into the arrays check_backward gave: new, or out's
    checked.dcT[...] = carry_c
    return Grads(from_time_major(dx, cache.time_major), checked.dhT, out["dWx"], out["dWh"],
                 out["db"], dc0=checked.dcT)
