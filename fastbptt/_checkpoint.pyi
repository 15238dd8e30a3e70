"""Types of the checkpointed cache (``_checkpoint.py``): every field is a read-only attribute."""
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._caches import Cache

_Array = NDArray[np.floating]

class CheckpointCache(Cache):
    checkpoint: int
    n_steps: int
    h_checkpoints: _Array
    @property
    def h0(self) -> _Array: ...  # type: ignore[override]
    def __getattr__(self, name: str) -> Any: ...
