"""Markdown tables of a benchmark run: medians, ratios, and the targets met or not.

    python benchmarks/report.py bench.json [-o table.md]

``bench.json`` is what ``python -m pytest benchmarks/ --benchmark-only --benchmark-json=bench.json``
wrote. The tables:

- time, one row per (cell, case, dtype) and one table per pass (forward + backward, forward):
  median ms of the NumPy reference, the kernels, the BLAS floor and PyTorch, then
  "vs reference" (reference / kernels), "/ floor" (kernels / floor, target <= 1.25) and
  "vs PyTorch" (PyTorch / kernels: how many times faster the kernels are; targets below), and
  the 1-minute load average while the row was timed (the machine may be shared);
- thread scaling: throughput (sequences per second) on 2 Python threads over 1, kernels and
  the floor (target >= 1.8 for the kernels; the floor is the control: where it does not scale
  either, the machine had no second core to give);
- memory: the activations backward needs, what forward keeps (hidden states + cache), the peak
  of forward + backward less the gradients returned, and that peak over the need (target: about
  1, read as <= 1.1), for the kernels, the kernels with ``overwrite_cache=True`` (backward's
  workspace written over the cache's gate values; the RNN's lean backward with a workspace of
  a few steps) and the reference;
- a summary of the targets, with the misses named.

``--stat min`` shows and divides the fastest round instead of the median: on a shared machine,
whose other load only ever adds time, it is the steadier of the two.

Needs only the standard library, so it runs wherever the JSON is.
"""
import argparse
import json
import sys

FLOOR_TARGET = 1.25
THREADS_TARGET = 1.8
MEMORY_TARGET = 1.1
CELL_ORDER = {"rnn": 0, "lstm": 1, "gru": 2}
CASE_ORDER = {"S": 0, "C": 1, "M": 2, "L": 3}
DTYPE_SHORT = {"float32": "f32", "float64": "f64"}
PASSES = (("fwd+bwd", "Forward + full backward"), ("fwd", "Forward alone"))
YES, NO = "✓", "✗"


def torch_target(cell, case, dtype):
    """The least speed-up over PyTorch 2.13 CPU targeted."""
    if case in ("S", "C"):
        return 1.3 if (cell == "lstm" and dtype == "float32") else 10.0
    return 1.0


def _order(key):
    cell, case, dtype = key[:3]
    return (CELL_ORDER.get(cell, 9), cell, CASE_ORDER.get(case, 9), case, dtype) + key[3:]


def _ms(seconds):
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _mib(n_bytes):
    return f"{n_bytes / 2**20:.2f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.0f} KiB"


def _ratio(value, suffix="x"):
    return "–" if value is None else (f"{value:.1f}{suffix}" if value >= 10
                                      else f"{value:.2f}{suffix}")


def _mark(ok):
    return "" if ok is None else (f" {YES}" if ok else f" {NO}")


