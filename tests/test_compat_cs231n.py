"""fastbptt.compat.cs231n: the CS231n layer API, checked against a CS231n-style computation.

Step functions: against a step written out here and against central finite differences
(float64). Sequence functions (on the kernels): against a loop of the step functions, the way
the assignment builds them, and against finite differences. Word embedding, temporal affine and
the temporal softmax loss: against hand computations and finite differences.
"""
import numpy as np
import pytest

import fastbptt
from fastbptt.compat import cs231n


def rel_error(a, b):
    """max |a - b| relative to max |b|: the error of a gradient against its finite-difference
    estimate, on the scale of the gradient (elementwise ratios blow up on tiny entries, where a
    central difference has only absolute accuracy)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = float(np.abs(b).max(initial=0))
    assert scale > 0, "the gradient is all zero: the check would prove nothing"
    return float(np.abs(a - b).max()) / scale


def assert_close(actual, expected, name, rtol=1e-10):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = float(np.abs(expected).max(initial=0))
    assert scale > 0, f"{name}: all zero, the comparison would prove nothing"
    err = float(np.abs(actual - expected).max(initial=0))
    assert err <= rtol * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


def numerical_gradient(f, x, df, eps=1e-6):
    """d sum(f() * df) / dx by central differences, perturbing x in place."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = np.sum(np.asarray(f()) * df)
        x[idx] = old - eps
        minus = np.sum(np.asarray(f()) * df)
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def rand(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def rnn_params(rng, n_input, n_hidden, n_gates=1):
    return (rand(rng, n_input, n_gates * n_hidden, scale=0.5 / np.sqrt(n_input)),
            rand(rng, n_hidden, n_gates * n_hidden, scale=0.5 / np.sqrt(n_hidden)),
            rand(rng, n_gates * n_hidden, scale=0.2))


def written_out_lstm_step(x, prev_h, prev_c, Wx, Wh, b):
    """A CS231n-style LSTM step, gates (i, f, o, g), written independently of the module."""
    H = prev_h.shape[-1]
    a = x.dot(Wx) + prev_h.dot(Wh) + b
    i = 1 / (1 + np.exp(-a[..., 0:H]))
    f = 1 / (1 + np.exp(-a[..., H:2 * H]))
    o = 1 / (1 + np.exp(-a[..., 2 * H:3 * H]))
    g = np.tanh(a[..., 3 * H:4 * H])
    next_c = f * prev_c + i * g
    return o * np.tanh(next_c), next_c


def test_public_names():
    expected = {
        "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
        "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
        "word_embedding_forward", "word_embedding_backward",
        "temporal_affine_forward", "temporal_affine_backward", "temporal_softmax_loss",
        "affine_forward", "affine_backward", "sigmoid"}
    assert set(cs231n.__all__) == expected
    assert all(callable(getattr(cs231n, name)) for name in expected)


# ---------------------------------------------------------------------------------------------
# step functions

def test_rnn_step_forward_by_hand():
    rng = np.random.default_rng(0)
    x, prev_h = rand(rng, 3, 4), rand(rng, 3, 5)
    Wx, Wh, b = rnn_params(rng, 4, 5)
    next_h, _ = cs231n.rnn_step_forward(x, prev_h, Wx, Wh, b)
    expected = np.empty((3, 5))
    for n in range(3):                       # one unit at a time, as a sum over the inputs
        for j in range(5):
            a = b[j] + sum(x[n, d] * Wx[d, j] for d in range(4)) + \
                sum(prev_h[n, k] * Wh[k, j] for k in range(5))
            expected[n, j] = np.tanh(a)
    assert_close(next_h, expected, "next_h")


def test_rnn_step_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, prev_h = rand(rng, 4, 5), rand(rng, 4, 6)
    Wx, Wh, b = rnn_params(rng, 5, 6, n_gates=1)
    Wx *= 4                                    # saturate some units: a real test of tanh'
    dnext_h = rand(rng, 4, 6)
    _, cache = cs231n.rnn_step_forward(x, prev_h, Wx, Wh, b)
    grads = cs231n.rnn_step_backward(dnext_h, cache)
    assert len(grads) == 5
    args = [x, prev_h, Wx, Wh, b]
    for name, i, got in zip(["dx", "dprev_h", "dWx", "dWh", "db"], range(5), grads):
        num = numerical_gradient(lambda: cs231n.rnn_step_forward(*args)[0], args[i], dnext_h)
        assert got.shape == args[i].shape
        assert rel_error(got, num) < 1e-7, name


def test_lstm_step_forward_by_hand():
    rng = np.random.default_rng(2)
    x, prev_h, prev_c = rand(rng, 3, 4), rand(rng, 3, 5), rand(rng, 3, 5)
    params = rnn_params(rng, 4, 5, n_gates=4)
    next_h, next_c, _ = cs231n.lstm_step_forward(x, prev_h, prev_c, *params)
    exp_h, exp_c = written_out_lstm_step(x, prev_h, prev_c, *params)
    assert_close(next_h, exp_h, "next_h")
    assert_close(next_c, exp_c, "next_c")


def test_lstm_step_gate_order_is_ifog():
    """With only the third block (o) driven hard negative, the output is shut: o ~ 0."""
    rng = np.random.default_rng(3)
    x, prev_h, prev_c = rand(rng, 2, 3), rand(rng, 2, 4), rand(rng, 2, 4)
    Wx, Wh, b = rnn_params(rng, 3, 4, n_gates=4)
    b[8:12] = -50.0
    next_h, next_c, _ = cs231n.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    assert np.abs(next_h).max() < 1e-15
    assert np.abs(next_c).min() > 0


def test_lstm_step_backward_matches_finite_differences():
    rng = np.random.default_rng(4)
    x, prev_h, prev_c = rand(rng, 3, 4), rand(rng, 3, 5), rand(rng, 3, 5)
    Wx, Wh, b = rnn_params(rng, 4, 5, n_gates=4)
    dnext_h, dnext_c = rand(rng, 3, 5), rand(rng, 3, 5)
    _, _, cache = cs231n.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    grads = cs231n.lstm_step_backward(dnext_h, dnext_c, cache)
    assert len(grads) == 6
    args = [x, prev_h, prev_c, Wx, Wh, b]

    def f():    # one function of both outputs: sum(next_h * dnext_h + next_c * dnext_c)
        next_h, next_c, _ = cs231n.lstm_step_forward(*args)
        return np.concatenate([next_h, next_c], axis=1)

    df = np.concatenate([dnext_h, dnext_c], axis=1)
    names = ["dx", "dprev_h", "dprev_c", "dWx", "dWh", "db"]
    for i, (name, got) in enumerate(zip(names, grads)):
        num = numerical_gradient(f, args[i], df)
        assert got.shape == args[i].shape
        assert rel_error(got, num) < 1e-7, name


def test_step_functions_accept_float32():
    rng = np.random.default_rng(5)
    x, prev_h, prev_c = (rand(rng, 2, 3).astype(np.float32), rand(rng, 2, 4).astype(np.float32),
                         rand(rng, 2, 4).astype(np.float32))
    Wx, Wh, b = (p.astype(np.float32) for p in rnn_params(rng, 3, 4, n_gates=4))
    next_h, next_c, cache = cs231n.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    grads = cs231n.lstm_step_backward(np.ones_like(next_h), np.ones_like(next_c), cache)
    assert next_h.dtype == next_c.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    exp_h, _ = written_out_lstm_step(*(a.astype(np.float64) for a in
                                       (x, prev_h, prev_c, Wx, Wh, b)))
    np.testing.assert_allclose(next_h, exp_h, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# sequence functions: a loop of step functions, as the assignment writes them

def loop_rnn(x, h0, Wx, Wh, b, dh):
    N, T, _ = x.shape
    h, caches, prev_h = np.zeros((N, T, h0.shape[1])), [], h0
    for t in range(T):
        prev_h, cache = cs231n.rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(cache)
    dx, dWx, dWh, db = np.zeros_like(x), np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dprev_h = np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = cs231n.rnn_step_backward(dh[:, t] + dprev_h,
                                                                         caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return h, (dx, dprev_h, dWx, dWh, db)


def loop_lstm(x, h0, Wx, Wh, b, dh):
    N, T, _ = x.shape
    h, caches, prev_h, prev_c = np.zeros((N, T, h0.shape[1])), [], h0, np.zeros_like(h0)
    for t in range(T):
        prev_h, prev_c, cache = cs231n.lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(cache)
    dx, dWx, dWh, db = np.zeros_like(x), np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dprev_h, dprev_c = np.zeros_like(h0), np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = cs231n.lstm_step_backward(
            dh[:, t] + dprev_h, dprev_c, caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return h, (dx, dprev_h, dWx, dWh, db), prev_c, dprev_c


SEQ_SHAPES = [(3, 7, 4, 5), (1, 1, 2, 3), (2, 9, 1, 1), (4, 5, 6, 8)]


@pytest.mark.parametrize("shape", SEQ_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_rnn_forward_backward_equal_a_loop_of_steps(shape):
    N, T, D, H = shape
    rng = np.random.default_rng(6)
    x, h0, dh = rand(rng, N, T, D), rand(rng, N, H), rand(rng, N, T, H)
    params = rnn_params(rng, D, H)
    h, cache = cs231n.rnn_forward(x, h0, *params)
    grads = cs231n.rnn_backward(dh, cache)
    exp_h, exp_grads = loop_rnn(x, h0, *params, dh)
    assert_close(h, exp_h, "h")
    assert len(grads) == 5
    for name, got, expected in zip(["dx", "dh0", "dWx", "dWh", "db"], grads, exp_grads):
        assert_close(got, expected, name)


@pytest.mark.parametrize("shape", SEQ_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_lstm_forward_backward_equal_a_loop_of_steps(shape):
    N, T, D, H = shape
    rng = np.random.default_rng(7)
    x, h0, dh = rand(rng, N, T, D), rand(rng, N, H), rand(rng, N, T, H)
    params = rnn_params(rng, D, H, n_gates=4)
    params[2][:] += np.repeat([0.0, 1.0, -0.5, 0.3], H)      # the blocks differ: order matters
    h, cache = cs231n.lstm_forward(x, h0, *params)
    grads = cs231n.lstm_backward(dh, cache)
    exp_h, exp_grads, exp_cT, exp_dc0 = loop_lstm(x, h0, *params, dh)
    assert_close(h, exp_h, "h")
    assert_close(cache.cT, exp_cT, "cT")
    assert len(grads) == 5
    for name, got, expected in zip(["dx", "dh0", "dWx", "dWh", "db"], grads, exp_grads):
        assert_close(got, expected, name)
    assert_close(grads.dc0, exp_dc0, "dc0")


def test_lstm_gate_order_differs_from_fastbptt_order():
    """The same arrays mean different networks in (i, f, o, g) and (i, f, g, o)."""
    rng = np.random.default_rng(8)
    x, h0 = rand(rng, 2, 4, 3), rand(rng, 2, 5)
    params = rnn_params(rng, 3, 5, n_gates=4)
    h, _ = cs231n.lstm_forward(x, h0, *params)
    h_ifgo, _ = fastbptt.lstm_forward(x, h0, *params)
    assert np.abs(h - h_ifgo).max() > 1e-3
    swap = np.r_[0:10, 15:20, 10:15]                           # (i, f, o, g) -> (i, f, g, o)
    h_swapped, _ = fastbptt.lstm_forward(x, h0, *(p[..., swap] for p in params))
    assert_close(h, h_swapped, "h")


# the sequence functions of the CS231n API, by the cell they run
SEQUENCE = {"rnn": (cs231n.rnn_forward, cs231n.rnn_backward),
            "lstm": (cs231n.lstm_forward, cs231n.lstm_backward)}


@pytest.mark.parametrize("cell", list(SEQUENCE))
def test_sequence_backward_matches_finite_differences(cell):
    N, T, D, H = 2, 4, 3, 2
    rng = np.random.default_rng(9)
    x, h0, dh = rand(rng, N, T, D), rand(rng, N, H), rand(rng, N, T, H)
    args = [x, h0, *rnn_params(rng, D, H, n_gates=fastbptt.CELLS[cell].n_gates)]
    forward, backward = SEQUENCE[cell]
    _, cache = forward(*args)
    grads = backward(dh, cache)
    for i, (name, got) in enumerate(zip(["dx", "dh0", "dWx", "dWh", "db"], grads)):
        num = numerical_gradient(lambda: forward(*args)[0], args[i], dh)
        assert rel_error(got, num) < 1e-7, name


def test_rnn_forward_returns_readonly_h_and_float32_works():
    rng = np.random.default_rng(10)
    x, h0 = rand(rng, 2, 3, 4).astype(np.float32), rand(rng, 2, 5).astype(np.float32)
    params = [p.astype(np.float32) for p in rnn_params(rng, 4, 5)]
    h, cache = cs231n.rnn_forward(x, h0, *params)
    assert h.shape == (2, 3, 5) and h.dtype == np.float32
    assert not h.flags.writeable
    dx, dh0, dWx, dWh, db = cs231n.rnn_backward(np.ones_like(h), cache)
    assert dx.shape == x.shape and dx.dtype == np.float32
    h64, _ = loop_rnn(x.astype(np.float64), h0.astype(np.float64),
                      *(p.astype(np.float64) for p in params), np.zeros((2, 3, 5)))
    np.testing.assert_allclose(h, h64, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# word embedding

def test_word_embedding_by_hand():
    W = np.arange(12, dtype=np.float64).reshape(4, 3)          # V = 4 words, D = 3
    x = np.array([[0, 3, 1], [3, 3, 2]])
    out, cache = cs231n.word_embedding_forward(x, W)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 1], [9, 10, 11])
    np.testing.assert_array_equal(out[1], [[9, 10, 11], [9, 10, 11], [6, 7, 8]])
    dout = np.arange(18, dtype=np.float64).reshape(2, 3, 3)
    dW = cs231n.word_embedding_backward(dout, cache)
    expected = np.array([
        [0, 1, 2],                                             # word 0 at (0, 0)
        [6, 7, 8],                                             # word 1 at (0, 2)
        [15, 16, 17],                                          # word 2 at (1, 2)
        [3 + 9 + 12, 4 + 10 + 13, 5 + 11 + 14],                # word 3 three times
    ], dtype=np.float64)
    np.testing.assert_array_equal(dW, expected)


def test_word_embedding_backward_matches_finite_differences():
    rng = np.random.default_rng(11)
    x = rng.integers(0, 5, size=(3, 4))
    W, dout = rand(rng, 6, 2), rand(rng, 3, 4, 2)              # word 5 never occurs
    _, cache = cs231n.word_embedding_forward(x, W)
    dW = cs231n.word_embedding_backward(dout, cache)
    num = numerical_gradient(lambda: cs231n.word_embedding_forward(x, W)[0], W, dout)
    assert rel_error(dW, num) < 1e-8
    np.testing.assert_array_equal(dW[5], 0)


# ---------------------------------------------------------------------------------------------
# temporal affine

def test_temporal_affine_by_hand_and_finite_differences():
    rng = np.random.default_rng(12)
    x, w, b = rand(rng, 2, 3, 4), rand(rng, 4, 5), rand(rng, 5)
    out, cache = cs231n.temporal_affine_forward(x, w, b)
    assert out.shape == (2, 3, 5)
    for n in range(2):
        for t in range(3):
            assert_close(out[n, t], x[n, t] @ w + b, f"out[{n},{t}]")
    dout = rand(rng, 2, 3, 5)
    grads = cs231n.temporal_affine_backward(dout, cache)
    args = [x, w, b]
    for i, (name, got) in enumerate(zip(["dx", "dw", "db"], grads)):
        num = numerical_gradient(lambda: cs231n.temporal_affine_forward(*args)[0], args[i], dout)
        assert got.shape == args[i].shape
        assert rel_error(got, num) < 1e-8, name


# ---------------------------------------------------------------------------------------------
# temporal softmax loss

def test_temporal_softmax_loss_by_hand_with_mask():
    x = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
                  [[2.0, -1.0, 0.5], [5.0, 1.0, 1.0]]])        # N = 2, T = 2, V = 3
    y = np.array([[2, 0], [1, 0]])
    mask = np.array([[True, False], [True, True]])
    loss, dx = cs231n.temporal_softmax_loss(x, y, mask)

    def p(scores):
        e = np.exp(scores)
        return e / e.sum()

    expected = -(np.log(p(x[0, 0])[2]) + np.log(p(x[1, 0])[1]) + np.log(p(x[1, 1])[0])) / 2
    assert abs(loss - expected) <= 1e-12 * expected            # summed over t, averaged over N
    np.testing.assert_array_equal(dx[0, 1], 0)                  # masked out: no gradient
    np.testing.assert_allclose(dx[0, 0], (p(x[0, 0]) - [0, 0, 1]) / 2, rtol=1e-12)
    np.testing.assert_allclose(dx[1, 1], (p(x[1, 1]) - [1, 0, 0]) / 2, rtol=1e-12)
    # the masked step's scores do not change the loss
    x2 = x.copy()
    x2[0, 1] = [100.0, -3.0, 7.0]
    assert cs231n.temporal_softmax_loss(x2, y, mask)[0] == loss


@pytest.mark.parametrize("N,T,V,p_mask,expected", [
    (100, 1, 10, 1.0, 2.3), (100, 10, 10, 1.0, 23.0), (5000, 10, 10, 0.1, 2.3)])
def test_temporal_softmax_loss_cs231n_sanity(N, T, V, p_mask, expected):
    """The assignment's check: with tiny scores the loss is about T * p_mask * log(V)."""
    rng = np.random.default_rng(13)
    x = 0.001 * rand(rng, N, T, V)
    y = rng.integers(V, size=(N, T))
    mask = rng.random((N, T)) <= p_mask
    loss, _ = cs231n.temporal_softmax_loss(x, y, mask)
    assert abs(loss - expected) < 0.1
    assert abs(loss - T * mask.mean() * np.log(V)) < 1e-3


def test_temporal_softmax_loss_matches_finite_differences(capsys):
    rng = np.random.default_rng(14)
    N, T, V = 3, 4, 5
    x, y = rand(rng, N, T, V, scale=2), rng.integers(V, size=(N, T))
    mask = rng.random((N, T)) > 0.3
    loss, dx = cs231n.temporal_softmax_loss(x, y, mask, verbose=True)
    assert "dx" in capsys.readouterr().out
    assert np.ndim(loss) == 0 and np.asarray(loss).dtype == np.float64
    num = numerical_gradient(lambda: cs231n.temporal_softmax_loss(x, y, mask)[0], x, 1.0)
    assert rel_error(dx, num) < 1e-7
    assert np.all(dx[~mask] == 0)


def test_temporal_softmax_loss_large_scores_stay_finite():
    x = np.array([[[1000.0, 0.0], [-1000.0, 1000.0]]])
    loss, dx = cs231n.temporal_softmax_loss(x, np.array([[1, 0]]), np.ones((1, 2), bool))
    assert np.isfinite(loss) and np.isfinite(dx).all()
    assert abs(loss - 3000.0) < 1e-9


# ---------------------------------------------------------------------------------------------
# affine

def test_affine_by_hand_and_finite_differences():
    rng = np.random.default_rng(17)
    x, w, b = rand(rng, 3, 2, 2), rand(rng, 4, 5), rand(rng, 5)      # x (N, d_1, d_2), D = 4
    out, cache = cs231n.affine_forward(x, w, b)
    assert isinstance(cache, tuple) and len(cache) == 3
    for n in range(3):
        assert_close(out[n], x[n].ravel() @ w + b, f"out[{n}]")
    dout = rand(rng, 3, 5)
    grads = cs231n.affine_backward(dout, cache)
    args = [x, w, b]
    for i, (name, got) in enumerate(zip(["dx", "dw", "db"], grads)):
        num = numerical_gradient(lambda: cs231n.affine_forward(*args)[0], args[i], dout)
        assert got.shape == args[i].shape
        assert rel_error(got, num) < 1e-8, name


def test_sigmoid_without_overflow():
    x = np.array([-1000.0, -1.0, 0.0, 2.0, 1000.0])
    with np.errstate(over="raise"):
        got = cs231n.sigmoid(x)
    np.testing.assert_allclose(got, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-2.0)), 1.0])


