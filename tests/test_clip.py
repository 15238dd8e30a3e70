"""fastbptt.clip against hand computations: global-norm and value clipping, in place."""
import math

import numpy as np
import pytest
from conftest import make_problem

import fastbptt
from fastbptt.clip import NonFiniteGradientError, clip_grad_norm, clip_grad_value, global_norm
from fastbptt.tbptt import WeightGrads


def hand_case(dtype=np.float64):
    # squares 9 + 16 + 144 = 169: the global norm is 13
    return [np.array([[3.0, 4.0]], dtype), np.array([12.0], dtype)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_norm_clipping_rescales_by_max_norm_over_norm(dtype):
    a, b = hand_case(dtype)
    ids = (id(a), id(b))
    norm = clip_grad_norm([a, b], 6.5)
    assert norm == 13.0 and isinstance(norm, float)
    np.testing.assert_array_equal(a, np.array([[1.5, 2.0]], dtype))   # scale 6.5 / 13 = 0.5
    np.testing.assert_array_equal(b, np.array([6.0], dtype))
    assert (id(a), id(b)) == ids and a.dtype == dtype and b.dtype == dtype
    assert global_norm([a, b]) == pytest.approx(6.5, rel=1e-7)


def test_norm_clipping_keeps_direction_and_hits_max_norm():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 5)) * 10, rng.standard_normal(5) * 10]
    before = [a.copy() for a in arrays]
    expected = math.sqrt(sum(float(np.sum(a * a)) for a in before))
    norm = clip_grad_norm(arrays, 1.0)
    assert norm == pytest.approx(expected, rel=1e-14)
    for a, a0 in zip(arrays, before):
        np.testing.assert_allclose(a, a0 / expected, rtol=1e-14)
    assert global_norm(arrays) == pytest.approx(1.0, rel=1e-14)


def test_norm_below_max_changes_nothing():
    a, b = hand_case()
    norm = clip_grad_norm([a, b], 13.0)     # norm == max_norm: not above it
    assert norm == 13.0
    np.testing.assert_array_equal(a, [[3.0, 4.0]])
    np.testing.assert_array_equal(b, [12.0])
    assert clip_grad_norm((a, b), math.inf) == 13.0   # inf: only measure


def test_accepts_grads_mapping_single_array_and_weight_grads():
    args, kwargs, dh = make_problem("rnn", 2, 5, 3, 4)
    _, cache = fastbptt.rnn_forward(*args, **kwargs)
    g = fastbptt.rnn_backward(dh, cache)
    dx, dh0 = g.dx.copy(), g.dh0.copy()
    weights = [g.dWx.copy(), g.dWh.copy(), g.db.copy()]
    norm = math.sqrt(sum(float(np.sum(w * w)) for w in weights))
    assert clip_grad_norm(g, norm / 4) == pytest.approx(norm, rel=1e-14)
    for w, w0 in zip((g.dWx, g.dWh, g.db), weights):
        np.testing.assert_allclose(w, w0 / 4, rtol=1e-14)
    np.testing.assert_array_equal(g.dx, dx)      # dx, dh0 are not parameter gradients
    np.testing.assert_array_equal(g.dh0, dh0)

    d = {"dWy": np.array([0.0, 5.0]), "dby": np.array([-12.0])}
    assert clip_grad_norm(d, 6.5) == 13.0
    np.testing.assert_array_equal(d["dWy"], [0.0, 2.5])
    single = np.array([[3.0, -4.0]])
    assert clip_grad_norm(single, 1.0) == 5.0
    np.testing.assert_allclose(single, [[0.6, -0.8]], rtol=1e-15)
    wg = WeightGrads(dWx=np.array([6.0]), dWh=np.array([[8.0]]), db=np.array([0.0]))
    assert clip_grad_norm(wg, 5.0) == 10.0
    np.testing.assert_array_equal(wg.dWx, [3.0])
    assert clip_grad_norm([], 1.0) == 0.0


def test_gru_grads_include_dbh():
    args, kwargs, dh = make_problem("gru", 2, 4, 3, 3)
    _, cache = fastbptt.gru_forward(*args, **kwargs)
    g = fastbptt.gru_backward(dh, cache)
    arrays = [g.dWx, g.dWh, g.db, g.dbh]
    expected = math.sqrt(sum(float(np.sum(a * a)) for a in arrays))
    assert global_norm(g) == pytest.approx(expected, rel=1e-14)


def test_float32_norm_does_not_overflow():
    big = np.array([3e20, 4e20], np.float32)   # squares overflow float32
    assert global_norm([big]) == pytest.approx(5e20, rel=1e-6)
    huge = [np.array([3e200]), np.array([4e200])]   # squares overflow float64
    norm = clip_grad_norm(huge, 1.0)
    assert norm == pytest.approx(5e200, rel=1e-12)
    np.testing.assert_allclose(np.concatenate(huge), [0.6, 0.8], rtol=1e-12)


