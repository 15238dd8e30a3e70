"""Buffer reuse over the chunks of a stream: ``forward(..., out=cache)`` refills an earlier
cache's arrays, ``backward(..., out=grads)`` an earlier result's, so that a loop over chunks
allocates nothing after its first chunk."""
import tracemalloc

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, assert_close, make_problem

import fastbptt

CELLS = HIDDEN_CELLS
impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
layouts = pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
N, T, D, H = 3, 6, 4, 5


def names(cell):
    return ("dx", "dh0", "dWx", "dWh", "db") + fastbptt.CELLS[cell].extra_grads


def state_kwargs(cell, cache):
    return {"c0": cache.cT} if cell == "lstm" else {}


def chunks(cell, time_major, dtype, n_chunks, n_steps=T, seed=0):
    """(args, kwargs, dh) of consecutive chunks of one stream: same weights, new x and dh."""
    args, kwargs, _ = make_problem(cell, N, n_steps, D, H, dtype=dtype, time_major=time_major,
                                   seed=seed)
    out = []
    for i in range(n_chunks):
        more, _, dh = make_problem(cell, N, n_steps, D, H, dtype=dtype, time_major=time_major,
                                   seed=seed + 1 + i)
        out.append((more[0], dh))
    return args, kwargs, out


@pytest.mark.parametrize("cell", CELLS)
@impl
@layouts
def test_forward_out_refills_the_cache(cell, module, time_major, dtype):
    """forward(out=cache) returns that cache, its arrays refilled, equal to a fresh forward;
    the state passed in may be the cache's own final state (a view of what gets overwritten)."""
    forward = module.CELLS[cell].forward
    (x, h0, Wx, Wh, b), kwargs, data = chunks(cell, time_major, dtype, 2)
    h1, cache = forward(data[0][0], h0, Wx, Wh, b, **kwargs)
    kw = dict(kwargs, **state_kwargs(cell, cache))
    fresh_h, fresh = forward(data[1][0], cache.hT.copy(), Wx, Wh, b,
                             **{k: (v.copy() if isinstance(v, np.ndarray) else v)
                                for k, v in kw.items()})
    h2, again = forward(data[1][0], cache.hT, Wx, Wh, b, out=cache, **kw)
    assert again is cache
    assert np.shares_memory(h2, h1)          # no new hidden states: the old ones, refilled
    assert_close(h2, fresh_h, dtype, "h")
    for name in ("h", "h0") + (("c", "c0", "gates") if cell == "lstm" else ()):
        assert_close(getattr(again, name), getattr(fresh, name), dtype, name)


@pytest.mark.parametrize("cell", CELLS)
@impl
def test_forward_keeps_its_own_initial_state(cell, module):
    """Changing the caller's h0 (c0) in place after forward, as a stream loop does, does not
    change what backward computes."""
    forward = module.CELLS[cell].forward
    backward = module.CELLS[cell].backward
    args, kwargs, dh = make_problem(cell, N, T, D, H)
    _, cache = forward(*args, **kwargs)
    expected = backward(dh, cache)
    args[1][...] = 7.0
    if cell == "lstm":
        kwargs["c0"][...] = 7.0
    got = backward(dh, cache)
    for name in names(cell):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


@pytest.mark.parametrize("cell", CELLS)
@impl
@layouts
@pytest.mark.parametrize("accumulate", [False, True], ids=["own", "grads"])
def test_backward_out_writes_into_the_earlier_result(cell, module, time_major, accumulate,
                                                     dtype):
    """backward(out=g) writes dx and dh0 (dc0) into g's arrays, and the weight gradients too
    unless grads= is given, where they are added into grads as always."""
    forward = module.CELLS[cell].forward
    backward = module.CELLS[cell].backward
    args, kwargs, dh = make_problem(cell, N, T, D, H, dtype=dtype, time_major=time_major)
    _, cache = forward(*args, **kwargs)
    first = backward(dh, cache)
    keep = {name: getattr(first, name).copy() for name in names(cell)}
    dhT = np.full((N, H), 0.25, dtype)
    expected = backward(dh[::-1].copy(), cache, dhT=dhT)
    acc = None
    if accumulate:
        extra_weight_grads = fastbptt.CELLS[cell].weight_grads[3:]      # the GRU's dbh
        acc = type(first)(*(getattr(first, n).copy() * 0 for n in names(cell)[:5]),
                          **{n: getattr(first, n) * 0 for n in extra_weight_grads})
    got = backward(dh[::-1].copy(), cache, dhT=dhT, out=first, grads=acc)
    for name in names(cell):
        value = getattr(got, name)
        weight = name not in ("dx", "dh0", "dc0")
        owner = acc if (accumulate and weight) else first
        assert np.shares_memory(value, getattr(owner, name)), name   # written in place
        assert_close(value, getattr(expected, name), dtype, name)
    if accumulate:   # the earlier result's weight gradients are left as they were
        for name in ("dWx", "dWh", "db"):
            np.testing.assert_array_equal(getattr(first, name), keep[name])


