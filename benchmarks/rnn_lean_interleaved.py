"""The RNN's lean backward (``overwrite_cache=True``) against its default backward, timed
interleaved: forward + backward of each variant once per round, rounds alternating, and the
ratio of the minima over the rounds printed (lean / default; below 1 is faster).

Cases S, C, M, L of ``fastbptt.bench``, both dtypes, batch-major (``--time-major`` for the
other layout). ``--rows R [R ...]`` times the lean backward with ``fastbptt.rnn.LEAN_ROWS`` set
to each R (the block size, see ``fastbptt.rnn.lean_block_steps``).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/rnn_lean_interleaved.py``
(``--rounds R``, default 10).
"""
import argparse
import time

import numpy as np

import fastbptt
import fastbptt.rnn
from fastbptt.cli.bench import CASES, make_case


def forward_backward(problem, overwrite, rows):
    args, kwargs, dh = problem
    fastbptt.rnn.LEAN_ROWS = rows
    _, cache = fastbptt.rnn_forward(*args, **kwargs)
    fastbptt.rnn_backward(dh, cache, overwrite_cache=overwrite)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--time-major", action="store_true")
    parser.add_argument("--rows", type=int, nargs="+", default=[fastbptt.rnn.LEAN_ROWS])
    opts = parser.parse_args()
    default_rows = fastbptt.rnn.LEAN_ROWS
    layout = "time-major" if opts.time_major else "batch-major"
    for dtype in (np.float32, np.float64):
        for case in ("S", "C", "M", "L"):
            shape = CASES[case][0]
            args, kwargs, dh = make_case("rnn", shape, np.dtype(dtype))
            if opts.time_major:
                args = [np.ascontiguousarray(args[0].swapaxes(0, 1)), *args[1:]]
                kwargs = {**kwargs, "time_major": True}
                dh = np.ascontiguousarray(dh.swapaxes(0, 1))
            problem = (args, kwargs, dh)
            variants = {"default": (False, default_rows)}
            variants.update({f"lean rows={r}": (True, r) for r in opts.rows})
            start = time.perf_counter()
            forward_backward(problem, False, default_rows)
            number = max(1, int(0.05 / (time.perf_counter() - start)))   # ~50 ms a variant
            best = {name: float("inf") for name in variants}
            for _ in range(opts.rounds):
                for name, (overwrite, rows) in variants.items():
                    start = time.perf_counter()
                    for _ in range(number):
                        forward_backward(problem, overwrite, rows)
                    best[name] = min(best[name], (time.perf_counter() - start) / number)
            ratios = "  ".join(f"{name} {best[name] / best['default']:.3f}"
                               for name in variants if name != "default")
            print(f"rnn {case} {shape} {np.dtype(dtype).name} {layout}: default "
                  f"{best['default'] * 1e3:.3f} ms  {ratios}", flush=True)
    fastbptt.rnn.LEAN_ROWS = default_rows


if __name__ == "__main__":
    main()
