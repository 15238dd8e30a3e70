"""What the benchmarks time: the standard cases, the problems built from them, the callables
timed (an implementation's cells, the BLAS floor, PyTorch) and the one timing loop.

``fastbptt bench`` and the suites and scripts of ``benchmarks/`` all build their problems and
callables here, so that every table times the same work. NumPy and the library only: PyTorch is
imported inside ``import_torch`` and ``torch_function`` alone, and the BLAS floor
(``src/_floor.pyx``) loads on its first call, as the kernels do.

A cell is named as in the registries (``fastbptt.CELLS``): 'rnn', 'lstm', 'gru'; its record says
how many gate blocks its weights have and which functions run it. Jordan's network, whose shapes
have an output size O as well, has its own problems and floor (``make_jordan_case``,
``jordan_function``, ``jordan_floor_function``).
"""
import time

import numpy as np

from . import CELLS, truncation
from ._blas_threads import run_kernel
from ._kernels import Kernels
from .compat.torch import to_state_dict
from .tbptt import TBPTT

_floor = Kernels("_floor")

CASES = {  # name: (N, T, D, H) and what it stands for
    "S": ((1, 1000, 32, 64), "one long stream, small hidden size"),
    "C": ((1, 25, 65, 100), "min-char-rnn: one stream, 25 steps, 65 characters"),
    "M": ((32, 100, 64, 128), "a mini-batch"),
    "L": ((64, 100, 256, 512), "a large layer"),
}

TRUNCATION_CASES = {  # name: (N, T, D, H) and the truncation lengths k timed on it
    "S": ((1, 1000, 32, 64), (25, 100, 250)),     # one long stream, small hidden size
    "M": ((32, 100, 64, 128), (10, 25, 50)),      # a mini-batch
}


def make_case(cell, shape, dtype, seed=0):
    """Random inputs ``(args, kwargs)`` of the cell's forward, and an upstream gradient dh.

    ``shape`` is (N, T, D, H); ``args`` is ``(x, None, Wx, Wh, b)``, batch-major, and ``kwargs``
    is empty: the initial state is zeros and every option has its default."""
    n_batch, n_steps, n_input, n_hidden = shape
    rng = np.random.default_rng(seed)
    gh = CELLS[cell].n_gates * n_hidden
    scale = 1 / np.sqrt(n_hidden)
    x = rng.standard_normal((n_batch, n_steps, n_input)).astype(dtype)
    Wx = rng.uniform(-scale, scale, (n_input, gh)).astype(dtype)
    Wh = rng.uniform(-scale, scale, (n_hidden, gh)).astype(dtype)
    b = rng.uniform(-scale, scale, gh).astype(dtype)
    dh = rng.standard_normal((n_batch, n_steps, n_hidden)).astype(dtype)
    return (x, None, Wx, Wh, b), {}, dh


def step_function(impl, cell, args, kwargs, dh, backward=True):
    """A no-argument callable running the cell ``impl.CELLS[cell]`` forward (and backward) once
    on a problem of ``make_case``; ``impl`` is ``fastbptt`` or ``fastbptt.reference``."""
    record = impl.CELLS[cell]
    forward, backward_fn = record.forward, record.backward
    if not backward:
        return lambda: forward(*args, **kwargs)

    def run():
        _, cache = forward(*args, **kwargs)
        backward_fn(dh, cache)
    return run


def reusing_function(cell, args, kwargs, dh):
    """Like ``step_function(fastbptt, ...)``, each forward refilling the cache of the call before
    and each backward writing into its result (``out=``): no new memory per call, as the floor
    and a loop over the chunks of a stream."""
    record = CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    grads = record.backward(dh, cache)

    def run():
        record.forward(*args, out=cache, **kwargs)
        record.backward(dh, cache, out=grads)
    return run


def truncated_backward_function(cell, shape, k=None, dtype=np.float64):
    """A no-argument callable running the cell's backward once on a problem of ``make_case``,
    through all T steps (``k`` None) or with ``truncation.chunked(T, k)``; the forward pass
    runs once, here."""
    args, kwargs, dh = make_case(cell, shape, dtype)
    record = CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    xi = None if k is None else truncation.chunked(shape[1], k)
    return lambda: record.backward(dh, cache, xi=xi)


