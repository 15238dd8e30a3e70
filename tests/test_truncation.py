"""fastbptt.truncation, and backward's ``xi``/``dhT``/``dcT`` against the reference and autograd.

The autograd oracle (PyTorch, float64, when installed) is written here from the equations of
DESIGN.md, independently of both implementations: step t reads its incoming state through an
identity whose backward multiplies the gradient by ``xi[t]``, which is exactly what truncation
does to the graph (xi = 0 is ``detach()``).
"""
import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, assert_close, make_problem

import fastbptt
import fastbptt.reference as ref
from fastbptt import truncation

CELLS = HIDDEN_CELLS
NAMES = ("dx", "dh0", "dWx", "dWh", "db")


def extra_names(cell):
    return fastbptt.CELLS[cell].extra_grads       # dc0 (LSTM), dbh (GRU)


def backward_kwargs(cell, n_batch, n_hidden, dtype, seed=1):
    """A random gradient into the final state (and cell state)."""
    rng = np.random.default_rng(seed)
    kw = {"dhT": rng.standard_normal((n_batch, n_hidden)).astype(dtype)}
    if cell == "lstm":
        kw["dcT"] = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    return kw


def all_grads(cell, g):
    return {name: getattr(g, name) for name in NAMES + extra_names(cell)}


def run(module, cell, args, kwargs, dh, **bkw):
    _, cache = module.CELLS[cell].forward(*args, **kwargs)
    return module.CELLS[cell].backward(dh, cache, **bkw), cache


# -- the patterns ----------------------------------------------------------------------------

