"""``fastbptt bench``: the kernels against the NumPy reference, timed side by side in one run.

Each case runs forward plus full backward through time on random data; the reference, the
kernels, the BLAS floor (the kernels' matrix products alone, ``src/_floor.pyx``) and, where it
is installed, PyTorch (``nn.RNN``/``nn.LSTM``/``nn.GRU`` holding the same weights, one thread,
autograd with the same upstream gradient) are timed alternately, round after round (a short
burst of runs each, see ``time_side_by_side``), and the medians compared, so a busy machine
slows all alike. Each runs on one thread: the kernels and the
floor set SciPy's BLAS so themselves, NumPy's BLAS (the reference's) is set to one thread for the
timing, and PyTorch to one intra-op thread. The cases (N, T, D, H) are the project's
standard ones; ``benchmarks/`` uses the same cases and the same callables.

PyTorch is optional: this module imports it only inside ``torch_function`` and
``import_torch``, and ``fastbptt bench`` leaves its columns out where it cannot be imported.
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


def floor_function(cell, shape, dtype, backward=True, time_major=False):
    """A no-argument callable making exactly the kernels' BLAS calls, with no elementwise work,
    on buffers in the layout of ``make_case`` (batch-major, or time-major if ``time_major``)."""
    from .. import _floor
    from .._blas_threads import largest_product, run_kernel
    n_batch, n_steps, n_input, n_hidden = shape
    gh = N_GATES[cell] * n_hidden
    gru = cell == "gru"
    rng = np.random.default_rng(0)

    def steps(width):
        return np.zeros((n_steps, n_batch, width) if time_major else (n_batch, n_steps, width),
                        dtype)

    x = steps(n_input)
    x[...] = rng.standard_normal(x.shape)
    Wx = rng.standard_normal((n_input, gh)).astype(dtype)
    Wh = (rng.standard_normal((n_hidden, gh)) / np.sqrt(gh)).astype(dtype)
    # the kernels' gate buffer and dA (the GRU's hidden-side part, its dxn beside); the values
    # mean nothing
    A = steps(gh)
    dA = steps(gh) if gru else A
    dxn = steps(n_hidden) if gru else np.zeros((0, 0, 0), dtype)
    h = steps(n_hidden)
    h0 = np.zeros((n_batch, n_hidden), dtype)
    carry = np.zeros((n_batch, n_hidden), dtype)
    hh = np.zeros((n_batch, gh) if gru else (0, 0), dtype)
    dx = np.zeros_like(x)
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)
    xt = x if time_major else x.swapaxes(0, 1)      # largest_product takes (T, N, D)

    def run():
        run_kernel(_floor.floor, largest_product(xt, Wh),
                   x, Wx, Wh, A, dA, dxn, h, h0, carry, hh, dx, dWx, dWh, backward, gru,
                   time_major)
    return run


def import_torch():
    """The torch module, set to one intra-op thread as the kernels' BLAS; None if not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def torch_function(cell, args, kwargs, dh, backward=True, check=True):
    """A no-argument callable running PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with the
    weights of ``args`` (through ``fastbptt.compat.torch``) on the same input.

    Forward alone runs under ``torch.no_grad()``. Forward plus backward asks autograd for the
    gradients fastbptt's backward returns (``dx``, the weights and biases, and ``dh0`` where an
    initial state is given) with ``dh`` as the upstream gradient, so neither side computes
    more than the other. With ``check``, one forward is compared with the kernels' first, so
    that a timing never compares different computations (AssertionError if they differ).
    Needs torch; call ``import_torch`` first to set its thread count.
    """
    import torch
    from ..compat.torch import to_state_dict

    x, h0, Wx, Wh, b = args
    time_major = kwargs.get("time_major", False)
    n_input, n_hidden = Wx.shape[0], Wh.shape[0]
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[x.dtype]
    extra = {"nonlinearity": kwargs.get("nonlinearity", "tanh")} if cell == "rnn" else {}
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = cls(n_input, n_hidden, batch_first=not time_major, dtype=dtype, **extra)
    state_dict = to_state_dict(cell, Wx, Wh, b, kwargs.get("bh") if cell == "gru" else None)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})

    def tensor(a, grad=False):
        return torch.tensor(np.asarray(a), dtype=dtype, requires_grad=grad)

    xt = tensor(x, grad=backward)
    state = []
    if h0 is not None:
        state.append(tensor(np.asarray(h0)[None], grad=backward))
    if cell == "lstm" and (h0 is not None or kwargs.get("c0") is not None):
        if h0 is None:
            state.append(torch.zeros(1, x.shape[1 if time_major else 0], n_hidden, dtype=dtype,
                                     requires_grad=backward))
        c0 = kwargs.get("c0")
        state.append(tensor(np.asarray(c0)[None], grad=backward) if c0 is not None else
                     torch.zeros_like(state[0]))
    hx = None if not state else (tuple(state) if cell == "lstm" else state[0])
    if check:
        import fastbptt
        expected, _ = getattr(fastbptt, f"{cell}_forward")(*args, **kwargs)
        with torch.no_grad():
            got = module(xt, hx)[0].numpy()
        err = float(np.abs(got - expected).max(initial=0))
        scale = max(1.0, float(np.abs(expected).max(initial=0)))
        tol = 1e-4 if x.dtype == np.float32 else 1e-10
        assert err <= tol * scale, (f"PyTorch's {cell} differs from fastbptt's: max error "
                                    f"{err:.3g}; the timings would compare different work")
    if not backward:
        def run_forward():
            with torch.no_grad():
                module(xt, hx)
        return run_forward

    inputs = [xt, *state, *module.parameters()]
    inputs = [t for t in inputs if t.requires_grad]
    dht = tensor(dh)

    def run():
        out, _ = module(xt, hx)
        torch.autograd.grad(out, inputs, dht)
    return run


