"""The training step of ``fastbptt train`` against the same model and step in PyTorch, at one
thread and at the default (every core), interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_step_interleaved.py \
        [--rounds 20] [--dtype float32]

The step: one-hot characters (96) -> LSTM (128) -> linear (96) -> softmax cross-entropy over a
batch of 32 streams x 64 characters, the state carried from step to step, the gradient clipped
to global norm 5, Adam. fastbptt's is ``fastbptt train``'s (``Model.loss_and_grads``,
``clip.clip_grad_norm``, ``nn.Adam``); PyTorch's is ``nn.LSTM``, ``nn.Linear``,
``F.cross_entropy``, ``clip_grad_norm_``, ``optim.Adam``. Each runs at one thread (fastbptt's
kernels and NumPy's BLAS; ``torch.set_num_threads(1)``) and at the default, every core this
process may use (fastbptt's kernels at that count, NumPy's BLAS on one, as ``fastbptt train``
runs, and also with NumPy's BLAS at that count; PyTorch's intra-op threads at that count), all
taking turns round after round; the table shows the minimum per step and the ratios. Needs
torch.
"""
import argparse

import numpy as np

import fastbptt
from fastbptt import clip
from fastbptt._blas_threads import numpy_blas_threads
from fastbptt._threads import available_cores
from fastbptt.benchmarking import import_torch, time_interleaved
from fastbptt.nn import Adam, Model

V, H, N, T, LR, MAX_NORM = 96, 128, 32, 64, 2e-3, 5.0


def fastbptt_step(x, y, dtype, threads, blas_threads):
    model = Model(V, H, V, cell="lstm", input="onehot", loss="softmax", dtype=dtype, seed=0)
    opt = Adam(model.params, lr=LR)
    grads = model.zeros_like_params()
    state = [None]

    def step():
        with fastbptt.num_threads(threads), numpy_blas_threads(blas_threads):
            _, _, state[0] = model.loss_and_grads(x, y, state=state[0], grads=grads)
            clip.clip_grad_norm(grads, MAX_NORM, error_if_nonfinite=False)
            opt.step(grads)
    return step


def torch_step(torch, x, y, dtype, threads):
    torch.manual_seed(0)
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    lstm = torch.nn.LSTM(V, H, batch_first=True, dtype=tdtype)
    linear = torch.nn.Linear(H, V, dtype=tdtype)
    params = [*lstm.parameters(), *linear.parameters()]
    opt = torch.optim.Adam(params, lr=LR)
    inputs = torch.nn.functional.one_hot(torch.from_numpy(x), V).to(tdtype)
    targets = torch.from_numpy(y).reshape(-1)
    state = [None]

    def step():
        torch.set_num_threads(threads)
        out, (h, c) = lstm(inputs, state[0])
        state[0] = (h.detach(), c.detach())
        loss = torch.nn.functional.cross_entropy(linear(out).reshape(-1, V), targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        opt.step()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    torch = import_torch()
    if torch is None:
        raise SystemExit("needs torch (pip install torch==2.13.0)")
    dtype = {"float32": np.float32, "float64": np.float64}[args.dtype]
    cores = available_cores()
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (N, T))
    y = rng.integers(0, V, (N, T))
    functions = {
        "fastbptt 1": fastbptt_step(x, y, dtype, 1, 1),
        f"fastbptt {cores}": fastbptt_step(x, y, dtype, cores, 1),
        f"fastbptt {cores}, NumPy BLAS {cores}": fastbptt_step(x, y, dtype, cores, cores),
        "torch 1": torch_step(torch, x, y, dtype, 1),
        f"torch {cores}": torch_step(torch, x, y, dtype, cores),
    }
    times = time_interleaved(functions, repeat=5, min_rounds=args.rounds,
                             max_rounds=args.rounds)
    best = {name: ts.min() for name, ts in times.items()}
    print(f"training step, LSTM {H}, {N} x {T} characters, Adam, clip {MAX_NORM:g}, "
          f"{args.dtype}; min over {args.rounds} interleaved rounds of 5 steps")
    for name, t in best.items():
        print(f"  {name:28} {t * 1e3:7.2f} ms")
    for n in (1, cores):
        ratio = best[f"torch {n}"] / best[f"fastbptt {n}"]
        print(f"  PyTorch / fastbptt at {n} thread(s): {ratio:.2f}x")
    speedup = best["fastbptt 1"] / best[f"fastbptt {cores}"]
    print(f"  fastbptt {cores} threads against 1: {speedup:.2f}x")
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
