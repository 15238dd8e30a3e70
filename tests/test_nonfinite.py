"""A value that overflows stays non-finite, in every cell and every build, as in the reference:
a NaN never turns back into a number (a ReLU or a sigmoid of NaN, a derivative mask times NaN),
and the activations saturate exactly (tanh at +-1, sigmoid at 0 for absurd inputs)."""
import importlib
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbptt
import fastbptt.reference as ref
from fastbptt._kernels import variants

CELL_OPTIONS = [("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "sigmoid"}),
                ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {})]


def _results(impl, cell, args, kwargs, dh, xi):
    """Forward's per-step arrays and backward's results of ``impl``, by name."""
    record = impl.CELLS[cell]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # the reference's overflows
        with np.errstate(all="ignore"):
            h, cache = record.forward(*args, **kwargs)
            out = {"h": np.array(h)}
            out.update((name, np.array(getattr(cache, name))) for name in type(cache).outputs)
            grads = record.backward(dh, cache, xi=xi)
    out.update((name, getattr(grads, name)) for name in grads._fields)
    out.update((name, value) for name, value in vars(grads).items())
    return out


def _each_build(cell):
    """Run the body once per build of the cell's kernels, the public wrapper bound to it."""
    wrapper = importlib.import_module(f"fastbptt.{cell}")
    kept = getattr(wrapper, f"_{cell}")
    try:
        for build in variants(f"_{cell}"):
            setattr(wrapper, f"_{cell}", build)
            yield build.__name__
    finally:
        setattr(wrapper, f"_{cell}", kept)


def _dyadic(rng, shape, dtype, top):
    """Entries 0 or +-m * 2**k (m in 1..3, k in 0..top): products and the sums of one nonzero
    term with zeros are exact until they overflow, so both implementations overflow at the same
    places whatever order they add in."""
    mant = rng.integers(0, 4, size=shape) * rng.choice([-1, 1], size=shape)
    return np.ldexp(mant.astype(dtype), rng.integers(0, top + 1, size=shape))


def overflowing_problem(cell, options, n_batch, n_steps, n_hidden, dtype, seed):
    """One input feature (D = 1) and a hidden weight whose row u has its nonzeros in one gate
    block, on its diagonal: every product of forward (x_t Wx, h_{t-1} Wh) is a single term plus
    zeros, so where it overflows does not depend on the order of a sum; the weights' exponents
    reach the dtype's largest, so states and gradients overflow within a few steps."""
    rng = np.random.default_rng(seed)
    n_gates = fastbptt.CELLS[cell].n_gates
    top = np.finfo(dtype).maxexp - 2
    x = rng.integers(-2, 3, size=(n_batch, n_steps, 1)).astype(dtype)
    h0 = rng.integers(-1, 2, size=(n_batch, n_hidden)).astype(dtype)
    Wx = _dyadic(rng, (1, n_gates * n_hidden), dtype, top)
    Wh = np.zeros((n_hidden, n_gates * n_hidden), dtype)
    diag = _dyadic(rng, n_hidden, dtype, top)
    blocks = rng.integers(0, n_gates, size=n_hidden)
    Wh[np.arange(n_hidden), blocks * n_hidden + np.arange(n_hidden)] = diag
    b = np.zeros(n_gates * n_hidden, dtype)
    dh = rng.integers(-2, 3, size=(n_batch, n_steps, n_hidden)).astype(dtype)
    xi = rng.choice([0.0, 1.0, 2.0], size=n_steps) if rng.integers(2) else None
    return [x, h0, Wx, Wh, b], dict(options), dh, xi


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from(range(len(CELL_OPTIONS))), st.integers(1, 3), st.integers(1, 8),
       st.integers(1, 5), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**16))
