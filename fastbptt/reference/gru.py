"""GRU in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    [xr xz xn] = x_t Wx + b,   [hr hz hn] = h_{t-1} Wh + bh
    r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
    h_t = (1 - z) * n + z * h_{t-1}
    backward, from g = dL/dh_t = dh_t + carry:
        dxn = g (1 - z) (1 - n^2),  dhn = r dxn,  dxr = dhr = dxn hn r (1 - r),
        dxz = dhz = g (h_{t-1} - n) z (1 - z),    carry <- xi_t (g z + [dhr dhz dhn] Wh^T)
"""
import numpy as np

from .._cells import GRU
from .._dispatch import cell_backward, cell_forward
from .._validation import NUMPY_CHECKS
from ._math import sigmoid
from ._walk import run_backward, run_forward


def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None,
                checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Same contract as ``fastbptt.gru_forward``."""
    return cell_forward(GRU, gru_forward, run_forward, _forward_steps, NUMPY_CHECKS, x,
                        {"h0": h0}, {"Wx": Wx, "Wh": Wh, "b": b, "bh": bh}, {}, time_major,
                        out, checkpoint, lengths, reverse, check_finite)


def gru_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.gru_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    return cell_backward(GRU, gru_forward, gru_backward, run_backward, _backward_steps,
                         NUMPY_CHECKS, dh, cache, {"dhT": dhT}, xi, grads, h_grad_norms,
                         overwrite_cache, out, check_finite)


def _forward_steps(inputs, states, steps, walk):
    """h_t, the gate values (r, z, n) and hn (h_{t-1} Wh_n + bh_n) of every step of ``walk``
    (``_walk.run_forward``)."""
    x, w, H = inputs.x, inputs.weights, inputs.n_hidden
    h, gates, hn = steps["h"], steps["gates"], steps["hn"]
    for at, before, rows in walk:
        h_prev = states["h0"][rows] if before is None else h[before]
        ax = x[at] @ w["Wx"] + w["b"]
        ah = h_prev @ w["Wh"] + w["bh"]
        r = sigmoid(ax[:, :H] + ah[:, :H])
        z = sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])
        hn_s = ah[:, 2 * H:]
        hn[at] = hn_s
        n = np.tanh(ax[:, 2 * H:] + r * hn_s)
        gates[at] = np.concatenate([r, z, n], axis=1)
        h[at] = (1 - z) * n + z * h_prev


def _backward_steps(cache, inputs, walk, dx, carries, wg):
    """Backpropagate through every step of ``walk``, from the last (``_walk.run_backward``)."""
    H = cache.h.shape[2]
    norms = inputs.h_grad_norms
    carry = carries["dhT"]              # (N, H), in place: new, or out's
    for s in reversed(range(len(walk))):
        at, before, rows = walk[s]
        h_prev = cache.h0[rows] if before is None else cache.h[before]
        gates = cache.gates[at]
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        dh_s = inputs.dh[at] + carry[rows]
        if norms is not None:
            norms[s] = np.linalg.norm(dh_s)
        dxn = dh_s * (1 - z) * (1 - n * n)
        dxr = dxn * cache.hn[at] * r * (1 - r)
        dxz = dh_s * (h_prev - n) * z * (1 - z)
        dAx = np.concatenate([dxr, dxz, dxn], axis=1)       # input-side pre-activations
        dAh = np.concatenate([dxr, dxz, r * dxn], axis=1)   # hidden-side pre-activations
        wg["dWx"] += cache.x[at].T @ dAx
        wg["db"] += dAx.sum(axis=0)
        wg["dWh"] += h_prev.T @ dAh
        wg["dbh"] += dAh.sum(axis=0)
        dx[at] = dAx @ cache.Wx.T
        flow = inputs.xi[s] * (dh_s * z)
        # where xi_s == 0 nothing flows back through Wh (not even a NaN), as in the kernels
        if inputs.xi[s]:
            flow += inputs.xi[s] * (dAh @ cache.Wh.T)
        carry[rows] = flow

