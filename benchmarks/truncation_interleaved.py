"""Issue 4's speed claims, timed interleaved: on a noisy machine pytest-benchmark's groups
(``bench_truncation.py``) time one variant after the other, and load that changes in between
shows up as a ratio. Here every variant of a case runs once per round, rounds alternate, and
the ratio of the minima over the rounds is printed.

- backward with ``truncation.chunked(T, k)`` against full backward (target: never slower);
- ``TBPTT(k, k).run`` over the stream against one full-BPTT call over the same steps
  (forward, the loss gradients, backward; target: within 1.2x).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/truncation_interleaved.py``
(``--rounds R``, default 15).
"""
import argparse
import time

import numpy as np

import fastbptt
from fastbptt import TBPTT, truncation
from fastbptt.cli.bench import make_case

CASES = {"S": ((1, 1000, 32, 64), (25, 100, 250)), "M": ((32, 100, 64, 128), (10, 25, 50))}


def interleaved(variants, rounds, number):
    """{name: min seconds per call over the rounds}, the variants alternating within a round."""
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / number)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    print("ratio to full BPTT, min over interleaved rounds (float64)")
    for cell in ("rnn", "lstm", "gru"):
        forward = getattr(fastbptt, f"{cell}_forward")
        backward = getattr(fastbptt, f"{cell}_backward")
        for case, (shape, ks) in CASES.items():
            args, _, dh = make_case(cell, shape, np.float64, 0)
            n_steps = shape[1]
            _, cache = forward(*args)
            variants = {"full": lambda: backward(dh, cache)}
            for k in (10, 25):
                xi = truncation.chunked(n_steps, k)
                variants[f"k={k}"] = lambda xi=xi: backward(dh, cache, xi=xi)
            number = max(1, int(0.02 / max(1e-6, interleaved(variants, 1, 1)["full"])))
            best = interleaved(variants, rounds, number)
            print(f"  backward {cell} {case}: full {best['full'] * 1e3:.2f} ms | " + ", ".join(
                f"{name} {t / best['full']:.2f}x" for name, t in best.items() if name != "full"))

            def loss_grad(h, t0):
                return 0.0, dh[:, t0:t0 + h.shape[1]]

            def full():
                h, c = forward(*args)
                backward(loss_grad(h, 0)[1], c)

            variants = {"full": full}
            for k in ks:
                driver = TBPTT(k, cell=cell)
                variants[f"k={k}"] = lambda d=driver: d.run(*args, loss_grad)
            number = max(1, int(0.02 / max(1e-6, interleaved(variants, 1, 1)["full"])))
            best = interleaved(variants, rounds, number)
            print(f"  stream   {cell} {case}: full {best['full'] * 1e3:.2f} ms | " + ", ".join(
                f"{name} {t / best['full']:.2f}x" for name, t in best.items() if name != "full"))


if __name__ == "__main__":
    main()
