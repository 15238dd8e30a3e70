"""Type of what backward returns (``_grads.py``): a named tuple of five, with what a cell has
beyond the five as attributes (``dc0`` for the LSTM, ``dbh`` for the GRU)."""
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

_Array = NDArray[np.floating]

class Grads(NamedTuple):
    dx: _Array
    dh0: _Array
    dWx: _Array
    dWh: _Array
    db: _Array
    # dc0 (LSTM), dbh (GRU): attributes of the cells that have them
    def __getattr__(self, name: str) -> _Array: ...

class JordanGrads(NamedTuple):
    """What jordan_backward returns: every gradient a named field."""
    dx: _Array
    dy0: _Array
    dWx: _Array
    dWy: _Array
    db: _Array
    dWo: _Array
    dbo: _Array

def cell_grads(cell: Any, dx: _Array, carries: dict[str, _Array],
               weight_grads: dict[str, _Array]) -> Grads: ...
