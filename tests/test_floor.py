"""The BLAS floor (``src/_floor.pyx``) makes the kernels' products on buffers in either layout:
its results, meaningless to the benchmarks, are checked here as the products they are."""
import numpy as np
import pytest
from conftest import HIDDEN_CELLS, RTOL

import fastbptt
from fastbptt import _floor
from fastbptt.benchmarking import floor_function


def steps(rng, n_steps, n_batch, width, time_major, dtype):
    """A random per-step array in the given layout and its (T, N, width) view."""
    shape = (n_steps, n_batch, width) if time_major else (n_batch, n_steps, width)
    buf = rng.standard_normal(shape).astype(dtype)
    return buf, (buf if time_major else buf.swapaxes(0, 1))


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (1, 5, 2, 3), (4, 1, 3, 2)],
                         ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_floor_products_in_either_layout(cell, time_major, shape, dtype):
    n_batch, n_steps, n_input, n_hidden = shape
    gh = fastbptt.CELLS[cell].n_gates * n_hidden
    gru = cell == "gru"     # the GRU kernel keeps its hidden-side products apart
    rng = np.random.default_rng(0)
    x, xt = steps(rng, n_steps, n_batch, n_input, time_major, dtype)
    h, ht = steps(rng, n_steps, n_batch, n_hidden, time_major, dtype)
    A, At = steps(rng, n_steps, n_batch, gh, time_major, dtype)
    dA, dAt = steps(rng, n_steps, n_batch, gh, time_major, dtype) if gru else (A, At)
    dxn, dxnt = (steps(rng, n_steps, n_batch, n_hidden, time_major, dtype) if gru
                 else (np.zeros((0, 0, 0), dtype), None))
    Wx = rng.standard_normal((n_input, gh)).astype(dtype)
    Wh = rng.standard_normal((n_hidden, gh)).astype(dtype)
    h0 = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    carry = np.zeros((n_batch, n_hidden), dtype)
    hh = np.zeros((n_batch, gh) if gru else (0, 0), dtype)
    dx, dxt = steps(rng, n_steps, n_batch, n_input, time_major, dtype)
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)
    h_prev = np.concatenate([h0[None], ht[:-1]])
    tol = dict(rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)

    _floor.floor(x, Wx, Wh, A, dA, dxn, h, h0, carry, hh, dx, dWx, dWh, False, gru, time_major)
    if gru:
        np.testing.assert_allclose(At, xt @ Wx, **tol)
        np.testing.assert_allclose(hh, h_prev[-1] @ Wh, **tol)
    else:
        np.testing.assert_allclose(At, xt @ Wx + h_prev @ Wh, **tol)

    _floor.floor(x, Wx, Wh, A, dA, dxn, h, h0, carry, hh, dx, dWx, dWh, True, gru, time_major)
    # what dx and dWx read: the GRU's [dxr dxz dxn] = [dA[..., :2H] | dxn]
    dAx = np.concatenate([dAt[..., :2 * n_hidden], dxnt], axis=-1) if gru else dAt
    np.testing.assert_allclose(dWh, np.einsum("tnh,tng->hg", h_prev, dAt), **tol)
    np.testing.assert_allclose(carry, (dAt @ Wh.T).sum(axis=0) if gru else dAt[0] @ Wh.T, **tol)
    np.testing.assert_allclose(dxt, dAx @ Wx.T, **tol)
    np.testing.assert_allclose(dWx, np.einsum("tnd,tng->dg", xt, dAx), **tol)


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_floor_function_runs(cell, time_major):
    for backward in (False, True):
        floor_function(cell, (2, 3, 4, 5), np.dtype(np.float32), backward=backward,
                       time_major=time_major)()
