"""The RNN's lean backward (``overwrite_cache=True``) against its default backward, timed
interleaved (``fastbptt.benchmarking.time_interleaved``): forward + backward of each variant in
turn, round after round, and the ratio of the minima over the rounds printed (lean / default;
below 1 is faster).

Cases S, C, M, L of ``fastbptt.benchmarking``, both dtypes, batch-major (``--time-major`` for the
other layout). ``--rows R [R ...]`` times the lean backward with ``fastbptt.rnn.LEAN_ROWS`` set
to each R (the block size, see ``fastbptt.rnn.lean_block_steps``).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/rnn_lean_interleaved.py``
(``--rounds R``, default 10).
"""
import argparse

import numpy as np

import fastbptt
import fastbptt.rnn
from fastbptt.benchmarking import CASES, make_case, time_interleaved


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
            settings = {"default": (False, default_rows)}
            settings.update({f"lean rows={r}": (True, r) for r in opts.rows})
            variants = {name: (lambda p=problem, o=overwrite, r=rows: forward_backward(p, o, r))
                        for name, (overwrite, rows) in settings.items()}
            one = time_interleaved({"default": variants["default"]}, min_rounds=1)["default"]
            number = max(1, int(0.05 / one.min()))   # ~50 ms a variant
            best = {name: t.min() for name, t in time_interleaved(
                variants, number=number, min_rounds=opts.rounds, max_rounds=opts.rounds).items()}
            ratios = "  ".join(f"{name} {best[name] / best['default']:.3f}"
                               for name in variants if name != "default")
            print(f"rnn {case} {shape} {np.dtype(dtype).name} {layout}: default "
                  f"{best['default'] * 1e3:.3f} ms  {ratios}", flush=True)
    fastbptt.rnn.LEAN_ROWS = default_rows


if __name__ == "__main__":
    main()
