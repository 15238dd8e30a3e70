"""Types of fastbptt's public API (the package is written without annotations).

The cell functions take NumPy arrays (or anything ``np.asarray`` takes) of float32 or float64
and return arrays of that dtype; their caches and results are typed in ``_caches.pyi`` and
``_grads.pyi``. ``tests/test_stubs.py`` checks these signatures against the functions.
"""
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import Any, Literal, Optional, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import clip as clip
from . import truncation as truncation
from ._caches import Cache as Cache
from ._caches import GRUCache, JordanCache, LSTMCache, RNNCache
from ._cells import Cell
from ._checkpoint import CheckpointCache as CheckpointCache
from ._grads import Grads as Grads
from ._grads import JordanGrads
from ._sharing import InUseError as InUseError
from .tbptt import TBPTT as TBPTT

__version__: str
__all__: list[str]

CELLS: MappingProxyType[str, Cell]

_Array = NDArray[np.floating]
_Float = Union[_Array, ArrayLike]
_Checkpoint = Union[Literal["sqrt"], int]

def set_blas_threads(n_threads: Optional[int]) -> bool: ...
def set_num_threads(n: int) -> int: ...
def get_num_threads() -> int: ...
def num_threads(n: int) -> AbstractContextManager[None]: ...

@overload
def show_config(mode: Literal["stdout"] = ...) -> None: ...
@overload
def show_config(mode: Literal["dicts"]) -> dict[str, Any]: ...

@overload
def rnn_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                nonlinearity: Literal["tanh", "sigmoid", "relu"] = ...,
                time_major: bool = ..., out: Optional[RNNCache] = ..., checkpoint: None = ...,
                lengths: Optional[ArrayLike] = ..., reverse: bool = ..., check_finite: bool = ...
                ) -> tuple[_Array, RNNCache]: ...
@overload
def rnn_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                nonlinearity: Literal["tanh", "sigmoid", "relu"] = ...,
                time_major: bool = ..., out: Optional[CheckpointCache] = ...,
                checkpoint: _Checkpoint, lengths: None = ...,
                reverse: Literal[False] = ...,
                check_finite: bool = ...) -> tuple[_Array, CheckpointCache]: ...
def rnn_backward(dh: Optional[_Float], cache: Union[RNNCache, CheckpointCache], *,
                 dhT: Optional[_Float] = ...,
                 xi: Optional[_Float] = ..., grads: Optional[object] = ...,
                 h_grad_norms: Optional[_Array] = ..., overwrite_cache: bool = ...,
                 out: Optional[Grads] = ..., check_finite: bool = ...) -> Grads: ...
@overload
def lstm_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                 c0: Optional[_Float] = ..., time_major: bool = ...,
                 out: Optional[LSTMCache] = ..., checkpoint: None = ...,
                 lengths: Optional[ArrayLike] = ..., reverse: bool = ..., check_finite: bool = ...
                 ) -> tuple[_Array, LSTMCache]: ...
@overload
def lstm_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                 c0: Optional[_Float] = ..., time_major: bool = ...,
                 out: Optional[CheckpointCache] = ..., checkpoint: _Checkpoint,
                 lengths: None = ..., reverse: Literal[False] = ..., check_finite: bool = ...
                 ) -> tuple[_Array, CheckpointCache]: ...
def lstm_backward(dh: Optional[_Float], cache: Union[LSTMCache, CheckpointCache], *,
                  dhT: Optional[_Float] = ...,
                  dcT: Optional[_Float] = ..., xi: Optional[_Float] = ...,
                  grads: Optional[object] = ..., h_grad_norms: Optional[_Array] = ...,
                  overwrite_cache: bool = ..., out: Optional[Grads] = ...,
                  check_finite: bool = ...) -> Grads: ...
@overload
def gru_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                bh: Optional[_Float] = ..., time_major: bool = ...,
                out: Optional[GRUCache] = ..., checkpoint: None = ...,
                lengths: Optional[ArrayLike] = ..., reverse: bool = ..., check_finite: bool = ...
                ) -> tuple[_Array, GRUCache]: ...
@overload
def gru_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                bh: Optional[_Float] = ..., time_major: bool = ...,
                out: Optional[CheckpointCache] = ..., checkpoint: _Checkpoint,
                lengths: None = ..., reverse: Literal[False] = ..., check_finite: bool = ...
                ) -> tuple[_Array, CheckpointCache]: ...
def gru_backward(dh: Optional[_Float], cache: Union[GRUCache, CheckpointCache], *,
                 dhT: Optional[_Float] = ...,
                 xi: Optional[_Float] = ..., grads: Optional[object] = ...,
                 h_grad_norms: Optional[_Array] = ..., overwrite_cache: bool = ...,
                 out: Optional[Grads] = ..., check_finite: bool = ...) -> Grads: ...
def jordan_forward(x: _Float, y0: Optional[_Float], Wx: _Float, Wy: _Float, b: _Float,
                   Wo: _Float, bo: _Float, *,
                   nonlinearity: Literal["tanh", "sigmoid", "relu"] = ...,
                   output_nonlinearity: Literal["identity", "tanh", "sigmoid"] = ...,
                   time_major: bool = ..., out: Optional[JordanCache] = ...
                   ) -> tuple[_Array, JordanCache]: ...
def jordan_backward(dy: Optional[_Float], cache: JordanCache, *, dyT: Optional[_Float] = ...,
                    xi: Optional[_Float] = ..., grads: Optional[object] = ...,
                    h_grad_norms: Optional[_Array] = ..., overwrite_cache: bool = ...,
                    out: Optional[JordanGrads] = ...) -> JordanGrads: ...
