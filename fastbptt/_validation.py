"""Input checks shared by the kernels' wrappers and the NumPy reference.

Every public function runs these before any kernel does: each error names the argument, what it
got and what was expected. Arrays come out as the kernels want them: one float dtype (float32
or float64, never silently upcast), native byte order, and C-contiguous in the caller's layout
(batch-major (N, T, ...) or time-major (T, N, ...)): the kernels take either layout as it is,
with the strides between rows, so C-contiguous input is never copied. Per-step arrays are
handed on both as that buffer (``x_buffer``, ``dh_buffer``) and as its time-major view (``x``,
``dh``: (T, N, ...), a view, no copy), which the reference and the cache index by step.
Strided, Fortran-ordered and byte-swapped inputs are accepted (copied where needed), and so are
read-only ones (the kernels only read them). Non-finite values (NaN, inf) in any input are
rejected with a ValueError; that scan is the one compiled piece here (``src/_checks.pyx``, its
AVX2 build where the CPU has it, as for the kernels), a read-only pass that writes nothing.
"""
import functools
from types import SimpleNamespace

import numpy as np

from ._kernels import load
from ._results import Cache, Grads

N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# the NaN scan, built like the kernels: its AVX2 build where the CPU has it (src/_checks.pyx)
first_nonfinite = load("_checks").first_nonfinite


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


def check_all_finite(named):
    """Raise a ValueError naming the first of the (name, array) pairs that holds NaN or inf.

    One compiled pass over all of them, in place whatever their strides (``src/_checks.pyx``):
    NumPy's ``isfinite(a.sum())`` costs ~5 us per array however small, which showed on short
    sequences."""
    bad = first_nonfinite([arr for _, arr in named])
    if bad >= 0:
        raise ValueError(f"{named[bad][0]} contains NaN or infinity")


def check_finite(name, arr):
    check_all_finite([(name, arr)])


def check_array(name, value, shape, dtype, expected, like="x", finite=True):
    """A float array of exactly ``shape`` and ``dtype`` (that of the argument ``like``), finite
    unless ``finite`` is False (the caller then checks it with ``check_all_finite``);
    ``expected`` spells the shape."""
    arr = as_float_array(name, value)
    if arr.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but {like} has dtype {dtype}; "
            "pass all arrays in one float dtype (fastbptt does not upcast)")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {expected} = {tuple(shape)}, got {arr.shape}")
    if finite:
        check_finite(name, arr)
    return arr


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def to_time_major(arr, time_major):
    """The (T, N, ...) view of an array in the caller's layout: no copy."""
    return arr if time_major else arr.swapaxes(0, 1)


def from_time_major(arr, time_major):
    """The caller's layout of a (T, N, ...) array: a view, no copy."""
    return arr if time_major else arr.swapaxes(0, 1)


def empty_steps(n_steps, n_batch, width, dtype, time_major):
    """A new per-step array, C-contiguous in the caller's layout: (N, T, width), or
    (T, N, width) if ``time_major``. Its rows are in the order of x's, so one matrix product
    covers all steps; ``to_time_major`` gives the view indexed by step."""
    if time_major:
        return np.empty((n_steps, n_batch, width), dtype)
    return np.empty((n_batch, n_steps, width), dtype)


def empty_by_step(n_steps, n_batch, width, dtype, time_major):
    """The (T, N, width) view of a new ``empty_steps`` array, indexed by step."""
    return to_time_major(empty_steps(n_steps, n_batch, width, dtype, time_major), time_major)


