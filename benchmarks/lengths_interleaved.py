"""Sequences of unequal lengths: what the padding costs, and fastbptt against PyTorch's packed
sequences, forward + full backward, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/lengths_interleaved.py \
        [--cells rnn,lstm,gru] [--cases M,L] [--dtypes float32] [--rounds 10] [--no-torch]

A batch of case M or L whose lengths are drawn uniformly from [T/2, T] (seed 0), timed as

    lengths   fastbptt with ``lengths=``: the padded steps are not run
    mean      fastbptt without lengths on the first round(mean length) steps: the same number
              of real steps, as if every sequence had the mean length (what lengths= can at
              best cost)
    padded    fastbptt without lengths on all T steps (the padding computed, then ignored)
    reverse   fastbptt with ``lengths=`` and ``reverse=True`` (the reverse direction of a
              bidirectional layer)
    packed    PyTorch 2.13 on the same batch through ``pack_padded_sequence(...,
              enforce_sorted=False)`` (and ``pad_packed_sequence`` back), autograd for dx and
              the weights; one thread, as the kernels' BLAS

taking turns round after round (``fastbptt.benchmarking.time_interleaved``); the ratios divide
the minima over the rounds. ``--clock cpu`` times the CPU time of the calling thread
(``time.thread_time``; the kernels run BLAS on that thread) instead of the wall clock: on a
machine whose cores other processes share, waiting for a core then counts for nothing.
"""
import argparse
import time

import numpy as np

import fastbptt
from fastbptt.benchmarking import CASES, import_torch, make_case, time_interleaved
from fastbptt.compat.torch import to_state_dict


def draw_lengths(n_batch, n_steps, seed=0):
    """Lengths uniform on the integers of [T/2, T]."""
    return np.random.default_rng(seed).integers(n_steps // 2, n_steps + 1, n_batch)


def fastbptt_function(cell, args, dh, **forward_kw):
    record = fastbptt.CELLS[cell]

    def run():
        _, cache = record.forward(*args, **forward_kw)
        record.backward(dh, cache)
    return run


def torch_packed_function(torch, cell, args, dh, lengths):
    """PyTorch's packed path on the batch of ``args`` (batch-major), forward + backward, after
    checking its outputs against fastbptt's."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x, _, Wx, Wh, b = args
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[x.dtype]
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = cls(Wx.shape[0], Wh.shape[0], batch_first=True, dtype=dtype)
    state_dict = to_state_dict(cell, Wx, Wh, b, **({"bh": np.zeros_like(b)} if cell == "gru"
                                                    else {}))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    xt = torch.tensor(x, requires_grad=True)
    dht = torch.tensor(dh)
    lengths_t = torch.tensor(lengths)
    params = list(module.parameters())
    expected, _ = fastbptt.CELLS[cell].forward(*args, lengths=lengths)
    with torch.no_grad():
        out, _ = module(pack_padded_sequence(xt, lengths_t, batch_first=True,
                                             enforce_sorted=False))
        got = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0].numpy()
    tol = 1e-4 if x.dtype == np.float32 else 1e-10
    assert np.abs(got - expected).max() <= tol * max(1, np.abs(expected).max())

    def run():
        out, _ = module(pack_padded_sequence(xt, lengths_t, batch_first=True,
                                             enforce_sorted=False))
        out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
        torch.autograd.grad(out, [xt, *params], dht)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(fastbptt.CELLS))
    parser.add_argument("--cases", default="M,L")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch = None if args.no_torch else import_torch()
    fastbptt.set_blas_threads(1)
    print(f"min over interleaved rounds ({args.clock} clock), forward + full backward, one "
          "thread each")
    for cell in args.cells.split(","):
        for case in args.cases.split(","):
            n_batch, n_steps, n_input, n_hidden = CASES[case][0]
            for dtype in args.dtypes.split(","):
                problem, _, dh = make_case(cell, CASES[case][0], np.dtype(dtype))
                lengths = draw_lengths(n_batch, n_steps)
                n_mean = int(round(lengths.mean()))
                short = (problem[0][:, :n_mean].copy(),) + problem[1:]
                functions = {
                    "lengths": fastbptt_function(cell, problem, dh, lengths=lengths),
                    "mean": fastbptt_function(cell, short, dh[:, :n_mean].copy()),
                    "padded": fastbptt_function(cell, problem, dh),
                    "reverse": fastbptt_function(cell, problem, dh, lengths=lengths,
                                                 reverse=True)}
                if torch is not None:
                    functions["packed"] = torch_packed_function(torch, cell, problem, dh,
                                                                lengths)
                one = time_interleaved(functions, min_rounds=1, clock=clock)["padded"].min()
                reps = max(1, min(20, int(0.05 / one)))
                times = time_interleaved(functions, repeat=reps, min_rounds=args.rounds,
                                         max_rounds=args.rounds, clock=clock)
                best = {name: t.min() for name, t in times.items()}
                k = best["lengths"]
                line = (f"  {cell:4} {case} {dtype}: lengths {k * 1e3:7.2f} ms | mean "
                        f"{best['mean'] * 1e3:7.2f} ms (lengths / mean {k / best['mean']:.2f})"
                        f" | padded {best['padded'] * 1e3:7.2f} ms (padded / lengths "
                        f"{best['padded'] / k:.2f}x) | reverse {best['reverse'] * 1e3:7.2f} ms "
                        f"({best['reverse'] / k:.2f})")
                if "packed" in best:
                    line += (f" | PyTorch packed {best['packed'] * 1e3:7.2f} ms "
                             f"({best['packed'] / k:.2f}x)")
                print(line, flush=True)


if __name__ == "__main__":
    main()
