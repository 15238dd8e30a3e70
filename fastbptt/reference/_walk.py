"""The order in which the steps of a batch run, for sequences of unequal lengths and reversed
ones (NumPy only).

``walk`` gives, for each step s in the order they run, where its values are: ``at`` indexes
the (T, N, ...) per-step arrays at the sequences' step s, ``before`` at the step each of them
ran just before (None at s = 0: the initial states) and ``rows`` the (N, ...) arrays (initial
states, carries) at those sequences. Without lengths and forward, step s is time s of every
sequence (slices, no copies); else sequence n runs its lengths[n] steps, at times
0 .. lengths[n]-1, or lengths[n]-1 down to 0 where ``reverse``.
"""
import numpy as np


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
