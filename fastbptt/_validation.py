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

Non-finite values (NaN, inf) in any input are rejected with a ValueError. The scan that finds
them is passed in: ``numpy_first_nonfinite`` for the reference, which imports nothing compiled,
and the kernels' compiled one (``fastbptt._kernels.checks``, ``src/_checks.pyx``), a
read-only pass over the arrays in place that costs microseconds.
"""
import functools
from typing import NamedTuple, Optional

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


class ForwardInputs(NamedTuple):
    """The checked arguments of a cell's forward.

    x_buffer : x C-contiguous in the caller's layout; x : its time-major view (T, N, D).
    states : {'h0': (N, H) array or None, and 'c0' for the LSTM}, as the caller gave them.
    weights : {'Wx', 'Wh', 'b' and the cell's extra weights ('bh': zeros where None)},
        C-contiguous.
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


def check_forward(cell, x, states, weights, *, time_major, out=None,
                  scan=numpy_first_nonfinite):
    """Check the arguments of ``<cell>_forward``; ``cell`` is its ``Cell`` record, ``states``
    {'h0': ..., 'c0': ...} and ``weights`` {'Wx': ..., 'Wh': ..., 'b': ..., 'bh': ...} as the
    caller passed them (None where a state or an extra weight was not given), ``out`` a cache to
    refill or None. Returns a ``ForwardInputs``."""
    n_gates = cell.n_gates
    time_major = check_bool("time_major", time_major)
    layout = "(T, N, D)" if time_major else "(N, T, D)"
    x = as_float_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D array {layout}, got shape {x.shape}")
    dtype = x.dtype
    n_steps, n_batch = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    n_input = x.shape[2]
    if n_steps == 0:
        raise ValueError(f"x must have at least one time step (T >= 1), got shape {x.shape}")
    if n_input == 0:
        raise ValueError(f"x must have at least one input feature (D >= 1), got shape {x.shape}")

    spelled = cell.weight_shapes_spelled
    Wh = as_float_array("Wh", weights["Wh"])
    if Wh.ndim != 2 or Wh.shape[0] == 0 or Wh.shape[1] != n_gates * Wh.shape[0]:
        raise ValueError(f"Wh must have shape {spelled['Wh']} with H >= 1, got {Wh.shape}")
    if Wh.dtype != dtype:
        check_array("Wh", Wh, Wh.shape, dtype, spelled["Wh"], scan=None)     # raises
    n_hidden = Wh.shape[0]
    gh = n_gates * n_hidden
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
                                  n_batch, n_input, n_hidden, time_major))
    if out is not None:
        check_forward_out(cell, out, inputs)
    for name, value in states.items():
        if value is not None:
            value = check_array(name, value, (n_batch, n_hidden), dtype, "(N, H)", scan=None)
            given.append((name, value))
        inputs.states[name] = value
    check_all_finite(given, scan)
    return inputs


class BackwardInputs(NamedTuple):
    """The checked arguments of a cell's backward.

    dh_buffer : dh C-contiguous in the cache's layout (zeros where None); dh : its time-major
        view (T, N, H).
    final : {'dhT': (N, H) array or None, and 'dcT' for the LSTM}, as the caller gave them.
    xi : (T,) truncation multipliers in the cache's dtype (ones where None: full BPTT).
    grads : the caller's weight-gradient buffers to accumulate into, or None.
    out : the earlier result whose arrays receive this one's, or None.
    h_grad_norms : the caller's (T,) array to receive ||dL/dh_t||, or None.
    """
    dh_buffer: np.ndarray
    dh: np.ndarray
    final: dict
    xi: np.ndarray
    grads: object
    out: Optional[Grads]
    h_grad_norms: Optional[np.ndarray]
    overwrite_cache: bool


