"""LSTM on the compiled kernels (``src/_lstm.pyx``)."""
from ._blas_threads import largest_product, run_kernel
from ._buffers import (backward_buffers, grad_norms_buffer, initial_states, make_cache,
                       packed_weights, step_outputs)
from ._caches import LSTMCache
from ._cells import LSTM
from ._docs import fill
from ._grads import Grads
from ._kernels import Kernels, checks
from ._layout import readonly, swap_major
from ._validation import check_backward, check_forward

_lstm = Kernels("_lstm")


@fill
def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None):
    """Run an LSTM over all time steps, gate blocks (i, f, g, o) as in PyTorch::

        [a_i a_f a_g a_o] = x_t Wx + h_{t-1} Wh + b
        i, f, o = sigma(a_i), sigma(a_f), sigma(a_o);   g = tanh(a_g)
        c_t = f * c_{t-1} + i * g;                      h_t = o * tanh(c_t)

    Parameters
    ----------
    {forward_x}
    Wx : (D, 4H), Wh : (H, 4H), b : (4H,) arrays of x's dtype; column blocks i, f, g, o.
    c0 : (N, H) initial cell state, or None (zeros).
    {forward_out}

    Returns
    -------
    {forward_returns}
    """
    inputs = check_forward(LSTM, x, {"h0": h0, "c0": c0}, {"Wx": Wx, "Wh": Wh, "b": b},
                           time_major=time_major, out=out, scan=checks.first_nonfinite)
    states = initial_states(inputs, out)
    steps = step_outputs(LSTMCache, inputs, out)     # in x's layout
    w = inputs.weights
    packed = packed_weights(_lstm, out, inputs.n_batch, inputs.n_hidden, inputs.dtype)
    if inputs.n_batch:
        run_kernel(_lstm.forward, largest_product(inputs.x, w["Wh"]),
                   inputs.x_buffer, states["h0"], states["c0"], w["Wx"], w["Wh"], w["b"],
                   steps["h"], steps["c"], steps["gates"], inputs.time_major, packed=packed)
    cache = make_cache(LSTMCache, out, inputs, states, steps)
    return readonly(steps["h"]), cache


@fill
def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None):
    """Backpropagate through every time step of ``lstm_forward``.

    Parameters
    ----------
    {backward_dh}
    dhT, dcT : (N, H) gradients flowing into the final hidden and cell states from a later
        segment, or None.
    {backward_xi}
    {backward_grads}
    overwrite_cache : bool. If True, backward writes its (T, N, 4H) workspace over the cache's
        gate values instead of allocating one (as SciPy's ``overwrite_a``): the cache is then
        consumed, and another backward on it raises a ValueError (``forward(..., out=cache)``
        refills it). ``cache.hT``, ``cache.cT`` and the hidden states forward returned stay as
        they were.
    {backward_out}

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)`` with the attribute ``dc0``.
    """
    inputs = check_backward(LSTM, dh, cache, {"dhT": dhT, "dcT": dcT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, scan=checks.first_nonfinite)
    dx, carries, wg = backward_buffers(LSTM, cache, inputs)
    n_steps, n_batch, n_hidden = cache.h.shape
    tm = cache.time_major
    if n_batch:
        gates = swap_major(cache.gates, tm)
        # dA_t overwrites gates_t once step t has read it
        dA = gates if inputs.overwrite_cache else cache.workspace("dA", gates.shape)
        run_kernel(_lstm.backward, largest_product(cache.x, cache.Wh),
                   inputs.dh_buffer, swap_major(cache.h, tm), swap_major(cache.c, tm),
                   gates, cache.h0, cache.c0, swap_major(cache.x, tm), cache.Wx, cache.Wh,
                   inputs.xi, carries["dhT"], carries["dcT"], dA, dx, wg["dWx"], wg["dWh"],
                   wg["db"], grad_norms_buffer(inputs, cache.dtype), tm,
                   packed=packed_weights(_lstm, cache, n_batch, n_hidden, cache.dtype))
    elif h_grad_norms is not None:
        h_grad_norms[...] = 0
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"], dc0=carries["dcT"])