# ---------------------------------------------------------------------------------------------
# as NumPy does: broadcasting, any index shape, the wider dtype

def test_word_embedding_takes_indices_of_any_shape():
    """As ``W[x]``: a scalar start token, a 1-D batch of words, negative indices."""
    rng = np.random.default_rng(18)
    W = rand(rng, 5, 3)
    for x in (2, np.int64(4), np.array([0, 4, 4]), np.array([[1, -1], [-5, 3]]),
              np.zeros((2, 0), int)):
        out, cache = cs231n.word_embedding_forward(x, W)
        np.testing.assert_array_equal(out, W[x])
        dout = rand(rng, *out.shape)
        expected = np.zeros_like(W)
        np.add.at(expected, np.asarray(x), dout)
        np.testing.assert_array_equal(cs231n.word_embedding_backward(dout, cache), expected)


BROADCAST = {
    "x-1d": {"x": (3,), "prev_h": (2, 4)},                 # one start token's embedding
    "state-row": {"x": (2, 3), "prev_h": (1, 4), "b": (1, 4)},  # one state for the batch
    "unbatched": {"x": (3,), "prev_h": (4,)},               # one example
    "c-1d": {"x": (2, 3), "prev_h": (2, 4), "prev_c": (4,)},
}
BROADCAST_CASES = [(cell, name) for cell in ("rnn", "lstm") for name in BROADCAST
                   if cell == "lstm" or "prev_c" not in BROADCAST[name]]


