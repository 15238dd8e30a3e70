"""The order in which the steps of a batch run, for sequences of unequal lengths and reversed
ones (NumPy only), and the part of the reference cells' forward and backward around their step
loops.

``walk`` gives, for each step s in the order they run, where its values are: ``at`` indexes
the (T, N, ...) per-step arrays at the sequences' step s, ``before`` at the step each of them
ran just before (None at s = 0: the initial states) and ``rows`` the (N, ...) arrays (initial
states, carries) at those sequences. Without lengths and forward, step s is time s of every
sequence (slices, no copies); else sequence n runs its lengths[n] steps, at times
0 .. lengths[n]-1, or lengths[n]-1 down to 0 where ``reverse``.

``run_forward`` and ``run_backward`` do for a reference cell what ``fastbptt._calls`` does for
the kernels: make the arrays the call writes (``fastbptt._buffers``), as the kernels lay them
out, with the caller's ``out=`` or cache counted in meanwhile (``fastbptt._sharing``), and hand
them with the steps' ``walk`` to the cell's own loop, written from its equations.
"""
import numpy as np

from .._buffers import backward_buffers, initial_states, make_cache, step_outputs
from .._grads import cell_grads
from .._layout import readonly, swap_major
from .._sharing import begin, end, refilling
from .._validation import check_lengths


def walk(n_steps, lengths, reverse):
    """[(at, before, rows) for each step s], as the module says."""
    if lengths is None:
        every = slice(None)
        return [((s, every), (s - 1, every) if s else None, every) for s in range(n_steps)]
    steps = []
    for s in range(n_steps):
        rows = np.flatnonzero(lengths > s)
        time = lengths[rows] - 1 - s if reverse else np.full(len(rows), s)
        before = (time + 1 if reverse else time - 1, rows) if s else None
        steps.append(((time, rows), before, rows))
    return steps


def final_state(steps, initial, lengths, reverse):
    """Each sequence's state after its last step, (N, H), from the (T, N, H) ``steps``: the
    state at time lengths[n]-1 (at time 0 where ``reverse``), ``initial`` where it has none."""
    if lengths is None:
        return None
    state = np.array(initial)
    rows = np.flatnonzero(lengths)
    state[rows] = steps[0 if reverse else lengths[rows] - 1, rows]
    return state


def run_forward(cell, loop, inputs, out, options, lengths, reverse):
    """(h, cache) of ``cell``'s forward for the checked ``inputs``, ``options`` its choices
    (kept on the cache), ``lengths`` and ``reverse`` as the caller passed them: the per-step
    arrays (new or ``out``'s, zeros at the padded steps) computed by ``loop(inputs, states,
    steps, walk, **options)``, ``steps`` {'h': ..., ...} as time-major views (T, N, ...)."""
    lengths = check_lengths(lengths, inputs.n_batch, inputs.n_steps, reverse)
    return refilling(out, inputs.writes, _fill_forward, cell, loop, inputs, out, options,
                     lengths, reverse)


def _fill_forward(cell, loop, inputs, out, options, lengths, reverse):
    """``run_forward`` once ``out`` is counted in, with ``lengths`` checked."""
    states = initial_states(inputs, out)
    outputs = step_outputs(cell.cache_type, inputs, out)   # in x's layout, as the kernels'
    steps = {name: swap_major(arr, inputs.time_major) for name, arr in outputs.items()}
    if lengths is not None:
        for arr in steps.values():
            arr.fill(0)                     # the padded steps
    loop(inputs, states, steps, walk(inputs.n_steps, lengths, reverse), **options)
    by_length = {}
    if lengths is not None:
        by_length = {"lengths": lengths, "reverse": bool(reverse)}
        by_length.update(("_" + state + "T", final_state(steps[state], states[state + "0"],
                                                         lengths, reverse))
                         for state in cell.states)
    cache = make_cache(cell.cache_type, out, inputs, states, outputs, **options, **by_length)
    return readonly(outputs["h"]), cache


def run_backward(cell, loop, cache, inputs):
    """The ``Grads`` of ``cell``'s backward through ``cache`` for the checked ``inputs``:
    ``loop(cache, inputs, walk, dx, carries, weight_grads)`` runs the steps of ``walk`` from
    the last, writing ``dx`` (a time-major view, zeros at the padded steps), adding into
    ``weight_grads`` and carrying ``carries`` ({'dhT': ..., 'dcT': ...}) back to the initial
    states in place."""
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(cell, cache, inputs)
        dx_by_step = swap_major(dx, cache.time_major)
        if cache.lengths is not None:
            dx_by_step.fill(0)              # the padded steps
        loop(cache, inputs, walk(cache.h.shape[0], cache.lengths, cache.reverse), dx_by_step,
             carries, wg)
    finally:
        end(cache, mode, inputs.writes)
    return cell_grads(cell, dx, carries, wg)
