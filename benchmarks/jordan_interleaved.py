"""Jordan's network: the kernels against the NumPy reference and the BLAS floor (the same
products with no elementwise work, ``_floor.jordan_floor``), forward + backward, timed
interleaved (``fastbptt.benchmarking.time_interleaved``) and compared as ratios of the minima.
The kernels are timed twice: with new arrays every call (as ``fastbptt bench``), and refilling
those of the call before (``out=``, as a training loop; the floor's buffers are made once too).

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


def reusing(args, dy):
    """Forward + backward on the kernels as a training loop runs them: each call refills the
    arrays of the one before (out=), so nothing is allocated after the first."""
    held = {"cache": None, "grads": None}

    def run():
        _, held["cache"] = fastbptt.jordan_forward(*args, out=held["cache"])
        held["grads"] = fastbptt.jordan_backward(dy, held["cache"], out=held["grads"])
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cases", default="S")
    opts = parser.parse_args()
    print("| case (N, T, D, H, O) | dtype | kernels ms | reference / kernels | "
          "kernels / floor | kernels with out= / floor |")
    print("|---|---|---|---|---|---|")
    for case in opts.cases.split(","):
        shape = jordan_shape(CASES[case][0])
        for dtype in (np.float64, np.float32):
            args, dy = make_jordan_case(shape, np.dtype(dtype))
            variants = {"kernels": jordan_function(fastbptt, args, dy),
                        "kernels out=": reusing(args, dy),
                        "reference": jordan_function(fastbptt.reference, args, dy),
                        "floor": jordan_floor_function(shape, np.dtype(dtype))}
            one = time_interleaved({"k": variants["kernels"]}, min_rounds=1)["k"].min()
            number = max(1, int(0.02 / one))
            best = {name: t.min() for name, t in time_interleaved(
                {name: variants[name] for name in ("kernels", "kernels out=", "floor")},
                number=number, repeat=3, min_rounds=opts.rounds,
                max_rounds=opts.rounds).items()}
            best["reference"] = time_interleaved(
                {"kernels": variants["kernels"], "reference": variants["reference"]},
                min_rounds=max(3, opts.rounds // 4),
                max_rounds=max(3, opts.rounds // 4))["reference"].min()
            print(f"| {case} {shape} | {np.dtype(dtype).name} | {best['kernels'] * 1e3:.3f} | "
                  f"{best['reference'] / best['kernels']:.1f}x | "
                  f"{best['kernels'] / best['floor']:.3f}x | "
                  f"{best['kernels out='] / best['floor']:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