@pytest.mark.parametrize("cell,case", BROADCAST_CASES,
                         ids=[f"{c}-{n}" for c, n in BROADCAST_CASES])
def test_step_functions_broadcast_as_numpy(cell, case):
    """Forward computes the NumPy expression with broadcasting; backward returns each
    gradient in its argument's shape, equal to central differences."""
    shapes = BROADCAST[case]
    n_gates = 4 if cell == "lstm" else 1
    rng = np.random.default_rng(19)
    Wx, Wh, b = rnn_params(rng, 3, 4, n_gates=n_gates)
    b = np.resize(b, shapes["b"][:-1] + (n_gates * 4,)) if "b" in shapes else b
    x, prev_h = rand(rng, *shapes["x"]), rand(rng, *shapes["prev_h"])
    if cell == "lstm":
        prev_c = rand(rng, *shapes.get("prev_c", shapes["prev_h"]))
        args = [x, prev_h, prev_c, Wx, Wh, b]
        next_h, next_c, cache = cs231n.lstm_step_forward(*args)
        exp_h, exp_c = written_out_lstm_step(*args)
        assert_close(next_c, exp_c, "next_c")
    else:
        args = [x, prev_h, Wx, Wh, b]
        next_h, cache = cs231n.rnn_step_forward(*args)
        exp_h = np.tanh(x.dot(Wx) + prev_h.dot(Wh) + b)
    assert_close(next_h, exp_h, "next_h")
    dnext_h = rand(rng, *next_h.shape)
    if cell == "lstm":
        dnext_c = rand(rng, *next_c.shape)
        grads = cs231n.lstm_step_backward(dnext_h, dnext_c, cache)

        def f():
            h, c, _ = cs231n.lstm_step_forward(*args)
            return np.concatenate([h, c], axis=-1)
        df = np.concatenate([dnext_h, dnext_c], axis=-1)
    else:
        grads = cs231n.rnn_step_backward(dnext_h, cache)

        def f():
            return cs231n.rnn_step_forward(*args)[0]
        df = dnext_h
    assert len(grads) == len(args)
    for i, got in enumerate(grads):
        assert got.shape == args[i].shape, i
        assert rel_error(got, numerical_gradient(f, args[i], df)) < 1e-7, i


