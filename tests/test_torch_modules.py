"""fastbptt.torch: torch.nn.RNN/LSTM/GRU drop-ins on the kernels, checked against torch.nn.

- the same parameters, names, shapes and initial values as torch.nn, and state dicts both ways;
  with weight_layout='fastbptt', the weights kept in the kernels' layout (through
  reset_parameters, dtype conversions, state dicts, deep copies), their gradients in their
  strides, and the same results (outputs, gradients, training) in either layout;
- the same outputs and gradients as torch.nn given the same state dict (float64, 1e-9), for
  every option: cell, nonlinearity, bias, batch_first, num_layers, bidirectional, dropout (the
  same seed drops the same units), with and without initial states, batched and unbatched;
- a bidirectional layer, one autograd node: torch.nn's results in either dtype, packed or not;
  on one thread, to the bit what two one-direction layers give; its directions run at once on
  two threads as one after the other;
- torch.autograd.gradcheck on each module (float64, tiny shapes);
- a model trained for a few steps with torch.optim.Adam ends where torch.nn's does;
- torch.compile runs the modules (as graph breaks);
- what is refused, and how: other devices and dtypes, proj_size, wrong shapes,
  NaN, double backward;
- autograd's guarantees: in-place changes (of the input, of a weight) caught, retain_graph,
  incoming gradients untouched.

The tests that need torch take the ``torch`` fixture (``pytest.importorskip``): without torch
they are skipped, and the two that check how fastbptt behaves without torch still run.
"""
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CELLS = ["rnn", "lstm", "gru"]
RTOL = 1e-9


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ft(torch):
    import fastbptt.torch as ft
    return ft


def classes(torch, ft, cell):
    """(fastbptt's module class, torch.nn's) of a cell."""
    return {"rnn": (ft.RNN, torch.nn.RNN), "lstm": (ft.LSTM, torch.nn.LSTM),
            "gru": (ft.GRU, torch.nn.GRU)}[cell]


def pair(torch, ft, cell, *args, seed=0, weight_layout="torch", **kwargs):
    """A fastbptt module (its weights in ``weight_layout``) and a torch.nn module with the same
    state dict (float64 unless a dtype is given), and nonzero biases drawn apart from the
    weights."""
    fast_cls, slow_cls = classes(torch, ft, cell)
    kwargs.setdefault("dtype", torch.float64)
    torch.manual_seed(seed)
    fast = fast_cls(*args, weight_layout=weight_layout, **kwargs)
    with torch.no_grad():
        for name, p in fast.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    slow = slow_cls(*args, **kwargs)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def assert_rel(actual, expected, name, rtol=RTOL):
    """max |actual - expected| <= rtol * max(1, max |expected|)."""
    actual, expected = actual.detach().numpy(), expected.detach().numpy()
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (name, actual.dtype, expected.dtype)
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    err = float(np.abs(actual - expected).max(initial=0))
    assert err <= rtol * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


def states_like(torch, cell, shape, gen, dtype=None):
    """Random initial states for a module call: a tensor, or (h_0, c_0) for the LSTM."""
    dtype = dtype or torch.float64

    def one():
        return torch.randn(*shape, generator=gen, dtype=dtype, requires_grad=True)
    return (one(), one()) if cell == "lstm" else one()


def flat(hx):
    return list(hx) if isinstance(hx, tuple) else [hx]


def run_and_differentiate(torch, module, x, hx, gen):
    """Outputs, and gradients of a random linear function of every output (final states
    included) with respect to the input, the initial states and every parameter."""
    output, h_n = module(x, hx)
    outputs = [output] + flat(h_n)
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    inputs = [x] + (flat(hx) if hx is not None else []) + list(module.parameters())
    return outputs, torch.autograd.grad(loss, inputs)


# ---------------------------------------------------------------------------------------------
# torch stays optional

def test_import_fastbptt_does_not_import_torch():
    """``import fastbptt`` (and its compat layers and the reference) in a fresh interpreter
    leaves torch out of sys.modules: torch is optional."""
    code = ("import sys, json, fastbptt, fastbptt.compat.torch, fastbptt.compat.cs231n, "
            "fastbptt.reference, fastbptt.nn; fastbptt.show_config(mode='dicts'); "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'file': fastbptt.__file__}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(seen["file"]).resolve().parent == ROOT / "fastbptt"
    assert seen["torch"] is False


