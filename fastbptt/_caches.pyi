"""Types of the caches forward returns (``_caches.py``): every field is a read-only attribute."""
from typing import Any, ClassVar, Optional

import numpy as np
from numpy.typing import NDArray

_Array = NDArray[np.floating]

class Cache:
    cell: ClassVar[Optional[str]]
    fields: ClassVar[tuple[str, ...]]
    by_step: ClassVar[tuple[str, ...]]
    time_major: bool
    consumed: bool
    x: _Array
    h0: _Array
    Wx: _Array
    Wh: _Array
    b: _Array
    h: _Array
    dtype: np.dtype[Any]
    lengths: Optional[NDArray[np.int64]]
    reverse: bool
    def __init__(self, time_major: bool, *parts: dict[str, Any]) -> None: ...
    def workspace(self, name: str, shape: tuple[int, ...]) -> _Array: ...
    @property
    def hT(self) -> _Array: ...

class RNNCache(Cache):
    nonlinearity: str

class LSTMCache(Cache):
    c0: _Array
    c: _Array
    gates: _Array
    @property
    def cT(self) -> _Array: ...

class GRUCache(Cache):
    bh: _Array
    gates: _Array
    hn: _Array
