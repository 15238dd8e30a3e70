"""The TBPTT(k1, k2) driver against a brute force that backpropagates each window separately."""
import tracemalloc

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, assert_close, make_problem

import fastbptt
import fastbptt.reference as ref
from fastbptt import TBPTT, truncation
from fastbptt.tbptt import WeightGrads

CELLS = HIDDEN_CELLS
impls = pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
N, T, D, H = 2, 17, 3, 4


def weight_names(cell):
    return fastbptt.CELLS[cell].weight_grads      # dWx, dWh, db and the GRU's dbh


def stream_problem(cell, dtype=np.float64, time_major=False, seed=0, n_steps=T):
    args, kwargs, _ = make_problem(cell, N, n_steps, D, H, dtype=dtype, time_major=time_major,
                                   seed=seed)
    shape = (n_steps, N, H) if time_major else (N, n_steps, H)
    targets = np.random.default_rng(seed + 100).standard_normal(shape).astype(dtype)
    return args, kwargs, targets


def squared_error(h, t0, y):
    """loss = sum (h - y)^2 / 2 over the new steps; dL/dh = h - y."""
    d = h - y
    return 0.5 * float(np.sum(d * d)), d


def brute_force(impl, cell, args, kwargs, targets, k1, k2):
    """TBPTT(k1, k2) by definition, with plain forward/backward calls: for each block of new
    steps [t0, t1), get the state at the window's start s = max(0, t0 - (k2 - k1)) by a forward
    from the beginning, run forward over [s, t1), inject the loss gradients of [t0, t1) only,
    backpropagate the whole window, and add up the weight gradients."""
    forward = impl.CELLS[cell].forward
    backward = impl.CELLS[cell].backward
    x, h0, Wx, Wh, b = args
    time_major = kwargs["time_major"]
    n_steps = x.shape[0 if time_major else 1]

    def steps(a, start, stop):
        return a[start:stop] if time_major else a[:, start:stop]

    def state_at(s):
        if s == 0:
            return h0, kwargs.get("c0")
        _, cache = forward(steps(x, 0, s), *args[1:], **kwargs)
        return cache.hT, (cache.cT if cell == "lstm" else None)

    totals = {name: 0.0 for name in weight_names(cell)}
    loss = 0.0
    for t0 in range(0, n_steps, k1):
        t1 = min(t0 + k1, n_steps)
        s = max(0, t0 - (k2 - k1))
        h_s, c_s = state_at(s)
        kw = dict(kwargs, c0=c_s) if cell == "lstm" else kwargs
        h, cache = forward(steps(x, s, t1), h_s, Wx, Wh, b, **kw)
        window_loss, d = squared_error(steps(h, t0 - s, t1 - s), t0, steps(targets, t0, t1))
        loss += window_loss
        dh = np.zeros_like(h)
        steps(dh, t0 - s, t1 - s)[...] = d
        g = backward(dh, cache)
        for name in totals:
            totals[name] = totals[name] + getattr(g, name)
    _, cache = forward(*args, **kwargs)
    return loss, totals, cache


KK = [(4, 4), (3, 5), (4, 8), (5, 12), (1, 3), (3, 4), (17, 17), (20, 25), (2, 40)]


