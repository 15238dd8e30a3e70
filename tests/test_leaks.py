"""Repeated calls hold no memory, as tracemalloc sees it: every cell's forward and backward
through the kernels, and the BLAS floor. (Besides real leaks, this catches a call that leaves
more tuples of one size on CPython's tuple free list than it takes off, which tracemalloc sees
growing, up to 2000 tuples, as if memory leaked.)"""
import tracemalloc

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, make_problem

import fastbptt
from fastbptt.benchmarking import floor_function

CELLS = HIDDEN_CELLS
CALLS = 100      # per window
WINDOWS = 4


def growth_per_call(fn):
    """Bytes still allocated per call of fn, in the window of CALLS calls that grew least.

    tracemalloc counts only what was allocated after it started, and NumPy and CPython keep
    small freed blocks in bounded caches: once tracing starts, those caches refill with blocks
    it does count, so memory seems to grow for a while, and again now and then (seen: ~16 KB in
    the first 300 calls, ~6 KB once later, nothing in between). A leak grows in every window:
    so the calls run traced from the start, a first window warms the caches up, and the least
    growth of the next WINDOWS windows is what counts."""
    tracemalloc.start()
    try:
        for _ in range(CALLS):
            fn()
        growth = []
        for _ in range(WINDOWS):
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(CALLS):
                fn()
            growth.append(tracemalloc.get_traced_memory()[0] - before)
        return min(growth) / CALLS
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["keep", "overwrite"])
def test_forward_and_backward_hold_nothing(cell, time_major, overwrite, dtype):
    args, kwargs, dh = make_problem(cell, 3, 4, 2, 5, dtype=dtype, time_major=time_major)
    forward = fastbptt.CELLS[cell].forward
    backward = fastbptt.CELLS[cell].backward

    def run():
        _, cache = forward(*args, **kwargs)
        backward(dh, cache, overwrite_cache=overwrite)

    assert growth_per_call(run) < 8


@pytest.mark.parametrize("cell", CELLS)
def test_floor_holds_nothing(cell, dtype):
    assert growth_per_call(floor_function(cell, (3, 4, 2, 5), np.dtype(dtype))) < 8
