"""Backpropagation through time in O(sqrt T) memory: every cell's ``checkpoint=`` option.

Full storage keeps every step's states and gate values for backward: T step-states. With
``checkpoint=k`` (gradient checkpointing, Chen et al. 2016) forward runs the sequence in
segments of k steps and keeps only the states entering each segment (h, and c for the LSTM):
T/k of them. Backward walks the segments from the last: it runs the cell's forward once more on
a segment, from its checkpoint, into a workspace cache of k steps, and the cell's backward
through that segment, carrying the gradient into the segment's initial states on to the segment
before. Memory: T/k checkpoints plus a workspace of about k steps, least at k = sqrt(T)
(``checkpoint="sqrt"``); time: one more forward over the sequence.

The recomputed forward is the same arithmetic as the first one, so the gradients equal those of
full storage to rounding. This module is built on the cells' public forward and backward (those
of the kernels or of the reference, passed in), and on the cell records (``fastbptt._cells``)
for the states, weights and options: any cell in the registry runs checkpointed as it is.

Per segment, the cells' keywords do the bookkeeping: the segment's forward makes a cache of its
k steps (the workspace), its backward accumulates the weight gradients into one set
(``grads=``), writes dx in place where the layout allows (``out=``) and carries the gradient into
the segment's initial states from one segment to the one before (``dhT=`` = ``out.dh0``). It
may overwrite the workspace (``overwrite_cache=True``), so no gate-sized scratch array is made
besides, and the workspace is freed before the next segment's is made: a new workspace per
segment rather than one refilled with ``forward(..., out=workspace)``, whose checks cost more
than the allocation (``benchmarks/RESULTS.md``). Every argument is checked once, by the
checkpointed call; the segments' calls skip the NaN/inf scan (``check_finite=False``).
"""
import functools
import inspect
import math
import types

import numpy as np

from ._buffers import backward_buffers, initial_states
from ._caches import Cache
from ._grads import Grads, cell_grads
from ._layout import empty_steps, readonly, swap_major
from ._sharing import begin, end, refilling
from ._validation import (
    BackwardInputs,
    check_all_finite,
    check_backward_out,
    check_backward_reads,
    check_bool,
    check_forward,
    check_grads,
    check_no_overlap,
    check_norms,
    check_upstream,
    check_xi,
    numpy_first_nonfinite,
    numpy_first_overlap,
    out_writes,
)


def check_checkpoint(checkpoint):
    """``checkpoint`` of a cell's forward: None, 'sqrt' or a positive int, else a ValueError."""
    if checkpoint is None or isinstance(checkpoint, str) and checkpoint == "sqrt":
        return checkpoint
    if (isinstance(checkpoint, (int, np.integer)) and not isinstance(checkpoint, (bool, np.bool_))
            and checkpoint >= 1):
        return int(checkpoint)
    raise ValueError(f"checkpoint must be None (keep every step), 'sqrt' (k = ceil(sqrt(T))) or "
                     f"a positive int k (steps per segment), got {checkpoint!r}")


@functools.lru_cache(maxsize=None)
def takes_checkpoint(forward):
    """Whether a cell's ``forward`` takes ``checkpoint=`` (an implementation's cell may not)."""
    return "checkpoint" in inspect.signature(forward).parameters


def segment_steps(checkpoint, n_steps):
    """k, the steps per segment, for a checked ``checkpoint`` and T = ``n_steps`` >= 1: at most
    T (a k beyond T is one segment)."""
    if checkpoint == "sqrt":
        return math.isqrt(n_steps - 1) + 1      # ceil(sqrt(T))
    return min(checkpoint, n_steps)


