"""Memory of forward plus backward, measured with tracemalloc, against the activations backward
needs.

For each cell, case and dtype (inputs made beforehand, as in ``bench_cells.py``) one forward and
one backward run under ``tracemalloc``, which sees every NumPy array (NumPy reports its data
allocations to it); memory the compiled kernels might take with ``malloc`` would not be seen,
but they take none: every buffer is a NumPy array, made by the Python wrapper or by the kernels'
``Buffers`` of a cache (``src/_held.pxd``) before the GIL is released. Recorded, in bytes:

- ``forward_kept``: what forward leaves allocated, the hidden states it returns plus the cache;
- ``peak``: the highest allocation during forward and backward together;
- ``outputs``: the gradients backward returns (``dx``, ``dh0``, ``dWx``, ``dWh``, ``db``, and
  ``dc0``/``dbh``), which the caller asked for and which are not counted against the kernels;
- ``needed``: the activations backward needs, the yardstick of the memory target: the per-step
  arrays forward keeps on the cache (the cell's ``cache_type.outputs``): the hidden states
  (T*N*H, returned anyway) plus, for the LSTM, the gate values (T*N*4H) and cell states (T*N*H),
  and for the GRU the gate values r, z, n (T*N*3H) and h_{t-1} Wh_n + bh_n (T*N*H), needed by dr.

``report.py`` shows (peak - outputs) / needed: 1.0 means nothing beyond the activations is held.
The kernels are measured twice: as called by default, and with ``overwrite_cache=True``, which
lets the LSTM's and GRU's backward use the cache's gate values as its workspace instead of
allocating one, and the RNN's, which has no gate buffer, run its lean backward with a workspace
of a few steps, (B, N, H) instead of (T, N, H) (``fastbptt.rnn.lean_block_steps``); recorded as
``kernel_overwrite_...``. The NumPy reference is measured the same way for comparison, on the
cases of
``--bench-reference-cases`` (S, C, M by default: under tracemalloc its per-step allocations make
case L slow). The timing pytest-benchmark records
for these tests (one run under tracemalloc) means nothing and is not reported.
"""
import tracemalloc

import numpy as np

import fastbptt
import fastbptt.reference
from fastbptt.benchmarking import CASES, make_case


def _grad_bytes(grads):
    arrays = list(grads) + [v for v in vars(grads).values() if isinstance(v, np.ndarray)]
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def activations(cell):
    """The per-step arrays backward needs, in units of T*N*H entries."""
    return sum(fastbptt.CELLS[cell].cache_type.outputs.values())


def memory_of(impl, cell, problem, **backward_kwargs):
    """Bytes held during one forward and backward of the cell ``impl.CELLS[cell]`` (see the
    module docstring)."""
    args, kwargs, dh = problem
    forward, backward = impl.CELLS[cell].forward, impl.CELLS[cell].backward
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        h, cache = forward(*args, **kwargs)
        forward_kept = tracemalloc.get_traced_memory()[0] - base
        grads = backward(dh, cache, **backward_kwargs)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return {"forward_kept": forward_kept, "peak": peak, "outputs": _grad_bytes(grads)}


def test_memory(benchmark, memory_case):
    cell, case, dtype, with_reference = memory_case
    shape = CASES[case][0]
    n_batch, n_steps, _, n_hidden = shape
    problem = make_case(cell, shape, np.dtype(dtype))
    result = {}

    def run():
        result["kernel"] = memory_of(fastbptt, cell, problem)
        result["kernel_overwrite"] = memory_of(fastbptt, cell, problem, overwrite_cache=True)
        if with_reference:
            result["reference"] = memory_of(fastbptt.reference, cell, problem)

    benchmark.group = "memory"
    benchmark.extra_info.update(
        kind="memory", cell=cell, case=case, shape=list(shape), dtype=dtype,
        needed=activations(cell) * n_steps * n_batch * n_hidden * np.dtype(dtype).itemsize)
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    for impl, values in result.items():
        benchmark.extra_info.update({f"{impl}_{k}": v for k, v in values.items()})
