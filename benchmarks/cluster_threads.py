"""Where the CPU time of data-parallel training goes, thread by thread: this process (the client,
with the local cluster's scheduler and nannies on its event loop) and each worker (its event
loop, its actor thread), per step and while idle, read from /proc (Linux).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cluster_threads.py \
        [--workers 2] [--steps 200] [--chunk 8]

The default model of ``fastbptt train`` (one-hot characters -> LSTM 128 -> softmax, float32),
a global batch of 64 windows of 64 characters, Adam, clipping at 5, on ``--workers``
single-threaded workers started as ``fastbptt.nn.distributed.connect`` starts them. After 40
steps, 4 idle seconds (the periodic work of Dask's servers), then ``--steps`` steps: each
thread's CPU milliseconds (user + system) per idle second and per step. CPU time, unlike wall
time, is only mildly disturbed by the machine's other work.
"""
import argparse
import os
import threading
import time

import numpy as np

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """{thread id: (user + system, system) seconds} of process ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK)
    return out


def thread_names():
    return {t.native_id: t.name for t in threading.enumerate()}


def report(title, pids, names, before, after, per):
    for role, pid in pids.items():
        rows = []
        for tid, (cpu, system) in after[pid].items():
            c0, s0 = before[pid].get(tid, (0.0, 0.0))
            if cpu > c0:
                rows.append(((cpu - c0) / per * 1e3, (system - s0) / per * 1e3,
                             names[pid].get(tid, str(tid))))
        total = sum(r[0] for r in rows)
        print(f"{title}, {role}: {total:.2f} ms" + "".join(
            f"; {name} {cpu:.2f} (system {system:.2f})" for cpu, system, name in sorted(
                rows, reverse=True)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args(argv)

    from fastbptt.nn import Model
    from fastbptt.nn.data import load_corpus
    from fastbptt.nn.distributed import CHUNK, DataParallel, _local_client
    chunk = args.chunk or CHUNK
    client = _local_client(args.workers, 1)
    try:
        client.wait_for_workers(args.workers, timeout=60)
        worker_pids = client.run(os.getpid)
        pids = {"client": os.getpid()}
        pids.update({f"worker {w}": pid for w, pid in sorted(worker_pids.items())})
        corpus = load_corpus(max_chars=300_000)
        model = Model(len(corpus.vocab), 128, len(corpus.vocab), cell="lstm", input="onehot",
                      loss="softmax", dtype=np.float32, seed=0)
        with DataParallel(model, corpus.train, client=client, batch=64, seq_len=64,
                          optimizer="adam", lr=2e-3, clip=5.0) as dp:
            for _ in dp.train(40, chunk=chunk):
                pass
            names = {worker_pids[w]: n for w, n in client.run(thread_names).items()}
            names[os.getpid()] = thread_names()
            idle = {pid: thread_cpu(pid) for pid in pids.values()}
            time.sleep(4.0)
            before = {pid: thread_cpu(pid) for pid in pids.values()}
            report("idle, per second", pids, names, idle, before, 4.0)
            start = time.perf_counter()
            for _ in dp.train(args.steps, chunk=chunk):
                pass
            wall = (time.perf_counter() - start) / args.steps
            after = {pid: thread_cpu(pid) for pid in pids.values()}
            report(f"chunks of {chunk}, per step", pids, names, before, after, args.steps)
            t = dp.timing_summary()
        print(f"{wall * 1e3:.1f} ms per step ({64 * 64 / wall:,.0f} chars/s); median: forward "
              f"and backward {t['compute'] * 1e3:.1f}, update {t['apply'] * 1e3:.1f}, exchange "
              f"{t['exchange'] * 1e3:.2f}, communication {t['communication'] * 1e3:.1f} ms")
    finally:
        client.close()


if __name__ == "__main__":
    main()
