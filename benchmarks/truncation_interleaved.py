"""The speed of truncation, timed interleaved: on a noisy machine pytest-benchmark's groups
(``bench_truncation.py``) time one variant after the other, and load that changes in between
shows up as a ratio. Here the variants of a case take turns round after round
(``fastbptt.benchmarking.time_interleaved``), and the ratio of the minima over the rounds is
printed.

- backward with ``truncation.chunked(T, k)`` against full backward (target: never slower);
- ``TBPTT(k, k).run`` over the stream against one full-BPTT call over the same steps
  (forward, the loss gradients, backward; target: within 1.2x).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/truncation_interleaved.py``
(``--rounds R``, default 15).
"""
import argparse

import fastbptt
from fastbptt.benchmarking import (
    TRUNCATION_CASES,
    stream_function,
    time_interleaved,
    truncated_backward_function,
)


def ratios(variants, rounds):
    """{name: min seconds per call over interleaved rounds}, each call repeated to ~20 ms."""
    one = time_interleaved({"full": variants["full"]}, min_rounds=1)["full"].min()
    number = max(1, int(0.02 / max(1e-6, one)))
    times = time_interleaved(variants, number=number, min_rounds=rounds, max_rounds=rounds)
    return {name: t.min() for name, t in times.items()}


def line(what, best):
    return f"  {what}: full {best['full'] * 1e3:.2f} ms | " + ", ".join(
        f"{name} {t / best['full']:.2f}x" for name, t in best.items() if name != "full")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    print("ratio to full BPTT, min over interleaved rounds (float64)")
    for cell in fastbptt.CELLS:
        for case, (shape, ks) in TRUNCATION_CASES.items():
            variants = {"full": truncated_backward_function(cell, shape)}
            variants.update((f"k={k}", truncated_backward_function(cell, shape, k))
                            for k in (10, 25))
            print(line(f"backward {cell} {case}", ratios(variants, rounds)), flush=True)
            variants = {"full": stream_function(cell, shape)}
            variants.update((f"k={k}", stream_function(cell, shape, k)) for k in ks)
            print(line(f"stream   {cell} {case}", ratios(variants, rounds)), flush=True)


if __name__ == "__main__":
    main()
