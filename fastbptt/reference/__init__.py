"""The NumPy reference: the same functions as ``fastbptt``, as plain per-step loops.

It is the oracle of the tests and the baseline of the benchmarks; code written against it runs
unchanged on the kernels by changing the import. Its cells compute with NumPy only, never a
kernel; they share the input checks of ``fastbptt._validation`` with the kernels (whose NaN scan
is compiled, ``src/_checks.pyx``). ``truncation`` and ``clip`` are plain NumPy and shared with
``fastbptt``, and ``TBPTT`` here drives the reference's cells.
"""
import sys

from .. import clip, truncation
from .._results import Cache, Grads
from ..tbptt import TBPTT as _TBPTT
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward


class TBPTT(_TBPTT):
    """``fastbptt.TBPTT`` on the reference's cells unless ``module`` says otherwise."""

    def __init__(self, k1, k2=None, *, cell="rnn", module=None):
        super().__init__(k1, k2, cell=cell,
                         module=sys.modules[__name__] if module is None else module)


__all__ = ["Cache", "Grads", "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward", "truncation", "clip", "TBPTT"]