def check_backward(cell, dh, cache, final, *, xi=None, grads=None, h_grad_norms=None,
                   out=None, overwrite_cache=False, scan=numpy_first_nonfinite):
    """Check the arguments of ``<cell>_backward``; ``final`` is {'dhT': ..., 'dcT': ...} as the
    caller passed them. A cache that a backward with ``overwrite_cache=True`` consumed is
    refused (ValueError). Returns a ``BackwardInputs``."""
    check_cache(cell, cache)
    overwrite_cache = check_bool("overwrite_cache", overwrite_cache)
    dtype = cache.dtype
    n_steps, n_batch, n_hidden = cache.h.shape
    if cache.time_major:
        dh_shape, dh_expected = (n_steps, n_batch, n_hidden), "(T, N, H)"
    else:
        dh_shape, dh_expected = (n_batch, n_steps, n_hidden), "(N, T, H)"
    if out is not None:
        check_backward_out(cell, out, cache, weights=grads is None)
    given = []
    if dh is None:
        dh = np.zeros(dh_shape, dtype)
    else:
        dh = np.ascontiguousarray(check_array("dh", dh, dh_shape, dtype, dh_expected,
                                              like="the cache", scan=None))
        given.append(("dh", dh))
    checked_final = {}
    for name, value in final.items():
        if value is not None:
            value = check_array(name, value, (n_batch, n_hidden), dtype, "(N, H)",
                                like="the cache", scan=None)
            given.append((name, value))
        checked_final[name] = value
    xi = check_xi(xi, n_steps, dtype)
    check_all_finite(given, scan)
    if grads is not None:
        check_grads(cell, grads, cache)
    if h_grad_norms is not None:
        norms = h_grad_norms
        if (not isinstance(norms, np.ndarray) or norms.dtype != dtype
                or norms.shape != (n_steps,)):
            raise ValueError(f"h_grad_norms must be a {dtype} array of shape (T,) = ({n_steps},)")
        if not (norms.flags.c_contiguous and norms.flags.writeable):
            raise ValueError("h_grad_norms must be C-contiguous and writeable")
    return BackwardInputs._make((dh, swap_major(dh, cache.time_major), checked_final, xi, grads,
                                 out, h_grad_norms, overwrite_cache))


def check_cache(cell, cache):
    """``cache`` comes from ``cell``'s forward and was not consumed."""
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be the cache returned by {cell.name}_forward, "
                        f"got {type(cache).__name__}")
    if not isinstance(cache, cell.cache_type):
        raise ValueError(f"cache comes from {cache.cell}_forward, not {cell.name}_forward")
    if cache.consumed:
        raise ValueError(
            "this cache was consumed by a backward with overwrite_cache=True; run forward again "
            "(or pass overwrite_cache=False to keep a cache for more than one backward)")


def check_xi(xi, n_steps, dtype):
    """Truncation multipliers: (T,) real and finite, returned in ``dtype``; None means ones."""
    if xi is None:
        return _ones(n_steps, np.dtype(dtype))
    arr = np.asarray(xi)
    if arr.dtype.kind not in "fiu" or arr.dtype.itemsize > 8:
        raise TypeError(f"xi must be a real array of shape (T,), got dtype {arr.dtype}")
    if arr.shape != (n_steps,):
        raise ValueError(f"xi must have shape (T,) = ({n_steps},), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_all_finite([("xi", arr)])
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
    """The caller's weight-gradient buffers: right shape and dtype, C-contiguous, writeable."""
    n_input, n_hidden = cache.x.shape[2], cache.h.shape[2]
    for name, shape in cell.weight_shapes(n_input, n_hidden).items():
        buf = getattr(grads, "d" + name, None)
        if not isinstance(buf, np.ndarray):
            raise TypeError(f"grads.d{name} must be a NumPy array to accumulate into, "
                            f"got {type(buf).__name__}")
        if buf.dtype != cache.dtype or buf.shape != shape:
            raise ValueError(f"grads.d{name} must be a {cache.dtype} array of shape {shape}, "
                             f"got {buf.dtype} {buf.shape}")
        if not (buf.flags.c_contiguous and buf.flags.writeable):
            raise ValueError(f"grads.d{name} must be C-contiguous and writeable")
