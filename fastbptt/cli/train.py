"""``fastbptt train``: a character-level language model trained with truncated BPTT.

The corpus is the source of Python's standard library on this machine (no download;
``fastbptt.nn.data``) or ``--text FILE``, split into a training head and a validation tail. The
model (``fastbptt.nn.Model``) reads one-hot characters (as min-char-rnn does: the first
layer's ``Wx`` is the embedding), runs ``--layers`` recurrent layers of ``--cell`` on fastbptt's
kernels and predicts the next character with a softmax. Training walks ``--batch`` parallel
streams through the text in windows of ``--seq-len`` characters, carrying the recurrent state
from window to window (truncated BPTT: the forward pass sees the whole stream, the gradient
stops at the window's start), with Adam and global-norm gradient clipping.

``--truncation`` chooses what happens inside a window (``fastbptt.truncation``,
``fastbptt.tbptt``):

* ``full``: backpropagate through the whole window (the default);
* ``chunked --k K``: regular truncation, no gradient across every K-th step;
* ``randomized --p P``: unbiased randomized truncation (Tallec and Ollivier 2017): the gradient
  through each step is kept with probability P and scaled by 1/P (default P = 1 - 1/K, so the
  cuts are as frequent on average as with ``chunked``);
* ``tbptt --k1 K1 --k2 K2``: Williams and Peng's TBPTT(k1, k2) over the endless stream: an
  update every K1 characters, backpropagating through the last K2 (one recurrent layer): the
  driver runs the model's layer (``Model.layer_arguments``) on its input (``Model.encode``), and
  the model's output layer and loss (``Model.output_loss``) hand the gradient back to it.

``--compare-truncation`` trains the same model from the same initialisation on the same data
and budget three times, with full, regular (chunked) and randomized truncation, and writes one
plot and one table. Ctrl-C stops training cleanly: the model so far is saved, with its loss
curve and a sample. ``--save-every S`` also saves it every S steps, and ``--resume`` continues
from the model saved in ``--out`` (its parameters, step count and place in the data; the
optimizer's moments and the streams' recurrent state start afresh).

``--cluster local:N`` (N single-threaded worker processes on this machine) or ``--cluster
tcp://HOST:PORT`` (a running Dask scheduler) trains on a Dask cluster
(``fastbptt.nn.distributed``, ``pip install 'fastbptt[dask]'``): synchronous data parallelism,
the batch's streams split among the workers, their gradients summed worker to worker every step
(equal to training here, to rounding), or with ``--sync-every K`` the parameters averaged every
K local steps. With ``--compare-truncation`` the three runs are three tasks on the cluster.
Without ``--cluster`` Dask is not imported.

Threads: each kernel call splits its sequences over ``--threads`` threads (default
``fastbptt.get_num_threads()``, every core this process may use), and NumPy's BLAS (the output
layer's products) runs on ``--blas-threads`` (default 1) while training lasts: OpenBLAS's
workers, left spinning after a NumPy product, compete with the kernels' threads for the cores
(the training step with NumPy's BLAS on 2 threads beside the kernels' 2 took 2.4 times as long
as with it on one; ``benchmarks/RESULTS.md``, "Every core").

``--task fill`` trains another task: in each window a fraction ``--fill-rate`` of the
characters is hidden behind a mask symbol, and the model predicts each hidden character from
the characters on both sides of it (the loss counts the hidden ones only; no state is carried
between windows, and there is no sample). ``--bidirectional`` (which implies ``--task fill``)
gives every layer a second cell that reads the window backwards (``Model(bidirectional=True)``):
only that model sees the right-hand side of a hidden character, so the two losses show what
reading both ways is worth.

Output (in ``--out``): ``model.npz`` (``Model.load``; the vocabulary is in its metadata),
``loss.csv``, ``loss.png`` (with matplotlib, ``pip install 'fastbptt[cli]'``), ``sample.txt``.
"""
import argparse
import contextlib
import csv
import io
import os
import re
import sys
import time
from argparse import Namespace

import numpy as np

