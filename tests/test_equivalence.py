"""Kernels equal the reference to rounding, for every cell, option, dtype, layout and edge shape."""
import itertools

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, assert_close, make_problem, relayout

import fastbptt
import fastbptt.reference as ref

# cell -> the forward keyword variants every check runs over: every combination of the values
# of the cell's options (the RNN's three nonlinearities; {} for a cell without options)
CELL_OPTIONS = {
    name: [dict(zip(cell.options, values)) for values in itertools.product(*cell.options.values())]
    for name, cell in fastbptt.CELLS.items() if name in HIDDEN_CELLS
}
CASES = [(cell, opts) for cell, variants in CELL_OPTIONS.items() for opts in variants]
CASE_IDS = [f"{cell}-{'-'.join(map(str, opts.values())) or 'default'}" for cell, opts in CASES]
SHAPES = [  # (N, T, D, H)
    (3, 7, 4, 5), (1, 1, 1, 1), (1, 9, 3, 4), (4, 1, 3, 2), (2, 5, 1, 3), (2, 4, 3, 1),
    (5, 6, 8, 16),
]


def run(module, cell, args, kwargs, dh, **backward_kwargs):
    record = module.CELLS[cell]
    h, cache = record.forward(*args, **kwargs)
    grads = record.backward(dh, cache, **backward_kwargs)
    return h, cache, grads


