"""fastbptt against PyTorch (and the BLAS floor), forward + full backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_interleaved.py \
        [--cells lstm,gru,rnn] [--cases M,L] [--dtypes float32] [--rounds 10]

pytest-benchmark (``bench_cells.py``) times the implementations of a row one after the other;
on a shared machine the load can change in between, which moved rows near 1x by up to 10%
between runs. Here the implementations take turns round after round, the order alternating
(``fastbptt.benchmarking.time_interleaved``), and the ratio divides the minima over the rounds.
Needs torch (``pip install torch==2.13.0``).
"""
import argparse

import numpy as np

import fastbptt
from fastbptt.benchmarking import (
    CASES,
    floor_function,
    import_torch,
    make_case,
    step_function,
    time_interleaved,
    torch_function,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(   # the cells torch.nn has
        name for name, cell in fastbptt.CELLS.items() if not cell.output_feedback))
    parser.add_argument("--cases", default="M,L")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    if import_torch() is None:
        raise SystemExit("needs torch (pip install torch==2.13.0)")
    print("min over interleaved rounds, forward + full backward, one thread each")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            shape = CASES[case][0]
            for dtype in args.dtypes.split(","):
                problem = make_case(cell, shape, np.dtype(dtype))
                functions = {"fastbptt": step_function(fastbptt, cell, *problem),
                             "torch": torch_function(cell, *problem),
                             "floor": floor_function(cell, shape, np.dtype(dtype))}
                one = time_interleaved(functions, min_rounds=1)["fastbptt"].min()
                reps = max(1, min(20, int(0.05 / one)))
                times = time_interleaved(functions, repeat=reps, min_rounds=args.rounds,
                                         max_rounds=args.rounds)
                k, t, f = (times[name].min() for name in ("fastbptt", "torch", "floor"))
                print(f"  {cell:4} {case} {dtype}: fastbptt {k * 1e3:8.2f} ms | PyTorch "
                      f"{t * 1e3:8.2f} ms ({t / k:.2f}x) | floor {f * 1e3:8.2f} ms "
                      f"(fastbptt / floor {k / f:.2f})", flush=True)


if __name__ == "__main__":
    main()
