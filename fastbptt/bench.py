"""``fastbptt bench``: the kernels against the NumPy reference, timed side by side in one run.

Each case runs forward plus full backward through time on random data; the reference, the
kernels and the BLAS floor (the kernels' matrix products alone, ``src/_floor.pyx``) are timed
alternately, round after round, and the medians compared, so a busy machine slows all alike. The cases (N, T, D, H) are the project's standard ones; ``benchmarks/`` uses
the same.
"""
import platform
import sys
import time

import numpy as np

CASES = {  # name: (N, T, D, H) and what it stands for
    "S": ((1, 1000, 32, 64), "one long stream, small hidden size"),
    "C": ((1, 25, 65, 100), "min-char-rnn: one stream, 25 steps, 65 characters"),
    "M": ((32, 100, 64, 128), "a mini-batch"),
    "L": ((64, 100, 256, 512), "a large layer"),
}
CELLS = ("rnn", "lstm", "gru")
N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def make_case(cell, shape, dtype, seed=0):
    """Random inputs (args, kwargs) for ``<cell>_forward`` and an upstream gradient dh."""
    n_batch, n_steps, n_input, n_hidden = shape
    rng = np.random.default_rng(seed)
    gh = N_GATES[cell] * n_hidden
    scale = 1 / np.sqrt(n_hidden)
    x = rng.standard_normal((n_batch, n_steps, n_input)).astype(dtype)
    Wx = rng.uniform(-scale, scale, (n_input, gh)).astype(dtype)
    Wh = rng.uniform(-scale, scale, (n_hidden, gh)).astype(dtype)
    b = rng.uniform(-scale, scale, gh).astype(dtype)
    dh = rng.standard_normal((n_batch, n_steps, n_hidden)).astype(dtype)
    return (x, None, Wx, Wh, b), {}, dh


def step_function(module, cell, args, kwargs, dh, backward=True):
    """A no-argument callable running forward (and backward) once."""
    forward = getattr(module, f"{cell}_forward")
    backward_fn = getattr(module, f"{cell}_backward")
    if not backward:
        return lambda: forward(*args, **kwargs)

    def run():
        _, cache = forward(*args, **kwargs)
        backward_fn(dh, cache)
    return run


def floor_function(cell, shape, dtype, backward=True):
    """A no-argument callable making exactly the kernels' BLAS calls, with no elementwise work."""
    from . import _floor
    from ._blas_threads import kernel_threads
    n_batch, n_steps, n_input, n_hidden = shape
    gh = N_GATES[cell] * n_hidden
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_steps, n_batch, n_input)).astype(dtype)
    Wx = rng.standard_normal((n_input, gh)).astype(dtype)
    Wh = rng.standard_normal((n_hidden, gh)).astype(dtype) / np.sqrt(gh)
    A = np.zeros((n_steps, n_batch, gh), dtype)
    h = np.zeros((n_steps, n_batch, n_hidden), dtype)
    carry = np.zeros((n_batch, n_hidden), dtype)
    dx = np.zeros_like(x)
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)

    def run():
        with kernel_threads():
            _floor.floor(x, Wx, Wh, A, h, carry, dx, dWx, dWh, backward)
    return run


def time_side_by_side(functions, min_rounds=5, max_rounds=200, budget=2.0):
    """Median seconds of each callable, timed alternately round after round."""
    times = [[] for _ in functions]
    for fn in functions:  # warm up
        fn()
    start = time.perf_counter()
    for rounds in range(1, max_rounds + 1):
        for fn, ts in zip(functions, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        if rounds >= min_rounds and time.perf_counter() - start > budget:
            break
    return [float(np.median(ts)) for ts in times]


def available_cells():
    import fastbptt
    return [cell for cell in CELLS if hasattr(fastbptt, f"{cell}_forward")]


def add_arguments(parser):
    parser.add_argument("--cells", default=",".join(CELLS),
                        help="comma-separated cells among rnn,lstm,gru (default: all)")
    parser.add_argument("--cases", default="S,M",
                        help="comma-separated cases among " + ",".join(CASES) + " (default: S,M)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds of timing per case (default: 2)")


def run(args):
    import fastbptt
    import fastbptt.reference

    cells = [c for c in args.cells.split(",") if c]
    cases = [c for c in args.cases.split(",") if c]
    for cell in cells:
        if cell not in CELLS:
            print(f"fastbptt bench: unknown cell {cell!r}; choose among {', '.join(CELLS)}",
                  file=sys.stderr)
            return 2
    for case in cases:
        if case not in CASES:
            print(f"fastbptt bench: unknown case {case!r}; choose among {', '.join(CASES)}",
                  file=sys.stderr)
            return 2
    if args.budget <= 0:
        print("fastbptt bench: --budget must be positive", file=sys.stderr)
        return 2
    missing = [c for c in cells if c not in available_cells()]
    cells = [c for c in cells if c not in missing]
    dtype = np.dtype(args.dtype)
    print(f"fastbptt {fastbptt.__version__} bench: forward + full backward, {dtype}, "
          f"median of alternating runs, {args.budget:g} s a case")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    if missing:
        print(f"(cells not in this build: {', '.join(missing)})")
    rows = []
    for cell in cells:
        for case in cases:
            shape, _ = CASES[case]
            label = "N={} T={} D={} H={}".format(*shape)
            print(f"  timing {cell} {case} ({label}) ...", end="", flush=True)
            problem = make_case(cell, shape, dtype)
            t_ref, t_kernel, t_floor = time_side_by_side(
                [step_function(fastbptt.reference, cell, *problem),
                 step_function(fastbptt, cell, *problem),
                 floor_function(cell, shape, dtype)], budget=args.budget)
            print(f" {t_kernel * 1e3:.3g} ms")
            rows.append((cell, case, label, t_ref, t_kernel, t_floor))
    print()
    print("| cell | case | shape | reference ms | fastbptt ms | speed-up | BLAS floor ms "
          "| fastbptt / floor |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for cell, case, label, t_ref, t_kernel, t_floor in rows:
        print(f"| {cell} | {case} | {label} | {t_ref * 1e3:.2f} | {t_kernel * 1e3:.3f} | "
              f"{t_ref / t_kernel:.1f}x | {t_floor * 1e3:.3f} | {t_kernel / t_floor:.2f} |")
    return 0
