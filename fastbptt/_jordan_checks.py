"""Input checks of Jordan's network, shared by its kernels' wrapper and the reference.

The same rules as the other cells' (``_validation``), whose helpers these use: each error names
the argument, what it got and what was expected; one float dtype, never upcast; arrays come out
C-contiguous in the caller's layout, per-step ones also as their time-major view; non-finite
values and overlapping writes are refused. What differs is the shapes: the state carried from
step to step is the output y (N, O), and the weights are ``Wx`` (D, H), ``Wy`` (O, H), ``b``
(H,), ``Wo`` (H, O), ``bo`` (O,). H and O are read from ``Wy``.
"""
from collections.abc import Mapping
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ._caches import Cache
from ._cells import JORDAN
from ._grads import JordanGrads
from ._layout import swap_major
from ._validation import (
    INT_MAX,
    as_float_array,
    check_all_finite,
    check_array,
    check_backward_reads,
    check_bool,
    check_cache,
    check_no_overlap,
    check_norms,
    check_upstream,
    check_x,
    check_xi,
    numpy_first_nonfinite,
    numpy_first_overlap,
)


class JordanInputs(NamedTuple):
    """The checked arguments of ``jordan_forward``.

    x_buffer : x C-contiguous in the caller's layout; x : its time-major view (T, N, D).
    y0 : (N, O) array, or None (zeros).
    weights : {'Wx', 'Wy', 'b', 'Wo', 'bo'}, C-contiguous.
    writes : (name, array) pairs of the caller's arrays the call writes: those of ``out=``.
    """
    x_buffer: np.ndarray
    x: np.ndarray
    y0: Optional[np.ndarray]
    weights: dict
    dtype: np.dtype
    n_steps: int
    n_batch: int
    n_input: int
    n_hidden: int
    n_output: int
    time_major: bool
    writes: Sequence


def check_counts(n_steps, n_batch, widths, time_major):
    """T*N (the rows of the products over all steps) and, batch-major with N > 1, T times each
    width (the distance between two rows of a step) fit in a C int: else a ValueError."""
    if n_steps * n_batch > INT_MAX:
        raise ValueError(f"x: T * N = {n_steps * n_batch} rows is more than the kernels can "
                         f"count (at most {INT_MAX} = 2**31 - 1); split the sequence or the "
                         "batch")
    if not time_major and n_batch > 1 and n_steps * max(widths) > INT_MAX:
        raise ValueError(f"x: T * {max(widths)} = {n_steps * max(widths)} elements between two "
                         f"rows of a step is more than BLAS can count (at most {INT_MAX}); "
                         "pass time_major=True")


def check_jordan_forward(x, y0, weights, *, time_major, out=None, scan=numpy_first_nonfinite,
                         overlap=numpy_first_overlap):
    """Check the arguments of ``jordan_forward``; ``weights`` is {'Wx', 'Wy', 'b', 'Wo', 'bo'}
    as the caller passed them, ``out`` a cache to refill or None. Returns ``JordanInputs``."""
    x, time_major, n_steps, n_batch, n_input = check_x(x, time_major)
    dtype = x.dtype
    Wy = as_float_array("Wy", weights["Wy"])
    if Wy.ndim != 2 or 0 in Wy.shape:
        raise ValueError(f"Wy must have shape (O, H) with O >= 1 and H >= 1, got {Wy.shape}")
    n_output, n_hidden = Wy.shape
    check_counts(n_steps, n_batch, (n_input, n_hidden, n_output), time_major)
    shapes = JORDAN.weight_shapes(n_input, n_hidden, n_output)
    spelled = JORDAN.weight_shapes_spelled
    checked, given = {}, [("x", np.ascontiguousarray(x))]
    for name in JORDAN.weights:
        checked[name] = arr = np.ascontiguousarray(
            check_array(name, weights[name], shapes[name], dtype, spelled[name], scan=None))
        given.append((name, arr))
    if y0 is not None:
        y0 = check_array("y0", y0, (n_batch, n_output), dtype, "(N, O)", scan=None)
        given.append(("y0", y0))
    check_all_finite(given, scan)
    x = given[0][1]
    inputs = JordanInputs(x, swap_major(x, time_major), y0, checked, dtype, n_steps, n_batch,
                          n_input, n_hidden, n_output, time_major, ())
    if out is not None:
        inputs = inputs._replace(writes=_check_forward_out(out, inputs, given, overlap))
    return inputs


def _check_forward_out(out, inputs, given, overlap):
    """``out=``: a Jordan cache of this call's shapes, dtype and layout. Returns the arrays the
    call writes, checked against what it reads (y0 is copied into out.y0 first, so it may be a
    view of out's own outputs, as a stream carries ``out.yT``)."""
    if not isinstance(out, Cache):
        raise TypeError("out must be a cache returned by jordan_forward (to reuse its arrays), "
                        f"got {type(out).__name__}")
    if not isinstance(out, JORDAN.cache_type):
        raise ValueError(f"out is a cache of {out.cell}_forward, not jordan_forward")
    have = (out.h.shape[0], out.h.shape[1], out.x.shape[2], out.h.shape[2], out.y.shape[2])
    want = (inputs.n_steps, inputs.n_batch, inputs.n_input, inputs.n_hidden, inputs.n_output)
    if have != want:
        raise ValueError(f"out has T, N, D, H, O = {have}, but this call has {want}: out= "
                         "reuses the arrays of a cache of the same shapes")
    if out.dtype != inputs.dtype:
        raise ValueError(f"out holds {out.dtype} arrays, but x is {inputs.dtype}")
    if out.time_major != inputs.time_major:
        raise ValueError(f"out was made with time_major={out.time_major}, this call has "
                         f"time_major={inputs.time_major}")
    writes = [("out.y0", out.y0), ("out.h", out.h), ("out.y", out.y)]
    check_no_overlap(writes, [(name, arr) for name, arr in given if name != "y0"], overlap)
    return tuple(writes)


