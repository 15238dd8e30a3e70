"""Thread scaling: independent sequences on 1 and on 2 Python threads (SciPy's ParallelSosfilt).

The kernels release the GIL for the whole time-step loop and run BLAS on one thread each
(``fastbptt.set_blas_threads``), so two Python threads working on independent sequences should
each get a core. Each benchmark processes the same batch of K independent sequences (distinct
inputs, forward plus full backward each), on a pool of 1 or 2 threads made before timing, each
thread taking K / threads of them in one task; ``report.py`` divides the throughputs (sequences
per second). The BLAS floor is timed the same way as a control: it shows what the matrix products
alone allow on this machine, so a shortfall of the kernels can be told from a busy machine's.
Each benchmark also records the process's CPU time per wall time while it ran (``cpu_per_wall``):
near 2 on 2 threads when each thread had a core; near 1 when the machine's other load left only
one, and then no scaling can show. K is chosen so that each thread's share takes about 10 ms or
more (at least 2 sequences), once per (cell, case, dtype, implementation), so that 1 and 2
threads process the same K.
"""
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastbptt
from fastbptt.benchmarking import CASES, floor_function, make_case, step_function

_COUNTS = {}


def _calibrated_count(fn):
    """An even number of sequences, 4 to 64, each half taking about 10 ms or more."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    return int(min(64, 2 * max(2, math.ceil(0.01 / max(one, 1e-7)))))


@pytest.fixture
def pool(thread_case):
    threads = thread_case[-1]
    with ThreadPoolExecutor(max_workers=threads) as executor:
        list(executor.map(lambda _: time.sleep(0.01), range(threads)))  # start the workers
        yield executor


def test_threads(benchmark, measure, thread_case, pool):
    cell, case, dtype, impl, threads = thread_case
    shape = CASES[case][0]

    def sequence(seed):
        if impl == "floor":
            return floor_function(cell, shape, np.dtype(dtype))
        return step_function(fastbptt, cell, *make_case(cell, shape, np.dtype(dtype), seed=seed))

    key = (cell, case, dtype, impl)
    if key not in _COUNTS:
        _COUNTS[key] = _calibrated_count(sequence(0))
    count = _COUNTS[key]
    sequences = [sequence(seed) for seed in range(count)]
    shares = [sequences[i::threads] for i in range(threads)]

    def run_share(share):
        for fn in share:
            fn()

    used = {"cpu": 0.0, "wall": 0.0}

    def run():
        cpu, wall = time.process_time(), time.perf_counter()
        for future in [pool.submit(run_share, share) for share in shares]:
            future.result()
        used["cpu"] += time.process_time() - cpu
        used["wall"] += time.perf_counter() - wall

    measure(benchmark, run, f"threads {cell} {case} {dtype}", kind="threads", cell=cell,
            case=case, shape=list(shape), dtype=dtype, impl=impl, threads=threads,
            sequences=count)
    # CPU seconds of the process per second of wall time: near 2 when both threads had a core
    benchmark.extra_info["cpu_per_wall"] = used["cpu"] / used["wall"]
