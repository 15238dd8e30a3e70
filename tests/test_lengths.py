"""Sequences of unequal lengths (``lengths=``) and reversed sequences (``reverse=True``).

The kernels equal the reference for every option; the reference passes finite differences;
both directions of torch's bidirectional modules over packed sequences are reproduced to 1e-9
(skipped without torch, as the other torch tests)."""
import numpy as np
import pytest
from conftest import IMPLS, assert_close, make_problem

import fastbptt
import fastbptt.reference
from fastbptt.compat import torch as compat

CELLS = ["rnn", "lstm", "gru"]
cells = pytest.mark.parametrize("cell", CELLS)
dtypes = pytest.mark.parametrize("dtype", [np.float64, np.float32])
layouts = pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
directions = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])

N, T, D, H = 5, 6, 3, 4
LENGTHS = np.array([3, 0, 6, 1, 6])         # unsorted, with 0, 1 and T (twice: a tie)


def problem(cell, dtype=np.float64, time_major=False, n_batch=N, n_steps=T, seed=0):
    args, kwargs, dh = make_problem(cell, n_batch, n_steps, D, H, dtype=dtype,
                                    time_major=time_major, seed=seed)
    rng = np.random.default_rng(seed + 1)
    finals = {"d" + s + "T": rng.standard_normal((n_batch, H)).astype(dtype)
              for s in fastbptt.CELLS[cell].states}
    return args, kwargs, dh, finals


def run(impl, cell, args, kwargs, dh, finals, lengths, reverse, xi=None, **backward_kw):
    """forward and backward of ``impl``: (h, cache finals, grads, norms)."""
    record = impl.CELLS[cell]
    h, cache = record.forward(*args, **kwargs, lengths=lengths, reverse=reverse)
    states = [np.array(cache.hT)] + ([np.array(cache.cT)] if cell == "lstm" else [])
    norms = np.empty(args[0].shape[0 if kwargs["time_major"] else 1], args[0].dtype)
    grads = record.backward(dh, cache, **finals, xi=xi, h_grad_norms=norms, **backward_kw)
    return np.array(h), states, grads, norms


def all_grads(cell, grads):
    return list(grads) + [getattr(grads, name) for name in fastbptt.CELLS[cell].extra_grads]


def assert_same(cell, got, want, dtype):
    (h1, s1, g1, n1), (h2, s2, g2, n2) = got, want
    assert_close(h1, h2, dtype, "h")
    for a, b in zip(s1, s2):
        assert_close(a, b, dtype, "final state")
    assert_close(n1, n2, dtype, "norms")
    for name, a, b in zip(("dx", "dh0", "dWx", "dWh", "db", "extra"), all_grads(cell, g1),
                          all_grads(cell, g2)):
        assert_close(a, b, dtype, name)


@cells
@dtypes
@layouts
@directions
@pytest.mark.parametrize("n_batch", [1, N])
def test_kernels_equal_reference(cell, dtype, time_major, reverse, n_batch):
    args, kwargs, dh, finals = problem(cell, dtype, time_major, n_batch)
    lengths = LENGTHS[:n_batch] if n_batch > 1 else np.array([4])
    xi = np.array([1, 0.5, 1, 0, 2, 1])
    got = run(fastbptt, cell, args, kwargs, dh, finals, lengths, reverse, xi=xi)
    want = run(fastbptt.reference, cell, args, kwargs, dh, finals, lengths, reverse, xi=xi)
    assert_same(cell, got, want, dtype)


@cells
@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
def test_semantics(cell, impl):
    """Padded outputs are zero and their dh is ignored; a sequence's final state is its state
    after its last step; one sequence alone gives the same as within the batch; padded steps
    give dx = 0."""
    args, kwargs, dh, finals = problem(cell)
    h, states, grads, _ = run(impl, cell, args, kwargs, dh, finals, LENGTHS, False)
    noisy = dh.copy()
    for n, length in enumerate(LENGTHS):
        assert not h[n, length:].any() and not grads.dx[n, length:].any()
        noisy[n, length:] = 1e3
    again = run(impl, cell, args, kwargs, noisy, finals, LENGTHS, False)
    for a, b in zip(all_grads(cell, grads), all_grads(cell, again[2])):
        np.testing.assert_array_equal(a, b)
    record = impl.CELLS[cell]
    for n in (0, 3):                        # one sequence alone, its real steps only
        length = LENGTHS[n]
        alone = [args[0][n:n + 1, :length], args[1][n:n + 1]] + args[2:]
        kw = {k: (v[n:n + 1] if k == "c0" else v) for k, v in kwargs.items()}
        h1, cache1 = record.forward(*alone, **kw)
        np.testing.assert_allclose(h1[0], h[n, :length], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cache1.hT[0], states[0][n], rtol=1e-12, atol=1e-12)
    assert np.array_equal(states[0][1], args[1][1])        # length 0: the initial state


