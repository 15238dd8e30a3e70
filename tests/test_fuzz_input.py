"""Malformed input of every kind only ever raises TypeError or ValueError, from the kernels and
the reference alike: never another exception, never a crash in compiled code."""
import numpy as np
import pytest
from conftest import HIDDEN_CELLS, make_problem
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbptt
import fastbptt.reference as ref

CELLS = HIDDEN_CELLS
DTYPES = [np.float64, np.float32, np.float16, np.int32, np.complex128, np.bool_, object]


def mangle(draw, arr):
    """The array, or one with a wrong shape, rank, dtype, layout or a non-finite value."""
    kind = draw(st.sampled_from(["same", "shape", "rank", "dtype", "nan", "inf", "empty",
                                 "transposed", "scalar", "none", "list"]))
    if kind == "same":
        return arr
    if kind == "shape":
        axis = draw(st.integers(0, arr.ndim - 1))
        new = list(arr.shape)
        new[axis] = draw(st.integers(0, 7))
        return np.ones(new, arr.dtype)
    if kind == "rank":
        return arr[None] if draw(st.booleans()) else arr.reshape(-1)
    if kind == "dtype":
        return arr.astype(draw(st.sampled_from(DTYPES)))
    if kind in ("nan", "inf"):
        out = arr.copy()
        out.flat[draw(st.integers(0, max(out.size - 1, 0)))] = np.nan if kind == "nan" else -np.inf
        return out
    if kind == "empty":
        return np.empty((0,) * arr.ndim, arr.dtype)
    if kind == "transposed":
        return arr.T
    if kind == "scalar":
        return 1.0
    if kind == "none":
        return None
    return arr.tolist()


@st.composite
def calls(draw):
    cell = draw(st.sampled_from(CELLS))
    module = draw(st.sampled_from([fastbptt, ref]))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3)),
             draw(st.integers(1, 3)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    args, kwargs, dh = make_problem(cell, *shape, dtype=dtype)
    which = draw(st.integers(0, 5))
    if which < 5 and which != 1:
        args[which] = mangle(draw, args[which])
    elif which == 1:
        args[1] = None if draw(st.booleans()) else mangle(draw, args[1])
    else:
        dh = mangle(draw, dh)
    return cell, module, args, kwargs, dh


@settings(max_examples=300, deadline=None)
@given(calls())
def test_bad_input_raises_only_type_or_value_errors(call):
    cell, module, args, kwargs, dh = call
    try:
        h, cache = module.CELLS[cell].forward(*args, **kwargs)
        grads = module.CELLS[cell].backward(dh, cache)
    except (TypeError, ValueError) as err:
        assert str(err)  # a message, naming what was wrong
        return
    # accepted: then it was valid input (a list of floats, an equal shape): results are finite
    assert np.isfinite(h).all()
    for g in grads:
        assert np.isfinite(g).all()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("module", [fastbptt, ref], ids=["kernels", "reference"])
def test_valid_list_input_is_accepted(cell, module):
    args, kwargs, dh = make_problem(cell, 2, 3, 2, 2)
    forward = module.CELLS[cell].forward
    h_arr, _ = forward(*args, **kwargs)
    h_list, _ = forward(*[a.tolist() for a in args], **kwargs)
    np.testing.assert_array_equal(h_arr, h_list)
