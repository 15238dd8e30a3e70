"""The CS231n captioning model, ported as a user would: its layers swapped for
``from fastbptt.compat.cs231n import *``.

This file holds a student-style ``rnn_layers`` in plain NumPy (step functions, sequence loops of
them, ``W[x]``, the temporal layers and loss, as the assignment's solutions write them) and a
student-style ``CaptioningRNN`` (an affine projection of image features into h0, word
embedding, the recurrent layer, a temporal affine layer and the temporal softmax loss, and
greedy sampling from a scalar start token). The model's methods look their layer functions up
in their module's globals, as ``from cs231n.rnn_layers import *`` leaves them there; ``port``
gives the model the globals of a module that did ``from fastbptt.compat.cs231n import *``
instead, and nothing of this file's NumPy layers, so a function the compatibility layer lacks
fails with the NameError a user would see. Both versions then run the same data: loss,
gradients and sampled captions must agree, for float32 and float64 models, and for a float32
model fed float64 features (computed in float64 by NumPy, and by the compatibility layer).
"""
import types

import numpy as np
import pytest

from fastbptt.compat import cs231n

# ---------------------------------------------------------------------------------------------
# a student's rnn_layers.py, in NumPy


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1).dot(w) + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = np.sum(dout, axis=0)
    return dx, dw, db


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x.dot(Wx) + prev_h.dot(Wh) + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h ** 2)
    return da.dot(Wx.T), da.dot(Wh.T), x.T.dot(da), prev_h.T.dot(da), np.sum(da, axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    N, T, D = x.shape
    h = np.zeros((N, T, h0.shape[1]), dtype=np.result_type(x, h0, Wx, Wh, b))
    cache, prev_h = [], h0
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
        h[:, t, :] = prev_h
        cache.append(step_cache)
    return h, cache


def rnn_backward(dh, cache):
    N, T, H = dh.shape
    x0, _, Wx, Wh, _ = cache[0]
    dtype = np.result_type(dh, Wx)
    dx = np.zeros((N, T, x0.shape[1]), dtype)
    dWx, dWh, db = np.zeros(Wx.shape, dtype), np.zeros(Wh.shape, dtype), np.zeros(H, dtype)
    dprev_h = np.zeros((N, H), dtype)
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dprev_h,
                                                                     cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


def sigmoid(x):
    pos = x >= 0
    neg = ~pos
    z = np.zeros_like(x)
    z[pos] = np.exp(-x[pos])
    z[neg] = np.exp(x[neg])
    top = np.ones_like(x)
    top[neg] = z[neg]
    return top / (1 + z)


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    H = prev_h.shape[1]
    a = x.dot(Wx) + prev_h.dot(Wh) + b
    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    tanh_c = np.tanh(next_c)
    dc = dnext_c + dnext_h * o * (1 - tanh_c ** 2)
    da = np.hstack([dc * g * i * (1 - i), dc * prev_c * f * (1 - f),
                    dnext_h * tanh_c * o * (1 - o), dc * i * (1 - g ** 2)])
    return (da.dot(Wx.T), da.dot(Wh.T), dc * f, x.T.dot(da), prev_h.T.dot(da),
            np.sum(da, axis=0))


def lstm_forward(x, h0, Wx, Wh, b):
    N, T, D = x.shape
    h = np.zeros((N, T, h0.shape[1]), dtype=np.result_type(x, h0, Wx, Wh, b))
    cache, prev_h, prev_c = [], h0, np.zeros_like(h0)
    for t in range(T):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t, :], prev_h, prev_c, Wx, Wh, b)
        h[:, t, :] = prev_h
        cache.append(step_cache)
    return h, cache


def lstm_backward(dh, cache):
    N, T, H = dh.shape
    x0, _, _, Wx, Wh = cache[0][:5]
    dtype = np.result_type(dh, Wx)
    dx = np.zeros((N, T, x0.shape[1]), dtype)
    dWx, dWh, db = np.zeros(Wx.shape, dtype), np.zeros(Wh.shape, dtype), np.zeros(4 * H, dtype)
    dprev_h, dprev_c = np.zeros((N, H), dtype), np.zeros((N, H), dtype)
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t, :] + dprev_h, dprev_c, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


