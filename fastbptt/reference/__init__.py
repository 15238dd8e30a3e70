"""The NumPy reference: the same functions as ``fastbptt``, as plain per-step loops.

It is the oracle of the tests and the baseline of the benchmarks; code written against it runs
unchanged on the kernels by changing the import. It imports NumPy and the package's own
``.py`` modules only, never a compiled one, so it runs where the kernels were never built. It
shares the input checks, caches and results of ``fastbptt`` (a cache made by one is accepted
by the other). ``truncation`` and ``clip`` are plain NumPy and shared with ``fastbptt``; to run
truncated BPTT on the reference's cells, pass it to the driver:
``fastbptt.TBPTT(k1, k2, impl=fastbptt.reference)``.
"""
from .. import _cells, clip, truncation
from .._caches import Cache
from .._checkpoint import CheckpointCache
from .._grads import Grads
from .._sharing import InUseError
from .gru import gru_backward, gru_forward
from .jordan import jordan_backward, jordan_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward

CELLS = _cells.registry(
    _cells.RNN.bind(rnn_forward, rnn_backward),
    _cells.LSTM.bind(lstm_forward, lstm_backward),
    _cells.GRU.bind(gru_forward, gru_backward),
    _cells.JORDAN.bind(jordan_forward, jordan_backward),
)

__all__ = ["CELLS", "Cache", "Grads", "InUseError", "rnn_forward", "rnn_backward",
           "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "jordan_forward", "jordan_backward", "truncation", "clip",
           "CheckpointCache"]
