"""Jordan's network: the kernels equal the reference, the reference passes finite differences,
an autograd oracle written on the equations agrees, bad input is refused, and the record in
the registries describes the functions."""
import inspect
import itertools

import numpy as np
import pytest
from conftest import IMPLS, RTOL, assert_close

import fastbptt
import fastbptt.reference as ref
from fastbptt import truncation
from fastbptt._caches import JordanCache
from fastbptt._grads import JordanGrads
from fastbptt.nn import Model

JORDAN = fastbptt.CELLS["jordan"]
OPTIONS = [dict(zip(JORDAN.options, values))
           for values in itertools.product(*JORDAN.options.values())]
OPTION_IDS = ["-".join(o.values()) for o in OPTIONS]
SHAPES = [  # (N, T, D, H, O)
    (3, 6, 4, 5, 2), (1, 1, 1, 1, 1), (1, 9, 3, 4, 3), (4, 1, 3, 2, 5), (2, 5, 2, 3, 1)]
SHAPE_IDS = ["N{}T{}D{}H{}O{}".format(*s) for s in SHAPES]
GRAD_NAMES = ("dx", "dy0", "dWx", "dWy", "db", "dWo", "dbo")


def problem(shape, dtype=np.float64, time_major=False, seed=0, scale=0.6):
    """Random (x, y0, Wx, Wy, b, Wo, bo) and an upstream gradient dy, in ``shape``."""
    n_batch, n_steps, n_input, n_hidden, n_output = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_steps, n_batch, n_input) if time_major
                            else (n_batch, n_steps, n_input))
    args = [x, rng.standard_normal((n_batch, n_output)),
            rng.standard_normal((n_input, n_hidden)) * scale / np.sqrt(n_input),
            rng.standard_normal((n_output, n_hidden)) * scale / np.sqrt(n_output),
            rng.standard_normal(n_hidden) * 0.1,
            rng.standard_normal((n_hidden, n_output)) * scale / np.sqrt(n_hidden),
            rng.standard_normal(n_output) * 0.1]
    dy = rng.standard_normal(x.shape[:2] + (n_output,))
    return [a.astype(dtype) for a in args], dy.astype(dtype)


def run(impl, args, dy, opts=None, time_major=False, **backward_kwargs):
    y, cache = impl.jordan_forward(*args, **(opts or {}), time_major=time_major)
    return y, cache, impl.jordan_backward(dy, cache, **backward_kwargs)


# --------------------------------------------------------------------------- the record


def test_the_record_describes_the_functions():
    for impl in IMPLS.values():
        cell = impl.CELLS["jordan"]
        assert cell.forward is impl.jordan_forward and cell.backward is impl.jordan_backward
        assert cell.output_feedback and cell.states == ("y",)
        assert cell.weights == ("Wx", "Wy", "b", "Wo", "bo")
        assert cell.weight_grads == GRAD_NAMES[2:]
        assert cell.cache_type is JordanCache
        params = list(inspect.signature(cell.forward).parameters.values())
        assert [p.name for p in params[:7]] == ["x", "y0", *cell.weights]
        keywords = {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}
        assert keywords == {**{o: v[0] for o, v in cell.options.items()},
                            "time_major": False, "out": None}
    shapes = JORDAN.weight_shapes(3, 4, 2)
    assert shapes == {"Wx": (3, 4), "Wy": (2, 4), "b": (4,), "Wo": (4, 2), "bo": (2,)}
    assert all(not c.output_feedback for n, c in fastbptt.CELLS.items() if n != "jordan")


# --------------------------------------------------------------- kernels equal the reference


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_kernels_equal_the_reference(shape, opts, time_major, dtype):
    args, dy = problem(shape, dtype, time_major)
    n_batch, n_steps, _, _, n_output = shape
    rng = np.random.default_rng(1)
    dyT = rng.standard_normal((n_batch, n_output)).astype(dtype)
    xi = truncation.randomized(n_steps, 0.5, rng=rng).astype(dtype)
    want_y, want_cache, want = run(ref, args, dy, opts, time_major, dyT=dyT, xi=xi)
    y, cache, got = run(fastbptt, args, dy, opts, time_major, dyT=dyT, xi=xi)
    assert y.shape == want_y.shape and not y.flags.writeable
    assert_close(y, want_y, dtype, "y")
    assert_close(cache.h, want_cache.h, dtype, "h")
    assert_close(cache.yT, want_y[:, -1] if not time_major else want_y[-1], dtype, "yT")
    assert isinstance(got, JordanGrads) and got._fields == GRAD_NAMES
    for name in GRAD_NAMES:
        assert_close(getattr(got, name), getattr(want, name), dtype, name)


