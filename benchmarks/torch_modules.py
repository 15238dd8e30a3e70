"""fastbptt.torch's modules against torch.nn's, forward + backward, and a whole training step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_modules.py \
        [--cells rnn,lstm,gru] [--cases S,C,M] [--dtypes float32,float64] [--threads 1,2] \
        [--rounds 8] [--blas-threads 1] [--train-cells lstm,gru] [--train-shapes 32x64x128,4x32x64]
        [--no-modules] [--no-train] [--before PATH/fastbptt/torch.py] [--bidirectional]
        [--kernel-threads same]

Modules: ``fastbptt.torch.<Cell>`` and ``torch.nn.<Cell>`` with the same state dict, batch-first
input of the benchmark case (``fastbptt.benchmarking.CASES``: S, C at N = 1, M at N = 32),
``output, h_n = m(x)`` then ``output.backward(dh)`` with the input and every parameter
requiring its gradient (as a layer after an embedding or another layer), the parameters'
gradients reset to None each call as ``optimizer.zero_grad()`` does. At each thread count n,
``torch.set_num_threads(n)``: what a PyTorch user sets. fastbptt's kernels keep their own
default, BLAS on one thread per call, unless ``--blas-threads`` says otherwise (a number, or
``same`` for n): on a busy machine BLAS's worker threads wait for a core (see "Notes behind the
code" in RESULTS.md).

Training: a character-level language model (an embedding of 65 symbols into 32, the recurrent
module, a linear head; cross-entropy, Adam), the whole step timed: zero_grad, forward, loss,
backward, optimizer step; the same model with ``torch.nn.<Cell>`` and with
``fastbptt.torch.<Cell>`` from the same initial state. ``--train-shapes`` gives the batch
shapes as NxTxH: by default 32 sequences of 64 steps at H = 128, and 4 sequences of 32 steps at
H = 64 (the small batches of a recurrent policy or an online learner).

Each module row also times fastbptt's module with ``weight_layout='fastbptt'`` (its weights
kept in the kernels' layout: no copies per call).

``--before`` times the modules of another ``fastbptt/torch.py`` (an earlier commit's) as a
third side of each module row, on the same kernels: what the modules' own code changed.

``--bidirectional`` makes every module of the module rows bidirectional (one layer, output
2H wide). ``--kernel-threads same`` sets fastbptt's own thread count
(``fastbptt.set_num_threads``) to n as well at each thread count n (by default it stays at
fastbptt's default, the cores this process may run on): a bidirectional layer's two directions
run at once only where fastbptt may use two threads and the layer is large enough
(``fastbptt._directions``).

Both sides take turns round after round, the order alternating
(``fastbptt.benchmarking.time_interleaved``); the ratio divides the minima over the rounds.
Needs torch (``pip install torch==2.13.0``).
"""
import argparse

import fastbptt
from fastbptt.benchmarking import CASES, time_interleaved


