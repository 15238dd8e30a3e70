"""Input checks shared by the kernels' wrappers and the NumPy reference.

Every public function runs these before any kernel does: each error names the argument, what it
got and what was expected. The checks only check: they allocate nothing the call returns and
change nothing (``_buffers`` allocates). Arrays come out as the kernels want them: one float
dtype (float32 or float64, never silently upcast), native byte order, and C-contiguous in the
caller's layout (batch-major (N, T, ...) or time-major (T, N, ...)): the kernels take either
layout as it is, with the strides between rows, so C-contiguous input is never copied. Per-step
arrays are handed on both as that buffer (``x_buffer``, ``dh_buffer``) and as its time-major
view (``x``, ``dh``: (T, N, ...), no copy), which the reference and the cache index by step.
Strided, Fortran-ordered and byte-swapped inputs are accepted (copied where needed), and so are
read-only ones (the kernels only read them).

Non-finite values (NaN, inf) in any input are rejected with a ValueError, unless the caller
passed ``check_finite=False``. The scan that finds them is passed in: ``numpy_first_nonfinite``
for the reference, which imports nothing compiled, and the kernels' compiled one
(``fastbptt._kernels.checks``, ``src/_checks.pyx``), a read-only pass over the arrays in place
that costs microseconds.

The kernels also pass ``ready`` (``forward_ready``, ``backward_ready`` of ``src/_checks.pyx``):
one compiled pass over the arrays' headers that recognises arguments needing nothing done to
them (NumPy arrays of one native float dtype, C-contiguous, of matching shapes, finite) and
returns what the checks below would; for anything else it returns nothing and the checks below
run, converting the argument or raising their message. It runs on every call and keeps nothing,
so arrays changed between calls are checked as on a first call.

Counts: every count the kernels hand to BLAS or loop over as a C ``int`` (T, N, T*N, D, H, G*H
and, batch-major, the leading dimensions T*D and T*G*H) must fit in one: a larger one is refused
(``check_counts``) before any array is copied, since the copy of a broadcast array could be
huge. The reference takes the same limits, so code written against it meets the same errors.

Overlapping memory: a call must not write an array that it reads, or write two arrays that share
memory (``x`` a view of the cache that ``out=`` refills, ``grads.dWx`` the cache's ``Wx``). The
caller's arrays that a call writes (``out=``'s, ``grads=``', ``h_grad_norms``) are compared with
every array it reads and with each other, by their memory bounds (``np.may_share_memory``); the
kernels pass their compiled version (``first_overlap`` of ``src/_checks.pyx``). New outputs are
never compared: nothing else can hold them.
"""
import functools
import types
from collections.abc import Mapping
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ._caches import Cache
from ._grads import Grads
from ._layout import swap_major


def numpy_first_nonfinite(arrays):
    """The index of the first of ``arrays`` that holds NaN or inf, else -1 (NumPy only)."""
    for index, arr in enumerate(arrays):
        if not np.isfinite(arr).all():
            return index
    return -1


def numpy_first_overlap(writes, reads):
    """The names of the first two arrays that may share memory, a write against a read or
    against a later write: ``writes`` and ``reads`` are lists of (name, array). None if there
    are none (NumPy only; ``np.may_share_memory`` compares the arrays' memory bounds)."""
    writes = list(writes)
    for i, (name, arr) in enumerate(writes):
        for other, arr2 in writes[i + 1:] + list(reads):
            if np.may_share_memory(arr, arr2):
                return name, other
    return None


# the NumPy counterparts of the kernels' compiled checks (``fastbptt._kernels.checks``), which the
# reference passes where the kernels' wrappers pass those; it has no ``ready`` pass
NUMPY_CHECKS = types.SimpleNamespace(first_nonfinite=numpy_first_nonfinite,
                                     first_overlap=numpy_first_overlap,
                                     forward_ready=None, backward_ready=None)


