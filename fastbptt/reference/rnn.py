"""Elman RNN in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t)
    backward:  dA_t = (dh_t + carry) * phi'(a_t),   carry <- xi_t * dA_t Wh^T
"""
import numpy as np

from .._cells import RNN
from .._dispatch import cell_backward, cell_forward
from .._validation import NUMPY_CHECKS, check_option
from ._math import DPHI, PHI
from ._walk import run_backward, run_forward


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", time_major=False, out=None,
                checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Same contract as ``fastbptt.rnn_forward``."""
    check_option(RNN, "nonlinearity", nonlinearity)
    return cell_forward(RNN, rnn_forward, run_forward, _forward_steps, NUMPY_CHECKS, x,
                        {"h0": h0}, {"Wx": Wx, "Wh": Wh, "b": b},
                        {"nonlinearity": nonlinearity}, time_major, out, checkpoint, lengths,
                        reverse, check_finite)


def rnn_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.rnn_backward`` (``overwrite_cache=True`` consumes the
    cache)."""
    return cell_backward(RNN, rnn_forward, rnn_backward, run_backward, _backward_steps,
                         NUMPY_CHECKS, dh, cache, {"dhT": dhT}, xi, grads, h_grad_norms,
                         overwrite_cache, out, check_finite)


def _forward_steps(inputs, states, steps, walk, nonlinearity):
    """h_t of every step of ``walk`` (``_walk.run_forward``)."""
    x, w, phi = inputs.x, inputs.weights, PHI[nonlinearity]
    h = steps["h"]
    for at, before, rows in walk:
        h_prev = states["h0"][rows] if before is None else h[before]
        h[at] = phi(x[at] @ w["Wx"] + h_prev @ w["Wh"] + w["b"])


def _backward_steps(cache, inputs, walk, dx, carries, wg):
    """Backpropagate through every step of ``walk``, from the last (``_walk.run_backward``)."""
    dphi = DPHI[cache.nonlinearity]
    norms = inputs.h_grad_norms
    carry = carries["dhT"]              # (N, H), in place: new, or out's
    for s in reversed(range(len(walk))):
        at, before, rows = walk[s]
        h_prev = cache.h0[rows] if before is None else cache.h[before]
        dh_s = inputs.dh[at] + carry[rows]
        if norms is not None:
            norms[s] = np.linalg.norm(dh_s)
        dA = dh_s * dphi(cache.h[at])
        wg["dWx"] += cache.x[at].T @ dA
        wg["dWh"] += h_prev.T @ dA
        wg["db"] += dA.sum(axis=0)
        dx[at] = dA @ cache.Wx.T
        # where xi_s == 0 nothing flows back through Wh (not even a NaN), as in the kernels
        carry[rows] = inputs.xi[s] * (dA @ cache.Wh.T) if inputs.xi[s] else 0