class CheckpointCache(Cache):
    """What a checkpointed forward hands to backward: the states entering each segment, no
    per-step values.

    Fields: ``cell`` (the cell's name), ``time_major``, ``x`` (a time-major view (T, N, D) of the
    caller's x where it was C-contiguous, as for the other caches: change it not before
    backward), the weights (``Wx``, ``Wh``, ``b`` and the cell's extra ones), the cell's options
    (the RNN's ``nonlinearity``), ``checkpoint`` (k, the steps per segment), ``n_steps`` (T) and,
    for each state s of the cell (h, and c for the LSTM), ``s_checkpoints`` (ceil(T / k), N, H):
    the state entering each segment, the first being the initial state. ``hT`` (``cT``) is the
    final state; ``h0`` (``c0``) the initial one. Read-only, pickled, shared by threads and
    consumed by ``overwrite_cache=True`` as the other caches are.
    """

    by_step = ("x",)
    outputs = {}
    workspaces = ()

    def _fill(self, *parts):
        fields = self.__dict__
        for part in parts:
            fields.update(part)
        fields["fields"] = tuple(name for part in parts for name in part)
        fields["consumed"] = False
        fields["dtype"] = fields["x"].dtype
        fields["_fills"] = fields.get("_fills", 0) + 1
        if "_readers" not in fields:
            fields["_readers"] = []

    @property
    def h0(self):
        """The initial hidden state (N, H), read-only."""
        return readonly(self.__dict__["h_checkpoints"][0])

    @property
    def hT(self):
        """The final hidden state (N, H), read-only."""
        return readonly(self.__dict__["h_final"])

    def __getattr__(self, name):
        """``s0`` and ``sT`` of the cell's other states (the LSTM's ``c0``, ``cT``), read-only."""
        fields = self.__dict__
        if len(name) > 1 and name[-1] in "0T" and name[:-1] + "_final" in fields:
            if name[-1] == "0":
                return readonly(fields[name[:-1] + "_checkpoints"][0])
            return readonly(fields[name[:-1] + "_final"])
        raise AttributeError(f"a checkpointed {fields.get('cell')} cache has no field {name!r}")

    def __repr__(self):
        first = next(name for name in self.fields if name.endswith("_checkpoints"))
        n_segments, n_batch, n_hidden = self.__dict__[first].shape
        return (f"<fastbptt {self.cell} cache, checkpoint={self.checkpoint}: T={self.n_steps} "
                f"N={n_batch} H={n_hidden} {self.dtype}, {n_segments} segments"
                f"{' consumed' if self.consumed else ''}>")


def _by_layout(arr, start, stop, time_major):
    """Steps [start, stop) of a per-step array in the caller's layout (a view)."""
    return arr[start:stop] if time_major else arr[:, start:stop]


def _segment_forward(cell, forward, weights, options, time_major):
    """The cell's ``forward`` as a function of one segment: ``run(x, states)`` with
    ``states`` a list of the initial states in the order of ``cell.states``, returning
    (h, cache). The arguments that stay the same from segment to segment are put together once
    (this runs once per segment: what it costs shows at small k)."""
    positional = [weights[name] for name in cell.weights if name not in cell.extra_weights]
    keywords = {name: weights[name] for name in cell.extra_weights}
    keywords.update(options)
    keywords["time_major"] = time_major
    keywords["check_finite"] = False       # the checkpointed call scanned its inputs
    others = cell.extra_states

    def run(x, states):
        for name, state in zip(others, states[1:]):
            keywords[name] = state
        return forward(x, states[0], *positional, **keywords)
    return run


