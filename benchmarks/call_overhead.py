"""The fixed cost of a call: forward and backward at T = 1, H = 1, N = 1 (D = 1), where the
kernels have next to nothing to compute, against the compiled kernel called alone on the same
arrays; and ``TBPTT(25, 25).run`` at N = 1 against one full-BPTT call over the same steps.

Per cell and dtype, the variants take turns round after round
(``fastbptt.benchmarking.time_interleaved``); the minimum over rounds is printed, in us per
call:

- ``forward``, ``backward``: the public call (``check_finite=True``, the default);
- ``forward out=``, ``backward out=``: the same writing into the arrays of an earlier cache
  and result, as a loop over the chunks of a stream does;
- ``forward unchecked``, ``backward unchecked``: the same with ``check_finite=False`` (where
  the package has that keyword);
- ``kernel``: the compiled kernel alone (``_<cell>.forward``/``backward``) on the arrays of a
  cache made once, what every call must pay; its share of the call is printed beside.

``--shape N,T,D,H`` times another shape (e.g. case C, ``1,25,65,100``); ``--tbptt T`` adds the
TBPTT(25, 25) ratio over a stream of T steps (case C's N, D, H).

``--compare DIR``: this package against the one of the folder DIR (e.g. a checkout of the main
branch, built in place), each timed in processes of its own (``PYTHONPATH``), the two taking
turns process after process (``--processes``, default 6 each), minimum of all its processes.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/call_overhead.py``.
"""
import argparse
import inspect
import json
import os
import subprocess
import sys

import numpy as np

DTYPES = ("float32", "float64")
CELLS = ("rnn", "lstm", "gru")    # timed where the package has them


def kernel_functions(fastbptt, cell, args, dh):
    """(forward kernel alone, backward kernel alone) on one cache of ``args``: the compiled
    calls the public functions make, with the arrays they would pass."""
    from fastbptt._buffers import kernel_buffers
    from fastbptt._kernels import Kernels

    record = fastbptt.CELLS[cell]
    module = Kernels("_" + cell)
    _, cache = record.forward(*args)
    buffers = kernel_buffers(module, cache)
    x = args[0]
    n_hidden = cache.h.shape[2]
    carries = {f"d{s}T": np.zeros((1, n_hidden), cache.dtype) for s in record.states}
    grads = {"d" + name: np.zeros(getattr(cache, name).shape, cache.dtype)
             for name in record.weights}
    dx = np.empty_like(x)
    xi = np.ones(cache.h.shape[0], cache.dtype)
    extra = () if cell == "rnn" else (False,)     # overwrite_cache

    def forward():
        module.forward(buffers, x)

    def backward():
        module.backward(buffers, dh, xi, carries, dx, grads, None, *extra)
    return forward, backward


def call_functions(record, args, dh, unchecked):
    """{name: no-argument callable} of the public calls: forward on ``args``, backward with
    ``dh`` on one cache, both again writing into an earlier cache and result (``out=``), and
    with ``unchecked`` both with ``check_finite=False``."""
    forward, backward = record.forward, record.backward
    _, cache = forward(*args)
    _, refilled = forward(*args)
    result = backward(dh, cache)
    calls = {"forward": lambda: forward(*args), "backward": lambda: backward(dh, cache),
             "forward out=": lambda: forward(*args, out=refilled),
             "backward out=": lambda: backward(dh, cache, out=result)}
    if unchecked:
        calls["forward unchecked"] = lambda: forward(*args, check_finite=False)
        calls["backward unchecked"] = lambda: backward(dh, cache, check_finite=False)
    return calls


