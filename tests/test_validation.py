"""Bad input gets a clear TypeError/ValueError naming the argument, from kernels and reference
alike."""
import re

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, make_problem

import fastbptt
from fastbptt._kernels import variants

CELLS = HIDDEN_CELLS
impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
cell_param = pytest.mark.parametrize("cell", CELLS)


def forward(module, cell):
    return module.CELLS[cell].forward


def backward(module, cell):
    return module.CELLS[cell].backward


def bad_forward_cases(cell):
    """(description, index or keyword to replace, new value, exception, message fragment)."""
    args, kwargs, _ = make_problem(cell, 2, 3, 4, 5)
    x, h0, Wx, Wh, b = args
    return [
        ("x 2-D", 0, x[0], ValueError, "x must be a 3-D array"),
        ("x T=0", 0, x[:, :0], ValueError, "at least one time step"),
        ("x D=0", 0, x[:, :, :0], ValueError, "at least one input feature"),
        ("x int", 0, x.astype(np.int64), TypeError, "x must be a float32 or float64 array"),
        ("x complex", 0, x.astype(complex), TypeError, "got dtype complex128"),
        ("x object", 0, x.astype(object), TypeError, "got dtype object"),
        ("x float16", 0, x.astype(np.float16), TypeError, "got dtype float16"),
        ("x None", 0, None, TypeError, "x must be a float32 or float64 array, got None"),
        ("x NaN", 0, np.where(x > 1, np.nan, x), ValueError, "x contains NaN"),
        ("x inf", 0, np.where(x > 1, np.inf, x), ValueError, "x contains NaN or infinity"),
        ("h0 shape", 1, h0[:1], ValueError, "h0 must have shape (N, H) = (2, 5), got (1, 5)"),
        ("h0 dtype", 1, h0.astype(np.float32), TypeError, "h0 has dtype float32 but x has"),
        ("Wx shape", 2, Wx[:3], ValueError, "Wx must have shape (D, "),
        ("Wx dtype", 2, Wx.astype(np.float32), TypeError, "Wx has dtype float32"),
        ("Wh shape", 3, Wh[:, :-1], ValueError, "Wh must have shape (H, "),
        ("Wh 3-D", 3, Wh[None], ValueError, "Wh must have shape"),
        ("Wh NaN", 3, Wh * np.nan, ValueError, "Wh contains NaN"),
        ("b shape", 4, b[:-1], ValueError, "b must have shape ("),
        ("b int", 4, b.astype(int), TypeError, "b must be a float32 or float64 array"),
        ("Wx None", 2, None, TypeError, "Wx must be a float32 or float64 array, got None"),
        ("Wh None", 3, None, TypeError, "Wh must be a float32 or float64 array, got None"),
        ("b None", 4, None, TypeError, "b must be a float32 or float64 array, got None"),
        ("time_major str", "time_major", "yes", TypeError, "time_major must be True or False"),
    ]


@impl
@cell_param
@pytest.mark.parametrize("case", range(23))
def test_bad_forward_input(module, cell, case):
    args, kwargs, _ = make_problem(cell, 2, 3, 4, 5)
    desc, where, value, exc, message = bad_forward_cases(cell)[case]
    if isinstance(where, int):
        args[where] = value
    else:
        kwargs[where] = value
    with pytest.raises(exc) as info:
        forward(module, cell)(*args, **kwargs)
    assert message in str(info.value), (desc, str(info.value))


@impl
def test_bad_nonlinearity(module):
    args, kwargs, _ = make_problem("rnn", 2, 3, 4, 5)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh', 'sigmoid' or 'relu'"):
        module.rnn_forward(*args, nonlinearity="softplus", **kwargs)


@impl
@cell_param
@pytest.mark.parametrize("time_major", [False, True])
def test_bad_backward_input(module, cell, time_major):
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5, time_major=time_major)
    _, cache = forward(module, cell)(*args, **kwargs)
    bwd = backward(module, cell)
    expected = "(T, N, H) = (3, 2, 5)" if time_major else "(N, T, H) = (2, 3, 5)"
    with pytest.raises(ValueError, match=r"dh must have shape " + re.escape(expected)):
        bwd(dh[:1], cache)
    with pytest.raises(TypeError, match="dh has dtype float32 but the cache has dtype float64"):
        bwd(dh.astype(np.float32), cache)
    with pytest.raises(TypeError, match="dh must be a float32 or float64 array"):
        bwd(dh.astype(np.int32), cache)
    with pytest.raises(ValueError, match="dh contains NaN"):
        bwd(dh * np.nan, cache)
    with pytest.raises(TypeError, match=f"cache must be the cache returned by {cell}_forward"):
        bwd(dh, (1, 2, 3))
    with pytest.raises(ValueError, match=r"dhT must have shape \(N, H\)"):
        bwd(dh, cache, dhT=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"xi must have shape \(T,\) = \(3,\)"):
        bwd(dh, cache, xi=np.ones(4))
    with pytest.raises(TypeError, match="xi must be a real array"):
        bwd(dh, cache, xi=np.ones(3, complex))
    with pytest.raises(ValueError, match="xi contains NaN"):
        bwd(dh, cache, xi=np.array([1.0, np.nan, 1.0]))
    good = bwd(dh, cache)
    with pytest.raises(TypeError, match="grads.dWx must be a NumPy array"):
        bwd(dh, cache, grads=object())
    wrong = good._replace(dWh=good.dWh.astype(np.float32))
    with pytest.raises(ValueError, match="grads.dWh must be a float64 array of shape"):
        bwd(dh, cache, grads=wrong)
    frozen = good.dWx.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="grads.dWx must be C-contiguous and writeable"):
        bwd(dh, cache, grads=good._replace(dWx=frozen))


