"""A small program on fastbptt's public API, for the type checker (and runnable as a smoke test).

CI runs ``mypy`` on it where the wheel is installed: the package's ``py.typed`` marker and its
stubs (``fastbptt/__init__.pyi``, ``_caches.pyi``, ``_grads.pyi``) must give every name below
its type. The lines of ``_refused_by_the_types`` are errors the stubs must catch: each carries
a ``type: ignore`` for its error code, and mypy's ``warn_unused_ignores`` fails the check if
the stubs let one through. ``python tests/typing_example.py`` runs the rest.
"""
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

import fastbptt
from fastbptt import Grads


def train_step(x: NDArray[np.float64], weights: dict[str, NDArray[np.float64]],
               h0: Optional[NDArray[np.floating]] = None) -> tuple[float, Grads]:
    """One forward and backward of an LSTM, clipped; returns the norm before clipping."""
    h, cache = fastbptt.lstm_forward(x, h0, weights["Wx"], weights["Wh"], weights["b"])
    final: NDArray[np.floating] = cache.hT
    cell_state: NDArray[np.floating] = cache.cT
    assert final.shape == cell_state.shape
    grads = fastbptt.lstm_backward(np.ones_like(h), cache,
                                   xi=fastbptt.truncation.chunked(x.shape[1], 2))
    dc0: NDArray[np.floating] = grads.dc0
    assert dc0.shape == final.shape
    norm = fastbptt.clip.clip_grad_norm(grads, max_norm=1.0)
    return float(norm), grads


def main() -> None:
    rng = np.random.default_rng(0)
    n_batch, n_steps, n_input, n_hidden = 2, 5, 3, 4
    x = rng.standard_normal((n_batch, n_steps, n_input))
    record = fastbptt.CELLS["lstm"]
    shapes = record.weight_shapes(n_input, n_hidden)
    weights = {name: 0.3 * rng.standard_normal(shape) for name, shape in shapes.items()}
    norm, grads = train_step(x, weights)
    dx, dh0, dWx, dWh, db = grads
    assert dWx.shape == weights["Wx"].shape and norm > 0

    h, rnn_cache = fastbptt.rnn_forward(x, None, 0.3 * rng.standard_normal((3, 4)),
                                        0.3 * rng.standard_normal((4, 4)), np.zeros(4),
                                        nonlinearity="relu", time_major=True)
    nonlinearity: str = rnn_cache.nonlinearity
    h_gru, gru_cache = fastbptt.gru_forward(x, None, weights["Wx"][:, :12],
                                            weights["Wh"][:, :12], np.zeros(12))
    gru_grads = fastbptt.gru_backward(None, gru_cache, dhT=np.ones((2, 4)))
    dbh: NDArray[np.floating] = gru_grads.dbh
    assert dbh.shape == (12,) and nonlinearity == "relu" and h.shape == (2, 5, 4)
    _, checkpointed = fastbptt.gru_forward(x, None, weights["Wx"][:, :12], weights["Wh"][:, :12],
                                           np.zeros(12), checkpoint="sqrt")
    steps: int = checkpointed.checkpoint
    assert fastbptt.gru_backward(None, checkpointed).dbh.shape == (12,) and steps == 3

    info: dict[str, Any] = fastbptt.show_config(mode="dicts")
    assert info["fastbptt"]["version"] == fastbptt.__version__
    can_control: bool = fastbptt.set_blas_threads(1)
    print(f"fastbptt {fastbptt.__version__}: typed example ran (BLAS threads controllable: "
          f"{can_control})")


def _refused_by_the_types() -> None:
    """Never called: each line is a mistake the stubs must make mypy report."""
    x = np.zeros((2, 3, 4))
    _, rnn_cache = fastbptt.rnn_forward(x, None, x[0], x[0], x[0, 0])
    fastbptt.lstm_backward(None, rnn_cache)  # type: ignore[arg-type]
    fastbptt.rnn_forward(x, None, x, x, x, nonlinearity="gelu")  # type: ignore[call-overload]
    fastbptt.rnn_forward(x, None, x, x, x, c0=x)  # type: ignore[call-overload]
    fastbptt.set_blas_threads("2")  # type: ignore[arg-type]
    count: int = fastbptt.show_config(mode="dicts")  # type: ignore[assignment]
    print(count, rnn_cache.cT)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