def test_mixed_dtypes_compute_in_the_wider_one():
    """float32 with float64 (or integers) computes in float64 and returns float64, as NumPy's
    expressions do; all float32 stays float32."""
    rng = np.random.default_rng(20)
    x, h0 = rand(rng, 2, 3, 4), rand(rng, 2, 5)
    Wx, Wh, b = rnn_params(rng, 4, 5)
    f32 = [a.astype(np.float32) for a in (x, h0, Wx, Wh, b)]
    h, _ = cs231n.rnn_forward(*f32)
    assert h.dtype == np.float32
    mixed = [f32[0], h0, f32[2], f32[3], f32[4]]                # one float64 argument
    h, cache = cs231n.rnn_forward(*mixed)
    assert h.dtype == np.float64
    exp_h, _ = cs231n.rnn_forward(*(a.astype(np.float64) for a in mixed))
    assert_close(h, exp_h, "h")
    grads = cs231n.rnn_backward(np.ones((2, 3, 5), np.float32), cache)
    assert all(g.dtype == np.float64 for g in grads)
    next_h, step_cache = cs231n.rnn_step_forward(x[:, 0].astype(np.float32), h0.astype(int),
                                                 f32[2], f32[3], f32[4])
    assert next_h.dtype == np.float64                       # int64 with float32: float64
    out, emb_cache = cs231n.word_embedding_forward(np.array([1, 2]), f32[2])
    assert cs231n.word_embedding_backward(np.ones((2, 5)), emb_cache).dtype == np.float64
    out, aff_cache = cs231n.temporal_affine_forward(f32[0], Wx, f32[4])
    assert out.dtype == np.float64
    assert all(g.dtype == np.float64 for g in cs231n.temporal_affine_backward(out, aff_cache))
    out, aff_cache = cs231n.affine_forward(f32[0], rand(rng, 12, 5), f32[4])   # D = 3 * 4
    assert out.dtype == np.float64 and out.shape == (2, 5)
    assert all(g.dtype == np.float64 for g in cs231n.affine_backward(out, aff_cache))


