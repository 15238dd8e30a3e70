"""Optimizers that update a dict of parameter arrays in place: SGD (momentum), Adagrad, Adam.

Each takes the parameter dict at construction (``Model.params``) and a gradient dict with the
same keys at each ``step``; the arrays of ``params`` are modified in place (never replaced), so
views and references to them stay valid. The optimizer's own state (velocities, moments) has the
parameters' dtype and shapes, and ``step`` allocates nothing after the first call.

    SGD       v = momentum * v - lr * g ;   p += v          (momentum = 0: p -= lr * g)
    Adagrad   G += g**2 ;                   p -= lr * g / sqrt(G + eps)      (as in min-char-rnn)
    Adam      m = b1 m + (1-b1) g ;  v = b2 v + (1-b2) g**2 ;
              p -= lr * sqrt(1-b2**t) / (1-b1**t) * m / (sqrt(v) + eps_hat)   (Kingma and Ba, 2015,
              the efficient form of their section 2, eps_hat = eps * sqrt(1-b2**t))

Gradients must be finite: one NaN or infinity would turn its parameters into NaN for good. By
default ``step`` raises ``fastbptt.clip.NonFiniteGradientError`` (a ``ValueError``) before it
changes anything; with ``skip_nonfinite=True`` it skips such a step instead, as a mixed
precision loss scaler does, returning False and counting it in ``n_skipped``. Settings are
checked when the optimizer is made: ``lr`` and ``eps`` positive and finite, ``momentum`` and
``betas`` in [0, 1).
"""
import math
from collections.abc import Mapping

import numpy as np

from ..clip import NonFiniteGradientError


def _positive_finite(name, value):
    """``value`` as a float, positive and finite, else a ValueError naming it."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive finite number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


class Optimizer:
    """Base class: holds ``params`` (a dict of arrays) and ``lr``; subclasses implement
    ``_update(name, p, g)``. ``skip_nonfinite``: skip a step whose gradient holds a NaN or an
    infinity (``step`` returns False) instead of raising."""

    def __init__(self, params, lr, skip_nonfinite=False):
        if not isinstance(params, dict) or not params:
            raise TypeError("params must be a non-empty dict of NumPy arrays (Model.params)")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{name!r}] must be a float NumPy array")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}] must be writeable (updated in place)")
        self.params = params
        self.lr = _positive_finite("lr", lr)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.n_steps = 0
        self.n_skipped = 0
        self._scratch = {name: np.empty_like(p) for name, p in params.items()}

    def step(self, grads):
        """Update every parameter in place from ``grads`` (a dict with the same keys, each a
        float array of its parameter's shape). Every gradient is checked before anything
        changes. Returns True, or False where ``skip_nonfinite`` skipped a non-finite one."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict of arrays with the keys of params, got "
                            f"{type(grads).__name__}")
        missing = set(self.params) - set(grads)
        if missing:
            raise ValueError(f"grads is missing {sorted(missing)}")
        finite = True
        for name, p in self.params.items():
            g = grads[name]
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                got = f"dtype {g.dtype}" if isinstance(g, np.ndarray) else type(g).__name__
                raise TypeError(f"grads[{name!r}] must be a float NumPy array of shape "
                                f"{p.shape}, got {got}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] has shape {g.shape}, params {p.shape}")
            if finite and not np.isfinite(g).all():
                finite = False
                if not self.skip_nonfinite:
                    raise NonFiniteGradientError(
                        f"grads[{name!r}] contains NaN or infinity: the update would make the "
                        "parameters NaN (nothing was changed; pass skip_nonfinite=True to skip "
                        "such steps, or clip with fastbptt.clip)")
        if not finite:
            self.n_skipped += 1
            return False
        self.n_steps += 1
        for name, p in self.params.items():
            self._update(name, p, grads[name])
        return True

    def _update(self, name, p, g):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum."""

    def __init__(self, params, lr=0.1, momentum=0.0, *, skip_nonfinite=False):
        super().__init__(params, lr, skip_nonfinite)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.velocity = {n: np.zeros_like(p) for n, p in params.items()} if momentum else None

    def _update(self, name, p, g):
        step = self._scratch[name]
        np.multiply(g, self.lr, out=step)                            # lr * g
        if self.velocity is not None:
            v = self.velocity[name]
            v *= self.momentum
            v -= step                                                # v = mu v - lr g
            p += v
        else:
            p -= step


class Adagrad(Optimizer):
    """Adagrad, as in Karpathy's min-char-rnn: a per-entry sum of squared gradients."""

    def __init__(self, params, lr=0.1, eps=1e-8, *, skip_nonfinite=False):
        super().__init__(params, lr, skip_nonfinite)
        self.eps = _positive_finite("eps", eps)
        self.memory = {n: np.zeros_like(p) for n, p in params.items()}

    def _update(self, name, p, g):
        mem, step = self.memory[name], self._scratch[name]
        np.multiply(g, g, out=step)
        mem += step                                                  # G += g**2
        np.add(mem, self.eps, out=step)
        np.sqrt(step, out=step)
        np.divide(g, step, out=step)                                 # g / sqrt(G + eps)
        step *= self.lr
        p -= step


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, skip_nonfinite=False):
        super().__init__(params, lr, skip_nonfinite)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.beta1, self.beta2 = float(b1), float(b2)
        self.eps = _positive_finite("eps", eps)
        self.m = {n: np.zeros_like(p) for n, p in params.items()}
        self.v = {n: np.zeros_like(p) for n, p in params.items()}

    def step(self, grads):
        t = self.n_steps + 1
        self._c2 = np.sqrt(1 - self.beta2 ** t)
        self._alpha = self.lr * self._c2 / (1 - self.beta1 ** t)
        return super().step(grads)

    def _update(self, name, p, g):
        m, v, step = self.m[name], self.v[name], self._scratch[name]
        b1, b2 = self.beta1, self.beta2
        m *= b1
        np.multiply(g, 1 - b1, out=step)
        m += step                                                    # m = b1 m + (1-b1) g
        v *= b2
        np.multiply(g, g, out=step)
        step *= 1 - b2
        v += step                                                    # v = b2 v + (1-b2) g^2
        np.sqrt(v, out=step)
        step += self.eps * self._c2
        np.divide(m, step, out=step)
        step *= self._alpha
        p -= step


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}
