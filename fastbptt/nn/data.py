"""Text corpora for character models: a default corpus every machine has, a char vocabulary,
a train/validation split, batched streams for truncated BPTT, and the unigram baseline.

The default corpus is the source of Python's standard library on this machine
(``sysconfig.get_paths()['stdlib']``): every ``*.py`` file outside ``site-packages`` and the test
suites, in sorted path order, concatenated until ``max_chars`` characters. It needs no download
and is the same on every run on one machine (it differs between Python versions, as the library
does). ``--text FILE`` replaces it with any UTF-8 file.
"""
import os
import sysconfig
from pathlib import Path

import numpy as np

DEFAULT_MAX_CHARS = 2_000_000
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def stdlib_files(root=None):
    """The standard library's ``.py`` files in sorted order (tests and site-packages left out)."""
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]   # pruned, not walked
        rel = Path(folder).relative_to(root)
        files.extend(rel / n for n in names
                     if n.endswith(".py") and not n.startswith("_sysconfigdata"))
    # the generated build-configuration dump (_sysconfigdata*) is data, not code
    return root, sorted(files, key=lambda p: p.as_posix())


def stdlib_text(max_chars=DEFAULT_MAX_CHARS, root=None):
    """Up to ``max_chars`` characters of standard-library source, deterministically."""
    root, files = stdlib_files(root)
    parts, total = [], 0
    for rel in files:
        if total >= max_chars:
            break
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text[: max_chars - total]
        parts.append(text)
        total += len(text)
    if not parts:
        raise FileNotFoundError(f"no readable Python source under {root}; pass --text FILE")
    return "".join(parts)


def read_text(path, max_chars=None):
    """A UTF-8 text file (undecodable bytes replaced), optionally cut to ``max_chars``."""
    with open(os.fspath(path), encoding="utf-8", errors="replace") as f:
        text = f.read() if max_chars is None else f.read(max_chars)
    return text


class CharVocab:
    """The sorted set of characters of a text; ``encode`` / ``decode`` map text to int32 ids."""

    def __init__(self, chars):
        chars = "".join(chars)
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct")
        self.chars = chars
        self.index = {ch: i for i, ch in enumerate(chars)}
        codes = np.array([ord(ch) for ch in chars], np.int64)
        self._order = np.argsort(codes)
        self._sorted_codes = codes[self._order]

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        pos = np.searchsorted(self._sorted_codes, codes)
        pos = np.minimum(pos, len(self.chars) - 1)
        bad = self._sorted_codes[pos] != codes
        if bad.any():
            raise ValueError(f"character {chr(codes[bad.argmax()])!r} is not in the vocabulary")
        return self._order[pos].astype(np.int32)

    def decode(self, ids):
        return "".join(self.chars[i] for i in np.asarray(ids).ravel())


class Corpus:
    """A text, its vocabulary, and ids split into a training head and a validation tail."""

    def __init__(self, text, val_fraction=0.1, *, name="text"):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if len(text) < 4:
            raise ValueError(f"the corpus {name} is too short ({len(text)} characters)")
        self.name = name
        self.text = text
        self.vocab = CharVocab.from_text(text)
        ids = self.vocab.encode(text)
        n_val = max(2, int(round(len(ids) * val_fraction)))
        self.train = ids[:-n_val]
        self.val = ids[-n_val:]

    def __repr__(self):
        return (f"<Corpus {self.name}: {len(self.text):,} chars, vocabulary {len(self.vocab)}, "
                f"train {len(self.train):,}, validation {len(self.val):,}>")


def load_corpus(text_path=None, max_chars=DEFAULT_MAX_CHARS, val_fraction=0.1):
    """``--text FILE`` if given, else the standard-library sources, as a ``Corpus``."""
    if text_path is not None:
        return Corpus(read_text(text_path, max_chars), val_fraction, name=os.fspath(text_path))
    return Corpus(stdlib_text(max_chars), val_fraction,
                  name=f"Python {sysconfig.get_python_version()} standard library")


def unigram_loss(train_ids, eval_ids, n_vocab):
    """Cross-entropy (nats per char) of ``eval_ids`` under the training text's character
    frequencies (add-one smoothed): the loss of a model that ignores all context."""
    counts = np.bincount(np.asarray(train_ids), minlength=n_vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(eval_ids)].mean())


class Streams:
    """``n_batch`` parallel, contiguous streams over ``ids`` for truncated BPTT.

    The ids are cut into ``n_batch`` equal stretches, one per batch row; ``next()`` returns the
    next window of ``seq_len`` inputs and the ids one step later as targets, (N, T) each, so the
    recurrent state at the end of one window is the right start of the next. ``reset`` is True
    on the first window of each pass (carry no state into it).

    ``rows`` (a slice or index array into the ``n_batch`` streams) keeps only those streams: the
    text is still cut into ``n_batch`` stretches, so the rows are exactly those rows of the full
    batch, window by window. Data-parallel training gives each replica its shard this way.
    """

    def __init__(self, ids, n_batch, seq_len, *, rows=None):
        ids = np.asarray(ids)
        self.n_batch, self.seq_len = int(n_batch), int(seq_len)
        span = (len(ids) - 1) // self.n_batch
        if span < self.seq_len:
            raise ValueError(f"{len(ids)} ids are too few for {self.n_batch} streams of "
                             f"windows of {self.seq_len} (need at least "
                             f"{self.n_batch * self.seq_len + 1}); lower --batch or --seq-len")
        starts = np.arange(self.n_batch) * span
        if rows is not None:
            try:
                starts = starts[rows]
            except IndexError:
                raise ValueError(f"rows must index the {self.n_batch} streams, "
                                 f"got {rows!r}") from None
            starts = np.atleast_1d(starts)
        self.inputs = ids[starts[:, None] + np.arange(span)]          # (N, span)
        self.targets = ids[starts[:, None] + np.arange(span) + 1]
        self.n_windows = span // self.seq_len
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self):
        w = self.position % self.n_windows
        self.position += 1
        sl = slice(w * self.seq_len, (w + 1) * self.seq_len)
        return self.inputs[:, sl], self.targets[:, sl], w == 0

    next = __next__