@pytest.mark.parametrize("cell", CELLS)
@layouts
@pytest.mark.parametrize("overwrite", [False, True], ids=["keep", "overwrite"])
def test_a_loop_over_chunks_allocates_nothing_after_the_first(cell, time_major, overwrite):
    """The kernels over 8 chunks of a stream with out= and grads=: after the first chunk, the
    traced memory never grows by as much as the smallest array of a chunk (an (N, H) state,
    8 KiB; Python's own objects of a call take about 4 KiB), and the results equal the same
    loop without reuse."""
    forward = fastbptt.CELLS[cell].forward
    backward = fastbptt.CELLS[cell].backward
    n_batch, n_steps, n_input, n_hidden = 16, 50, 8, 64
    args, kwargs, _ = make_problem(cell, n_batch, n_steps, n_input, n_hidden,
                                   time_major=time_major)
    x, h0, Wx, Wh, b = args
    data = [make_problem(cell, n_batch, n_steps, n_input, n_hidden, time_major=time_major,
                         seed=1 + i)[0::2] for i in range(8)]
    data = [(more[0], dh) for more, dh in data]

    def loop(reuse, trace):
        cache = g = None
        acc = None
        h, kw = h0, dict(kwargs)
        growth = []
        for i, (xc, dh) in enumerate(data):
            if trace and i == 1:
                tracemalloc.start()
            if trace and i >= 1:
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
            _, cache = forward(xc, h, Wx, Wh, b, out=cache if reuse else None, **kw)
            g = backward(dh, cache, grads=acc, out=g if reuse else None,
                         overwrite_cache=overwrite)
            if acc is None:   # the first chunk's weight gradients become the accumulator
                acc = type(g)(*(a.copy() for a in g), **g.__dict__)
            h, kw = cache.hT, dict(kw, **state_kwargs(cell, cache))
            if trace and i >= 1:
                growth.append(tracemalloc.get_traced_memory()[1] - before)
        if trace:
            tracemalloc.stop()
        return acc, growth

    reused, growth = loop(True, True)
    plain, _ = loop(False, False)
    smallest = n_batch * n_hidden * 8
    assert max(growth) < smallest, growth
    for name in ("dWx", "dWh", "db"):
        assert_close(getattr(reused, name), getattr(plain, name), np.float64, name)


@pytest.mark.parametrize("cell", CELLS)
@impl
def test_bad_out(cell, module):
    forward = module.CELLS[cell].forward
    backward = module.CELLS[cell].backward
    args, kwargs, dh = make_problem(cell, N, T, D, H)
    _, cache = forward(*args, **kwargs)
    g = backward(dh, cache)
    other_cell = "gru" if cell == "rnn" else "rnn"
    o_args, o_kwargs, _ = make_problem(other_cell, N, T, D, H)
    _, other = module.CELLS[other_cell].forward(*o_args, **o_kwargs)
    s_args, s_kwargs, s_dh = make_problem(cell, N, T + 1, D, H)
    _, longer = forward(*s_args, **s_kwargs)
    f_args, f_kwargs, _ = make_problem(cell, N, T, D, H, dtype=np.float32)
    _, single = forward(*f_args, **f_kwargs)
    t_args, t_kwargs, _ = make_problem(cell, N, T, D, H, time_major=True)
    _, time_major = forward(*t_args, **t_kwargs)
    cases = [
        (lambda: forward(*args, out="cache", **kwargs), TypeError,
         f"out must be a cache returned by {cell}_forward"),
        (lambda: forward(*args, out=other, **kwargs), ValueError,
         f"out is a cache of {other_cell}_forward"),
        (lambda: forward(*args, out=longer, **kwargs), ValueError, "out has T, N"),
        (lambda: forward(*args, out=single, **kwargs), ValueError, "out holds float32"),
        (lambda: forward(*args, out=time_major, **kwargs), ValueError, "time-major"),
        (lambda: backward(dh, cache, out=(1, 2)), TypeError,
         f"out must be the result of an earlier {cell}_backward"),
        (lambda: backward(dh, cache, out=backward(s_dh, longer)), ValueError, "out.dx must"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc) as info:
            call()
        assert message in str(info.value), (message, str(info.value))
    # a failed call leaves the cache and the result as they were
    np.testing.assert_array_equal(backward(dh, cache).dWh, g.dWh)
