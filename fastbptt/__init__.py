"""fastbptt: backpropagation through time in compiled kernels, from NumPy.

The time-step loop of a recurrent network, forward and backward, runs in Cython without the GIL
and calls BLAS directly. ``fastbptt.reference`` has the same functions in plain NumPy.
``fastbptt.CELLS`` lists the cells as data (``fastbptt._cells.Cell``), bound to the kernels'
functions; the compiled modules load on a kernel's first call. ``fastbptt.show_config()``
shows how this installation was built and runs. ``fastbptt.torch`` (which needs PyTorch, and is
imported only on request) has ``torch.nn.RNN/LSTM/GRU`` drop-ins on the kernels.
"""
from . import _cells, clip, truncation
from ._blas_threads import set_blas_threads
from ._caches import Cache
from ._checkpoint import CheckpointCache
from ._config import show_config as show_config  # kept out of __all__, which the reference shares
from ._grads import Grads
from ._sharing import InUseError
from ._threads import get_num_threads as get_num_threads  # out of __all__, as show_config
from ._threads import num_threads as num_threads
from ._threads import set_num_threads as set_num_threads
from .gru import gru_backward, gru_forward
from .jordan import jordan_backward, jordan_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward
from .tbptt import TBPTT

CELLS = _cells.registry(
    _cells.RNN.bind(rnn_forward, rnn_backward),
    _cells.LSTM.bind(lstm_forward, lstm_backward),
    _cells.GRU.bind(gru_forward, gru_backward),
    _cells.JORDAN.bind(jordan_forward, jordan_backward),
)

__version__ = "0.1.0"

__all__ = ["CELLS", "Cache", "Grads", "InUseError", "set_blas_threads", "rnn_forward",
           "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "jordan_forward", "jordan_backward", "truncation", "clip", "TBPTT",
           "CheckpointCache"]
