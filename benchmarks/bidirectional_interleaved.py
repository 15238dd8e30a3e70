"""A bidirectional layer on every thread against one direction on one thread, forward + full
backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bidirectional_interleaved.py \
        [--cells rnn,lstm,gru] [--cases M,L] [--dtypes float32,float64] [--rounds 5]

Each case is timed three ways, taking turns round after round
(``fastbptt.benchmarking.time_interleaved``), the ratios dividing the minima:

    one       one direction (forward), one thread
    both/1    both directions, one after the other (as ``Model(bidirectional=True)`` runs a
              layer), one thread
    both/n    the same on every thread this process may use (each call's sequences in shards)
"""
import argparse

import numpy as np

import fastbptt
from fastbptt.benchmarking import CASES, make_case, time_interleaved


def layer_function(cell, args, dh, directions, n_threads):
    record = fastbptt.CELLS[cell]

    def run():
        with fastbptt.num_threads(n_threads):
            for reverse in directions:
                _, cache = record.forward(*args, reverse=reverse)
                record.backward(dh, cache)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--cases", default="M,L")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cores = fastbptt.get_num_threads()
    print(f"min over {args.rounds} interleaved rounds, forward + full backward, ms; "
          f"n = {cores} threads")
    print("| cell | case | dtype | one (1 thread) | both, 1 thread | both, n threads "
          "| both n / one |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            for dtype in args.dtypes.split(","):
                call_args, _, dh = make_case(cell, CASES[case][0], np.dtype(dtype))
                functions = {
                    "one": layer_function(cell, call_args, dh, (False,), 1),
                    "both/1": layer_function(cell, call_args, dh, (False, True), 1),
                    "both/n": layer_function(cell, call_args, dh, (False, True), cores),
                }
                times = time_interleaved(functions, min_rounds=args.rounds)
                best = {name: min(t) * 1e3 for name, t in times.items()}
                print(f"| {cell} | {case} | {dtype} | {best['one']:.2f} | {best['both/1']:.2f} "
                      f"| {best['both/n']:.2f} | {best['both/n'] / best['one']:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
