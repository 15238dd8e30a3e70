"""Jordan's network: the kernels against the NumPy reference and the BLAS floor (the same
products with no elementwise work, ``_floor.jordan_floor``), forward + backward, timed
interleaved (``fastbptt.benchmarking.time_interleaved``) and compared as ratios of the minima.

Cases of ``fastbptt.benchmarking.CASES`` with O = D (``jordan_shape``; S: N = 1, T = 1000,
D = 32, H = 64, O = 32), both dtypes, batch-major, default options (tanh, identity).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/jordan_interleaved.py``
(``--rounds R``, default 20; ``--cases S,M``).
"""
import argparse

import numpy as np

import fastbptt
import fastbptt.reference
from fastbptt.benchmarking import (
    CASES,
    jordan_floor_function,
    jordan_function,
    jordan_shape,
    make_jordan_case,
    time_interleaved,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cases", default="S")
    opts = parser.parse_args()
    print("| case (N, T, D, H, O) | dtype | kernels ms | reference / kernels | "
          "kernels / floor |")
    print("|---|---|---|---|---|")
    for case in opts.cases.split(","):
        shape = jordan_shape(CASES[case][0])
        for dtype in (np.float64, np.float32):
            args, dy = make_jordan_case(shape, np.dtype(dtype))
            variants = {"kernels": jordan_function(fastbptt, args, dy),
                        "reference": jordan_function(fastbptt.reference, args, dy),
                        "floor": jordan_floor_function(shape, np.dtype(dtype))}
            one = time_interleaved({"k": variants["kernels"]}, min_rounds=1)["k"].min()
            number = max(1, int(0.02 / one))
            best = {name: t.min() for name, t in time_interleaved(
                {"kernels": variants["kernels"], "floor": variants["floor"]}, number=number,
                repeat=3, min_rounds=opts.rounds, max_rounds=opts.rounds).items()}
            best["reference"] = time_interleaved(
                {"kernels": variants["kernels"], "reference": variants["reference"]},
                min_rounds=max(3, opts.rounds // 4),
                max_rounds=max(3, opts.rounds // 4))["reference"].min()
            print(f"| {case} {shape} | {np.dtype(dtype).name} | {best['kernels'] * 1e3:.3f} | "
                  f"{best['reference'] / best['kernels']:.1f}x | "
                  f"{best['kernels'] / best['floor']:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
