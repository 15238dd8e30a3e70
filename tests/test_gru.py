"""GRU-specific checks beyond the generic ones of test_equivalence, test_gradcheck and
test_validation."""
import numpy as np
import pytest
from conftest import IMPLS, assert_close, make_problem

import fastbptt
import fastbptt.reference as ref

impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))


@impl
def test_backward_leaves_the_cache_alone(module, dtype):
    """Backward reads the gates and hn it kept and writes none of the cache: twice, same answer."""
    args, kwargs, dh = make_problem("gru", 3, 6, 4, 5, dtype=dtype)
    _, cache = module.gru_forward(*args, **kwargs)
    before = {k: getattr(cache, k).copy() for k in cache.fields}
    first = module.gru_backward(dh, cache)
    second = module.gru_backward(dh, cache)
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(cache, name), value, err_msg=name)
    for a, b in zip(first + (first.dbh,), second + (second.dbh,)):
        np.testing.assert_array_equal(a, b)


@impl
def test_zero_xi_cuts_both_paths_to_the_previous_state(module, dtype):
    """xi[k] = 0 cuts everything step k sends back (through Wh and through z * h_{k-1}): the
    gradients equal those of two separate segments, the second starting from the first's hT."""
    args, kwargs, dh = make_problem("gru", 2, 7, 3, 4, dtype=dtype)
    k = 3
    xi = np.ones(7)
    xi[k] = 0
    _, cache = module.gru_forward(*args, **kwargs)
    whole = module.gru_backward(dh, cache, xi=xi)
    x, h0, Wx, Wh, b = args
    _, cache_a = module.gru_forward(x[:, :k], h0, Wx, Wh, b, **kwargs)
    _, cache_b = module.gru_forward(x[:, k:], cache_a.hT, Wx, Wh, b, **kwargs)
    part_a = module.gru_backward(dh[:, :k], cache_a)
    part_b = module.gru_backward(dh[:, k:], cache_b)
    assert_close(whole.dx, np.concatenate([part_a.dx, part_b.dx], axis=1), dtype, "dx")
    assert_close(whole.dh0, part_a.dh0, dtype, "dh0")
    for name in ("dWx", "dWh", "db", "dbh"):
        assert_close(getattr(whole, name), getattr(part_a, name) + getattr(part_b, name),
                     dtype, name)
    xi[0] = 0
    assert not module.gru_backward(dh, cache, xi=xi).dh0.any()


def test_saturated_gates_equal_reference(dtype):
    """Large weights drive sigmoid and tanh deep into saturation (|pre-activation| >> 20)."""
    args, kwargs, dh = make_problem("gru", 3, 12, 5, 6, dtype=dtype, weight_scale=30.0)
    h1, c1 = fastbptt.gru_forward(*args, **kwargs)
    h2, c2 = ref.gru_forward(*args, **kwargs)
    assert np.abs(c2.gates).min() < 1e-6 and np.abs(1 - np.abs(c2.gates)).min() < 1e-6
    assert_close(h1, h2, dtype, "h")
    g1, g2 = fastbptt.gru_backward(dh, c1), ref.gru_backward(dh, c2)
    for name, a, b in zip(g2._fields, g1, g2):
        assert_close(a, b, dtype, name)
    assert_close(g1.dbh, g2.dbh, dtype, "dbh")


@impl
def test_hidden_bias_none_is_zeros(module, dtype):
    args, kwargs, dh = make_problem("gru", 2, 4, 3, 3, dtype=dtype)
    kwargs["bh"] = None
    h_none, cache = module.gru_forward(*args, **kwargs)
    kwargs["bh"] = np.zeros(9, dtype)
    h_zero, _ = module.gru_forward(*args, **kwargs)
    np.testing.assert_array_equal(h_none, h_zero)
    assert module.gru_backward(dh, cache).dbh.shape == (9,)


@impl
def test_bad_hidden_bias(module):
    args, kwargs, _ = make_problem("gru", 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"bh must have shape \(3\*H,\) = \(15,\), got \(5,\)"):
        module.gru_forward(*args, **dict(kwargs, bh=kwargs["bh"][:5]))
    with pytest.raises(TypeError, match="bh has dtype float32 but x has dtype float64"):
        module.gru_forward(*args, **dict(kwargs, bh=kwargs["bh"].astype(np.float32)))
    with pytest.raises(ValueError, match="bh contains NaN"):
        module.gru_forward(*args, **dict(kwargs, bh=kwargs["bh"] * np.nan))
    _, cache = module.gru_forward(*args, **kwargs)
    good = module.gru_backward(None, cache)
    del good.__dict__["dbh"]
    with pytest.raises(TypeError, match="grads.dbh must be a NumPy array"):
        module.gru_backward(None, cache, grads=good)