def stream_function(cell, shape, k=None, dtype=np.float64):
    """A no-argument callable taking a problem of ``make_case`` as one stream, its dh as the
    loss gradients: one full-BPTT call (forward, then backward over all T steps) with ``k``
    None, else the ``TBPTT(k, k)`` driver over the same steps (T / k windows, state carried)."""
    args, kwargs, dh = make_case(cell, shape, dtype)
    record = CELLS[cell]

    def loss_grad(h, t0):   # the upstream gradient, as an output layer would hand it back
        return 0.0, dh[:, t0:t0 + h.shape[1]]

    if k is None:
        def run():
            h, cache = record.forward(*args, **kwargs)
            return record.backward(loss_grad(h, 0)[1], cache)
        return run
    driver = TBPTT(k, cell=cell)
    return lambda: driver.run(*args, loss_grad, **kwargs)


def floor_function(cell, shape, dtype, backward=True, time_major=False):
    """A no-argument callable making exactly the kernels' BLAS calls, with no elementwise work,
    on buffers in the layout of ``make_case`` (batch-major, or time-major if ``time_major``)."""
    n_batch, n_steps, n_input, n_hidden = shape
    record = CELLS[cell]
    gh = record.n_gates * n_hidden
    # a hidden bias inside the gates (the GRU's r * (h Wh_n + bh_n)) keeps the hidden-side
    # products apart from the input-side ones, in the kernel and so in its floor
    apart = "bh" in record.extra_weights
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
    dA = steps(gh) if apart else A
    dxn = steps(n_hidden) if apart else np.zeros((0, 0, 0), dtype)
    h = steps(n_hidden)
    h0 = np.zeros((n_batch, n_hidden), dtype)
    carry = np.zeros((n_batch, n_hidden), dtype)
    hh = np.zeros((n_batch, gh) if apart else (0, 0), dtype)
    dx = np.zeros_like(x)
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)
    xt = x if time_major else x.swapaxes(0, 1)      # run_kernel takes (T, N, D)

    def run():
        run_kernel(_floor.floor, xt, Wh,
                   x, Wx, Wh, A, dA, dxn, h, h0, carry, hh, dx, dWx, dWh, backward, apart,
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
    gradients fastbptt's backward returns (``dx``, the weights and biases, and the initial
    states where they are given) with ``dh`` as the upstream gradient, so neither side computes
    more than the other. With ``check``, one forward is compared with the kernels' first, so
    that a timing never compares different computations (AssertionError if they differ).
    Needs torch; call ``import_torch`` first to set its thread count.
    """
    import torch

    record = CELLS[cell]
    x, h0, Wx, Wh, b = args
    time_major = kwargs.get("time_major", False)
    n_batch = x.shape[1 if time_major else 0]
    n_input, n_hidden = Wx.shape[0], Wh.shape[0]
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[x.dtype]
    options = {name: kwargs.get(name, choices[0]) for name, choices in record.options.items()}
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = cls(n_input, n_hidden, batch_first=not time_major, dtype=dtype, **options)
    extra_weights = {name: kwargs.get(name) for name in record.extra_weights}
    state_dict = to_state_dict(cell, Wx, Wh, b, **extra_weights)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})

    def tensor(a, grad=False):
        return torch.tensor(np.asarray(a), dtype=dtype, requires_grad=grad)

    xt = tensor(x, grad=backward)
    # torch takes all of a cell's initial states or none: zeros stand in for those not given
    given = [h0] + [kwargs.get(name) for name in record.extra_states]
    state = []
    if any(s is not None for s in given):
        state = [tensor(np.asarray(s)[None], grad=backward) if s is not None else
                 torch.zeros(1, n_batch, n_hidden, dtype=dtype, requires_grad=backward)
                 for s in given]
    hx = None if not state else (tuple(state) if len(state) > 1 else state[0])
    if check:
        expected, _ = record.forward(*args, **kwargs)
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


def time_interleaved(functions, *, number=1, repeat=1, min_rounds=5, max_rounds=200,
                     budget=None, clock=time.perf_counter):
    """Seconds per call of each no-argument callable, timed in turns, round after round.

    ``functions`` is a dict {name: callable}; each runs once first, untimed (first-call
    allocations). In a round each callable takes its turn, the order reversed every other round,
    and in its turn is timed ``repeat`` times, each time over ``number`` calls in a row. Taking
    turns keeps a busy machine's slow spells fair to all; the repeats let each run as it does in
    a loop of its own (a training loop calls the same kernel over and over), rather than right
    after another callable that left the caches full of its own data. Rounds go on until
    ``min_rounds`` are done and ``budget`` seconds have passed (None: no more than
    ``min_rounds``), ``max_rounds`` at most.

    ``clock`` reads the time (``time.thread_time``: the CPU time of the calling thread,
    where the callables run all their work on it).

    Returns {name: array of ``rounds * repeat`` seconds per call}: take the median, or the
    minimum (on a shared machine, whose other load only ever adds time, the steadier).
    """
    names = list(functions)
    times = {name: [] for name in names}
    for fn in functions.values():
        fn()
    start = time.perf_counter()
    for rounds in range(1, max_rounds + 1):
        for name in (names if rounds % 2 else names[::-1]):
            fn = functions[name]
            for _ in range(repeat):
                t0 = clock()
                for _ in range(number):
                    fn()
                times[name].append((clock() - t0) / number)
        if rounds >= min_rounds and (budget is None or time.perf_counter() - start > budget):
            break
    return {name: np.array(ts) for name, ts in times.items()}


def jordan_shape(shape):
    """The (N, T, D, H, O) of Jordan's network on a case (N, T, D, H) of ``CASES``: O = D, the
    outputs predicting the next input (case S: N = 1, T = 1000, D = 32, H = 64, O = 32)."""
    return tuple(shape) + (shape[2],)


def make_jordan_case(shape, dtype, seed=0, time_major=False):
    """Random inputs ``args`` of ``jordan_forward`` ``(x, None, Wx, Wy, b, Wo, bo)`` and an
    upstream gradient dy, for ``shape`` (N, T, D, H, O); the options are the defaults."""
    n_batch, n_steps, n_input, n_hidden, n_output = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_steps, n_batch, n_input) if time_major
                            else (n_batch, n_steps, n_input)).astype(dtype)
    weights = [rng.uniform(-1, 1, s) / np.sqrt(s[0]) for s in
               ((n_input, n_hidden), (n_output, n_hidden), (n_hidden,), (n_hidden, n_output),
                (n_output,))]
    dy = rng.standard_normal(x.shape[:2] + (n_output,)).astype(dtype)
    return (x, None, *(w.astype(dtype) for w in weights)), dy


def jordan_function(impl, args, dy, backward=True, time_major=False):
    """A no-argument callable running ``impl.jordan_forward`` (and backward) once."""
    forward, backward_fn = impl.CELLS["jordan"].forward, impl.CELLS["jordan"].backward
    if not backward:
        return lambda: forward(*args, time_major=time_major)

    def run():
        _, cache = forward(*args, time_major=time_major)
        backward_fn(dy, cache)
    return run


def jordan_floor_function(shape, dtype, backward=True, time_major=False):
    """A no-argument callable making exactly the BLAS calls of the Jordan kernels
    (``_floor.jordan_floor``), with no elementwise work."""
    n_batch, n_steps, n_input, n_hidden, n_output = shape
    (x, _, Wx, Wy, _, Wo, _), _ = make_jordan_case(shape, dtype, time_major=time_major)

    def steps(width):
        return np.zeros((n_steps, n_batch, width) if time_major else (n_batch, n_steps, width),
                        dtype)

    h, y, dAh, dAo = steps(n_hidden), steps(n_output), steps(n_hidden), steps(n_output)
    y0, carry = np.zeros((n_batch, n_output), dtype), np.zeros((n_batch, n_output), dtype)
    dx = np.zeros_like(x)
    dWx, dWy, dWo = np.zeros_like(Wx), np.zeros_like(Wy), np.zeros_like(Wo)
    xt = x if time_major else x.swapaxes(0, 1)      # run_kernel takes (T, N, D)

    def run():
        run_kernel(_floor.jordan_floor, xt, Wx, x, y0, Wx, Wy, Wo, h, y, dAh, dAo, carry, dx,
                   dWx, dWy, dWo, backward, time_major, sharded=False)
    return run