def _div(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _shape(info):
    shape = info.get("shape")
    return "N={} T={} D={} H={}".format(*shape) if shape else ""


def collect(data, stat="median"):
    """The benchmarks of a run, by kind: {kind: {key: {impl: (seconds, extra_info)}}}, seconds
    being the median (or ``stat``) of the rounds."""
    out = {"time": {}, "threads": {}, "memory": {}}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        kind = info.get("kind")
        if kind == "time":
            key = (info["cell"], info["case"], info["dtype"], info["pass_"])
            out["time"].setdefault(key, {})[info["impl"]] = (bench["stats"][stat], info)
        elif kind == "threads":
            key = (info["cell"], info["case"], info["dtype"])
            impl = (info["impl"], info["threads"])
            out["threads"].setdefault(key, {})[impl] = (bench["stats"][stat], info)
        elif kind == "memory":
            out["memory"][(info["cell"], info["case"], info["dtype"])] = info
    return out


def header(data):
    machine = data.get("machine_info", {})
    extra = machine.get("fastbptt", {})
    cpu = machine.get("cpu", {})
    loads = [b["extra_info"]["load_1min"] for b in data.get("benchmarks", [])
             if "load_1min" in (b.get("extra_info") or {})]
    lines = []
    when = (data.get("datetime") or "")[:16].replace("T", " ")
    cpu_name = cpu.get("brand_raw") or machine.get("processor") or machine.get("machine", "?")
    cores = extra.get("cores") or cpu.get("count")
    versions = [f"Python {machine.get('python_version', '?')}"]
    for name, label in (("numpy", "NumPy"), ("scipy", "SciPy"), ("torch", "PyTorch")):
        if extra.get(name):
            versions.append(f"{label} {extra[name]}")
    lines.append(f"Run {when} UTC on {cpu_name}"
                 + (f" ({cores} cores)" if cores else "")
                 + f", {machine.get('system', '')} {machine.get('release', '')}; "
                 + ", ".join(versions) + ".")
    threads = []
    if extra.get("kernel_blas_threads") is not None:
        threads.append(f"kernels and floor: {extra['kernel_blas_threads']} BLAS thread")
    env = extra.get("env") or {}
    if env.get("OPENBLAS_NUM_THREADS"):
        threads.append(f"NumPy (reference): OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}")
    if extra.get("torch_threads") is not None:
        threads.append(f"PyTorch: {extra['torch_threads']} thread")
    if threads:
        lines.append("Threads: " + "; ".join(threads) + ".")
    workaround = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if env.get(k)]
    if workaround:
        lines.append(f"Note: {', '.join(workaround)} set during the run (slows OpenBLAS).")
    load_parts = []
    if extra.get("load_at_start"):
        load_parts.append(f"{extra['load_at_start'][0]:.1f} at start")
    if loads:
        load_parts.append(f"{min(loads):.1f}-{max(loads):.1f} during")
    if extra.get("load_at_end"):
        load_parts.append(f"{extra['load_at_end'][0]:.1f} at end")
    if load_parts:
        lines.append("Load average (1 min): " + ", ".join(load_parts) + ".")
    commit = data.get("commit_info") or {}
    if commit.get("id"):
        lines.append(f"Commit {commit['id'][:10]}"
                     + (" with uncommitted changes" if commit.get("dirty") else "") + ".")
    if extra.get("command"):
        lines.append(f"Command: `{extra['command']}`.")
    return lines


