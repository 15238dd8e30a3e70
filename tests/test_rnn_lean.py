"""The RNN's lean backward (``overwrite_cache=True``): a (B, N, H) workspace of B steps instead
of (T, N, H), the weight gradients and dx added block by block. Checked against the reference
for every option, at T around the block size, and for the memory it holds."""
import tracemalloc

import numpy as np
import pytest
from conftest import assert_close, make_problem

import fastbptt
import fastbptt.reference as ref
import fastbptt.rnn
from fastbptt import truncation

BLOCK = 4   # steps per block in these tests (LEAN_ROWS patched to BLOCK * N)


@pytest.fixture
def block_of_four(monkeypatch):
    def steps(n_steps, n_batch, time_major):
        return max(1, min(n_steps, BLOCK)) if (time_major or n_batch == 1) else 1
    monkeypatch.setattr(fastbptt.rnn, "lean_block_steps", steps)


def xi_for(kind, n_steps, dtype):
    if kind == "full":
        return None
    if kind == "chunked":
        return truncation.chunked(n_steps, 3, dtype=dtype)
    return truncation.randomized(n_steps, 0.6, rng=7, dtype=dtype)


def both(cell_kwargs, args, dh, dtype, n_batch, n_hidden, n_steps, xi_kind, with_grads, seed=1):
    """(lean result, reference result, lean norms, reference norms) on the same inputs."""
    rng = np.random.default_rng(seed)
    dhT = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    xi = xi_for(xi_kind, n_steps, dtype)
    results, norms = [], []
    for module, extra in ((fastbptt, {"overwrite_cache": True}), (ref, {})):
        _, cache = module.rnn_forward(*args, **cell_kwargs)
        kw = {"dhT": dhT.copy(), "xi": xi, "h_grad_norms": np.zeros(n_steps, dtype), **extra}
        if with_grads:
            kw["grads"] = fastbptt.Grads(None, None, np.ones_like(args[2]),
                                         np.ones_like(args[3]), np.ones_like(args[4]))
        results.append(module.rnn_backward(dh, cache, **kw))
        norms.append(kw["h_grad_norms"])
    return results[0], results[1], norms[0], norms[1]


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("n_batch", [1, 3])
@pytest.mark.parametrize("n_steps", [1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 2])
@pytest.mark.parametrize("xi_kind", ["full", "chunked", "randomized"])
@pytest.mark.parametrize("with_grads", [False, True], ids=["new", "grads"])
def test_lean_equals_reference(block_of_four, time_major, nonlinearity, n_batch, n_steps,
                               xi_kind, with_grads, dtype):
    args, kwargs, dh = make_problem("rnn", n_batch, n_steps, 3, 5, dtype=dtype,
                                    time_major=time_major)
    kwargs["nonlinearity"] = nonlinearity
    got, expected, got_norms, expected_norms = both(kwargs, args, dh, dtype, n_batch, 5,
                                                    n_steps, xi_kind, with_grads)
    for name in expected._fields:
        assert_close(getattr(got, name), getattr(expected, name), dtype, name)
    assert_close(got_norms, expected_norms, dtype, "h_grad_norms")


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("n_batch", [1, 3])
def test_lean_with_the_chosen_block(time_major, n_batch, dtype):
    """The block size the package picks, over several blocks (T = 300 > 128 // N)."""
    n_steps = 300
    args, kwargs, dh = make_problem("rnn", n_batch, n_steps, 4, 6, dtype=dtype,
                                    time_major=time_major)
    assert fastbptt.rnn.lean_block_steps(n_steps, n_batch, time_major) < n_steps
    got, expected, got_norms, expected_norms = both(kwargs, args, dh, dtype, n_batch, 6,
                                                    n_steps, "randomized", False)
    for name in expected._fields:
        assert_close(getattr(got, name), getattr(expected, name), dtype, name)
    assert_close(got_norms, expected_norms, dtype, "h_grad_norms")


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("n_batch", [1, 3])
def test_lean_with_out_allocates_nothing_after_the_first_chunk(block_of_four, time_major,
                                                               n_batch, dtype):
    """forward(out=) and backward(out=, overwrite_cache=True) over chunks: the same gradients
    as the reference, and no new array after the first chunk (the lean workspace is kept:
    one block of it is 4 * 3 * 256 * itemsize bytes, far above the call's small objects)."""
    n_steps, n_hidden = 2 * BLOCK + 1, 256
    args, kwargs, dh = make_problem("rnn", n_batch, n_steps, 3, n_hidden, dtype=dtype,
                                    time_major=time_major)
    h, cache = fastbptt.rnn_forward(*args, **kwargs)
    res = fastbptt.rnn_backward(dh, cache, overwrite_cache=True)
    work = cache._dA_lean
    for seed in (1, 2):
        args[0] = args[0] + seed            # a new chunk of input
        fastbptt.rnn_forward(*args, **kwargs, out=cache)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            res = fastbptt.rnn_backward(dh, cache, overwrite_cache=True, out=res)
            grown = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert cache._dA_lean is work
        assert grown < 4096, grown
        _, ref_cache = ref.rnn_forward(*args, **kwargs)
        expected = ref.rnn_backward(dh, ref_cache)
        for name in expected._fields:
            assert_close(getattr(res, name), getattr(expected, name), dtype, name)


def backward_peak(args, kwargs, dh, overwrite):
    """Bytes allocated at the peak of one RNN backward (forward done beforehand), less its
    results."""
    _, cache = fastbptt.rnn_forward(*args, **kwargs)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        grads = fastbptt.rnn_backward(dh, cache, overwrite_cache=overwrite)
        return tracemalloc.get_traced_memory()[1] - base - sum(g.nbytes for g in grads)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("n_batch", [1, 4])
def test_lean_holds_a_block_not_all_steps(time_major, n_batch, dtype):
    """With overwrite_cache=True the RNN's backward holds about its (B, N, H) workspace (plus
    the small arrays of the call), not the (T, N, H) of the default."""
    n_steps, n_input, n_hidden = 600, 3, 64
    args, kwargs, dh = make_problem("rnn", n_batch, n_steps, n_input, n_hidden, dtype=dtype,
                                    time_major=time_major)
    for overwrite in (False, True):                  # first-call allocations out of the way
        backward_peak(args, kwargs, dh, overwrite)
    kept = backward_peak(args, kwargs, dh, False)
    used = backward_peak(args, kwargs, dh, True)
    itemsize = np.dtype(dtype).itemsize
    all_steps = n_steps * n_batch * n_hidden * itemsize
    block = fastbptt.rnn.lean_block_steps(n_steps, n_batch, time_major)
    lean = block * n_batch * n_hidden * itemsize
    # the two differ by their workspaces alone (to within Python's own small objects, a few
    # KiB that vary with what ran before), and the lean one holds a fraction of all steps
    assert abs((kept - used) - (all_steps - lean)) < 8192, (kept, used, all_steps, lean)
    assert used < all_steps / 4, (used, all_steps)
