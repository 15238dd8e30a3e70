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
from ._caches import GRUCache, LSTMCache, RNNCache
from ._cells import Cell
from ._grads import Grads as Grads
from ._sharing import InUseError as InUseError
from .tbptt import TBPTT as TBPTT

__version__: str
__all__: list[str]

CELLS: MappingProxyType[str, Cell]

_Array = NDArray[np.floating]
_Float = Union[_Array, ArrayLike]

def set_blas_threads(n_threads: Optional[int]) -> bool: ...
def set_num_threads(n: int) -> int: ...
def get_num_threads() -> int: ...
def num_threads(n: int) -> AbstractContextManager[None]: ...

@overload
def show_config(mode: Literal["stdout"] = ...) -> None: ...
@overload
def show_config(mode: Literal["dicts"]) -> dict[str, Any]: ...

def rnn_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                nonlinearity: Literal["tanh", "sigmoid", "relu"] = ...,
                time_major: bool = ..., out: Optional[RNNCache] = ...
                ) -> tuple[_Array, RNNCache]: ...
def rnn_backward(dh: Optional[_Float], cache: RNNCache, *, dhT: Optional[_Float] = ...,
                 xi: Optional[_Float] = ..., grads: Optional[object] = ...,
                 h_grad_norms: Optional[_Array] = ..., overwrite_cache: bool = ...,
                 out: Optional[Grads] = ...) -> Grads: ...
def lstm_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                 c0: Optional[_Float] = ..., time_major: bool = ...,
                 out: Optional[LSTMCache] = ...) -> tuple[_Array, LSTMCache]: ...
def lstm_backward(dh: Optional[_Float], cache: LSTMCache, *, dhT: Optional[_Float] = ...,
                  dcT: Optional[_Float] = ..., xi: Optional[_Float] = ...,
                  grads: Optional[object] = ..., h_grad_norms: Optional[_Array] = ...,
                  overwrite_cache: bool = ..., out: Optional[Grads] = ...) -> Grads: ...
def gru_forward(x: _Float, h0: Optional[_Float], Wx: _Float, Wh: _Float, b: _Float, *,
                bh: Optional[_Float] = ..., time_major: bool = ...,
                out: Optional[GRUCache] = ...) -> tuple[_Array, GRUCache]: ...
def gru_backward(dh: Optional[_Float], cache: GRUCache, *, dhT: Optional[_Float] = ...,
                 xi: Optional[_Float] = ..., grads: Optional[object] = ...,
                 h_grad_norms: Optional[_Array] = ..., overwrite_cache: bool = ...,
                 out: Optional[Grads] = ...) -> Grads: ...