def time_tables(timings, stat="median"):
    lines = []
    for pass_, title in PASSES:
        keys = sorted((k for k in timings if k[3] == pass_), key=_order)
        if not keys:
            continue
        lines += ["", f"### {title}: {stat} ms", "",
                  "| cell | case | dtype | reference | fastbptt | BLAS floor | PyTorch "
                  "| vs reference | / floor | vs PyTorch | load |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for key in keys:
            cell, case, dtype, _ = key
            t = {impl: value[0] for impl, value in timings[key].items()}
            loads = [value[1]["load_1min"] for value in timings[key].values()
                     if "load_1min" in value[1]]
            load = f"{sum(loads) / len(loads):.1f}" if loads else "–"
            kernel = t.get("kernel")
            to_floor = _div(kernel, t.get("floor"))
            vs_torch = _div(t.get("torch"), kernel)
            floor_ok = None if to_floor is None else to_floor <= FLOOR_TARGET
            torch_ok = None if vs_torch is None else vs_torch >= torch_target(cell, case, dtype)
            lines.append(
                f"| {cell} | {case} | {DTYPE_SHORT.get(dtype, dtype)} | {_ms(t.get('reference'))} "
                f"| {_ms(kernel)} | {_ms(t.get('floor'))} | {_ms(t.get('torch'))} "
                f"| {_ratio(_div(t.get('reference'), kernel))} "
                f"| {_ratio(to_floor, '')}{_mark(floor_ok)} "
                f"| {_ratio(vs_torch)}{_mark(torch_ok)} | {load} |")
    return lines


def thread_rows(threads):
    rows = []
    for key in sorted(threads, key=_order):
        runs = threads[key]

        def throughput(impl, n, runs=runs):
            if (impl, n) not in runs:
                return None
            median, info = runs[(impl, n)]
            return info["sequences"] / median

        kernel = _div(throughput("kernel", 2), throughput("kernel", 1))
        floor = _div(throughput("floor", 2), throughput("floor", 1))
        seqs = runs.get(("kernel", 1), next(iter(runs.values())))[1]["sequences"]
        rows.append((key, seqs, runs, kernel, floor))
    return rows


def thread_table(threads):
    rows = thread_rows(threads)
    if not rows:
        return []
    lines = ["", "### Thread scaling: independent sequences, forward + full backward", "",
             "| cell | case | dtype | sequences | fastbptt 1 thread ms | fastbptt 2 threads ms "
             "| throughput 2 / 1 | floor 2 / 1 | CPU / wall on 2 threads |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (cell, case, dtype), seqs, runs, kernel, floor in rows:
        one = runs.get(("kernel", 1), (None,))[0]
        two, info = runs.get(("kernel", 2), (None, {}))
        cpu = info.get("cpu_per_wall")
        lines.append(f"| {cell} | {case} | {DTYPE_SHORT.get(dtype, dtype)} | {seqs} | {_ms(one)} "
                     f"| {_ms(two)} | {_ratio(kernel)}"
                     f"{_mark(None if kernel is None else kernel >= THREADS_TARGET)} "
                     f"| {_ratio(floor)} | {'–' if cpu is None else f'{cpu:.2f}'} |")
    lines += ["", "CPU / wall: the process's CPU seconds per wall second with 2 threads; near 1 "
              "means the machine's other load left one core, and no scaling could show."]
    return lines


def memory_ratio(info, impl):
    peak = info.get(f"{impl}_peak")
    if peak is None or not info.get("needed"):
        return None
    return (peak - info[f"{impl}_outputs"]) / info["needed"]


def memory_table(memory):
    if not memory:
        return []
    lines = ["", "### Memory of forward + backward (tracemalloc)", "",
             "| cell | case | dtype | activations needed | forward keeps | peak less gradients "
             "| / needed | overwrite_cache / needed | reference / needed |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in sorted(memory, key=_order):
        info = memory[key]
        cell, case, dtype = key
        ratio = memory_ratio(info, "kernel")
        overwrite = memory_ratio(info, "kernel_overwrite")
        held = info["kernel_peak"] - info["kernel_outputs"]
        lines.append(f"| {cell} | {case} | {DTYPE_SHORT.get(dtype, dtype)} "
                     f"| {_mib(info['needed'])} | {_mib(info['kernel_forward_kept'])} "
                     f"| {_mib(held)} | {_ratio(ratio)}"
                     f"{_mark(None if ratio is None else ratio <= MEMORY_TARGET)} "
                     f"| {_ratio(overwrite)}"
                     f"{_mark(None if overwrite is None else overwrite <= MEMORY_TARGET)} "
                     f"| {_ratio(memory_ratio(info, 'reference'))} |")
    lines += ["", "overwrite_cache / needed: the same with ``overwrite_cache=True``, backward's "
              "workspace written over the cache's gate values (LSTM, GRU), or for the RNN, "
              "which has none, the lean backward's workspace of a few steps, (B, N, H) "
              "instead of (T, N, H) (``fastbptt.rnn.lean_block_steps``)."]
    return lines


def _verdict(name, checks):
    """One summary line: 'name: met on a of b' and the misses."""
    if not checks:
        return f"- {name}: not measured in this run."
    misses = [label for label, ok in checks if not ok]
    line = f"- {name}: met on {len(checks) - len(misses)} of {len(checks)}"
    if misses:
        shown = misses[:12]
        line += "; missed on " + ", ".join(shown) + (f", and {len(misses) - 12} more"
                                                     if len(misses) > 12 else "")
    return line + "."


def summary(found):
    lines = ["", "### Targets", ""]
    for pass_, title in PASSES:
        floor, torch = [], []
        for key in sorted((k for k in found["time"] if k[3] == pass_), key=_order):
            cell, case, dtype, _ = key
            t = {impl: value[0] for impl, value in found["time"][key].items()}
            label = f"{cell} {case} {DTYPE_SHORT.get(dtype, dtype)}"
            ratio = _div(t.get("kernel"), t.get("floor"))
            if ratio is not None:
                floor.append((f"{label} ({ratio:.2f})", ratio <= FLOOR_TARGET))
            speedup = _div(t.get("torch"), t.get("kernel"))
            if speedup is not None:
                target = torch_target(cell, case, dtype)
                torch.append((f"{label} ({speedup:.2f}x < {target:g}x)",
                              speedup >= target))
        if floor or torch:
            lines.append(_verdict(f"{title}: fastbptt <= {FLOOR_TARGET}x the BLAS floor", floor))
            lines.append(_verdict(f"{title}: faster than PyTorch by the target (10x on S, C; "
                                  "1.3x f32 LSTM on S, C; 1x on M, L)", torch))
    threads = [(f"{c} {k} {DTYPE_SHORT.get(d, d)} ({kernel:.2f}x)", kernel >= THREADS_TARGET)
               for (c, k, d), _, _, kernel, _ in thread_rows(found["threads"])
               if kernel is not None]
    lines.append(_verdict(f"2 threads >= {THREADS_TARGET}x the throughput of 1", threads))
    for impl, title in (("kernel", "memory"), ("kernel_overwrite", "memory, overwrite_cache=True")):
        memory = []
        for (c, k, d), info in sorted(found["memory"].items(), key=lambda kv: _order(kv[0])):
            ratio = memory_ratio(info, impl)
            if ratio is not None:
                memory.append((f"{c} {k} {DTYPE_SHORT.get(d, d)} ({ratio:.2f}x)",
                               ratio <= MEMORY_TARGET))
        if memory or impl == "kernel":
            lines.append(_verdict(f"{title}: peak less gradients <= {MEMORY_TARGET}x the "
                                  "activations", memory))
    return lines


def render(data, stat="median"):
    """The markdown report of a pytest-benchmark JSON (a dict), from the medians of the rounds
    (or ``stat='min'``)."""
    found = collect(data, stat)
    lines = header(data)
    lines += time_tables(found["time"], stat)
    lines += thread_table(found["threads"])
    lines += memory_table(found["memory"])
    lines += summary(found)
    shapes = {}
    for kind in ("time", "threads"):
        for key, runs in found[kind].items():
            shapes.setdefault(key[1], _shape(next(iter(runs.values()))[1]))
    for key, info in found["memory"].items():
        shapes.setdefault(key[1], _shape(info))
    if shapes:
        lines += ["", "Cases: " + "; ".join(f"{case} = {shape}" for case, shape in
                                            sorted(shapes.items(),
                                                   key=lambda kv: CASE_ORDER.get(kv[0], 9)))
                  + f". Ratios divide {stat}s taken in the same run; vs X = X's time / "
                  "fastbptt's. The implementations of a row are timed one after the other, "
                  "not interleaved (the machine's load may change between them; compare "
                  "with --stat min). The floor makes every product through BLAS; where the "
                  "kernels run the per-step products on a Wh packed once per call (the AVX2 "
                  "build, N >= 2), a / floor below 1 is that saving."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="the --benchmark-json output of a benchmarks/ run")
    parser.add_argument("-o", "--output", help="also write the markdown to this file")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="which statistic of the rounds to show and divide (default: "
                             "median; min is steadier on a shared machine, whose other load "
                             "only ever adds time)")
    args = parser.parse_args(argv)
    try:
        with open(args.json, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        print(f"report.py: cannot read {args.json}: {err}", file=sys.stderr)
        return 2
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        print(f"report.py: {args.json} is not a pytest-benchmark JSON (no 'benchmarks' list)",
              file=sys.stderr)
        return 2
    try:
        text = render(data, args.stat)
    except KeyError as err:
        print(f"report.py: {args.json}: a benchmark lacks {err}: was it written by this "
              "version of benchmarks/?", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