def word_embedding_forward(x, W):
    return W[x], (x, W)


def word_embedding_backward(dout, cache):
    x, W = cache
    dW = np.zeros(W.shape, np.result_type(dout, W))
    np.add.at(dW, x, dout)
    return dW


def temporal_affine_forward(x, w, b):
    N, T, D = x.shape
    M = b.shape[0]
    out = x.reshape(N * T, D).dot(w).reshape(N, T, M) + b
    return out, (x, w, b, out)


def temporal_affine_backward(dout, cache):
    x, w, b, out = cache
    N, T, D = x.shape
    M = b.shape[0]
    dx = dout.reshape(N * T, M).dot(w.T).reshape(N, T, D)
    dw = dout.reshape(N * T, M).T.dot(x.reshape(N * T, D)).T
    db = dout.sum(axis=(0, 1))
    return dx, dw, db


def temporal_softmax_loss(x, y, mask, verbose=False):
    N, T, V = x.shape
    x_flat, y_flat, mask_flat = x.reshape(N * T, V), y.reshape(N * T), mask.reshape(N * T)
    probs = np.exp(x_flat - np.max(x_flat, axis=1, keepdims=True))
    probs /= np.sum(probs, axis=1, keepdims=True)
    loss = -np.sum(mask_flat * np.log(probs[np.arange(N * T), y_flat])) / N
    dx_flat = probs.copy()
    dx_flat[np.arange(N * T), y_flat] -= 1
    dx_flat /= N
    dx_flat *= mask_flat[:, None]
    return loss, dx_flat.reshape(N, T, V)


LAYER_NAMES = ["affine_forward", "affine_backward", "rnn_step_forward", "rnn_step_backward",
               "rnn_forward", "rnn_backward", "lstm_step_forward", "lstm_step_backward",
               "lstm_forward", "lstm_backward", "word_embedding_forward",
               "word_embedding_backward", "temporal_affine_forward", "temporal_affine_backward",
               "temporal_softmax_loss", "sigmoid"]


# ---------------------------------------------------------------------------------------------
# a student's captioning model, on whatever layers its module's globals hold

class CaptioningRNN:
    def __init__(self, word_to_idx, input_dim=12, wordvec_dim=6, hidden_dim=8, cell_type="rnn",
                 dtype=np.float32, seed=0):
        self.cell_type = cell_type
        self.dtype = dtype
        self.word_to_idx = word_to_idx
        self.params = {}
        vocab_size = len(word_to_idx)
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>", None)
        self._end = word_to_idx.get("<END>", None)
        rng = np.random.RandomState(seed)
        self.params["W_embed"] = rng.randn(vocab_size, wordvec_dim) / 100
        self.params["W_proj"] = rng.randn(input_dim, hidden_dim) / np.sqrt(input_dim)
        self.params["b_proj"] = np.zeros(hidden_dim)
        dim_mul = {"lstm": 4, "rnn": 1}[cell_type]
        self.params["Wx"] = rng.randn(wordvec_dim, dim_mul * hidden_dim) / np.sqrt(wordvec_dim)
        self.params["Wh"] = rng.randn(hidden_dim, dim_mul * hidden_dim) / np.sqrt(hidden_dim)
        self.params["b"] = np.zeros(dim_mul * hidden_dim)
        self.params["W_vocab"] = rng.randn(hidden_dim, vocab_size) / np.sqrt(hidden_dim)
        self.params["b_vocab"] = np.zeros(vocab_size)
        for k, v in self.params.items():
            self.params[k] = v.astype(self.dtype)

    def loss(self, features, captions):
        captions_in = captions[:, :-1]
        captions_out = captions[:, 1:]
        mask = captions_out != self._null
        W_proj, b_proj = self.params["W_proj"], self.params["b_proj"]
        W_embed = self.params["W_embed"]
        Wx, Wh, b = self.params["Wx"], self.params["Wh"], self.params["b"]
        W_vocab, b_vocab = self.params["W_vocab"], self.params["b_vocab"]
        grads = {}

        h0, cache_proj = affine_forward(features, W_proj, b_proj)
        x, cache_embed = word_embedding_forward(captions_in, W_embed)
        if self.cell_type == "rnn":
            h, cache_rnn = rnn_forward(x, h0, Wx, Wh, b)
        else:
            h, cache_rnn = lstm_forward(x, h0, Wx, Wh, b)
        scores, cache_scores = temporal_affine_forward(h, W_vocab, b_vocab)
        loss, dscores = temporal_softmax_loss(scores, captions_out, mask)

        dh, grads["W_vocab"], grads["b_vocab"] = temporal_affine_backward(dscores, cache_scores)
        if self.cell_type == "rnn":
            dx, dh0, grads["Wx"], grads["Wh"], grads["b"] = rnn_backward(dh, cache_rnn)
        else:
            dx, dh0, grads["Wx"], grads["Wh"], grads["b"] = lstm_backward(dh, cache_rnn)
        grads["W_embed"] = word_embedding_backward(dx, cache_embed)
        _, grads["W_proj"], grads["b_proj"] = affine_backward(dh0, cache_proj)
        return loss, grads

    def sample(self, features, max_length=6):
        N = features.shape[0]
        captions = self._null * np.ones((N, max_length), dtype=np.int32)
        W_proj, b_proj = self.params["W_proj"], self.params["b_proj"]
        W_embed = self.params["W_embed"]
        Wx, Wh, b = self.params["Wx"], self.params["Wh"], self.params["b"]
        W_vocab, b_vocab = self.params["W_vocab"], self.params["b_vocab"]

        prev_h, _ = affine_forward(features, W_proj, b_proj)
        prev_c = np.zeros_like(prev_h)
        word = self._start                 # a scalar: its embedding is (D,), broadcast over N
        for t in range(max_length):
            x, _ = word_embedding_forward(word, W_embed)
            if self.cell_type == "rnn":
                prev_h, _ = rnn_step_forward(x, prev_h, Wx, Wh, b)
            else:
                prev_h, prev_c, _ = lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
            scores, _ = affine_forward(prev_h, W_vocab, b_vocab)
            word = np.argmax(scores, axis=1)            # (N,): the next step embeds a 1-D array
            captions[:, t] = word
        return captions


