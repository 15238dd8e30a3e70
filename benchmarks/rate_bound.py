"""How fast a module's forward + backward would have to compute to reach a speed-up target.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/rate_bound.py \
        [--cells lstm] [--cases M] [--dtypes float32] [--threads 1,2] [--rounds 6] \
        [--target 1.2]

A recurrent layer's forward and full backward are six matrix products of the same size each
way, whatever the cell: with G gates, the input product X @ Wx and the per-step products
h_{t-1} @ Wh forward; dA_t @ Wh.T per step, dWh, dWx and dx backward. That is
T * N * G*H * (3D + 3H) multiply-adds, 2x that in floating-point operations, before any
elementwise work. Dividing them by a time gives the rate a side computed at; dividing them by
torch.nn's time over the target gives the rate fastbptt.torch's module would need for the
target. The ceiling is the rate of one large square matrix product (2048 x 2048) in the
fastest BLAS on the machine (PyTorch's and SciPy's OpenBLAS, both timed), at the same thread
count: no recurrent layer's products, which are smaller and come one step at a time, run
faster than that, and the elementwise passes add time on top.

The modules and their calls are those of ``benchmarks/torch_modules.py`` (``step_functions``:
same state dict, batch-first input, ``output.backward(dh)`` with the input and every parameter
requiring gradients, fastbptt's in torch's weight layout), timed in turns
(``fastbptt.benchmarking.time_interleaved``), minimum over the rounds; fastbptt's thread count
is set to torch's. Needs torch.
"""
import argparse
import os
import sys
import time

import numpy as np

import fastbptt
from fastbptt import CELLS
from fastbptt.benchmarking import CASES, time_interleaved


def operations(cell, shape):
    """Floating-point operations of one forward + full backward of ``cell`` on (N, T, D, H)."""
    n_batch, n_steps, n_input, n_hidden = shape
    n_gh = CELLS[cell].n_gates * n_hidden
    return 2 * n_steps * n_batch * n_gh * (3 * n_input + 3 * n_hidden)


def gemm_rate(torch, dtype, size=2048, repeat=5):
    """The best of PyTorch's and SciPy's GEMM rates (FLOP/s) on size x size at torch's and
    OpenBLAS's current thread counts, and each."""
    from scipy.linalg import blas
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    ta = torch.from_numpy(a)
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    best = {"torch": float("inf"), "scipy": float("inf")}
    for name, product in (("torch", lambda: ta @ ta), ("scipy", lambda: gemm(1.0, a, a))):
        product()
        for _ in range(repeat):
            start = time.perf_counter()
            product()
            best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: 2 * size ** 3 / seconds for name, seconds in best.items()}
    return max(rates.values()), rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm")
    parser.add_argument("--cases", default="M")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--target", type=float, default=1.2)
    args = parser.parse_args(argv)

    import torch

    from fastbptt._blas_threads import _find_set_threads
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_modules import step_functions
    set_scipy_threads = _find_set_threads()[0]     # SciPy's OpenBLAS, for its GEMM rate

    print(f"torch {torch.__version__}; min over {args.rounds} interleaved rounds; GFLOP/s of "
          f"the six products (elementwise work not counted)")
    for n_threads in (int(n) for n in args.threads.split(",")):
        torch.set_num_threads(n_threads)
        fastbptt.set_num_threads(n_threads)
        for dtype_name in args.dtypes.split(","):
            set_scipy_threads(n_threads)
            ceiling, rates = gemm_rate(torch, np.dtype(dtype_name))
            set_scipy_threads(1)     # as fastbptt's kernels run it
            print(f"{n_threads} thread(s), {dtype_name}: GEMM 2048^3 torch "
                  f"{rates['torch'] / 1e9:.1f}, OpenBLAS {rates['scipy'] / 1e9:.1f} GFLOP/s")
            dtype = getattr(torch, dtype_name)
            for case in args.cases.split(","):
                shape = CASES[case][0]
                for cell in args.cells.split(","):
                    steps = step_functions(torch, cell, shape, dtype)
                    sides = {side: steps[side] for side in ("fastbptt", "torch")}
                    times = time_interleaved(sides, repeat=3, min_rounds=args.rounds,
                                             max_rounds=args.rounds)
                    t_fast, t_torch = times["fastbptt"].min(), times["torch"].min()
                    flops = operations(cell, shape)
                    needed = flops / (t_torch / args.target)
                    print(f"  {cell} {case} {shape}: {flops / 1e6:.0f} MFLOP | fastbptt.torch "
                          f"{t_fast * 1e3:.2f} ms ({flops / t_fast / 1e9:.1f} GFLOP/s) | "
                          f"torch.nn {t_torch * 1e3:.2f} ms ({flops / t_torch / 1e9:.1f}) | "
                          f"{t_torch / t_fast:.2f}x | {args.target}x needs "
                          f"{needed / 1e9:.1f} GFLOP/s = {needed / ceiling:.2f} of the GEMM's")


if __name__ == "__main__":
    main()
