"""``fastbptt train``: a character-level language model trained with truncated BPTT.

The corpus is the source of Python's standard library on this machine (no download;
``fastbptt.data``) or ``--text FILE``, split into a training head and a validation tail. The
model (``fastbptt.model.Model``) reads one-hot characters (as min-char-rnn does: the first
layer's ``Wx`` is the embedding), runs ``--layers`` recurrent layers of ``--cell`` on fastbptt's
kernels and predicts the next character with a softmax. Training walks ``--batch`` parallel
streams through the text in windows of ``--seq-len`` characters, carrying the recurrent state
from window to window (truncated BPTT: the forward pass sees the whole stream, the gradient
stops at the window's start), with Adam and global-norm gradient clipping.

``--truncation`` chooses what happens inside a window (``fastbptt.truncation``,
``fastbptt.tbptt``; the strategies of the seeds' ``003_*.txt``):

* ``full``: backpropagate through the whole window (the default);
* ``chunked --k K``: regular truncation, no gradient across every K-th step;
* ``randomized --p P``: unbiased randomized truncation (Tallec and Ollivier 2017): the gradient
  through each step is kept with probability P and scaled by 1/P (default P = 1 - 1/K, so the
  cuts are as frequent on average as with ``chunked``);
* ``tbptt --k1 K1 --k2 K2``: Williams and Peng's TBPTT(k1, k2) over the endless stream: an
  update every K1 characters, backpropagating through the last K2 (one recurrent layer).

``--compare-truncation`` trains the same model from the same initialisation on the same data
and budget three times, with full, regular (chunked) and randomized truncation, and writes one
plot and one table (the seeds' comparison). Ctrl-C stops training cleanly: the model so far is
saved, with its loss curve and a sample.

BLAS threads: the kernels run BLAS on one thread per call (``fastbptt.set_blas_threads``), and
training also runs NumPy's BLAS (the output layer) on one thread while it lasts
(``--blas-threads``). With OpenBLAS's default pool the workers left spinning after a NumPy
product compete with the kernel's thread for the cores: on a 2-core machine that was busy with
other work, an LSTM step (H=128, 32 x 64 chars) took 132 ms with NumPy's default two threads
and 54 ms with one.

Output (in ``--out``): ``model.npz`` (``Model.load``; the vocabulary is in its metadata),
``loss.csv``, ``loss.png`` (with matplotlib, ``pip install 'fastbptt[cli]'``), ``sample.txt``.
"""
import csv
import os
import sys
import time

import numpy as np

from ..nn import data as data_mod
from .._blas_threads import numpy_blas_threads
from ..nn.model import CELLS, Model, softmax_cross_entropy
from ..nn.optim import OPTIMIZERS

DEFAULTS = {
    "cell": "lstm", "hidden": 128, "layers": 1, "seq_len": 64, "batch": 32, "steps": 1500,
    "max_chars": 2_000_000, "eval_every": 100, "eval_chars": 20_000, "final_eval_chars": 200_000,
}
DEFAULT_LR = {"adam": 3e-3, "adagrad": 0.1, "sgd": 0.1}
CLI_EXTRA = "pip install 'fastbptt[cli]'"