def test_full_is_ones():
    np.testing.assert_array_equal(truncation.full(4), np.ones(4))
    assert truncation.full(3).dtype == np.float64
    assert truncation.full(3, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("T,k,expected", [
    (10, 3, [1, 1, 1, 0, 1, 1, 0, 1, 1, 0]),
    (7, 2, [1, 1, 0, 1, 0, 1, 0]),
    (4, 1, [1, 0, 0, 0]),
    (5, 5, [1, 1, 1, 1, 1]),
    (3, 10, [1, 1, 1]),
    (1, 1, [1]),
])
def test_chunked_pattern(T, k, expected):
    xi = truncation.chunked(T, k)
    np.testing.assert_array_equal(xi, expected)
    assert xi.dtype == np.float64
    assert truncation.chunked(T, k, dtype=np.float32).dtype == np.float32


def test_randomized_values_and_frequency():
    T, p = 20000, 0.25
    xi = truncation.randomized(T, p, np.random.default_rng(0))
    assert set(np.unique(xi)) == {0.0, 4.0}
    kept = np.mean(xi > 0)
    assert abs(kept - p) < 5 * np.sqrt(p * (1 - p) / T)        # Bernoulli(p), within 5 SE
    assert abs(xi.mean() - 1) < 5 * np.sqrt((1 / p - 1) / T)   # mean 1, variance 1/p - 1


def test_randomized_is_reproducible():
    a = truncation.randomized(50, 0.5, 7)
    np.testing.assert_array_equal(a, truncation.randomized(50, 0.5, np.random.default_rng(7)))
    assert not np.array_equal(a, truncation.randomized(50, 0.5, 8))
    rng = np.random.default_rng(3)   # a Generator is used, not copied: draws go on
    assert not np.array_equal(truncation.randomized(50, 0.5, rng),
                              truncation.randomized(50, 0.5, rng))


def test_randomized_per_step_probabilities():
    T = 6
    p = np.array([1.0, 0.5, 0.25, 1.0, 0.8, 0.1])
    draws = np.array([truncation.randomized(T, p, seed) for seed in range(3000)])
    for t in range(T):
        assert set(np.unique(draws[:, t])) <= {0.0, 1 / p[t]}
    np.testing.assert_array_equal(draws[:, [0, 3]], 1.0)     # p = 1: always kept
    se = np.sqrt(p * (1 - p) / len(draws))
    assert np.all(np.abs(np.mean(draws > 0, axis=0) - p) <= 5 * se + 1e-12)
    assert truncation.randomized(T, p, 0, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(truncation.randomized(5, 1.0, 0), np.ones(5))


@pytest.mark.parametrize("call,exc,message", [
    (lambda: truncation.full(0), ValueError, "T must be an integer >= 1, got 0"),
    (lambda: truncation.full(-3), ValueError, "T must be an integer >= 1"),
    (lambda: truncation.full(2.5), TypeError, "T must be an integer, got float"),
    (lambda: truncation.full(True), TypeError, "T must be an integer"),
    (lambda: truncation.full(3, dtype=np.int64), TypeError, "dtype must be float32 or float64"),
    (lambda: truncation.chunked(5, 0), ValueError, "k must be an integer >= 1, got 0"),
    (lambda: truncation.chunked(5, "2"), TypeError, "k must be an integer"),
    (lambda: truncation.randomized(5, 0.0, 0), ValueError, "p must lie in (0, 1]"),
    (lambda: truncation.randomized(5, 1.5, 0), ValueError, "p must lie in (0, 1], got 1.5"),
    (lambda: truncation.randomized(5, np.nan, 0), ValueError, "p must lie in (0, 1]"),
    (lambda: truncation.randomized(3, [0.5, 0, 1], 0), ValueError, "got 0.0"),
    (lambda: truncation.randomized(3, [0.5, 0.5], 0), ValueError,
     "p must be a scalar or have shape (T,) = (3,), got (2,)"),
    (lambda: truncation.randomized(3, "half", 0), TypeError, "p must be a probability"),
    (lambda: truncation.randomized(3, True, 0), TypeError, "p must be a probability"),
    (lambda: truncation.randomized(3, 0.5, "seed"), TypeError, "rng must be a numpy.random"),
    (lambda: truncation.randomized(0, 0.5, 0), ValueError, "T must be an integer >= 1"),
])
def test_bad_arguments(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


# -- the patterns in backward -----------------------------------------------------------------

N, T, D, H = 3, 9, 4, 5


def patterns(n_steps):
    return {
        "full": truncation.full(n_steps),
        "chunked3": truncation.chunked(n_steps, 3),
        "chunked1": truncation.chunked(n_steps, 1),
        "zeros": np.zeros(n_steps),
        "randomized": truncation.randomized(n_steps, 0.5, 11),
        "randomized-per-step": truncation.randomized(
            n_steps, np.linspace(0.3, 1.0, n_steps), 12),
    }


PATTERNS = list(patterns(T))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_patterns_kernels_equal_reference(cell, pattern, dtype):
    args, kwargs, dh = make_problem(cell, N, T, D, H, dtype=dtype)
    bkw = dict(backward_kwargs(cell, N, H, dtype), xi=patterns(T)[pattern])
    g_k, _ = run(fastbptt, cell, args, kwargs, dh, **bkw)
    g_r, _ = run(ref, cell, args, kwargs, dh, **bkw)
    for name, value in all_grads(cell, g_r).items():
        assert_close(getattr(g_k, name), value, dtype, name)


def torch_bptt(cell, args, kwargs, dh, xi, dhT, dcT=None, nonlinearity="tanh"):
    """Every gradient of L = sum(h * dh) + sum(h_T * dhT) (+ sum(c_T * dcT)) by autograd, the
    gradient through step t into its incoming state scaled by xi[t]. Batch-major, float64."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)   # tiny graphs: a thread pool only spins on a busy machine

    class ScaleGrad(torch.autograd.Function):
        """Identity forward; backward multiplies the gradient by a constant."""

        @staticmethod
        def forward(ctx, a, scale):
            ctx.scale = scale
            return a.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.scale, None

    def leaf(a):
        return torch.tensor(np.asarray(a, np.float64), requires_grad=True)

    x, h0, Wx, Wh, b = map(leaf, args)
    leaves = {"dx": x, "dh0": h0, "dWx": Wx, "dWh": Wh, "db": b}
    if cell == "lstm":
        c = leaves["dc0"] = leaf(kwargs["c0"])
    if cell == "gru":
        bh = leaves["dbh"] = leaf(kwargs["bh"])
    n_hidden = h0.shape[1]
    phi = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[nonlinearity]
    h, hs = h0, []
    for t in range(x.shape[1]):
        h_prev = ScaleGrad.apply(h, float(xi[t]))
        if cell == "rnn":
            h = phi(x[:, t] @ Wx + h_prev @ Wh + b)
        elif cell == "lstm":
            c_prev = ScaleGrad.apply(c, float(xi[t]))
            a = x[:, t] @ Wx + h_prev @ Wh + b
            i, f, g, o = (a[:, k * n_hidden:(k + 1) * n_hidden] for k in range(4))
            c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            ax = x[:, t] @ Wx + b
            ah = h_prev @ Wh + bh
            xr, xz, xn = (ax[:, k * n_hidden:(k + 1) * n_hidden] for k in range(3))
            hr, hz, hn = (ah[:, k * n_hidden:(k + 1) * n_hidden] for k in range(3))
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h_prev
        hs.append(h)
    hs = torch.stack(hs, dim=1)
    loss = (hs * torch.as_tensor(dh)).sum() + (h * torch.as_tensor(dhT)).sum()
    if cell == "lstm":
        loss = loss + (c * torch.as_tensor(dcT)).sum()
    loss.backward()
    return {name: t.grad.numpy() for name, t in leaves.items()}, hs.detach().numpy()


@pytest.mark.parametrize("cell", CELLS)
def test_torch_oracle_is_pytorch_nn(cell):
    """The oracle's forward is torch.nn.RNN/LSTM/GRU with DESIGN.md's weight mapping, so it
    is an independent statement of the equations (and so are its gradients)."""
    torch = pytest.importorskip("torch")
    args, kwargs, dh = make_problem(cell, N, T, D, H)
    x, h0, Wx, Wh, b = args
    _, h_oracle = torch_bptt(cell, args, kwargs, dh, np.ones(T), np.zeros((N, H)),
                             np.zeros((N, H)))
    layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        D, H, batch_first=True).double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.as_tensor(Wx.T))
        layer.weight_hh_l0.copy_(torch.as_tensor(Wh.T))
        layer.bias_ih_l0.copy_(torch.as_tensor(b))
        layer.bias_hh_l0.copy_(torch.as_tensor(kwargs["bh"] if cell == "gru" else 0 * b))
        state = torch.as_tensor(h0)[None]
        if cell == "lstm":
            state = (state, torch.as_tensor(kwargs["c0"])[None])
        h_nn, _ = layer(torch.as_tensor(x), state)
    np.testing.assert_allclose(h_oracle, h_nn.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("with_dhT", [True, False], ids=["dhT", "no-dhT"])
@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
def test_patterns_equal_autograd(cell, pattern, with_dhT, module):
    """xi, dhT (dcT) in both implementations against truncated autograd, float64, 1e-9."""
    args, kwargs, dh = make_problem(cell, N, T, D, H, seed=5)
    xi = patterns(T)[pattern]
    bkw = backward_kwargs(cell, N, H, np.float64) if with_dhT else {}
    expected, h_oracle = torch_bptt(cell, args, kwargs, dh, xi,
                                    bkw.get("dhT", np.zeros((N, H))),
                                    bkw.get("dcT", np.zeros((N, H))))
    g, cache = run(module, cell, args, kwargs, dh, xi=xi, **bkw)
    np.testing.assert_allclose(cache.hT, h_oracle[:, -1], rtol=1e-12, atol=1e-12)
    for name, value in all_grads(cell, g).items():
        scale = max(1.0, np.abs(expected[name]).max())
        np.testing.assert_allclose(value, expected[name], rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=name)
    if pattern == "zeros":   # every step cut, even the first: nothing reaches the initial state
        assert not g.dh0.any()


# -- chunked in one call equals separate calls -------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("k", [1, 3, 4, 9])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_chunked_equals_separate_calls(cell, module, k, time_major, dtype):
    """backward(xi=chunked(T, k)) over one call equals backward on each chunk separately
    (forward state carried, dhT/dcT into the last chunk only), weight gradients summed with
    grads= in place, dx concatenated, dh0 (dc0) from the first chunk."""
    args, kwargs, dh = make_problem(cell, N, T, D, H, dtype=dtype, time_major=time_major)
    forward = module.CELLS[cell].forward
    backward = module.CELLS[cell].backward
    bkw = backward_kwargs(cell, N, H, dtype)
    _, cache = forward(*args, **kwargs)
    whole = backward(dh, cache, xi=truncation.chunked(T, k), **bkw)

    axis = 0 if time_major else 1
    x, h0 = args[0], args[1]
    state = {"c0": kwargs["c0"]} if cell == "lstm" else {}
    other = {key: v for key, v in kwargs.items() if key != "c0"}
    caches = []
    for t0 in range(0, T, k):
        sl = (slice(t0, t0 + k),) if time_major else (slice(None), slice(t0, t0 + k))
        _, c = forward(x[sl], h0, *args[2:], **state, **other)
        caches.append((sl, c))
        h0 = c.hT
        if cell == "lstm":
            state = {"c0": c.cT}
    acc, dxs = None, []
    for i, (sl, c) in enumerate(reversed(caches)):
        g = backward(dh[sl], c, grads=acc, **(bkw if i == 0 else {}))
        acc = g if acc is None else acc
        assert all(getattr(g, n) is getattr(acc, n) for n in ("dWx", "dWh", "db"))
        dxs.append(g.dx)
    assert_close(np.concatenate(dxs[::-1], axis=axis), whole.dx, dtype, "dx")
    assert_close(g.dh0, whole.dh0, dtype, "dh0")
    for name in ("dWx", "dWh", "db") + extra_names(cell):
        if name == "dc0":
            assert_close(g.dc0, whole.dc0, dtype, name)
        else:
            assert_close(getattr(acc, name), getattr(whole, name), dtype, name)


# -- randomized truncation is unbiased ---------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("p", [0.6, "per-step"])
def test_randomized_mean_converges_to_full_gradient(cell, p):
    """The mean of n randomized-truncation gradients is within 5 standard errors of the full
    gradient, entry by entry (fixed seed); the same draws without the 1/p compensation (a
    biased estimator) are not, which shows the test can see a bias of that size."""
    n_steps, n_draws = 10, 1000
    args, kwargs, dh = make_problem(cell, 2, n_steps, 3, 3, seed=2)
    bkw = backward_kwargs(cell, 2, 3, np.float64)
    _, cache = fastbptt.CELLS[cell].forward(*args, **kwargs)
    backward = fastbptt.CELLS[cell].backward

    def flat(g):
        return np.concatenate([np.ravel(v) for v in all_grads(cell, g).values()])

    full = flat(backward(dh, cache, **bkw))
    probs = np.full(n_steps, 0.6) if p == 0.6 else np.linspace(0.4, 0.9, n_steps)
    rng = np.random.default_rng(2024)
    unbiased = np.empty((n_draws, full.size))
    naive = np.empty_like(unbiased)
    for i in range(n_draws):
        xi = truncation.randomized(n_steps, p if p == 0.6 else probs, rng)
        unbiased[i] = flat(backward(dh, cache, xi=xi, **bkw))
        naive[i] = flat(backward(dh, cache, xi=xi * probs, **bkw))   # xi in {0, 1}

    def z_scores(draws):
        se = draws.std(axis=0, ddof=1) / np.sqrt(n_draws)
        err = np.abs(draws.mean(axis=0) - full)
        return err, se

    err, se = z_scores(unbiased)
    tol = 1e-9 * max(1.0, np.abs(full).max())   # entries truncation cannot touch: se == 0
    assert np.all(err <= 5 * se + tol), np.max((err - tol) / np.maximum(se, 1e-300))
    assert np.any(se > 0)
    err_naive, se_naive = z_scores(naive)
    z_naive = np.max((err_naive - tol) / np.maximum(se_naive, 1e-300))
    z = np.max((err - tol) / np.maximum(se, 1e-300))
    print(f"max z: unbiased {z:.2f}, naive {z_naive:.1f}")
    assert z_naive > 10
