"""A hidden-state cell's public forward and backward, from the caller's arguments to the run.

The kernels' wrappers (``fastbptt.rnn``, ``lstm``, ``gru``) and the reference's cells
(``fastbptt.reference.rnn``, ...) take the same arguments and route them the same way: with
``checkpoint=`` (or a checkpointed cache) to ``fastbptt._checkpoint``, which runs the
implementation's own forward and backward segment by segment; else through the checks
(``fastbptt._validation``) to the implementation's ``run``: the kernels' (``fastbptt._calls``)
or the reference's, which runs the cell's step loops (``fastbptt.reference._walk``). In the
checks the two differ only in the scans they pass: the kernels their compiled ones
(``fastbptt._kernels.checks``), the reference the NumPy ones (``NUMPY_CHECKS``).

These run on every call: each takes its arguments by position and makes nothing of its own.
"""
from ._checkpoint import CheckpointCache, checkpointed_backward, checkpointed_forward
from ._validation import check_backward, check_forward


def cell_forward(cell, forward, run, impl, checks, x, states, weights, options, time_major,
                 out, checkpoint, lengths, reverse, check_finite):
    """``<cell>_forward`` of one implementation: (h, cache). ``forward`` is that public
    function itself (the segments of a checkpointed call run it); ``states``, ``weights`` and
    ``options`` are the caller's, by name, in dicts of the call's own. Without checkpointing,
    the checked inputs go to ``run(cell, impl, inputs, out, options, lengths, reverse)``,
    ``impl`` being what it runs: the cell's kernels (read on each call, so that a test may
    swap their build), or the reference cell's step loop."""
    if checkpoint is not None or type(out) is CheckpointCache:
        return checkpointed_forward(
            cell, forward, checkpoint, x, states, weights, options, time_major=time_major,
            out=out, lengths=lengths, reverse=reverse, check_finite=check_finite,
            scan=checks.first_nonfinite, overlap=checks.first_overlap)
    inputs = check_forward(cell, x, states, weights, time_major=time_major, out=out,
                           scan=checks.first_nonfinite, overlap=checks.first_overlap,
                           check_finite=check_finite, ready=checks.forward_ready)
    return run(cell, impl, inputs, out, options, lengths, reverse)


def cell_backward(cell, forward, backward, run, impl, checks, dh, cache, final, xi, grads,
                  h_grad_norms, overwrite_cache, out, check_finite):
    """``<cell>_backward`` of one implementation: the ``Grads``. ``forward`` and ``backward``
    are its public functions (a checkpointed cache runs them segment by segment); ``final`` is
    {'dhT': ..., 'dcT': ...} as the caller passed them, in a dict of the call's own. On any
    other cache, the checked inputs go to ``run(cell, impl, cache, inputs)``, ``impl`` as for
    ``cell_forward``."""
    if type(cache) is CheckpointCache:
        return checkpointed_backward(
            cell, forward, backward, dh, cache, final, xi=xi, grads=grads,
            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache, out=out,
            check_finite=check_finite, scan=checks.first_nonfinite,
            overlap=checks.first_overlap)
    inputs = check_backward(cell, dh, cache, final, xi=xi, grads=grads,
                            h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                            out=out, scan=checks.first_nonfinite,
                            overlap=checks.first_overlap, check_finite=check_finite,
                            ready=checks.backward_ready)
    return run(cell, impl, cache, inputs)
