"""Throughput of data-parallel training on 1 and 2 local Dask workers: the default model of
``fastbptt train`` (one-hot characters -> LSTM 128 -> softmax, float32), a global batch of 64
windows of 64 characters, Adam, clipping at 5; characters per second.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cluster_workers.py \
        [--rounds 6] [--segment 48] [--warm 40] [--chunk 8]

The variants: 1 and 2 workers of one kernel thread each (a ``LocalCluster`` started as
``fastbptt.nn.distributed.connect`` starts one, with FASTBPTT_NUM_THREADS and OMP_NUM_THREADS
= 1 in the workers), and ``connect("local:1")``, whose worker has every core. The three
clusters run side by side, each with its ``DataParallel``; after ``--warm`` steps each, every
round times ``--segment`` steps of each variant in turn (one ``train`` call; chunks of
``--chunk`` steps, default the library's), and the best round of each variant counts: the
machine is shared, and a round that something else slowed down says nothing about the code.
The clusters waiting their turn cost about 1% of the machine (their event loops' periodic
work), which slows the two workers, who use both cores, more than the one.
"""
import argparse
import time

import numpy as np

VARIANTS = ((1, 1), (2, 1), (1, None))   # (workers, kernel threads each; None: connect's)
CHARS = 64 * 64                          # per step


def label(workers, threads):
    each = "every core" if threads is None else f"{threads} kernel thread(s)"
    return f"{workers} worker(s), {each} each"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--segment", type=int, default=48)
    parser.add_argument("--warm", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args(argv)

    from fastbptt.nn import Model
    from fastbptt.nn.data import load_corpus
    from fastbptt.nn.distributed import CHUNK, DataParallel, _local_client, connect
    chunk = args.chunk or CHUNK
    corpus = load_corpus(max_chars=300_000)
    clients, runs = [], {}
    try:
        for workers, threads in VARIANTS:
            client = (connect(f"local:{workers}") if threads is None
                      else _local_client(workers, threads))
            clients.append(client)
            client.wait_for_workers(workers, timeout=60)
            model = Model(len(corpus.vocab), 128, len(corpus.vocab), cell="lstm",
                          input="onehot", loss="softmax", dtype=np.float32, seed=0)
            runs[workers, threads] = DataParallel(
                model, corpus.train, client=client, batch=64, seq_len=64, optimizer="adam",
                lr=2e-3, clip=5.0)
        for dp in runs.values():
            for _ in dp.train(args.warm, chunk=chunk):
                pass
        best = {}
        for r in range(args.rounds):
            for (workers, threads), dp in runs.items():
                start = time.perf_counter()
                for _ in dp.train(args.segment, chunk=chunk):
                    pass
                cps = args.segment * CHARS / (time.perf_counter() - start)
                best[workers, threads] = max(best.get((workers, threads), 0), cps)
                print(f"round {r}: {label(workers, threads)}: {cps:,.0f} chars/s", flush=True)
        for (workers, threads), dp in runs.items():
            t = dp.timing_summary()
            print(f"{label(workers, threads)}: best {best[workers, threads]:,.0f} chars/s; "
                  f"per step (median) {t['wall'] * 1e3:.1f} ms, forward and backward "
                  f"{t['compute'] * 1e3:.1f}, update {t['apply'] * 1e3:.1f}, communication "
                  f"{t['communication'] * 1e3:.1f} ({t['communication'] / t['wall']:.0%})")
        print(f"chunks of {chunk} steps: 2 workers / 1 worker, one thread each: "
              f"{best[2, 1] / best[1, 1]:.2f}x; "
              f"2 workers / 1 worker on every core: {best[2, 1] / best[1, None]:.2f}x")
    finally:
        for dp in runs.values():
            dp.close()
        for client in clients:
            client.close()


if __name__ == "__main__":
    main()
