"""``fastbptt train`` and ``fastbptt gradflow`` end to end, with tiny settings (seconds)."""
import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastbptt
from fastbptt.cli import main
from fastbptt.cli.gradflow import measure
from fastbptt.nn import Model

CELLS = list(fastbptt.CELLS)
TINY = ["--hidden", "16", "--seq-len", "8", "--batch", "4", "--max-chars", "20000",
        "--eval-every", "10", "--eval-chars", "2000", "--sample-len", "40", "--no-progress"]

try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["def ", "return ", "self", ".x", " = ", "(", ")", ":\n    ", "if ", "None", "\n"]
    text = "".join(rng.choice(words, 3000))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def exit_status(argv):
    """What ``fastbptt ARGV`` exits with: run's return value, or argparse's exit status."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def read_history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("cell", CELLS)
def test_train_end_to_end(cell, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--cell", cell, "--steps", "20", "--out", str(out)] + TINY)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "unigram baseline" in printed and "validation loss" in printed
    expected = {"model.npz", "loss.csv", "sample.txt"} | ({"loss.png"} if HAVE_MPL else set())
    assert expected <= {p.name for p in out.iterdir()}
    model = Model.load(out / "model.npz")
    assert model.cell == cell and model.n_hidden == 16
    vocab = model.metadata["vocab"]
    assert model.n_input == len(vocab) and model.metadata["steps"] == 20
    assert model.metadata["val_loss"] == pytest.approx(float(
        printed.split("validation loss ")[1].split()[0]), abs=1e-4)
    rows = read_history(out / "loss.csv")
    assert [int(r["step"]) for r in rows] == [10, 20]
    assert all(float(r["val_loss"]) > 0 for r in rows)
    sample = (out / "sample.txt").read_text(encoding="utf-8")
    assert len(sample) >= 40 and set(sample) <= set(vocab)
    if HAVE_MPL:
        assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_beats_unigram_baseline_on_a_text_file(text_file, tmp_path, capsys):
    """A text of a few repeated words: 150 steps are enough to be well below unigram."""
    out = tmp_path / "run"
    rc = main(["train", "--text", str(text_file), "--cell", CELLS[0], "--steps", "150",
               "--hidden", "32", "--seq-len", "16", "--batch", "8", "--eval-every", "50",
               "--sample-len", "0", "--no-progress", "--out", str(out)])
    assert rc == 0
    meta = Model.load(out / "model.npz").metadata
    assert meta["val_loss"] < 0.7 * meta["unigram_loss"], meta


@pytest.mark.parametrize("truncation", [["chunked", "--k", "3"], ["randomized", "--p", "0.5"],
                                        ["tbptt", "--k1", "4", "--k2", "12"]])
def test_train_truncation_options(truncation, text_file, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--text", str(text_file), "--steps", "12", "--out", str(out),
               "--truncation"] + truncation + TINY)
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"truncation {truncation[0]}" in printed
    meta = Model.load(out / "model.npz").metadata
    assert meta["truncation"] == truncation[0] and meta["steps"] == 12


def test_train_stacked_layers_and_other_optimizers(text_file, tmp_path):
    for opt in ("sgd", "adagrad"):
        out = tmp_path / opt
        rc = main(["train", "--text", str(text_file), "--steps", "10", "--layers", "2",
                   "--optimizer", opt, "--clip-value", "1", "--out", str(out)] + TINY)
        assert rc == 0
        assert Model.load(out / "model.npz").n_layers == 2


def test_compare_truncation(text_file, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["train", "--text", str(text_file), "--compare-truncation", "--steps", "10",
               "--k", "2", "--p", "0.5", "--out", str(out)] + TINY)
    assert rc == 0
    table = (out / "compare.txt").read_text()
    for label in ("full BPTT", "regular (K=2)", "randomized (p=0.5)", "unigram baseline"):
        assert label in table
    rows = read_history(out / "compare.csv")
    assert {r["run"] for r in rows} == {"full BPTT", "regular (K=2)", "randomized (p=0.5)"}
    if HAVE_MPL:
        assert (out / "compare.png").exists()
    # the same initialisation and data: the first training losses are close, not identical
    # (the strategies differ in the gradient, not the forward)
    for strategy in ("full", "chunked", "randomized"):
        assert (out / f"model-{strategy}.npz").exists()


def test_train_ctrl_c_stops_cleanly_and_saves(text_file, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = Model.loss_and_grads

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Model, "loss_and_grads", interrupted)
    out = tmp_path / "run"
    rc = main(["train", "--text", str(text_file), "--steps", "100", "--out", str(out)] + TINY)
    assert rc == 130
    assert "interrupted at step 5" in capsys.readouterr().err
    model = Model.load(out / "model.npz")
    assert model.metadata["steps"] == 5
    assert (out / "sample.txt").exists()
    assert [int(r["step"]) for r in read_history(out / "loss.csv")] == [5]


def test_train_without_tqdm_and_matplotlib(text_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)            # import tqdm -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "run"
    rc = main(["train", "--text", str(text_file), "--steps", "20", "--out", str(out)]
              + [a for a in TINY if a != "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "tqdm is not installed" in captured.err
    assert "train step 20/20" in captured.err                   # the plain progress lines
    assert "pip install 'fastbptt[cli]'" in captured.out
    names = {p.name for p in out.iterdir()}
    assert "loss.png" not in names and {"model.npz", "loss.csv", "sample.txt"} <= names


def test_train_progress_bar_with_tqdm(text_file, tmp_path, capsys):
    pytest.importorskip("tqdm")
    out = tmp_path / "run"
    rc = main(["train", "--text", str(text_file), "--steps", "10", "--out", str(out)]
              + [a for a in TINY if a != "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "chars/s" in err and "10/10" in err


def test_gradflow_end_to_end(tmp_path, capsys):
    out = tmp_path / "gf"
    rc = main(["gradflow", "--steps", "40", "--batch", "4", "--out", str(out)])
    assert rc == 0
    table = (out / "gradflow.txt").read_text()
    assert "RNN, radius 0.9" in table and "RNN, radius 1.8" in table
    assert "LSTM measured" in table and "LSTM, forget bias +3 measured" in table
    assert "mean forget gate" in table and "Jordan, radius 1.8 measured" in table
    if HAVE_MPL:
        assert (out / "gradflow.png").read_bytes()[:4] == b"\x89PNG"
    lines = [l for l in table.splitlines() if l.strip()[:1].isdigit()]
    first, last = lines[0].split("|"), lines[-1].split("|")     # t = T and t = 1
    assert first[0].strip() == "40" and last[0].strip() == "1"
    low_T, low_1 = float(first[1].split()[0]), float(last[1].split()[0])
    high_T, high_1 = float(first[2].split()[0]), float(last[2].split()[0])
    assert low_1 < 1e-2 * low_T            # vanishing below radius one
    assert high_1 > 10 * high_T            # exploding above


def test_gradflow_measures_with_the_kernels_norms():
    res = measure("rnn", radius=0.5, n_steps=30, n_hidden=16, n_batch=2, seed=1)
    norms = res["norms"]
    assert norms.shape == (30,) and (norms > 0).all()
    assert np.all(np.diff(norms) > 0)                         # shrinks going back in time
    assert res["lam"] == pytest.approx(0.5)
    assert 0 < res["gamma"] <= 1
    assert res["estimate"][-1] == norms[-1]
    ref = measure("rnn", radius=0.5, n_steps=30, n_hidden=16, n_batch=2, seed=1,
                  backend="reference")
    np.testing.assert_allclose(ref["norms"], norms, rtol=1e-9)
    same = measure("rnn", radius=0.5, n_steps=30, n_hidden=16, n_batch=2, seed=1,
                   impl=fastbptt.reference)
    np.testing.assert_array_equal(same["norms"], ref["norms"])


def test_gradflow_measures_the_jordan_loop():
    """The Jordan network's per-step factor: lambda is the radius its loop Wy Wo was scaled to;
    below one the gradient reaching y_t vanishes going back, as the estimate says."""
    res = measure("jordan", radius=0.5, n_steps=30, n_hidden=16, n_batch=2, seed=1)
    norms = res["norms"]
    assert res["lam"] == pytest.approx(0.5) and 0 < res["gamma"] <= 1
    assert (norms > 0).all() and norms[0] < 1e-3 * norms[-1]
    assert res["measured_rate"] == pytest.approx(res["rate"], rel=0.5)
    ref = measure("jordan", radius=0.5, n_steps=30, n_hidden=16, n_batch=2, seed=1,
                  backend="reference")
    np.testing.assert_allclose(ref["norms"], norms, rtol=1e-9)


def test_gradflow_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "gf"
    assert main(["gradflow", "--steps", "10", "--hidden", "8", "--out", str(out)]) == 0
    assert "pip install 'fastbptt[cli]'" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"gradflow.txt"}


@pytest.mark.parametrize("argv,message", [
    (["train", "--steps", "0"], "argument --steps: must be at least 1"),
    (["train", "--hidden", "-3"], "argument --hidden: must be at least 1"),
    (["train", "--cell", "transformer"], "argument --cell: invalid choice: 'transformer'"),
    (["train", "--k", "4"], "--k goes with --truncation chunked"),
    (["train", "--truncation", "randomized", "--p", "1.5"], "argument --p: must be in (0, 1]"),
    (["train", "--truncation", "tbptt", "--k1", "8", "--k2", "4"], "1 <= K1 <= K2"),
    (["train", "--truncation", "tbptt", "--layers", "2"], "use --layers 1"),
    (["train", "--text", "/no/such/file.txt"], "argument --text: no such file"),
    (["train", "--lr", "0"], "argument --lr: must be positive"),
    (["train", "--val-fraction", "1.5"], "--val-fraction"),
    (["train", "--batch", "1000", "--seq-len", "1000", "--max-chars", "5000"], "too few"),
    (["gradflow", "--radii", "1.2", "1.5"], "0 < LOW < 1 < HIGH"),
    (["gradflow", "--steps", "1"], "argument --steps: must be at least 2"),
    (["gradflow", "--forget-bias", "nan"], "argument --forget-bias: must be a finite number"),
    (["train", "--lr", "inf"], "argument --lr: must be positive and finite, got inf"),
    (["train", "--lr", "nan"], "argument --lr: must be positive and finite, got nan"),
    (["train", "--clip", "inf"], "argument --clip: must be >= 0 and finite, got inf"),
    (["train", "--temperature", "inf"], "argument --temperature: must be positive and finite"),
    (["train", "--hidden", "100000", "--max-chars", "20000"],
     "--hidden 100000, --layers 1, --batch 32 and --seq-len 64 need about"),
    (["gradflow", "--radii", "0.9", "1e308"], "--radii needs 0 < LOW < 1 < HIGH <= 100"),
    (["gradflow", "--hidden", "100000"], "--hidden 100000, --steps 100 and --batch 8 need about"),
])
def test_bad_options_give_a_clear_message(argv, message, tmp_path, capsys):
    """Through argparse (exit status 2, the usage and the message) or, for what only the data
    can tell (too few characters), from the command itself (status 2, the message)."""
    rc = exit_status(argv + ["--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "error" in err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--cell", "--hidden", "--layers", "--seq-len", "--truncation", "--k1",
                   "--clip", "--steps", "--seed", "--text", "--out", "--compare-truncation"):
        assert option in out


@pytest.mark.parametrize("command", ["train", "gradflow"])
def test_out_that_is_a_file_is_refused(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([command, "--steps", "2", "--out", str(blocker / "sub")]) == 2
    assert "cannot create the folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--truncation", "bogus"], ["train", "--steps", "ten"],
                                  ["gradflow", "--radii", "0.5"], ["train", "--nope"]])
def test_unparseable_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_command_line_entry_point(tmp_path):
    """The real command line in a subprocess: gradflow end to end, and a bad option."""
    done = subprocess.run([sys.executable, "-m", "fastbptt", "gradflow", "--steps", "12",
                           "--hidden", "8", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gradflow.txt").exists()
    done = subprocess.run([sys.executable, "-m", "fastbptt", "train", "--steps", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "argument --steps: must be at least 1" in done.stderr


def test_tbptt_with_k1_equal_k2_trains_like_full_windows(text_file, tmp_path):
    """TBPTT(k, k) through fastbptt.tbptt and full BPTT in windows of k with the state carried
    are the same algorithm: the same parameters after the same updates."""
    common = ["--text", str(text_file), "--steps", "6", "--dtype", "float64", "--seq-len", "8",
              "--eval-every", "100", "--sample-len", "0", "--hidden", "16", "--batch", "4",
              "--no-progress"]
    assert main(["train", "--truncation", "tbptt", "--k1", "8", "--k2", "8",
                 "--out", str(tmp_path / "a")] + common) == 0
    assert main(["train", "--truncation", "full", "--out", str(tmp_path / "b")] + common) == 0
    a, b = Model.load(tmp_path / "a" / "model.npz"), Model.load(tmp_path / "b" / "model.npz")
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    start = Model(a.n_input, 16, a.n_output, cell=a.cell, input="onehot", dtype=np.float64,
                  seed=0)                                   # what training started from
    np.testing.assert_array_equal(start.params["layer0.Wh"].shape, a.params["layer0.Wh"].shape)
    assert not np.allclose(start.params["layer0.Wh"], a.params["layer0.Wh"])


@pytest.mark.parametrize("budget", ["nan", "inf", "-1"])
def test_bench_budget_must_be_positive_and_finite(budget, capsys):
    """--budget nan was taken (200 rounds per case), inf would run forever."""
    assert exit_status(["bench", "--budget", budget]) == 2
    assert "argument --budget: must be positive and finite" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a folder nobody can write")
@pytest.mark.parametrize("command", ["train", "gradflow"])
def test_an_out_folder_that_cannot_be_written_is_refused_before_any_work(command, capsys,
                                                                        monkeypatch):
    """--out DIR existing but not writable: the training ran, then failed at model.save and
    the model was lost. /proc/self exists and takes no new file, even for root."""
    monkeypatch.setattr("fastbptt.cli.train.Trainer",
                        lambda *a, **k: pytest.fail("trained anyway"))
    monkeypatch.setattr("fastbptt.cli.gradflow.measure",
                        lambda *a, **k: pytest.fail("measured anyway"))
    assert main([command, "--steps", "2", "--max-chars", "20000", "--out", "/proc/self"]
                if command == "train" else [command, "--out", "/proc/self"]) == 2
    assert "--out /proc/self: cannot write in the folder" in capsys.readouterr().err


def test_a_model_that_cannot_be_saved_in_out_is_saved_elsewhere(text_file, tmp_path, capsys):
    """If saving fails all the same (here model.npz is a folder), the model and the other
    results go to a new folder, and the command says where. Sampling at a temperature of
    1e-320 (a ValueError from NumPy before) picks the most likely characters."""
    out = tmp_path / "out"
    (out / "model.npz").mkdir(parents=True)
    rc = main(["train", "--text", str(text_file), "--steps", "4", "--out", str(out),
               "--temperature", "1e-320"] + TINY)
    assert rc == 0
    captured = capsys.readouterr()
    moved = re.search(r"writing the results to (\S+) instead", captured.err)
    assert moved, captured.err
    fallback = moved.group(1)
    try:
        assert {"loss.csv", "model.npz", "sample.txt"} <= set(os.listdir(fallback))
        assert Model.load(os.path.join(fallback, "model.npz")).metadata["steps"] == 4
        assert f"wrote {os.path.join(fallback, 'model.npz')}" in captured.out
        assert sorted(p.name for p in out.iterdir()) == ["model.npz"]   # no temporary left
    finally:
        shutil.rmtree(fallback)


def test_gradflow_writes_elsewhere_when_out_fails(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "gradflow.txt").mkdir(parents=True)
    assert main(["gradflow", "--steps", "6", "--hidden", "4", "--batch", "2", "--out",
                 str(out)]) == 0
    moved = re.search(r"writing the results to (\S+) instead", capsys.readouterr().err)
    assert moved
    try:
        assert "gradflow.txt" in os.listdir(moved.group(1))
    finally:
        shutil.rmtree(moved.group(1))


def test_train_fill_task_bidirectional(text_file, tmp_path, capsys):
    """--bidirectional trains a bidirectional model on the fill task (hidden characters
    predicted from both sides) and saves it; the options that cannot go with it are refused."""
    out = tmp_path / "bi"
    rc = main(["train", "--text", str(text_file), "--bidirectional", "--steps", "12",
               "--out", str(out)] + TINY)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "hidden" in printed and "--- sample" not in printed
    model = Model.load(out / "model.npz")
    assert model.bidirectional and model.metadata["task"] == "fill"
    assert model.n_input == model.n_output + 1          # the mask symbol
    assert np.isfinite(model.metadata["val_loss"])
    for extra in (["--task", "next"], ["--truncation", "tbptt"], ["--compare-truncation"]):
        assert exit_status(["train", "--text", str(text_file), "--bidirectional", "--steps",
                            "2", "--out", str(tmp_path / "x")] + TINY + extra) == 2