def check_no_overlap(writes, reads, overlap=numpy_first_overlap):
    """A ValueError naming two arrays of a call that share memory where one is written: the
    call would read values it has overwritten, or write one result over another."""
    pair = overlap(writes, reads)
    if pair is not None:
        written, other = pair
        role = "writes" if any(name == other for name, _ in writes) else "reads"
        raise ValueError(
            f"{written} and {other} overlap in memory: this call writes {written} and also "
            f"{role} {other}, so it would give wrong results; pass arrays that share no memory "
            "(e.g. a copy)")


INT_MAX = 2**31 - 1   # the largest count BLAS takes, and the kernels' loops: a C int


def check_counts(cell, n_steps, n_batch, n_input, n_hidden, time_major):
    """Every count the kernels pass to BLAS or loop over as a C int fits in one: T, N, the T*N
    rows of the hoisted products, D, H, G*H and, batch-major with N > 1, the leading dimensions
    between two rows of a step, T*D and T*G*H. A ValueError naming the argument and the limit
    otherwise."""
    gh = cell.n_gates * n_hidden
    split = "; split the sequence (fastbptt.TBPTT) or the batch"
    counts = [("x", "T", n_steps, split), ("x", "N", n_batch, split),
              ("x", "T * N (rows of the products over all steps)", n_steps * n_batch, split),
              ("x", "D", n_input, ""), ("Wh", "H", n_hidden, ""),
              ("Wh", f"G * H (G = {cell.n_gates} gate blocks)", gh, "")]
    if not time_major and n_batch > 1:
        between = "batch-major: the distance between two rows of a step"
        counts += [("x", f"T * D ({between})", n_steps * n_input, "; pass time_major=True"),
                   ("x", f"T * G * H ({between} of the gate values)", n_steps * gh,
                    "; pass time_major=True")]
    for name, what, value, hint in counts:
        if value > INT_MAX:
            raise ValueError(f"{name}: {what} = {value} is more than the kernels can count "
                             f"(at most {INT_MAX} = 2**31 - 1, a 32-bit int, as BLAS takes "
                             f"it){hint}")


def as_float_array(name, value):
    """``value`` as a float32/float64 ndarray in native byte order, else a TypeError naming it."""
    if value is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got None")
    arr = np.asarray(value)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def check_all_finite(named, scan=numpy_first_nonfinite):
    """Raise a ValueError naming the first of the (name, array) pairs that holds NaN or inf,
    found by ``scan`` (a function of a list of arrays, as ``numpy_first_nonfinite``)."""
    bad = scan([arr for _, arr in named])
    if bad >= 0:
        raise ValueError(f"{named[bad][0]} contains NaN or infinity")


def check_array(name, value, shape, dtype, expected, like="x", scan=numpy_first_nonfinite):
    """A float array of exactly ``shape`` and ``dtype`` (that of the argument ``like``), finite
    unless ``scan`` is None (the caller then checks it with ``check_all_finite``); ``expected``
    spells the shape."""
    arr = as_float_array(name, value)
    if arr.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but {like} has dtype {dtype}; "
            "pass all arrays in one float dtype (fastbptt does not upcast)")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {expected} = {tuple(shape)}, got {arr.shape}")
    if scan is not None:
        check_all_finite([(name, arr)], scan)
    return arr


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_option(cell, name, value):
    """``value`` of the choice ``name`` of ``cell.options`` (the RNN's nonlinearity) is one of
    its allowed values."""
    allowed = cell.options[name]
    if value not in allowed:
        spelled = ", ".join(repr(v) for v in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"{name} must be {spelled}, got {value!r}")
    return value


def check_x(x, time_major):
    """A forward's x: a 3-D float array, (N, T, D) or (T, N, D) if ``time_major`` (True or
    False), with T >= 1 and D >= 1. Returns (x, time_major, T, N, D), x as a float array in
    native byte order (``as_float_array``)."""
    time_major = check_bool("time_major", time_major)
    layout = "(T, N, D)" if time_major else "(N, T, D)"
    x = as_float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D array {layout}, got shape {x.shape}")
    n_steps, n_batch = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    n_input = x.shape[2]
    if n_steps == 0:
        raise ValueError(f"x must have at least one time step (T >= 1), got shape {x.shape}")
    if n_input == 0:
        raise ValueError(f"x must have at least one input feature (D >= 1), got shape {x.shape}")
    return x, time_major, n_steps, n_batch, n_input


