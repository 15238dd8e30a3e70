"""Losses over rows of outputs, each with its gradient: the model's output layer ends in one.

Each takes the outputs ``z`` (M, O), one row per (sequence, step), its targets, and optional
row weights (M,) (a mask: a row of weight 0 adds nothing), and returns the weighted mean loss
(a float) and its gradient with respect to ``z`` (a new (M, O) array of z's dtype). Sums over
the rows are taken in float64.
"""
import numpy as np

__all__ = ["softmax_cross_entropy", "mean_squared_error"]


def _scale(n_rows, weights):
    """1 / (the total weight of the rows), 0 where there is none."""
    total = float(weights.sum()) if weights is not None else float(n_rows)
    return 1.0 / total if total > 0 else 0.0


def softmax_cross_entropy(z, targets, weights=None):
    """Mean softmax cross-entropy of logits ``z`` (M, O) against class ids ``targets`` (M,),
    weighted by ``weights`` (M,) if given (``sum(w * nll) / sum(w)``); returns the loss (float)
    and its gradient with respect to ``z`` (a new (M, O) array of z's dtype). The log-sum-exp
    is taken after subtracting each row's maximum, its sums in float64."""
    rows = np.arange(targets.size)
    scale = _scale(targets.size, weights)
    dz = z - z.max(axis=1, keepdims=True)                        # shifted logits
    picked = dz[rows, targets].astype(np.float64)
    np.exp(dz, out=dz)
    norm = dz.sum(axis=1, dtype=np.float64)
    nll = np.log(norm) - picked                                  # -log softmax[target]
    loss = float((nll if weights is None else nll * weights).sum()) * scale
    row_scale = (scale / norm) if weights is None else (weights * scale / norm)
    dz *= row_scale.astype(z.dtype)[:, None]                     # softmax * w / total
    dz[rows, targets] -= (scale if weights is None else weights * scale)
    return loss, dz


def mean_squared_error(z, y, weights=None):
    """Mean squared error of predictions ``z`` (M, O) against ``y`` (M, O) of z's dtype, the
    mean over the O outputs and the rows, weighted by ``weights`` (M,) if given
    (``sum(w * |z - y|^2) / (O sum(w))``); returns the loss (float) and its gradient with
    respect to ``z`` (a new (M, O) array)."""
    n_out = z.shape[1]
    scale = _scale(z.shape[0], weights)
    diff = z - y
    sq = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    loss = float((sq if weights is None else sq * weights).sum()) * scale / n_out
    dz = diff
    dz *= (2 * scale / n_out)
    if weights is not None:
        dz *= weights.astype(z.dtype)[:, None]
    return loss, dz
