"""The few-sequences paths of the AVX2 build against the reference: N = 1..4 over fewer than 32
steps (each step's product on Wh as it is, src/_few.h) and over 32 or more (Wh packed once per
call, the few-rows kernel of src/_packed.h); hidden sizes that are not a multiple of the vector
width (H = 1, 3, 17, 100) and one that is (64), both dtypes, both layouts, truncation
multipliers with zeros, and the lean backwards (``overwrite_cache=True``)."""
import numpy as np
import pytest
from conftest import assert_close, make_problem

import fastbptt
import fastbptt.reference as ref
from fastbptt import truncation

CELLS = [("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}),
         ("gru", {})]
IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def compare(cell, opts, n_batch, n_hidden, dtype, time_major, n_steps=4, xi=None,
            overwrite_cache=False):
    args, kwargs, dh = make_problem(cell, n_batch, n_steps, 3, n_hidden, dtype=dtype,
                                    time_major=time_major, seed=n_batch * 100 + n_hidden)
    kwargs.update(opts)
    results = []
    for module, extra in ((fastbptt, {"overwrite_cache": overwrite_cache}), (ref, {})):
        record = module.CELLS[cell]
        h, cache = record.forward(*args, **kwargs)
        hT = cache.hT.copy()
        grads = record.backward(dh, cache, xi=xi, **(extra if overwrite_cache else {}))
        results.append((h.copy(), hT, grads))
    (h1, hT1, g1), (h2, hT2, g2) = results
    assert_close(h1, h2, dtype, "h")
    assert_close(hT1, hT2, dtype, "hT")
    for name, a, b in zip(g2._fields, g1, g2):
        assert_close(a, b, dtype, name)
    for extra in fastbptt.CELLS[cell].extra_grads:
        assert_close(getattr(g1, extra), getattr(g2, extra), dtype, extra)


@pytest.mark.parametrize("cell,opts", CELLS, ids=IDS)
@pytest.mark.parametrize("n_batch", [1, 2, 3, 4])
@pytest.mark.parametrize("n_hidden", [1, 3, 17, 64, 100])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_steps", [4, 33], ids=["in-place", "packed"])
def test_few_sequences_equal_reference(cell, opts, n_batch, n_hidden, time_major, dtype,
                                       n_steps):
    compare(cell, opts, n_batch, n_hidden, dtype, time_major, n_steps=n_steps)


@pytest.mark.parametrize("cell,opts", CELLS, ids=IDS)
@pytest.mark.parametrize("n_batch", [1, 3])
@pytest.mark.parametrize("n_hidden", [3, 17])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_steps", [9, 40], ids=["in-place", "packed"])
def test_few_sequences_truncated(cell, opts, n_batch, n_hidden, dtype, n_steps):
    """xi with zeros: the steps where the product is skipped and the carry restarts."""
    xi = truncation.chunked(n_steps, 3, dtype=dtype) * np.linspace(0.5, 1.5, n_steps).astype(
        dtype)
    compare(cell, opts, n_batch, n_hidden, dtype, False, n_steps=n_steps, xi=xi)


@pytest.mark.parametrize("cell,opts", CELLS, ids=IDS)
@pytest.mark.parametrize("n_batch", [1, 2, 4])
@pytest.mark.parametrize("n_hidden", [1, 17, 100])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_steps", [6, 34], ids=["in-place", "packed"])
def test_few_sequences_lean_backward(cell, opts, n_batch, n_hidden, time_major, dtype, n_steps):
    xi = truncation.chunked(n_steps, 4, dtype=dtype)
    compare(cell, opts, n_batch, n_hidden, dtype, time_major, n_steps=n_steps, xi=xi,
            overwrite_cache=True)