class ForwardInputs(NamedTuple):
    """The checked arguments of a cell's forward.

    x_buffer : x C-contiguous in the caller's layout; x : its time-major view (T, N, D).
    states : {'h0': (N, H) array or None, and 'c0' for the LSTM}, as the caller gave them.
    weights : {'Wx', 'Wh', 'b' and the cell's extra weights ('bh': zeros where None)},
        C-contiguous.
    writes : (name, array) pairs of the caller's arrays the call writes: those of ``out=``.
    """
    x_buffer: np.ndarray
    x: np.ndarray
    states: dict
    weights: dict
    dtype: np.dtype
    n_steps: int
    n_batch: int
    n_input: int
    n_hidden: int
    time_major: bool
    writes: Sequence


def check_forward(cell, x, states, weights, *, time_major, out=None,
                  scan=numpy_first_nonfinite, overlap=numpy_first_overlap, check_finite=True,
                  ready=None):
    """Check the arguments of ``<cell>_forward``; ``cell`` is its ``Cell`` record, ``states``
    {'h0': ..., 'c0': ...} and ``weights`` {'Wx': ..., 'Wh': ..., 'b': ..., 'bh': ...} as the
    caller passed them (None where a state or an extra weight was not given; both dicts are the
    call's own, and become the result's), ``out`` a cache to refill or None. ``scan`` finds
    non-finite values, ``overlap`` arrays that share memory (the kernels pass compiled ones);
    ``check_finite`` False skips the scan. ``ready`` (the kernels pass
    ``fastbptt._kernels.checks.forward_ready``) recognises, in one compiled pass, arguments that
    need no conversion and pass every check: then none of the checks below runs. Returns a
    ``ForwardInputs``."""
    if check_finite is not True and check_finite is not False:
        check_finite = check_bool("check_finite", check_finite)
    dims = None if ready is None else ready(x, states, weights, cell.n_gates, time_major,
                                            check_finite)
    if dims is not None:
        if out is None:
            return _ready_forward_inputs(cell, x, states, weights, time_major, dims)
        inputs = _ready_forward_inputs(cell, x, states, weights, time_major, dims)
        check_forward_out(cell, out, inputs)
        # as the checks below list them, for the same message where several overlap (an extra
        # weight not given is now the read-only zeros of _zeros, which overlap nothing)
        reads = [("x", x)] + [(name, weights[name]) for name in cell.forward_reads]
        return tuple.__new__(ForwardInputs, (*inputs[:-1], _forward_out_overlaps(
            cell, out, states, reads, overlap)))
    n_gates = cell.n_gates
    x, time_major, n_steps, n_batch, n_input = check_x(x, time_major)
    dtype = x.dtype
    spelled = cell.weight_shapes_spelled
    Wh = as_float_array("Wh", weights["Wh"])
    if Wh.ndim != 2 or Wh.shape[0] == 0 or Wh.shape[1] != n_gates * Wh.shape[0]:
        raise ValueError(f"Wh must have shape {spelled['Wh']} with H >= 1, got {Wh.shape}")
    if Wh.dtype != dtype:
        check_array("Wh", Wh, Wh.shape, dtype, spelled["Wh"], scan=None)     # raises
    n_hidden = Wh.shape[0]
    gh = n_gates * n_hidden
    if n_steps * n_batch > INT_MAX or n_input > INT_MAX or gh > INT_MAX or not (
            time_major or n_batch <= 1 or n_steps * (n_input + gh) <= INT_MAX):
        check_counts(cell, n_steps, n_batch, n_input, n_hidden, time_major)  # before any copy
    x = np.ascontiguousarray(x)
    checked = {"Wh": np.ascontiguousarray(Wh)}
    given = [("x", x), ("Wh", checked["Wh"])]
    for name in cell.weights[2:]:       # b and the extra weights, (G*H,)
        value = weights[name]
        if value is None and name in cell.extra_weights:     # not given: zeros
            checked[name] = _zeros(gh, dtype)
            continue
        checked[name] = value = np.ascontiguousarray(
            check_array(name, value, (gh,), dtype, spelled[name], scan=None))
        given.append((name, value))
    checked["Wx"] = Wx = np.ascontiguousarray(
        check_array("Wx", weights["Wx"], (n_input, gh), dtype, spelled["Wx"], scan=None))
    given.append(("Wx", Wx))
    inputs = ForwardInputs._make((x, swap_major(x, time_major), {}, checked, dtype, n_steps,
                                  n_batch, n_input, n_hidden, time_major, ()))
    if out is not None:
        check_forward_out(cell, out, inputs)
    for name, value in states.items():
        if value is not None:
            value = check_array(name, value, (n_batch, n_hidden), dtype, "(N, H)", scan=None)
            given.append((name, value))
        inputs.states[name] = value
    if check_finite:
        check_all_finite(given, scan)
    if out is not None:
        reads = [(name, value) for name, value in given if name not in inputs.states]
        inputs = inputs._replace(writes=_forward_out_overlaps(cell, out, inputs.states, reads,
                                                              overlap))
    return inputs


