"""Where a call of a fastbptt.torch module goes, on one layer at case C (or another case).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_call_parts.py \
        [--cells rnn,lstm,gru] [--dtypes float32,float64] [--case C] [--rounds 11]
        [--before PATH/fastbptt/torch.py]

Each row times, per forward + backward (``output, h_n = m(x)``, ``output.backward(dh)``, the
input and the parameters requiring gradients, batch-first, one thread), in microseconds of the
calling thread's CPU time (``time.thread_time_ns``: less disturbed than the wall clock on a
shared machine), the minimum over interleaved rounds:

- torch.nn: ``torch.nn.<Cell>`` with the same state dict;
- module: ``fastbptt.torch.<Cell>`` (and ``before``: the module of another ``torch.py``);
- Function: the module's ``torch.autograd.Function`` applied directly, without the module's
  own call (``nn.Module.__call__``, its checks, the parameter look-ups);
- empty Function: a ``torch.autograd.Function`` with the same inputs and outputs that computes
  nothing (new empty tensors, the gradients in their parameters' strides, as autograd takes
  them without a copy): what autograd costs per layer, forward and engine;
- kernels: ``fastbptt.<cell>_forward`` and ``<cell>_backward(overwrite_cache=True)`` on NumPy
  arrays laid out beforehand (their checks included);
- layout: the weights' transposed copies and bias sum forward, the gradients' backward: what a
  module whose weights are in torch's layout (the default) makes on each call (with
  ``weight_layout='fastbptt'`` only the bias sum).

The module's own cost beyond these is the difference: module - (empty Function + kernels).
"""
import argparse
import time

import numpy as np

from fastbptt import CELLS
from fastbptt.benchmarking import CASES


def interleaved(functions, calls, rounds):
    """Minimum thread-time microseconds per call of each function, taking turns round by round
    (the order reversed every other round), after a warm-up."""
    best = {name: float("inf") for name in functions}
    for function in functions.values():
        for _ in range(max(10, calls // 4)):
            function()
    items = list(functions.items())
    for r in range(rounds):
        for name, function in (items if r % 2 == 0 else items[::-1]):
            start = time.thread_time_ns()
            for _ in range(calls):
                function()
            best[name] = min(best[name], (time.thread_time_ns() - start) / calls / 1e3)
    return best


def parts(torch, ft, cell, dtype, shape, before=None):
    """{name: callable} of the row's parts (see the module docstring)."""
    n_batch, n_steps, n_input, n_hidden = shape
    name = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    torch.manual_seed(0)
    module = getattr(ft, name)(n_input, n_hidden, batch_first=True, dtype=dtype)
    modules = {"torch.nn": getattr(torch.nn, name)(n_input, n_hidden, batch_first=True,
                                                   dtype=dtype)}
    if before is not None:
        modules["before"] = getattr(before, name)(n_input, n_hidden, batch_first=True,
                                                  dtype=dtype)
    modules["module"] = module
    for other in modules.values():
        other.load_state_dict(module.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n_batch, n_steps, n_input, generator=gen, dtype=dtype, requires_grad=True)
    dh = torch.randn(n_batch, n_steps, n_hidden, generator=gen, dtype=dtype)
    weights = list(module.parameters())
    leaves = [x, *weights]

    def step_of(m):
        params = [x, *m.parameters()]

        def step():
            for p in params:
                p.grad = None
            m(x)[0].backward(dh)
        return step

    out = {key: step_of(m) for key, m in modules.items()}
    specs = module._fastbptt_layers[False][0][0]     # the layer's one direction
    no_states = [None] * specs[0].n_states

    def function():
        for p in leaves:
            p.grad = None
        ft._Recurrence.apply(specs, x, *no_states, *weights)[0].backward(dh)

    class Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *tensors):
            ctx.set_materialize_grads(False)
            return (x.new_empty((n_batch, n_steps, n_hidden)),
                    *[x.new_empty((1, n_batch, n_hidden)) for _ in no_states])

        @staticmethod
        def backward(ctx, *grads):
            return (torch.empty(x.shape, dtype=dtype),
                    *[torch.empty_like(w) for w in weights])

    def empty():
        for p in leaves:
            p.grad = None
        Empty.apply(x, *weights)[0].backward(dh)

    record = CELLS[cell]
    xa, dha = x.detach().numpy(), dh.numpy()
    # torch's layout (the module keeps its weights in fastbptt's): what ``layout`` copies
    w_ih, w_hh, b_ih, b_hh = (w.detach().contiguous().numpy() for w in weights)
    Wx, Wh = np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T)
    bias_apart = "bh" in record.extra_weights
    b = b_ih if bias_apart else b_ih + b_hh
    extra = {"bh": b_hh} if bias_apart else {}

    def kernels():
        cache = record.forward(xa, None, Wx, Wh, b, **extra)[1]
        record.backward(dha, cache, overwrite_cache=True)

    def layout():
        np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T)
        if not bias_apart:
            b_ih + b_hh
        np.ascontiguousarray(Wx.T), np.ascontiguousarray(Wh.T)   # as the gradients' are

    out.update({"Function": function, "empty Function": empty, "kernels": kernels,
                "layout": layout})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--case", default="C")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--before", default=None)
    args = parser.parse_args(argv)
    import torch
    from torch_modules import load_before

    import fastbptt.torch as ft

    torch.set_num_threads(1)
    before = None if args.before is None else load_before(args.before)
    shape = CASES[args.case][0]
    calls = max(2, int(8000 / (shape[0] * shape[1])))
    print(f"case {args.case} (N, T, D, H) = {shape}: thread-time us per forward + backward, "
          f"min over {args.rounds} interleaved rounds of {calls} calls")
    for cell in args.cells.split(","):
        for dtype in args.dtypes.split(","):
            t = interleaved(parts(torch, ft, cell, getattr(torch, dtype), shape, before),
                            calls, args.rounds)
            rest = t["module"] - t["empty Function"] - t["kernels"]
            print(f"  {cell:4} {dtype}: " + " | ".join(f"{k} {v:.0f}" for k, v in t.items())
                  + f" | module's own {rest:.0f}", flush=True)


if __name__ == "__main__":
    main()
