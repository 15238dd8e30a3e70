"""The time-step loop of every cell: the kernels against the reference, the BLAS floor and PyTorch.

One benchmark group per (cell, case, dtype, pass), e.g. ``lstm S float32 fwd+bwd``; inside it
the kernels (``fastbptt``), the floor (``fastbptt.benchmarking.floor_function``: exactly the
kernels' BLAS calls, no elementwise work), PyTorch (``nn.RNN``/``LSTM``/``GRU`` with the same
weights,
one thread; ``torch.no_grad()`` for the forward pass, autograd with the same upstream gradient
for forward plus backward) and, on the small cases, the NumPy reference. The implementations of
a group run one after the other, so ``python benchmarks/report.py`` can divide their medians.

Everything is built before timing (``fastbptt.benchmarking``); a timed call is one forward of
the cell (and one backward on its cache) on the same inputs as ``fastbptt bench`` uses.
"""
import numpy as np

import fastbptt
import fastbptt.reference
from fastbptt.benchmarking import CASES, floor_function, make_case, step_function, torch_function


def test_time(benchmark, measure, time_case):
    cell, case, dtype, pass_, impl = time_case
    shape = CASES[case][0]
    backward = pass_ == "fwd+bwd"
    problem = make_case(cell, shape, np.dtype(dtype))
    if impl == "kernel":
        fn = step_function(fastbptt, cell, *problem, backward=backward)
    elif impl == "reference":
        fn = step_function(fastbptt.reference, cell, *problem, backward=backward)
    elif impl == "floor":
        fn = floor_function(cell, shape, np.dtype(dtype), backward=backward)
    else:
        fn = torch_function(cell, *problem, backward=backward)
    measure(benchmark, fn, f"{cell} {case} {dtype} {pass_}", kind="time", cell=cell,
            case=case, shape=list(shape), dtype=dtype, pass_=pass_, impl=impl)