class JordanBackwardInputs(NamedTuple):
    """The checked arguments of ``jordan_backward``.

    dy_buffer : dy C-contiguous in the cache's layout (zeros where None); dy : its time-major
        view (T, N, O).
    dyT : (N, O) array or None.
    xi : (T,) truncation multipliers in the cache's dtype (ones where None).
    grads : {'dWx', 'dWy', 'db', 'dWo', 'dbo'}: the caller's arrays to add into, or None.
    out : the earlier ``JordanGrads`` whose arrays receive this one's, or None.
    h_grad_norms : the caller's (T,) array to receive ||dL/dy_t||, or None.
    writes : (name, array) pairs of the caller's arrays the call writes.
    """
    dy_buffer: np.ndarray
    dy: np.ndarray
    dyT: Optional[np.ndarray]
    xi: np.ndarray
    grads: Optional[dict]
    out: Optional[JordanGrads]
    h_grad_norms: Optional[np.ndarray]
    overwrite_cache: bool
    writes: Sequence


def cache_sizes(cache):
    """(T, N, D, H, O) of a Jordan cache."""
    n_steps, n_batch, n_hidden = cache.h.shape
    return n_steps, n_batch, cache.x.shape[2], n_hidden, cache.y.shape[2]


def check_jordan_backward(dy, cache, *, dyT=None, xi=None, grads=None, h_grad_norms=None,
                          overwrite_cache=False, out=None, scan=numpy_first_nonfinite,
                          overlap=numpy_first_overlap):
    """Check the arguments of ``jordan_backward``. Returns ``JordanBackwardInputs``."""
    check_cache(JORDAN, cache)
    overwrite_cache = check_bool("overwrite_cache", overwrite_cache)
    dtype = cache.dtype
    n_steps, n_batch, n_input, n_hidden, n_output = cache_sizes(cache)
    if cache.time_major:
        dy_shape, dy_expected = (n_steps, n_batch, n_output), "(T, N, O)"
    else:
        dy_shape, dy_expected = (n_batch, n_steps, n_output), "(N, T, O)"
    dy, final, given = check_upstream(dy, {"dyT": dyT}, dy_shape, dy_expected, dtype, "dy",
                                      "(N, O)")
    dyT = final["dyT"]
    xi_given = xi
    xi = check_xi(xi, n_steps, dtype)
    check_all_finite(given, scan)
    shapes = {"d" + name: shape for name, shape in
              JORDAN.weight_shapes(n_input, n_hidden, n_output).items()}
    writes = []
    if grads is not None:
        grads = _check_grads(grads, shapes, dtype)
        writes += [("grads." + name, arr) for name, arr in grads.items()]
    if h_grad_norms is not None:
        writes.append(("h_grad_norms", check_norms(h_grad_norms, n_steps, dtype)))
    if out is not None:
        if not isinstance(out, JordanGrads):
            raise TypeError("out must be the result of an earlier jordan_backward (to reuse its "
                            f"arrays), got {type(out).__name__}")
        dx_shape = dy_shape[:2] + (n_input,)
        wanted = {"dx": dx_shape, "dy0": (n_batch, n_output)}
        if grads is None:
            wanted.update(shapes)
        for name, shape in wanted.items():
            _check_buffer("out." + name, getattr(out, name), shape, dtype)
        writes += [("out." + name, getattr(out, name)) for name in wanted]
        if dyT is not None:     # copied into out.dy0 first: only the other writes are a hazard
            check_no_overlap([w for w in writes if w[0] != "out.dy0"], [("dyT", dyT)], overlap)
    if writes:
        check_backward_reads(writes, given, "dy", None if xi_given is None else xi, cache,
                             overlap)
    return JordanBackwardInputs(dy, swap_major(dy, cache.time_major), dyT, xi, grads, out,
                                h_grad_norms, overwrite_cache, tuple(writes))


def _check_buffer(name, buf, shape, dtype):
    """An array the call writes: ``shape``, ``dtype``, C-contiguous and writeable."""
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array to write into, got {type(buf).__name__}")
    if buf.dtype != dtype or buf.shape != shape:
        raise ValueError(f"{name} must be a {dtype} array of shape {shape}, "
                         f"got {buf.dtype} {buf.shape}")
    if not (buf.flags.c_contiguous and buf.flags.writeable):
        raise ValueError(f"{name} must be C-contiguous and writeable")


def _check_grads(grads, shapes, dtype):
    """The caller's weight-gradient buffers, as attributes (a ``JordanGrads``) or the keys of a
    mapping. Returns them as a dict {'dWx': ..., 'dWy': ..., 'db': ..., 'dWo': ..., 'dbo': ...}."""
    is_mapping = isinstance(grads, Mapping)
    checked = {}
    for name, shape in shapes.items():
        if is_mapping:
            if name not in grads:
                raise TypeError(f"grads is a {type(grads).__name__} without the key {name!r}: "
                                f"a mapping needs the keys {', '.join(map(repr, shapes))}")
            buf = grads[name]
        else:
            buf = getattr(grads, name, None)
        _check_buffer("grads." + name, buf, shape, dtype)
        checked[name] = buf
    return checked