@impl
@pytest.mark.parametrize("cell,other", [(c, o) for c in CELLS for o in CELLS if o != c])
def test_cache_from_another_cell(module, cell, other):
    args, kwargs, dh = make_problem(other, 2, 3, 4, 5)
    _, cache = forward(module, other)(*args, **kwargs)
    with pytest.raises(ValueError, match=f"cache comes from {other}_forward, not {cell}_forward"):
        backward(module, cell)(dh, cache)


@impl
@cell_param
def test_outputs_are_read_only_views_of_the_cache(module, cell):
    """Changing h in place before backward would silently change the gradients: it raises."""
    args, kwargs, _ = make_problem(cell, 2, 3, 4, 5)
    h, cache = forward(module, cell)(*args, **kwargs)
    with pytest.raises(ValueError, match="read-only"):
        h[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        cache.hT[0, 0] = 1.0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("row", [0, 3], ids=["first-row", "last-row"])
@pytest.mark.parametrize("order", [1, -1], ids=["rows-down", "rows-reversed"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_nonfinite_state_given_as_a_strided_view(cell, module, row, order, dtype):
    """A state that is a view with strided rows (cache.hT of a batch-major cache is one) is
    scanned in place; a NaN or inf in any of its rows is refused all the same."""
    n_gates = fastbptt.CELLS[cell].n_gates
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 3)).astype(dtype)
    shapes = ((3, 2 * n_gates), (2, 2 * n_gates), (2 * n_gates,))
    Wx, Wh, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    big = rng.standard_normal((4, 7, 2)).astype(dtype)
    h0 = big[::order, 3, :]               # (4, 2), rows 7 * 2 elements apart
    assert not h0.flags.c_contiguous
    forward = module.CELLS[cell].forward
    forward(x, h0, Wx, Wh, b)             # finite: accepted
    for bad in (np.nan, np.inf):
        big[::order, 3, :][row, 1] = bad
        with pytest.raises(ValueError, match="h0 contains NaN or infinity"):
            forward(x, h0, Wx, Wh, b)
        big[::order, 3, :][row, 1] = 0.5


def _layouts(dtype):
    """(name, array) pairs of one dtype in the layouts the NaN scan must read in place."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 6, 5)).astype(dtype)
    return [
        ("0-d", np.asarray(base[1, 2, 3])),
        ("1-D", base[1, 2].copy()),
        ("1-D strided", base[:, 2, 1]),
        ("3-D C", base.copy()),
        ("3-D Fortran", np.asfortranarray(base)),
        ("3-D swapped (batch-major viewed time-major)", base.swapaxes(0, 1)),
        ("2-D strided rows", base[:, 3, :]),
        ("2-D reversed rows", base[::-1, 3, :]),
        ("3-D every other column", base[:, :, ::2]),
        ("3-D reversed columns", base[:, ::-1, ::-1]),
        ("empty", base[:, :0]),
    ]


CHECKS = variants("_checks")
checks_param = pytest.mark.parametrize("checks", CHECKS,
                                       ids=[m.__name__.split(".")[-1] for m in CHECKS])


@checks_param
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", range(11))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_scan_reads_every_element_of_every_layout(checks, dtype, case, bad):
    """first_nonfinite against np.isfinite, in every build: a NaN or inf planted at each
    element of an array in any layout is found (and which array holds it), and a finite array
    passes."""
    first_nonfinite = checks.first_nonfinite
    name, arr = _layouts(dtype)[case]
    arr = arr.copy(order="K") if name == "0-d" else arr
    clean = np.ones(3, dtype)
    assert first_nonfinite([clean, arr, clean]) == -1, name
    for index in np.ndindex(arr.shape):
        keep = arr[index]
        arr[index] = bad
        assert first_nonfinite([clean, arr, clean]) == 1, (name, index)
        assert first_nonfinite([arr, clean]) == 0, (name, index)
        arr[index] = keep
    assert first_nonfinite([clean, arr]) == -1, name


@checks_param
def test_nonfinite_scan_refuses_other_dtypes(checks):
    for arr in (np.zeros(3, np.int64), np.zeros(3, np.float16), np.zeros(3, ">f8")):
        with pytest.raises(TypeError, match="float32 or float64"):
            checks.first_nonfinite([arr])
