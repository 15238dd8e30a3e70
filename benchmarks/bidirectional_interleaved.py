"""A bidirectional layer on every thread against one direction on one thread, forward + full
backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bidirectional_interleaved.py \
        [--cells rnn,lstm,gru] [--cases M,L] [--dtypes float32,float64] [--rounds 5]

Each case is timed four ways, taking turns round after round
(``fastbptt.benchmarking.time_interleaved``), the ratios dividing the minima:

    one       one direction (forward), one thread
    both/1    both directions, one after the other, one thread
    both/n    the same on every thread this process may use (each call's sequences in shards)
    at once   both directions at once on every thread, each on its share (as
              ``Model(bidirectional=True)`` runs a layer, ``fastbptt._directions``): the two
              forwards at once, then the two backwards
"""
import argparse

import numpy as np

import fastbptt
from fastbptt._blas_threads import largest_product
from fastbptt._directions import both_directions
from fastbptt.benchmarking import CASES, make_case, time_interleaved


def layer_function(cell, args, dh, directions, n_threads):
    record = fastbptt.CELLS[cell]

    def run():
        with fastbptt.num_threads(n_threads):
            for reverse in directions:
                _, cache = record.forward(*args, reverse=reverse)
                record.backward(dh, cache)
    return run


def at_once_function(cell, args, dh, n_threads):
    record = fastbptt.CELLS[cell]
    x, _, _, Wh, _ = args
    work = largest_product(x.swapaxes(0, 1), Wh)

    def forward(direction):
        return record.forward(*args, reverse=bool(direction))[1]

    def run():
        with fastbptt.num_threads(n_threads):
            caches = both_directions(forward, work)
            both_directions(lambda direction: record.backward(dh, caches[direction]), work)
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
          "| at once, n threads | both n / one | at once / one |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            for dtype in args.dtypes.split(","):
                call_args, _, dh = make_case(cell, CASES[case][0], np.dtype(dtype))
                functions = {
                    "one": layer_function(cell, call_args, dh, (False,), 1),
                    "both/1": layer_function(cell, call_args, dh, (False, True), 1),
                    "both/n": layer_function(cell, call_args, dh, (False, True), cores),
                    "at once": at_once_function(cell, call_args, dh, cores),
                }
                times = time_interleaved(functions, min_rounds=args.rounds)
                best = {name: min(t) * 1e3 for name, t in times.items()}
                print(f"| {cell} | {case} | {dtype} | {best['one']:.2f} | {best['both/1']:.2f} "
                      f"| {best['both/n']:.2f} | {best['at once']:.2f} "
                      f"| {best['both/n'] / best['one']:.2f} "
                      f"| {best['at once'] / best['one']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
