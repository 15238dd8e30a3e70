"""Elman RNN in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t)
    backward:  dA_t = (dh_t + carry) * phi'(a_t),   carry <- xi_t * dA_t Wh^T
"""
import numpy as np

from .._results import Grads, _readonly, dx_buffer, new_cache, weight_grad_buffers
from .._validation import (check_backward, check_forward, check_nonlinearity, empty_by_step,
                           from_time_major, to_time_major)


def _sigmoid(a):
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


_PHI = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda a: np.maximum(a, 0)}
_DPHI = {  # phi'(a) from h = phi(a)
    "tanh": lambda h: 1 - h * h,
    "sigmoid": lambda h: h * (1 - h),
    "relu": lambda h: (h > 0).astype(h.dtype),
}


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", time_major=False, out=None):
    """Same contract as ``fastbptt.rnn_forward``."""
    nonlinearity = check_nonlinearity(nonlinearity)
    a = check_forward("rnn", x, h0, Wx, Wh, b, time_major=time_major, out=out)
    phi = _PHI[nonlinearity]
    # (T, N, H), a view of an array in x's layout, as the kernels make it
    if out is None:
        h = empty_by_step(a.n_steps, a.n_batch, a.n_hidden, a.dtype, a.time_major)
    else:
        h = out.h
    h_prev = a.h0
    for t in range(a.n_steps):
        h_prev = h[t] = phi(a.x[t] @ a.Wx + h_prev @ a.Wh + a.b)
    cache = new_cache(out, "rnn", a.time_major, x=a.x, h0=a.h0, Wx=a.Wx, Wh=a.Wh, b=a.b,
                      h=h, nonlinearity=nonlinearity)
    return _readonly(from_time_major(h, a.time_major)), cache


def rnn_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None):
    """Same contract as ``fastbptt.rnn_backward`` (``overwrite_cache=True`` consumes the
    cache)."""
    g = check_backward("rnn", dh, cache, dhT=dhT, xi=xi, grads=grads,
                       h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache, out=out)
    dphi = _DPHI[cache.nonlinearity]
    dx = to_time_major(dx_buffer(cache, out), cache.time_major)
    out = weight_grad_buffers(cache, g.grads, out)
    carry = g.dhT
    for t in reversed(range(cache.h.shape[0])):
        h_prev = cache.h[t - 1] if t else cache.h0
        if h_grad_norms is not None:
            h_grad_norms[t] = np.linalg.norm(g.dh[t] + carry)
        dA = (g.dh[t] + carry) * dphi(cache.h[t])
        out["dWx"] += cache.x[t].T @ dA
        out["dWh"] += h_prev.T @ dA
        out["db"] += dA.sum(axis=0)
        dx[t] = dA @ cache.Wx.T
        carry = g.xi[t] * (dA @ cache.Wh.T)
    g.dhT[...] = carry   # into the array check_backward gave: new, or out's
    return Grads(from_time_major(dx, cache.time_major), g.dhT, out["dWx"], out["dWh"],
                 out["db"])