from .. import CELLS, clip, truncation
from .._blas_threads import numpy_blas_threads
from .._checkpoint import takes_checkpoint
from .._threads import get_num_threads, num_threads
from ..nn import data
from ..nn.model import IMPLS, Model
from ..nn.optim import OPTIMIZERS
from ..tbptt import TBPTT, WeightGrads
from ._options import (
    UsageError,
    check_memory,
    checkpoint_steps,
    existing_file,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from ._output import CLI_EXTRA, DPI, OutDir, figure, make_out_dir

DEFAULTS = {
    "cell": "lstm", "hidden": 128, "layers": 1, "seq_len": 64, "batch": 32, "steps": 1500,
    "max_chars": 2_000_000, "eval_every": 100, "eval_chars": 20_000, "final_eval_chars": 200_000,
}
DEFAULT_LR = {"adam": 3e-3, "adagrad": 0.1, "sgd": 0.1}
STRATEGY_OPTIONS = {"k": "chunked", "p": "randomized", "k1": "tbptt", "k2": "tbptt"}
DASK_EXTRA = "pip install 'fastbptt[dask]'"


def cluster_spec(text):
    """``--cluster``'s value: ``local:N`` (N >= 1) or a scheduler address ``tcp://HOST:PORT``
    (also tls://, ws://, wss://); checked here, so a typo fails before Dask is imported."""
    m = re.fullmatch(r"local:(\d+)", text)
    if m:
        if int(m.group(1)) < 1:
            raise argparse.ArgumentTypeError(f"local:N needs N >= 1 workers, got {text}")
        return text
    if re.fullmatch(r"(tcp|tls|ws|wss)://[^\s/]+:\d+/?", text):
        return text
    raise argparse.ArgumentTypeError(f"must be local:N or tcp://HOST:PORT, got {text!r}")


@contextlib.contextmanager
def training_threads(args):
    """The kernels on ``args.threads`` threads (None: fastbptt's default) and NumPy's BLAS on
    ``args.blas_threads`` (0: NumPy's own setting) while training."""
    threads = args.threads if args.threads is not None else get_num_threads()
    with num_threads(threads), numpy_blas_threads(args.blas_threads):
        yield


# --------------------------------------------------------------------------------- arguments
def add_arguments(parser):
    d = DEFAULTS
    cells = tuple(CELLS)
    g = parser.add_argument_group("model")
    g.add_argument("--cell", choices=cells, default=d["cell"],
                   help=f"recurrent cell: {', '.join(cells)} (default {d['cell']})")
    g.add_argument("--hidden", type=positive_int, default=d["hidden"], metavar="H",
                   help=f"hidden units per layer (default {d['hidden']})")
    g.add_argument("--layers", type=positive_int, default=d["layers"], metavar="L",
                   help=f"stacked recurrent layers (default {d['layers']})")
    g.add_argument("--bidirectional", action="store_true",
                   help="every layer also reads each window backwards (implies --task fill)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float type of the model (default float32)")
    g.add_argument("--backend", choices=tuple(IMPLS), default="kernels",
                   help="recurrent layers on the compiled kernels (default) or the NumPy "
                        "reference")
    g.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads of each kernel call (default: every core this process may "
                        "use, or FASTBPTT_NUM_THREADS)")
    g.add_argument("--blas-threads", type=non_negative_int, default=1, metavar="N",
                   help="threads for NumPy's own BLAS (the output layer) while training; 0 "
                        "leaves NumPy's setting alone (default 1: OpenBLAS workers left spinning "
                        "after a NumPy product slow the kernels' threads down)")

    g = parser.add_argument_group("data")
    g.add_argument("--text", type=existing_file, metavar="FILE",
                   help="train on this UTF-8 text file instead of the Python standard "
                        "library's source")
    g.add_argument("--max-chars", type=positive_int, default=d["max_chars"], metavar="C",
                   help=f"use at most C characters of the corpus (default {d['max_chars']:,})")
    g.add_argument("--val-fraction", type=fraction, default=0.1, metavar="F",
                   help="the tail of the corpus held out for validation (default 0.1)")

    g = parser.add_argument_group("training")
    g.add_argument("--task", choices=("next", "fill"),
                   help="next: predict the next character (the default); fill: predict the "
                        "characters hidden behind a mask from both sides (the default with "
                        "--bidirectional)")
    g.add_argument("--fill-rate", type=probability, default=0.15, metavar="F",
                   help="--task fill: the fraction of characters hidden (default 0.15)")
    g.add_argument("--steps", type=positive_int, default=d["steps"], metavar="S",
                   help=f"parameter updates (default {d['steps']})")
    g.add_argument("--seq-len", type=positive_int, default=d["seq_len"], metavar="T",
                   help=f"characters per window (default {d['seq_len']})")
    g.add_argument("--batch", type=positive_int, default=d["batch"], metavar="N",
                   help=f"parallel streams (default {d['batch']})")
    g.add_argument("--truncation", choices=("full", "chunked", "randomized", "tbptt"),
                   default="full", help="gradient truncation inside a window (default full)")
    g.add_argument("--k", type=positive_int, metavar="K", help="chunked: cut the gradient "
                   "every K steps (default seq-len/4)")
    g.add_argument("--p", type=probability, metavar="P", help="randomized: keep each step's "
                   "gradient with probability P, scaled by 1/P (default 1 - 1/K: a cut every K "
                   "steps on average, as chunked)")
    g.add_argument("--k1", type=positive_int, metavar="K1", help="tbptt: update every K1 "
                   "characters (default seq-len)")
    g.add_argument("--k2", type=positive_int, metavar="K2", help="tbptt: backpropagate "
                   "through the last K2 characters, K2 >= K1 (default 2*K1)")
    g.add_argument("--checkpoint", type=checkpoint_steps, metavar="K|sqrt",
                   help="keep the states of every K-th step only and recompute the rest in "
                   "backward (O(T/K + K) memory for one more forward; 'sqrt': K = "
                   "ceil(sqrt(seq-len))); default: keep every step")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="adam (default), adagrad (as in min-char-rnn) or sgd (momentum 0.9)")
    g.add_argument("--lr", type=positive_float, metavar="LR", help="learning rate (default: "
                   "adam 3e-3, adagrad 0.1, sgd 0.1)")
    g.add_argument("--clip", type=non_negative_float, default=5.0, metavar="MAX_NORM",
                   help="clip the gradients' global norm to MAX_NORM; 0 turns it off "
                        "(default 5)")
    g.add_argument("--clip-value", type=positive_float, metavar="V",
                   help="also clip every gradient entry into [-V, V]")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--compare-truncation", action="store_true",
                   help="train with full, chunked and randomized truncation on the same data "
                        "and budget (three runs) and write one plot and one table")

    g = parser.add_argument_group("cluster (Dask: pip install 'fastbptt[dask]')")
    g.add_argument("--cluster", type=cluster_spec, metavar="local:N|tcp://HOST:PORT",
                   help="train on a Dask cluster: local:N starts N single-threaded worker "
                        "processes here, tcp://HOST:PORT connects to a running scheduler; the "
                        "batch's streams are split among the workers, their gradients summed "
                        "every step (with --compare-truncation: the three runs as tasks)")
    g.add_argument("--sync-every", type=positive_int, metavar="K",
                   help="with --cluster: K local steps on each worker, then average the "
                        "parameters (less communication; not equal to training on one "
                        "process); default 1, sum the gradients every step")

    g = parser.add_argument_group("output")
    g.add_argument("--out", default="fastbptt-train", metavar="DIR",
                   help="folder for model.npz, loss.csv, loss.png, sample.txt "
                        "(default ./fastbptt-train)")
    g.add_argument("--eval-every", type=positive_int, default=d["eval_every"], metavar="S",
                   help=f"validation loss every S steps (default {d['eval_every']})")
    g.add_argument("--eval-chars", type=positive_int, default=d["eval_chars"], metavar="C",
                   help=f"validation characters per evaluation during training "
                        f"(default {d['eval_chars']:,}; the final one uses up to "
                        f"{d['final_eval_chars']:,})")
    g.add_argument("--sample-len", type=non_negative_int, default=400, metavar="C",
                   help="characters to generate at the end (default 400)")
    g.add_argument("--temperature", type=positive_float, default=0.8,
                   help="sampling temperature (default 0.8)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar: plain periodic lines")
    g.add_argument("--save-every", type=positive_int, metavar="S",
                   help="also save model.npz every S steps (to --resume from)")
    g.add_argument("--resume", action="store_true",
                   help="continue from model.npz in --out (saved by --save-every, Ctrl-C or "
                        "a finished run) up to --steps in all; the same model and data options")


