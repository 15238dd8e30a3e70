"""``fastbptt bench``: the kernels against the NumPy reference, timed side by side in one run.

Each case runs forward plus full backward through time on random data; the reference, the
kernels, the BLAS floor (the kernels' matrix products alone, ``src/_floor.pyx``) and, where it
is installed, PyTorch (``nn.RNN``/``nn.LSTM``/``nn.GRU`` holding the same weights, one thread,
autograd with the same upstream gradient; it has no Jordan network) take turns, round after
round, a short burst of runs each (``fastbptt.benchmarking.time_interleaved``), and the
medians are compared, so a busy machine slows all alike. Each runs on one thread: the kernels
and the floor set SciPy's BLAS so themselves, NumPy's BLAS (the reference's) is set to one
thread for the timing, and PyTorch to one intra-op thread. The cases (N, T, D, H) and the
callables are those of ``fastbptt.benchmarking``, which ``benchmarks/`` uses too; Jordan's
network has O = D outputs.

``--threads N`` runs every one of them on N threads instead: the kernels and the floor
(``fastbptt.num_threads``), NumPy's BLAS (the reference) and PyTorch's intra-op threads.
``benchmarks/threads_interleaved.py`` makes the table of 1 against N threads.

PyTorch is optional: ``fastbptt bench`` leaves its columns out where it cannot be imported.
"""
import platform

import numpy as np

import fastbptt
import fastbptt.reference

from .._blas_threads import numpy_blas_threads
from ..benchmarking import (
    CASES,
    floor_function,
    import_torch,
    jordan_floor_function,
    jordan_function,
    jordan_shape,
    make_case,
    make_jordan_case,
    step_function,
    time_interleaved,
    torch_function,
)
from ._options import names_among, positive_float, positive_int

BURST = 3   # runs of a callable in a row in each round


def add_arguments(parser):
    cells = tuple(fastbptt.CELLS)
    parser.add_argument("--cells", type=names_among(cells, "cell"), default=list(cells),
                        help=f"comma-separated cells among {','.join(cells)} (default: all)")
    parser.add_argument("--cases", type=names_among(CASES, "case"), default=["S", "M"],
                        help="comma-separated cases among " + ",".join(CASES) + " (default: S,M)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--budget", type=positive_float, default=2.0,
                        help="seconds of timing per case (default: 2)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="threads of every implementation timed (default: 1)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out even where it is installed")


def run(args):
    dtype = np.dtype(args.dtype)
    torch = None if args.no_torch else import_torch()
    threads = args.threads
    if torch is not None:
        torch.set_num_threads(threads)
    each = "one thread each" if threads == 1 else f"{threads} threads each"
    print(f"fastbptt {fastbptt.__version__} bench: forward + full backward, {dtype}, "
          f"median of alternating runs, {args.budget:g} s a case, {each}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"Python {platform.python_version()}, NumPy {np.__version__}"
          + (f", PyTorch {torch.__version__} ({each})" if torch is not None else ""))
    if torch is None:
        print("(PyTorch " + ("left out" if args.no_torch else "not installed") +
              ": no PyTorch column)")
    rows = []
    for cell in args.cells:
        for case in args.cases:
            shape, _ = CASES[case]
            if fastbptt.CELLS[cell].output_feedback:    # Jordan's network: PyTorch has none
                shape = jordan_shape(shape)
                functions = _jordan_functions(shape, dtype)
            else:
                problem = make_case(cell, shape, dtype)
                functions = {"reference": step_function(fastbptt.reference, cell, *problem),
                             "fastbptt": step_function(fastbptt, cell, *problem),
                             "floor": floor_function(cell, shape, dtype)}
                if torch is not None:
                    functions["torch"] = torch_function(cell, *problem)
            label = " ".join(f"{n}={v}" for n, v in zip("NTDHO", shape))
            print(f"  timing {cell} {case} ({label}) ...", end="", flush=True)
            # the reference's NumPy BLAS on as many threads as all the others
            with numpy_blas_threads(threads), fastbptt.num_threads(threads):
                times = time_interleaved(functions, repeat=BURST, budget=args.budget)
            medians = [float(np.median(t)) for t in times.values()]
            print(f" {medians[1] * 1e3:.3g} ms")
            rows.append((cell, case, label, *medians))
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
        elif torch is not None:
            line += " - | - |"
        print(line)
    return 0


def _jordan_functions(shape, dtype):
    """The callables timed for Jordan's network on ``shape`` (N, T, D, H, O)."""
    args, dy = make_jordan_case(shape, dtype)
    return {"reference": jordan_function(fastbptt.reference, args, dy),
            "fastbptt": jordan_function(fastbptt, args, dy),
            "floor": jordan_floor_function(shape, dtype)}
