"""GRU on the compiled kernels (``src/_gru.pyx``)."""
from ._blas_threads import largest_product, run_kernel
from ._buffers import (backward_buffers, grad_norms_buffer, initial_states, make_cache,
                       packed_weights, step_outputs)
from ._caches import GRUCache
from ._cells import GRU
from ._docs import fill
from ._grads import Grads
from ._kernels import Kernels, checks
from ._layout import readonly, swap_major
from ._validation import check_backward, check_forward

_gru = Kernels("_gru")


@fill
def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None):
    """Run a GRU over all time steps (PyTorch semantics, gate blocks r, z, n)::

        [xr xz xn] = x_t Wx + b,   [hr hz hn] = h_{t-1} Wh + bh
        r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters
    ----------
    {forward_x}
    Wx : (D, 3H), Wh : (H, 3H), b : (3H,) arrays of x's dtype; b is the input-side bias.
    bh : (3H,) hidden-side bias, or None (zeros).
    {forward_out}

    Returns
    -------
    {forward_returns}
    """
    inputs = check_forward(GRU, x, {"h0": h0}, {"Wx": Wx, "Wh": Wh, "b": b, "bh": bh},
                           time_major=time_major, out=out, scan=checks.first_nonfinite)
    states = initial_states(inputs, out)
    steps = step_outputs(GRUCache, inputs, out)     # in x's layout
    cache = make_cache(GRUCache, out, inputs, states, steps)
    w = inputs.weights
    if inputs.n_batch:
        hh = cache.workspace("hh", (inputs.n_batch, 3 * inputs.n_hidden))  # h_{t-1} @ Wh
        run_kernel(_gru.forward, largest_product(inputs.x, w["Wh"]),
                   inputs.x_buffer, states["h0"], w["Wx"], w["Wh"], w["b"], w["bh"],
                   steps["h"], steps["gates"], steps["hn"], hh, inputs.time_major,
                   packed=packed_weights(_gru, out, inputs.n_batch, inputs.n_hidden,
                                         inputs.dtype))
    return readonly(steps["h"]), cache


@fill
def gru_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None):
    """Backpropagate through every time step of ``gru_forward``.

    Parameters
    ----------
    {backward_dh}
    dhT : (N, H) gradient flowing into the final state from a later segment, or None.
    {backward_xi}
        For the GRU it scales the flow through Wh and through the direct ``z * h_{t-1}``
        path alike.
    {backward_grads}
    overwrite_cache : bool. If True, backward writes its workspace, (T, N, 3H) hidden-side
        and (T, N, H) input-side gradients, over the cache's gates and hn instead of allocating
        it (as SciPy's ``overwrite_a``): the cache is then consumed, and another backward on it
        raises a ValueError (``forward(..., out=cache)`` refills it). ``cache.hT`` and the
        hidden states forward returned stay as they were.
    {backward_out}

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)`` with the hidden-bias gradient as ``.dbh``.
    """
    inputs = check_backward(GRU, dh, cache, {"dhT": dhT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, scan=checks.first_nonfinite)
    dx, carries, wg = backward_buffers(GRU, cache, inputs)
    n_steps, n_batch, n_hidden = cache.h.shape
    tm = cache.time_major
    if n_batch:
        gates, hn = swap_major(cache.gates, tm), swap_major(cache.hn, tm)
        if inputs.overwrite_cache:
            # dAh_t and dxn_t overwrite gates_t and hn_t once step t has read them
            dAh, dxn = gates, hn
        else:
            dAh, dxn = cache.workspace("dAh", gates.shape), cache.workspace("dxn", hn.shape)
        run_kernel(_gru.backward, largest_product(cache.x, cache.Wh),
                   inputs.dh_buffer, swap_major(cache.h, tm), cache.h0, swap_major(cache.x, tm),
                   cache.Wx, cache.Wh, gates, hn, inputs.xi, carries["dhT"], dAh, dxn, dx,
                   wg["dWx"], wg["dWh"], wg["db"], wg["dbh"],
                   grad_norms_buffer(inputs, cache.dtype), tm,
                   packed=packed_weights(_gru, cache, n_batch, n_hidden, cache.dtype))
    elif h_grad_norms is not None:
        h_grad_norms[...] = 0
    return Grads(dx, carries["dhT"], wg["dWx"], wg["dWh"], wg["db"], dbh=wg["dbh"])