def checkpointed_forward(cell, forward, checkpoint, x, states, weights, options, *, time_major,
                         out, lengths=None, reverse=False, scan=numpy_first_nonfinite,
                         overlap=numpy_first_overlap, check_finite=True):
    """``<cell>_forward(..., checkpoint=checkpoint)``, run on the cell's ``forward`` (of the
    kernels or of the reference): (h, CheckpointCache). ``states``, ``weights`` and
    ``options`` are the caller's, by name; ``scan``, ``overlap`` and ``check_finite`` as for
    ``check_forward``. Segments run every sequence forward from step 0, so ``lengths`` and
    ``reverse`` are refused."""
    checkpoint = check_checkpoint(checkpoint)
    if lengths is not None or reverse is not False:
        raise ValueError("checkpoint= runs every sequence over all T steps from step 0: it "
                         "takes neither lengths= nor reverse= (pass checkpoint=None)")
    if checkpoint is None:
        raise ValueError(f"out is a cache of {cell.name}_forward with checkpoint="
                         f"{out.checkpoint}: pass checkpoint= to refill it (or out=None)")
    inputs = check_forward(cell, x, states, weights, time_major=time_major, scan=scan,
                           overlap=overlap, check_finite=check_finite)
    k = segment_steps(checkpoint, inputs.n_steps)
    writes = () if out is None else _check_forward_out(cell, out, inputs, k, overlap)
    return refilling(out, writes, _forward_segments, cell, forward, inputs, out, options, k)