# --------------------------------------------------------------------------------- arguments
def add_arguments(parser):
    d = DEFAULTS
    g = parser.add_argument_group("model")
    g.add_argument("--cell", default=d["cell"], help=f"recurrent cell: {', '.join(CELLS)} "
                   f"(default {d['cell']})")
    g.add_argument("--hidden", type=int, default=d["hidden"], metavar="H",
                   help=f"hidden units per layer (default {d['hidden']})")
    g.add_argument("--layers", type=int, default=d["layers"], metavar="L",
                   help=f"stacked recurrent layers (default {d['layers']})")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float type of the model (default float32)")
    g.add_argument("--backend", choices=("kernels", "reference"), default="kernels",
                   help="recurrent layers on the compiled kernels (default) or the NumPy "
                        "reference")
    g.add_argument("--blas-threads", type=int, default=1, metavar="N",
                   help="threads for NumPy's own BLAS (the output layer) while training; 0 "
                        "leaves NumPy's setting alone (default 1: OpenBLAS workers left spinning "
                        "after a NumPy product slow the kernels' thread down)")

    g = parser.add_argument_group("data")
    g.add_argument("--text", metavar="FILE", help="train on this UTF-8 text file instead of "
                   "the Python standard library's source")
    g.add_argument("--max-chars", type=int, default=d["max_chars"], metavar="C",
                   help=f"use at most C characters of the corpus (default {d['max_chars']:,})")
    g.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="the tail of the corpus held out for validation (default 0.1)")

    g = parser.add_argument_group("training")
    g.add_argument("--steps", type=int, default=d["steps"], metavar="S",
                   help=f"parameter updates (default {d['steps']})")
    g.add_argument("--seq-len", type=int, default=d["seq_len"], metavar="T",
                   help=f"characters per window (default {d['seq_len']})")
    g.add_argument("--batch", type=int, default=d["batch"], metavar="N",
                   help=f"parallel streams (default {d['batch']})")
    g.add_argument("--truncation", choices=("full", "chunked", "randomized", "tbptt"),
                   default="full", help="gradient truncation inside a window (default full)")
    g.add_argument("--k", type=int, metavar="K", help="chunked: cut the gradient every K "
                   "steps (default seq-len/4)")
    g.add_argument("--p", type=float, metavar="P", help="randomized: keep each step's gradient "
                   "with probability P, scaled by 1/P (default 1 - 1/K: a cut every K steps on "
                   "average, as chunked)")
    g.add_argument("--k1", type=int, metavar="K1", help="tbptt: update every K1 characters "
                   "(default seq-len)")
    g.add_argument("--k2", type=int, metavar="K2", help="tbptt: backpropagate through the last "
                   "K2 characters, K2 >= K1 (default 2*K1)")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="adam (default), adagrad (as in min-char-rnn) or sgd (momentum 0.9)")
    g.add_argument("--lr", type=float, metavar="LR", help="learning rate (default: adam "
                   "3e-3, adagrad 0.1, sgd 0.1)")
    g.add_argument("--clip", type=float, default=5.0, metavar="MAX_NORM",
                   help="clip the gradients' global norm to MAX_NORM; 0 turns it off "
                        "(default 5)")
    g.add_argument("--clip-value", type=float, metavar="V",
                   help="also clip every gradient entry into [-V, V]")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--compare-truncation", action="store_true",
                   help="train with full, chunked and randomized truncation on the same data "
                        "and budget (three runs) and write one plot and one table")

    g = parser.add_argument_group("output")
    g.add_argument("--out", default="fastbptt-train", metavar="DIR",
                   help="folder for model.npz, loss.csv, loss.png, sample.txt "
                        "(default ./fastbptt-train)")
    g.add_argument("--eval-every", type=int, default=d["eval_every"], metavar="S",
                   help=f"validation loss every S steps (default {d['eval_every']})")
    g.add_argument("--eval-chars", type=int, default=d["eval_chars"], metavar="C",
                   help=f"validation characters per evaluation during training "
                        f"(default {d['eval_chars']:,}; the final one uses up to "
                        f"{d['final_eval_chars']:,})")
    g.add_argument("--sample-len", type=int, default=400, metavar="C",
                   help="characters to generate at the end (default 400)")
    g.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature (default 0.8)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar: plain periodic lines")


