"""The nonlinearities of the reference, in NumPy."""
import numpy as np


def sigmoid(a):
    """1 / (1 + exp(-a)), without overflow for large |a|."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


PHI = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda a: np.maximum(a, 0)}
DPHI = {  # phi'(a) from h = phi(a)
    "tanh": lambda h: 1 - h * h,
    "sigmoid": lambda h: h * (1 - h),
    "relu": lambda h: (h > 0).astype(h.dtype),
}