@pytest.mark.parametrize("cell", list(SEQUENCE))
def test_sequence_backward_with_a_wider_dh_runs_in_the_wider_dtype(cell):
    """A float32 forward differentiated with a float64 dh gives the float64 gradients (the
    forward runs again in float64), as the NumPy code computes in the wider type."""
    rng = np.random.default_rng(21)
    n_gates = fastbptt.CELLS[cell].n_gates
    args64 = [rand(rng, 2, 4, 3), rand(rng, 2, 5), *rnn_params(rng, 3, 5, n_gates=n_gates)]
    args32 = [a.astype(np.float32) for a in args64]
    forward, backward = SEQUENCE[cell]
    dh = rand(rng, 2, 4, 5)
    _, cache32 = forward(*args32)
    _, cache64 = forward(*(a.astype(np.float64) for a in args32))
    got, expected = backward(dh, cache32), backward(dh, cache64)
    for name, g, e in zip(["dx", "dh0", "dWx", "dWh", "db"], got, expected):
        assert g.dtype == np.float64, name
        assert_close(g, e, name)
    narrower = backward(dh.astype(np.float32), cache32)
    assert all(g.dtype == np.float32 for g in narrower)


# ---------------------------------------------------------------------------------------------
# bad input: a TypeError or ValueError naming the argument