def test_value_clipping_like_min_char_rnn():
    a = np.array([[-7.0, 3.0], [6.0, -5.0]])
    b = np.array([0.5, -0.25], np.float32)
    expected_norm = math.sqrt(49 + 9 + 36 + 25 + 0.25 + 0.0625)
    norm = clip_grad_value([a, b], 5)
    assert norm == pytest.approx(expected_norm, rel=1e-15)
    np.testing.assert_array_equal(a, [[-5.0, 3.0], [5.0, -5.0]])
    np.testing.assert_array_equal(b, np.array([0.5, -0.25], np.float32))
    assert b.dtype == np.float32


@pytest.mark.parametrize("bad,expected", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")])
def test_nonfinite_raises_by_default_and_touches_nothing(bad, expected):
    for clip, limit in ((clip_grad_norm, 1.0), (clip_grad_value, 1.0)):
        a, b = np.array([3.0, bad]), np.array([12.0])
        with pytest.raises(NonFiniteGradientError, match=f"the gradient norm is {expected}"):
            clip([a, b], limit)
        np.testing.assert_array_equal(b, [12.0])
        assert a[0] == 3.0
    assert issubclass(NonFiniteGradientError, ValueError)
    assert issubclass(NonFiniteGradientError, FloatingPointError)


def test_nonfinite_flag_returns_the_norm():
    a, b = np.array([3.0, np.inf]), np.array([12.0])
    assert clip_grad_norm([a, b], 1.0, error_if_nonfinite=False) == math.inf
    np.testing.assert_array_equal(b, [12.0])        # left unchanged: skip this update
    np.testing.assert_array_equal(a, [3.0, np.inf])
    assert math.isnan(clip_grad_norm([np.array([np.nan, np.inf])], 1.0,
                                     error_if_nonfinite=False))
    c = np.array([np.inf, -np.inf, np.nan, 9.0])
    assert math.isnan(clip_grad_value(c, 5.0, error_if_nonfinite=False))
    np.testing.assert_array_equal(c, [5.0, -5.0, np.nan, 5.0])   # value clipping still clips


@pytest.mark.parametrize("call,exc,message", [
    (lambda: clip_grad_norm([np.ones(2)], 0.0), ValueError, "max_norm must be a positive number"),
    (lambda: clip_grad_norm([np.ones(2)], -1), ValueError, "max_norm must be a positive"),
    (lambda: clip_grad_norm([np.ones(2)], np.nan), ValueError, "max_norm must be a positive"),
    (lambda: clip_grad_norm([np.ones(2)], "big"), TypeError, "max_norm must be a positive"),
    (lambda: clip_grad_value([np.ones(2)], 0), ValueError, "clip_value must be a positive"),
    (lambda: clip_grad_norm([np.ones(2, int)], 1.0), TypeError,
     "grads[0] must be a float32 or float64 array, got dtype int64"),
    (lambda: clip_grad_norm([np.ones(2), [1.0, 2.0]], 1.0), TypeError,
     "grads[1] must be a NumPy array, got list"),
    (lambda: clip_grad_norm(3.0, 1.0), TypeError, "grads must be an array, a Grads"),
    (lambda: clip_grad_norm([np.ones(2, np.float16)], 1.0), TypeError, "got dtype float16"),
])
def test_bad_arguments(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_read_only_arrays_are_refused_before_any_change():
    a = np.array([30.0, 40.0])
    ro = np.array([1.0])
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[1\] is read-only"):
        clip_grad_norm([a, ro], 1.0)
    np.testing.assert_array_equal(a, [30.0, 40.0])
    assert global_norm([a, ro]) == pytest.approx(math.sqrt(2501.0))   # measuring is fine


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_scale_that_underflows_is_applied_in_float64(dtype):
    """float32 gradients near 3e38 with a tiny max_norm became all zeros: the scale
    max_norm / norm (1e-69) is 0 in float32. Now the result has norm max_norm, the direction
    kept; in float64 too, where the scale underflows float64 itself."""
    big = np.finfo(dtype).max / 4
    grads = [np.array([big, -big / 2], dtype), np.array([big / 4], dtype)]
    before = [g.astype(np.float64) for g in grads]
    max_norm = 1e-30 if dtype == np.float32 else 1e-300
    norm = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(float(np.sqrt(sum((b / big) @ (b / big) for b in before)))
                                 * big, rel=1e-6)
    assert global_norm(grads) == pytest.approx(max_norm, rel=1e-5)
    for g, b in zip(grads, before):
        np.testing.assert_allclose(g.astype(np.float64) / max_norm, b / norm, rtol=1e-5)


def test_the_same_array_twice_is_refused():
    """It was scaled twice (and counted twice in the norm)."""
    a = np.array([3.0, 4.0])
    with pytest.raises(ValueError, match=r"grads\[0\] and grads\[1\] are the same array"):
        clip_grad_norm([a, a], 1.0)
    with pytest.raises(ValueError, match=r"grads\[0\] and grads\[2\] share memory"):
        clip_grad_value([a, np.ones(1), a[1:]], 1.0)
    with pytest.raises(ValueError, match="same array"):
        global_norm({"w": a, "v": a})
    np.testing.assert_array_equal(a, [3.0, 4.0])
    flat = np.arange(6.0)
    assert global_norm([flat[:3], flat[3:]]) == pytest.approx(np.linalg.norm(flat))  # disjoint
