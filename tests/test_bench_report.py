"""benchmarks/report.py turns a pytest-benchmark JSON into markdown tables (no timing here)."""
import importlib.util
import json
import pathlib

import pytest

REPORT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("fastbptt_bench_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry(median, **info):
    return {"group": "g", "name": "test", "extra_info": info,
            "stats": {"median": median, "min": 0.5 * median, "max": median, "rounds": 5}}


def time_entry(median, cell, case, dtype, pass_, impl):
    shape = {"S": [1, 1000, 32, 64], "M": [32, 100, 64, 128]}[case]
    return entry(median, kind="time", cell=cell, case=case, shape=shape, dtype=dtype,
                 pass_=pass_, impl=impl, load_1min=1.5)


def synthetic():
    benchmarks = [
        # rnn S f64: kernel 1 ms, floor 0.9 ms (1.11: met), torch 20 ms (20x: met), ref 10 ms
        time_entry(1e-3, "rnn", "S", "float64", "fwd+bwd", "kernel"),
        time_entry(0.9e-3, "rnn", "S", "float64", "fwd+bwd", "floor"),
        time_entry(20e-3, "rnn", "S", "float64", "fwd+bwd", "torch"),
        time_entry(10e-3, "rnn", "S", "float64", "fwd+bwd", "reference"),
        # lstm M f32: kernel 12 ms, floor 8 ms (1.5: missed), torch 10.8 ms (0.9x: missed)
        time_entry(12e-3, "lstm", "M", "float32", "fwd+bwd", "kernel"),
        time_entry(8e-3, "lstm", "M", "float32", "fwd+bwd", "floor"),
        time_entry(10.8e-3, "lstm", "M", "float32", "fwd+bwd", "torch"),
        # forward alone, no torch, no reference
        time_entry(0.5e-3, "rnn", "S", "float64", "fwd", "kernel"),
        time_entry(0.45e-3, "rnn", "S", "float64", "fwd", "floor"),
        # threads: 8 sequences in 40 ms on 1 thread, 21 ms on 2 (1.90x: met)
        entry(40e-3, kind="threads", cell="rnn", case="S", shape=[1, 1000, 32, 64],
              dtype="float64", impl="kernel", threads=1, sequences=8),
        entry(21e-3, kind="threads", cell="rnn", case="S", shape=[1, 1000, 32, 64],
              dtype="float64", impl="kernel", threads=2, sequences=8, cpu_per_wall=1.96),
        entry(30e-3, kind="threads", cell="rnn", case="S", shape=[1, 1000, 32, 64],
              dtype="float64", impl="floor", threads=1, sequences=8),
        entry(20e-3, kind="threads", cell="rnn", case="S", shape=[1, 1000, 32, 64],
              dtype="float64", impl="floor", threads=2, sequences=8),
        # memory: kernel holds 2x the need (missed), 1.02x with overwrite_cache (met), the
        # reference 1.05x
        entry(1.0, kind="memory", cell="lstm", case="M", shape=[32, 100, 64, 128],
              dtype="float32", needed=9830400, kernel_forward_kept=10000000,
              kernel_peak=19660800 + 500000, kernel_outputs=500000,
              kernel_overwrite_forward_kept=10000000,
              kernel_overwrite_peak=10027008 + 500000, kernel_overwrite_outputs=500000,
              reference_forward_kept=9900000, reference_peak=10321920 + 500000,
              reference_outputs=500000),
    ]
    return {"machine_info": {"python_version": "3.11.7", "system": "Linux", "release": "6",
                             "cpu": {"brand_raw": "Test CPU", "count": 2},
                             "fastbptt": {"numpy": "2.4", "scipy": "1.17", "torch": "2.13.0",
                                          "torch_threads": 1, "kernel_blas_threads": 1,
                                          "cores": 2, "env": {"OPENBLAS_NUM_THREADS": "1"},
                                          "load_at_start": [1.0, 1.0, 1.0],
                                          "load_at_end": [2.0, 1.0, 1.0],
                                          "command": "python -m pytest benchmarks/"}},
            "datetime": "2026-11-23T08:00:00.000000+00:00", "version": "5.3.1",
            "commit_info": {"id": "0123456789abcdef", "dirty": True},
            "benchmarks": benchmarks}


def row(text, *cells):
    """The first table row starting with these cells."""
    prefix = "| " + " | ".join(cells) + " |"
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    assert rows, f"no row {prefix!r} in:\n{text}"
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_report_tables_and_ratios(report):
    text = report.render(synthetic())
    assert "Test CPU (2 cores)" in text and "PyTorch 2.13.0" in text
    assert "Load average (1 min): 1.0 at start, 1.5-1.5 during, 2.0 at end." in text
    assert "Commit 0123456789 with uncommitted changes." in text
    fwd_bwd, fwd = text.split("### Forward alone")
    # reference | fastbptt | floor | torch | vs reference | / floor | vs PyTorch
    assert row(fwd_bwd, "rnn", "S", "f64")[3:] == [
        "10.0", "1.00", "0.900", "20.0", "10.0x", "1.11 ✓", "20.0x ✓", "1.5"]
    assert row(fwd_bwd, "lstm", "M", "f32")[3:] == [
        "–", "12.0", "8.00", "10.8", "–", "1.50 ✗", "0.90x ✗", "1.5"]
    assert row(fwd, "rnn", "S", "f64")[3:] == [
        "–", "0.500", "0.450", "–", "–", "1.11 ✓", "–", "1.5"]
    threads = text.split("### Thread scaling")[1]
    assert row(threads, "rnn", "S", "f64")[3:] == [
        "8", "40.0", "21.0", "1.90x ✓", "1.50x", "1.96"]
    memory = text.split("### Memory")[1]
    assert row(memory, "lstm", "M", "f32")[3:] == [
        "9.38 MiB", "9.54 MiB", "18.75 MiB", "2.00x ✗", "1.02x ✓", "1.05x"]


def test_report_with_the_fastest_round(report, tmp_path, capsys):
    path = tmp_path / "bench.json"
    data = synthetic()
    data["benchmarks"][1]["stats"]["min"] = 0.3e-3     # rnn S f64 floor: 0.5 ms / 0.3 ms
    path.write_text(json.dumps(data))
    assert report.main([str(path), "--stat", "min"]) == 0
    text = capsys.readouterr().out
    assert "### Forward + full backward: min ms" in text
    assert row(text, "rnn", "S", "f64")[3:10] == [
        "5.00", "0.500", "0.300", "10.0", "10.0x", "1.67 ✗", "20.0x ✓"]


def test_report_summary_names_the_misses(report):
    summary = report.render(synthetic()).split("### Targets")[1]
    lines = [line for line in summary.splitlines() if line.startswith("- ")]
    floor = next(x for x in lines if x.startswith("- Forward + full backward: fastbptt <="))
    assert "met on 1 of 2" in floor and "lstm M f32 (1.50)" in floor
    torch = next(x for x in lines if x.startswith("- Forward + full backward: faster"))
    assert "met on 1 of 2" in torch and "lstm M f32 (0.90x < 1x)" in torch
    assert any(x.startswith("- 2 threads") and "met on 1 of 1." in x for x in lines)
    assert any(x.startswith("- memory:") and "lstm M f32 (2.00x)" in x for x in lines)
    assert any(x.startswith("- memory, overwrite_cache=True:") and "met on 1 of 1." in x
               for x in lines)


def test_torch_targets(report):
    assert report.torch_target("rnn", "S", "float32") == 10
    assert report.torch_target("lstm", "C", "float64") == 10
    assert report.torch_target("lstm", "C", "float32") == 1.3
    assert report.torch_target("gru", "L", "float64") == 1


def test_report_command_line(report, tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(synthetic()))
    out = tmp_path / "table.md"
    assert report.main([str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "### Forward + full backward" in printed


def test_report_empty_run_and_bad_input(report, tmp_path, capsys):
    text = report.render({"benchmarks": []})
    assert "not measured in this run" in text
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert report.main([str(bad)]) == 2
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    assert report.main([str(other)]) == 2
    assert "not a pytest-benchmark JSON" in capsys.readouterr().err
    data = synthetic()
    del data["benchmarks"][0]["extra_info"]["impl"]
    other.write_text(json.dumps(data))
    assert report.main([str(other)]) == 2
    assert "lacks 'impl'" in capsys.readouterr().err
