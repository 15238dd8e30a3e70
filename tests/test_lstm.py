"""What the generic tests do not cover for the LSTM: the cache's contents and that backward only
reads it, the gradient into the final cell state (dcT) by finite differences without torch, and
saturated gates."""
import numpy as np
import pytest
from conftest import IMPLS, assert_close, make_problem
from test_equivalence import compare

import fastbptt
import fastbptt.reference as ref


@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
def test_backward_only_reads_the_cache(module, dtype):
    """Backward twice on one cache gives the same gradients and leaves every array as it was."""
    args, kwargs, dh = make_problem("lstm", 3, 6, 4, 5, dtype=dtype)
    _, cache = module.lstm_forward(*args, **kwargs)
    before = {k: getattr(cache, k).copy() for k in cache.fields if k != "nonlinearity"}
    rng = np.random.default_rng(2)
    extra = {"dhT": rng.standard_normal((3, 5)).astype(dtype),
             "dcT": rng.standard_normal((3, 5)).astype(dtype), "xi": [1, 0.5, 0, 1, 2, 1]}
    first = module.lstm_backward(dh, cache, **extra)
    second = module.lstm_backward(dh, cache, **extra)
    for name, a, b in zip(first._fields + ("dc0",), tuple(first) + (first.dc0,),
                          tuple(second) + (second.dc0,)):
        np.testing.assert_array_equal(a, b, err_msg=name)
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(cache, name), value, err_msg=name)


def test_cache_holds_the_activated_gates_and_cell_states(dtype):
    """gates (T, N, 4H) = [i f g o] after the nonlinearities, c (T, N, H): kernels equal the
    reference, and the cache holds no other per-step array (tanh(c_t) is recomputed)."""
    args, kwargs, _ = make_problem("lstm", 2, 5, 3, 4, dtype=dtype, time_major=True)
    (_, ck), (_, cr) = (m.lstm_forward(*args, **kwargs) for m in (fastbptt, ref))
    for cache in (ck, cr):
        assert cache.gates.shape == (5, 2, 16) and cache.c.shape == (5, 2, 4)
        per_step = {k for k in cache.fields if getattr(cache, k).ndim == 3}
        assert per_step == {"x", "h", "c", "gates"}
        i, f, g, o = np.split(cache.gates, 4, axis=2)
        assert np.all((i > 0) & (i < 1) & (f > 0) & (f < 1) & (o > 0) & (o < 1))
        assert np.all(np.abs(g) < 1)
        assert_close(cache.c[0], f[0] * kwargs["c0"] + i[0] * g[0], dtype, "c_0")
        assert_close(cache.h, o * np.tanh(cache.c), dtype, "h")
    assert_close(ck.gates, cr.gates, dtype, "gates")
    assert_close(ck.c, cr.c, dtype, "c")


def test_reference_dcT_and_dc0_match_finite_differences():
    """L = sum(h * dh) + sum(cT * dcT): its gradient is backward(dh, dcT=dcT), c0 and x included."""
    args, kwargs, dh = make_problem("lstm", 2, 4, 3, 3, seed=5, weight_scale=1.0)
    dcT = np.random.default_rng(6).standard_normal(args[1].shape)

    def loss():
        h, cache = ref.lstm_forward(*args, **kwargs)
        return float(np.sum(h * dh) + np.sum(cache.cT * dcT))

    _, cache = ref.lstm_forward(*args, **kwargs)
    grads = ref.lstm_backward(dh, cache, dcT=dcT)
    eps = 1e-6
    for name, holder, key in [("dc0", kwargs, "c0"), ("dh0", args, 1), ("dx", args, 0),
                              ("dWh", args, 3), ("db", args, 4)]:
        param = holder[key]
        numeric = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + eps
            plus = loss()
            param[idx] = old - eps
            minus = loss()
            param[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(getattr(grads, name), numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=name)


def test_saturated_gates(dtype):
    """Pre-activations in the hundreds (sigmoid and tanh at 0 or +-1): finite, and kernels equal
    the reference."""
    args, kwargs, dh = make_problem("lstm", 3, 6, 4, 5, dtype=dtype, weight_scale=40.0)
    args[0] = args[0] * 10
    g1, _ = compare("lstm", args, kwargs, dh, dtype, dcT=np.ones((3, 5), dtype))
    assert all(np.isfinite(a).all() for a in g1) and np.isfinite(g1.dc0).all()
