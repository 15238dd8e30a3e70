"""The caller's layout, batch-major or time-major, goes to the kernels as it is: no copy of x or
dh, outputs C-contiguous in that layout, and one cache layout shared by kernels and reference."""
import tracemalloc

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, assert_close, make_problem

import fastbptt
import fastbptt.reference as ref

CELLS = HIDDEN_CELLS
impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
layout = pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
SHAPES = [(3, 5, 4, 2), (1, 6, 3, 2), (4, 1, 2, 3)]   # (N, T, D, H)


def run(module, cell, args, kwargs, dh, **backward_kwargs):
    record = module.CELLS[cell]
    h, cache = record.forward(*args, **kwargs)
    return h, cache, record.backward(dh, cache, **backward_kwargs)


@impl
@layout
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_outputs_are_c_contiguous_in_the_callers_layout(module, cell, shape, time_major):
    n_batch, n_steps, n_input, n_hidden = shape
    args, kwargs, dh = make_problem(cell, *shape, time_major=time_major)
    h, cache, grads = run(module, cell, args, kwargs, dh)
    assert h.shape == dh.shape and h.flags.c_contiguous
    assert grads.dx.shape == args[0].shape and grads.dx.flags.c_contiguous
    assert np.shares_memory(h.reshape(-1, n_hidden), h)     # no copy
    # the cache is indexed by step, viewing the same memory
    assert cache.h.shape == (n_steps, n_batch, n_hidden)
    assert np.shares_memory(cache.h, h)
    np.testing.assert_array_equal(cache.h, h if time_major else h.swapaxes(0, 1))
    assert cache.x.shape == (n_steps, n_batch, n_input)
    assert np.shares_memory(cache.x, args[0])                # x is not copied


@layout
@pytest.mark.parametrize("cell", CELLS)
def test_a_cache_goes_to_either_backward(cell, time_major, dtype):
    """A cache made by the kernels is accepted by the reference's backward and vice versa."""
    args, kwargs, dh = make_problem(cell, 3, 5, 4, 3, dtype=dtype, time_major=time_major)
    for made, used in [(fastbptt, ref), (ref, fastbptt)]:
        _, cache = made.CELLS[cell].forward(*args, **kwargs)
        expected = made.CELLS[cell].backward(dh, cache)
        got = used.CELLS[cell].backward(dh, cache)
        for name, a, b in zip(expected._fields, got, expected):
            assert_close(a, b, dtype, name)


def _traced(fn, *args, **kwargs):
    """(peak bytes allocated while fn(*args, **kwargs) runs, its result)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cell", CELLS)
def test_batch_major_input_is_not_copied(cell):
    """Forward and backward take as much memory batch-major as time-major: neither x (D much
    larger than H here) nor dh is copied into the other layout."""
    peaks = {}
    for time_major in (False, True):
        args, kwargs, dh = make_problem(cell, 6, 40, 64, 4, time_major=time_major)
        forward = fastbptt.CELLS[cell].forward
        backward = fastbptt.CELLS[cell].backward
        forward(*args, **kwargs)                      # first-call allocations out of the way
        fwd_peak, (_, cache) = _traced(forward, *args, **kwargs)
        bwd_peak, _ = _traced(backward, dh, cache)
        peaks[time_major] = fwd_peak, bwd_peak
    x_bytes = 6 * 40 * 64 * 8
    assert peaks[False][0] <= peaks[True][0] + 2048 < x_bytes
    assert peaks[False][1] <= peaks[True][1] + 2048