def module_pair(torch, cell, n_input, n_hidden, dtype, ft=None, bidirectional=False,
                **options):
    """(fastbptt's module, torch.nn's) with the same state dict, batch-first; ``ft`` the module
    of fastbptt's classes (default ``fastbptt.torch``), ``options`` keywords of fastbptt's
    alone (``weight_layout``)."""
    if ft is None:
        import fastbptt.torch as ft

    classes = {"rnn": (ft.RNN, torch.nn.RNN), "lstm": (ft.LSTM, torch.nn.LSTM),
               "gru": (ft.GRU, torch.nn.GRU)}[cell]
    torch.manual_seed(0)
    fast = classes[0](n_input, n_hidden, batch_first=True, dtype=dtype,
                      bidirectional=bidirectional, **options)
    slow = classes[1](n_input, n_hidden, batch_first=True, dtype=dtype,
                      bidirectional=bidirectional)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def load_before(path):
    """The module of another ``fastbptt/torch.py`` (``--before``), loaded as a module of this
    fastbptt package, so that it runs the same kernels."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("fastbptt._torch_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def step_functions(torch, cell, shape, dtype, before=None, bidirectional=False):
    """{name: callable} running forward + backward once on each module: fastbptt's (its weights
    in torch's layout, the default), 'laid out' (``weight_layout='fastbptt'``) and torch.nn's;
    with ``before`` (a module loaded by ``load_before``) its module too, as 'before'."""
    n_batch, n_steps, n_input, n_hidden = shape
    fast, slow = module_pair(torch, cell, n_input, n_hidden, dtype, bidirectional=bidirectional)
    modules = {"fastbptt": fast, "torch": slow,
               "laid out": module_pair(torch, cell, n_input, n_hidden, dtype,
                                       bidirectional=bidirectional,
                                       weight_layout="fastbptt")[0]}
    if before is not None:
        modules["before"] = module_pair(torch, cell, n_input, n_hidden, dtype, before,
                                        bidirectional)[0]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n_batch, n_steps, n_input, generator=gen, dtype=dtype, requires_grad=True)
    n_out = 2 * n_hidden if bidirectional else n_hidden
    dh = torch.randn(n_batch, n_steps, n_out, generator=gen, dtype=dtype)
    with torch.no_grad():                  # the same computation on both sides
        got, want = fast(x)[0], slow(x)[0]
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert float((got - want).abs().max()) <= tol * max(1.0, float(want.abs().max())), cell

    def run(module):
        params = [x, *module.parameters()]

        def step():
            for p in params:
                p.grad = None
            output, _ = module(x)
            output.backward(dh)
        return step
    return {name: run(module) for name, module in modules.items()}


def training_functions(torch, cell, dtype, n_batch=32, n_steps=64, n_symbols=65, n_embed=32,
                       n_hidden=128):
    """{name: callable} running one training step of the language model on each module."""
    fast_rnn, slow_rnn = module_pair(torch, cell, n_embed, n_hidden, dtype)

    class LanguageModel(torch.nn.Module):
        def __init__(self, recurrent):
            super().__init__()
            self.embed = torch.nn.Embedding(n_symbols, n_embed, dtype=dtype)
            self.rnn = recurrent
            self.head = torch.nn.Linear(n_hidden, n_symbols, dtype=dtype)

        def forward(self, tokens):
            output, _ = self.rnn(self.embed(tokens))
            return self.head(output)

    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, n_symbols, (n_batch, n_steps + 1), generator=gen)
    functions = {}
    for name, recurrent in (("fastbptt", fast_rnn), ("torch", slow_rnn)):
        torch.manual_seed(3)
        model = LanguageModel(recurrent)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            logits = model(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_symbols),
                                                     tokens[:, 1:].reshape(-1))
            loss.backward()
            optimizer.step()
        functions[name] = step
    return functions


def timed(functions, rounds):
    """Minimum seconds per call of each function, interleaved round by round."""
    one = time_interleaved(functions, min_rounds=1)
    reps = max(1, min(20, int(0.05 / max(min(t.min() for t in one.values()), 1e-6))))
    times = time_interleaved(functions, repeat=reps, min_rounds=rounds, max_rounds=rounds)
    return {name: t.min() for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(   # the cells torch.nn has
        name for name, cell in fastbptt.CELLS.items() if not cell.output_feedback))
    parser.add_argument("--cases", default="S,C,M")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--blas-threads", default="1")
    parser.add_argument("--train-cells", default="lstm,gru")
    parser.add_argument("--train-shapes", default="32x64x128,4x32x64")
    parser.add_argument("--no-modules", action="store_true")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--before", default=None)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--kernel-threads", default=None, choices=["same"])
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("needs torch (pip install torch==2.13.0)") from None
    print(f"torch {torch.__version__}, fastbptt {fastbptt.__version__}; min over {args.rounds} "
          "interleaved rounds")
    before = None if args.before is None else load_before(args.before)
    for n_threads in (int(n) for n in args.threads.split(",")):
        torch.set_num_threads(n_threads)
        fastbptt.set_blas_threads(n_threads if args.blas_threads == "same"
                                  else int(args.blas_threads))
        if args.kernel_threads == "same":
            fastbptt.set_num_threads(n_threads)
        if not args.no_modules:
            kind = "bidirectional " if args.bidirectional else ""
            print(f"{kind}module forward + backward, {n_threads} thread(s), fastbptt's "
                  f"threads {fastbptt.get_num_threads()}:", flush=True)
            for cell in args.cells.split(","):
                for case in args.cases.split(","):
                    shape = CASES[case][0]
                    for dtype in args.dtypes.split(","):
                        t = timed(step_functions(torch, cell, shape, getattr(torch, dtype),
                                                 before, args.bidirectional), args.rounds)
                        fast, slow = t["fastbptt"] * 1e3, t["torch"] * 1e3
                        laid = t["laid out"] * 1e3
                        line = (f"  {cell:4} {case} {dtype}: fastbptt.torch {fast:8.3f} ms | "
                                f"torch.nn {slow:8.3f} ms | {slow / fast:.2f}x | "
                                f"weight_layout='fastbptt' {laid:8.3f} ms, {slow / laid:.2f}x")
                        if before is not None:
                            old = t["before"] * 1e3
                            line += (f" | before {old:8.3f} ms, {slow / old:.2f}x; after/before "
                                     f"{fast / old:.2f}")
                        print(line, flush=True)
        if not args.no_train:
            print(f"training step of a character-level language model (float32, Adam), "
                  f"{n_threads} thread(s):", flush=True)
            for train_shape in args.train_shapes.split(","):
                n_batch, n_steps, n_hidden = (int(n) for n in train_shape.split("x"))
                for cell in args.train_cells.split(","):
                    t = timed(training_functions(torch, cell, torch.float32, n_batch=n_batch,
                                                 n_steps=n_steps, n_hidden=n_hidden),
                              args.rounds)
                    fast, slow = t["fastbptt"] * 1e3, t["torch"] * 1e3
                    print(f"  {cell:4} N={n_batch} T={n_steps} H={n_hidden}: with fastbptt.torch "
                          f"{fast:8.2f} ms | with torch.nn {slow:8.2f} ms | {slow / fast:.2f}x",
                          flush=True)


if __name__ == "__main__":
    main()