def measure(shape, rounds, tbptt_steps):
    """{key: min us per call} of every variant, in this process."""
    import fastbptt
    from fastbptt.benchmarking import make_case, stream_function, time_interleaved

    found = {}
    for cell in (c for c in CELLS if c in fastbptt.CELLS):
        record = fastbptt.CELLS[cell]
        unchecked = "check_finite" in inspect.signature(record.forward).parameters
        for dtype in DTYPES:
            args, _, dh = make_case(cell, shape, np.dtype(dtype))
            variants = call_functions(record, args, dh, unchecked)
            kernel_forward, kernel_backward = kernel_functions(fastbptt, cell, args, dh)
            variants.update({"kernel forward": kernel_forward, "kernel backward": kernel_backward})
            number = max(1, int(2e-3 / _one_call(variants["forward"])))
            times = time_interleaved(variants, number=number, min_rounds=rounds,
                                     max_rounds=rounds)
            for name, t in times.items():
                found[f"{cell} {dtype} {name}"] = t.min() * 1e6
            if tbptt_steps:
                n_batch, _, n_input, n_hidden = shape
                stream = (n_batch, tbptt_steps, n_input, n_hidden)
                pair = {"full": stream_function(cell, stream, None, np.dtype(dtype)),
                        "tbptt": stream_function(cell, stream, 25, np.dtype(dtype))}
                number = max(1, int(5e-3 / _one_call(pair["full"])))
                times = time_interleaved(pair, number=number, min_rounds=rounds,
                                         max_rounds=rounds)
                for name, t in times.items():
                    found[f"{cell} {dtype} stream {name}"] = t.min() * 1e6
    return found


def _one_call(fn):
    import time
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1e-6, time.perf_counter() - t0)


def table(found, label=""):
    """The lines of one package's figures."""
    lines = []
    for cell in CELLS:
        for dtype in DTYPES:
            k = f"{cell} {dtype} "
            if k + "forward" not in found:
                continue
            parts = []
            for what in ("forward", "backward"):
                call, kernel = found[k + what], found[k + "kernel " + what]
                part = (f"{what} {call:6.2f} us (kernel {kernel:5.2f}, {kernel / call:4.0%}; "
                        f"outside {call - kernel:5.2f})")
                if k + what + " out=" in found:
                    reused = found[k + what + " out="]
                    part += f", out= {reused:6.2f} (outside {reused - kernel:5.2f})"
                if k + what + " unchecked" in found:
                    unchecked = found[k + what + " unchecked"]
                    part += f", unchecked {unchecked:6.2f} (outside {unchecked - kernel:5.2f})"
                parts.append(part)
            lines.append(f"  {label}{cell:4} {dtype}: " + " | ".join(parts))
            if k + "stream full" in found:
                full, tb = found[k + "stream full"], found[k + "stream tbptt"]
                lines.append(f"  {label}{cell:4} {dtype}: TBPTT(25, 25) {tb:8.1f} us, full BPTT "
                             f"{full:8.1f} us: {tb / full:.2f}x")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1,1,1,1", help="N,T,D,H (default 1,1,1,1)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tbptt", type=int, default=0,
                        help="T of the TBPTT(25, 25) stream (0: not timed)")
    parser.add_argument("--compare", metavar="DIR")
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    shape = tuple(int(s) for s in opts.shape.split(","))
    if opts.json:
        print(json.dumps(measure(shape, opts.rounds, opts.tbptt)))
        return
    import fastbptt
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastbptt.__file__)))
    print(f"shape (N, T, D, H) = {shape}; min over rounds, us per call")
    if not opts.compare:
        for line in table(measure(shape, opts.rounds, opts.tbptt)):
            print(line)
        return
    roots = {"after": here, "before": os.path.abspath(opts.compare)}
    best = {name: {} for name in roots}
    for i in range(opts.processes):
        for name in (roots if i % 2 == 0 else list(roots)[::-1]):
            env = dict(os.environ, PYTHONPATH=roots[name])
            out = subprocess.run([sys.executable, __file__, "--json", "--shape", opts.shape,
                                  "--rounds", str(opts.rounds), "--tbptt", str(opts.tbptt)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for key, value in json.loads(out).items():
                best[name][key] = min(value, best[name].get(key, np.inf))
    for name, root in roots.items():
        print(f"{name}: {root}")
        for line in table(best[name], f"{name:6} "):
            print(line)


if __name__ == "__main__":
    main()