def _ready_forward_inputs(cell, x, states, weights, time_major, dims):
    """The ``ForwardInputs`` of arguments that ``ready`` found ready as they are, with the
    (T, N, D, H) it returned: the caller's arrays and dicts, the extra weights not given filled
    in with zeros."""
    for name in cell.extra_weights:
        if weights[name] is None:
            weights[name] = _zeros(cell.n_gates * dims[3], x.dtype)
    return tuple.__new__(ForwardInputs, (x, x if time_major else x.swapaxes(0, 1), states,
                                         weights, x.dtype, *dims, time_major, ()))


def _forward_out_overlaps(cell, out, states, reads, overlap):
    """The arrays of ``out`` (a cache to refill) that forward writes, as (name, array) pairs
    (``Cell.out_writes``), checked against ``reads``, the (name, array) pairs of the arrays it
    reads besides the initial states. The initial states (``states``, the caller's, None where
    not given) are copied into the cache first, so a state may be a view of the cache's per-step
    arrays (its ``hT``, as a stream carries it) or of its own target, but not of another state's
    target (h0 of out.c0)."""
    writes = [(label, getattr(out, name)) for label, name in cell.out_writes]
    check_no_overlap(writes, reads, overlap)
    n_states = len(cell.states)
    if n_states > 1:            # with one state, there is no other state's target
        targets = writes[:n_states]
        for name, value in states.items():
            if value is not None:
                check_no_overlap([t for t in targets if t[0] != "out." + name],
                                 [(name, value)], overlap)
    return tuple(writes)


class BackwardInputs(NamedTuple):
    """The checked arguments of a cell's backward.

    dh_buffer : dh C-contiguous in the cache's layout (zeros where None); dh : its time-major
        view (T, N, H).
    final : {'dhT': (N, H) array or None, and 'dcT' for the LSTM}, as the caller gave them.
    xi : (T,) truncation multipliers in the cache's dtype (ones where None: full BPTT).
    grads : the caller's weight-gradient buffers to accumulate into, {'dWx': ..., 'dWh': ...,
        'db': ...(, 'dbh')}, or None.
    out : the earlier result whose arrays receive this one's, or None.
    h_grad_norms : the caller's (T,) array to receive ||dL/dh_t||, or None.
    writes : (name, array) pairs of the caller's arrays the call writes (those of ``grads``,
        ``out`` and ``h_grad_norms``).
    """
    dh_buffer: np.ndarray
    dh: np.ndarray
    final: dict
    xi: np.ndarray
    grads: Optional[dict]
    out: Optional[Grads]
    h_grad_norms: Optional[np.ndarray]
    overwrite_cache: bool
    writes: Sequence


