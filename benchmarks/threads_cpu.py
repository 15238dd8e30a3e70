"""Wall time and CPU time per call at 1 and at n threads, interleaved: what a call on n threads
costs in CPU beside what it takes in wall time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/threads_cpu.py \
        [--cells rnn,lstm,gru] [--cases M,L] [--dtypes float32,float64] [--threads 2] \
        [--rounds 5]

On a machine whose other load leaves this process less than n cores, the wall time cannot show
the speed-up of n threads; the CPU time per call still shows whether the call's work was split
without being made larger (CPU at n threads / CPU at 1 near 1: the threads add no work, and on
n free cores the wall time would divide by nearly n). The CPU time includes the time threads
spend spinning at the end of a parallel region, waiting for one another. The process CPU/wall
ratio says how many cores the call had on average.
"""
import argparse
import time

import numpy as np

import fastbptt
from fastbptt.benchmarking import CASES, make_case, step_function


def timed(fn, n, reps):
    """(wall, cpu) seconds per call of fn over reps calls at fastbptt's thread count n."""
    with fastbptt.num_threads(n):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(fastbptt.CELLS))
    parser.add_argument("--cases", default="M,L")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.threads
    print(f"min over {args.rounds} interleaved rounds; ms per forward + full backward")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            for dtype in args.dtypes.split(","):
                fn = step_function(fastbptt, cell, *make_case(cell, CASES[case][0],
                                                             np.dtype(dtype)))
                fn()
                one = timed(fn, 1, 1)[0]
                reps = max(1, min(20, int(0.2 / one)))
                res = {1: [], n: []}
                for r in range(args.rounds):
                    for k in ((1, n) if r % 2 == 0 else (n, 1)):
                        res[k].append(timed(fn, k, reps))
                wall = {k: min(w for w, _ in v) for k, v in res.items()}
                cpu = {k: min(c for _, c in v) for k, v in res.items()}
                ratio = {k: np.median([c / w for w, c in v]) for k, v in res.items()}
                print(f"  {cell:4} {case} {dtype:7} | 1t: wall {wall[1] * 1e3:8.2f} cpu "
                      f"{cpu[1] * 1e3:8.2f} | {n}t: wall {wall[n] * 1e3:8.2f} cpu "
                      f"{cpu[n] * 1e3:8.2f} (cores had: {ratio[n]:.2f}) | wall 1t/{n}t "
                      f"{wall[1] / wall[n]:.2f}, cpu {n}t/1t {cpu[n] / cpu[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