def _forward_segments(cell, forward, inputs, out, options, k):
    """``checkpointed_forward`` once ``out`` is counted in: the cell's ``forward`` run on each
    segment of ``k`` steps, the states entering each kept (in ``out``'s arrays or new ones)."""
    n_steps, n_batch, n_hidden, dtype = (inputs.n_steps, inputs.n_batch, inputs.n_hidden,
                                         inputs.dtype)
    n_segments = -(-n_steps // k)      # k steps each, the last one shorter where k divides not T
    start_states = initial_states(inputs, None)      # copies: h0 may be a view of out.hT
    h = empty_steps(n_steps, n_batch, n_hidden, dtype, inputs.time_major)
    h_by_step = swap_major(h, inputs.time_major)
    shape = (n_segments, n_batch, n_hidden)
    kept = {}
    for state in cell.states:
        kept[state + "_checkpoints"] = (getattr(out, state + "_checkpoints") if out is not None
                                        else np.empty(shape, dtype))
        kept[state + "_final"] = (getattr(out, state + "_final") if out is not None
                                  else np.empty(shape[1:], dtype))
        kept[state + "_checkpoints"][0] = start_states[state + "0"]
    run = _segment_forward(cell, forward, inputs.weights, options, inputs.time_major)
    checkpoints = [kept[state + "_checkpoints"] for state in cell.states]
    finals = [kept[state + "_final"] for state in cell.states]
    ends = [state + "T" for state in cell.states]
    x_buffer, tm = inputs.x_buffer, inputs.time_major
    for index in range(n_segments):
        start, stop = index * k, min(index * k + k, n_steps)
        h_segment, segment = run(x_buffer[start:stop] if tm else x_buffer[:, start:stop],
                                 [kept_state[index] for kept_state in checkpoints])
        h_by_step[start:stop] = h_segment if tm else h_segment.swapaxes(0, 1)
        last = index + 1 == n_segments
        for kept_state, final, end_name in zip(checkpoints, finals, ends):
            (final if last else kept_state[index + 1])[...] = getattr(segment, end_name)
        segment = h_segment = None     # freed before the next segment's is made
    fields = {"cell": cell.name, "x": inputs.x, "checkpoint": k, "n_steps": n_steps}
    fields.update(inputs.weights)
    if out is None:
        return h, CheckpointCache(inputs.time_major, fields, dict(options), kept)
    out._fill(fields, dict(options), kept)
    return h, out


def _check_forward_out(cell, out, inputs, k, overlap):
    """``out=`` of a checkpointed forward: a checkpointed cache of the same cell, shapes, dtype,
    layout and k. Returns the (name, array) pairs the call writes."""
    if not isinstance(out, CheckpointCache):
        raise ValueError(f"out must be a cache of {cell.name}_forward with checkpoint= (this "
                         f"call checkpoints), got {type(out).__name__}")
    if out.cell != cell.name:
        raise ValueError(f"out is a cache of {out.cell}_forward, not {cell.name}_forward")
    kept = out.__dict__[cell.states[0] + "_checkpoints"]
    have = (out.n_steps, kept.shape[1], out.x.shape[2], kept.shape[2], out.checkpoint)
    want = (inputs.n_steps, inputs.n_batch, inputs.n_input, inputs.n_hidden, k)
    if have != want:
        raise ValueError(f"out has T, N, D, H, k = {have}, but this call has {want}: out= "
                         "reuses the arrays of a cache of the same shapes and checkpoint")
    if out.dtype != inputs.dtype or out.time_major != inputs.time_major:
        raise ValueError(f"out holds {out.dtype} arrays (time_major={out.time_major}), but "
                         f"this call is {inputs.dtype} (time_major={inputs.time_major})")
    writes = [("out." + name, getattr(out, name)) for state in cell.states
              for name in (state + "_checkpoints", state + "_final")]
    reads = [("x", inputs.x_buffer)] + list(inputs.weights.items())
    check_no_overlap(writes, reads, overlap)
    return writes


def check_checkpoint_cache(cell, cache):
    """``cache`` is a checkpointed cache of ``cell``'s forward, not consumed."""
    if cache.cell != cell.name:
        raise ValueError(f"cache comes from {cache.cell}_forward, not {cell.name}_forward")
    if cache.consumed:
        raise ValueError(cache._consumed_message())


def checkpointed_backward(cell, forward, backward, dh, cache, final, *, xi, grads, h_grad_norms,
                          overwrite_cache, out, scan=numpy_first_nonfinite,
                          overlap=numpy_first_overlap, check_finite=True):
    """``<cell>_backward`` on a ``CheckpointCache``, run on the cell's ``forward`` and
    ``backward``: every argument is checked here, before any segment runs; ``final`` is
    {'dhT': ..., 'dcT': ...} as the caller passed them."""
    check_checkpoint_cache(cell, cache)
    if check_finite is not True and check_finite is not False:
        check_finite = check_bool("check_finite", check_finite)
    inputs = _check_backward(cell, dh, cache, final, xi, grads, h_grad_norms, overwrite_cache,
                             out, scan if check_finite else None, overlap)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        dx, carries, wg = backward_buffers(cell, cache, inputs)
        _backward_segments(cell, forward, backward, cache, inputs, xi is not None, dx, carries,
                           wg)
    finally:
        end(cache, mode, inputs.writes)
    return cell_grads(cell, dx, carries, wg)


def _backward_segments(cell, forward, backward, cache, inputs, xi_given, dx, carries, wg):
    """Recompute and backpropagate each segment, from the last: weight gradients added into
    ``wg``, dx written, ``carries`` carried back to the initial states (``xi_given``: the
    caller passed xi).

    Where the caller gave the arrays (``grads=``, ``out=``, ``h_grad_norms``), the calls on the
    segments write arrays of this call's own instead, copied into the caller's after each
    segment or at the end: this call holds the caller's arrays (``fastbptt._sharing``), and a
    call on a segment claims what it writes."""
    time_major, k = cache.time_major, cache.checkpoint
    fields, dtype = cache.__dict__, cache.dtype
    x = swap_major(cache.x, time_major)
    run = _segment_forward(cell, forward, {name: fields[name] for name in cell.weights},
                           {name: fields[name] for name in cell.options}, time_major)
    checkpoints = [fields[state + "_checkpoints"] for state in cell.states]
    xi = inputs.xi if xi_given else None       # None: the cells' own ones, no check
    callers = inputs.grads is not None or inputs.out is not None   # wg, carries: the caller's
    own_wg = {name: np.zeros_like(arr) for name, arr in wg.items()} if callers else wg
    own_carries = {name: arr.copy() for name, arr in carries.items()} if callers else carries
    extra_carries = {"d" + state + "0": own_carries["d" + state + "T"]
                     for state in cell.states[1:]}
    norms = inputs.h_grad_norms
    own_norms = None if norms is None else np.empty(k, dtype)
    # a new dx (no other call can hold it), whose segments are C-contiguous (time-major, or
    # N = 1): the segments' backward writes it in place
    dx_in_place = inputs.out is None and (time_major or dx.shape[0] == 1)
    dx_work = None
    n_segments = checkpoints[0].shape[0]
    for index in range(n_segments - 1, -1, -1):
        start, stop = index * k, min(index * k + k, cache.n_steps)
        n_steps = stop - start
        _, segment = run(x[start:stop] if time_major else x[:, start:stop],
                         [kept_state[index] for kept_state in checkpoints])
        if dx_in_place:
            dx_segment = dx[start:stop] if time_major else dx[:, start:stop]
        else:
            if dx_work is None or dx_work.shape[1 - time_major] != n_steps:
                dx_work = empty_steps(n_steps, dx.shape[int(time_major)], dx.shape[2], dtype,
                                      time_major)
            dx_segment = dx_work
        backward(_by_layout(inputs.dh_buffer, start, stop, time_major), segment,
                 xi=None if xi is None else xi[start:stop], grads=own_wg,
                 h_grad_norms=None if norms is None else own_norms[:n_steps],
                 overwrite_cache=True, check_finite=False,
                 out=Grads(dx_segment, own_carries["dhT"], None, None, None, **extra_carries),
                 **own_carries)
        if not dx_in_place:
            _by_layout(dx, start, stop, time_major)[...] = dx_segment
        if norms is not None:
            norms[start:stop] = own_norms[:n_steps]
        segment = None                 # freed before the next segment's is made
    if callers:
        for name, arr in own_wg.items():
            wg[name] += arr
        for name, arr in own_carries.items():
            carries[name][...] = arr


def _check_backward(cell, dh, cache, final, xi, grads, h_grad_norms, overwrite_cache, out, scan,
                    overlap):
    """The checks of ``check_backward`` for a checkpointed cache: a ``BackwardInputs``; ``scan``
    None: no NaN/inf scan."""
    overwrite_cache = check_bool("overwrite_cache", overwrite_cache)
    dtype, time_major = cache.dtype, cache.time_major
    n_steps = cache.n_steps
    _, n_batch, n_hidden = cache.__dict__[cell.states[0] + "_checkpoints"].shape
    shapes = types.SimpleNamespace(     # the shapes of a full cache, as the checks read them
        h=np.broadcast_to(np.empty((), dtype), (n_steps, n_batch, n_hidden)), x=cache.x,
        time_major=time_major, dtype=dtype)
    if time_major:
        dh_shape, dh_expected = (n_steps, n_batch, n_hidden), "(T, N, H)"
    else:
        dh_shape, dh_expected = (n_batch, n_steps, n_hidden), "(N, T, H)"
    if out is not None:
        check_backward_out(cell, out, shapes, weights=grads is None)
    dh, checked_final, given = check_upstream(dh, final, dh_shape, dh_expected, dtype)
    xi_given = xi
    xi = check_xi(xi, n_steps, dtype, scan)
    if scan is not None:
        check_all_finite(given, scan)
    writes = []
    if grads is not None:
        grads = check_grads(cell, grads, shapes)
        writes = [("grads." + name, arr) for name, arr in grads.items()]
    if h_grad_norms is not None:
        writes.append(("h_grad_norms", check_norms(h_grad_norms, n_steps, dtype)))
    if out is not None:
        writes += out_writes(cell, out, grads, checked_final, overlap)
    if writes:
        check_backward_reads(writes, given, "dh", None if xi_given is None else xi, cache,
                             overlap)
    return BackwardInputs._make((dh, swap_major(dh, time_major), checked_final, xi, grads, out,
                                 h_grad_norms, overwrite_cache, tuple(writes)))