def check_upstream(dh, final, dh_shape, dh_expected, dtype, dh_name="dh",
                   state_expected="(N, H)"):
    """A backward's upstream gradients: dh (``dh_shape``, spelled ``dh_expected``, '(N, T, H)'
    or '(T, N, H)'; zeros where None) made C-contiguous, and {'dhT': ..., } the gradients into
    the final states, (N, H) or None; with the (name, array) pairs the caller passed, for the
    finiteness and overlap checks. Jordan's network names them dy and dyT, of (N, O) states
    (``dh_name``, ``state_expected``)."""
    given = []
    if dh is None:
        dh = np.zeros(dh_shape, dtype)
    else:
        dh = np.ascontiguousarray(check_array(dh_name, dh, dh_shape, dtype, dh_expected,
                                              like="the cache", scan=None))
        given.append((dh_name, dh))
    n_batch = dh_shape[1] if dh_expected.startswith("(T") else dh_shape[0]
    state_shape = (n_batch, dh_shape[2])
    checked = {}
    for name, value in final.items():
        if value is not None:
            value = check_array(name, value, state_shape, dtype, state_expected,
                                like="the cache", scan=None)
            given.append((name, value))
        checked[name] = value
    return dh, checked, given


def check_norms(h_grad_norms, n_steps, dtype):
    """``h_grad_norms``, the (T,) array of a backward's dtype that receives ||dL/dh_t||."""
    norms = h_grad_norms
    if not isinstance(norms, np.ndarray) or norms.dtype != dtype or norms.shape != (n_steps,):
        raise ValueError(f"h_grad_norms must be a {dtype} array of shape (T,) = ({n_steps},)")
    if not (norms.flags.c_contiguous and norms.flags.writeable):
        raise ValueError("h_grad_norms must be C-contiguous and writeable")
    return norms


def out_writes(cell, out, grads, final, overlap):
    """The (name, array) pairs a backward writes of ``out`` (checked): dx, the initial states'
    gradients and, without ``grads``, the weight gradients. The gradients into the final states
    (``final``, checked) are copied into out's first, so one that shares memory with another
    state's target is refused here (ValueError)."""
    pairs = cell.grads_out_writes                # dx, the states' gradients, the weights'
    carried = pairs[1:1 + len(cell.states)]
    for name, value in final.items():
        if value is not None:
            mine = "out." + name[:-1] + "0"
            check_no_overlap([(label, getattr(out, c)) for label, c in carried
                              if label != mine], [(name, value)], overlap)
    if grads is not None:
        pairs = pairs[:1 + len(cell.states)]
    return [(label, getattr(out, name)) for label, name in pairs]