def compare(cell, args, kwargs, dh, dtype, **backward_kwargs):
    h1, c1, g1 = run(fastbptt, cell, args, kwargs, dh, **backward_kwargs)
    h2, c2, g2 = run(ref, cell, args, kwargs, dh, **backward_kwargs)
    assert_close(h1, h2, dtype, "h")
    assert_close(c1.hT, c2.hT, dtype, "hT")
    for name, a, b in zip(g2._fields, g1, g2):
        assert_close(a, b, dtype, name)
    for extra in fastbptt.CELLS[cell].extra_grads:
        assert_close(getattr(g1, extra), getattr(g2, extra), dtype, extra)
    if cell == "lstm":
        assert_close(c1.cT, c2.cT, dtype, "cT")
    return g1, g2


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_kernels_equal_reference(cell, opts, shape, time_major, dtype):
    args, kwargs, dh = make_problem(cell, *shape, dtype=dtype, time_major=time_major)
    compare(cell, args, {**kwargs, **opts}, dh, dtype)


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("layout", ["F", "strided", "readonly", "byteswapped"])
def test_layouts_give_the_same_answer(cell, opts, layout, dtype):
    args, kwargs, dh = make_problem(cell, 3, 6, 4, 5, dtype=dtype)
    h_c, _, g_c = run(fastbptt, cell, args, {**kwargs, **opts}, dh)
    moved = [relayout(a, layout) for a in args]
    kw = {k: relayout(v, layout) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    h_l, _, g_l = run(fastbptt, cell, moved, {**kw, **opts}, relayout(dh, layout))
    np.testing.assert_array_equal(h_l, h_c)
    for a, b in zip(g_l, g_c):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
def test_none_initial_state_is_zeros(cell, opts, dtype):
    args, kwargs, dh = make_problem(cell, 2, 4, 3, 3, dtype=dtype)
    for module in (fastbptt, ref):
        forward = module.CELLS[cell].forward
        h_none, _ = forward(args[0], None, *args[2:], **{**kwargs, **opts})
        zeros = np.zeros_like(args[1])
        h_zero, _ = forward(args[0], zeros, *args[2:], **{**kwargs, **opts})
        np.testing.assert_array_equal(h_none, h_zero)


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_empty_batch(cell, opts, time_major, dtype):
    """N = 0 is allowed: empty states and outputs, zero weight gradients."""
    args, kwargs, dh = make_problem(cell, 0, 5, 3, 4, dtype=dtype, time_major=time_major)
    for module in (fastbptt, ref):
        h, cache, g = run(module, cell, args, {**kwargs, **opts}, dh)
        assert h.shape == dh.shape and h.dtype == dtype
        assert g.dx.shape == args[0].shape and g.dh0.shape == (0, 4)
        for dw, w in zip(g[2:], args[2:]):
            assert dw.shape == w.shape and not dw.any()


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
def test_truncation_keywords_match(cell, opts, dtype):
    """xi (zeros, ones, other multipliers), the gradient into the final state, and grads=."""
    args, kwargs, dh = make_problem(cell, 3, 8, 4, 5, dtype=dtype)
    rng = np.random.default_rng(1)
    dhT = rng.standard_normal((3, 5)).astype(dtype)
    xi = np.array([1, 0, 2.5, 1, 0, 0, 1, 0.5])
    extra = {"dcT": rng.standard_normal((3, 5)).astype(dtype)} if cell == "lstm" else {}
    compare(cell, args, {**kwargs, **opts}, dh, dtype, dhT=dhT, xi=xi, **extra)


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
def test_grads_accumulate_in_place(cell, opts, dtype):
    args, kwargs, dh = make_problem(cell, 2, 5, 3, 4, dtype=dtype)
    weight_grads = fastbptt.CELLS[cell].weight_grads      # dWx, dWh, db and the GRU's dbh
    for module in (fastbptt, ref):
        _, _, first = run(module, cell, args, {**kwargs, **opts}, dh)
        base = {name: getattr(first, name).copy() for name in weight_grads}
        _, _, second = run(module, cell, args, {**kwargs, **opts}, dh, grads=first)
        for name in weight_grads:
            assert getattr(second, name) is getattr(first, name)   # the same buffer
            assert_close(getattr(second, name), 2 * base[name], dtype, name)


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
def test_state_carried_across_segments(cell, opts, dtype):
    """Forward over two halves, passing hT (cT) on, equals forward over the whole."""
    args, kwargs, dh = make_problem(cell, 2, 8, 3, 4, dtype=dtype)
    forward = fastbptt.CELLS[cell].forward
    h_all, _ = forward(*args, **{**kwargs, **opts})
    x = args[0]
    h_a, cache_a = forward(x[:, :3], *args[1:], **{**kwargs, **opts})
    kw_b = dict(kwargs, **opts)
    if cell == "lstm":
        kw_b["c0"] = cache_a.cT
    h_b, _ = forward(x[:, 3:], cache_a.hT, *args[2:], **kw_b)
    assert_close(np.concatenate([h_a, h_b], axis=1), h_all, dtype, "h")


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
def test_h_grad_norms(cell, opts, dtype):
    """The optional per-step ||dL/dh_t|| agrees between kernels and reference, and asking for it
    changes no gradient."""
    args, kwargs, dh = make_problem(cell, 3, 6, 4, 5, dtype=dtype)
    xi = np.array([1, 1, 0, 1, 1, 1.0])
    norms = {}
    for module in (fastbptt, ref):
        _, cache = module.CELLS[cell].forward(*args, **{**kwargs, **opts})
        backward = module.CELLS[cell].backward
        out = np.full(6, np.nan, dtype)
        with_norms = backward(dh, cache, xi=xi, h_grad_norms=out)
        without = backward(dh, cache, xi=xi)
        for a, b in zip(with_norms, without):
            np.testing.assert_array_equal(a, b)
        norms[module] = out
    assert_close(norms[fastbptt], norms[ref], dtype, "h_grad_norms")
    assert np.all(norms[ref] > 0)


def test_reference_has_every_public_name():
    """The drop-in promise: code written against fastbptt.reference runs on fastbptt."""
    kernel_only = {"set_blas_threads", "TBPTT"}   # the driver takes impl=fastbptt.reference
    assert set(fastbptt.__all__) - kernel_only == set(ref.__all__)
    for name in ref.__all__:
        assert hasattr(ref, name) and hasattr(fastbptt, name), name
    assert fastbptt.TBPTT(5, impl=ref).impl is ref
    assert fastbptt.TBPTT(5).impl is fastbptt
    assert fastbptt.CELLS.keys() == ref.CELLS.keys()