def settings(args):
    """The options of a run with the defaults that depend on other options filled in (K, P,
    K1, K2, the learning rate), as a new namespace; a ``UsageError`` for options that do not go
    together."""
    t = args.truncation
    for option, owner in STRATEGY_OPTIONS.items():
        if getattr(args, option) is not None and t != owner and not args.compare_truncation:
            raise UsageError(f"--{option} goes with --truncation {owner}, not {t}")
    k = args.k if args.k is not None else max(1, args.seq_len // 4)
    # by default the same mean distance between cuts as chunked: 1/(1-p) = K
    p = args.p if args.p is not None else (1 - 1 / k if k > 1 else 0.5)
    k1 = args.k1 if args.k1 is not None else args.seq_len
    k2 = args.k2 if args.k2 is not None else 2 * k1
    if t == "tbptt":
        if args.compare_truncation:
            raise UsageError("--compare-truncation compares full, chunked and randomized; "
                             "drop --truncation tbptt")
        if args.layers != 1:
            raise UsageError("--truncation tbptt drives one recurrent layer (fastbptt.tbptt); "
                             f"use --layers 1, got {args.layers}")
        if k2 < k1:
            raise UsageError(f"--k1/--k2 need 1 <= K1 <= K2, got K1={k1} K2={k2}")
    if (getattr(args, "checkpoint", None) is not None
            and not takes_checkpoint(IMPLS[args.backend].CELLS[args.cell].forward)):
        raise UsageError(f"--checkpoint does not go with --cell {args.cell}")
    if getattr(args, "checkpoint", None) is not None and t == "tbptt":
        raise UsageError("--checkpoint goes with the strategies over whole windows (full, "
                         "chunked, randomized); TBPTT keeps K2 steps only already")
    cluster = getattr(args, "cluster", None)
    if cluster is None and getattr(args, "sync_every", None) is not None:
        raise UsageError("--sync-every goes with --cluster")
    if cluster is not None and getattr(args, "checkpoint", None) is not None:
        raise UsageError("--checkpoint runs on one process (the replicas keep every step); "
                         "drop --cluster")
    if cluster is not None and t == "tbptt":
        raise UsageError("--truncation tbptt runs on one process; drop --cluster")
    if getattr(args, "resume", False) and args.compare_truncation:
        raise UsageError("--resume continues one run; drop --compare-truncation")
    task = getattr(args, "task", None) or (
        "fill" if getattr(args, "bidirectional", False) else "next")
    if task == "next" and getattr(args, "bidirectional", False):
        raise UsageError("--bidirectional reads the next character before predicting it; "
                         "use --task fill")
    if task == "fill":
        for given, option in ((t == "tbptt", "--truncation tbptt"),
                              (cluster is not None, "--cluster"),
                              (args.compare_truncation, "--compare-truncation"),
                              (getattr(args, "resume", False), "--resume")):
            if given:
                raise UsageError(f"{option} goes with --task next, not --task fill")
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    return Namespace(**{**vars(args), "k": k, "p": p, "k1": k1, "k2": k2, "lr": lr,
                        "task": task, "bidirectional": getattr(args, "bidirectional", False),
                        "fill_rate": getattr(args, "fill_rate", 0.15),
                        "cluster": cluster, "sync_every": getattr(args, "sync_every", None) or 1,
                        "save_every": getattr(args, "save_every", None),
                        "resume": getattr(args, "resume", False)})


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
def hide(ids, rate, rng, mask_id):
    """The fill task's window: (inputs, mask), ``ids`` (N, T) with a fraction ``rate`` of them,
    drawn by ``rng`` (at least one), replaced by ``mask_id``, and the (N, T) bool mask of those
    (the steps the loss counts)."""
    mask = rng.random(ids.shape) < rate
    if not mask.any():
        mask.flat[rng.integers(mask.size)] = True
    return np.where(mask, mask_id, ids), mask


def evaluate(model, ids, n_batch, seq_len, max_chars, fill_rate=None):
    """Mean cross-entropy (nats/char) of the model on about ``max_chars`` characters of ``ids``.

    ``n_batch`` streams start at evenly spaced places over the whole of ``ids`` (so a part
    of the text stands for all of it) and are read in windows of ``seq_len`` with the state
    carried, as in training, until ``max_chars`` characters are scored. With ``fill_rate`` (the
    fill task), each window alone with that fraction of its characters hidden (the same ones
    on every call), the loss over the hidden ones."""
    if fill_rate is not None:
        return _evaluate_fill(model, ids, n_batch, seq_len, max_chars, fill_rate)
    ids = np.asarray(ids)
    n_batch = max(1, min(n_batch, (len(ids) - 1) // max(1, seq_len)))
    seq_len = min(seq_len, (len(ids) - 1) // n_batch)
    streams = data.Streams(ids, n_batch, seq_len)
    n_windows = min(streams.n_windows, -(-max_chars // (n_batch * seq_len)))
    state, total, count = None, 0.0, 0
    for _ in range(n_windows):
        x, y, _reset = next(streams)
        loss, state = model.evaluate(x, y, state=state)
        total += loss * y.size
        count += y.size
    return total / count


def _evaluate_fill(model, ids, n_batch, seq_len, max_chars, fill_rate):
    ids = np.asarray(ids)
    n_batch = max(1, min(n_batch, (len(ids) - 1) // max(1, seq_len)))
    seq_len = min(seq_len, (len(ids) - 1) // n_batch)
    streams = data.Streams(ids, n_batch, seq_len)
    n_windows = min(streams.n_windows, -(-max_chars // (n_batch * seq_len)))
    rng = np.random.default_rng(0)
    total, count = 0.0, 0
    for _ in range(n_windows):
        x, _y, _reset = next(streams)
        inputs, mask = hide(x, fill_rate, rng, model.n_input - 1)
        loss, _ = model.evaluate(inputs, x, mask=mask)
        total += loss * mask.sum()
        count += mask.sum()
    return total / count


class Trainer:
    """One training run: model, optimizer, data streams, truncation, clipping, history."""

    def __init__(self, args, corpus, model, label=None):
        self.args, self.corpus, self.model = args, corpus, model
        self.label = label or args.truncation
        self.optimizer = OPTIMIZERS[args.optimizer](model.params, lr=args.lr, **(
            {"momentum": 0.9} if args.optimizer == "sgd" else {}))
        self.grads = model.zeros_like_params()
        self.rng = np.random.default_rng(args.seed + 1)
        self.history = []            # (step, chars, seconds, train loss, val loss or nan)
        self.n_skipped = 0
        self.kept_steps = 0.0        # mean fraction of steps whose gradient is kept
        self.step = 0
        self.chars = 0
        self.start_step = 0          # steps taken by the run resumed (--resume)
        self.start_chars = 0         # and the chars it trained on
        self.train_time = 0.0
        self.on_step = None          # called with the trainer after every step (--save-every)

    def xi(self):
        a, T = self.args, self.args.seq_len
        if self.label == "full":
            return None
        if self.label == "chunked":
            return truncation.chunked(T, a.k, dtype=self.model.dtype)
        if self.label == "randomized":
            return truncation.randomized(T, a.p, self.rng, dtype=self.model.dtype)
        raise AssertionError(self.label)

    def clip_and_update(self):
        """Clip the gradients (value, then global norm) and update; a step whose gradient is
        not finite is skipped (counted in ``n_skipped``). Returns the norm before clipping."""
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
        streams = data.Streams(self.corpus.train, a.batch, a.seq_len)
        streams.position = self.step                     # > 0 when resumed
        state = None
        while True:
            x, y, reset = next(streams)
            if a.task == "fill":            # each window alone: the model reads it both ways
                hidden, mask = hide(x, a.fill_rate, self.rng, model.n_input - 1)
                loss, _, _ = model.loss_and_grads(hidden, x, mask=mask, xi=self.xi(),
                                                  grads=self.grads)
                self.kept_steps += 1.0
                self.clip_and_update()
                yield loss, y.size
                continue
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
        """Yield the training loss of each update of the TBPTT(k1, k2) driver (one layer).

        The driver runs the model's recurrent layer on the model's input for each chunk of the
        stream; the model's output layer and loss take the hidden states of the new steps and
        hand back their gradient, adding the output layer's own into ``grads`` as they go."""
        a, model, grads = self.args, self.model, self.grads
        streams = data.Streams(self.corpus.train, a.batch, a.k1)
        streams.position = self.step
        # the state runs on across the start of a new pass
        chunks = ((model.encode(x), y) for x, y, _reset in streams)
        args, kwargs = model.layer_arguments(0)

        def loss_grad(h, t0, y):             # h (N, m, H), y (N, m): the new steps
            return model.output_loss(h, y, grads)

        driver = TBPTT(a.k1, a.k2, cell=model.cell, impl=model.impl)
        self.kept_steps = 0.0
        for win in driver.windows(chunks, None, *args, loss_grad,
                                  grads=WeightGrads(**model.layer_grads(grads, 0)), **kwargs):
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
                                        a.eval_chars, fill_rate=_fill_rate(a))
                    t0 += time.perf_counter() - t_eval       # evaluation is not training time
                    elapsed = time.perf_counter() - t0
                    self.history.append((self.step, self.chars, elapsed,
                                         window_loss / window_n, last_val))
                    window_loss, window_n = 0.0, 0
                progress.update(self.step, loss,
                                (self.chars - self.start_chars) / max(elapsed, 1e-9), last_val)
                if self.on_step is not None:
                    self.on_step(self)
        except KeyboardInterrupt:
            interrupted = True
            if window_n:
                self.history.append((self.step, self.chars, time.perf_counter() - t0,
                                     window_loss / window_n, float("nan")))
        finally:
            self.train_time = time.perf_counter() - t0
            it.close()
        return interrupted


class ClusterTrainer(Trainer):
    """A ``Trainer`` whose steps run data-parallel on a Dask cluster
    (``fastbptt.nn.distributed.DataParallel``): the same windows, truncation multipliers,
    clipping and optimizer, each worker serving a shard of the batch. The local model receives
    the replicas' parameters before every evaluation, save and at the end."""

    def __init__(self, args, corpus, model, client, label=None):
        super().__init__(args, corpus, model, label)
        self.client = client
        self.parallel = None

    def _xi(self):
        """The next step's truncation multipliers, counted as ``batches`` counts them."""
        xi = self.xi()
        self.kept_steps += (1.0 if xi is None else
                            float(np.count_nonzero(xi[1:])) / max(1, len(xi) - 1))
        return xi

    def start(self):
        """Start the replicas on the workers, from the model's parameters and ``self.step``."""
        from ..nn.distributed import DataParallel
        a = self.args
        self.parallel = DataParallel(
            self.model, self.corpus.train, client=self.client, batch=a.batch, seq_len=a.seq_len,
            optimizer=a.optimizer, lr=a.lr,
            optimizer_options={"momentum": 0.9} if a.optimizer == "sgd" else {},
            clip=a.clip, clip_value=a.clip_value, sync_every=a.sync_every, start=self.step)
        return self.parallel

    def _stop(self, step):
        """Whether the local model needs the replicas' parameters after ``step``: to evaluate,
        to save, at the end (the replicas' chunks of steps end there)."""
        a = self.args
        return (step % a.eval_every == 0 or step == a.steps
                or bool(a.save_every and step % a.save_every == 0))

    def batches(self):
        a = self.args
        if self.parallel is None:
            self.start()
        steps = self.parallel.train(a.steps - self.step, xi=self._xi, stops=self._stop)
        try:
            for loss in steps:
                if self._stop(self.parallel.step_count):
                    self.parallel.pull()
                yield loss, a.batch * a.seq_len
        finally:
            steps.close()

    def train(self, progress):
        if self.parallel is None:
            try:
                self.start()                 # before the clock starts: not training time
            except KeyboardInterrupt:
                return True
        interrupted = super().train(progress)
        if self.parallel is not None:
            # steps issued before an interrupt have finished since: count them, and take the
            # parameters after the last of them
            extra = self.parallel.step_count - self.step
            self.step += extra
            self.chars += extra * self.args.batch * self.args.seq_len
            self.parallel.pull()
            self.n_skipped = self.parallel.n_skipped
        return interrupted

    def close(self):
        if self.parallel is not None:
            self.parallel.close()


def cluster_report(parallel):
    """One line: where a data-parallel step's time went (``DataParallel.timing_summary``)."""
    t = parallel.timing_summary()
    if t is None:
        return None
    ms = {k: v * 1e3 for k, v in t.items()}
    return (f"cluster: {parallel.world} replicas, {ms['wall']:.1f} ms per step (median): "
            f"forward and backward {ms['compute']:.1f} ms (the slowest replica), update "
            f"{ms['apply']:.1f} ms, communication {ms['communication']:.1f} ms "
            f"({ms['communication'] / ms['wall']:.0%}; in the exchange of gradients "
            f"{ms['exchange']:.1f} ms)")


# --------------------------------------------------------------------------------- outputs
def plot_losses(runs, baseline, path, title):
    """Training and validation loss against characters seen; False without matplotlib."""
    fig = figure()
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
    fig.savefig(path, dpi=DPI)
    return True


def write_history(runs, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "chars", "seconds", "train_loss", "val_loss"])
        for label, history in runs:
            for step, chars, secs, tr, va in history:
                w.writerow([label, step, chars, f"{secs:.3f}", f"{tr:.5f}",
                            "" if not np.isfinite(va) else f"{va:.5f}"])


def _fill_rate(args):
    """The fraction of characters hidden (the fill task), or None (next character)."""
    return args.fill_rate if getattr(args, "task", "next") == "fill" else None


def _build(args, corpus):
    V = len(corpus.vocab)
    fill = getattr(args, "task", "next") == "fill"     # the mask symbol is input V
    return Model(V + fill, args.hidden, V, cell=args.cell, n_layers=args.layers,
                 input="onehot", loss="softmax", dtype=np.dtype(args.dtype),
                 impl=IMPLS[args.backend], seed=args.seed,
                 checkpoint=getattr(args, "checkpoint", None),
                 bidirectional=getattr(args, "bidirectional", False))


def _metadata(args, corpus, trainer, val_loss, baseline):
    return {"vocab": corpus.vocab.chars, "corpus": corpus.name, "steps": trainer.step,
            "truncation": trainer.label, "seq_len": args.seq_len, "batch": args.batch,
            "val_loss": val_loss, "unigram_loss": baseline,
            "task": getattr(args, "task", "next")}


def _describe(args, corpus, model, baseline, compare=False):
    print(f"corpus: {corpus.name}: {len(corpus.text):,} chars, vocabulary {len(corpus.vocab)}, "
          f"train {len(corpus.train):,} / validation {len(corpus.val):,}")
    print(f"model: {model}")
    extra = {"chunked": f" K={args.k}", "randomized": f" p={args.p}",
             "tbptt": f" K1={args.k1} K2={args.k2}"}.get(args.truncation, "")
    what = "" if compare else f"truncation {args.truncation}{extra}, "
    if getattr(args, "task", "next") == "fill":
        what = (f"filling in {args.fill_rate:.0%} of the characters, hidden, from both "
                f"sides, {what}")
    print(f"training: {args.steps} steps of {args.batch} x {args.seq_len} chars, {what}"
          f"{args.optimizer} lr {args.lr:g}, clip {args.clip:g}")
    print(f"unigram baseline (validation): {baseline:.4f} nats/char")


def run(args):
    args = settings(args)
    try:
        corpus = data.load_corpus(args.text, args.max_chars, args.val_fraction)
        min_chars = args.batch * args.seq_len + 2
        if len(corpus.train) < min_chars:
            raise ValueError(f"the training text has {len(corpus.train):,} characters, too few "
                             f"for --batch {args.batch} x --seq-len {args.seq_len} "
                             f"(at least {min_chars:,})")
    except (OSError, ValueError) as err:
        print(f"fastbptt train: error: {err}", file=sys.stderr)
        return 2
    check_memory(f"--hidden {args.hidden}, --layers {args.layers}, --batch {args.batch} and "
                 f"--seq-len {args.seq_len}", _training_bytes(args, len(corpus.vocab)))
    if not make_out_dir("train", args.out):
        return 2
    baseline = data.unigram_loss(corpus.train, corpus.val, len(corpus.vocab))
    out = OutDir("train", args.out)
    client = None
    if args.cluster is not None:
        client = _connect(args.cluster)
        if client is None:
            return 2
    try:
        with training_threads(args):
            if args.compare_truncation:
                return _compare(args, corpus, baseline, out, client)
            return _train(args, corpus, baseline, out, client)
    except MemoryError:
        print("fastbptt train: error: out of memory; use a smaller --hidden, --layers, --batch "
              "or --seq-len", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            _close(client)


def _training_bytes(args, n_vocab):
    """About the memory a run needs: the parameters, their gradients, the optimizer's two
    moments and its scratch (5 arrays of each parameter), and per layer the activations of a
    window of --batch x --seq-len (the gate values, the states, their gradients; with
    --checkpoint, no gate values)."""
    cell, n_hidden = CELLS[args.cell], args.hidden
    n_params = n_vocab * (n_hidden + 1)                              # the output layer
    for layer in range(args.layers):
        shapes = cell.weight_shapes(n_vocab if layer == 0 else n_hidden, n_hidden)
        n_params += sum(int(np.prod(shape)) for shape in shapes.values())
    rows = args.batch * args.seq_len
    per_row = n_vocab + args.layers * 2 * (cell.n_gates + 2) * n_hidden
    if getattr(args, "checkpoint", None) is not None:    # per layer: its states and dx only
        per_row = n_vocab + args.layers * 2 * 2 * n_hidden
    return np.dtype(args.dtype).itemsize * (5 * n_params + 2 * rows * per_row)


def _close(client):
    """Close the Dask client (and a local cluster with it); a cluster that fails to shut down
    cleanly (a worker just lost) is reported, not raised over what the run did."""
    try:
        client.close()
    except Exception as err:
        print(f"fastbptt train: warning: closing the cluster: {err!r}", file=sys.stderr)


def _connect(spec):
    """A Dask client for ``--cluster``; None, with the error printed, where there is none."""
    try:
        from ..nn import distributed
    except ImportError:
        print(f"fastbptt train: error: --cluster needs Dask's distributed scheduler, which is "
              f"not installed: {DASK_EXTRA}", file=sys.stderr)
        return None
    try:
        client = distributed.connect(spec)
    except (OSError, ValueError, TimeoutError) as err:
        print(f"fastbptt train: error: --cluster {spec}: {err}", file=sys.stderr)
        return None
    print(f"cluster: {spec}, {len(distributed.worker_addresses(client))} workers")
    return client


def _resume(args, corpus, model, trainer):
    """Load the model saved in ``--out`` into ``model`` and set ``trainer`` at its step, with
    the loss history so far; a ``ValueError`` naming --resume where it does not fit."""
    path = os.path.join(args.out, "model.npz")
    if not os.path.isfile(path):
        raise ValueError(f"--resume: there is no {path} to continue from (runs save it at the "
                         "end, on Ctrl-C and with --save-every)")
    saved = Model.load(path, impl=model.impl)
    meta = saved.metadata
    if saved.config != model.config:
        raise ValueError(f"--resume: {path} holds {saved}; the options give {model}")
    if meta.get("vocab") != corpus.vocab.chars:
        raise ValueError(f"--resume: {path} was trained on another vocabulary: use the same "
                         "--text and --max-chars")
    for option in ("batch", "seq_len"):
        if meta.get(option) != getattr(args, option):
            raise ValueError(f"--resume: {path} was trained with --{option.replace('_', '-')} "
                             f"{meta.get(option)}, not {getattr(args, option)}")
    for name, p in model.params.items():
        p[...] = saved.params[name]
    step = int(meta.get("steps", 0))
    trainer.step = trainer.start_step = step
    trainer.chars = trainer.start_chars = step * args.batch * (
        args.k1 if trainer.label == "tbptt" else args.seq_len)
    csv_path = os.path.join(args.out, "loss.csv")
    if os.path.isfile(csv_path):
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row["run"] == trainer.label and int(row["step"]) <= step:
                    trainer.history.append((int(row["step"]), int(row["chars"]),
                                            float(row["seconds"]), float(row["train_loss"]),
                                            float(row["val_loss"] or "nan")))
    print(f"resuming from {path} at step {step}")
    return step


def _train(args, corpus, baseline, out, client=None):
    model = _build(args, corpus)
    _describe(args, corpus, model, baseline)
    trainer = (Trainer(args, corpus, model) if client is None
               else ClusterTrainer(args, corpus, model, client))
    model_path = os.path.join(args.out, "model.npz")
    if args.resume:
        try:
            _resume(args, corpus, model, trainer)
        except (OSError, ValueError) as err:
            print(f"fastbptt train: error: {err}", file=sys.stderr)
            return 2
    saved = {"step": None}
    if args.save_every:
        def save(trainer):
            if trainer.step % args.save_every == 0:
                model.save(model_path, metadata=_metadata(args, corpus, trainer, None, baseline))
                write_history([(trainer.label, trainer.history)],
                              os.path.join(args.out, "loss.csv"))
                saved["step"] = trainer.step
        trainer.on_step = save
    progress = Progress(args.steps, "train", plain=args.no_progress)
    if client is None:
        interrupted = trainer.train(progress)
        progress.close()
    else:
        from ..nn.distributed import ReplicaLostError
        try:
            interrupted = trainer.train(progress)
        except ReplicaLostError as err:
            progress.close()
            trainer.close()
            where = (f"{model_path} holds the model saved at step {saved['step']}: continue "
                     f"with --resume" if saved["step"] is not None else
                     "nothing was saved (--save-every S saves the model every S steps)")
            print(f"\nfastbptt train: error: step {trainer.step + 1} failed: {err}\n{where}",
                  file=sys.stderr)
            return 1
        progress.close()
        report = cluster_report(trainer.parallel) if trainer.parallel is not None else None
        trainer.close()
        if report:
            print(report)
    if interrupted:
        print(f"\ninterrupted at step {trainer.step}: saving what there is", file=sys.stderr)
    model_path, _ = out.write("model.npz",
                              _saver(model, _metadata(args, corpus, trainer, None, baseline)))
    runs = [(trainer.label, trainer.history)]
    csv_path, _ = out.write("loss.csv", lambda path: write_history(runs, path))
    try:
        val = evaluate(model, corpus.val, args.batch, args.seq_len, DEFAULTS["final_eval_chars"],
                       fill_rate=_fill_rate(args))
        model_path, _ = out.write("model.npz",
                                  _saver(model, _metadata(args, corpus, trainer, val, baseline)))
        rate = (trainer.chars - trainer.start_chars) / max(trainer.train_time, 1e-9)
        done = f"{trainer.step} steps" if not trainer.start_step else \
            f"{trainer.step - trainer.start_step} more steps (to step {trainer.step})"
        print(f"\ntrained {done}, {trainer.chars - trainer.start_chars:,} chars in "
              f"{trainer.train_time:.1f} s ({rate:,.0f} chars/s)"
              + (f"; {trainer.n_skipped} non-finite steps skipped" if trainer.n_skipped else ""))
        scored = " (the hidden characters)" if _fill_rate(args) is not None else ""
        print(f"validation loss{scored} {val:.4f} nats/char ({val / np.log(2):.3f} bits/char); "
              f"unigram baseline {baseline:.4f} ({baseline / np.log(2):.3f} bits/char)")
        png, drawn = out.write("loss.png", lambda path: plot_losses(
            runs, baseline, path, f"{args.cell.upper()} {args.layers}x{args.hidden} on "
                                  f"{corpus.name}"))
        sample = _sample(model, corpus, args)
        sample_path, _ = out.write("sample.txt", lambda path: _write_text(path, sample))
        if sample:
            print(f"\n--- sample (temperature {args.temperature:g}, primed with the first 64 "
                  f"validation characters) ---\n{sample}\n---")
        print(f"wrote {model_path}, {csv_path}, " + (f"{png}, " if drawn else "")
              + f"{sample_path}")
        if not drawn:
            print(f"matplotlib is not installed, so no loss.png: {CLI_EXTRA} for the picture")
    except KeyboardInterrupt:
        print(f"\ninterrupted again: {model_path} is saved", file=sys.stderr)
        return 130
    return 130 if interrupted else 0


def _saver(model, metadata):
    """Writes ``model`` with ``metadata`` to the path it is given (``OutDir.write``)."""
    return lambda path: model.save(path, metadata=metadata)


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _sample(model, corpus, args):
    if args.sample_len == 0 or getattr(args, "task", "next") == "fill":
        return ""
    prefix = corpus.val[:64] if len(corpus.val) >= 64 else corpus.train[:64]
    ids = model.sample(prefix, args.sample_len, rng=args.seed, temperature=args.temperature)
    return corpus.vocab.decode(prefix) + corpus.vocab.decode(ids)


# --------------------------------------------------------------------------------- comparison
def _run_strategy(strategy, args, corpus, progress=None):
    """One run of the comparison (a task on a worker with --cluster): train a new model with
    truncation ``strategy`` and evaluate it. Returns what the table, the plot and the saved
    model need, parameters included."""
    with training_threads(args):
        model = _build(args, corpus)                    # same seed: the same initialisation
        trainer = Trainer(args, corpus, model, label=strategy)
        if progress is None:                            # on a worker: nobody to show it to
            progress = Progress(args.steps, strategy, plain=True, file=io.StringIO())
        interrupted = trainer.train(progress)
        if trainer.step == 0:
            val = float("nan")
        elif interrupted:   # no long evaluation after Ctrl-C: the last one, if any
            vals = [h[4] for h in trainer.history if np.isfinite(h[4])]
            val = vals[-1] if vals else float("nan")
        else:
            val = evaluate(model, corpus.val, args.batch, args.seq_len,
                           DEFAULTS["final_eval_chars"])
    return Namespace(label=strategy, step=trainer.step, history=trainer.history,
                     train_loss=trainer.history[-1][3] if trainer.history else float("nan"),
                     val=val, train_time=trainer.train_time, chars=trainer.chars,
                     kept_steps=trainer.kept_steps, params=model.params,
                     interrupted=interrupted)


def _compare(args, corpus, baseline, out, client=None):
    """Full, regular and randomized truncation: same initialisation, data and number of steps;
    one after the other here, or as three tasks on the cluster of ``client``."""
    labels = {"full": "full BPTT", "chunked": f"regular (K={args.k})",
              "randomized": f"randomized (p={args.p:g})"}
    model0 = _build(args, corpus)
    _describe(args, corpus, model0, baseline, compare=True)
    print("comparing truncation: " + ", ".join(labels.values()) +
          f" ({args.steps} steps each" + (", as tasks on the cluster)" if client else ")"))
    runs, rows, interrupted = [], [], False

    def record(strategy, result):
        """Save a run's model and add its curve and its row of the table."""
        model = _build(args, corpus)
        for name, p in model.params.items():
            p[...] = result.params[name]
        runs.append((labels[strategy], result.history))
        rows.append((labels[strategy], result.step, result.train_loss, result.val,
                     result.train_time, result.chars / max(result.train_time, 1e-9),
                     result.kept_steps / max(1, result.step)))
        out.write(f"model-{strategy}.npz",
                  _saver(model, _metadata(args, corpus, result, result.val, baseline)))

    if client is None:
        for strategy in labels:
            progress = Progress(args.steps, strategy, plain=args.no_progress)
            result = _run_strategy(strategy, args, corpus, progress)
            progress.close()
            interrupted = result.interrupted
            if result.step == 0:
                break
            record(strategy, result)
            if interrupted:
                print(f"\ninterrupted during {strategy}: saving what there is", file=sys.stderr)
                break
    else:
        from ..nn.distributed import sweep

        def done(i, result):
            print(f"{labels[result.label]}: {result.step} steps in {result.train_time:.1f} s, "
                  f"validation loss {result.val:.4f}")
        try:
            results = sweep(_run_strategy, list(labels), args, corpus, client=client,
                            on_result=done)
        except KeyboardInterrupt:
            print("\ninterrupted: the runs on the cluster are cancelled", file=sys.stderr)
            return 130
        for result in results:
            record(result.label, result)
    rows.sort(key=lambda r: list(labels.values()).index(r[0]))
    runs.sort(key=lambda r: list(labels.values()).index(r[0]))
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
    txt, _ = out.write("compare.txt", lambda path: _write_text(path, table + "\n"))
    csv_path, _ = out.write("compare.csv", lambda path: write_history(runs, path))
    title = (f"Truncation strategies, {args.cell.upper()} {args.layers}x{args.hidden}, "
             f"{args.steps} steps of {args.batch}x{args.seq_len}")
    png, drawn = out.write("compare.png", lambda path: plot_losses(runs, baseline, path, title))
    if drawn:
        print(f"wrote {png}, {txt}, {csv_path}")
    else:
        print(f"wrote {txt} and {csv_path}; matplotlib is not "
              f"installed, so no compare.png: {CLI_EXTRA} for the picture")
    return 130 if interrupted else 0