@cells
@directions
def test_reverse_is_flipped_forward(cell, reverse):
    """reverse=True without lengths equals the forward direction on x flipped in time."""
    args, kwargs, dh, finals = problem(cell)
    record = fastbptt.CELLS[cell]
    h, cache = record.forward(*args, **kwargs, reverse=True)
    flipped = [args[0][:, ::-1]] + args[1:]
    h2, cache2 = record.forward(*flipped, **kwargs)
    np.testing.assert_allclose(h, h2[:, ::-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache.hT, cache2.hT, rtol=1e-12, atol=1e-12)
    g = record.backward(dh, cache)
    g2 = record.backward(dh[:, ::-1], cache2)
    np.testing.assert_allclose(g.dx, g2.dx[:, ::-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.dWh, g2.dWh, rtol=1e-10, atol=1e-12)


@cells
@directions
def test_options(cell, reverse):
    """grads=, out= (forward and backward) and overwrite_cache with lengths, on the kernels,
    against a plain call of the reference."""
    args, kwargs, dh, finals = problem(cell)
    want = run(fastbptt.reference, cell, args, kwargs, dh, finals, LENGTHS, reverse)
    record = fastbptt.CELLS[cell]
    # out= a plain cache of the same shapes, then a cache by length; grads= accumulating
    _, plain = record.forward(*args, **kwargs)
    for _ in range(2):
        h, cache = record.forward(*args, **kwargs, out=plain, lengths=LENGTHS, reverse=reverse)
        assert cache is plain
        assert_close(h, want[0], np.float64, "h with out=")
    grads = record.backward(dh, cache, **finals)
    twice = record.backward(dh, cache, **finals, grads=grads, out=None)
    assert_close(twice.dWh, 2 * all_grads(cell, want[2])[3], np.float64, "grads=")
    again = record.backward(dh, cache, **finals, out=grads, overwrite_cache=True)
    for name, a, b in zip("01234", all_grads(cell, again), all_grads(cell, want[2])):
        assert_close(a, b, np.float64, "out= " + name)
    with pytest.raises(ValueError, match="consumed"):
        record.backward(dh, cache)
    # the plain forward refills it again: no trace of the lengths stays
    h, cache = record.forward(*args, **kwargs, out=plain)
    assert cache.lengths is None
    h2, _ = record.forward(*args, **kwargs)
    np.testing.assert_array_equal(h, h2)


@cells
@directions
def test_kernels_backward_on_reference_cache(cell, reverse):
    """A cache of the reference (or one back from pickle) runs on the kernels' backward."""
    import pickle
    args, kwargs, dh, finals = problem(cell)
    _, ref_cache = fastbptt.reference.CELLS[cell].forward(*args, **kwargs, lengths=LENGTHS,
                                                          reverse=reverse)
    want = fastbptt.reference.CELLS[cell].backward(dh, ref_cache, **finals)
    _, cache = fastbptt.CELLS[cell].forward(*args, **kwargs, lengths=LENGTHS, reverse=reverse)
    back = pickle.loads(pickle.dumps(cache))
    assert np.array_equal(back.lengths, LENGTHS) and back.reverse == reverse
    np.testing.assert_array_equal(back.hT, cache.hT)
    for c in (ref_cache, back):
        got = fastbptt.CELLS[cell].backward(dh, c, **finals)
        for a, b in zip(all_grads(cell, got), all_grads(cell, want)):
            assert_close(a, b, np.float64)


def test_all_empty():
    args, kwargs, dh, finals = problem("lstm")
    for impl in IMPLS.values():
        h, cache = impl.lstm_forward(*args, **kwargs, lengths=np.zeros(N, int))
        assert not np.asarray(h).any()
        np.testing.assert_array_equal(cache.hT, args[1])
        g = impl.lstm_backward(dh, cache, **finals)
        assert not g.dx.any() and not g.dWh.any()
        np.testing.assert_array_equal(g.dh0, finals["dhT"])


@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("bad,match", [
    (np.array([1, 2]), "shape"), (np.array([[1, 2, 3, 4, 5]]), "shape"),
    (np.array([1, 2, -1, 3, 4]), "between 0 and T"), (np.array([1, 2, 7, 3, 4]), "between"),
    (np.array([1.5, 2, 3, 4, 5]), "whole numbers"), (np.array(["a"] * 5), "integer"),
    (np.array([True] * 5), "integer")])
def test_bad_lengths(impl, bad, match):
    args, kwargs, _, _ = problem("rnn")
    with pytest.raises(ValueError, match="lengths") as err:
        impl.rnn_forward(*args, **kwargs, lengths=bad)
    assert match in str(err.value)
    with pytest.raises(TypeError, match="reverse"):
        impl.rnn_forward(*args, **kwargs, reverse="yes")
    h, _ = impl.rnn_forward(*args, **kwargs, lengths=np.array([1.0, 2, 3, 4, 5]))  # whole
    assert not np.asarray(h)[0, 1:].any()


@cells
@directions
def test_reference_finite_differences(cell, reverse):
    """d(loss)/d(every input) of the reference with lengths against central differences."""
    args, kwargs, dh, finals = problem(cell, n_batch=3, n_steps=4, seed=3)
    lengths = np.array([2, 4, 0])
    record = fastbptt.reference.CELLS[cell]
    names = ["x", "h0", "Wx", "Wh", "b"]
    values = dict(zip(names, args))
    values.update(kwargs)

    def loss(vals):
        call = {k: v for k, v in vals.items() if k not in names}
        h, cache = record.forward(*(vals[n] for n in names), **call, lengths=lengths,
                                  reverse=reverse)
        total = np.sum(np.asarray(h) * dh) + np.sum(cache.hT * finals["dhT"])
        if cell == "lstm":
            total += np.sum(cache.cT * finals["dcT"])
        return total

    _, cache = record.forward(*args, **kwargs, lengths=lengths, reverse=reverse)
    grads = record.backward(dh, cache, **finals)
    analytic = dict(zip(["x", "h0", "Wx", "Wh", "b"], grads))
    for name in fastbptt.CELLS[cell].extra_grads:
        analytic[name[1:]] = getattr(grads, name)
    eps = 1e-6
    for name, grad in analytic.items():
        base = values[name]
        numeric = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            for sign in (1, -1):
                moved = dict(values)
                moved[name] = base.copy()
                moved[name][i] += sign * eps
                numeric[i] += sign * loss(moved) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


# ---- against torch's bidirectional modules over packed sequences


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def assert_rel(actual, expected, name, rtol=1e-9):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = float(np.abs(expected).max(initial=0))
    assert scale > 0, name
    err = float(np.abs(actual - expected).max(initial=0))
    assert err <= rtol * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


@cells
@pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("lengths", [[5], [3, 1, 5, 0, 5, 2, 4, 1, 3, 5, 2]],
                         ids=["N=1", "N=11"])
def test_against_torch_bidirectional(torch, cell, impl, lengths):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    lengths = np.array(lengths)
    n_batch, n_steps = len(lengths), 5
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = cls(D, H, batch_first=True, bidirectional=True, dtype=torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n_batch, n_steps, D))
    n_states = 2 if cell == "lstm" else 1
    init = [rng.standard_normal((2, n_batch, H)) for _ in range(n_states)]
    dout = rng.standard_normal((n_batch, n_steps, 2 * H))
    dfinal = [rng.standard_normal((2, n_batch, H)) for _ in range(n_states)]

    xt = torch.tensor(x, requires_grad=True)
    init_t = [torch.tensor(a, requires_grad=True) for a in init]
    nonzero = lengths > 0                   # torch packs no empty sequence
    packed = pack_padded_sequence(xt[nonzero], torch.tensor(lengths[nonzero]),
                                  batch_first=True, enforce_sorted=False)
    state_in = [a[:, nonzero] for a in init_t]
    out, final = module(packed, tuple(state_in) if cell == "lstm" else state_in[0])
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=n_steps)
    final = list(final) if cell == "lstm" else [final]
    loss = (out * torch.tensor(dout[nonzero])).sum()
    for f, df in zip(final, dfinal):
        loss = loss + (f * torch.tensor(df[:, nonzero])).sum()
    loss.backward()

    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    record = impl.CELLS[cell]
    outs = []
    for direction, reverse in enumerate((False, True)):
        w = compat.from_state_dict(cell, sd, layer=0, reverse=reverse)
        kw = {"c0": init[1][direction]} if cell == "lstm" else {}
        h, cache = record.forward(x, init[0][direction], **w, **kw, lengths=lengths,
                                  reverse=reverse)
        finals = {"dhT": dfinal[0][direction]}
        if cell == "lstm":
            finals["dcT"] = dfinal[1][direction]
        grads = record.backward(dout[:, :, direction * H:(direction + 1) * H], cache, **finals)
        outs.append(np.asarray(h))
        assert_rel(cache.hT[nonzero], final[0][direction].detach().numpy(), "hT")
        if cell == "lstm":
            assert_rel(cache.cT[nonzero], final[1][direction].detach().numpy(), "cT")
        want = compat.grads_to_state_dict(cell, grads, reverse=reverse)
        assert len(want) == 4
        for name, value in want.items():    # every parameter of this direction
            assert_rel(value, dict(module.named_parameters())[name].grad.numpy(), name)
        dx_dir = grads.dx
        if direction == 0:
            dx_total = dx_dir.copy()
        else:
            dx_total += dx_dir
        assert_rel(grads.dh0[nonzero], init_t[0].grad[direction, nonzero].numpy(), "dh0")
        if cell == "lstm":
            assert_rel(grads.dc0[nonzero], init_t[1].grad[direction, nonzero].numpy(), "dc0")
        # an empty sequence passes its final-state gradient to its initial state
        np.testing.assert_array_equal(grads.dh0[~nonzero], dfinal[0][direction][~nonzero])
    assert_rel(np.concatenate(outs, axis=2)[nonzero], out.detach().numpy(), "h")
    assert_rel(dx_total[nonzero], xt.grad[nonzero].numpy(), "dx")
    assert not dx_total[~nonzero].any()


