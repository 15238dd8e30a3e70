"""Another build of fastbptt (before a change) against this one, timed interleaved in one
process: forward + full backward of each cell (``fastbptt.benchmarking.step_function``), the
two builds taking turns round after round (``time_interleaved``), so a busy machine slows both
alike. Prints per case the median and the minimum of each, and after / before.

``--before DIR``: a folder holding a built ``fastbptt`` package (a checkout built in place, or a
copy of its ``fastbptt/`` folder with the compiled modules). It is copied into a temporary
folder as the package ``fastbptt_before`` (its loader, ``_kernels.py``, told its new name), so
both import side by side.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/before_after_interleaved.py
--before DIR`` (``--cases C``, ``--rounds R``, ``--cells rnn,lstm,gru``).
"""
import argparse
import atexit
import importlib
import os
import shutil
import sys
import tempfile

import numpy as np

import fastbptt
import fastbptt._kernels
from fastbptt.benchmarking import CASES, make_case, step_function, time_interleaved


def import_before(folder):
    """The package ``fastbptt`` of ``folder`` imported as ``fastbptt_before``. This build's
    compiled modules are loaded first: a Cython module also enters itself in ``sys.modules``
    under the name it was compiled with (``fastbptt._rnn``) where that name is free."""
    for name in ("_cpu", "_checks", "_rnn", "_lstm", "_gru"):
        fastbptt._kernels.load(name)
    source = os.path.join(folder, "fastbptt") if os.path.isdir(
        os.path.join(folder, "fastbptt")) else folder
    root = tempfile.mkdtemp(prefix="fastbptt-before-")
    atexit.register(shutil.rmtree, root, True)
    target = os.path.join(root, "fastbptt_before")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    loader = os.path.join(target, "_kernels.py")
    with open(loader) as f:
        text = f.read()
    with open(loader, "w") as f:
        f.write(text.replace('f"fastbptt.', 'f"{__package__}.'))
    sys.path.insert(0, root)
    return importlib.import_module("fastbptt_before")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--cases", default="C")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--rounds", type=int, default=40)
    opts = parser.parse_args()
    before = import_before(opts.before)
    print(f"after: {os.path.dirname(fastbptt.__file__)}; before: {opts.before}")
    for case in opts.cases.split(","):
        shape = CASES[case][0]
        for cell in opts.cells.split(","):
            for dtype in (np.float32, np.float64):
                args, kwargs, dh = make_case(cell, shape, np.dtype(dtype))
                functions = {"before": step_function(before, cell, args, kwargs, dh),
                             "after": step_function(fastbptt, cell, args, kwargs, dh)}
                one = time_interleaved(functions, min_rounds=1)["after"].min()
                number = max(1, int(0.02 / one))           # ~20 ms a turn
                times = time_interleaved(functions, number=number, repeat=3,
                                         min_rounds=opts.rounds, max_rounds=opts.rounds)
                med = {k: float(np.median(t)) for k, t in times.items()}
                low = {k: float(t.min()) for k, t in times.items()}
                print(f"{cell} {case} {np.dtype(dtype).name}: before {med['before'] * 1e6:.1f} "
                      f"us (min {low['before'] * 1e6:.1f}), after {med['after'] * 1e6:.1f} us "
                      f"(min {low['after'] * 1e6:.1f}); after / before: median "
                      f"{med['after'] / med['before']:.3f}, min "
                      f"{low['after'] / low['before']:.3f}", flush=True)


if __name__ == "__main__":
    main()
