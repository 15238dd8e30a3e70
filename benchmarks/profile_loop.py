"""One cell's forward + full backward (or its BLAS floor) called in a loop, for a profiler.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE FASTBPTT_NUM_THREADS=1 \
        perf record -e cpu-clock -F 5000 -D 2000 -o loop.data \
        python benchmarks/profile_loop.py --cell lstm --dtype float32 --case S --seconds 6
    perf report -i loop.data --no-children --sort dso,sym
    python benchmarks/profile_loop.py --report loop.data     # the same samples by part

``--what reuse`` runs fastbptt with ``out=`` (the cache and the gradients of the call before
refilled), ``--what floor`` the BLAS floor (its arrays made once). Prints the CPU time of the
calling process per call and per step-direction (a forward or a backward step), and with
``--report`` the share of the samples in each part of a call: the per-step products, the
elementwise passes (the kernels' own loops), the hoisted BLAS products, new memory (page faults
and zeroing), Python with the wrappers and checks, and the rest (mostly BLAS's own threads
starting). CPU time, not wall time, so that a busy machine's waits for a core do not count;
cycles are that time at the nominal clock given by ``--ghz``. ``-D 2000`` leaves the first two
seconds (the imports) out of the samples.
"""
import argparse
import subprocess
import time

import fastbptt
from fastbptt.benchmarking import (
    CASES,
    floor_function,
    make_case,
    reusing_function,
    step_function,
)

SHAPES = {name: shape for name, (shape, _) in CASES.items()}
SHAPES.update({"H16": (1, 1000, 32, 16), "H256": (1, 1000, 32, 256)})

# symbol patterns -> part of a call, first match wins (perf's "dso sym" lines)
PARTS = (
    ("per-step product", ("packed_small", "packed_group", "packed_big", "packed_kernel",
                          "packed_gemm", "pack_s", "pack_d", "few_", "gemv")),
    ("hoisted BLAS products", ("gemm_",)),
    ("elementwise passes", ("_omp_fn", "__pyx_f_")),
    ("new memory: page faults, zeroing", ("[kernel.kallsyms]", "memset", "clear_page")),
    ("Python, wrappers, checks", ("libpython", "__pyx_pw", "__pyx_pf", "_checks",
                                  "_multiarray", "umath")),
)


def part_of(line):
    for part, patterns in PARTS:
        if any(p in line for p in patterns):
            return part
    return "other"


def report(path):
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym",
                          "--stdio"], capture_output=True, text=True, check=True).stdout
    shares = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line:
            continue
        share = float(line.split("%", 1)[0])
        part = part_of(line)
        shares[part] = shares.get(part, 0.0) + share
    for part, share in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"{share:6.1f}%  {part}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=sorted(fastbptt.CELLS))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--case", default="S", choices=sorted(SHAPES))
    parser.add_argument("--what", default="fastbptt", choices=("fastbptt", "reuse", "floor"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ghz", type=float, default=2.6)
    parser.add_argument("--report", default=None, metavar="PERF_DATA")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report)
        return
    shape = SHAPES[args.case]
    if args.what == "floor":
        run = floor_function(args.cell, shape, args.dtype)
    elif args.what == "reuse":
        run = reusing_function(args.cell, *make_case(args.cell, shape, args.dtype))
    else:
        call_args, kwargs, dh = make_case(args.cell, shape, args.dtype)
        run = step_function(fastbptt, args.cell, call_args, kwargs, dh)
    run()
    calls, start = 0, time.process_time()
    while time.process_time() - start < args.seconds:
        for _ in range(10):
            run()
        calls += 10
    per_call = (time.process_time() - start) / calls
    per_step = per_call / (2 * shape[1])
    print(f"{args.what} {args.cell} {args.dtype} {args.case}: {per_call * 1e6:.1f} us a call, "
          f"{per_step * 1e9:.0f} ns ({per_step * args.ghz * 1e9:.0f} cycles at "
          f"{args.ghz} GHz) a step-direction, CPU time, {calls} calls")


if __name__ == "__main__":
    main()
