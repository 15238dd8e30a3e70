"""The model layer, the optimizers and the corpus helpers (fastbptt.nn: Model, optim, data)."""
import json
import os

import numpy as np
import pytest

import fastbptt
import fastbptt.reference
from fastbptt import truncation
from fastbptt.nn import Model, data, optim
from fastbptt.tbptt import TBPTT, WeightGrads

CELLS = list(fastbptt.CELLS)
BACKENDS = ["kernels", "reference"]

# (input, loss, layers): every input kind and both losses, with stacked layers
CONFIGS = [("embedding", "softmax", 2), ("onehot", "softmax", 1), ("dense", "mse", 2)]
V, H, E, N, T = 5, 3, 2, 2, 4


def make_model(cell, inp="embedding", loss="softmax", layers=2, backend="kernels",
               dtype=np.float64, seed=0, n_out=None):
    n_out = n_out or (V if loss == "softmax" else 3)
    return Model(V, H, n_out, cell=cell, n_layers=layers, input=inp, n_embed=E, loss=loss,
                 dtype=dtype, backend=backend, seed=seed)


def make_batch(model, rng, n_batch=N, n_steps=T):
    c = model.config
    if c["input"] == "dense":
        x = rng.standard_normal((n_batch, n_steps, c["n_input"])).astype(model.dtype)
    else:
        x = rng.integers(0, c["n_input"], (n_batch, n_steps))
    if c["loss"] == "softmax":
        y = rng.integers(0, c["n_output"], (n_batch, n_steps))
    else:
        y = rng.standard_normal((n_batch, n_steps, c["n_output"])).astype(model.dtype)
    return x, y


