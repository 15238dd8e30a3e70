"""One stream (N = 1, and a few: N = 2..4): fastbptt against the BLAS floor, PyTorch and an
earlier build of fastbptt, forward + full backward, timed interleaved in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/one_stream_interleaved.py \
        [--before DIR] [--cases S,C,H256,H16] [--cells rnn,lstm,gru] [--dtypes float32,float64] \
        [--rounds 10] [--no-torch]

Cases (N, T, D, H): S (1, 1000, 32, 64) and C (1, 25, 65, 100) of ``fastbptt.benchmarking``,
H16 and H256 (1, 1000, 32, H), H512 (1, 200, 32, 512), O (1, 1, 1, 1: the cost of a call
itself), and ``<case>xN`` for the same shape with N sequences (``Sx4``). The floor is
``floor_function``: the kernels' BLAS calls with no elementwise work, each step's product by
GEMV at N = 1 (OpenBLAS's GEMV beats its one-row GEMM there, by up to 6x) and by GEMM above.
PyTorch runs with one intra-op thread. "with out=" is fastbptt writing into the cache
and result of the call before (``reusing_function``): no new memory per call, as the floor.
``--before DIR`` adds the build of another checkout (``benchmarks/before_after_interleaved.py``
imports it beside this one as ``fastbptt_before``).
Every callable takes its turn in every round (``time_interleaved``); ratios divide the minima
over the rounds. The last column is fastbptt's time over 2 T (a forward and a backward step).
"""
import argparse
import os
import sys

import numpy as np

import fastbptt
from fastbptt.benchmarking import (
    CASES,
    floor_function,
    import_torch,
    make_case,
    reusing_function,
    step_function,
    time_interleaved,
    torch_function,
)

SHAPES = {name: shape for name, (shape, _) in CASES.items()}
SHAPES.update({"H16": (1, 1000, 32, 16), "H256": (1, 1000, 32, 256), "H512": (1, 200, 32, 512),
               "O": (1, 1, 1, 1)})


def shape_of(case):
    """(N, T, D, H) of a case name: one of SHAPES, or '<name>x<N>' for N sequences."""
    name, _, n_batch = case.partition("x")
    shape = SHAPES[name]
    return (int(n_batch), *shape[1:]) if n_batch else shape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None)
    parser.add_argument("--cases", default="S,C,H256,H16")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    before = None
    if args.before:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from before_after_interleaved import import_before
        before = import_before(args.before)
    torch = None if args.no_torch else import_torch()
    print(f"min over {args.rounds} interleaved rounds, forward + full backward, one thread; "
          f"fastbptt: {os.path.dirname(fastbptt.__file__)}"
          + (f"; before: {args.before}" if before else ""))
    print("| case (N, T, D, H) | cell | dtype | fastbptt | floor | fastbptt / floor | "
          "with out= / floor | PyTorch | PyTorch / fastbptt | before | fastbptt / before | "
          "per step and direction |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in args.cases.split(","):
        shape = shape_of(case)
        for cell in args.cells.split(","):
            for dtype in args.dtypes.split(","):
                problem = make_case(cell, shape, np.dtype(dtype))
                functions = {"fastbptt": step_function(fastbptt, cell, *problem),
                             "out=": reusing_function(cell, *problem),
                             "floor": floor_function(cell, shape, np.dtype(dtype))}
                if torch is not None:
                    functions["torch"] = torch_function(cell, *problem)
                if before is not None:
                    functions["before"] = step_function(before, cell, *problem)
                one = time_interleaved(functions, min_rounds=1)["fastbptt"].min()
                reps = max(1, min(20, int(0.03 / one)))
                times = time_interleaved(functions, repeat=reps, min_rounds=args.rounds,
                                         max_rounds=args.rounds)
                low = {name: float(t.min()) for name, t in times.items()}
                k = low["fastbptt"]

                ms = {name: f"{t * 1e3:.3f} ms" for name, t in low.items()}
                torch_ratio = f"{low['torch'] / k:.2f}x" if "torch" in low else "-"
                before_ratio = f"{k / low['before']:.2f}" if "before" in low else "-"
                per_step = k / (2 * shape[1]) * 1e9
                print(f"| {case} {shape} | {cell} | {dtype} | {ms['fastbptt']} | {ms['floor']} | "
                      f"{k / low['floor']:.2f} | {low['out='] / low['floor']:.2f} | "
                      f"{ms.get('torch', '-')} | {torch_ratio} | "
                      f"{ms.get('before', '-')} | "
                      f"{before_ratio} | {per_step:.0f} ns |", flush=True)


if __name__ == "__main__":
    main()