def test_fastbptt_torch_without_torch_says_how_to_install_it():
    code = ("import sys; sys.modules['torch'] = None\n"     # as if torch were not installed
            "try:\n    import fastbptt.torch\n"
            "except ModuleNotFoundError as err:\n    print(err.name, '|', err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    name, message = out.stdout.strip().split(" | ")
    assert name == "torch"
    assert "pip install torch" in message and "fastbptt[torch]" in message


# ---------------------------------------------------------------------------------------------
# the same module as torch.nn's

@pytest.mark.parametrize("cell", CELLS)
def test_same_parameters_initial_values_and_repr(torch, ft, cell):
    fast_cls, slow_cls = classes(torch, ft, cell)
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=True)
    torch.manual_seed(3)
    fast = fast_cls(4, 5, **kwargs)
    torch.manual_seed(3)
    slow = slow_cls(4, 5, **kwargs)
    assert isinstance(fast, slow_cls)
    fast_params, slow_params = dict(fast.named_parameters()), dict(slow.named_parameters())
    assert list(fast_params) == list(slow_params)
    assert "weight_hh_l1_reverse" in fast_params
    for name, p in slow_params.items():
        assert torch.equal(fast_params[name], p), name
    assert repr(fast) == repr(slow)


@pytest.mark.parametrize("cell", CELLS)
def test_state_dicts_go_both_ways(torch, ft, cell):
    fast_cls, slow_cls = classes(torch, ft, cell)
    slow = slow_cls(3, 4, num_layers=2, bias=False, dtype=torch.float64)
    fast = fast_cls(3, 4, num_layers=2, bias=False, dtype=torch.float64)
    fast.load_state_dict(slow.state_dict())                 # strict: the same keys
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert_rel(fast(x)[0], slow(x)[0], "output")
    back = slow_cls(3, 4, num_layers=2, bias=False, dtype=torch.float64)
    back.load_state_dict(copy.deepcopy(fast).state_dict())
    assert_rel(back(x)[0], slow(x)[0], "output after the round trip")


def laid_out(weight):
    """Whether a weight (G*H, D) is kept in fastbptt's layout: the transpose of a C-contiguous
    (D, G*H) array."""
    return weight.stride() == (1, weight.shape[0])


@pytest.mark.parametrize("cell", CELLS)
def test_weights_kept_in_fastbptt_layout(torch, ft, cell):
    """With ``weight_layout='fastbptt'`` the modules keep every weight as the transpose of a
    C-contiguous array, which the kernels read as it is, and give each gradient in its weight's
    strides; the layout survives reset_parameters (drawn as torch.nn draws from the same seed),
    a dtype conversion, a state dict loaded and a deep copy. A weight replaced by one in torch's
    layout still runs, its gradient in that layout, and both give torch.nn's results. By
    default the weights are torch.nn's, C-contiguous."""
    default, _ = pair(torch, ft, cell, 3, 4, num_layers=2, bidirectional=True)
    assert all(p.is_contiguous() for p in default.parameters())
    assert "weight_layout" not in repr(default)
    with pytest.raises(ValueError, match="weight_layout must be one of"):
        classes(torch, ft, cell)[0](3, 4, weight_layout="kernels")
    fast, slow = pair(torch, ft, cell, 3, 4, num_layers=2, bidirectional=True,
                      weight_layout="fastbptt")
    assert "weight_layout='fastbptt'" in repr(fast)
    weights = [name for name, _ in fast.named_parameters() if name.startswith("weight")]
    assert len(weights) == 8
    assert all(laid_out(getattr(fast, name)) for name in weights)
    torch.manual_seed(11)
    fast.reset_parameters()
    torch.manual_seed(11)
    slow.reset_parameters()
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        assert torch.equal(p, q), name
    converted = copy.deepcopy(fast).float()
    assert converted.weight_ih_l0.dtype == torch.float32
    fast.load_state_dict(converted.double().state_dict())
    fast.load_state_dict(slow.state_dict())
    copied = copy.deepcopy(fast)
    for module in (fast, converted, copied):
        assert all(laid_out(getattr(module, name)) for name in weights)
    fast.weight_hh_l1 = torch.nn.Parameter(fast.weight_hh_l1.detach().contiguous())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for module in (fast, copied, slow):
        module(x)[0].square().sum().backward()
    for name in weights:
        p, c, q = (getattr(m, name) for m in (fast, copied, slow))
        assert p.grad.stride() == p.stride() and c.grad.stride() == c.stride(), name
        assert_rel(p.grad, q.grad, name)
        assert_rel(c.grad, q.grad, name)
    assert fast.weight_hh_l1.grad.is_contiguous()