def check_forward(cell, x, h0, Wx, Wh, b, *, time_major, c0=None, bh=None, out=None):
    """Check the arguments of ``<cell>_forward``; return them C-contiguous.

    Returns a namespace with x_buffer (N, T, D) (or (T, N, D) if time_major), C-contiguous, and
    x, its time-major view (T, N, D); h0 (N, H), Wx (D, G*H), Wh (H, G*H), b (G*H,), c0 and bh
    where the cell has them (zeros when None), and dtype, n_steps, n_batch, n_input, n_hidden,
    time_major. h0 and c0 are arrays the cache will own: copies, or with ``out`` (a cache to
    refill, checked by ``check_forward_out``) that cache's, refilled.
    """
    n_gates = N_GATES[cell]
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

    g = "" if n_gates == 1 else f"{n_gates}*"
    Wh = as_float_array("Wh", Wh)
    if Wh.ndim != 2 or Wh.shape[0] == 0 or Wh.shape[1] != n_gates * Wh.shape[0]:
        raise ValueError(f"Wh must have shape (H, {g}H) with H >= 1, got {Wh.shape}")
    n_hidden = Wh.shape[0]
    Wh = check_array("Wh", Wh, Wh.shape, dtype, f"(H, {g}H)", finite=False)
    Wx = check_array("Wx", Wx, (n_input, n_gates * n_hidden), dtype, f"(D, {g}H)", finite=False)
    b = check_array("b", b, (n_gates * n_hidden,), dtype, f"({g}H,)", finite=False)
    x = np.ascontiguousarray(x)
    a = SimpleNamespace(
        x_buffer=x, x=to_time_major(x, time_major), Wx=np.ascontiguousarray(Wx),
        Wh=np.ascontiguousarray(Wh), b=np.ascontiguousarray(b), dtype=dtype, n_steps=n_steps,
        n_batch=n_batch, n_input=n_input, n_hidden=n_hidden, time_major=time_major)
    given = [("x", x), ("Wh", a.Wh), ("Wx", a.Wx), ("b", a.b)]

    if out is not None:
        check_forward_out(cell, out, a)
    states = {}

    def state(name, value):
        """A copy the cache owns: a stream loop may change the caller's array in place (or
        pass a view of the cache's own final state, with out=) before backward reads it."""
        if value is not None:
            value = check_array(name, value, (n_batch, n_hidden), dtype, "(N, H)",
                                finite=False)
            given.append((name, value))
        if out is not None:
            states[name] = value
            return getattr(out, name)      # refilled below, once every check has passed
        if value is None:
            return np.zeros((n_batch, n_hidden), dtype)
        return np.array(value, order="C")

    a.h0 = state("h0", h0)
    if cell == "lstm":
        a.c0 = state("c0", c0)
    elif c0 is not None:
        raise TypeError(f"c0 is only for lstm_forward, not {cell}_forward")
    if cell == "gru":
        if bh is None:
            a.bh = _zeros(3 * n_hidden, dtype)
        else:
            a.bh = np.ascontiguousarray(
                check_array("bh", bh, (3 * n_hidden,), dtype, "(3*H,)", finite=False))
            given.append(("bh", a.bh))
    elif bh is not None:
        raise TypeError(f"bh is only for gru_forward, not {cell}_forward")
    check_all_finite(given)
    for name, value in states.items():     # out's states, only now that nothing can fail
        if value is None:
            getattr(out, name).fill(0)
        else:
            np.copyto(getattr(out, name), value)
    return a


def check_backward(cell, dh, cache, *, dhT=None, dcT=None, xi=None, grads=None, h_grad_norms=None,
                   out=None, overwrite_cache=False):
    """Check the arguments of ``<cell>_backward``.

    Returns a namespace with dh_buffer, dh C-contiguous in the cache's layout (zeros when None),
    and dh, its time-major view (T, N, H); dhT and dcT (N, H) (zeros when None; with ``out``,
    ``out.dh0`` and ``out.dc0`` filled with them), xi (T,) in the cache's dtype (ones when
    None: full BPTT), grads: the caller's gradient buffers to accumulate into, or None, out:
    the earlier result whose arrays receive this one's (checked by ``check_backward_out``), or
    None, h_grad_norms: the caller's (T,) array to receive ||dL/dh_t||, or an empty array, and
    overwrite_cache.

    A cache that a backward with ``overwrite_cache=True`` consumed is refused (ValueError); with
    ``overwrite_cache=True`` this marks the cache consumed, once every check has passed, so that
    kernels and reference refuse a second backward alike.
    """
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be the cache returned by {cell}_forward, "
                        f"got {type(cache).__name__}")
    if cache.cell != cell:
        raise ValueError(f"cache comes from {cache.cell}_forward, not {cell}_forward")
    if cache.consumed:
        raise ValueError(
            "this cache was consumed by a backward with overwrite_cache=True; run forward again "
            "(or pass overwrite_cache=False to keep a cache for more than one backward)")
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
                                              like="the cache", finite=False))
        given.append(("dh", dh))

    if cell != "lstm" and dcT is not None:
        raise TypeError(f"dcT is only for lstm_backward, not {cell}_backward")
    states = {"dhT": dhT, "dcT": dcT} if cell == "lstm" else {"dhT": dhT}
    for name, value in states.items():
        if value is not None:
            states[name] = check_array(name, value, (n_batch, n_hidden), dtype, "(N, H)",
                                       like="the cache", finite=False)
            given.append((name, states[name]))
    checked = SimpleNamespace(dh_buffer=dh, dh=to_time_major(dh, cache.time_major),
                              xi=check_xi(xi, n_steps, dtype), grads=None, out=out,
                              overwrite_cache=overwrite_cache)
    check_all_finite(given)
    if grads is not None:
        checked.grads = check_grads(cell, grads, cache)
    checked.h_grad_norms = np.empty(0, dtype)
    if h_grad_norms is not None:
        norms = h_grad_norms
        if (not isinstance(norms, np.ndarray) or norms.dtype != dtype
                or norms.shape != (n_steps,)):
            raise ValueError(f"h_grad_norms must be a {dtype} array of shape (T,) = ({n_steps},)")
        if not (norms.flags.c_contiguous and norms.flags.writeable):
            raise ValueError("h_grad_norms must be C-contiguous and writeable")
        checked.h_grad_norms = norms
    # only now, when nothing can fail: the arrays the kernels write the state gradients into,
    # new or the earlier result's, holding dhT (dcT), zeros where None
    for name, value in states.items():
        if out is None:
            buffer = np.zeros((n_batch, n_hidden), dtype) if value is None else np.array(
                value, order="C")
        else:
            buffer = out.dc0 if name == "dcT" else out.dh0
            if value is None:
                buffer.fill(0)
            else:
                np.copyto(buffer, value)
        setattr(checked, name, buffer)
    if overwrite_cache:
        cache.consumed = True
    return checked


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
    check_finite("xi", arr)
    return arr


