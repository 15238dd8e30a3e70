"""LSTM on the compiled kernels (``src/_lstm.pyx``)."""
from ._blas_threads import run_kernel
from ._calls import kernel_backward, kernel_forward
from ._cells import LSTM
from ._checkpoint import CheckpointCache, checkpointed_backward, checkpointed_forward
from ._docs import fill
from ._kernels import Kernels, checks
from ._lengths import backward_by_length
from ._validation import check_backward, check_forward

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
    {forward_out}
    {forward_checkpoint}
    {forward_lengths}
    {check_finite}

    Returns
    -------
    {forward_returns}
    """
    if checkpoint is not None or type(out) is CheckpointCache:
        return checkpointed_forward(
            LSTM, lstm_forward, checkpoint, x, {"h0": h0, "c0": c0},
            {"Wx": Wx, "Wh": Wh, "b": b}, {},
            time_major=time_major, out=out, lengths=lengths, reverse=reverse,
            check_finite=check_finite,
            scan=checks.first_nonfinite, overlap=checks.first_overlap)
    inputs = check_forward(LSTM, x, {"h0": h0, "c0": c0}, {"Wx": Wx, "Wh": Wh, "b": b},
                           time_major=time_major, out=out, scan=checks.first_nonfinite,
                           overlap=checks.first_overlap, check_finite=check_finite,
                           ready=checks.forward_ready)
    return kernel_forward(LSTM, _lstm, inputs, out, {}, lengths, reverse)


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
    if type(cache) is CheckpointCache:
        return checkpointed_backward(
            LSTM, lstm_forward, lstm_backward, dh, cache, {"dhT": dhT, "dcT": dcT}, xi=xi,
            grads=grads, h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
            out=out, check_finite=check_finite, scan=checks.first_nonfinite,
            overlap=checks.first_overlap)
    inputs = check_backward(LSTM, dh, cache, {"dhT": dhT, "dcT": dcT}, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, scan=checks.first_nonfinite,
                            overlap=checks.first_overlap, check_finite=check_finite,
                            ready=checks.backward_ready)
    if cache.lengths is not None:           # a cache of sequences by length (_lengths.py)
        return backward_by_length(LSTM, _lstm, cache, inputs,
                                  overwrite_cache=inputs.overwrite_cache)
    return kernel_backward(LSTM, _lstm, cache, inputs, _run_backward)


def _run_backward(cache, inputs, buffers, dx, carries, wg):
    """The backward kernel's call, for ``fastbptt._calls.kernel_backward``."""
    # with overwrite_cache, dA_t overwrites gates_t once step t has read it
    run_kernel(_lstm.backward, cache.x, cache.Wh, buffers, inputs.dh_buffer, inputs.xi,
               carries, dx, wg, inputs.h_grad_norms, inputs.overwrite_cache)