def port(model_class, layer_globals):
    """``model_class`` with its methods' global names looked up in ``layer_globals`` (the
    globals of a module that star-imported its layers) instead of this file's."""
    namespace = {"np": np, **layer_globals}
    methods = {name: types.FunctionType(f.__code__, namespace, name, f.__defaults__,
                                        f.__closure__)
               for name, f in vars(model_class).items() if isinstance(f, types.FunctionType)}
    return type(model_class.__name__, (), methods)


def star_import(module_name):
    """The names ``from <module_name> import *`` binds."""
    namespace = {}
    exec(f"from {module_name} import *", namespace)
    namespace.pop("__builtins__")
    return namespace


NUMPY_LAYERS = {name: globals()[name] for name in LAYER_NAMES}
MODELS = {
    "numpy": port(CaptioningRNN, NUMPY_LAYERS),
    "fastbptt": port(CaptioningRNN, star_import("fastbptt.compat.cs231n")),
}


# ---------------------------------------------------------------------------------------------
# data

WORDS = ["<NULL>", "<START>", "<END>", "a", "cat", "on", "mat", "dog", "runs", "the", "grass"]
WORD_TO_IDX = {w: i for i, w in enumerate(WORDS)}


def make_data(seed, n_batch=5, n_steps=8, input_dim=12, dtype=np.float32):
    """Features, and captions <START> word ... <END> padded with <NULL> as in the dataset."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_batch, input_dim)).astype(dtype)
    captions = np.full((n_batch, n_steps), WORD_TO_IDX["<NULL>"], dtype=np.int32)
    for n in range(n_batch):
        length = rng.integers(2, n_steps - 1)
        captions[n, 0] = WORD_TO_IDX["<START>"]
        captions[n, 1:length + 1] = rng.integers(3, len(WORDS), size=length)
        captions[n, length + 1] = WORD_TO_IDX["<END>"]
    return features, captions


TOL = {np.float32: 1e-4, np.float64: 1e-10}


def assert_close(actual, expected, name, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (name, actual.dtype, expected.dtype)
    scale = max(float(np.abs(expected).max(initial=0)), 1e-3)
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0))
    assert err <= rtol * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


def both(cell, dtype, **kwargs):
    return {name: cls(WORD_TO_IDX, cell_type=cell, dtype=dtype, **kwargs)
            for name, cls in MODELS.items()}


# ---------------------------------------------------------------------------------------------
# tests

def test_the_port_leaves_nothing_of_the_numpy_layers_behind():
    ported = MODELS["fastbptt"].loss.__globals__
    for name in LAYER_NAMES:
        assert ported[name] is getattr(cs231n, name), name
    assert MODELS["numpy"].loss.__globals__["rnn_forward"] is rnn_forward


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_loss_and_gradients_agree(cell, dtype):
    models = both(cell, dtype)
    for name, p in models["numpy"].params.items():          # the same weights, nonzero biases
        np.testing.assert_array_equal(models["fastbptt"].params[name], p)
    rng = np.random.default_rng(1)
    biases = {name: (0.1 * rng.standard_normal(models["numpy"].params[name].shape)).astype(dtype)
              for name in ("b", "b_proj", "b_vocab")}
    for model in models.values():
        model.params.update((name, b.copy()) for name, b in biases.items())
    features, captions = make_data(2, dtype=dtype)
    loss_np, grads_np = models["numpy"].loss(features, captions)
    loss_fb, grads_fb = models["fastbptt"].loss(features, captions)
    assert np.asarray(loss_fb).dtype == np.asarray(loss_np).dtype == dtype
    assert abs(loss_fb - loss_np) <= TOL[dtype] * abs(loss_np)
    assert set(grads_fb) == set(grads_np) == set(models["numpy"].params)
    for name, g in grads_np.items():
        assert_close(grads_fb[name], g, name, TOL[dtype])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_greedy_sampling_agrees(cell, dtype):
    """Sampling embeds a scalar start token, then 1-D arrays of words, and steps the cell on
    them: the same captions on both, after a little training so that they say something."""
    models = both(cell, dtype, seed=3)
    features, captions = make_data(4, dtype=dtype)
    for model in models.values():
        for _ in range(30):                                 # plain SGD, overfitting one batch
            _, grads = model.loss(features, captions)
            for name, g in grads.items():
                model.params[name] -= (0.5 * g).astype(dtype)
    sampled = {name: model.sample(features) for name, model in models.items()}
    assert sampled["numpy"].shape == (5, 6) and sampled["numpy"].dtype == np.int32
    np.testing.assert_array_equal(sampled["fastbptt"], sampled["numpy"])
    assert len(np.unique(sampled["numpy"])) > 1             # not one word everywhere
    first_words = captions[:, 1]
    assert (sampled["fastbptt"][:, 0] == first_words).mean() >= 0.6   # it learnt something


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_float32_model_with_float64_features_computes_in_float64(cell):
    """As NumPy's code does: float64 features make h0, and all that follows, float64.

    Equal to float32's rounding, not float64's: NumPy's code multiplies the float32 embeddings
    by the float32 Wx in float32 before adding the float64 terms; the compatibility layer
    converts the arguments of a call to float64 first, and differs by that first rounding."""
    models = both(cell, np.float32)
    features, captions = make_data(5, dtype=np.float64)
    loss_np, grads_np = models["numpy"].loss(features, captions)
    loss_fb, grads_fb = models["fastbptt"].loss(features, captions)
    assert np.asarray(loss_np).dtype == np.asarray(loss_fb).dtype == np.float64
    assert abs(loss_fb - loss_np) <= 1e-6 * abs(loss_np)
    for name, g in grads_np.items():
        assert_close(grads_fb[name], g, name, 1e-6)
    np.testing.assert_array_equal(models["fastbptt"].sample(features),
                                  models["numpy"].sample(features))


def test_a_missing_function_fails_as_a_user_would_see_it():
    """What happened before affine_forward was added: the star import leaves it undefined."""
    layers = {k: v for k, v in star_import("fastbptt.compat.cs231n").items()
              if k != "affine_forward"}
    model = port(CaptioningRNN, layers)(WORD_TO_IDX, dtype=np.float64)
    with pytest.raises(NameError, match="affine_forward"):
        model.loss(*make_data(6, dtype=np.float64))