def check_backward(cell, dh, cache, final, *, xi=None, grads=None, h_grad_norms=None,
                   out=None, overwrite_cache=False, scan=numpy_first_nonfinite,
                   overlap=numpy_first_overlap, check_finite=True, ready=None):
    """Check the arguments of ``<cell>_backward``; ``final`` is {'dhT': ..., 'dcT': ...} as the
    caller passed them (the call's own dict). A cache that a backward with
    ``overwrite_cache=True`` consumed is refused (ValueError). ``scan``, ``overlap`` and
    ``check_finite`` as for ``check_forward``; ``ready`` (the kernels pass
    ``fastbptt._kernels.checks.backward_ready``) recognises, in one compiled pass, a dh and
    final states that need no conversion and pass every check. Returns a ``BackwardInputs``."""
    check_cache(cell, cache)
    if overwrite_cache is not True and overwrite_cache is not False:
        overwrite_cache = check_bool("overwrite_cache", overwrite_cache)
    if check_finite is not True and check_finite is not False:
        check_finite = check_bool("check_finite", check_finite)
    dtype = cache.dtype
    n_steps, n_batch, n_hidden = cache.h.shape
    if cache.time_major:
        dh_shape, dh_expected = (n_steps, n_batch, n_hidden), "(T, N, H)"
    else:
        dh_shape, dh_expected = (n_batch, n_steps, n_hidden), "(N, T, H)"
    fast = False
    if ready is not None and out is not None and isinstance(out, Grads):
        # out='s arrays checked in the same compiled pass, where they are as backward made them
        names, shapes = _out_plan(cell, cache, grads is None)
        fast = ready(dh, final, dtype.itemsize, dh_shape, n_batch, check_finite,
                     tuple([getattr(out, name, None) for name in names]), shapes)
    if out is not None and not fast:
        check_backward_out(cell, out, cache, weights=grads is None)
    if fast or ready is not None and ready(dh, final, dtype.itemsize, dh_shape, n_batch,
                                           check_finite):
        given = [("dh", dh)]
        checked_final = final
        xi_given = xi
        xi = _ones(n_steps, dtype) if xi is None else check_xi(
            xi, n_steps, dtype, scan if check_finite else None)
    else:
        dh, checked_final, given = check_upstream(dh, final, dh_shape, dh_expected, dtype)
        xi_given = xi
        xi = check_xi(xi, n_steps, dtype, scan if check_finite else None)
        if check_finite:
            check_all_finite(given, scan)
    writes = ()
    if grads is not None:
        grads = check_grads(cell, grads, cache)
        writes = [("grads." + name, arr) for name, arr in grads.items()]
    if h_grad_norms is not None:
        writes = [*writes, ("h_grad_norms", check_norms(h_grad_norms, n_steps, dtype))]
    if out is not None:
        writes = [*writes, *out_writes(cell, out, grads, checked_final, overlap)]
    if writes:
        check_backward_reads(writes, given, "dh", None if xi_given is None else xi, cache,
                             overlap)
    return tuple.__new__(BackwardInputs, (dh, swap_major(dh, cache.time_major), checked_final, xi,
                                          grads, out, h_grad_norms, overwrite_cache, writes))


def check_backward_reads(writes, given, upstream, xi, cache, overlap):
    """The arrays a backward ``writes`` against those it reads: of ``given`` (the caller's
    (name, array) pairs, as ``check_upstream`` returns them) the one named ``upstream`` (dh, or
    Jordan's dy; the gradients into the final states are copied before anything is written),
    ``xi`` (the caller's, checked; None where not given) and the arrays of ``cache``."""
    reads = [(name, arr) for name, arr in given if name == upstream]
    if xi is not None:
        reads.append(("xi", xi))
    reads += _cache_reads(cache)
    check_no_overlap(writes, reads, overlap)


def _out_plan(cell, cache, weights):
    """The names of the arrays of a backward's ``out=`` that it writes (dx, the initial states'
    gradients and, where ``weights``, the weight gradients) and their shapes for ``cache``:
    made once per cache (its shapes never change: a forward refilling it has the same)."""
    fields = cache.__dict__
    key = "_out_plan_weights" if weights else "_out_plan"
    plan = fields.get(key)
    if plan is None:
        n_steps, n_batch, n_hidden = cache.h.shape
        n_input = cache.x.shape[2]
        names = ["dx"] + ["d" + state + "0" for state in cell.states]
        shapes = [(n_steps, n_batch, n_input) if cache.time_major
                  else (n_batch, n_steps, n_input)] + [(n_batch, n_hidden)] * len(cell.states)
        if weights:
            for name, shape in cell.weight_shapes(n_input, n_hidden).items():
                names.append("d" + name)
                shapes.append(shape)
        plan = fields[key] = (tuple(names), tuple(shapes))
    return plan


def _cache_reads(cache):
    """(name, array) pairs of the arrays of ``cache`` that a backward reads, for the overlap
    checks: made again after each forward that refilled the cache (its weights are the new
    call's), and each time for a cache of sequences by length (it lays some per-step arrays out
    on request)."""
    fields = cache.__dict__
    memo = fields.get("_reads")
    if memo is not None and memo[0] == fields.get("_fills") and "_inner" not in fields:
        return memo[1]
    # fields.get: a cache of sequences by length lays some per-step arrays out on request
    reads = [("cache." + name, fields.get(name)) for name in cache.fields
             if isinstance(fields.get(name), np.ndarray)]
    fields["_reads"] = (fields.get("_fills"), reads)
    return reads