OPTIONS = [  # (cell, constructor keywords), together every option
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu", "batch_first": True}),
    ("rnn", {"num_layers": 2, "bidirectional": True, "bias": False}),
    ("lstm", {}),
    ("lstm", {"batch_first": True, "num_layers": 3}),
    ("lstm", {"bidirectional": True, "bias": False, "batch_first": True}),
    ("gru", {}),
    ("gru", {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    ("gru", {"bias": False, "num_layers": 2}),
]


def option_id(case):
    cell, kwargs = case
    return "-".join([cell] + [f"{k}={v}" for k, v in kwargs.items()])


@pytest.mark.parametrize("case", OPTIONS, ids=[option_id(c) for c in OPTIONS])
@pytest.mark.parametrize("given", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("weight_layout", ["torch", "fastbptt"])
def test_outputs_and_gradients_equal_torch_nn(torch, ft, case, given, weight_layout):
    cell, kwargs = case
    n_batch, n_steps, n_input, n_hidden = 3, 6, 4, 5
    fast, slow = pair(torch, ft, cell, n_input, n_hidden, weight_layout=weight_layout,
                      **kwargs)
    gen = torch.Generator().manual_seed(1)
    shape = (n_batch, n_steps, n_input) if kwargs.get("batch_first") else \
        (n_steps, n_batch, n_input)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    n_layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    hx = states_like(torch, cell, (n_layers, n_batch, n_hidden), gen) if given else None
    fast_out, fast_grads = run_and_differentiate(torch, fast, x, hx,
                                                 torch.Generator().manual_seed(2))
    slow_out, slow_grads = run_and_differentiate(torch, slow, x, hx,
                                                 torch.Generator().manual_seed(2))
    names = ["output", "h_n", "c_n"]
    for name, got, want in zip(names, fast_out, slow_out):
        assert_rel(got, want, name)
    names = ["input"] + [f"state {i}" for i in range(len(flat(hx)) if given else 0)] + \
        [name for name, _ in slow.named_parameters()]
    assert len(names) == len(slow_grads) == len(fast_grads)
    for name, got, want in zip(names, fast_grads, slow_grads):
        assert_rel(got, want, f"gradient of {name}")


@pytest.mark.parametrize("cell", CELLS)
def test_float32_equals_torch_nn_to_rounding(torch, ft, cell):
    fast, slow = pair(torch, ft, cell, 4, 5, num_layers=2, dtype=torch.float32)
    x = torch.randn(7, 3, 4, requires_grad=True)
    fast_out, fast_grads = run_and_differentiate(torch, fast, x, None,
                                                 torch.Generator().manual_seed(2))
    slow_out, slow_grads = run_and_differentiate(torch, slow, x, None,
                                                 torch.Generator().manual_seed(2))
    for got, want in zip(fast_out + list(fast_grads), slow_out + list(slow_grads)):
        assert_rel(got, want, "float32", rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("given", [True, False], ids=["hx", "no-hx"])
def test_unbatched_input(torch, ft, cell, batch_first, given):
    fast, slow = pair(torch, ft, cell, 3, 4, num_layers=2, bidirectional=True,
                      batch_first=batch_first)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(1)
    hx = states_like(torch, cell, (4, 4), gen) if given else None
    fast_out, fast_grads = run_and_differentiate(torch, fast, x, hx,
                                                 torch.Generator().manual_seed(2))
    slow_out, slow_grads = run_and_differentiate(torch, slow, x, hx,
                                                 torch.Generator().manual_seed(2))
    assert fast_out[0].shape == (6, 8) and fast_out[1].shape == (4, 4)
    for got, want in zip(fast_out + list(fast_grads), slow_out + list(slow_grads)):
        assert_rel(got, want, "unbatched")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
def test_dropout_between_layers_drops_what_torch_nn_drops(torch, ft, cell, batch_first):
    """In training mode, with the same seed, the same units are dropped between layers (and
    none after the last); in eval mode there is no dropout."""
    fast, slow = pair(torch, ft, cell, 3, 4, num_layers=3, dropout=0.5, bidirectional=True,
                      batch_first=batch_first)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for module in (fast, slow):
        torch.manual_seed(7)
        results.append(run_and_differentiate(torch, module, x, None,
                                             torch.Generator().manual_seed(2)))
    (fast_out, fast_grads), (slow_out, slow_grads) = results
    for got, want in zip(fast_out + list(fast_grads), slow_out + list(slow_grads)):
        assert_rel(got, want, "training")
    fast.eval()
    slow.eval()
    torch.manual_seed(8)
    evaluated = fast(x)[0]
    assert_rel(evaluated, slow(x)[0], "eval")
    assert (evaluated - fast_out[0]).abs().max() > 1e-3       # training dropped something


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_bidirectional_layers_equal_torch_nn(torch, ft, cell, dtype, batch_first, packed):
    """Two bidirectional layers, each one autograd node running both directions, with initial
    states, sequences of equal lengths or packed of unequal ones: torch.nn's outputs and
    gradients, in either dtype."""
    from torch.nn.utils.rnn import pack_padded_sequence
    dtype = getattr(torch, dtype)
    fast, slow = pair(torch, ft, cell, 3, 4, num_layers=2, bidirectional=True,
                      batch_first=batch_first, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    shape = (3, 6, 3) if batch_first else (6, 3, 3)                     # N = 3, T = 6
    x = torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()
    hx = states_like(torch, cell, (4, 3, 4), gen, dtype)
    results = []
    for module in (fast, slow):
        given = x if not packed else pack_padded_sequence(
            x, [4, 6, 1], batch_first=batch_first, enforce_sorted=False)
        output, h_n = module(given, hx)
        output = output.data if packed else output
        if module is fast and not packed:           # no flips, no cat: one node
            assert type(output.grad_fn).__name__ == "_RecurrenceBackward"
        outputs = [output, *flat(h_n)]
        g = torch.Generator().manual_seed(2)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=dtype)).sum() for o in outputs)
        results.append(outputs + list(torch.autograd.grad(
            loss, [x, *flat(hx), *module.parameters()])))
    rtol = 1e-4 if dtype == torch.float32 else RTOL
    for got, want in zip(*results):
        assert_rel(got, want, "bidirectional", rtol=rtol)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
def test_bidirectional_layer_is_two_directions_to_the_bit(torch, ft, cell, dtype, batch_first):
    """On one thread, a bidirectional layer gives exactly what two one-direction layers give,
    the second run on the input flipped in time and its outputs flipped back: the same
    arithmetic, only the flips and the concatenation folded into the layer."""
    import fastbptt
    dtype = getattr(torch, dtype)
    fast_cls, _ = classes(torch, ft, cell)
    torch.manual_seed(0)
    both = fast_cls(3, 4, bidirectional=True, batch_first=batch_first, dtype=dtype)
    one = [fast_cls(3, 4, batch_first=batch_first, dtype=dtype) for _ in range(2)]
    state = both.state_dict()
    one[0].load_state_dict({name: value for name, value in state.items()
                            if not name.endswith("_reverse")})
    one[1].load_state_dict({name.removesuffix("_reverse"): value
                            for name, value in state.items() if name.endswith("_reverse")})
    gen = torch.Generator().manual_seed(1)
    time_axis = 1 if batch_first else 0
    x = torch.randn(*((2, 5, 3) if batch_first else (5, 2, 3)), generator=gen, dtype=dtype,
                    requires_grad=True)
    hx = states_like(torch, cell, (2, 2, 4), gen, dtype)
    states = [s.detach() for s in flat(hx)]
    with fastbptt.num_threads(1):
        output, h_n = both(x, hx)
        pieces = [one[d](x if d == 0 else torch.flip(x, (time_axis,)),
                         (tuple(s[d:d + 1] for s in states) if cell == "lstm"
                          else states[0][d:d + 1])) for d in range(2)]
        expected = torch.cat([pieces[0][0], torch.flip(pieces[1][0], (time_axis,))], dim=2)
        assert torch.equal(output, expected)
        for got, halves in zip(flat(h_n), zip(flat(pieces[0][1]), flat(pieces[1][1]))):
            assert torch.equal(got, torch.cat(halves))
        d_output = torch.randn(output.shape, generator=gen, dtype=dtype)
        grads = torch.autograd.grad(output, [x, *both.parameters()], d_output)
        hidden = d_output.shape[2] // 2
        forward_grads = torch.autograd.grad(pieces[0][0], [x, *one[0].parameters()],
                                            d_output[..., :hidden])
        reverse_grads = torch.autograd.grad(
            pieces[1][0], [x, *one[1].parameters()],
            torch.flip(d_output[..., hidden:], (time_axis,)))
    assert torch.equal(grads[0], forward_grads[0] + reverse_grads[0])
    names = [name for name, _ in both.named_parameters()]
    by_direction = dict(zip([n for n in names if not n.endswith("_reverse")], forward_grads[1:]))
    by_direction.update(zip([n for n in names if n.endswith("_reverse")], reverse_grads[1:]))
    for name, got in zip(names, grads[1:]):
        assert torch.equal(got, by_direction[name]), name


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_directions_at_once_as_one_after_the_other(torch, ft, cell):
    """A layer large enough for its two directions to run at once on two threads
    (``fastbptt._directions``), forward and backward, gives what it gives on one thread, where
    they run one after the other, with sequences packed and not."""
    from torch.nn.utils.rnn import pack_padded_sequence

    import fastbptt
    n_batch, n_steps, n_input, n_hidden = 16, 24, 48, 160
    fast, _ = pair(torch, ft, cell, n_input, n_hidden, bidirectional=True)
    n_cols = n_hidden * {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert n_steps * n_batch * n_cols * n_hidden >= fastbptt._threads.THREADED_WORK
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n_steps, n_batch, n_input, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    lengths = torch.randint(1, n_steps + 1, (n_batch,), generator=gen)
    lengths[3] = n_steps
    for packed in (False, True):
        results = []
        for n_threads in (2, 1):
            with fastbptt.num_threads(n_threads):
                given = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
                output, h_n = fast(given)
                output = output.data if packed else output
                outputs = [output, *flat(h_n)]
                g = torch.Generator().manual_seed(2)
                loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
                           for o in outputs)
                results.append(outputs + list(torch.autograd.grad(
                    loss, [x, *fast.parameters()])))
        for got, want in zip(*results):
            assert_rel(got, want, f"packed={packed}")


# ---------------------------------------------------------------------------------------------
# gradcheck

GRADCHECK = [  # (cell, constructor keywords, initial states given): each cell, every option
    ("rnn", {"nonlinearity": "relu", "bias": False}, True),
    ("rnn", {"num_layers": 2, "bidirectional": True, "batch_first": True, "dropout": 0.4}, False),
    ("lstm", {}, True),
    ("lstm", {"num_layers": 2, "bias": False, "batch_first": True}, True),
    ("lstm", {"num_layers": 2, "bidirectional": True, "dropout": 0.3}, False),
    ("gru", {"batch_first": True}, True),
    ("gru", {"num_layers": 2, "bidirectional": True, "bias": False}, True),
    ("gru", {"num_layers": 2, "dropout": 0.4}, False),
]


@pytest.mark.parametrize("cell,kwargs,given", GRADCHECK,
                         ids=[option_id((c, k)) + ("-hx" if g else "") for c, k, g in GRADCHECK])
def test_gradcheck(torch, ft, cell, kwargs, given):
    """torch.autograd.gradcheck of the module as a function of its input, initial states and
    parameters (torch.func.functional_call); with dropout, each call draws the same units."""
    fast_cls, _ = classes(torch, ft, cell)
    torch.manual_seed(0)
    module = fast_cls(2, 2, dtype=torch.float64, **kwargs)
    n_layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    gen = torch.Generator().manual_seed(1)
    shape = (2, 3, 2) if kwargs.get("batch_first") else (3, 2, 2)      # N = 2, T = 3
    x = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    hx = flat(states_like(torch, cell, (n_layers, 2, 2), gen)) if given else []
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def function(x, *rest):
        states, values = rest[:len(hx)], rest[len(hx):]
        torch.manual_seed(5)                     # the same dropout masks on every call
        state = None if not hx else (tuple(states) if cell == "lstm" else states[0])
        output, h_n = torch.func.functional_call(module, dict(zip(names, values)),
                                                 (x, state))
        return (output, *flat(h_n))

    assert torch.autograd.gradcheck(function, (x, *hx, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_unbatched(torch, ft, cell):
    fast_cls, _ = classes(torch, ft, cell)
    torch.manual_seed(0)
    module = fast_cls(2, 2, bidirectional=True, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    hx = flat(states_like(torch, cell, (2, 2), gen))

    def function(x, *states):
        output, h_n = module(x, tuple(states) if cell == "lstm" else states[0])
        return (output, *flat(h_n))

    assert torch.autograd.gradcheck(function, (x, *hx), eps=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# training, compile

def make_tagger(torch, recurrent):
    """A small sequence model, an nn.Sequential-style stack: a linear input projection, the
    recurrent module (bidirectional, hidden size 5), a linear head on every step."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(3, 4, dtype=torch.float64)
            self.rnn = recurrent
            self.head = torch.nn.Linear(2 * 5, 2, dtype=torch.float64)

        def forward(self, x):
            output, _ = self.rnn(torch.tanh(self.embed(x)))
            return self.head(output)
    return Model()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("weight_layout", ["torch", "fastbptt"])
def test_training_with_adam_ends_at_torch_nn_parameters(torch, ft, cell, weight_layout):
    fast_rnn, slow_rnn = pair(torch, ft, cell, 4, 5, num_layers=2, bidirectional=True,
                              batch_first=True, dropout=0.2, weight_layout=weight_layout)
    models = []
    for rnn in (fast_rnn, slow_rnn):
        torch.manual_seed(11)
        models.append(make_tagger(torch, rnn))
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(3, 7, 3, generator=gen, dtype=torch.float64),
                torch.randint(0, 2, (3, 7), generator=gen)) for _ in range(5)]
    losses = []
    for model in models:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        torch.manual_seed(12)                                   # the same dropout draws
        curve = []
        for x, y in batches:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 2), y.reshape(-1))
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        losses.append(curve)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-9)
    fast, slow = (dict(m.named_parameters()) for m in models)
    assert list(fast) == list(slow)
    for name, p in slow.items():
        assert_rel(fast[name], p, name, rtol=1e-6)
    assert not torch.equal(fast["rnn.weight_hh_l1"], fast_rnn.weight_hh_l1.detach() * 0)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("allow_rnn", [False, True])
def test_torch_compile_runs_the_modules(torch, ft, backend, allow_rnn):
    """torch.compile: the code around the module is compiled and the module runs as it does
    eagerly (a graph break: Dynamo does not trace torch.nn's recurrent modules, and with
    ``allow_rnn`` it skips fastbptt's ``torch.compiler.disable``d forward)."""
    import torch._dynamo

    fast, _ = pair(torch, ft, "lstm", 4, 5, num_layers=2, bidirectional=True, batch_first=True)
    model = make_tagger(torch, fast)
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    expected = model(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=allow_rnn):
        compiled = torch.compile(model, backend=backend)
        got = compiled(x)
        (got_grad,) = torch.autograd.grad(got.square().sum(), x)
    torch._dynamo.reset()
    assert_rel(got, expected, "output", rtol=1e-12)
    assert_rel(got_grad, expected_grad, "gradient", rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# autograd's guarantees

def test_double_backward_raises(torch, ft):
    fast, _ = pair(torch, ft, "gru", 3, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(fast(x)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        dx.sum().backward()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_retain_graph_backward_twice(torch, ft, cell, bidirectional):
    """The layers' backward writes over their cache; a second backward through the same graph
    runs the layer's forward again first, and gives the same gradients."""
    fast, _ = pair(torch, ft, cell, 3, 4, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    loss = fast(x)[0].square().sum()
    first = torch.autograd.grad(loss, [x, *fast.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [x, *fast.parameters()])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


PARAMETER_CHANGES = ["optimizer_step", "load_state_dict", "in_place_no_grad", "through_data",
                     "through_numpy", "new_parameter"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("change", PARAMETER_CHANGES)
def test_parameter_changes_reach_the_next_call(torch, ft, cell, change):
    """The kernels see the parameters as they are at each call, however they were changed
    since the last: an optimizer step, a state dict loaded, an in-place edit under no_grad, a
    write through ``.data`` or a NumPy view (neither of which torch's version counter sees), a
    parameter replaced. Each call is compared with torch.nn's changed alike."""
    fast, slow = pair(torch, ft, cell, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    fast(x)[0].sum().backward()               # a call before the change
    gen = torch.Generator().manual_seed(5)
    new = {name: torch.randn(p.shape, generator=gen, dtype=p.dtype)
           for name, p in slow.named_parameters()}
    for module in (fast, slow):
        if change == "optimizer_step":
            module.zero_grad()
            module(x)[0].square().sum().backward()
            torch.optim.SGD(module.parameters(), lr=0.5).step()
        elif change == "load_state_dict":
            module.load_state_dict(new)
        elif change == "in_place_no_grad":
            with torch.no_grad():
                for name, p in module.named_parameters():
                    p.copy_(new[name])
        elif change == "through_data":
            for name, p in module.named_parameters():
                p.data.copy_(new[name])
        elif change == "through_numpy":
            for name, p in module.named_parameters():
                p.detach().numpy()[...] = new[name].numpy()
        else:
            module.weight_hh_l1 = torch.nn.Parameter(new["weight_hh_l1"])
            module.bias_ih_l0 = torch.nn.Parameter(new["bias_ih_l0"])
    gen = torch.Generator()
    fast_out, fast_grads = run_and_differentiate(torch, fast, x, None, gen.manual_seed(2))
    slow_out, slow_grads = run_and_differentiate(torch, slow, x, None, gen.manual_seed(2))
    for got, want in zip(fast_out + list(fast_grads), slow_out + list(slow_grads)):
        assert_rel(got, want, change)


def test_parametrized_weight_reaches_the_kernels(torch, ft):
    """A parameter computed by a parametrization (``torch.nn.utils.parametrize``), which is no
    longer in the module's own dict of parameters, is read as the module's attribute: its value
    and its gradient are those of torch.nn with the weight it computes."""
    from torch.nn.utils import parametrize

    class Doubled(torch.nn.Module):
        def forward(self, weight):
            return 2 * weight

    fast, slow = pair(torch, ft, "gru", 3, 4)
    with torch.no_grad():
        slow.weight_hh_l0.mul_(2)
    parametrize.register_parametrization(fast, "weight_hh_l0", Doubled())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    fast_output, slow_output = fast(x)[0], slow(x)[0]
    assert_rel(fast_output, slow_output, "output")
    fast_output.sum().backward()
    slow_output.sum().backward()
    assert_rel(fast.parametrizations.weight_hh_l0.original.grad, 2 * slow.weight_hh_l0.grad,
               "gradient of the parametrization's original")


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_bias_gradients_are_tensors_of_their_own(torch, ft, cell):
    """Both biases enter the kernels as their sum, whose gradient is each one's: they get it as
    two tensors (an optimizer changes one without the other), or as one where only one of them
    requires it."""
    fast, slow = pair(torch, ft, cell, 3, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    fast(x)[0].sum().backward()
    slow(x)[0].sum().backward()
    g_ih, g_hh = fast.bias_ih_l0.grad, fast.bias_hh_l0.grad
    assert g_ih.data_ptr() != g_hh.data_ptr()
    assert_rel(g_ih, slow.bias_ih_l0.grad, "bias_ih_l0")
    assert_rel(g_hh, slow.bias_hh_l0.grad, "bias_hh_l0")
    for module in (fast, slow):
        module.zero_grad()
        module.bias_hh_l0.requires_grad_(False)
        module(x)[0].sum().backward()
    assert fast.bias_hh_l0.grad is None
    assert_rel(fast.bias_ih_l0.grad, slow.bias_ih_l0.grad, "bias_ih_l0 alone")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("weight_layout", ["torch", "fastbptt"])
def test_changing_a_weight_in_place_before_backward_raises(torch, ft, cell, weight_layout):
    """A weight changed in place between forward and backward (an optimizer step taken too
    early) raises autograd's error, as torch.nn's does, in either layout (with 'fastbptt' the
    kernels' backward reads the weights' own memory, and would otherwise give gradients of
    weights the forward did not run)."""
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for module in pair(torch, ft, cell, 3, 4, weight_layout=weight_layout):
        output, _ = module(x)
        with torch.no_grad():
            module.weight_hh_l0.mul_(0.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            output.sum().backward()


def test_changing_the_input_in_place_before_backward_raises(torch, ft):
    fast, _ = pair(torch, ft, "lstm", 3, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    y = x * 1                                  # a non-leaf, which may be changed in place
    output, _ = fast(y)
    with torch.no_grad():
        y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        output.sum().backward()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_outputs_may_be_changed_in_place_as_torch_nn_allows(torch, ft, bidirectional):
    fast, slow = pair(torch, ft, "lstm", 3, 4, bidirectional=bidirectional)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for module in (fast, slow):
        output, (h_n, c_n) = module(x)
        output.mul_(2)                       # as nn.ReLU(inplace=True) or a stateful loop would
        h_n.detach_()
        grads.append(torch.autograd.grad(output.sum() + c_n.sum(), x)[0])
    assert_rel(grads[0], grads[1], "gradient")


def test_incoming_gradients_are_left_as_they_are(torch, ft):
    fast, _ = pair(torch, ft, "gru", 3, 4, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    h_0 = torch.randn(1, 2, 4, dtype=torch.float64)
    output, h_n = fast(x, h_0)
    d_output, d_h_n = torch.randn_like(output), torch.randn_like(h_n)
    kept = d_output.clone(), d_h_n.clone()
    torch.autograd.grad([output, h_n], x, [d_output, d_h_n])
    assert torch.equal(d_output, kept[0]) and torch.equal(d_h_n, kept[1])


def test_strided_input_broadcast_gradients_and_no_grad(torch, ft):
    """A transposed (non-contiguous) input, the zero-stride gradient of ``sum()``, and calls
    without autograd all run and agree with torch.nn."""
    fast, slow = pair(torch, ft, "rnn", 3, 4, batch_first=True)
    base = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for module in (fast, slow):
        grads.append(torch.autograd.grad(module(base.transpose(0, 1))[0].sum(), base)[0])
        with torch.no_grad():
            plain = module(base.transpose(0, 1))[0]
        with torch.inference_mode():
            inferred = module(base.detach().transpose(0, 1))[0]
        assert torch.equal(plain, inferred) and not plain.requires_grad
    assert_rel(grads[0], grads[1], "gradient")


# ---------------------------------------------------------------------------------------------
# what is refused

def test_refused_at_construction(torch, ft):
    with pytest.raises(ValueError, match="proj_size=2"):
        ft.LSTM(3, 4, proj_size=2)
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64"):
        ft.GRU(3, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="proj_size"):          # torch.nn's own check
        ft.RNN(3, 4, proj_size=2)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_as_torch_nn(torch, ft, cell, batch_first, enforce_sorted):
    """A PackedSequence through a two-layer bidirectional module gives torch.nn's packed
    output (the same layout), final states and every gradient."""
    from torch.nn.utils.rnn import pack_padded_sequence
    fast, slow = pair(torch, ft, cell, 3, 4, num_layers=2, bidirectional=True,
                      batch_first=batch_first)
    lengths = [5, 4, 4, 2, 1] if enforce_sorted else [2, 5, 1, 4, 4]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 5, 3, dtype=torch.float64, generator=gen)
    hx = states_like(torch, cell, (4, 5, 4), gen)
    grads = []
    for module in (fast, slow):
        xi = x.clone().requires_grad_()
        packed = pack_padded_sequence(xi if batch_first else xi.transpose(0, 1), lengths,
                                      batch_first=batch_first, enforce_sorted=enforce_sorted)
        out, final = module(packed, hx)
        finals = list(final) if cell == "lstm" else [final]
        loss = (out.data * torch.linspace(-1, 1, out.data.numel(), dtype=torch.float64)
                .reshape(out.data.shape)).sum() + sum((f * f).sum() for f in finals)
        loss.backward()
        grads.append((out, finals, xi.grad, [p.grad for p in module.parameters()]))
    (out1, f1, dx1, g1), (out2, f2, dx2, g2) = grads
    assert type(out1) is type(out2)
    assert torch.equal(out1.batch_sizes, out2.batch_sizes)
    assert_rel(out1.data, out2.data, "output")
    for a, b in zip(f1, f2):
        assert_rel(a, b, "final state")
    assert_rel(dx1, dx2, "dx")
    for a, b in zip(g1, g2):
        assert_rel(a, b, "parameter gradient")


def bad_calls(torch):
    f64 = torch.float64

    def t(*shape, dtype=f64, **kwargs):
        return torch.zeros(*shape, dtype=dtype, **kwargs)
    return [  # (cell, call arguments, exception, message)
        ("rnn", (t(5, 2, 3, device="meta"),), ValueError, "input is on meta"),
        ("rnn", (t(5, 2, 3, dtype=torch.float32),), TypeError,
         "input has dtype torch.float32 but the parameters are torch.float64"),
        ("rnn", (t(5, 2, 3, dtype=torch.int64),), TypeError, "input must be float32 or float64"),
        ("rnn", (np.zeros((5, 2, 3)),), TypeError, "input must be a torch.Tensor, got ndarray"),
        ("rnn", (t(5, 2, 3).to_sparse(),), TypeError, "input must be a dense tensor"),
        ("rnn", (t(2, 5, 2, 3),), ValueError, "input must be 3-D (T, N, input_size)"),
        ("rnn", (t(5, 2, 4),), ValueError, "input must have input_size = 3 features"),
        ("rnn", (t(0, 2, 3),), ValueError, "input must have at least one time step"),
        ("gru", (t(5, 2, 3), t(1, 3, 4)), ValueError,
         "h_0 must have shape (num_layers * num_directions, N, hidden_size) = (1, 2, 4), "
         "got (1, 3, 4)"),
        ("gru", (t(5, 2, 3), t(2, 4)), ValueError, "h_0 must have shape"),
        ("gru", (t(5, 2, 3), t(1, 2, 4, dtype=torch.float32)), TypeError,
         "h_0 has dtype torch.float32"),
        ("gru", (t(5, 2, 3), [t(1, 2, 4)]), TypeError, "h_0 must be a torch.Tensor, got list"),
        ("lstm", (t(5, 2, 3), t(1, 2, 4)), TypeError, "hx must be a tuple (h_0, c_0)"),
        ("lstm", (t(5, 2, 3), (t(1, 2, 4), t(1, 2, 5))), ValueError, "c_0 must have shape"),
        ("lstm", (t(5, 3), (t(1, 2, 4), t(1, 2, 4))), ValueError,
         "h_0 must have shape (num_layers * num_directions, hidden_size) for unbatched input"),
        ("lstm", (t(5, 2, 3) * np.nan,), ValueError, "input contains NaN or infinity"),
        ("lstm", (t(5, 2, 3), (t(1, 2, 4), t(1, 2, 4) + np.inf)), ValueError,
         r"c_0\[0\] contains NaN or infinity"),
    ]


@pytest.mark.parametrize("index", range(17))
def test_bad_calls_name_the_argument(torch, ft, index):
    cases = bad_calls(torch)
    assert len(cases) == 17
    cell, args, exc, message = cases[index]
    fast, _ = pair(torch, ft, cell, 3, 4)
    with pytest.raises(exc, match=message if "\\" in message else None) as info:
        fast(*args)
    if "\\" not in message:
        assert message in str(info.value)


def test_refused_parameters_and_gradients(torch, ft):
    fast, _ = pair(torch, ft, "lstm", 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        fast.weight_hh_l1[0, 0] = np.nan
    with pytest.raises(ValueError, match="weight_hh_l1 contains NaN"):
        fast(x)
    fast, _ = pair(torch, ft, "gru", 3, 4)
    output, _ = fast(x)
    with pytest.raises(ValueError, match="the gradient of layer 0's output contains NaN"):
        output.backward(torch.full_like(output, np.nan))
    half = pair(torch, ft, "rnn", 3, 4)[0].half()
    with pytest.raises(TypeError, match="runs in float32 or float64: its parameters are "
                                        "torch.float16"):
        half(x.half())
    mixed, _ = pair(torch, ft, "gru", 3, 4, num_layers=2)
    mixed.weight_hh_l1.data = mixed.weight_hh_l1.data.float()
    with pytest.raises(TypeError, match="weight_hh_l1 has dtype float32 but x has dtype float64"):
        mixed(x)
    meta = ft.RNN(3, 4, device="meta")
    with pytest.raises(ValueError, match="runs on the CPU: its parameters are on meta"):
        meta(x.float())
