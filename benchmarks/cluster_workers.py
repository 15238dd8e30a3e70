"""Throughput of data-parallel training on 1 and 2 local Dask workers: the default model of
``fastbptt train`` (one-hot characters -> LSTM 128 -> softmax, float32), a global batch of 64
windows of 64 characters, Adam, clipping at 5; the variants in alternating rounds, characters
per second over the steps after the first 40.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cluster_workers.py \
        [--rounds 2] [--steps 240]

The variants: 1 and 2 workers of one kernel thread each (a ``LocalCluster`` started as
``fastbptt.nn.distributed.connect`` starts one, with FASTBPTT_NUM_THREADS and OMP_NUM_THREADS
= 1 in the workers), and ``connect("local:1")``, whose worker has every core. ``--chunk`` is
``DataParallel.train``'s: the steps per message to the replicas (default the library's); the
steps timed start at a chunk's end.
"""
import argparse
import time

import numpy as np

VARIANTS = ((1, 1), (2, 1), (1, None))   # (workers, kernel threads each; None: connect's)


def throughput(n_workers, threads, steps, chunk, warm=40):
    from fastbptt.nn import Model
    from fastbptt.nn.data import load_corpus
    from fastbptt.nn.distributed import DataParallel, _local_client, connect

    if threads is None:
        client = connect(f"local:{n_workers}")
    else:
        client = _local_client(n_workers, threads)
    warm = -(-warm // chunk) * chunk                 # the end of a chunk
    try:
        corpus = load_corpus(max_chars=300_000)
        model = Model(len(corpus.vocab), 128, len(corpus.vocab), cell="lstm", input="onehot",
                      loss="softmax", dtype=np.float32, seed=0)
        with DataParallel(model, corpus.train, client=client, batch=64, seq_len=64,
                          optimizer="adam", lr=2e-3, clip=5.0) as dp:
            for i, _ in enumerate(dp.train(steps, chunk=chunk)):
                if i == warm - 1:
                    start = time.perf_counter()
            seconds = time.perf_counter() - start
            shares = dp.timing_summary()
        return (steps - warm) * 64 * 64 / seconds, shares
    finally:
        client.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args(argv)
    from fastbptt.nn.distributed import CHUNK
    chunk = args.chunk or CHUNK
    best = {}
    for r in range(args.rounds):
        for workers, threads in VARIANTS:
            cps, t = throughput(workers, threads, args.steps, chunk)
            best[workers, threads] = max(best.get((workers, threads), 0), cps)
            each = "every core" if threads is None else f"{threads} kernel thread(s)"
            print(f"round {r}: {workers} worker(s), {each} each: {cps:,.0f} chars/s; per step "
                  f"{t['wall'] * 1e3:.1f} ms, communication {t['communication'] * 1e3:.1f} ms "
                  f"({t['communication'] / t['wall']:.0%})", flush=True)
    print(f"chunks of {chunk} steps: 2 workers / 1 worker, one thread each: "
          f"{best[2, 1] / best[1, 1]:.2f}x; "
          f"2 workers / 1 worker on every core: {best[2, 1] / best[1, None]:.2f}x")


if __name__ == "__main__":
    main()
