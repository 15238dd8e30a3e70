"""The NumPy reference: the same functions as ``fastbptt``, as plain per-step loops.

It is the oracle of the tests and the baseline of the benchmarks; code written against it runs
unchanged on the kernels by changing the import. It imports NumPy only, never a kernel.
"""
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward"]