# ---- the model: bidirectional layers, lengths, masks


@cells
def test_bidirectional_model_against_torch(torch, cell):
    """Model(bidirectional=True, n_layers=2) with lengths equals torch's two-layer
    bidirectional module over packed sequences and a Linear: outputs, final states of both
    directions of both layers, dx and every parameter's gradient."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from fastbptt.nn import Model
    n_batch, n_steps, n_out = 4, 5, 3
    lengths = np.array([3, 1, 5, 2])
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = cls(D, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(2 * H, n_out, dtype=torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    model = Model(D, H, n_out, cell=cell, n_layers=2, input="dense", loss="mse",
                  dtype=np.float64, bidirectional=True)
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    params = compat.layers_from_state_dict(cell, sd)
    assert set(params) == set(model.params) - {"out.W", "out.b"}
    model.params.update(params)
    model.params["out.W"] = linear.weight.detach().numpy().T.copy()
    model.params["out.b"] = linear.bias.detach().numpy().copy()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n_batch, n_steps, D))
    dz = rng.standard_normal((n_batch, n_steps, n_out))

    xt = torch.tensor(x, requires_grad=True)
    out, final = module(pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                             enforce_sorted=False))
    z = linear(pad_packed_sequence(out, batch_first=True, total_length=n_steps)[0])
    (z * torch.tensor(dz)).sum().backward()

    outputs, cache = model.forward(x, lengths=lengths)
    assert_rel(outputs, z.detach().numpy(), "outputs")
    h_n = (final[0] if cell == "lstm" else final).detach().numpy()
    for k in range(4):                      # layer 0 forward, reverse, layer 1 forward, reverse
        assert_rel(cache.state[k]["h"], h_n[k], f"h_n[{k}]")
        if cell == "lstm":
            assert_rel(cache.state[k]["c"], final[1][k].detach().numpy(), f"c_n[{k}]")
    grads, _, dx = model.backward(np.ascontiguousarray(dz.swapaxes(0, 1)).reshape(-1, n_out),
                                  cache)
    assert_rel(dx, xt.grad.numpy(), "dx")
    named = dict(module.named_parameters())
    for layer in range(2):
        for suffix in ("", "_reverse"):
            p, t = f"layer{layer}{suffix}.", f"_l{layer}{suffix}"
            assert_rel(grads[p + "Wx"], named["weight_ih" + t].grad.numpy().T, p + "Wx")
            assert_rel(grads[p + "Wh"], named["weight_hh" + t].grad.numpy().T, p + "Wh")
            assert_rel(grads[p + "b"], named["bias_ih" + t].grad.numpy(), p + "b")
            if cell == "gru":
                assert_rel(grads[p + "bh"], named["bias_hh" + t].grad.numpy(), p + "bh")
    assert_rel(grads["out.W"], linear.weight.grad.numpy().T, "out.W")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_model_loss_counts_real_steps(bidirectional):
    """After forward with lengths the loss is the mean over the real steps alone, as with the
    mask of the lengths; the kernels and the reference train alike."""
    from fastbptt.nn import Model
    from fastbptt.nn import model as model_module
    lengths = np.array([4, 1, 0, 6])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, (4, 6))
    targets = rng.integers(0, 7, (4, 6))
    results = []
    for backend in ("kernels", "reference"):
        m = Model(7, 5, 7, cell="gru", n_layers=2, bidirectional=bidirectional,
                  dtype=np.float64, seed=1, backend=backend)
        _, cache = m.forward(ids, lengths=lengths)
        loss, dz = m.loss(cache, targets)
        mask = model_module.lengths_mask(lengths, 6)
        loss2, _ = m.loss(cache, targets, mask=mask)
        assert loss == loss2
        assert not dz.reshape(6, 4, 7)[lengths[None, :] <= np.arange(6)[:, None]].any()
        results.append(m.loss_and_grads(ids, targets, lengths=lengths))
    (l1, g1, s1), (l2, g2, s2) = results
    assert abs(l1 - l2) < 1e-10
    for name in g1:
        assert_close(g1[name], g2[name], np.float64, name)
    assert len(s1) == 2 * (1 + bidirectional)


def test_bidirectional_model_saves_and_refuses_sampling(tmp_path):
    from fastbptt.nn import Model
    m = Model(6, 4, 6, cell="lstm", bidirectional=True, seed=0)
    assert m.params["out.W"].shape == (8, 6) and "layer0_reverse.Wh" in m.params
    assert "bidirectional" in repr(m)
    back = Model.load(m.save(tmp_path / "m.npz"))
    assert back.bidirectional and set(back.params) == set(m.params)
    with pytest.raises(ValueError, match="bidirectional"):
        m.sample([1, 2], 3)
    with pytest.raises(TypeError, match="bidirectional"):
        Model(6, 4, 6, bidirectional="yes")


# ---- lengths on several threads: each shard runs its rows that run

LENGTHS_7 = np.array([3, 0, 6, 1, 6, 2, 4])     # N = 2 stops before T: the last steps run no row


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads{n}")
def threads_given(request, monkeypatch):
    """Every call threaded, however small (below ``THREADED_WORK`` a call runs on one thread);
    yields the count the calls should be given (capped by OpenMP's limit) and the list of the
    counts they were given."""
    import fastbptt._blas_threads
    import fastbptt._threads

    given = []

    def counted(work, threads_for=fastbptt._blas_threads.threads_for):
        given.append(threads_for(work))
        return given[-1]

    monkeypatch.setattr(fastbptt._threads, "THREADED_WORK", 0)
    monkeypatch.setattr(fastbptt._blas_threads, "SINGLE_THREADED_WORK", 0)
    monkeypatch.setattr(fastbptt._blas_threads, "threads_for", counted)
    with fastbptt.num_threads(request.param):
        yield min(request.param, fastbptt._threads._openmp_threads()), given


@cells
@layouts
@directions
@pytest.mark.parametrize("n_batch", [2, 5, 7], ids=lambda n: f"N{n}")
def test_lengths_on_threads_equal_reference(cell, time_major, reverse, n_batch, threads_given):
    n_threads, given = threads_given
    args, kwargs, dh, finals = problem(cell, np.float64, time_major, n_batch, seed=n_batch)
    xi = np.array([1, 0.5, 1, 0, 2, 1])
    lengths = LENGTHS_7[:n_batch]
    got = run(fastbptt, cell, args, kwargs, dh, finals, lengths, reverse, xi=xi)
    assert given and max(given) == n_threads     # the kernels ran on n_threads
    want = run(fastbptt.reference, cell, args, kwargs, dh, finals, lengths, reverse, xi=xi)
    assert_same(cell, got, want, np.float64)