def time_side_by_side(functions, min_rounds=5, max_rounds=200, budget=2.0, burst=3):
    """Median seconds of each callable, timed alternately round after round.

    In each round every callable runs ``burst`` times in a row, each run timed: alternating
    rounds keep a busy machine's slow spells fair to all, and the bursts let each run as it does
    in a loop of its own (a training loop calls the same kernel over and over). Measured here:
    run right after the NumPy reference, which leaves the caches full of its own data, the RNN
    case S kernel took 2.6 ms against 2.0 ms in a loop of its own; the BLAS floor, which reuses
    its buffers, lost less.
    """
    times = [[] for _ in functions]
    for fn in functions:  # warm up
        fn()
    start = time.perf_counter()
    for rounds in range(1, max_rounds + 1):
        for fn, ts in zip(functions, times):
            for _ in range(burst):
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
    parser.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out even where it is installed")


def run(args):
    import fastbptt
    import fastbptt.reference
    from .._blas_threads import numpy_blas_threads

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
    torch = None if args.no_torch else import_torch()
    print(f"fastbptt {fastbptt.__version__} bench: forward + full backward, {dtype}, "
          f"median of alternating runs, {args.budget:g} s a case, one thread each")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"Python {platform.python_version()}, NumPy {np.__version__}"
          + (f", PyTorch {torch.__version__} (1 thread)" if torch is not None else ""))
    if missing:
        print(f"(cells not in this build: {', '.join(missing)})")
    if torch is None:
        print("(PyTorch " + ("left out" if args.no_torch else "not installed") +
              ": no PyTorch column)")
    rows = []
    for cell in cells:
        for case in cases:
            shape, _ = CASES[case]
            label = "N={} T={} D={} H={}".format(*shape)
            print(f"  timing {cell} {case} ({label}) ...", end="", flush=True)
            problem = make_case(cell, shape, dtype)
            functions = [step_function(fastbptt.reference, cell, *problem),
                         step_function(fastbptt, cell, *problem),
                         floor_function(cell, shape, dtype)]
            if torch is not None:
                functions.append(torch_function(cell, *problem))
            with numpy_blas_threads(1):   # the reference on one thread, as all the others
                times = time_side_by_side(functions, budget=args.budget)
            print(f" {times[1] * 1e3:.3g} ms")
            rows.append((cell, case, label, *times))
    print()
    header = ("| cell | case | shape | reference ms | fastbptt ms | speed-up | BLAS floor ms "
              "| fastbptt / floor |")
    rule = "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
    if torch is not None:
        header += " PyTorch ms | fastbptt vs PyTorch |"
        rule += " ---: | ---: |"
    print(header)
    print(rule)
    for cell, case, label, t_ref, t_kernel, t_floor, *t_torch in rows:
        line = (f"| {cell} | {case} | {label} | {t_ref * 1e3:.2f} | {t_kernel * 1e3:.3f} | "
                f"{t_ref / t_kernel:.1f}x | {t_floor * 1e3:.3f} | {t_kernel / t_floor:.2f} |")
        if t_torch:
            line += f" {t_torch[0] * 1e3:.3f} | {t_torch[0] / t_kernel:.1f}x |"
        print(line)
    return 0
