"""fastbptt.compat.torch: PyTorch weights run on fastbptt and give PyTorch's answers.

The tests that compare with torch take the ``torch`` fixture, which is
``pytest.importorskip("torch")``: where torch is not installed they are skipped, not failed, and
the conversion's own checks (shapes, keys, round trips on plain arrays) still run.
"""
import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS

import fastbptt
from fastbptt.compat import torch as compat

RTOL = 1e-9
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("gru", None)]
CELL_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]
cells = pytest.mark.parametrize("cell,nonlinearity", CELLS, ids=CELL_IDS)
impls = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def assert_rel(actual, expected, name, rtol=RTOL):
    """max |actual - expected| <= rtol * max |expected|: equal to 1e-9 relative."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = float(np.abs(expected).max(initial=0))
    assert scale > 0, f"{name}: the expected values are all zero; the test would prove nothing"
    err = float(np.abs(actual - expected).max(initial=0))
    assert err <= rtol * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


def torch_module(torch, cell, nonlinearity, n_input, n_hidden, *, batch_first=False, seed=0,
                 **kwargs):
    """A float64 torch module with random weights and distinct, nonzero biases."""
    torch.manual_seed(seed)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    if cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    module = cls(n_input, n_hidden, batch_first=batch_first, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.7, 0.7)
    return module


def numpy_state_dict(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def fastbptt_kwargs(cell, nonlinearity, batch_first):
    kwargs = {"time_major": not batch_first}
    if cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    return kwargs


# ---------------------------------------------------------------------------------------------
# against torch

@impls
@cells
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_first"])
def test_forward_and_gradients_equal_torch(torch, module, cell, nonlinearity, batch_first):
    n_batch, n_steps, n_input, n_hidden = 3, 6, 4, 5
    m = torch_module(torch, cell, nonlinearity, n_input, n_hidden, batch_first=batch_first)
    gen = torch.Generator().manual_seed(1)

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=grad)

    x_shape = (n_batch, n_steps, n_input) if batch_first else (n_steps, n_batch, n_input)
    x, h0, c0 = randn(*x_shape, grad=True), randn(1, n_batch, n_hidden, grad=True), None
    if cell == "lstm":
        c0 = randn(1, n_batch, n_hidden, grad=True)
        out, (h_n, c_n) = m(x, (h0, c0))
    else:
        out, h_n = m(x, h0)
    # a random linear loss of every output, the final states included
    r_out, r_h = randn(*out.shape), randn(*h_n.shape)
    loss = (out * r_out).sum() + (h_n * r_h).sum()
    if cell == "lstm":
        r_c = randn(*c_n.shape)
        loss = loss + (c_n * r_c).sum()
    loss.backward()

    w = compat.from_state_dict(cell, numpy_state_dict(m))
    assert set(w) == ({"Wx", "Wh", "b", "bh"} if cell == "gru" else {"Wx", "Wh", "b"})
    kwargs = fastbptt_kwargs(cell, nonlinearity, batch_first)
    if cell == "lstm":
        kwargs["c0"] = c0.detach().numpy()[0]
    forward = module.CELLS[cell].forward
    backward = module.CELLS[cell].backward
    h, cache = forward(x.detach().numpy(), h0.detach().numpy()[0], **w, **kwargs)
    assert_rel(h, out.detach().numpy(), "h")
    assert_rel(cache.hT, h_n.detach().numpy()[0], "h_n")
    back_kwargs = {"dhT": r_h.numpy()[0]}
    if cell == "lstm":
        assert_rel(cache.cT, c_n.detach().numpy()[0], "c_n")
        back_kwargs["dcT"] = r_c.numpy()[0]
    grads = backward(r_out.numpy(), cache, **back_kwargs)
    assert_rel(grads.dx, x.grad.numpy(), "dx")
    assert_rel(grads.dh0, h0.grad.numpy()[0], "dh0")
    if cell == "lstm":
        assert_rel(grads.dc0, c0.grad.numpy()[0], "dc0")
    torch_grads = compat.grads_to_state_dict(cell, grads)
    params = dict(m.named_parameters())
    assert set(torch_grads) == set(params) and len(params) == 4
    for name, p in params.items():
        assert_rel(torch_grads[name], p.grad.numpy(), f"grad of {name}")


@cells
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_first"])
def test_converted_weights_loaded_back_into_torch_give_its_output(torch, cell, nonlinearity,
                                                                  batch_first):
    m = torch_module(torch, cell, nonlinearity, 3, 4, batch_first=batch_first)
    w = compat.from_state_dict(cell, numpy_state_dict(m))
    sd = compat.to_state_dict(cell, **w)
    fresh = torch_module(torch, cell, nonlinearity, 3, 4, batch_first=batch_first, seed=7)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})   # strict: same keys
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        expected, got = m(x)[0].numpy(), fresh(x)[0].numpy()
    assert_rel(got, expected, "output", rtol=1e-12)
    if cell != "gru":           # the split of b: all in bias_ih, zeros in bias_hh
        np.testing.assert_array_equal(sd["bias_hh_l0"], 0)
        np.testing.assert_allclose(sd["bias_ih_l0"],
                                   m.bias_ih_l0.detach().numpy() + m.bias_hh_l0.detach().numpy())


@cells
def test_state_dict_round_trip(torch, cell, nonlinearity):
    m = torch_module(torch, cell, nonlinearity, 3, 4)
    sd = numpy_state_dict(m)
    w = compat.from_state_dict(cell, sd)
    np.testing.assert_array_equal(w["Wx"], sd["weight_ih_l0"].T)
    np.testing.assert_array_equal(w["Wh"], sd["weight_hh_l0"].T)
    back = compat.to_state_dict(cell, **w)
    assert set(back) == set(sd)
    for key in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_array_equal(back[key], sd[key])
    if cell == "gru":
        for key in ("bias_ih_l0", "bias_hh_l0"):
            np.testing.assert_array_equal(back[key], sd[key])
    again = compat.from_state_dict(cell, back)
    for name in w:
        np.testing.assert_array_equal(again[name], w[name])
        assert again[name].flags.c_contiguous and again[name].dtype == np.float64
    # fresh copies: changing the torch module later does not reach the converted weights
    with torch.no_grad():
        m.weight_hh_l0.add_(1.0)
    np.testing.assert_array_equal(w["Wh"], back["weight_hh_l0"].T)


def test_float32_module_keeps_its_dtype(torch):
    m = torch.nn.GRU(3, 4)                                        # torch's default float32
    w = compat.from_state_dict("gru", numpy_state_dict(m))
    assert all(v.dtype == np.float32 for v in w.values())
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        expected = m(x)[0].numpy()
    h, _ = fastbptt.gru_forward(x.numpy(), None, **w, time_major=True)
    assert h.dtype == np.float32
    np.testing.assert_allclose(h, expected, rtol=1e-4, atol=1e-5)


@impls
@cells
def test_module_without_bias(torch, module, cell, nonlinearity):
    m = torch_module(torch, cell, nonlinearity, 3, 4, batch_first=True, bias=False)
    sd = numpy_state_dict(m)
    assert "bias_ih_l0" not in sd
    w = compat.from_state_dict(cell, sd)
    np.testing.assert_array_equal(w["b"], 0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        expected = m(x)[0].numpy()
    h, _ = module.CELLS[cell].forward(x.numpy(), None, **w,
                                      **fastbptt_kwargs(cell, nonlinearity, True))
    assert_rel(h, expected, "h")
    back = compat.to_state_dict(cell, **w, bias=False)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})   # strict: no biases
    with pytest.raises(ValueError, match="bias=False"):
        compat.to_state_dict(cell, w["Wx"], w["Wh"], w["b"] + 1, bias=False)


@impls
def test_stacked_bidirectional_lstm_cell_by_cell(torch, module):
    """layer= and reverse= pick each cell; chained by hand they give the torch module's output."""
    n_hidden = 4
    m = torch_module(torch, "lstm", None, 3, n_hidden, num_layers=2, bidirectional=True)
    sd = numpy_state_dict(m)
    with pytest.raises(ValueError, match=r"holds 4 cells .*pass layer="):
        compat.from_state_dict("lstm", sd)
    x = torch.randn(6, 2, 3, dtype=torch.float64)                 # (T, N, D)
    with torch.no_grad():
        expected = m(x)[0].numpy()                                 # (T, N, 2H)
    inputs = x.numpy()
    for layer in (0, 1):
        w_fwd = compat.from_state_dict("lstm", sd, layer=layer)
        w_rev = compat.from_state_dict("lstm", sd, layer=layer, reverse=True)
        assert w_fwd["Wx"].shape == (inputs.shape[2], 4 * n_hidden)
        h_fwd, _ = module.lstm_forward(inputs, None, **w_fwd, time_major=True)
        h_rev, _ = module.lstm_forward(inputs[::-1], None, **w_rev, time_major=True)
        inputs = np.concatenate([h_fwd, h_rev[::-1]], axis=2)
    assert_rel(inputs, expected, "output of layer 1")