def check_cache(cell, cache):
    """``cache`` comes from ``cell``'s forward and was not consumed."""
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be the cache returned by {cell.name}_forward, "
                        f"got {type(cache).__name__}")
    if not isinstance(cache, cell.cache_type):
        raise ValueError(f"cache comes from {cache.cell}_forward, not {cell.name}_forward")
    if cache.consumed:
        raise ValueError(cache._consumed_message())


def check_xi(xi, n_steps, dtype, scan=numpy_first_nonfinite):
    """Truncation multipliers: (T,) real and finite (found by ``scan``; None: not scanned),
    returned in ``dtype``; None means ones."""
    if xi is None:
        return _ones(n_steps, np.dtype(dtype))
    arr = np.asarray(xi)
    if arr.dtype.kind not in "fiu" or arr.dtype.itemsize > 8:
        raise TypeError(f"xi must be a real array of shape (T,), got dtype {arr.dtype}")
    if arr.shape != (n_steps,):
        raise ValueError(f"xi must have shape (T,) = ({n_steps},), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if scan is not None:
        check_all_finite([("xi", arr)], scan)
    return arr


@functools.lru_cache(maxsize=32)
def _zeros(size, dtype):
    """A read-only (size,) array of zeros, made once per (size, dtype): an extra weight not
    given (the GRU's bh=None)."""
    zeros = np.zeros(size, dtype)
    zeros.flags.writeable = False
    return zeros


@functools.lru_cache(maxsize=32)
def _ones(n_steps, dtype):
    """A read-only (T,) array of ones, made once per (T, dtype): full BPTT's xi, without a new
    array per call (a loop over chunks allocates nothing after its first)."""
    ones = np.ones(n_steps, dtype)
    ones.flags.writeable = False
    return ones


def check_forward_out(cell, out, inputs):
    """``out=`` of ``<cell>_forward``: a cache of the same cell, dtype, layout and shapes as the
    call checked into ``inputs``, whose arrays it refills."""
    if not isinstance(out, Cache):
        raise TypeError(f"out must be a cache returned by {cell.name}_forward (to reuse its "
                        f"arrays), got {type(out).__name__}")
    if not isinstance(out, cell.cache_type):
        raise ValueError(f"out is a cache of {out.cell}_forward, not {cell.name}_forward")
    n_steps, n_batch, n_hidden = out.h.shape
    have = (n_steps, n_batch, out.x.shape[2], n_hidden)
    want = (inputs.n_steps, inputs.n_batch, inputs.n_input, inputs.n_hidden)
    if have != want:
        raise ValueError(f"out has T, N, D, H = {have}, but this call has {want}: out= reuses "
                         "the arrays of a cache of the same shapes")
    if out.dtype != inputs.dtype:
        raise ValueError(f"out holds {out.dtype} arrays, but x is {inputs.dtype}")
    if out.time_major != inputs.time_major:
        def name(tm):
            return "time-major" if tm else "batch-major"
        raise ValueError(f"out was made {name(out.time_major)} (time_major={out.time_major}), "
                         f"this call is {name(inputs.time_major)}")


def check_backward_out(cell, out, cache, weights):
    """``out=`` of ``<cell>_backward``: a result of an earlier backward whose arrays dx, dh0
    (dc0) and, where ``weights``, the weight gradients match this call's and are writeable."""
    if not isinstance(out, Grads):
        raise TypeError(f"out must be the result of an earlier {cell.name}_backward (to reuse "
                        f"its arrays), got {type(out).__name__}")
    n_steps, n_batch, n_hidden = cache.h.shape
    n_input = cache.x.shape[2]
    dx_shape = ((n_steps, n_batch, n_input) if cache.time_major
                else (n_batch, n_steps, n_input))
    shapes = {"dx": dx_shape}
    shapes.update(("d" + state + "0", (n_batch, n_hidden)) for state in cell.states)
    if weights:
        shapes.update(("d" + name, shape)
                      for name, shape in cell.weight_shapes(n_input, n_hidden).items())
    for name, shape in shapes.items():
        buf = getattr(out, name, None)
        # dx too must be C-contiguous: the kernels write it in x's layout
        ok = (isinstance(buf, np.ndarray) and buf.dtype == cache.dtype and buf.shape == shape
              and buf.flags.writeable and buf.flags.c_contiguous)
        if not ok:
            got = (f"{buf.dtype} {buf.shape}" if isinstance(buf, np.ndarray)
                   else type(buf).__name__)
            raise ValueError(f"out.{name} must be a writeable {cache.dtype} array of shape "
                             f"{shape} laid out as backward returns it, got {got}")


def check_grads(cell, grads, cache):
    """The caller's weight-gradient buffers: right shape and dtype, C-contiguous, writeable.
    ``grads`` has them as attributes (a ``Grads``, a ``WeightGrads``) or as the keys of a
    mapping. Returns them as a dict {'dWx': ..., 'dWh': ..., 'db': ...(, 'dbh')}."""
    n_input, n_hidden = cache.x.shape[2], cache.h.shape[2]
    # a Grads or a dict answered without the abstract Mapping's check, whose first call on a
    # type fills its caches (the memory a loop over chunks is tested not to take after its first)
    is_mapping = isinstance(grads, dict) or (not isinstance(grads, Grads)
                                             and isinstance(grads, Mapping))
    checked = {}
    for name, shape in cell.weight_shapes(n_input, n_hidden).items():
        if is_mapping:
            if "d" + name not in grads:
                raise TypeError(
                    f"grads is a {type(grads).__name__} without the key 'd{name}': a mapping "
                    f"needs the keys {', '.join(repr(g) for g in cell.weight_grads)}; or pass a "
                    f"Grads (the result of an earlier {cell.name}_backward)")
            buf = grads["d" + name]
        else:
            buf = getattr(grads, "d" + name, None)
        if not isinstance(buf, np.ndarray):
            hint = "" if buf is not None or is_mapping else (
                f": pass a Grads (the result of an earlier {cell.name}_backward), an object "
                f"with the attributes {', '.join(cell.weight_grads)}, or a dict with those keys")
            raise TypeError(f"grads.d{name} must be a NumPy array to accumulate into, "
                            f"got {type(buf).__name__}{hint}")
        if buf.dtype != cache.dtype or buf.shape != shape:
            raise ValueError(f"grads.d{name} must be a {cache.dtype} array of shape {shape}, "
                             f"got {buf.dtype} {buf.shape}")
        if not (buf.flags.c_contiguous and buf.flags.writeable):
            raise ValueError(f"grads.d{name} must be C-contiguous and writeable")
        checked["d" + name] = buf
    return checked


def check_lengths(lengths, n_batch, n_steps, reverse=False):
    """Per-sequence lengths: an integer array (N,) (or floats holding integers), each in
    0 .. T; returned as int64, or None where ``lengths`` is None and not ``reverse`` (every
    sequence runs all T steps forward). ``reverse`` must be True or False; a reversed batch
    without lengths has all T steps in each sequence."""
    reverse = check_bool("reverse", reverse)
    if lengths is None:
        return np.full(n_batch, n_steps, np.int64) if reverse else None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"lengths must be an integer array of shape (N,) = ({n_batch},), "
                         f"got dtype {arr.dtype}")
    if arr.shape != (n_batch,):
        raise ValueError(f"lengths must have shape (N,) = ({n_batch},), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError("lengths must hold whole numbers of steps, got non-integer values")
    if n_batch and (arr.min() < 0 or arr.max() > n_steps):
        raise ValueError(f"lengths must be between 0 and T = {n_steps}, got values from "
                         f"{arr.min()} to {arr.max()}")
    return arr.astype(np.int64)