def random_state(model, rng, n_batch=N):
    return [{k: rng.standard_normal(v.shape) for k, v in st.items()}
            for st in model.init_state(n_batch)]


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inp,loss,layers", CONFIGS, ids=[f"{a}-{b}-{c}L" for a, b, c in CONFIGS])
@pytest.mark.parametrize("cell", CELLS)
def test_whole_model_gradients_match_finite_differences(cell, inp, loss, layers, backend):
    """Every parameter (embedding, all layers, output), the initial state and dense inputs,
    with a mask and a gradient flowing into the final state, against central differences."""
    rng = np.random.default_rng(7)
    model = make_model(cell, inp, loss, layers, backend)
    x, y = make_batch(model, rng)
    mask = rng.random((N, T)) < 0.7
    mask[0, 0] = True
    state = random_state(model, rng)
    dstate = random_state(model, rng)

    def objective():
        _, cache = model.forward(x, state)
        value, _ = model.loss(cache, y, mask)
        return value + sum(float(np.sum(cache.state[l][k] * dstate[l][k]))
                           for l in range(layers) for k in dstate[l])

    _, cache = model.forward(x, state)
    _, dz = model.loss(cache, y, mask)
    grads, dstate0, dx = model.backward(dz, cache, dstate=dstate)

    targets = [(f"params[{k}]", p, grads[k]) for k, p in model.params.items()]
    targets += [(f"state[{l}][{k}]", state[l][k], dstate0[l][k])
                for l in range(layers) for k in state[l]]
    if inp == "dense":
        targets.append(("inputs", x, dx))
    else:
        assert dx is None
    eps = 1e-6
    for name, arr, analytic in targets:
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            plus = objective()
            arr[idx] = old - eps
            minus = objective()
            arr[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        assert analytic.shape == arr.shape, name
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_kernels_and_reference_backends_agree(cell):
    rng = np.random.default_rng(1)
    fast = make_model(cell, "embedding", "softmax", 2, "kernels", seed=3)
    slow = make_model(cell, "embedding", "softmax", 2, "reference", seed=3)
    x, y = make_batch(fast, rng, 3, 6)
    norms_f = [np.zeros(6), np.zeros(6)]
    norms_s = [np.zeros(6), np.zeros(6)]
    out_f, cache_f = fast.forward(x)
    out_s, cache_s = slow.forward(x)
    np.testing.assert_allclose(out_f, out_s, rtol=1e-10, atol=1e-12)
    loss_f, dz_f = fast.loss(cache_f, y)
    loss_s, dz_s = slow.loss(cache_s, y)
    assert loss_f == pytest.approx(loss_s, rel=1e-12)
    g_f, _, _ = fast.backward(dz_f, cache_f, h_grad_norms=norms_f)
    g_s, _, _ = slow.backward(dz_s, cache_s, h_grad_norms=norms_s)
    for k in g_f:
        np.testing.assert_allclose(g_f[k], g_s[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for a, b in zip(norms_f, norms_s):
        np.testing.assert_allclose(a, b, rtol=1e-9)
        assert (a > 0).all()
    # the top layer's norm at the last step is the output layer's gradient alone
    top_last = (dz_f @ fast.params["out.W"].T).reshape(6, 3, H)[-1]
    assert norms_f[1][-1] == pytest.approx(np.linalg.norm(top_last), rel=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend", ["kernels", "reference"])
def test_backward_overwrite_cache_gives_the_same_grads_and_consumes(cell, backend):
    """Model.backward(overwrite_cache=True), which loss_and_grads uses, equals the default, and
    the cache it consumed is refused the next time."""
    rng = np.random.default_rng(2)
    model = make_model(cell, "embedding", "softmax", 2, backend, seed=4)
    x, y = make_batch(model, rng, 3, 6)
    _, cache = model.forward(x)
    _, dz = model.loss(cache, y)
    keep, _, _ = model.backward(dz, cache)
    lean, _, _ = model.backward(dz, cache, overwrite_cache=True)
    for k in keep:
        np.testing.assert_allclose(lean[k], keep[k], rtol=1e-12, atol=1e-14, err_msg=k)
    with pytest.raises(ValueError, match="consumed"):
        model.backward(dz, cache)
    loss, grads, _ = model.loss_and_grads(x, y)
    for k in keep:
        np.testing.assert_allclose(grads[k], keep[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_chunked_xi_equals_separate_segments(cell):
    """Backward with chunked truncation over one call = the chunks run one after another with
    the state carried forward and no gradient carried back (each chunk's loss is half)."""
    rng = np.random.default_rng(2)
    model = make_model(cell, "embedding", "softmax", 2)
    x, y = make_batch(model, rng, 2, 6)
    _, cache = model.forward(x)
    _, dz = model.loss(cache, y)
    whole, _, _ = model.backward(dz, cache, xi=truncation.chunked(6, 3))
    total = model.zeros_like_params()
    state = None
    for sl in (slice(0, 3), slice(3, 6)):
        _, c = model.forward(x[:, sl], state)
        _, d = model.loss(c, y[:, sl])
        model.backward(d * 0.5, c, grads=total)     # two equal halves of the mean
        state = c.state
    for k in whole:
        np.testing.assert_allclose(whole[k], total[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_mask_zero_steps_do_not_count():
    rng = np.random.default_rng(3)
    model = make_model(CELLS[0], "onehot", "softmax", 1)
    x, y = make_batch(model, rng)
    mask = np.ones((N, T), bool)
    mask[:, 1] = False
    y2 = y.copy()
    y2[:, 1] = (y[:, 1] + 1) % V
    l1, g1, _ = model.loss_and_grads(x, y, mask=mask)
    l2, g2, _ = model.loss_and_grads(x, y2, mask=mask)
    assert l1 == pytest.approx(l2, rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-15)
    # unmasked: the loss is the mean negative log-likelihood over all N*T steps
    logits, _ = model.forward(x)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    l3, _, _ = model.loss_and_grads(x, y)
    assert l3 == pytest.approx(nll.mean(), rel=1e-12)
    assert l1 == pytest.approx(nll[mask].mean(), rel=1e-12)


def test_mse_loss_value():
    rng = np.random.default_rng(4)
    model = make_model(CELLS[0], "dense", "mse", 1)
    x, y = make_batch(model, rng)
    out, _ = model.forward(x)
    loss, _, _ = model.loss_and_grads(x, y)
    assert loss == pytest.approx(np.mean((out - y) ** 2), rel=1e-12)


# ------------------------------------------------------------------------------ training
def periodic_task(seed, n_batch=8, n_steps=16, period=5, vocab=6):
    """Next-token prediction on a fixed random periodic sequence: learnable to near zero."""
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, vocab, period)
    stream = np.tile(pattern, (n_steps + 1) // period + 3)
    offsets = rng.integers(0, period, n_batch)
    seq = np.stack([stream[o:o + n_steps + 1] for o in offsets])
    return seq[:, :-1], seq[:, 1:]


@pytest.mark.parametrize("cell", CELLS)
def test_tiny_model_loss_falls(cell):
    x, y = periodic_task(0)
    model = Model(6, 16, 6, cell=cell, input="embedding", n_embed=8, dtype=np.float32, seed=0)
    opt = optim.Adam(model.params, lr=1e-2)
    grads = model.zeros_like_params()
    first, _, _ = model.loss_and_grads(x, y, grads=grads)
    for _ in range(300):
        loss, grads, _ = model.loss_and_grads(x, y, grads=grads)
        fastbptt.clip.clip_grad_norm(grads, 5.0)
        opt.step(grads)
    assert first > 1.5                      # about log(6) = 1.79 at the start
    assert loss < 0.2 * first, (first, loss)


@pytest.mark.parametrize("name,kwargs", [("sgd", {"lr": 0.5, "momentum": 0.9}),
                                         ("adagrad", {"lr": 0.1}), ("adam", {"lr": 1e-2})])
def test_every_optimizer_trains(name, kwargs):
    x, y = periodic_task(1)
    model = Model(6, 16, 6, cell=CELLS[0], input="onehot", dtype=np.float64, seed=1)
    opt = optim.OPTIMIZERS[name](model.params, **kwargs)
    first = model.evaluate(x, y)[0]
    for _ in range(200):
        _, grads, _ = model.loss_and_grads(x, y)
        opt.step(grads)
    assert model.evaluate(x, y)[0] < 0.5 * first


# ------------------------------------------------------------------------------ optimizers
def test_optimizers_update_in_place_by_their_rules():
    rng = np.random.default_rng(5)
    p0 = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    g1 = {k: rng.standard_normal(v.shape) for k, v in p0.items()}
    g2 = {k: rng.standard_normal(v.shape) for k, v in p0.items()}

    params = {k: v.copy() for k, v in p0.items()}
    ids = {k: id(v) for k, v in params.items()}
    sgd = optim.SGD(params, lr=0.1, momentum=0.9)
    sgd.step(g1)
    sgd.step(g2)
    for k in params:
        v1 = -0.1 * g1[k]
        v2 = 0.9 * v1 - 0.1 * g2[k]
        np.testing.assert_allclose(params[k], p0[k] + v1 + v2, rtol=1e-12)
        assert id(params[k]) == ids[k]

    params = {k: v.copy() for k, v in p0.items()}
    ada = optim.Adagrad(params, lr=0.1)
    ada.step(g1)
    ada.step(g2)
    for k in params:
        m1 = g1[k] ** 2
        p1 = p0[k] - 0.1 * g1[k] / np.sqrt(m1 + 1e-8)
        m2 = m1 + g2[k] ** 2
        np.testing.assert_allclose(params[k], p1 - 0.1 * g2[k] / np.sqrt(m2 + 1e-8), rtol=1e-12)

    params = {k: v.copy() for k, v in p0.items()}
    adam = optim.Adam(params, lr=0.01)
    adam.step(g1)
    for k in params:       # first bias-corrected step: lr * g / |g|
        np.testing.assert_allclose(params[k], p0[k] - 0.01 * np.sign(g1[k]), rtol=1e-6)
    adam.step(g2)
    for k in params:
        m = 0.9 * 0.1 * g1[k] + 0.1 * g2[k]
        v = 0.999 * 0.001 * g1[k] ** 2 + 0.001 * g2[k] ** 2
        v_hat = v / (1 - 0.999 ** 2)
        expected = p0[k] - 0.01 * np.sign(g1[k]) - 0.01 * (m / 0.19) / (np.sqrt(v_hat) + 1e-8)
        np.testing.assert_allclose(params[k], expected, rtol=1e-6)


def test_optimizer_keeps_float32():
    params = {"w": np.ones(4, np.float32)}
    opt = optim.Adam(params)
    opt.step({"w": np.full(4, 0.5, np.float32)})
    assert params["w"].dtype == np.float32


@pytest.mark.parametrize("bad,match", [
    (lambda p: optim.SGD(p, lr=-1), "lr must be a positive"),
    (lambda p: optim.SGD(p, lr=np.inf), "lr must be a positive finite number, got inf"),
    (lambda p: optim.SGD(p, momentum=1.5), "momentum"),
    (lambda p: optim.SGD(p, momentum=np.nan), "momentum"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.9)), "betas"),
    (lambda p: optim.Adam([1, 2]), "dict"),
    (lambda p: optim.Adam(p).step({}), "missing"),
    (lambda p: optim.Adam(p, eps=0), "eps must be a positive finite number, got 0"),
    (lambda p: optim.Adagrad(p, eps=-1e-8), "eps must be a positive finite number"),
    (lambda p: optim.Adagrad(p, eps=np.nan), "eps must be a positive finite number, got nan"),
    (lambda p: optim.SGD(p).step({"w": [0.0, 0.0, 0.0]}),
     r"grads\['w'\] must be a float NumPy array of shape \(3,\), got list"),
    (lambda p: optim.SGD(p).step([np.zeros(3)]), "grads must be a dict"),
])
def test_optimizer_bad_arguments(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        bad({"w": np.zeros(3)})


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_optimizers_refuse_or_skip_nonfinite_gradients(name, bad):
    """NaN gradients turned the parameters into NaN silently: refused before anything changes,
    or with skip_nonfinite=True the step is skipped (and counted), as a loss scaler does."""
    params = {"a": np.ones(3), "w": np.ones(4)}
    opt = optim.OPTIMIZERS[name](params, lr=0.1)
    good = {"a": np.full(3, 0.5), "w": np.full(4, 0.5)}
    assert opt.step(good) is True
    before = {k: v.copy() for k, v in params.items()}
    grads = {"a": np.full(3, 0.5), "w": np.array([0.5, bad, 0.5, 0.5])}
    with pytest.raises(fastbptt.clip.NonFiniteGradientError, match=r"grads\['w'\] contains NaN "
                                                                   r"or infinity"):
        opt.step(grads)
    skipping = optim.OPTIMIZERS[name](params, lr=0.1, skip_nonfinite=True)
    assert skipping.step(grads) is False and skipping.n_skipped == 1
    assert skipping.n_steps == 0
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[k])
    assert skipping.step(good) is True and np.isfinite(params["w"]).all()


def test_a_zero_gradient_with_a_tiny_eps_stays_finite():
    params = {"w": np.ones(2)}
    for opt in (optim.Adagrad(params, eps=1e-300), optim.Adam(params, eps=1e-300)):
        opt.step({"w": np.zeros(2)})
        assert np.isfinite(params["w"]).all()


# ------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("cell", CELLS)
def test_save_load_round_trip(cell, tmp_path):
    rng = np.random.default_rng(6)
    model = make_model(cell, "embedding", "softmax", 2, dtype=np.float32, seed=4)
    path = model.save(tmp_path / "m.npz", metadata={"vocab": "abcde", "note": [1, 2]})
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]          # no temporary left behind
    loaded = Model.load(path)
    assert loaded.config == model.config
    assert loaded.metadata == {"vocab": "abcde", "note": [1, 2]}
    assert loaded.params.keys() == model.params.keys()
    for k in model.params:
        assert loaded.params[k].dtype == np.float32
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    x, _ = make_batch(model, rng)
    np.testing.assert_array_equal(loaded.forward(x)[0], model.forward(x)[0])
    # a loaded model trains on (its arrays are writeable)
    optim.SGD(loaded.params, lr=0.1).step(loaded.zeros_like_params())


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastbptt model"):
        Model.load(tmp_path / "plain.npz")
    model = make_model(CELLS[0])
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as f:
        arrays = dict(f)
    arrays["out.W"] = arrays["out.W"][:1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="out.W"):
        Model.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------ misc API
def test_initialisation_is_pytorch_like():
    model = Model(10, 64, 10, cell=CELLS[0], n_layers=2, input="onehot", seed=0)
    k = 1 / np.sqrt(64)
    for name, p in model.params.items():
        summed = "bh" not in fastbptt.CELLS[model.cell].extra_weights   # b_ih + b_hh
        bound = 2 * k if name.endswith(".b") and summed else k
        assert np.abs(p).max() <= bound, name
        assert np.abs(p).max() > 0.5 * k, name
    assert model.params["layer1.Wx"].shape[0] == 64


def test_sample_is_reproducible_and_in_vocabulary():
    model = make_model(CELLS[0], "embedding", "softmax", 1)
    a = model.sample([1, 2, 3], 30, rng=5, temperature=0.7)
    b = model.sample([1, 2, 3], 30, rng=5, temperature=0.7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (30,) and a.min() >= 0 and a.max() < V


def test_state_carries_between_segments():
    rng = np.random.default_rng(8)
    model = make_model(CELLS[-1], "embedding", "softmax", 2)
    x, _ = make_batch(model, rng, 2, 6)
    whole, _ = model.forward(x)
    first, c = model.forward(x[:, :3])
    second, _ = model.forward(x[:, 3:], c.state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda m: m.forward(np.zeros((2, 3, 1), np.int64)), r"token ids of shape \(N, T\)"),
    (lambda m: m.forward(np.full((2, 3), V)), r"token ids in \[0, 5\)"),
    (lambda m: m.forward(np.zeros((2, 3)) + 0.5), "integer token ids"),
    (lambda m: m.forward(np.zeros((2, 0), np.int64)), "at least one time step"),
    (lambda m: m.forward(np.zeros((2, 3), np.int64), state=[{}]), "list of 2 dicts"),
    (lambda m: m.loss(m.forward(np.zeros((2, 3), np.int64))[1], np.zeros((3, 2), np.int64)),
     r"targets must be class ids of shape \(N, T\)"),
    (lambda m: m.loss(m.forward(np.zeros((2, 3), np.int64))[1], np.zeros((2, 3), np.int64),
                      mask=np.ones(3)), "mask must have shape"),
])
def test_bad_input_is_named(call, match):
    model = make_model(CELLS[0], "embedding", "softmax", 2)
    with pytest.raises((TypeError, ValueError), match=match):
        call(model)


@pytest.mark.parametrize("kwargs,match", [
    ({"cell": "transformer"}, "cell must be one of"),
    ({"input": "bytes"}, "input must be one of"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"n_layers": 0}, "n_layers must be an integer >= 1"),
    ({"dtype": np.int32}, "float32 or float64"),
    ({"backend": "gpu"}, "backend must be one of"),
    ({"impl": np}, "impl must be fastbptt, fastbptt.reference or another implementation"),
    ({"impl": fastbptt, "backend": "reference"}, "pass the implementation once"),
    ({"nonlinearity": "softplus", "cell": "rnn"}, "nonlinearity must be 'tanh'"),
])
def test_bad_model_options(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Model(5, 4, 5, **kwargs)


def test_dense_inputs_must_have_model_dtype():
    model = make_model(CELLS[0], "dense", "mse", 1, dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        model.forward(np.zeros((2, 3, V)))


# ------------------------------------------------------------------------------ data
def test_stdlib_corpus_is_deterministic_and_capped():
    a = data.stdlib_text(50_000)
    b = data.stdlib_text(50_000)
    assert a == b and len(a) == 50_000
    root, files = data.stdlib_files()
    assert files == sorted(files, key=lambda p: p.as_posix())
    assert not any("site-packages" in p.parts or "test" in p.parts[:-1] for p in files)
    assert a.startswith((root / files[0]).read_text(encoding="utf-8")[:1000])


def test_vocab_and_corpus_split(tmp_path):
    text = "hello world, hello fastbptt!\n" * 20
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    corpus = data.load_corpus(path, val_fraction=0.25)
    assert corpus.vocab.chars == "".join(sorted(set(text)))
    assert corpus.vocab.decode(corpus.vocab.encode(text)) == text
    assert len(corpus.train) + len(corpus.val) == len(text)
    assert len(corpus.val) == round(0.25 * len(text))
    assert corpus.vocab.decode(corpus.val) == text[-len(corpus.val):]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        corpus.vocab.encode("xyz")
    cut = data.load_corpus(path, max_chars=100)
    assert len(cut.text) == 100


def test_unigram_loss_is_cross_entropy_of_frequencies():
    train = np.array([0, 0, 0, 1])          # add-one smoothed: p = (4/6, 2/6)
    val = np.array([0, 1])
    expected = -(np.log(4 / 6) + np.log(2 / 6)) / 2
    assert data.unigram_loss(train, val, 2) == pytest.approx(expected)


def test_streams_are_contiguous_windows():
    ids = np.arange(101)
    s = data.Streams(ids, n_batch=4, seq_len=5)          # spans of 25: 5 windows per pass
    x1, y1, r1 = next(s)
    x2, y2, r2 = next(s)
    assert r1 and not r2
    np.testing.assert_array_equal(x1[:, 0], [0, 25, 50, 75])
    np.testing.assert_array_equal(y1, x1 + 1)
    np.testing.assert_array_equal(x2[:, 0], x1[:, -1] + 1)       # the state carries on
    for _ in range(3):
        next(s)
    assert next(s)[2]                                            # a new pass starts over
    with pytest.raises(ValueError, match="too few"):
        data.Streams(np.arange(10), n_batch=4, seq_len=5)


# ------------------------------------------------------------------------------ the registry
def test_impl_and_its_backend_name_choose_the_same_cells():
    model = Model(5, 4, 5, cell="gru", impl=fastbptt.reference)
    assert model.impl is fastbptt.reference and model.backend == "reference"
    assert Model(5, 4, 5, backend="reference").impl is fastbptt.reference
    assert Model(5, 4, 5).impl is fastbptt and Model(5, 4, 5).backend == "kernels"
    model.backend = "kernels"
    assert model.impl is fastbptt
    assert "impl=fastbptt)" in repr(model)


@pytest.mark.parametrize("impl", [fastbptt, fastbptt.reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_arguments_run_the_layer_as_forward_does(cell, impl):
    """encode and layer_arguments hand a cell function what forward hands it, as the
    registry names it; layer_grads are the gradient dict's own arrays."""
    rng = np.random.default_rng(9)
    model = Model(V, H, V, cell=cell, input="onehot", dtype=np.float64, impl=impl, seed=2)
    x, _ = make_batch(model, rng)
    x_in = model.encode(x)
    np.testing.assert_array_equal(x_in, np.eye(V)[x])
    args, kwargs = model.layer_arguments(0)
    record = impl.CELLS[cell]
    assert set(kwargs) == set(record.extra_weights) | set(record.options)
    assert all(a is model.params[f"layer0.{n}"] for a, n in zip(args, record.weights[:3]))
    h, _ = record.forward(x_in, None, *args, **kwargs)
    _, cache = model.forward(x)
    # the layer's output: its hidden states h, or a Jordan layer's outputs y
    out = getattr(cache.layers[0], record.states[0])
    np.testing.assert_allclose(h, out.swapaxes(0, 1), rtol=1e-12, atol=1e-14)
    grads = model.zeros_like_params()
    named = model.layer_grads(grads, 0)
    assert tuple(named) == record.weight_grads
    assert all(named["d" + n] is grads["layer0." + n] for n in record.weights)


def test_encode_embedding_and_dense():
    rng = np.random.default_rng(10)
    model = make_model(CELLS[0], "embedding", "softmax", 1)
    x, _ = make_batch(model, rng)
    np.testing.assert_array_equal(model.encode(x), model.params["embed"][x])
    dense = make_model(CELLS[0], "dense", "mse", 1)
    x, _ = make_batch(dense, rng)
    np.testing.assert_array_equal(dense.encode(x), x)
    with pytest.raises(ValueError, match="token ids in"):
        model.encode(np.full((2, 3), V))


@pytest.mark.parametrize("inp,loss", [("onehot", "softmax"), ("dense", "mse")])
def test_output_loss_is_the_loss_and_the_output_layer_of_backward(inp, loss):
    """output_loss on the last layer's hidden states gives loss's value, backward's gradients
    of the output layer, and the gradient backward hands to the last layer."""
    rng = np.random.default_rng(11)
    model = make_model(CELLS[0], inp, loss, 2)
    x, y = make_batch(model, rng)
    mask = rng.random((N, T)) < 0.7
    mask[0, 0] = True
    _, cache = model.forward(x)
    expected_loss, dz = model.loss(cache, y, mask)
    expected, _, _ = model.backward(dz, cache)
    h = cache.layers[-1].h.swapaxes(0, 1)                        # (N, T, H)
    grads = model.zeros_like_params()
    got_loss, dh = model.output_loss(h, y, grads, mask=mask)
    assert got_loss == pytest.approx(expected_loss, rel=1e-12)
    for name in ("out.W", "out.b"):
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-12, atol=1e-15)
    upstream = (dz @ model.params["out.W"].T).reshape(T, N, H).swapaxes(0, 1)
    np.testing.assert_allclose(dh, upstream, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="h must have shape"):
        model.output_loss(h[..., :1], y, grads)


@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_over_the_model_is_loss_and_grads(cell):
    """One window of the TBPTT driver, run through the model's encode, layer_arguments,
    layer_grads and output_loss, is loss_and_grads on that window."""
    rng = np.random.default_rng(12)
    model = Model(V, H, V, cell=cell, input="onehot", dtype=np.float64, seed=3)
    x, y = make_batch(model, rng)
    expected_loss, expected, _ = model.loss_and_grads(x, y)
    grads = model.zeros_like_params()
    args, kwargs = model.layer_arguments(0)
    res = TBPTT(T, cell=cell, impl=model.impl).run(
        model.encode(x), None, *args, lambda h, t0, y_new: model.output_loss(h, y_new, grads),
        targets=y, grads=WeightGrads(**model.layer_grads(grads, 0)), **kwargs)
    assert res.loss == pytest.approx(expected_loss, rel=1e-12)
    for name in expected:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-10, atol=1e-14,
                                   err_msg=name)


def test_save_leaves_no_temporary_file_behind(tmp_path):
    """A save into a folder path fails, as before, but removes its temporary file (one of its
    own name: two threads saving to one path used to collide on a fixed '.tmp')."""
    model = make_model(CELLS[0])
    (tmp_path / "m.npz").mkdir()
    with pytest.raises(OSError):
        model.save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_saves_from_threads_to_one_path_do_not_collide(tmp_path):
    import threading
    models = [make_model(CELLS[0], seed=seed) for seed in range(4)]
    errors = []

    def save(model):
        try:
            for _ in range(5):
                model.save(tmp_path / "m.npz")
        except Exception as err:       # reported below
            errors.append(err)
    threads = [threading.Thread(target=save, args=(m,)) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(os.listdir(tmp_path)) == ["m.npz"]
    loaded = Model.load(tmp_path / "m.npz")
    assert any(all(np.array_equal(loaded.params[k], m.params[k]) for k in m.params)
               for m in models)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_load_says_why_a_file_is_not_a_model(tmp_path):
    """Each raises one ValueError saying the file is not a fastbptt model and why, never a
    suggestion to unpickle."""
    model = make_model(CELLS[0])
    good = model.save(tmp_path / "good.npz")
    data_bytes = open(good, "rb").read()
    with np.load(good) as f:
        arrays = dict(f)

    def header(value):
        path = tmp_path / "h.npz"
        np.savez(path, **dict(arrays, __header__=np.array(value)))
        return path
    cases = {
        "the file is empty": _write(tmp_path / "empty.npz", b""),
        "cut short or damaged": _write(tmp_path / "cut.npz", data_bytes[:len(data_bytes) // 2]),
        "not an .npz archive": _write(tmp_path / "text.npz", b"just some text\n" * 20),
        r"a single array \(\.npy\)": tmp_path / "a.npy",
        "no __header__": tmp_path / "plain.npz",
        "holds Python objects": tmp_path / "objects.npz",
    }
    np.save(tmp_path / "a.npy", np.zeros(3))
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    np.savez(tmp_path / "objects.npz", __header__=np.array([{"a": 1}], dtype=object))
    for why, path in cases.items():
        with pytest.raises(ValueError, match=rf"is not a fastbptt model: .*{why}") as info:
            Model.load(path)
        assert "pickle" not in str(info.value), why
    for value, why in [("[1, 2]", "not a JSON object"), ("{not json", "not a JSON object"),
                       ('{"format": "fastbptt.model/1"}', "no configuration"),
                       ('{"format": "fastbptt.model/1", "config": {"n_input": 5}}',
                        "lacks n_hidden, n_output, cell")]:
        with pytest.raises(ValueError, match=f"is not a fastbptt model: .*{why}"):
            Model.load(header(value))
    config = dict(model.config, n_hidden="many")
    with pytest.raises(ValueError, match="configuration is not valid"):
        Model.load(header(json.dumps({"format": "fastbptt.model/1", "config": config})))


def test_load_compares_shapes_before_building_the_model(tmp_path, monkeypatch):
    """A 5 KB file whose header claims n_hidden = 6000 built and initialised the whole model
    (4 s, 1.7 GB) before comparing shapes: now nothing is built."""
    model = make_model(CELLS[0])
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as f:
        arrays = dict(f)
    header = json.loads(str(arrays["__header__"]))
    header["config"]["n_hidden"] = 6000
    arrays["__header__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "huge.npz", **arrays)
    monkeypatch.setattr(Model, "_init_params", lambda *a: pytest.fail("initialised"))
    with pytest.raises(ValueError, match=r"is not a fastbptt model: .*layer0\.\w+ has float64 "
                                         r"\(\d+, \d+\), the configuration's is float64 "
                                         r"\(\d+, \d+\)|do not match"):
        Model.load(tmp_path / "huge.npz")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_batch_runs_through_the_model(backend):
    """N = 0 gave a raw reshape error while the kernels accept it: empty outputs, zero
    gradients."""
    for inp, loss, layers in CONFIGS:
        model = make_model(CELLS[1], inp, loss, layers, backend=backend)
        x, y = make_batch(model, np.random.default_rng(0), n_batch=0)
        out, cache = model.forward(x)
        assert out.shape[:2] == (0, T)
        loss_value, grads, _ = model.loss_and_grads(x, y)
        assert loss_value == 0 and all(not g.any() for g in grads.values())


def test_sampling_at_a_tiny_temperature_picks_the_most_likely_token():
    """temperature=1e-320 failed with 'Probabilities contain NaN' (logits / t overflowed)."""
    model = make_model(CELLS[0])
    for temperature in (1e-320, 1e-300):
        drawn = model.sample([1, 2], 5, rng=0, temperature=temperature)
        greedy = []
        prefix = np.array([[1, 2]])
        logits, cache = model.forward(prefix)
        for _ in range(5):
            greedy.append(int(np.argmax(logits[0, -1])))
            logits, cache = model.forward(np.array([[greedy[-1]]]), cache.state)
        assert drawn.tolist() == greedy
