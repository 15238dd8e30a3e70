"""Types of the caches forward returns (``_caches.py``): every field is a read-only attribute."""
from typing import Any, ClassVar, Optional

import numpy as np
from numpy.typing import NDArray

_Array = NDArray[np.floating]

# h0 and Wh are fields of the hidden-state cells' caches; Jordan's network has y0 and Wy instead
class Cache:
    cell: ClassVar[Optional[str]]
    fields: ClassVar[tuple[str, ...]]
    by_step: ClassVar[tuple[str, ...]]
    time_major: bool
    consumed: bool
    x: _Array
    Wx: _Array
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
    h0: _Array
    Wh: _Array
    nonlinearity: str

class LSTMCache(Cache):
    h0: _Array
    Wh: _Array
    c0: _Array
    c: _Array
    gates: _Array
    @property
    def cT(self) -> _Array: ...

class GRUCache(Cache):
    h0: _Array
    Wh: _Array
    bh: _Array
    gates: _Array
    hn: _Array

class JordanCache(Cache):
    y0: _Array
    Wy: _Array
    Wo: _Array
    bo: _Array
    y: _Array
    nonlinearity: str
    output_nonlinearity: str
    @property
    def yT(self) -> _Array: ...