def _bad_cases():
    rng = np.random.default_rng(15)
    x, h, c = rand(rng, 2, 3), rand(rng, 2, 4), rand(rng, 2, 4)
    Wx, Wh, b = rnn_params(rng, 3, 4)
    Wx4, Wh4, b4 = rnn_params(rng, 3, 4, n_gates=4)
    xs = rand(rng, 2, 5, 3)
    f = cs231n
    return [
        ("rnn step x 3-D", f.rnn_step_forward, (xs, h, Wx, Wh, b), ValueError,
         "x, prev_h and b do not broadcast together: x @ Wx (2, 5, 4), prev_h @ Wh (2, 4)"),
        ("rnn step prev_h", f.rnn_step_forward, (x, h[:, :3], Wx, Wh, b), ValueError,
         "prev_h must have shape (N, H) with H = 4 (the rows of Wh), got (2, 3)"),
        ("rnn step Wx", f.rnn_step_forward, (x, h, Wx[:2], Wh, b), ValueError,
         "Wx must have shape (D, H) = (3, 4)"),
        ("rnn step Wh", f.rnn_step_forward, (x, h, Wx, Wh4, b), ValueError,
         "Wh must have shape (H, H)"),
        ("rnn step b complex", f.rnn_step_forward, (x, h, Wx, Wh, b.astype(complex)),
         TypeError, "b must be an array of real numbers, got dtype complex128"),
        ("rnn step all int", f.rnn_step_forward,
         tuple(a.astype(int) for a in (x, h, Wx, Wh, b)), TypeError,
         "NumPy would compute these in int64; fastbptt computes in float32 or float64"),
        ("rnn step float16", f.rnn_step_forward,
         tuple(a.astype(np.float16) for a in (x, h, Wx, Wh, b)), TypeError,
         "NumPy would compute these in float16"),
        ("rnn step NaN", f.rnn_step_forward, (x, h * np.nan, Wx, Wh, b), ValueError,
         "prev_h contains NaN"),
        ("lstm step prev_c", f.lstm_step_forward, (x, h, c[:, :3], Wx4, Wh4, b4), ValueError,
         "prev_c must have shape (N, H) = (2, 4)"),
        ("lstm step Wh", f.lstm_step_forward, (x, h, c, Wx4, Wh, b4), ValueError,
         "Wh must have shape (H, 4*H)"),
        ("lstm step b", f.lstm_step_forward, (x, h, c, Wx4, Wh4, b), ValueError,
         "b must have shape (4*H,) = (16,)"),
        ("rnn seq x 2-D", f.rnn_forward, (x, h, Wx, Wh, b), ValueError,
         "x must be a 3-D array"),
        ("rnn seq h0", f.rnn_forward, (xs, h[:1], Wx, Wh, b), ValueError, "h0 must have shape"),
        ("embedding x float", f.word_embedding_forward, (x, Wx), TypeError,
         "x must be an integer array of word indices, got dtype float64"),
        ("embedding x range", f.word_embedding_forward, (np.array([[0, 3]]), Wx), ValueError,
         "x must hold word indices in [-3, 3), got values from 0 to 3"),
        ("embedding x negative", f.word_embedding_forward, (np.array([[0, -4]]), Wx),
         ValueError, "x must hold word indices in [-3, 3), got values from -4 to 0"),
        ("embedding W int", f.word_embedding_forward, (np.array([[0]]), np.eye(3, dtype=int)),
         TypeError, "W must be a float32 or float64 array"),
        ("affine w", f.temporal_affine_forward, (xs, Wx4[:2], b4), ValueError,
         "w must have shape (D, M) = (3, 16), got (2, 16)"),
        ("affine b", f.temporal_affine_forward, (xs, Wx4, b), ValueError,
         "b must have shape (M,) = (16,), got (4,)"),
        ("affine x", f.temporal_affine_forward, (x, Wx4, b4), ValueError,
         "x must be a 3-D array (N, T, D)"),
        ("softmax y float", f.temporal_softmax_loss, (xs, x[:, :5], np.ones((2, 5))), TypeError,
         "y must be an integer array"),
        ("softmax y shape", f.temporal_softmax_loss, (xs, np.zeros((2, 4), int), np.ones((2, 5))),
         ValueError, "y must have shape (N, T) = (2, 5), got (2, 4)"),
        ("softmax y range", f.temporal_softmax_loss, (xs, np.full((2, 5), 3), np.ones((2, 5))),
         ValueError, "y must hold labels in [0, 3)"),
        ("softmax mask shape", f.temporal_softmax_loss,
         (xs, np.zeros((2, 5), int), np.ones((5, 2), bool)), ValueError,
         "mask must have shape (N, T) = (2, 5), got (5, 2)"),
        ("softmax mask str", f.temporal_softmax_loss,
         (xs, np.zeros((2, 5), int), np.full((2, 5), "a")), TypeError, "mask must be a boolean"),
        ("softmax mask negative", f.temporal_softmax_loss,
         (xs, np.zeros((2, 5), int), -np.ones((2, 5))), ValueError,
         "mask must hold booleans or finite non-negative weights"),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_names_the_argument(case):
    _, func, args, exc, message = case
    with pytest.raises(exc) as info:
        func(*args)
    assert message in str(info.value)


def test_backward_wants_its_own_cache():
    rng = np.random.default_rng(16)
    x, h = rand(rng, 2, 3), rand(rng, 2, 4)
    Wx, Wh, b = rnn_params(rng, 3, 4)
    next_h, cache = cs231n.rnn_step_forward(x, h, Wx, Wh, b)
    with pytest.raises(TypeError, match="cache must be the cache returned by lstm_step_forward"):
        cs231n.lstm_step_backward(next_h, next_h, cache)
    with pytest.raises(ValueError, match=r"dnext_h must have shape \(N, H\) = \(2, 4\)"):
        cs231n.rnn_step_backward(next_h[:, :3], cache)
    with pytest.raises(TypeError, match="dnext_h must be an array of real numbers"):
        cs231n.rnn_step_backward(next_h.astype(complex), cache)
    _, seq_cache = cs231n.rnn_forward(x[:, None], h, Wx, Wh, b)
    with pytest.raises(TypeError, match=r"cache must be the cache returned by .*lstm_forward"):
        cs231n.lstm_backward(np.zeros((2, 1, 4)), seq_cache)
    out, emb_cache = cs231n.word_embedding_forward(np.array([[0, 1]]), Wx)
    with pytest.raises(ValueError, match=r"dout must have shape \(N, T, D\) = \(1, 2, 4\)"):
        cs231n.word_embedding_backward(out[:, :1], emb_cache)
    with pytest.raises(TypeError, match=r"dout must be an array of real numbers"):
        cs231n.word_embedding_backward(out.astype(complex), emb_cache)
    with pytest.raises(TypeError, match="cache must be the cache returned by temporal_affine"):
        cs231n.temporal_affine_backward(out, emb_cache)
