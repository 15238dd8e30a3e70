"""GRU in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    [xr xz xn] = x_t Wx + b,   [hr hz hn] = h_{t-1} Wh + bh
    r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
    h_t = (1 - z) * n + z * h_{t-1}
    backward, from g = dL/dh_t = dh_t + carry:
        dxn = g (1 - z) (1 - n^2),  dhn = r dxn,  dxr = dhr = dxn hn r (1 - r),
        dxz = dhz = g (h_{t-1} - n) z (1 - z),    carry <- xi_t (g z + [dhr dhz dhn] Wh^T)
"""
import numpy as np

from .._results import Grads, _readonly, dx_buffer, new_cache, weight_grad_buffers
from .._validation import check_backward, check_forward, empty_by_step, from_time_major, to_time_major


def _sigmoid(a):
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None):
    """Same contract as ``fastbptt.gru_forward``."""
    a = check_forward("gru", x, h0, Wx, Wh, b, time_major=time_major, bh=bh, out=out)
    H = a.n_hidden
    # h, gates (r, z, n), hn (h_{t-1} Wh_n + bh_n): (T, N, .) views of arrays in x's layout,
    # as the kernels make them
    if out is None:
        h, gates, hn = (empty_by_step(a.n_steps, a.n_batch, width, a.dtype, a.time_major)
                        for width in (H, 3 * H, H))
    else:
        h, gates, hn = out.h, out.gates, out.hn
    h_prev = a.h0
    for t in range(a.n_steps):
        ax = a.x[t] @ a.Wx + a.b
        ah = h_prev @ a.Wh + a.bh
        r = _sigmoid(ax[:, :H] + ah[:, :H])
        z = _sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])
        hn[t] = ah[:, 2 * H:]
        n = np.tanh(ax[:, 2 * H:] + r * hn[t])
        gates[t] = np.concatenate([r, z, n], axis=1)
        h_prev = h[t] = (1 - z) * n + z * h_prev
    cache = new_cache(out, "gru", a.time_major, x=a.x, h0=a.h0, Wx=a.Wx, Wh=a.Wh, b=a.b,
                      bh=a.bh, h=h, gates=gates, hn=hn)
    return _readonly(from_time_major(h, a.time_major)), cache


def gru_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None):
    """Same contract as ``fastbptt.gru_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    g = check_backward("gru", dh, cache, dhT=dhT, xi=xi, grads=grads,
                       h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache, out=out)
    H = cache.h.shape[2]
    dx = to_time_major(dx_buffer(cache, out), cache.time_major)
    out = weight_grad_buffers(cache, g.grads, out)
    carry = g.dhT
    for t in reversed(range(cache.h.shape[0])):
        h_prev = cache.h[t - 1] if t else cache.h0
        r, z, n = cache.gates[t][:, :H], cache.gates[t][:, H:2 * H], cache.gates[t][:, 2 * H:]
        dh_t = g.dh[t] + carry
        if h_grad_norms is not None:
            h_grad_norms[t] = np.linalg.norm(dh_t)
        dxn = dh_t * (1 - z) * (1 - n * n)
        dxr = dxn * cache.hn[t] * r * (1 - r)
        dxz = dh_t * (h_prev - n) * z * (1 - z)
        dAx = np.concatenate([dxr, dxz, dxn], axis=1)       # input-side pre-activations
        dAh = np.concatenate([dxr, dxz, r * dxn], axis=1)   # hidden-side pre-activations
        out["dWx"] += cache.x[t].T @ dAx
        out["db"] += dAx.sum(axis=0)
        out["dWh"] += h_prev.T @ dAh
        out["dbh"] += dAh.sum(axis=0)
        dx[t] = dAx @ cache.Wx.T
        carry = g.xi[t] * (dAh @ cache.Wh.T + dh_t * z)
    g.dhT[...] = carry   # into the array check_backward gave: new, or out's
    return Grads(from_time_major(dx, cache.time_major), g.dhT, out["dWx"], out["dWh"],
                 out["db"], dbh=out["dbh"])
