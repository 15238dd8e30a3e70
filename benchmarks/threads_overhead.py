"""What running a small call on several threads costs: an LSTM forward + backward on a tiny
problem (N = 4, T = 2, D = 2, H = 4), far below the size where a call takes other threads
(``fastbptt._threads.THREADED_WORK``, lowered to 0 here so that it does), at 1 and 2 threads,
interleaved. The difference is the price of the call's parallel regions (two in forward, two in
backward): starting and joining the other thread. It sets the size below which calls stay on
one thread.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/threads_overhead.py \
        [--rounds 30]
"""
import argparse

import numpy as np

import fastbptt
import fastbptt._blas_threads
import fastbptt._threads
from fastbptt.benchmarking import time_interleaved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    fastbptt._threads.THREADED_WORK = 0
    fastbptt._blas_threads.SINGLE_THREADED_WORK = 0
    rng = np.random.default_rng(0)
    n_batch, n_steps, n_input, n_hidden = 4, 2, 2, 4
    x = rng.standard_normal((n_batch, n_steps, n_input))
    Wx = rng.standard_normal((n_input, 4 * n_hidden))
    Wh = rng.standard_normal((n_hidden, 4 * n_hidden))
    b = np.zeros(4 * n_hidden)
    dh = np.ones((n_batch, n_steps, n_hidden))

    def at(n):
        def run():
            with fastbptt.num_threads(n):
                _, cache = fastbptt.lstm_forward(x, None, Wx, Wh, b)
                fastbptt.lstm_backward(dh, cache)
        return run

    times = time_interleaved({"1": at(1), "2": at(2)}, number=100, min_rounds=args.rounds,
                             max_rounds=args.rounds)
    for name, ts in times.items():
        print(f"{name} thread(s): min {ts.min() * 1e6:7.1f} us, median "
              f"{np.median(ts) * 1e6:7.1f} us per forward + backward")
    extra = times["2"].min() - times["1"].min()
    print(f"two threads cost {extra * 1e6:.1f} us more per call pair (4 parallel regions): "
          f"{extra / 4 * 1e6:.1f} us per region")


if __name__ == "__main__":
    main()
