"""checkpoint=k against full storage: time of one forward and backward, and the memory it
holds, for every cell at N = 1 and T = 10^3, 10^4, 10^5.

Time: the variants (full storage and three k: sqrt(T) / 4, sqrt(T), 4 sqrt(T)) run in rounds,
interleaved in one process, and each reports the minimum over the rounds; the ratio to full
storage is of the minima. Both backward calls run with ``overwrite_cache=True``, as a training
step does (``Model.loss_and_grads``): full storage then needs no gate-sized workspace beside its
cache either. Memory: one forward and backward under tracemalloc (run apart from the timing,
which it would slow), the peak less what the caller gets back (h, dx, the weight and state
gradients), in step-states: what full storage keeps per step (6 (N, H) arrays for the LSTM, 5
for the GRU, 1 for the RNN).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/checkpoint_interleaved.py
"""
import argparse
import math
import time
import tracemalloc

import numpy as np

import fastbptt


def problem(cell, n_steps, n_input, n_hidden, dtype, seed=0):
    record = fastbptt.CELLS[cell]
    rng = np.random.default_rng(seed)
    shapes = record.weight_shapes(n_input, n_hidden)
    weights = {name: (rng.standard_normal(shape) * 0.5 / np.sqrt(shape[0])).astype(dtype)
               for name, shape in shapes.items()}
    x = rng.standard_normal((1, n_steps, n_input)).astype(dtype)
    dh = rng.standard_normal((1, n_steps, n_hidden)).astype(dtype)
    args = [x, None, weights["Wx"], weights["Wh"], weights["b"]]
    kwargs = {name: weights[name] for name in record.extra_weights}
    return record, args, kwargs, dh


def step(record, args, kwargs, dh, k):
    _, cache = record.forward(*args, checkpoint=k, **kwargs)
    return record.backward(dh, cache, overwrite_cache=True)


def memory(record, args, kwargs, dh, k):
    """Bytes held beyond what the caller gets back, in one forward and backward."""
    step(record, args, kwargs, dh, k)     # warm: the kernels' modules and first-call objects
    tracemalloc.start()
    try:
        h, cache = record.forward(*args, checkpoint=k, **kwargs)
        grads = record.backward(dh, cache, overwrite_cache=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    returned = h.nbytes + sum(a.nbytes for a in grads) + sum(
        a.nbytes for a in vars(grads).values() if isinstance(a, np.ndarray))
    return peak - returned


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="time per case at most; fewer rounds where one would be longer")
    opts = parser.parse_args()
    dtype = np.float32
    print(f"N = 1, D = {opts.input}, H = {opts.hidden}, float32; time: min of rounds, "
          "ratio to full storage; memory: peak beyond the outputs, in step-states (T for full)")
    print("| cell | T | k | segments | time (ms) | x full | memory (step-states) | x full |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cell in opts.cells:
        for n_steps in opts.steps:
            record, args, kwargs, dh = problem(cell, n_steps, opts.input, opts.hidden, dtype)
            root = math.isqrt(n_steps - 1) + 1
            variants = [None, max(1, root // 4), "sqrt", 4 * root]
            per_step = sum(record.cache_type.outputs.values()) * opts.hidden * 4
            mem = {k: memory(record, args, kwargs, dh, k) for k in variants}
            best = dict.fromkeys(variants, math.inf)
            start = time.perf_counter()
            for index in range(opts.rounds):
                for k in variants:
                    t0 = time.perf_counter()
                    step(record, args, kwargs, dh, k)
                    best[k] = min(best[k], time.perf_counter() - t0)
                spent = time.perf_counter() - start
                if index and spent * (index + 2) / (index + 1) > opts.seconds:
                    break
            for k in variants:
                kk = "full" if k is None else (f"{root} (sqrt)" if k == "sqrt" else str(k))
                n_seg = 1 if k is None else -(-n_steps // (root if k == "sqrt" else k))
                print(f"| {cell} | {n_steps} | {kk} | {n_seg} | {best[k] * 1e3:.2f} | "
                      f"{best[k] / best[None]:.2f} | {mem[k] / per_step:.0f} | "
                      f"{mem[k] / mem[None]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
