"""overwrite_cache=True: backward may use the cache's gate values as its workspace, which gives
the same gradients, allocates no array of their size, and consumes the cache (a second backward
raises), in the kernels and the reference alike. (The RNN's kernels run their lean backward
instead, equal to rounding: tests/test_rnn_lean.py.)"""
import tracemalloc

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, assert_close, make_problem
from test_equivalence import CASE_IDS, CASES

import fastbptt
import fastbptt.reference as ref

impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
cases = pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
layout = pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
SHAPES = [(3, 7, 4, 5), (1, 1, 1, 1), (1, 9, 3, 4), (4, 1, 3, 2), (2, 4, 3, 1), (0, 3, 2, 2)]


def forward(module, cell, args, kwargs):
    return module.CELLS[cell].forward(*args, **kwargs)


def backward(module, cell, *args, **kwargs):
    return module.CELLS[cell].backward(*args, **kwargs)


def extras(cell, n_batch, n_hidden, n_steps, dtype):
    """Every backward keyword that changes the arithmetic: dhT, dcT, xi, h_grad_norms."""
    rng = np.random.default_rng(3)
    out = {"dhT": rng.standard_normal((n_batch, n_hidden)).astype(dtype),
           "xi": rng.choice([0.0, 0.5, 1.0], n_steps), "h_grad_norms": np.zeros(n_steps, dtype)}
    if cell == "lstm":
        out["dcT"] = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    return out


@impl
@cases
@layout
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_overwrite_gives_the_same_gradients(module, cell, opts, shape, time_major, dtype):
    args, kwargs, dh = make_problem(cell, *shape, dtype=dtype, time_major=time_major)
    kwargs.update(opts)
    kept = extras(cell, shape[0], shape[3], shape[1], dtype)
    used = {k: v.copy() for k, v in kept.items()}
    h_kept, cache_kept = forward(module, cell, args, kwargs)
    h_used, cache_used = forward(module, cell, args, kwargs)
    h_before, hT_before = h_used.copy(), cache_used.hT.copy()
    expected = backward(module, cell, dh, cache_kept, **kept)
    got = backward(module, cell, dh, cache_used, overwrite_cache=True, **used)
    if cell == "rnn" and module is fastbptt:
        # the RNN's lean backward sums the weight gradients in another order: equal to rounding
        for name in expected._fields:
            assert_close(getattr(got, name), getattr(expected, name), dtype, name)
        assert_close(used["h_grad_norms"], kept["h_grad_norms"], dtype, "h_grad_norms")
    else:
        for name in expected._fields + tuple(vars(expected)):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), name)
        np.testing.assert_array_equal(used["h_grad_norms"], kept["h_grad_norms"])
    # the states are not the workspace: the returned h, hT (and cT) are untouched
    np.testing.assert_array_equal(h_used, h_before)
    np.testing.assert_array_equal(cache_used.hT, hT_before)
    if cell == "lstm":
        np.testing.assert_array_equal(cache_used.cT, cache_kept.cT)
    assert cache_used.consumed and not cache_kept.consumed


@impl
@cases
@layout
def test_a_consumed_cache_is_refused(module, cell, opts, time_major):
    args, kwargs, dh = make_problem(cell, 2, 4, 3, 5, time_major=time_major)
    _, cache = forward(module, cell, args, {**kwargs, **opts})
    first = backward(module, cell, dh, cache)
    again = backward(module, cell, dh, cache)            # overwrite_cache=False: repeatable
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    backward(module, cell, dh, cache, overwrite_cache=True)
    for other in (fastbptt, ref):                         # refused by either backward
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="consumed by a backward with overwrite_cache"):
                backward(other, cell, dh, cache, overwrite_cache=overwrite)
    assert "consumed" in repr(cache)


@impl
@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@pytest.mark.parametrize("value", [1, 0, "yes", None, [True]])
def test_overwrite_cache_must_be_a_bool(module, cell, value, monkeypatch):
    """TypeError naming it, before any compiled code runs; the cache is not consumed."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5)
    _, cache = forward(module, cell, args, kwargs)

    def compiled(*a, **k):
        raise AssertionError("compiled code ran")

    monkeypatch.setattr(fastbptt._kernels.checks, "first_nonfinite", compiled)
    monkeypatch.setattr(fastbptt.rnn, "run_kernel", compiled)
    monkeypatch.setattr(fastbptt._calls, "run_kernel", compiled)    # the LSTM's and GRU's
    with pytest.raises(TypeError, match="overwrite_cache must be True or False"):
        backward(module, cell, dh, cache, overwrite_cache=value)
    assert not cache.consumed


@impl
@pytest.mark.parametrize("cell", HIDDEN_CELLS)
def test_a_failed_backward_does_not_consume(module, cell):
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5)
    _, cache = forward(module, cell, args, kwargs)
    with pytest.raises(ValueError, match="dh contains NaN"):
        backward(module, cell, dh * np.nan, cache, overwrite_cache=True)
    with pytest.raises(ValueError, match=r"xi must have shape"):
        backward(module, cell, dh, cache, xi=np.ones(4), overwrite_cache=True)
    assert not cache.consumed
    backward(module, cell, dh, cache, overwrite_cache=np.bool_(True))
    assert cache.consumed


def backward_peak(cell, args, kwargs, dh, overwrite):
    """Bytes allocated at the peak of one backward (forward done beforehand)."""
    _, cache = forward(fastbptt, cell, args, kwargs)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        backward(fastbptt, cell, dh, cache, overwrite_cache=overwrite)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@layout
def test_overwrite_allocates_no_gate_sized_workspace(cell, time_major, dtype):
    """With overwrite_cache=True the LSTM's and GRU's backward allocate no (T, N, 4H) array:
    their peak is lower by that size. The RNN's lean backward holds a (B, N, H) workspace
    instead of (T, N, H) (tests/test_rnn_lean.py)."""
    n_batch, n_steps, n_input, n_hidden = 4, 30, 3, 16
    args, kwargs, dh = make_problem(cell, n_batch, n_steps, n_input, n_hidden, dtype=dtype,
                                    time_major=time_major)
    backward_peak(cell, args, kwargs, dh, False)          # first-call allocations out of the way
    kept = backward_peak(cell, args, kwargs, dh, False)
    used = backward_peak(cell, args, kwargs, dh, True)
    gate_bytes = n_steps * n_batch * 4 * n_hidden * np.dtype(dtype).itemsize
    if cell == "rnn":
        block = fastbptt.rnn.lean_block_steps(n_steps, n_batch, time_major)
        saved = (n_steps - block) * n_batch * n_hidden * np.dtype(dtype).itemsize
        assert abs((kept - used) - saved) < 1024, (kept, used, saved)
    else:
        assert abs((kept - used) - gate_bytes) < 1024, (kept, used, gate_bytes)
