"""The part of every compiled cell's forward and backward that is the same for all cells.

A cell's wrapper (``rnn.py``, ``lstm.py``, ``gru.py``) hands its arguments to
``fastbptt._dispatch``, which checks them and, unless the call is checkpointed, runs one of
these on the cell's kernels. They pick the path (by length, or every step of every sequence);
for the last, they claim the arrays the call writes (``fastbptt._sharing``), make what it
returns (``fastbptt._buffers``), run the kernel, and release the claim even when the kernel
raised (an interrupted forward leaves its ``out=`` cache marked half-written). Only the kernel
call itself differs between cells' backwards, so the wrapper passes it in as a function.
"""
from ._blas_threads import run_kernel
from ._buffers import backward_buffers, initial_states, kernel_buffers, make_cache, step_outputs
from ._grads import cell_grads
from ._layout import readonly
from ._lengths import backward_by_length, forward_by_length
from ._sharing import begin, end, refilling
from ._validation import check_lengths


def kernel_forward(cell, kernels, inputs, out, options, lengths=None, reverse=False):
    """``(h, cache)`` of ``cell``'s forward on the compiled ``kernels``, for the checked
    ``inputs``; ``options`` are the cell's choices ({'nonlinearity': ...} for the RNN), kept on
    the cache. With ``lengths`` or ``reverse``, the sequences run by length
    (``fastbptt._lengths``)."""
    if lengths is not None or reverse is not False:
        return forward_by_length(cell, kernels, inputs, out,
                                 check_lengths(lengths, inputs.n_batch, inputs.n_steps, reverse),
                                 bool(reverse), options)
    if out is None:                         # nothing to count in: one call fewer
        return _fill_forward(cell, kernels, inputs, None, options)
    return refilling(out, inputs.writes, _fill_forward, cell, kernels, inputs, out, options)


def _fill_forward(cell, kernels, inputs, out, options):
    """``kernel_forward`` through every step of every sequence: the arrays it writes made (new
    or ``out``'s), the cache made of them, the kernel run into them."""
    states = initial_states(inputs, out)
    steps = step_outputs(cell.cache_type, inputs, out)     # in x's layout
    cache = make_cache(cell.cache_type, out, inputs, states, steps, **options)
    if inputs.n_batch:
        run_kernel(kernels.forward, inputs.x, inputs.weights["Wh"],
                   kernel_buffers(kernels, cache), inputs.x_buffer)
    return readonly(steps["h"]), cache


def kernel_backward(cell, kernels, cache, inputs, run=None, takes_overwrite=True):
    """The ``Grads`` of ``cell``'s backward on the compiled ``kernels`` through every step of
    ``cache``, for the checked ``inputs``. ``run(cache, inputs, buffers, dx, carries,
    weight_grads, written)`` calls the cell's backward kernel on the cache's ``Buffers`` (only
    where N >= 1), the arrays it writes made here (``fastbptt._buffers.backward_buffers``);
    None calls ``kernels.backward`` with ``overwrite_cache``, as the LSTM's and the GRU's take
    it: they write their workspace over the cache's gate values, each step's once the step has
    read them. ``takes_overwrite`` False: the kernels take no ``overwrite_cache`` (the RNN's,
    whose cache has no gate values), which a cache of sequences by length
    (``fastbptt._lengths``) passes on otherwise.

    Without ``grads=`` the kernel writes the weight gradients (``written``, passed as its
    ``write_weight_grads``): their arrays, new or ``out``'s, are not set to zero first. With
    N = 0 no kernel runs, and they are zeros."""
    if cache.lengths is not None:
        if takes_overwrite:
            return backward_by_length(cell, kernels, cache, inputs,
                                      overwrite_cache=inputs.overwrite_cache)
        return backward_by_length(cell, kernels, cache, inputs)
    mode = "consume" if inputs.overwrite_cache else "read"
    shared = begin(cache, mode, inputs.writes)    # counted in (fastbptt._sharing)
    try:
        n_batch = cache.h.shape[1]
        written = inputs.grads is None and n_batch > 0
        dx, carries, wg = backward_buffers(cell, cache, inputs, written)
        if n_batch:
            buffers = kernel_buffers(kernels, cache, shared)
            if run is None:
                run_kernel(kernels.backward, cache.x, cache.Wh, buffers, inputs.dh_buffer,
                           inputs.xi, carries, dx, wg, inputs.h_grad_norms,
                           inputs.overwrite_cache, written)
            else:
                run(cache, inputs, buffers, dx, carries, wg, written)
        elif inputs.h_grad_norms is not None:
            inputs.h_grad_norms[...] = 0
    finally:
        end(cache, mode, inputs.writes)
    return cell_grads(cell, dx, carries, wg)