def test_lstm_with_projection_is_refused(torch):
    m = torch.nn.LSTM(3, 4, proj_size=2, dtype=torch.float64)
    with pytest.raises(ValueError, match="proj_size > 0 is not supported"):
        compat.from_state_dict("lstm", numpy_state_dict(m))


def test_prefix_of_a_submodule(torch):
    model = torch.nn.Sequential(torch.nn.GRU(3, 4, dtype=torch.float64))
    sd = numpy_state_dict(model)
    with pytest.raises(ValueError, match=r"found '0.weight_ih_l0': pass prefix='0.'"):
        compat.from_state_dict("gru", sd)
    w = compat.from_state_dict("gru", sd, prefix="0.")
    np.testing.assert_array_equal(w["bh"], sd["0.bias_hh_l0"])
    assert set(compat.to_state_dict("gru", **w, prefix="0.")) == set(sd)


def test_wrong_cell_is_named(torch):
    sd = numpy_state_dict(torch.nn.GRU(3, 4))
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(4\*H, H\) for "
                                         r"cell='lstm', got \(12, 4\) \(the shape of cell='gru'"):
        compat.from_state_dict("lstm", sd)


# ---------------------------------------------------------------------------------------------
# the conversion on its own (no torch needed)

def random_state_dict(cell, n_input=3, n_hidden=2, dtype=np.float64, suffix="_l0", seed=0):
    rng = np.random.default_rng(seed)
    gh = fastbptt.CELLS[cell].n_gates * n_hidden
    shapes = {"weight_ih": (gh, n_input), "weight_hh": (gh, n_hidden), "bias_ih": (gh,),
              "bias_hh": (gh,)}
    return {f"{k}{suffix}": rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mapping_by_hand(cell, dtype):
    sd = random_state_dict(cell, dtype=dtype)
    w = compat.from_state_dict(cell.upper(), sd)
    np.testing.assert_array_equal(w["Wx"], sd["weight_ih_l0"].T)
    np.testing.assert_array_equal(w["Wh"], sd["weight_hh_l0"].T)
    if cell == "gru":
        np.testing.assert_array_equal(w["b"], sd["bias_ih_l0"])
        np.testing.assert_array_equal(w["bh"], sd["bias_hh_l0"])
    else:
        np.testing.assert_array_equal(w["b"], sd["bias_ih_l0"] + sd["bias_hh_l0"])
        assert "bh" not in w
    assert all(v.dtype == dtype and v.flags.c_contiguous for v in w.values())
    back = compat.to_state_dict(cell, **w, layer=2, reverse=True)
    assert sorted(back) == sorted(k.replace("_l0", "_l2_reverse") for k in sd)
    assert compat.state_dict_keys(cell, layer=2, reverse=True) == [
        "weight_ih_l2_reverse", "weight_hh_l2_reverse", "bias_ih_l2_reverse",
        "bias_hh_l2_reverse"]


def test_grads_to_state_dict_by_hand():
    rng = np.random.default_rng(0)
    grads = fastbptt.Grads(None, None, rng.standard_normal((3, 8)), rng.standard_normal((2, 8)),
                           rng.standard_normal(8))
    out = compat.grads_to_state_dict("lstm", grads)
    np.testing.assert_array_equal(out["weight_ih_l0"], grads.dWx.T)
    np.testing.assert_array_equal(out["weight_hh_l0"], grads.dWh.T)
    np.testing.assert_array_equal(out["bias_ih_l0"], grads.db)     # b = bias_ih + bias_hh:
    np.testing.assert_array_equal(out["bias_hh_l0"], grads.db)     # both get db
    gru = fastbptt.Grads(None, None, grads.dWx[:, :6], grads.dWh[:, :6], grads.db[:6],
                         dbh=grads.db[2:])
    out = compat.grads_to_state_dict("gru", gru)
    np.testing.assert_array_equal(out["bias_hh_l0"], gru.dbh)
    with pytest.raises(TypeError, match="without dbh"):
        compat.grads_to_state_dict("gru", grads)


def _without(sd, key):
    return {k: v for k, v in sd.items() if k != key}


BAD_FROM = [  # (description, cell, state dict, exception, message fragment)
    ("cell", "transformer", random_state_dict("rnn"), ValueError,
     "cell must be 'rnn', 'lstm' or 'gru'"),
    ("not a mapping", "rnn", [1, 2], TypeError, "state_dict must be a mapping"),
    ("no weight_hh", "lstm", _without(random_state_dict("lstm"), "weight_hh_l0"), ValueError,
     "state_dict has no 'weight_hh_l0'"),
    ("one bias only", "gru", _without(random_state_dict("gru"), "bias_hh_l0"), ValueError,
     "state_dict has no 'bias_hh_l0'"),
    ("weight_ih shape", "rnn", {**random_state_dict("rnn"), "weight_ih_l0": np.zeros((3, 3))},
     ValueError, "weight_ih_l0 must have shape (H, D) = (2, D) with D >= 1, got (3, 3)"),
    ("bias shape", "lstm", {**random_state_dict("lstm"), "bias_ih_l0": np.zeros(7)},
     ValueError, "bias_ih_l0 must have shape (4*H,) = (8,), got (7,)"),
    ("weight_hh 1-D", "gru", {**random_state_dict("gru"), "weight_hh_l0": np.zeros(6)},
     ValueError, "weight_hh_l0 must have shape (3*H, H) for cell='gru'"),
    ("int weights", "rnn", {**random_state_dict("rnn"), "weight_hh_l0": np.zeros((2, 2), int)},
     TypeError, "state_dict['weight_hh_l0'] must be a float32 or float64 array"),
    ("float16", "rnn", random_state_dict("rnn", dtype=np.float16), TypeError,
     "got dtype float16"),
    ("mixed dtypes", "rnn", {**random_state_dict("rnn"),
                             "bias_hh_l0": np.zeros(2, np.float32)}, TypeError,
     "bias_hh_l0 has dtype float32 but weight_ih_l0 has dtype float64"),
    ("NaN", "rnn", {**random_state_dict("rnn"), "bias_ih_l0": np.full(2, np.nan)}, ValueError,
     "contains NaN"),
    ("only layer 1", "rnn", random_state_dict("rnn", suffix="_l1"), ValueError,
     "no 'weight_ih_l0'; the state dict has layer=1"),
]


@pytest.mark.parametrize("case", BAD_FROM, ids=[c[0] for c in BAD_FROM])
def test_from_state_dict_bad_input(case):
    _, cell, sd, exc, message = case
    with pytest.raises(exc) as info:
        compat.from_state_dict(cell, sd)
    assert message in str(info.value)


def test_from_state_dict_bad_selection():
    sd = random_state_dict("rnn")
    with pytest.raises(ValueError, match="layer must be a non-negative integer"):
        compat.from_state_dict("rnn", sd, layer=-1)
    with pytest.raises(TypeError, match="reverse must be True or False"):
        compat.from_state_dict("rnn", sd, reverse="yes")
    with pytest.raises(ValueError, match="no 'weight_ih_l0_reverse'"):
        compat.from_state_dict("rnn", sd, reverse=True)
    with pytest.raises(TypeError, match="prefix must be a string"):
        compat.from_state_dict("rnn", sd, prefix=0)


def test_to_state_dict_bad_input():
    w = compat.from_state_dict("lstm", random_state_dict("lstm"))
    Wx, Wh, b = w["Wx"], w["Wh"], w["b"]
    cases = [
        (("lstm", Wx, Wh[:, :-1], b), {}, ValueError, "Wh must have shape (H, 4*H)"),
        (("lstm", Wx[:, :4], Wh, b), {}, ValueError, "Wx must have shape (D, 4*H) = (D, 8)"),
        (("lstm", Wx, Wh, b[:3]), {}, ValueError, "b must have shape (4*H,) = (8,), got (3,)"),
        (("lstm", Wx.astype(np.float32), Wh, b), {}, TypeError, "Wx has dtype float32"),
        (("lstm", Wx, Wh, b.astype(int)), {}, TypeError, "b must be a float32 or float64"),
        (("lstm", Wx, Wh, b, b), {}, TypeError, "bh is only for cell='gru'"),
        (("gru", Wx, Wh, b), {}, ValueError, "Wh must have shape (H, 3*H)"),
        (("lstm", Wx, Wh, b), {"bias": 1}, TypeError, "bias must be True or False"),
        (("lstm", Wx, Wh, b), {"layer": 1.5}, ValueError, "layer must be a non-negative"),
    ]
    for args, kwargs, exc, message in cases:
        with pytest.raises(exc) as info:
            compat.to_state_dict(*args, **kwargs)
        assert message in str(info.value), (args[0], kwargs, str(info.value))
