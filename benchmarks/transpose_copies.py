"""The transposed copies fastbptt.torch makes per call, against NumPy's: ``transposed(a)`` of each
build (``src/_transpose.pyx``) and ``np.ascontiguousarray(a.T)``, on the weights of case C.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/transpose_copies.py [--rounds 7]

A module in torch's weight layout copies ``weight_ih`` (G*H, D) and ``weight_hh`` (G*H, H) into
the kernels' layout on each forward and the two gradients back on each backward: for the LSTM
at D = 65, H = 100, (400, 65), (400, 100), (65, 400) and (100, 400). Microseconds per copy,
minimum over the rounds (``timeit``, 2000 copies a round), the variants taking turns.
"""
import argparse
import timeit

import numpy as np

from fastbptt._kernels import variants

SHAPES = [(400, 65), (400, 100), (65, 400), (100, 400), (300, 65), (300, 100)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    builds = variants("_transpose")
    names = ["numpy"] + [build.__name__.split(".")[-1] for build in builds]
    print("shape | dtype | " + " | ".join(f"{name} (us)" for name in names))
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for shape in SHAPES:
            a = rng.standard_normal(shape).astype(dtype)
            copies = [lambda a=a: np.ascontiguousarray(a.T)]
            copies += [lambda a=a, build=build: build.transposed(a) for build in builds]
            best = [float("inf")] * len(copies)
            for r in range(args.rounds):
                order = range(len(copies)) if r % 2 == 0 else reversed(range(len(copies)))
                for k in order:
                    best[k] = min(best[k], timeit.timeit(copies[k], number=2000) / 2000)
            print(f"{shape} | {np.dtype(dtype).name} | "
                  + " | ".join(f"{t * 1e6:.2f}" for t in best))


if __name__ == "__main__":
    main()
