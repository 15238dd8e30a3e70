"""LSTM on the compiled kernels (``src/_lstm.pyx``)."""
from ._calls import kernel_backward, kernel_forward
from ._cells import LSTM
from ._dispatch import cell_backward, cell_forward
from ._docs import fill
from ._kernels import Kernels, checks

_lstm = Kernels("_lstm")


@fill
def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, time_major=False, out=None,
                 checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Run an LSTM over all time steps, gate blocks (i, f, g, o) as in PyTorch::

        [a_i a_f a_g a_o] = x_t Wx + h_{t-1} Wh + b
        i, f, o = sigma(a_i), sigma(a_f), sigma(a_o);   g = tanh(a_g)
        c_t = f * c_{t-1} + i * g;                      h_t = o * tanh(c_t)

    Parameters
    ----------
    {forward_x}
    Wx : (D, 4H), Wh : (H, 4H), b : (4H,) arrays of x's dtype; column blocks i, f, g, o.
    c0 : (N, H) initial cell state, or None (zeros).
    {forward_keywords}

    Returns
    -------
    {forward_returns}
    """
    return cell_forward(LSTM, lstm_forward, kernel_forward, _lstm, checks, x,
                        {"h0": h0, "c0": c0}, {"Wx": Wx, "Wh": Wh, "b": b}, {}, time_major,
                        out, checkpoint, lengths, reverse, check_finite)


@fill
def lstm_backward(dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                  overwrite_cache=False, out=None, check_finite=True):
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
    {check_finite}

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)`` with the attribute ``dc0``.
    """
    return cell_backward(LSTM, lstm_forward, lstm_backward, kernel_backward, _lstm, checks, dh,
                         cache, {"dhT": dhT, "dcT": dcT}, xi, grads, h_grad_norms,
                         overwrite_cache, out, check_finite)

