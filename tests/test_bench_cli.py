"""``fastbptt bench`` runs end to end with a tiny budget, with PyTorch and without (no timing)."""
import subprocess
import sys

import pytest

from fastbptt.cli import main

TINY = ["bench", "--cases", "C", "--budget", "0.01"]


def table_rows(out):
    return [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_bench_without_torch(capsys):
    assert main(TINY + ["--cells", "rnn,gru", "--no-torch", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "PyTorch left out" in out and "PyTorch ms" not in out
    rows = table_rows(out)
    assert [r.split("|")[1:3] for r in rows] == [[" rnn ", " C "], [" gru ", " C "]]
    assert all(len(r.strip("|").split("|")) == 8 for r in rows)


def test_bench_when_torch_cannot_be_imported(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch raises ImportError
    assert main(TINY + ["--cells", "rnn"]) == 0
    out = capsys.readouterr().out
    assert "PyTorch not installed" in out and "PyTorch ms" not in out
    assert len(table_rows(out)) == 1


def test_bench_with_torch(capsys):
    pytest.importorskip("torch")
    assert main(TINY + ["--cells", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "PyTorch ms | fastbptt vs PyTorch |" in out
    (row,) = table_rows(out)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 10 and cells[0] == "lstm" and cells[-1].endswith("x")


@pytest.mark.parametrize("argv, message", [
    (["--cases", "X"], "unknown case 'X'"),
    (["--cells", "cnn"], "unknown cell 'cnn'"),
    (["--budget", "0"], "argument --budget: must be positive"),
])
def test_bench_rejects_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:       # through argparse
        main(["bench", "--no-torch"] + argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["bench", "--help"], ["bench", "--no-torch", "--cells", "rnn",
                                                        "--cases", "C", "--budget", "0.001"]])
def test_bench_imports_no_other_command_nor_the_model_layer(argv):
    """Only the command asked for is imported: not train, gradflow, nor fastbptt.nn."""
    code = ("import sys\nfrom fastbptt.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastbptt')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = eval(done.stdout.strip().splitlines()[-1])
    assert "fastbptt.cli.bench" in loaded
    unwanted = {"fastbptt.cli.train", "fastbptt.cli.gradflow", "fastbptt.nn",
                "fastbptt.nn.model", "fastbptt.nn.data", "fastbptt.nn.optim"}
    assert not unwanted & set(loaded), sorted(unwanted & set(loaded))


def test_bench_times_the_jordan_network(capsys):
    assert main(TINY + ["--cells", "jordan,rnn"]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in table_rows(out)]
    assert [r[:3] for r in rows] == [["jordan", "C", "N=1 T=25 D=65 H=100 O=65"],
                                     ["rnn", "C", "N=1 T=25 D=65 H=100"]]
    assert all(r[5].endswith("x") for r in rows)
