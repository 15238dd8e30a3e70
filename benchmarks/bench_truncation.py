"""Truncation must cost nothing.

Two groups of cases, each cell, the project's shapes (N, T, D, H):

- ``backward``: backward over T steps with ``xi=None`` (full BPTT) and with
  ``truncation.chunked(T, k)``: where ``xi[t] == 0`` the kernel skips the step's recurrent
  product, so chunked must never be slower.
- ``stream``: one full-BPTT call over the stream (forward + loss gradients + backward over all T
  steps) against the ``TBPTT(k, k)`` driver over the same steps (T / k windows, state carried).
  Target: within 1.2x.

The callables are ``fastbptt.benchmarking``'s, as in ``truncation_interleaved.py``; set-up
(data, caches) is outside the timed region. At the end of the module a table of ratios
to the full-BPTT case of the same group (min and median times) is printed. Run with

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python -m pytest benchmarks/bench_truncation.py --benchmark-only
"""
import pytest

import fastbptt
from fastbptt.benchmarking import TRUNCATION_CASES, stream_function, truncated_backward_function

# the hidden-state cells (make_case's); Jordan's network: benchmarks/jordan_interleaved.py
CELLS = [name for name, cell in fastbptt.CELLS.items() if not cell.output_feedback]
CASES = TRUNCATION_CASES   # name: (N, T, D, H), the truncation lengths k timed
TIMES = {}   # group -> {label: (min, median) seconds}


def modes(case):
    return ["full"] + [f"k={k}" for k in CASES[case][1]]


def timed(benchmark, group, label, fn, *args, **kwargs):
    """Time fn under ``group`` and keep (min, median) for the ratio table."""
    benchmark.group = group
    result = benchmark(fn, *args, **kwargs)
    meta = getattr(benchmark, "stats", None)
    if meta is not None:
        TIMES.setdefault(group, {})[label] = (meta.stats.min, meta.stats.median)
    return result


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    """After the module: each case's ratio to full BPTT in its group, printed to the terminal."""
    yield
    lines = ["", "ratios to full BPTT in the same group (min time, median time):"]
    for group, rows in TIMES.items():
        if "full" not in rows:
            continue
        base_min, base_med = rows["full"]
        cells = [f"{label} {t_min / base_min:.2f}x/{t_med / base_med:.2f}x"
                 for label, (t_min, t_med) in rows.items() if label != "full"]
        lines.append(f"  {group:18s} full {base_min * 1e3:8.2f} ms | " + ", ".join(cells))
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capman is not None and len(lines) > 2:
        with capman.global_and_fixture_disabled():
            for line in lines:
                reporter.write_line(line)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["full", "k=10", "k=25"])
def test_backward(benchmark, cell, case, mode):
    """Backward alone, full against chunked(T, k)."""
    k = None if mode == "full" else int(mode[2:])
    timed(benchmark, f"backward {cell} {case}", mode,
          truncated_backward_function(cell, CASES[case][0], k))


def _stream_cases():
    return [(cell, case, mode) for cell in CELLS for case in CASES for mode in modes(case)]


@pytest.mark.parametrize("cell,case,mode", _stream_cases())
def test_stream(benchmark, cell, case, mode):
    """One full-BPTT call over the stream against TBPTT(k, k) over the same steps."""
    k = None if mode == "full" else int(mode[2:])
    timed(benchmark, f"stream {cell} {case}", mode, stream_function(cell, CASES[case][0], k))
