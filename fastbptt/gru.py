"""GRU on the compiled kernels (``src/_gru.pyx``)."""
from ._calls import kernel_backward, kernel_forward
from ._cells import GRU
from ._dispatch import cell_backward, cell_forward
from ._docs import fill
from ._kernels import Kernels, checks

_gru = Kernels("_gru")


@fill
def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None,
                checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Run a GRU over all time steps (PyTorch semantics, gate blocks r, z, n)::

        [xr xz xn] = x_t Wx + b,   [hr hz hn] = h_{t-1} Wh + bh
        r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters
    ----------
    {forward_x}
    Wx : (D, 3H), Wh : (H, 3H), b : (3H,) arrays of x's dtype; b is the input-side bias.
    bh : (3H,) hidden-side bias, or None (zeros).
    {forward_keywords}

    Returns
    -------
    {forward_returns}
    """
    return cell_forward(GRU, gru_forward, kernel_forward, _gru, checks, x, {"h0": h0},
                        {"Wx": Wx, "Wh": Wh, "b": b, "bh": bh}, {}, time_major, out,
                        checkpoint, lengths, reverse, check_finite)


@fill
def gru_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
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
    {check_finite}

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)`` with the hidden-bias gradient as ``.dbh``.
    """
    return cell_backward(GRU, gru_forward, gru_backward, kernel_backward, _gru, checks, dh, cache,
                         {"dhT": dhT}, xi, grads, h_grad_norms, overwrite_cache, out,
                         check_finite)