@pytest.mark.parametrize("cell", CELLS)
@impls
@pytest.mark.parametrize("k1,k2", KK, ids=[f"k{a}-{b}" for a, b in KK])
def test_tbptt_equals_brute_force(cell, impl, k1, k2, dtype):
    args, kwargs, targets = stream_problem(cell, dtype)
    result = TBPTT(k1, k2, cell=cell, impl=impl).run(
        *args, squared_error, targets=targets, **kwargs)
    loss, totals, full = brute_force(impl, cell, args, kwargs, targets, k1, k2)
    assert result.loss == pytest.approx(loss, rel=1e-10 if dtype == np.float64 else 1e-4)
    for name, value in totals.items():
        assert_close(getattr(result.grads, name), value, dtype, name)
    assert result.n_steps == T and result.n_windows == -(-T // k1)
    assert_close(result.h, full.hT, dtype, "h")          # the state is carried to the end
    if cell == "lstm":
        assert_close(result.c, full.cT, dtype, "c")
    else:
        assert result.c is None


@pytest.mark.parametrize("cell", CELLS)
@impls
@pytest.mark.parametrize("k", [1, 4, 6, 17])
def test_k1_equal_k2_is_one_call_with_chunked_xi(cell, impl, k):
    """TBPTT(k, k) over the stream equals one backward over the whole sequence with
    xi = truncation.chunked(T, k)."""
    args, kwargs, targets = stream_problem(cell)
    result = TBPTT(k, cell=cell, impl=impl).run(*args, squared_error, targets=targets,
                                                **kwargs)
    h, cache = impl.CELLS[cell].forward(*args, **kwargs)
    loss, dh = squared_error(h, 0, targets)
    g = impl.CELLS[cell].backward(dh, cache, xi=truncation.chunked(T, k))
    assert result.loss == pytest.approx(loss, rel=1e-12)
    for name in weight_names(cell):
        assert_close(getattr(result.grads, name), getattr(g, name), np.float64, name)


@pytest.mark.parametrize("cell", CELLS)
@impls
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("group_rows", [1, 8, 13, 10**6])
def test_run_groups_windows_as_separate_calls(cell, impl, time_major, k, group_rows,
                                              monkeypatch):
    """run() with k1 == k2 takes groups of windows through one forward and one backward call
    (about GROUP_ROWS batch rows x steps each; patched small here so that a stream of 17 steps
    makes several groups, the last one shorter): loss_grad sees exactly the calls that one
    call per window makes, and the result equals windows() summed, and the brute force."""
    monkeypatch.setattr(fastbptt.tbptt, "GROUP_ROWS", group_rows)
    args, kwargs, targets = stream_problem(cell, time_major=time_major)
    seen = {"grouped": [], "windows": []}

    def recording(key):
        def loss_grad(h, t0, y):
            seen[key].append((t0, h.shape, h.copy()))
            return squared_error(h, t0, y)
        return loss_grad

    tb = TBPTT(k, cell=cell, impl=impl)
    res = tb.run(*args, recording("grouped"), targets=targets, **kwargs)
    acc = WeightGrads(**{name: np.zeros_like(getattr(res.grads, name))
                         for name in weight_names(cell)})
    wins = list(tb.windows(*args, recording("windows"), targets=targets, grads=acc, **kwargs))
    assert [(t0, shape) for t0, shape, _ in seen["grouped"]] == \
        [(t0, shape) for t0, shape, _ in seen["windows"]]
    for (_, _, a), (_, _, b) in zip(seen["grouped"], seen["windows"]):
        assert_close(a, b, np.float64, "h seen by loss_grad")
    assert res.n_windows == len(wins) == -(-T // k) and res.n_steps == T
    assert res.loss == pytest.approx(sum(w.loss for w in wins), rel=1e-12)
    for name in weight_names(cell):
        assert_close(getattr(res.grads, name), getattr(acc, name), np.float64, name)
    loss, totals, full = brute_force(impl, cell, args, kwargs, targets, k, k)
    for name, value in totals.items():
        assert_close(getattr(res.grads, name), value, np.float64, name)
    assert_close(res.h, full.hT, np.float64, "h")
    if cell == "lstm":
        assert_close(res.c, full.cT, np.float64, "c")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_stream_forms_agree(cell, time_major):
    """An array with targets=, an iterator of (x, y) chunks of uneven lengths, and an iterator
    of x chunks with targets looked up by t0: the same blocks, so exactly the same result."""
    args, kwargs, targets = stream_problem(cell, time_major=time_major)
    x = args[0]
    axis = 0 if time_major else 1
    tb = TBPTT(3, 7, cell=cell)
    a = tb.run(*args, squared_error, targets=targets, **kwargs)

    cuts = [0, 5, 5, 6, 13, 17]   # chunks of 5, 0, 1, 7, 4 steps
    pairs = ((np.take(x, range(p, q), axis=axis), np.take(targets, range(p, q), axis=axis))
             for p, q in zip(cuts, cuts[1:]))
    b = tb.run(pairs, *args[1:], squared_error, **kwargs)

    def by_index(h, t0):
        m = h.shape[axis]
        return squared_error(h, t0, np.take(targets, range(t0, t0 + m), axis=axis))

    chunks = (np.take(x, range(p, q), axis=axis) for p, q in zip(cuts, cuts[1:]))
    c = tb.run(chunks, *args[1:], by_index, **kwargs)
    for other in (b, c):
        assert other.loss == a.loss and other.n_windows == a.n_windows == 6
        for name in weight_names(cell):
            np.testing.assert_array_equal(getattr(other.grads, name), getattr(a.grads, name))
        np.testing.assert_array_equal(other.h, a.h)


@pytest.mark.parametrize("cell", CELLS)
def test_windows(cell):
    """windows() reports each window; per-window gradients add up to run()'s; the state after
    each window is the forward state at t1; grads= accumulates into the caller's buffers."""
    args, kwargs, targets = stream_problem(cell)
    tb = TBPTT(4, 10, cell=cell)
    seen, summed = [], None
    for win in tb.windows(*args, squared_error, targets=targets, **kwargs):
        seen.append((win.t0, win.t1, win.start))
        summed = win.grads.copy() if summed is None else WeightGrads(
            **{n: a + b for (n, a), b in zip(summed.items(), win.grads)})
        _, cache = fastbptt.CELLS[cell].forward(args[0][:, :win.t1], *args[1:], **kwargs)
        assert_close(win.h, cache.hT, np.float64, "h")
        assert (win.c is None) == (cell != "lstm")
    assert seen == [(0, 4, 0), (4, 8, 0), (8, 12, 2), (12, 16, 6), (16, 17, 10)]
    total = tb.run(*args, squared_error, targets=targets, **kwargs)
    for name in weight_names(cell):
        assert_close(getattr(summed, name), getattr(total.grads, name), np.float64, name)

    mine = WeightGrads(**{n: np.full_like(getattr(total.grads, n), 1.0)
                          for n in weight_names(cell)})
    buffers = [getattr(mine, n) for n in weight_names(cell)]
    last = None
    for last in tb.windows(*args, squared_error, targets=targets, grads=mine, **kwargs):
        assert last.grads is mine
    for name, buf in zip(weight_names(cell), buffers):
        assert getattr(mine, name) is buf
        assert_close(buf, getattr(total.grads, name) + 1.0, np.float64, name)


@pytest.mark.parametrize("cell", CELLS)
def test_weight_updates_in_place_take_effect_in_the_next_window(cell):
    args, kwargs, targets = stream_problem(cell)
    Wx, Wh = args[2].copy(), args[3].copy()
    args = [args[0], args[1], Wx, Wh, args[4]]
    recorded = {}

    def loss_grad(h, t0, y):
        recorded[t0] = h.copy()
        return squared_error(h, t0, y)

    for win in TBPTT(5, cell=cell).windows(*args, loss_grad, targets=targets, **kwargs):
        if win.t0 == 0:
            h_after, c_after = win.h.copy(), None if win.c is None else win.c.copy()
            Wx -= 0.1 * win.grads.dWx     # an SGD step, in place
            Wh[...] = 0.0
    kw = dict(kwargs, c0=c_after) if cell == "lstm" else kwargs
    h, _ = fastbptt.CELLS[cell].forward(args[0][:, 5:10], h_after, Wx, Wh, args[4], **kw)
    assert_close(recorded[5], h, np.float64, "h")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k1,k2", [(10, 25), (10, 10)], ids=["context", "grouped"])
def test_memory_does_not_grow_with_the_stream(cell, k1, k2):
    """Peak traced memory over a 10x longer stream (chunks made on the fly) stays the same,
    with context blocks (k2 > k1) and with run()'s groups of windows (k1 == k2)."""
    _, kwargs, _ = stream_problem(cell)
    kwargs.pop("time_major")
    rng = np.random.default_rng(0)
    gh = fastbptt.CELLS[cell].n_gates * 16
    Wx, Wh, b = (rng.standard_normal(s) * 0.3 for s in ((8, gh), (16, gh), (gh,)))
    if cell == "lstm":
        kwargs["c0"] = np.zeros((4, 16))
    if cell == "gru":
        kwargs["bh"] = np.zeros(gh)

    def chunks(n_chunks):
        gen = np.random.default_rng(1)
        for _ in range(n_chunks):
            yield gen.standard_normal((4, 30, 8))

    def loss_grad(h, t0):
        return float(np.sum(h)), np.ones_like(h)

    tb = TBPTT(k1, k2, cell=cell)   # (10, 25): 2 blocks of context, 3 backward calls a window

    def peak(n_chunks):
        tracemalloc.start()
        try:
            res = tb.run(chunks(n_chunks), None, Wx, Wh, b, loss_grad, **kwargs)
            return tracemalloc.get_traced_memory()[1], res
        finally:
            tracemalloc.stop()

    peak(2)   # warm-up: first-call allocations of NumPy and the module
    short, res_short = peak(5)
    long, res_long = peak(50)
    assert res_long.n_steps == 1500 and res_short.n_steps == 150
    print(f"peak traced memory: {short} B over 150 steps, {long} B over 1500 steps")
    assert long < 1.3 * short, (short, long)
    # a full forward over 1500 steps would hold its cache, (T, N, H) states and gates: more
    cache_width = {"rnn": 1, "lstm": 6, "gru": 5}[cell] * 16
    assert long < 1500 * 4 * cache_width * 8


def test_bad_arguments():
    args, kwargs, targets = stream_problem("rnn")

    def ok(h, t0):
        return 0.0, None

    cases = [
        (lambda: TBPTT(0), ValueError, "k1 must be an integer >= 1, got 0"),
        (lambda: TBPTT(2.0), TypeError, "k1 must be an integer"),
        (lambda: TBPTT(5, 3), ValueError, "k2 must be >= k1"),
        (lambda: TBPTT(5, True), TypeError, "k2 must be an integer"),
        (lambda: TBPTT(5, cell="elman"), ValueError, "cell must be one of"),
        (lambda: TBPTT(5, cell="lstm", impl=np), ValueError,
         "with a CELLS registry; numpy has none"),
        (lambda: TBPTT(5, cell="lstm", module=np), ValueError,
         "with a CELLS registry; numpy has none"),
        (lambda: TBPTT(5, impl=fastbptt, module=ref), TypeError, "pass the implementation once"),
        (lambda: TBPTT(3).run(*args, "loss", **kwargs), TypeError, "loss_grad must be a callable"),
        (lambda: TBPTT(3).run(args[0][0], *args[1:], ok), ValueError, "x must be a 3-D array"),
        (lambda: TBPTT(3).run(args[0][:, :0], *args[1:], ok), ValueError, "at least one time"),
        (lambda: TBPTT(3).run(iter([]), *args[1:], ok), ValueError, "no time steps"),
        (lambda: TBPTT(3).run(42, *args[1:], ok), TypeError, "x must be an array or an iterable"),
        (lambda: TBPTT(3).run(*args, ok, targets=targets[:, :5]), ValueError,
         "targets must have the first two axes of x"),
        (lambda: TBPTT(3).run(iter([args[0]]), *args[1:], ok, targets=targets), TypeError,
         "targets= goes with an array x"),
        (lambda: TBPTT(3).run(iter([args[0], args[0][:1]]), *args[1:], ok), ValueError,
         "chunk 1: x has shape (1, 17, 3), but the stream's batch and feature sizes"),
        (lambda: TBPTT(3).run(iter([(args[0], targets), args[0]]), *args[1:],
                              lambda h, t0, y: (0.0, None)), TypeError, "chunk 1: every chunk"),
        (lambda: TBPTT(3).run(iter([(args[0], targets[:, :3])]), *args[1:], ok), ValueError,
         "chunk 0: y must have the first two axes of x"),
        (lambda: TBPTT(3).run(*args, lambda h, t0: None), TypeError,
         "loss_grad must return a pair (loss, dh)"),
        (lambda: TBPTT(3).run(*args, lambda h, t0: ("x", None)), TypeError, "loss a number"),
        (lambda: TBPTT(3).run(*args, lambda h, t0: (0.0, h[:, :1])), ValueError,
         "dh (returned by loss_grad) must have shape (N, m, H) = (2, 3, 4), got (2, 1, 4)"),
        (lambda: TBPTT(3).run(*args, lambda h, t0: (0.0, h[:, :1, :1])), ValueError,
         "dh (returned by loss_grad) must have shape"),    # would broadcast: refused
        (lambda: TBPTT(3).run(*args, lambda h, t0: (0.0, h.astype(np.float32))), TypeError,
         "dh (returned by loss_grad) has dtype float32"),
        (lambda: TBPTT(3, 5).run(*args, lambda h, t0: (0.0, h[:, :1])), ValueError,
         "dh must have shape"),
        (lambda: TBPTT(3, 5).run(*args, lambda h, t0: (0.0, h.astype(np.float32))), TypeError,
         "dh has dtype float32"),
        (lambda: TBPTT(3).run(*args, ok, c0=args[1]), TypeError, "keyword argument 'c0'"),
        (lambda: TBPTT(3).run(*args, ok, time_major="no"), TypeError, "time_major must be"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc) as info:
            call()
        assert message in str(info.value), (message, str(info.value))


def test_repr_and_default_module():
    tb = TBPTT(3, 6, cell="rnn")
    assert tb.module is fastbptt and tb.k1 == 3 and tb.k2 == 6
    assert tb.impl is fastbptt
    assert TBPTT(3, module=ref).impl is ref     # module= is impl='s old name
    assert TBPTT(3, impl=ref, module=ref).impl is ref
    assert repr(tb) == "TBPTT(k1=3, k2=6, cell='rnn', impl=fastbptt)"
    assert TBPTT(4).k2 == 4