@pytest.mark.parametrize("name,impl", list(IMPLS.items()))
def test_xi_zero_cuts_the_flow_into_the_step_before(name, impl):
    """xi[t] = 0: steps t.. of the result are those of a backward that starts at t with no
    gradient from later steps reaching y_{t-1}; dy0 is zero where xi[0] = 0."""
    args, dy = problem((2, 6, 3, 4, 2))
    xi = np.ones(6)
    xi[3] = 0
    full = run(impl, args, dy)[2]
    cut = run(impl, args, dy, xi=xi)[2]
    np.testing.assert_allclose(cut.dx[:, 3:], full.dx[:, 3:], rtol=1e-12)   # after the cut
    assert not np.allclose(cut.dx[:, :3], full.dx[:, :3])
    # before the cut only the dy of steps 0..2 count: the same as a sequence of 3 steps
    dy_before = dy.copy()
    dy_before[:, 3:] = 0
    only_before = run(impl, args, dy_before)[2]
    np.testing.assert_allclose(cut.dx[:, :3], only_before.dx[:, :3], rtol=1e-12)
    xi[0] = 0
    assert not run(impl, args, dy, xi=xi)[2].dy0.any()


@pytest.mark.parametrize("name,impl", list(IMPLS.items()))
def test_two_segments_with_yT_and_dyT_equal_one(name, impl):
    """A stream cut in two: y0 of the second is the first's yT, and dyT of the first is the
    second's dy0. Together they give the gradients of one call over the whole sequence."""
    args, dy = problem((2, 8, 3, 4, 2))
    x, y0, *weights = args
    whole_y, _, whole = run(impl, args, dy)
    y1, c1 = impl.jordan_forward(x[:, :5], y0, *weights)
    y2, c2 = impl.jordan_forward(x[:, 5:], c1.yT, *weights)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), whole_y, rtol=1e-12)
    g2 = impl.jordan_backward(dy[:, 5:], c2)
    g1 = impl.jordan_backward(dy[:, :5], c1, dyT=g2.dy0)
    np.testing.assert_allclose(np.concatenate([g1.dx, g2.dx], axis=1), whole.dx, rtol=1e-10)
    np.testing.assert_allclose(g1.dy0, whole.dy0, rtol=1e-10)
    for name in GRAD_NAMES[2:]:
        np.testing.assert_allclose(getattr(g1, name) + getattr(g2, name), getattr(whole, name),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_grads_and_out_reuse_the_arrays(time_major, dtype):
    """grads= adds into the caller's arrays; out= (forward: a cache, backward: a result)
    refills the same arrays, with the results of fresh calls."""
    args, dy = problem((2, 4, 3, 5, 2), dtype, time_major)
    args2, dy2 = problem((2, 4, 3, 5, 2), dtype, time_major, seed=7)
    for impl in IMPLS.values():
        y, cache = impl.jordan_forward(*args, time_major=time_major)
        first = impl.jordan_backward(dy, cache)
        before = {n: getattr(first, n).copy() for n in GRAD_NAMES}
        again = impl.jordan_backward(dy, cache, grads=first)
        for n in GRAD_NAMES[2:]:
            assert getattr(again, n) is getattr(first, n)
            assert_close(getattr(again, n), 2 * before[n], dtype, n)
        fresh_y, fresh_cache = impl.jordan_forward(*args2, time_major=time_major)
        fresh = impl.jordan_backward(dy2, fresh_cache)
        y2, cache2 = impl.jordan_forward(*args2, time_major=time_major, out=cache)
        assert cache2 is cache and np.shares_memory(y2, y)
        assert_close(y2, fresh_y, dtype, "y")
        into = impl.jordan_backward(dy2, cache, out=first)
        for n in GRAD_NAMES:
            assert getattr(into, n) is getattr(first, n)
            assert_close(getattr(into, n), getattr(fresh, n), dtype, n)
        as_dict = {n: np.zeros_like(getattr(fresh, n)) for n in GRAD_NAMES[2:]}
        impl.jordan_backward(dy2, cache, grads=as_dict)
        for n in GRAD_NAMES[2:]:
            assert_close(as_dict[n], getattr(fresh, n), dtype, n)


def test_caches_cross_between_kernels_and_reference():
    args, dy = problem((2, 5, 3, 4, 2))
    _, cache = fastbptt.jordan_forward(*args)
    _, ref_cache = ref.jordan_forward(*args)
    for a, b in ((fastbptt, ref_cache), (ref, cache)):
        got = a.jordan_backward(dy, b)
        want = ref.jordan_backward(dy, ref_cache)
        for n in GRAD_NAMES:
            assert_close(getattr(got, n), getattr(want, n), np.float64, n)


# ------------------------------------------------------------------------ gradient oracles


def loss(args, dy, opts):
    """sum(y * dy): its gradients are what backward returns for the upstream gradient dy."""
    return float((ref.jordan_forward(*args, **opts)[0] * dy).sum())


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_reference_matches_finite_differences(opts):
    args, dy = problem((2, 4, 3, 3, 2), seed=3, scale=1.0)
    if opts["nonlinearity"] == "relu":     # keep the pre-activations away from the kink
        args[4] = args[4] + 0.5
    grads = ref.jordan_backward(dy, ref.jordan_forward(*args, **opts)[1])
    eps = 1e-6
    for index, name in enumerate(["dx", "dy0", "dWx", "dWy", "db", "dWo", "dbo"]):
        arr = args[index]
        numeric = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            plus = loss(args, dy, opts)
            arr[i] = old - eps
            minus = loss(args, dy, opts)
            arr[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(getattr(grads, name), numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=name)


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_torch_autograd_on_the_equations_agrees(opts):
    torch = pytest.importorskip("torch")
    args, dy = problem((3, 7, 4, 5, 2), seed=5, scale=1.0)
    xi = np.array([1.0, 0.5, 2.0, 0.0, 1.0, 1.5, 1.0])
    dyT = np.random.default_rng(2).standard_normal((3, 2))
    tensors = [torch.tensor(a, requires_grad=True) for a in args]
    x, y0, Wx, Wy, b, Wo, bo = tensors
    phi_h = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
    phi_y = {"identity": lambda a: a, "tanh": torch.tanh, "sigmoid": torch.sigmoid}

    def scaled(y, factor):
        """y forward; its gradient times ``factor`` backward (xi's truncation)."""
        return factor * y + (1 - factor) * y.detach()

    outputs, y_prev = [], y0
    for t in range(x.shape[1]):
        h = phi_h[opts["nonlinearity"]](x[:, t] @ Wx + scaled(y_prev, xi[t]) @ Wy + b)
        y_prev = phi_y[opts["output_nonlinearity"]](h @ Wo + bo)
        outputs.append(y_prev)
    y = torch.stack(outputs, dim=1)
    total = (y * torch.tensor(dy)).sum() + (y_prev * torch.tensor(dyT)).sum()
    total.backward()
    for impl in IMPLS.values():
        _, cache = impl.jordan_forward(*args, **opts)
        grads = impl.jordan_backward(dy, cache, xi=xi, dyT=dyT)
        np.testing.assert_allclose(y.detach().numpy(), cache.y.swapaxes(0, 1), rtol=1e-9,
                                   atol=1e-12)
        for name, tensor in zip(GRAD_NAMES, tensors):
            np.testing.assert_allclose(getattr(grads, name), tensor.grad.numpy(), rtol=1e-9,
                                       atol=1e-12, err_msg=name)


# --------------------------------------------------------------------------------- bad input

GOOD, DY = problem((2, 3, 4, 5, 2))


def with_arg(index, value):
    args = list(GOOD)
    args[index] = value
    return args


BAD_FORWARD = [  # (args, kwargs, exception, words of the message)
    (with_arg(0, GOOD[0][0]), {}, ValueError, "x must be a 3-D array"),
    (with_arg(0, GOOD[0][:, :0]), {}, ValueError, "at least one time step"),
    (with_arg(0, GOOD[0].astype(int)), {}, TypeError, "x must be a float32 or float64"),
    (with_arg(1, np.zeros((2, 3))), {}, ValueError, "y0 must have shape (N, O) = (2, 2)"),
    (with_arg(2, np.zeros((3, 5))), {}, ValueError, "Wx must have shape (D, H) = (4, 5)"),
    (with_arg(3, np.zeros(5)), {}, ValueError, "Wy must have shape (O, H)"),
    (with_arg(4, np.zeros(4)), {}, ValueError, "b must have shape (H,) = (5,)"),
    (with_arg(5, np.zeros((2, 5))), {}, ValueError, "Wo must have shape (H, O) = (5, 2)"),
    (with_arg(6, np.zeros(5)), {}, ValueError, "bo must have shape (O,) = (2,)"),
    (with_arg(6, None), {}, TypeError, "bo must be a float32 or float64 array, got None"),
    (with_arg(5, GOOD[5].astype(np.float32)), {}, TypeError, "Wo has dtype float32"),
    (with_arg(3, np.full_like(GOOD[3], np.nan)), {}, ValueError, "Wy contains NaN"),
    (GOOD, {"nonlinearity": "identity"}, ValueError, "nonlinearity must be"),
    (GOOD, {"output_nonlinearity": "relu"}, ValueError, "output_nonlinearity must be"),
    (GOOD, {"time_major": 1}, TypeError, "time_major must be True or False"),
    (GOOD, {"out": object()}, TypeError, "out must be a cache returned by jordan_forward"),
]


@pytest.mark.parametrize("case", range(len(BAD_FORWARD)))
@pytest.mark.parametrize("name,impl", list(IMPLS.items()))
def test_bad_forward_input(name, impl, case):
    args, kwargs, exc, words = BAD_FORWARD[case]
    with pytest.raises(exc, match=None) as info:
        impl.jordan_forward(*args, **kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("name,impl", list(IMPLS.items()))
def test_bad_backward_input(name, impl):
    _, cache = impl.jordan_forward(*GOOD)
    _, rnn_cache = impl.rnn_forward(GOOD[0], None, np.zeros((4, 5)), np.zeros((5, 5)),
                                    np.zeros(5))
    cases = [
        ((DY[:, :, :1], cache), {}, ValueError, "dy must have shape (N, T, O) = (2, 3, 2)"),
        ((DY.astype(np.float32), cache), {}, TypeError, "dy has dtype float32"),
        ((DY, rnn_cache), {}, ValueError, "cache comes from rnn_forward, not jordan_forward"),
        ((DY, "cache"), {}, TypeError, "cache must be the cache returned by jordan_forward"),
        ((DY, cache), {"dyT": np.zeros((2, 5))}, ValueError, "dyT must have shape (N, O)"),
        ((DY, cache), {"xi": np.ones(4)}, ValueError, "xi must have shape (T,) = (3,)"),
        ((DY, cache), {"grads": {"dWx": np.zeros((4, 5))}}, TypeError, "without the key"),
        ((DY, cache), {"out": (1, 2)}, TypeError, "out must be the result of an earlier"),
        ((DY, cache), {"grads": {"dWx": cache.Wx, "dWy": np.zeros((2, 5)), "db": np.zeros(5),
                                 "dWo": np.zeros((5, 2)), "dbo": np.zeros(2)}},
         ValueError, "grads.dWx and cache.Wx overlap in memory"),
        ((DY, cache), {"grads": {"dWx": np.zeros((4, 5)), "dWy": np.zeros((2, 5)).T.copy().T,
                                 "db": np.zeros(5), "dWo": np.zeros((5, 2)), "dbo": np.zeros(2)}},
         ValueError, "grads.dWy must be C-contiguous and writeable"),
        ((DY, cache), {"grads": {"dWx": np.zeros((4, 5)), "dWy": np.zeros((2, 5)),
                                 "db": np.zeros(4), "dWo": np.zeros((5, 2)), "dbo": np.zeros(2)}},
         ValueError, "grads.db must be a float64 array of shape (5,)"),
    ]
    for args, kwargs, exc, words in cases:
        with pytest.raises(exc) as info:
            impl.jordan_backward(*args, **kwargs)
        assert words in str(info.value), words
    nan_dy = DY.copy()
    nan_dy[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="dy contains NaN"):
        impl.jordan_backward(nan_dy, cache)


def test_a_model_of_jordan_layers_has_the_gradients_of_its_loss():
    """Two stacked Jordan layers (O = H) and a softmax head: the gradients of both
    implementations agree, and match finite differences of the loss."""
    rng = np.random.default_rng(4)
    ids, targets = rng.integers(0, 5, (2, 6)), rng.integers(0, 3, (2, 6))
    results = {}
    for name in IMPLS:
        model = Model(5, 4, 3, cell="jordan", n_layers=2, dtype=np.float64, backend=name,
                      seed=0)
        results[name] = model.loss_and_grads(ids, targets)
    (loss, grads, state), (ref_loss, ref_grads, _) = results["kernels"], results["reference"]
    assert loss == pytest.approx(ref_loss, rel=1e-12) and set(state[0]) == {"y"}
    for key in grads:
        np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-10, atol=1e-13)
    eps = 1e-6
    for key, index in (("layer0.Wy", (1, 2)), ("layer1.Wo", (0, 3)), ("layer0.bo", (1,))):
        model.params[key][index] += eps
        plus = model.loss_and_grads(ids, targets)[0]
        model.params[key][index] -= 2 * eps
        minus = model.loss_and_grads(ids, targets)[0]
        model.params[key][index] += eps
        assert grads[key][index] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


def test_cache_pickles_and_reports_its_shapes():
    import pickle
    args, dy = problem((2, 4, 3, 5, 2))
    _, cache = fastbptt.jordan_forward(*args, output_nonlinearity="tanh")
    back = pickle.loads(pickle.dumps(cache))
    assert back.output_nonlinearity == "tanh"
    want = fastbptt.jordan_backward(dy, cache)
    got = fastbptt.jordan_backward(dy, back)
    for n in GRAD_NAMES:
        assert_close(getattr(got, n), getattr(want, n), np.float64, n)
    assert "jordan cache: T=4 N=2 H=5" in repr(cache)
    assert RTOL[np.float64] < 1e-9


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_state_gradient_norms_and_overwrite_cache(time_major, dtype):
    """h_grad_norms receives ||dL/dy_t|| (dy[t] plus what flows back from step t+1), the same
    in both implementations; overwrite_cache=True gives the same result and consumes the
    cache."""
    args, dy = problem((3, 5, 2, 4, 3), dtype, time_major)
    norms = {}
    for name, impl in IMPLS.items():
        _, cache = impl.jordan_forward(*args, time_major=time_major)
        norms[name] = np.zeros(5, dtype)
        plain = impl.jordan_backward(dy, cache, h_grad_norms=norms[name])
        consumed = impl.jordan_backward(dy, cache, overwrite_cache=True)
        for n in GRAD_NAMES:
            assert_close(getattr(consumed, n), getattr(plain, n), dtype, n)
        with pytest.raises(ValueError, match="consumed"):
            impl.jordan_backward(dy, cache)
    assert_close(norms["kernels"], norms["reference"], dtype, "norms")
    last = dy[-1] if time_major else dy[:, -1]
    assert_close(norms["reference"][-1], np.linalg.norm(last.astype(np.float64)), dtype)


def squared_error(y, t0, targets):
    """0.5 * sum((y - targets)^2) and its gradient, on a window of the stream."""
    diff = y - targets
    return 0.5 * float((diff * diff).sum()), diff


@pytest.mark.parametrize("name,impl", list(IMPLS.items()))
@pytest.mark.parametrize("k1,k2", [(4, 4), (3, 7), (5, 5)])
def test_tbptt_drives_the_jordan_cell(name, impl, k1, k2):
    """TBPTT carries y (cache.yT) from block to block: TBPTT(k, k) equals one backward with
    xi = truncation.chunked(T, k), and TBPTT(k1, k2) with k2 > k1 runs and ends in the same
    final output as one forward."""
    args, dy = problem((2, 13, 3, 4, 2))
    x, y0, Wx, Wy, b, Wo, bo = args
    targets = np.asarray(dy)
    result = fastbptt.TBPTT(k1, k2, cell="jordan", impl=impl).run(
        x, y0, Wx, Wy, b, squared_error, targets=targets, Wo=Wo, bo=bo)
    y, cache = impl.jordan_forward(*args)
    np.testing.assert_allclose(result.h, cache.yT, rtol=1e-12)
    if k1 == k2:
        loss, g_y = squared_error(y, 0, targets)
        g = impl.jordan_backward(g_y, cache, xi=truncation.chunked(13, k1))
        assert result.loss == pytest.approx(loss, rel=1e-12)
        for n in GRAD_NAMES[2:]:
            np.testing.assert_allclose(getattr(result.grads, n), getattr(g, n), rtol=1e-10,
                                       atol=1e-12, err_msg=n)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("shape", [(3, 4, 2, 5, 3), (1, 6, 3, 4, 2)], ids=["N3", "N1"])
def test_the_blas_floor_makes_the_kernels_products(shape, time_major, dtype):
    """_floor.jordan_floor: with y starting at zero, forward is the network with no biases and
    identity nonlinearities; backward the kernels' products on a given dAo."""
    from fastbptt._kernels import load
    n_batch, n_steps, n_input, n_hidden, n_output = shape
    rng = np.random.default_rng(0)

    def steps(width, fill=False):
        arr = np.zeros((n_steps, n_batch, width) if time_major
                       else (n_batch, n_steps, width), dtype)
        if fill:
            arr[...] = rng.standard_normal(arr.shape)
        return arr, (arr if time_major else arr.swapaxes(0, 1))

    (x, xt), (h, ht), (y, yt) = steps(n_input, True), steps(n_hidden), steps(n_output)
    (dAh, dAht), (dAo, dAot), (dx, dxt) = steps(n_hidden), steps(n_output, True), steps(n_input)
    Wx, Wy, Wo, y0 = (rng.standard_normal(s).astype(dtype) for s in
                      ((n_input, n_hidden), (n_output, n_hidden), (n_hidden, n_output),
                       (n_batch, n_output)))
    carry = np.zeros((n_batch, n_output), dtype)
    dWx, dWy, dWo = np.zeros_like(Wx), np.zeros_like(Wy), np.zeros_like(Wo)
    load("_floor").jordan_floor(x, y0, Wx, Wy, Wo, h, y, dAh, dAo, carry, dx, dWx, dWy, dWo,
                                True, time_major)
    want_h, want_y, y_prev = [], [], y0.astype(np.float64)
    for t in range(n_steps):
        want_h.append(xt[t] @ Wx + y_prev @ Wy)
        y_prev = want_h[-1] @ Wo
        want_y.append(y_prev)
    tol = dict(rtol=RTOL[dtype] * 100, atol=RTOL[dtype] * 100)
    np.testing.assert_allclose(ht, np.array(want_h), **tol)
    np.testing.assert_allclose(yt, np.array(want_y), **tol)
    np.testing.assert_allclose(dAht, dAot @ Wo.T, **tol)
    np.testing.assert_allclose(carry, dAht[0] @ Wy.T, **tol)
    y_before = np.concatenate([y0[None], yt[:-1]])
    np.testing.assert_allclose(dWx, np.einsum("tnd,tnh->dh", xt, dAht), **tol)
    np.testing.assert_allclose(dWy, np.einsum("tno,tnh->oh", y_before, dAht), **tol)
    np.testing.assert_allclose(dWo, np.einsum("tnh,tno->ho", ht, dAot), **tol)
    np.testing.assert_allclose(dxt, dAht @ Wx.T, **tol)


@pytest.mark.parametrize("name,impl", list(IMPLS.items()))
def test_an_empty_batch(name, impl):
    """N = 0 as for the other cells: empty outputs and zero weight gradients."""
    args, dy = problem((0, 4, 3, 5, 2))
    norms = np.full(4, -1.0)
    y, cache = impl.jordan_forward(*args)
    grads = impl.jordan_backward(dy, cache, h_grad_norms=norms)
    assert y.shape == (0, 4, 2) and grads.dx.shape == (0, 4, 3) and grads.dy0.shape == (0, 2)
    assert not any(getattr(grads, n).any() for n in GRAD_NAMES[2:]) and not norms.any()
