"""Jordan's network in plain NumPy: a per-step loop written from the equations (the tests'
oracle). The output of the previous step, not its hidden state, feeds back:

    h_t = phi_h(x_t Wx + y_{t-1} Wy + b),    y_t = phi_y(h_t Wo + bo)
    backward:  dAo_t = (dy_t + carry) * phi_y'(.),   dAh_t = (dAo_t Wo^T) * phi_h'(.),
               carry <- xi_t * dAh_t Wy^T

with ``carry`` the gradient reaching y_t through step t+1 (dyT at the start, dL/dy0 at the end).
"""
import numpy as np

from .._buffers import jordan_backward_buffers, jordan_forward_buffers, make_jordan_cache
from .._cells import JORDAN
from .._grads import JordanGrads
from .._jordan_checks import check_jordan_backward, check_jordan_forward
from .._layout import readonly, swap_major
from .._sharing import begin, end, refilling
from .._validation import check_option
from ._math import DPHI, PHI

# phi_y and phi_y'(.) from y = phi_y(.)
OUTPUT_PHI = {"identity": lambda a: a, "tanh": PHI["tanh"], "sigmoid": PHI["sigmoid"]}
OUTPUT_DPHI = {"identity": np.ones_like, "tanh": DPHI["tanh"], "sigmoid": DPHI["sigmoid"]}


def jordan_forward(x, y0, Wx, Wy, b, Wo, bo, *, nonlinearity="tanh",
                   output_nonlinearity="identity", time_major=False, out=None):
    """Same contract as ``fastbptt.jordan_forward``."""
    check_option(JORDAN, "nonlinearity", nonlinearity)
    check_option(JORDAN, "output_nonlinearity", output_nonlinearity)
    inputs = check_jordan_forward(x, y0, {"Wx": Wx, "Wy": Wy, "b": b, "Wo": Wo, "bo": bo},
                                  time_major=time_major, out=out)
    return refilling(out, inputs.writes, _fill_forward, inputs, out, nonlinearity,
                     output_nonlinearity)


def _fill_forward(inputs, out, nonlinearity, output_nonlinearity):
    """``jordan_forward`` once ``out`` is counted in: every step, into the arrays it writes
    (new or ``out``'s), and the cache made of them."""
    y0, h_buf, y_buf = jordan_forward_buffers(inputs, out)
    w, tm = inputs.weights, inputs.time_major
    phi_h, phi_y = PHI[nonlinearity], OUTPUT_PHI[output_nonlinearity]
    h, y = swap_major(h_buf, tm), swap_major(y_buf, tm)
    y_prev = y0
    for t in range(inputs.n_steps):
        h[t] = phi_h(inputs.x[t] @ w["Wx"] + y_prev @ w["Wy"] + w["b"])
        y_prev = y[t] = phi_y(h[t] @ w["Wo"] + w["bo"])
    cache = make_jordan_cache(out, inputs, y0, h_buf, y_buf, nonlinearity, output_nonlinearity)
    return readonly(y_buf), cache


def jordan_backward(dy, cache, *, dyT=None, xi=None, grads=None, h_grad_norms=None,
                    overwrite_cache=False, out=None):
    """Same contract as ``fastbptt.jordan_backward``."""
    inputs = check_jordan_backward(dy, cache, dyT=dyT, xi=xi, grads=grads,
                                   h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                                   out=out)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carry, wg = jordan_backward_buffers(cache, inputs)
        dphi_h = DPHI[cache.nonlinearity]
        dphi_y = OUTPUT_DPHI[cache.output_nonlinearity]
        dx_t = swap_major(dx, cache.time_major)
        grad = carry.copy()
        for t in reversed(range(cache.h.shape[0])):
            y_prev = cache.y[t - 1] if t else cache.y0
            if h_grad_norms is not None:
                h_grad_norms[t] = np.linalg.norm(inputs.dy[t] + grad)
            dAo = (inputs.dy[t] + grad) * dphi_y(cache.y[t])
            dAh = (dAo @ cache.Wo.T) * dphi_h(cache.h[t])
            wg["dWo"] += cache.h[t].T @ dAo
            wg["dbo"] += dAo.sum(axis=0)
            wg["dWx"] += cache.x[t].T @ dAh
            wg["dWy"] += y_prev.T @ dAh
            wg["db"] += dAh.sum(axis=0)
            dx_t[t] = dAh @ cache.Wx.T
            # where xi_t == 0 nothing flows back into y_{t-1} (not even a NaN), as in the kernels
            grad = inputs.xi[t] * (dAh @ cache.Wy.T) if inputs.xi[t] else np.zeros_like(grad)
        carry[...] = grad
    finally:
        end(cache, mode, inputs.writes)
    return JordanGrads(dx, carry, wg["dWx"], wg["dWy"], wg["db"], wg["dWo"], wg["dbo"])
