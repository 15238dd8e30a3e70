"""One sequence (N = 1) on one thread and on several, each step's columns split between them
(src/_columns.pxd): forward + backward of the cell kernels, interleaved, ratio of minima.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/one_stream_parts.py \
        [--cells rnn,lstm,gru] [--hidden 64,128,256,512] [--dtypes float32,float64] \
        [--steps 1000] [--threads 2] [--lean] [--rounds 15]

Each row times one problem, N = 1, T = --steps, D = H, at 1 thread and at --threads threads
(``fastbptt.num_threads``) in turns, round after round (``time_interleaved``), each turn
repeating the call for about 50 ms; the forward refills one cache (out=) and the backward writes
into one set of gradients (out=), so no new memory is timed. ``--lean`` runs the lean backward
(overwrite_cache=True, the cache made again by each forward). Printed as a markdown table: ms
per forward + backward, min over the rounds, and the speed-up (1 thread / n threads). "parts"
is how many threads the call splits each step between: 1 where the step is too narrow
(``_columns.MIN_PART_COLUMNS``) or the call too small to take threads at all
(``fastbptt._threads.THREADED_WORK``). A cell whose kernels have no split runs on one thread
either way (speed-up about 1). Say the load (``uptime``) beside the figures: both threads spin
at each step's barrier, so on a machine whose cores are taken the split loses.
"""
import argparse

import numpy as np

import fastbptt
from fastbptt import _threads
from fastbptt._blas_hooks import column_parts_hook
from fastbptt.benchmarking import make_case, time_interleaved


def call_function(cell, args, dh, n_threads, lean):
    """forward (out= one cache) + backward (out= one Grads) of one problem, on n_threads."""
    record = fastbptt.CELLS[cell]
    _, cache = record.forward(*args)
    grads = record.backward(dh, cache)

    def run():
        with fastbptt.num_threads(n_threads):
            record.forward(*args, out=cache)
            record.backward(dh, cache, out=grads, overwrite_cache=lean)
    return run


def parts(cell, n_steps, n_hidden, dtype, n_threads):
    """The threads each step of such a call is split between."""
    width = fastbptt.CELLS[cell].n_gates * n_hidden
    if n_steps * width * n_hidden < _threads.THREADED_WORK:
        return 1
    return len(column_parts_hook(1, width, n_threads, np.dtype(dtype).itemsize)) - 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--hidden", default="64,128,256,512")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lean", action="store_true")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    n = args.threads
    backward = "lean backward" if args.lean else "backward"
    print(f"N = 1, T = {args.steps}, D = H; ms per forward + {backward}, min over "
          f"{args.rounds} interleaved rounds\n")
    print(f"| cell | H | dtype | parts | 1 thread | {n} threads | speed-up |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for cell in args.cells.split(","):
        for n_hidden in (int(h) for h in args.hidden.split(",")):
            for dtype in args.dtypes.split(","):
                shape = (1, args.steps, n_hidden, n_hidden)
                problem, _, dh = make_case(cell, shape, np.dtype(dtype))
                functions = {1: call_function(cell, problem, dh, 1, args.lean),
                             n: call_function(cell, problem, dh, n, args.lean)}
                one = time_interleaved(functions, min_rounds=1)[1].min()
                reps = max(1, min(50, int(0.05 / one)))
                times = time_interleaved(functions, repeat=reps, min_rounds=args.rounds,
                                         max_rounds=args.rounds)
                a, b = times[1].min(), times[n].min()
                print(f"| {cell} | {n_hidden} | {dtype} | "
                      f"{parts(cell, args.steps, n_hidden, dtype, n)} | {a * 1e3:.3f} | "
                      f"{b * 1e3:.3f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
