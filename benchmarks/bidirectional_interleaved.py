"""A bidirectional layer on every thread against one direction on one thread, forward + full
backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bidirectional_interleaved.py \
        [--cells rnn,lstm,gru] [--cases M,L] [--dtypes float32,float64] [--rounds 5] [--cpu]

Each case is timed four ways, taking turns round after round
(``fastbptt.benchmarking.time_interleaved``), the ratios dividing the minima:

    one       one direction (forward), one thread
    both/1    both directions, one after the other, one thread
    both/n    the same on every thread this process may use (each call's sequences in shards)
    at once   both directions at once on every thread, each on its share (as
              ``Model(bidirectional=True)`` runs a layer, ``fastbptt._directions``): the two
              forwards at once, then the two backwards

Run at once, the layer takes about as long as the slower direction on its share of the threads.
``--cpu`` times each direction alone on one thread instead, by the CPU time of the calling
thread (steadier than the clock on a machine others are using): forward, reverse, and reverse
with its sequences gathered by rows into the kernels' order as sequences of unequal lengths are
(``fastbptt._lengths.Order`` with ``flipped`` switched off), the way it ran before it was laid
out by a flip in time.
"""
import argparse
import contextlib
import time

import numpy as np

import fastbptt
import fastbptt._lengths
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


@contextlib.contextmanager
def gathered():
    """Sequences reversed in this block are laid out by rows, as before ``Order.flipped``."""
    order = fastbptt._lengths.Order
    init = order.__init__

    def by_rows(self, *args):
        init(self, *args)
        self.flipped = False
    order.__init__ = by_rows
    try:
        yield
    finally:
        order.__init__ = init


def direction_function(cell, args, dh, reverse, by_rows=False):
    record = fastbptt.CELLS[cell]

    def run():
        with fastbptt.num_threads(1), gathered() if by_rows else contextlib.nullcontext():
            _, cache = record.forward(*args, reverse=reverse)
            record.backward(dh, cache)
    return run


def cpu_table(args):
    print(f"min over {args.rounds} interleaved rounds, forward + full backward, CPU time of the "
          "calling thread, ms, one thread")
    print("| cell | case | dtype | forward | reverse | reverse, by rows | reverse / forward "
          "| by rows / forward |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            for dtype in args.dtypes.split(","):
                call_args, _, dh = make_case(cell, CASES[case][0], np.dtype(dtype))
                functions = {
                    "forward": direction_function(cell, call_args, dh, False),
                    "reverse": direction_function(cell, call_args, dh, True),
                    "by rows": direction_function(cell, call_args, dh, True, by_rows=True),
                }
                times = time_interleaved(functions, min_rounds=args.rounds,
                                         clock=time.thread_time)
                best = {name: min(t) * 1e3 for name, t in times.items()}
                print(f"| {cell} | {case} | {dtype} | {best['forward']:.2f} "
                      f"| {best['reverse']:.2f} | {best['by rows']:.2f} "
                      f"| {best['reverse'] / best['forward']:.2f} "
                      f"| {best['by rows'] / best['forward']:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--cases", default="M,L")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", action="store_true",
                        help="each direction alone on one thread, by CPU time")
    args = parser.parse_args()
    if args.cpu:
        cpu_table(args)
        return
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
