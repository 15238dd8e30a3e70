"""fastbptt: backpropagation through time in compiled kernels, from NumPy.

The time-step loop of a recurrent network, forward and backward, runs in Cython without the GIL
and calls BLAS directly. ``fastbptt.reference`` has the same functions in plain NumPy.
"""
from ._blas_threads import set_blas_threads
from ._results import Cache, Grads
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward
from . import clip, truncation
from .tbptt import TBPTT

__version__ = "0.1.0"

__all__ = ["Cache", "Grads", "set_blas_threads", "rnn_forward", "rnn_backward",
           "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward", "truncation", "clip", "TBPTT"]
