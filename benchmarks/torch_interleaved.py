"""fastbptt against PyTorch (and the BLAS floor), forward + full backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_interleaved.py \
        [--cells lstm,gru,rnn] [--cases M,L] [--dtypes float32] [--rounds 10]

pytest-benchmark (``bench_cells.py``) times the implementations of a row one after the other;
on a shared machine the load can change in between, which moved rows near 1x by up to 10%
between runs. Here each round times each implementation in turn (the order alternating), and
the ratio divides the minima over the rounds. Needs torch (``pip install torch==2.13.0``).
"""
import argparse
import time

import numpy as np

import fastbptt
from fastbptt.cli.bench import (CASES, floor_function, import_torch, make_case, step_function,
                            torch_function)


def best_times(functions, rounds, reps):
    """Minimum seconds per call of each function, taking turns within every round."""
    best = {name: float("inf") for name in functions}
    names = list(functions)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = functions[name]
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
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
                one = best_times(functions, 1, 1)["fastbptt"]
                reps = max(1, min(20, int(0.05 / one)))
                best = best_times(functions, args.rounds, reps)
                k, t, f = best["fastbptt"], best["torch"], best["floor"]
                print(f"  {cell:4} {case} {dtype}: fastbptt {k * 1e3:8.2f} ms | PyTorch "
                      f"{t * 1e3:8.2f} ms ({t / k:.2f}x) | floor {f * 1e3:8.2f} ms "
                      f"(fastbptt / floor {k / f:.2f})", flush=True)


if __name__ == "__main__":
    main()