@functools.lru_cache(maxsize=32)
def _zeros(size, dtype):
    """A read-only (size,) array of zeros, made once per (size, dtype): the GRU's bh=None."""
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


def check_forward_out(cell, out, a):
    """``out=`` of ``<cell>_forward``: a cache of the same cell, dtype, layout and shapes as the
    call checked into ``a`` (``check_forward``'s namespace), whose arrays it refills."""
    if not isinstance(out, Cache):
        raise TypeError(f"out must be a cache returned by {cell}_forward (to reuse its "
                        f"arrays), got {type(out).__name__}")
    if out.cell != cell:
        raise ValueError(f"out is a cache of {out.cell}_forward, not {cell}_forward")
    n_steps, n_batch, n_hidden = out.h.shape
    have = (n_steps, n_batch, out.x.shape[2], n_hidden)
    want = (a.n_steps, a.n_batch, a.n_input, a.n_hidden)
    if have != want:
        raise ValueError(f"out has T, N, D, H = {have}, but this call has {want}: out= reuses "
                         "the arrays of a cache of the same shapes")
    if out.dtype != a.dtype:
        raise ValueError(f"out holds {out.dtype} arrays, but x is {a.dtype}")
    if out.time_major != a.time_major:
        def name(tm):
            return "time-major" if tm else "batch-major"
        raise ValueError(f"out was made {name(out.time_major)} (time_major={out.time_major}), "
                         f"this call is {name(a.time_major)}")
    return out


def check_backward_out(cell, out, cache, weights):
    """``out=`` of ``<cell>_backward``: a result of an earlier backward whose arrays dx, dh0
    (dc0) and, where ``weights``, dWx, dWh, db (dbh) match this call's and are writeable."""
    if not isinstance(out, Grads):
        raise TypeError(f"out must be the result of an earlier {cell}_backward (to reuse its "
                        f"arrays), got {type(out).__name__}")
    n_steps, n_batch, n_hidden = cache.h.shape
    gh = N_GATES[cell] * n_hidden
    n_input = cache.x.shape[2]
    dx_shape = ((n_steps, n_batch, n_input) if cache.time_major
                else (n_batch, n_steps, n_input))
    shapes = {"dx": dx_shape, "dh0": (n_batch, n_hidden)}
    if cell == "lstm":
        shapes["dc0"] = (n_batch, n_hidden)
    if weights:
        shapes.update(dWx=(n_input, gh), dWh=(n_hidden, gh), db=(gh,))
        if cell == "gru":
            shapes["dbh"] = (gh,)
    for name, shape in shapes.items():
        buf = getattr(out, name, None)
        ok = (isinstance(buf, np.ndarray) and buf.dtype == cache.dtype and buf.shape == shape
              and buf.flags.writeable)
        ok = ok and buf.flags.c_contiguous   # dx too: the kernels write it in x's layout
        if not ok:
            got = (f"{buf.dtype} {buf.shape}" if isinstance(buf, np.ndarray)
                   else type(buf).__name__)
            raise ValueError(f"out.{name} must be a writeable {cache.dtype} array of shape "
                             f"{shape} laid out as backward returns it, got {got}")
    return out


def check_grads(cell, grads, cache):
    """The caller's weight-gradient buffers: right shape and dtype, C-contiguous, writeable."""
    n_hidden = cache.Wh.shape[0]
    gh = N_GATES[cell] * n_hidden
    shapes = {"dWx": cache.Wx.shape, "dWh": (n_hidden, gh), "db": (gh,)}
    if cell == "gru":
        shapes["dbh"] = (gh,)
    for name, shape in shapes.items():
        buf = getattr(grads, name, None)
        if not isinstance(buf, np.ndarray):
            raise TypeError(f"grads.{name} must be a NumPy array to accumulate into, "
                            f"got {type(buf).__name__}")
        if buf.dtype != cache.dtype or buf.shape != shape:
            raise ValueError(f"grads.{name} must be a {cache.dtype} array of shape {shape}, "
                             f"got {buf.dtype} {buf.shape}")
        if not (buf.flags.c_contiguous and buf.flags.writeable):
            raise ValueError(f"grads.{name} must be C-contiguous and writeable")
    return grads


def check_nonlinearity(nonlinearity):
    if nonlinearity not in ("tanh", "sigmoid", "relu"):
        raise ValueError(
            f"nonlinearity must be 'tanh', 'sigmoid' or 'relu', got {nonlinearity!r}")
    return nonlinearity