def test_overflow_leaves_the_same_nonfinite_values_as_the_reference(which, n_batch, n_steps,
                                                                    n_hidden, dtype, seed):
    cell, options = CELL_OPTIONS[which]
    args, kwargs, dh, xi = overflowing_problem(cell, options, n_batch, n_steps, n_hidden, dtype,
                                               seed)
    expected = _results(ref, cell, args, kwargs, dh, xi)
    for build in _each_build(cell):
        got = _results(fastbptt, cell, args, kwargs, dh, xi)
        for name, value in expected.items():
            np.testing.assert_array_equal(np.isfinite(got[name]), np.isfinite(value),
                                          err_msg=f"{build} {options} {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_rnn_keeps_the_nan_of_inf_times_zero(dtype):
    """Wh = 3 I: the state overflows to inf, inf * 0 in h @ Wh makes NaN, and the NaN stays
    (it turned into 0, 1, 4, 13, ... before)."""
    n_hidden = 4
    x = np.ones((1, 800, 1), dtype)
    Wx = np.ones((1, n_hidden), dtype)
    Wh = (3 * np.eye(n_hidden)).astype(dtype)
    b = np.zeros(n_hidden, dtype)
    for build in _each_build("rnn"):
        h, _ = fastbptt.rnn_forward(x, None, Wx, Wh, b, nonlinearity="relu")
        first = int(np.argmin(np.isfinite(h[0]).all(axis=1)))
        assert first > 0 and not np.isfinite(h[0, first:]).any(), build
        assert np.isnan(h[0, first + 1:]).all(), build


@pytest.mark.parametrize("cell,options", CELL_OPTIONS,
                         ids=["rnn-tanh", "rnn-sigmoid", "rnn-relu", "lstm", "gru"])
def test_a_nan_preactivation_stays_nan(cell, options):
    """x_t Wx overflows to +inf and h0 Wh to -inf: every pre-activation is NaN, and so is every
    state after it (a sigmoid of NaN gave 3.3e-308 before), as in the reference."""
    dtype, n_hidden = np.float64, 2
    n_gates = fastbptt.CELLS[cell].n_gates
    big = np.finfo(dtype).max
    args = [np.full((1, 3, 1), 2.0), np.ones((1, n_hidden)), np.full((1, n_gates * n_hidden), big),
            np.full((n_hidden, n_gates * n_hidden), -big), np.zeros(n_gates * n_hidden)]
    with np.errstate(all="ignore"):
        h_ref, _ = ref.CELLS[cell].forward(*args, **options)
    assert np.isnan(h_ref).all()
    for build in _each_build(cell):
        h, _ = fastbptt.CELLS[cell].forward(*args, **options)
        assert np.isnan(h).all(), (build, h)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_saturate_exactly(dtype):
    """tanh is exactly +-1 wherever the correctly rounded value is (float32 from |a| = 9.01 on:
    1.0, not 0.99999994; float64 from 19.06), and below that stays under 1; sigmoid of an absurd
    negative input is 0, not a floor of 1.6e-38 / 3.3e-308 that a huge gradient would
    multiply."""
    f32 = dtype == np.float32
    saturated = np.array([9.5, 12, 19.5, 25, 1e30, np.finfo(dtype).max] if f32
                         else [19.5, 25, 40, 1e30, np.finfo(dtype).max], dtype)
    below = np.array([8.9, 5.0] if f32 else [18.9, 15.0], dtype)
    Wx = np.ones((1, 1), dtype)
    Wh = np.zeros((1, 1), dtype)
    b = np.zeros(1, dtype)
    for build in _each_build("rnn"):
        for sign in (1, -1):
            h, _ = fastbptt.rnn_forward((sign * saturated).reshape(1, -1, 1), None, Wx, Wh, b)
            assert (h[0, :, 0] == sign).all(), (build, h)
            h, _ = fastbptt.rnn_forward((sign * below).reshape(1, -1, 1), None, Wx, Wh, b)
            assert (np.abs(h) < 1).all(), (build, h)
            rounded = np.tanh(sign * below.astype(np.float64)).astype(dtype)
            np.testing.assert_array_max_ulp(h[0, :, 0], rounded, maxulp=1)
        absurd = -np.array([88, 1e3, 1e30, np.finfo(dtype).max], dtype) if f32 else \
            -np.array([709, 1e4, 1e30, np.finfo(dtype).max], dtype)
        h, _ = fastbptt.rnn_forward(absurd.reshape(1, -1, 1), None, Wx, Wh, b,
                                    nonlinearity="sigmoid")
        assert (h == 0).all(), (build, h)
        h, _ = fastbptt.rnn_forward(np.array([[[-80.0 if f32 else -700.0]]], dtype), None, Wx,
                                    Wh, b, nonlinearity="sigmoid")
        np.testing.assert_allclose(h[0, 0, 0], np.exp(-80.0 if f32 else -700.0), rtol=1e-5)


def test_lstm_gradient_of_absurd_inputs_is_zero_where_the_reference_is():
    """Inputs of 1e30 saturate every gate; the weight gradients equal the reference's (0 where
    a gate is 0), not 1e31 from a sigmoid floor times the input."""
    rng = np.random.default_rng(0)
    n_hidden = 3
    x = (rng.choice([-1, 1], size=(2, 5, 2)) * 1e30).astype(np.float32)
    Wx = rng.standard_normal((2, 4 * n_hidden)).astype(np.float32)
    Wh = (rng.standard_normal((n_hidden, 4 * n_hidden)) * 0.1).astype(np.float32)
    b = np.zeros(4 * n_hidden, np.float32)
    dh = rng.standard_normal((2, 5, n_hidden)).astype(np.float32)
    expected = ref.lstm_backward(dh, ref.lstm_forward(x, None, Wx, Wh, b)[1])
    for build in _each_build("lstm"):
        got = fastbptt.lstm_backward(dh, fastbptt.lstm_forward(x, None, Wx, Wh, b)[1])
        for name in ("dWx", "dWh", "db", "dx"):
            scale = max(1.0, float(np.abs(getattr(expected, name)).max()))
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name),
                                       atol=1e-4 * scale, rtol=0, err_msg=f"{build} {name}")
