"""Thread scaling of one call: fastbptt, PyTorch and the BLAS floor at 1, 2, ... threads,
forward + full backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/threads_interleaved.py \
        [--cells rnn,lstm,gru] [--cases M,L] [--dtypes float32,float64] [--threads 1,2] \
        [--torch-threads 1,2] [--rounds 10]

Each row times one problem (``fastbptt.benchmarking.CASES``) with every implementation at every
thread count in turns, round after round (``time_interleaved``), and prints the minimum per
call: fastbptt with ``fastbptt.num_threads(n)``, PyTorch with ``torch.set_num_threads(n)``, the
floor (the kernels' BLAS calls alone, split over n threads as the kernels split them). Columns:
fastbptt's speed-up from 1 to n threads, and PyTorch / fastbptt at n threads. ``--threads``
defaults to every count up to the cores this process may use, so the same command makes the
table of a bigger machine; ``--torch-threads`` (default: the same counts) limits PyTorch's. Needs
torch for the PyTorch columns (left out without it).
"""
import argparse

import numpy as np

import fastbptt
from fastbptt._threads import available_cores
from fastbptt.benchmarking import (
    CASES,
    floor_function,
    import_torch,
    make_case,
    step_function,
    time_interleaved,
    torch_function,
)


def at_threads(fn, n):
    """fn run with fastbptt's thread count n."""
    def run():
        with fastbptt.num_threads(n):
            fn()
    return run


def torch_at_threads(torch, fn, n):
    """fn run with PyTorch's intra-op thread count n."""
    def run():
        torch.set_num_threads(n)
        fn()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(fastbptt.CELLS))
    parser.add_argument("--cases", default="M,L")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", default=",".join(
        str(n) for n in range(1, available_cores() + 1)))
    parser.add_argument("--torch-threads", default=None)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",")]
    torch_counts = (counts if args.torch_threads is None
                    else [int(n) for n in args.torch_threads.split(",")])
    torch = import_torch()
    print("min over interleaved rounds, forward + full backward; ms per call")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            shape = CASES[case][0]
            for dtype in args.dtypes.split(","):
                problem = make_case(cell, shape, np.dtype(dtype))
                ours = step_function(fastbptt, cell, *problem)
                floor = floor_function(cell, shape, np.dtype(dtype))
                theirs = torch_function(cell, *problem) if torch is not None else None
                functions = {}
                for n in counts:
                    functions[f"fastbptt{n}"] = at_threads(ours, n)
                    functions[f"floor{n}"] = at_threads(floor, n)
                    if theirs is not None and n in torch_counts:
                        functions[f"torch{n}"] = torch_at_threads(torch, theirs, n)
                one = time_interleaved(functions, min_rounds=1)[f"fastbptt{counts[0]}"].min()
                reps = max(1, min(20, int(0.05 / one)))
                times = time_interleaved(functions, repeat=reps, min_rounds=args.rounds,
                                         max_rounds=args.rounds)
                best = {name: ts.min() for name, ts in times.items()}
                base = best[f"fastbptt{counts[0]}"]
                cols = []
                for n in counts:
                    k, f = best[f"fastbptt{n}"], best[f"floor{n}"]
                    col = f"{n}t: fastbptt {k * 1e3:7.2f} ({base / k:.2f}x)"
                    if f"torch{n}" in best:
                        t = best[f"torch{n}"]
                        col += f" torch {t * 1e3:7.2f} (torch/fastbptt {t / k:.2f})"
                    col += f" floor {f * 1e3:7.2f}"
                    cols.append(col)
                print(f"  {cell:4} {case} {dtype:7} | " + " | ".join(cols), flush=True)
    if torch is not None:
        torch.set_num_threads(1)


if __name__ == "__main__":
    main()