def _check_args(args):
    """A message for the first bad option, or None; fills in the dependent defaults."""
    import fastbptt
    available = [c for c in CELLS if hasattr(fastbptt, f"{c}_forward")]
    if args.cell not in available:
        return f"--cell must be one of {', '.join(available)} in this build, got {args.cell!r}"
    if args.blas_threads < 0:
        return f"--blas-threads must be >= 0 (0: NumPy's own setting), got {args.blas_threads}"
    positive = {"hidden": args.hidden, "layers": args.layers, "steps": args.steps,
                "seq-len": args.seq_len, "batch": args.batch, "max-chars": args.max_chars,
                "eval-every": args.eval_every, "eval-chars": args.eval_chars}
    for name, value in positive.items():
        if value < 1:
            return f"--{name} must be at least 1, got {value}"
    if args.sample_len < 0:
        return f"--sample-len must be >= 0, got {args.sample_len}"
    if not 0 < args.val_fraction < 1:
        return f"--val-fraction must be between 0 and 1, got {args.val_fraction}"
    if not args.temperature > 0:
        return f"--temperature must be positive, got {args.temperature}"
    if args.lr is not None and not args.lr > 0:
        return f"--lr must be positive, got {args.lr}"
    if not args.clip >= 0:
        return f"--clip must be >= 0 (0: off), got {args.clip}"
    if args.clip_value is not None and not args.clip_value > 0:
        return f"--clip-value must be positive, got {args.clip_value}"
    if args.text is not None and not os.path.isfile(args.text):
        return f"--text: no such file: {args.text}"
    t = args.truncation
    for opt, owner in (("k", "chunked"), ("p", "randomized"), ("k1", "tbptt"), ("k2", "tbptt")):
        if getattr(args, opt) is not None and t != owner and not args.compare_truncation:
            return f"--{opt} goes with --truncation {owner}, not {t}"
    if args.k is None:
        args.k = max(1, args.seq_len // 4)
    if args.p is None:      # the same mean distance between cuts as chunked: 1/(1-p) = K
        args.p = 1 - 1 / args.k if args.k > 1 else 0.5
    if args.k < 1:
        return f"--k must be at least 1, got {args.k}"
    if not 0 < args.p <= 1:
        return f"--p must be in (0, 1], got {args.p}"
    if t == "tbptt":
        if args.compare_truncation:
            return "--compare-truncation compares full, chunked and randomized; drop --truncation tbptt"
        if args.layers != 1:
            return ("--truncation tbptt drives one recurrent layer (fastbptt.tbptt); "
                    f"use --layers 1, got {args.layers}")
        args.k1 = args.seq_len if args.k1 is None else args.k1
        args.k2 = 2 * args.k1 if args.k2 is None else args.k2
        if args.k1 < 1 or args.k2 < args.k1:
            return f"--k1/--k2 need 1 <= K1 <= K2, got K1={args.k1} K2={args.k2}"
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    return None


# --------------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar with loss and chars/s, or plain lines every ~5% without tqdm."""

    def __init__(self, total, desc, plain=False, file=None):
        self.total, self.desc = total, desc
        self.file = file or sys.stderr
        self.bar = None
        if not plain:
            try:
                from tqdm import tqdm
            except ImportError:
                print(f"(no progress bar: tqdm is not installed; {CLI_EXTRA})", file=self.file)
            else:
                self.bar = tqdm(total=total, desc=desc, unit="step", file=self.file,
                                dynamic_ncols=True, mininterval=0.5)
        self.every = max(1, total // 20)
        self.t_start = time.perf_counter()

    def update(self, step, loss, chars_per_s, val=None):
        fields = {"loss": f"{loss:.3f}", "chars/s": f"{chars_per_s:,.0f}"}
        if val is not None:
            fields["val"] = f"{val:.3f}"
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.every == 0 or step == self.total:
            elapsed = time.perf_counter() - self.t_start
            print(f"{self.desc} step {step}/{self.total}  " +
                  "  ".join(f"{k} {v}" for k, v in fields.items()) +
                  f"  {elapsed:.0f}s", file=self.file, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------- training
def _one_hot_chunks(streams, vocab_size, dtype):
    """(x one-hot (N, T, V), y (N, T)) windows of a ``Streams`` forever (for the TBPTT driver;
    the state runs on across the start of a new pass)."""
    eye = np.eye(vocab_size, dtype=dtype)
    for x, y, _reset in streams:
        yield eye[x], y


def evaluate(model, ids, n_batch, seq_len, max_chars):
    """Mean cross-entropy (nats/char) of the model on about ``max_chars`` characters of ``ids``.

    ``n_batch`` streams start at evenly spaced places over the whole of ``ids`` (so a part
    of the text stands for all of it) and are read in windows of ``seq_len`` with the state
    carried, as in training, until ``max_chars`` characters are scored."""
    ids = np.asarray(ids)
    n_batch = max(1, min(n_batch, (len(ids) - 1) // max(1, seq_len)))
    seq_len = min(seq_len, (len(ids) - 1) // n_batch)
    streams = data_mod.Streams(ids, n_batch, seq_len)
    n_windows = min(streams.n_windows, -(-max_chars // (n_batch * seq_len)))
    state, total, count = None, 0.0, 0
    for _ in range(n_windows):
        x, y, _reset = next(streams)
        loss, state = model.evaluate(x, y, state=state)
        total += loss * y.size
        count += y.size
    return total / count


class Trainer:
    """One training run: model, optimizer, data streams, truncation, clipping, history."""

    def __init__(self, args, corpus, model, label=None):
        from .. import truncation
        self.args, self.corpus, self.model = args, corpus, model
        self.label = label or args.truncation
        self.optimizer = OPTIMIZERS[args.optimizer](model.params, lr=args.lr, **(
            {"momentum": 0.9} if args.optimizer == "sgd" else {}))
        self.grads = model.zeros_like_params()
        self.rng = np.random.default_rng(args.seed + 1)
        self.truncation = truncation
        self.history = []            # (step, chars, seconds, train loss, val loss or nan)
        self.n_skipped = 0
        self.kept_steps = 0.0        # mean fraction of steps whose gradient is kept
        self.step = 0
        self.chars = 0
        self.train_time = 0.0

    def xi(self):
        a, T = self.args, self.args.seq_len
        if self.label == "full":
            return None
        if self.label == "chunked":
            return self.truncation.chunked(T, a.k, dtype=self.model.dtype)
        if self.label == "randomized":
            return self.truncation.randomized(T, a.p, self.rng, dtype=self.model.dtype)
        raise AssertionError(self.label)

    def clip_and_update(self):
        """Clip the gradients (value, then global norm) and update; a step whose gradient is
        not finite is skipped (counted in ``n_skipped``). Returns the norm before clipping."""
        from .. import clip
        a = self.args
        max_norm = a.clip if a.clip > 0 else float("inf")
        if a.clip_value is not None:
            norm = clip.clip_grad_value(self.grads, a.clip_value, error_if_nonfinite=False)
            if np.isfinite(norm):
                clip.clip_grad_norm(self.grads, max_norm)
        else:
            norm = clip.clip_grad_norm(self.grads, max_norm, error_if_nonfinite=False)
        if not np.isfinite(norm):
            self.n_skipped += 1          # an exploding step: skip it, keep training
            return norm
        self.optimizer.step(self.grads)
        return norm

    def batches(self):
        """Yield the training loss of each update (the windowed strategies)."""
        a, model = self.args, self.model
        streams = data_mod.Streams(self.corpus.train, a.batch, a.seq_len)
        state = None
        while True:
            x, y, reset = next(streams)
            if reset:
                state = None
            xi = self.xi()
            if xi is not None:
                self.kept_steps += float(np.count_nonzero(xi[1:])) / max(1, len(xi) - 1)
            else:
                self.kept_steps += 1.0
            loss, _, state = model.loss_and_grads(x, y, state=state, xi=xi, grads=self.grads)
            self.clip_and_update()
            yield loss, y.size

    def tbptt_batches(self):
        """Yield the training loss of each update of the TBPTT(k1, k2) driver (one layer)."""
        from ..tbptt import TBPTT, WeightGrads
        a, model, params, grads = self.args, self.model, self.model.params, self.grads
        streams = data_mod.Streams(self.corpus.train, a.batch, a.k1)
        chunks = _one_hot_chunks(streams, model.n_input, model.dtype)
        W, b = params["out.W"], params["out.b"]

        def loss_grad(h, t0, y):                      # h (N, m, H), y (N, m): the new steps
            n, m, hid = h.shape
            top = h.reshape(n * m, hid)
            loss, dz = softmax_cross_entropy(top @ W + b, y.reshape(-1))   # mean over the steps
            grads["out.W"] += top.T @ dz
            grads["out.b"] += dz.sum(axis=0)
            return loss, (dz @ W.T).reshape(n, m, hid)

        names = ["Wx", "Wh", "b"] + (["bh"] if model.cell == "gru" else [])
        layer_grads = WeightGrads(**{f"d{k}": grads[f"layer0.{k}"] for k in names})
        kwargs = {"nonlinearity": model.config["nonlinearity"]} if model.cell == "rnn" else {}
        if model.cell == "gru":
            kwargs["bh"] = params["layer0.bh"]
        driver = TBPTT(a.k1, a.k2, cell=model.cell, module=model._module)
        self.kept_steps = 0.0
        for win in driver.windows(chunks, None, params["layer0.Wx"], params["layer0.Wh"],
                                  params["layer0.b"], loss_grad, grads=layer_grads, **kwargs):
            self.kept_steps += 1.0
            self.clip_and_update()
            loss = win.loss
            for g in grads.values():
                g[...] = 0
            yield loss, (win.t1 - win.t0) * a.batch

    def train(self, progress):
        """Run the updates; returns True if interrupted by Ctrl-C."""
        a = self.args
        it = self.tbptt_batches() if self.label == "tbptt" else self.batches()
        window_loss, window_n = 0.0, 0
        last_val = None
        t0 = time.perf_counter()
        interrupted = False
        try:
            while self.step < a.steps:
                loss, n_chars = next(it)
                self.step += 1
                self.chars += n_chars
                window_loss += loss * n_chars
                window_n += n_chars
                elapsed = time.perf_counter() - t0
                if self.step % a.eval_every == 0 or self.step == a.steps:
                    t_eval = time.perf_counter()
                    last_val = evaluate(self.model, self.corpus.val, a.batch, a.seq_len,
                                        a.eval_chars)
                    t0 += time.perf_counter() - t_eval       # evaluation is not training time
                    elapsed = time.perf_counter() - t0
                    self.history.append((self.step, self.chars, elapsed,
                                         window_loss / window_n, last_val))
                    window_loss, window_n = 0.0, 0
                progress.update(self.step, loss, self.chars / max(elapsed, 1e-9), last_val)
        except KeyboardInterrupt:
            interrupted = True
            if window_n:
                self.history.append((self.step, self.chars, time.perf_counter() - t0,
                                     window_loss / window_n, float("nan")))
        finally:
            self.train_time = time.perf_counter() - t0
            it.close()
        return interrupted


# --------------------------------------------------------------------------------- outputs
def _figure():
    """A matplotlib Figure (no pyplot, no global backend change), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(8, 5), layout="tight")


def plot_losses(runs, baseline, path, title):
    """Training and validation loss against characters seen; False without matplotlib."""
    fig = _figure()
    if fig is None:
        return False
    ax = fig.add_subplot()
    for i, (label, history) in enumerate(runs):
        h = np.array(history, dtype=float).reshape(-1, 5)
        if not len(h):
            continue
        ax.plot(h[:, 1], h[:, 3], color=f"C{i}", alpha=0.5, lw=1, label=f"{label}: train")
        ok = np.isfinite(h[:, 4])
        ax.plot(h[ok, 1], h[ok, 4], color=f"C{i}", lw=2, marker="o", ms=3,
                label=f"{label}: validation")
    ax.axhline(baseline, color="gray", ls="--", lw=1, label=f"unigram baseline {baseline:.3f}")
    ax.set_xlabel("training characters")
    ax.set_ylabel("cross-entropy (nats / char)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return True


def write_history(runs, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "chars", "seconds", "train_loss", "val_loss"])
        for label, history in runs:
            for step, chars, secs, tr, va in history:
                w.writerow([label, step, chars, f"{secs:.3f}", f"{tr:.5f}",
                            "" if not np.isfinite(va) else f"{va:.5f}"])


def _build(args, corpus):
    V = len(corpus.vocab)
    return Model(V, args.hidden, V, cell=args.cell, n_layers=args.layers, input="onehot",
                 loss="softmax", dtype=np.dtype(args.dtype), backend=args.backend,
                 seed=args.seed)


def _metadata(args, corpus, trainer, val_loss, baseline):
    return {"vocab": corpus.vocab.chars, "corpus": corpus.name, "steps": trainer.step,
            "truncation": trainer.label, "seq_len": args.seq_len, "batch": args.batch,
            "val_loss": val_loss, "unigram_loss": baseline}


def _describe(args, corpus, model, baseline, compare=False):
    print(f"corpus: {corpus.name}: {len(corpus.text):,} chars, vocabulary {len(corpus.vocab)}, "
          f"train {len(corpus.train):,} / validation {len(corpus.val):,}")
    print(f"model: {model}")
    extra = {"chunked": f" K={args.k}", "randomized": f" p={args.p}",
             "tbptt": f" K1={args.k1} K2={args.k2}"}.get(args.truncation, "")
    what = "" if compare else f"truncation {args.truncation}{extra}, "
    print(f"training: {args.steps} steps of {args.batch} x {args.seq_len} chars, {what}"
          f"{args.optimizer} lr {args.lr:g}, clip {args.clip:g}")
    print(f"unigram baseline (validation): {baseline:.4f} nats/char")


def run(args):
    error = _check_args(args)
    if error:
        print(f"fastbptt train: error: {error}", file=sys.stderr)
        return 2
    try:
        corpus = data_mod.load_corpus(args.text, args.max_chars, args.val_fraction)
        min_chars = args.batch * args.seq_len + 2
        if len(corpus.train) < min_chars:
            raise ValueError(f"the training text has {len(corpus.train):,} characters, too few "
                             f"for --batch {args.batch} x --seq-len {args.seq_len} "
                             f"(at least {min_chars:,})")
    except (OSError, ValueError) as err:
        print(f"fastbptt train: error: {err}", file=sys.stderr)
        return 2
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        print(f"fastbptt train: error: --out {args.out}: cannot create the folder ({err})",
              file=sys.stderr)
        return 2
    baseline = data_mod.unigram_loss(corpus.train, corpus.val, len(corpus.vocab))
    with numpy_blas_threads(args.blas_threads):
        if args.compare_truncation:
            return _compare(args, corpus, baseline)
        return _train(args, corpus, baseline)


def _train(args, corpus, baseline):
    model = _build(args, corpus)
    _describe(args, corpus, model, baseline)
    trainer = Trainer(args, corpus, model)
    progress = Progress(args.steps, "train", plain=args.no_progress)
    interrupted = trainer.train(progress)
    progress.close()
    if interrupted:
        print(f"\ninterrupted at step {trainer.step}: saving what there is", file=sys.stderr)
    model_path = os.path.join(args.out, "model.npz")
    model.save(model_path, metadata=_metadata(args, corpus, trainer, None, baseline))
    runs = [(trainer.label, trainer.history)]
    write_history(runs, os.path.join(args.out, "loss.csv"))
    try:
        val = evaluate(model, corpus.val, args.batch, args.seq_len, DEFAULTS["final_eval_chars"])
        model.save(model_path, metadata=_metadata(args, corpus, trainer, val, baseline))
        rate = trainer.chars / max(trainer.train_time, 1e-9)
        print(f"\ntrained {trainer.step} steps, {trainer.chars:,} chars in "
              f"{trainer.train_time:.1f} s ({rate:,.0f} chars/s)"
              + (f"; {trainer.n_skipped} non-finite steps skipped" if trainer.n_skipped else ""))
        print(f"validation loss {val:.4f} nats/char ({val / np.log(2):.3f} bits/char); "
              f"unigram baseline {baseline:.4f} ({baseline / np.log(2):.3f} bits/char)")
        png = os.path.join(args.out, "loss.png")
        drawn = plot_losses(runs, baseline, png,
                            f"{args.cell.upper()} {args.layers}x{args.hidden} on {corpus.name}")
        sample = _sample(model, corpus, args)
        with open(os.path.join(args.out, "sample.txt"), "w", encoding="utf-8") as f:
            f.write(sample)
        print(f"\n--- sample (temperature {args.temperature:g}, primed with the first 64 "
              f"validation characters) ---\n{sample}\n---")
        print(f"wrote {model_path}, {os.path.join(args.out, 'loss.csv')}, "
              + (f"{png}, " if drawn else "")
              + f"{os.path.join(args.out, 'sample.txt')}")
        if not drawn:
            print(f"matplotlib is not installed, so no loss.png: {CLI_EXTRA} for the picture")
    except KeyboardInterrupt:
        print(f"\ninterrupted again: {model_path} is saved", file=sys.stderr)
        return 130
    return 130 if interrupted else 0


def _sample(model, corpus, args):
    if args.sample_len == 0:
        return ""
    prefix = corpus.val[:64] if len(corpus.val) >= 64 else corpus.train[:64]
    ids = model.sample(prefix, args.sample_len, rng=args.seed, temperature=args.temperature)
    return corpus.vocab.decode(prefix) + corpus.vocab.decode(ids)


# --------------------------------------------------------------------------------- comparison
def _compare(args, corpus, baseline):
    """Full, regular and randomized truncation: same initialisation, data and number of steps."""
    labels = {"full": "full BPTT", "chunked": f"regular (K={args.k})",
              "randomized": f"randomized (p={args.p:g})"}
    model0 = _build(args, corpus)
    _describe(args, corpus, model0, baseline, compare=True)
    print("comparing truncation: " + ", ".join(labels.values()) +
          f" ({args.steps} steps each)")
    runs, rows, interrupted = [], [], False
    for strategy, label in labels.items():
        model = _build(args, corpus)                    # same seed: the same initialisation
        trainer = Trainer(args, corpus, model, label=strategy)
        progress = Progress(args.steps, strategy, plain=args.no_progress)
        interrupted = trainer.train(progress)
        progress.close()
        if trainer.step == 0:
            break
        if interrupted:   # no long evaluation after Ctrl-C: the last one, if any
            vals = [h[4] for h in trainer.history if np.isfinite(h[4])]
            val = vals[-1] if vals else float("nan")
        else:
            val = evaluate(model, corpus.val, args.batch, args.seq_len,
                           DEFAULTS["final_eval_chars"])
        train_loss = trainer.history[-1][3] if trainer.history else float("nan")
        runs.append((label, trainer.history))
        rows.append((label, trainer.step, train_loss, val, trainer.train_time,
                     trainer.chars / max(trainer.train_time, 1e-9),
                     trainer.kept_steps / max(1, trainer.step)))
        model.save(os.path.join(args.out, f"model-{strategy}.npz"),
                   metadata=_metadata(args, corpus, trainer, val, baseline))
        if interrupted:
            print(f"\ninterrupted during {strategy}: saving what there is", file=sys.stderr)
            break
    w = max([len("unigram baseline")] + [len(r[0]) for r in rows])
    head = (f"{'truncation':<{w}} {'steps':>6} {'train loss':>10} {'val loss':>9} "
            f"{'seconds':>8} {'chars/s':>9} {'grad kept':>9}")
    lines = [head, "-" * len(head)]
    for label, steps, tr, va, secs, rate, kept in rows:
        lines.append(f"{label:<{w}} {steps:>6} {tr:>10.4f} {va:>9.4f} {secs:>8.1f} "
                     f"{rate:>9,.0f} {kept:>9.2f}")
    lines.append(f"{'unigram baseline':<{w}} {'':>6} {'':>10} {baseline:>9.4f}")
    lines.append("")
    lines.append("grad kept: mean fraction of time steps through which the gradient flows back "
                 "(1 = full BPTT within the window)")
    table = "\n".join(lines)
    print("\n" + table)
    with open(os.path.join(args.out, "compare.txt"), "w") as f:
        f.write(table + "\n")
    write_history(runs, os.path.join(args.out, "compare.csv"))
    png = os.path.join(args.out, "compare.png")
    if plot_losses(runs, baseline, png, f"Truncation strategies, {args.cell.upper()} "
                   f"{args.layers}x{args.hidden}, {args.steps} steps of {args.batch}x{args.seq_len}"):
        print(f"wrote {png}, {os.path.join(args.out, 'compare.txt')}, "
              f"{os.path.join(args.out, 'compare.csv')}")
    else:
        print(f"wrote {os.path.join(args.out, 'compare.txt')} and compare.csv; matplotlib is not "
              f"installed, so no compare.png: {CLI_EXTRA} for the picture")
    return 130 if interrupted else 0
