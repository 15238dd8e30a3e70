"""Elman RNN on the compiled kernels (``src/_rnn.pyx``)."""
from ._blas_threads import run_kernel
from ._calls import kernel_backward, kernel_forward
from ._cells import RNN
from ._dispatch import cell_backward, cell_forward
from ._docs import fill
from ._kernels import Kernels, checks
from ._validation import check_option

_rnn = Kernels("_rnn")


@fill
def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", time_major=False, out=None,
                checkpoint=None, lengths=None, reverse=False, check_finite=True):
    """Run an Elman RNN over all time steps: ``h_t = phi(x_t Wx + h_{t-1} Wh + b)``.

    Parameters
    ----------
    {forward_x}
    Wx : (D, H), Wh : (H, H), b : (H,) arrays of x's dtype.
    nonlinearity : 'tanh', 'sigmoid' or 'relu'.
    {forward_keywords}

    Returns
    -------
    {forward_returns}
    """
    check_option(RNN, "nonlinearity", nonlinearity)
    return cell_forward(RNN, rnn_forward, kernel_forward, _rnn, checks, x, {"h0": h0},
                        {"Wx": Wx, "Wh": Wh, "b": b}, {"nonlinearity": nonlinearity},
                        time_major, out, checkpoint, lengths, reverse, check_finite)


LEAN_ROWS = 64   # rows (steps x sequences) per block of the lean backward; see lean_block_steps


def lean_block_steps(n_steps, n_batch, time_major):
    """Steps per block B of the lean backward (``overwrite_cache=True``), its workspace being
    (B, N, H).

    Where a block's rows are consecutive (time-major, or N == 1), its weight gradients and dx
    are one product each over its B*N rows: B = LEAN_ROWS // N (at least 1, at most T). Blocks
    of fewer rows cost more time, more rows no less (``benchmarks/RESULTS.md``); a short
    sequence keeps a workspace as large as its states, at most 64 rows of H. Batch-major with
    N > 1 the rows of a step are T apart, and the products go step by step over its N rows,
    with B = 1."""
    if not (time_major or n_batch == 1):
        return 1
    return max(1, min(n_steps, LEAN_ROWS // n_batch))


@fill
def rnn_backward(dh, cache, *, dhT=None, xi=None, grads=None, h_grad_norms=None,
                 overwrite_cache=False, out=None, check_finite=True):
    """Backpropagate through every time step of ``rnn_forward``.

    Parameters
    ----------
    {backward_dh}
    dhT : (N, H) gradient flowing into the final state from a later segment, or None.
    {backward_xi}
    {backward_grads}
    overwrite_cache : bool, as for ``lstm_backward`` and ``gru_backward``: True consumes the
        cache (another backward on it raises a ValueError). The RNN's cache holds no gate values
        to overwrite, only the hidden states forward returned, which stay as they were; instead,
        True runs the lean backward, whose workspace is a few steps (``lean_block_steps``)
        instead of the (T, N, H) of the default: it adds the weight gradients and dx block by
        block, in products over fewer rows (the same results to rounding). A cache of sequences
        by length (``lengths=``, ``reverse=``) runs the default backward either way.
    {backward_out}
    {check_finite}

    Returns
    -------
    Grads ``(dx, dh0, dWx, dWh, db)``.
    """
    return cell_backward(RNN, rnn_forward, rnn_backward, _backward, _rnn, checks, dh, cache,
                         {"dhT": dhT}, xi, grads, h_grad_norms, overwrite_cache, out,
                         check_finite)


def _backward(cell, kernels, cache, inputs):
    """``rnn_backward`` once checked (``fastbptt._dispatch``), on the ``kernels``, whose
    backward takes no ``overwrite_cache``: the cache has no gate values to overwrite."""
    return kernel_backward(cell, kernels, cache, inputs, _run_backward, False)


def _run_backward(cache, inputs, buffers, dx, carries, wg, written):
    """The backward kernel's call, for ``fastbptt._calls.kernel_backward``: ``written``, the
    kernel writes the weight gradients ``wg`` rather than adding into them."""
    if inputs.overwrite_cache:
        n_steps, n_batch, n_hidden = cache.h.shape
        n_block = lean_block_steps(n_steps, n_batch, cache.time_major)
        dA = cache.workspace("dA_lean", (n_block, n_batch, n_hidden))
        run_kernel(_rnn.backward_lean, cache.x, cache.Wh, buffers, inputs.dh_buffer,
                   inputs.xi, carries, dA, dx, wg, inputs.h_grad_norms, written)
    else:
        run_kernel(_rnn.backward, cache.x, cache.Wh, buffers,
                   inputs.dh_buffer, inputs.xi, carries, dx, wg, inputs.h_grad_norms, written)

