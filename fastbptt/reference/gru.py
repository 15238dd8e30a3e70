"""GRU in plain NumPy: a per-step loop written from the equations (the tests' oracle).

    [xr xz xn] = x_t Wx + b,   [hr hz hn] = h_{t-1} Wh + bh
    r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
    h_t = (1 - z) * n + z * h_{t-1}
    backward, from g = dL/dh_t = dh_t + carry:
        dxn = g (1 - z) (1 - n^2),  dhn = r dxn,  dxr = dhr = dxn hn r (1 - r),
        dxz = dhz = g (h_{t-1} - n) z (1 - z),    carry <- xi_t (g z + [dhr dhz dhn] Wh^T)
"""
import numpy as np

from .._buffers import backward_buffers, initial_states, make_cache, step_outputs
from .._caches import GRUCache
from .._cells import GRU
from .._checkpoint import CheckpointCache, checkpointed_backward, checkpointed_forward
from .._grads import Grads
from .._layout import readonly, swap_major
from .._sharing import begin, end
from .._validation import check_backward, check_forward, check_lengths
from ._math import sigmoid
from ._walk import final_state, walk


def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None,
                checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Same contract as ``fastbptt.gru_forward``."""
    if checkpoint is not None or type(out) is CheckpointCache:
        return checkpointed_forward(
            GRU, gru_forward, checkpoint, x, {"h0": h0},
            {"Wx": Wx, "Wh": Wh, "b": b, "bh": bh}, {},
            time_major=time_major, out=out, lengths=lengths, reverse=reverse,
            check_finite=check_finite)
    inputs = check_forward(GRU, x, {"h0": h0}, {"Wx": Wx, "Wh": Wh, "b": b, "bh": bh},
                           time_major=time_major, out=out, check_finite=check_finite)
    lengths = check_lengths(lengths, inputs.n_batch, inputs.n_steps, reverse)
    if out is not None:
        begin(out, "refill", inputs.writes)     # out= needs the cache alone
    done = False
    try:
        states = initial_states(inputs, out)
        # h, gates (r, z, n), hn (h_{t-1} Wh_n + bh_n), in x's layout as the kernels make them
        steps = step_outputs(GRUCache, inputs, out)
        x, w, H = inputs.x, inputs.weights, inputs.n_hidden
        h, gates, hn = (swap_major(steps[name], inputs.time_major) for name in ("h", "gates", "hn"))
        if lengths is not None:
            for arr in (h, gates, hn):
                arr.fill(0)                 # the padded steps
        for at, before, rows in walk(inputs.n_steps, lengths, reverse):
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
        by_length = {} if lengths is None else {
            "lengths": lengths, "reverse": bool(reverse),
            "_hT": final_state(h, states["h0"], lengths, reverse)}
        cache = make_cache(GRUCache, out, inputs, states, steps, **by_length)
        done = True
    finally:
        if out is not None:
            end(out, "refill", inputs.writes, refill_failed=not done)
    return readonly(steps["h"]), cache


def gru_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
    """Same contract as ``fastbptt.gru_backward``; ``overwrite_cache=True`` overwrites nothing
    here, but consumes the cache all the same."""
    if type(cache) is CheckpointCache:
        return checkpointed_backward(
            GRU, gru_forward, gru_backward, dh, cache, {"dhT": dhT}, xi=xi,
            grads=grads, h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
            out=out, check_finite=check_finite)
    inputs = check_backward(GRU, dh, cache, {"dhT": dhT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, check_finite=check_finite)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(GRU, cache, inputs)
        dx_t = swap_major(dx, cache.time_major)
        if cache.lengths is not None:
            dx_t.fill(0)                    # the padded steps
        H = cache.h.shape[2]
        carry = carries["dhT"]              # (N, H), in place: new, or out's
        steps = walk(cache.h.shape[0], cache.lengths, cache.reverse)
        for s in reversed(range(len(steps))):
            at, before, rows = steps[s]
            h_prev = cache.h0[rows] if before is None else cache.h[before]
            gates = cache.gates[at]
            r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
            dh_s = inputs.dh[at] + carry[rows]
            if h_grad_norms is not None:
                h_grad_norms[s] = np.linalg.norm(dh_s)
            dxn = dh_s * (1 - z) * (1 - n * n)
            dxr = dxn * cache.hn[at] * r * (1 - r)
            dxz = dh_s * (h_prev - n) * z * (1 - z)
            dAx = np.concatenate([dxr, dxz, dxn], axis=1)       # input-side pre-activations
            dAh = np.concatenate([dxr, dxz, r * dxn], axis=1)   # hidden-side pre-activations
            wg["dWx"] += cache.x[at].T @ dAx
            wg["db"] += dAx.sum(axis=0)
            wg["dWh"] += h_prev.T @ dAh
            wg["dbh"] += dAh.sum(axis=0)
            dx_t[at] = dAx @ cache.Wx.T
            flow = inputs.xi[s] * (dh_s * z)
            # where xi_s == 0 nothing flows back through Wh (not even a NaN), as in the kernels
            if inputs.xi[s]:
                flow += inputs.xi[s] * (dAh @ cache.Wh.T)
            carry[rows] = flow
    finally:
        end(cache, mode, inputs.writes)
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"], dbh=wg["dbh"])
