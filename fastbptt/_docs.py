"""Parameter texts shared by the cells' docstrings, written once (as SciPy's ``doccer``).

A docstring names a shared text as ``{name}``; ``fill`` puts the texts in, indented to match.
"""
import textwrap

SHARED = {
    "forward_x": """\
x : (N, T, D) array, or (T, N, D) if ``time_major``; float32 or float64.
h0 : (N, H) array or None (zeros).""",
    "forward_out": """\
out : a cache from an earlier forward of this cell with the same shapes, dtype and layout, or
    None. Its arrays are refilled instead of allocating new ones (a loop over the chunks of a
    stream), and it is returned as the cache; the hidden states it returned before are
    overwritten. The initial states may be views of its own final states (``out.hT``...); x and
    the weights may not share memory with its arrays (a ValueError). It needs the cache alone:
    while another thread runs a call on it, ``fastbptt.InUseError``. Interrupted (Ctrl-C) or
    failed half-way, it leaves the cache consumed.""",
    "forward_returns": """\
h : (N, T, H) (or (T, N, H)) hidden states, read-only (backward differentiates them).
cache : for the cell's backward; ``cache.hT`` is the final state (``cache.cT`` too for the
    LSTM).""",
    "backward_dh": """\
dh : (N, T, H) (or (T, N, H)) array: dL/dh_t for every t; None means zeros.
cache : from the cell's forward; only read (unless ``overwrite_cache``), so backward may run
    on it more than once, also in several threads at once.""",
    "backward_xi": """\
xi : (T,) truncation multipliers (``fastbptt.truncation``); None is full BPTT. ``xi[t]``
    scales the gradient flowing from step t into the states it received (``xi[0]``: the
    initial states).""",
    "backward_grads": """\
grads : a ``Grads`` (or anything with the weight-gradient arrays ``dWx``, ``dWh``, ``db`` and
    the cell's extra ones, or a dict with those keys) to add the weight gradients into in place
    instead of allocating them. No other call may write them meanwhile (``fastbptt.InUseError``),
    and none may share memory with what the call reads (a ValueError).
h_grad_norms : (T,) array of the cache's dtype, or None. If given, receives for every step the
    Frobenius norm of dL/dh_t, the whole gradient reaching h_t (what ``fastbptt gradflow``
    plots); computed inside the loop, no extra pass.""",
    "forward_lengths": """\
lengths : (N,) integer array or None: sequence n has lengths[n] real steps (0 .. T), the rest
    of its T steps are padding, as in PyTorch's packed sequences: its states stop after its
    last real step (``cache.hT[n]``, and ``cache.cT[n]``, are those, or the initial states
    where lengths[n] == 0), its hidden states at the padded steps are zero, and backward
    ignores dh there and gives them dx = 0 and no weight gradient. The padding costs no work.
    None: every sequence has all T steps.
reverse : bool. True runs each sequence from its last real step (lengths[n] - 1, or T - 1)
    back to step 0, as the reverse direction of a bidirectional layer does; the hidden states
    stay at their time positions and the final state is that of step 0. With ``lengths`` or
    ``reverse``, backward's ``xi[s]`` and ``h_grad_norms[s]`` count a sequence's steps in the
    order they run (s = 0 its first step).""",
    "backward_out": """\
out : the result of an earlier backward of this cell with the same shapes, or None. Its arrays
    receive this call's gradients instead of new ones: dx, the initial states' gradients and,
    unless ``grads`` is given, the weight gradients, all overwritten; the result holds them.
    With ``forward(..., out=cache)`` as well, a loop over chunks allocates nothing after its
    first (backward's scratch arrays, where it needs them, stay on the cache).""",
    "forward_checkpoint": """\
checkpoint : None, 'sqrt' or a positive int k. None keeps every step's values for backward (T
    steps of memory). k keeps only the states entering every k-th step, and backward runs the
    forward again one segment of k steps at a time: memory of T/k + k steps instead of T, for
    one more forward pass; the gradients equal those of full storage to rounding. 'sqrt' is
    k = ceil(sqrt(T)), the least memory. The cache is then a ``CheckpointCache``, and ``h`` a
    new array of the caller's (the cache does not hold it); ``out=`` takes a checkpointed
    cache of the same shapes and k.""",
    "check_finite": """\
check_finite : bool, default True. Whether to scan the arrays passed in for NaN and infinity,
    as SciPy's linear algebra does: True raises a ValueError naming the first array that holds
    one, before any kernel runs. False skips the scan, which reads every element of every input
    on each call (the weights too), microseconds per call on short sequences. A NaN or an
    infinity passed in is then computed with like any other value instead of being refused: the
    results may hold NaN or infinity, with no error naming where it came from. Every other check
    (shapes, dtypes, layouts, memory shared with what the call writes) still runs.""",
}

# the keywords every hidden-state cell's forward takes after its own, in their order
SHARED["forward_keywords"] = "\n".join(
    SHARED[name] for name in ("forward_out", "forward_checkpoint", "forward_lengths",
                              "check_finite"))


def fill(func):
    """Decorator: put the shared texts into ``func``'s docstring."""
    doc = func.__doc__
    for name, text in SHARED.items():
        marker = "{" + name + "}"
        at = doc.find(marker)
        if at < 0:
            continue
        indent = doc[doc.rfind("\n", 0, at) + 1:at]
        doc = doc.replace(marker, textwrap.indent(text, indent)[len(indent):])
    func.__doc__ = doc
    return func
