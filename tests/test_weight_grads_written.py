"""Without ``grads=`` a backward's kernels write the weight gradients (beta = 0 on the first
product or sum into each array) into arrays that are new and uninitialised, or an earlier
result's (``out=``), which are not set to zero first: every element must be written on every
path. Here out='s arrays are filled with NaN first, so that an element left unwritten shows: the
results must equal those of a backward into new arrays to the bit, and the reference's to
rounding. With ``grads=`` the kernels still add into the caller's arrays."""
import numpy as np
import pytest
from conftest import HIDDEN_CELLS, assert_close, make_problem

import fastbptt
import fastbptt._blas_threads
import fastbptt._threads
import fastbptt.reference as ref
import fastbptt.rnn
from fastbptt._kernels import variants

BATCHES = [0, 1, 2, 5]
STEPS = [1, 4]
START = 0.25        # what grads= holds before a backward adds into it


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads{n}")
def threads(request, monkeypatch):
    """Every call on this many threads, however small: 3 threads split the RNN's 2 columns,
    one part empty."""
    if request.param > 1:
        monkeypatch.setattr(fastbptt._threads, "THREADED_WORK", 0)
        monkeypatch.setattr(fastbptt._blas_threads, "SINGLE_THREADED_WORK", 0)
    with fastbptt.num_threads(request.param):
        yield request.param


def length_cases(n_batch, n_steps):
    """The forward's keywords: no lengths; every sequence reversed (the kernels run them as
    whole sequences); lengths with a zero among them (N > 1); every length zero."""
    cases = [{}, {"reverse": True}]
    if n_batch > 1:
        cases.append({"lengths": np.array([n_steps, 0, min(2, n_steps), 1, n_steps][:n_batch])})
    if n_batch:
        cases.append({"lengths": np.zeros(n_batch, int)})
    return cases


def nan_filled(result, names):
    """``result`` with the arrays ``names`` filled with NaN."""
    for name in names:
        getattr(result, name).fill(np.nan)
    return result


def assert_written(got, target, expected, want, names, dtype):
    """The result ``got`` of a backward into ``target`` (out=, its arrays NaN before): each of
    ``names`` is target's own array, every element written, the same bits as a backward into
    new arrays (``expected``) and the reference's result ``want`` to rounding."""
    for name in names:
        value = getattr(got, name)
        assert value is getattr(target, name), name
        assert np.isfinite(value).all(), name
        assert value.tobytes() == expected[name].tobytes(), name
        assert_close(value, getattr(want, name), dtype, name)


def check_written(record, refrecord, args, kwargs, dh, backward_kwargs, dtype):
    """A backward into out= (its arrays NaN) equals one into new arrays to the bit and the
    reference's to rounding; one with grads= adds into them."""
    carried = tuple(name for name in record.extra_grads if name not in record.weight_grads)
    names = ("dx", "dh0") + carried + record.weight_grads      # dc0: the LSTM's
    n_steps = dh.shape[0 if kwargs["time_major"] else 1]
    norms = {"h_grad_norms": np.full(n_steps, np.nan, dtype)}

    def backward(module_record, **more):
        _, cache = module_record.forward(*args, **kwargs)
        return module_record.backward(dh, cache, **backward_kwargs, **more)

    fresh = backward(record, **norms)
    fresh_norms = norms["h_grad_norms"].copy()
    expected = {name: getattr(fresh, name).copy() for name in names}
    norms["h_grad_norms"].fill(np.nan)
    target = nan_filled(backward(record), names)
    got = backward(record, out=target, **norms)
    want = backward(refrecord)
    assert_written(got, target, expected, want, names, dtype)
    assert norms["h_grad_norms"].tobytes() == fresh_norms.tobytes()
    start = {name: np.full_like(expected[name], START) for name in record.weight_grads}
    added = backward(record, grads=start)
    for name in record.weight_grads:
        assert getattr(added, name) is start[name], name
        assert_close(start[name], expected[name] + START, dtype, name)


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@pytest.mark.parametrize("overwrite_cache", [False, True], ids=["keep", "overwrite"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_backward_writes_every_weight_gradient(cell, overwrite_cache, time_major, dtype, threads,
                                               monkeypatch):
    """Every cell (the RNN's lean backward with overwrite_cache, in blocks of 1 to 4 steps),
    N in 0, 1, 2, 5, T in 1, 4, xi with zeros, with and without lengths (a zero one, all
    zero) or reversed, on 1 to 3 threads."""
    record, refrecord = fastbptt.CELLS[cell], ref.CELLS[cell]
    lean_rows = [64, 2] if cell == "rnn" and overwrite_cache else [64]
    for n_batch in BATCHES:
        for n_steps in STEPS:
            args, kwargs, dh = make_problem(cell, n_batch, n_steps, 3, 2, dtype=dtype,
                                            time_major=time_major, seed=n_batch + n_steps)
            xi = np.resize([0.0, 1.0, 2.5, 0.0], n_steps)
            for by_length in length_cases(n_batch, n_steps):
                for rows in lean_rows:
                    monkeypatch.setattr(fastbptt.rnn, "LEAN_ROWS", rows)
                    check_written(record, refrecord, args, dict(kwargs, **by_length), dh,
                                  {"xi": xi, "overwrite_cache": overwrite_cache}, dtype)


def jordan_problem(n_batch, n_steps, time_major, dtype):
    """Random (x, y0, Wx, Wy, b, Wo, bo) and dy for Jordan's network, D = 3, H = 4, O = 2."""
    rng = np.random.default_rng(n_batch + n_steps)
    n_input, n_hidden, n_output = 3, 4, 2
    x = rng.standard_normal((n_steps, n_batch, n_input) if time_major
                            else (n_batch, n_steps, n_input)).astype(dtype)
    args = [x] + [(rng.standard_normal(shape) * 0.5).astype(dtype) for shape in
                  ((n_batch, n_output), (n_input, n_hidden), (n_output, n_hidden),
                   (n_hidden,), (n_hidden, n_output), (n_output,))]
    return args, rng.standard_normal(x.shape[:2] + (n_output,)).astype(dtype)


def jordan_backward(module, args, dy, time_major, **options):
    """Jordan's forward on ``args``, then its backward with dy and ``options``."""
    _, cache = module.jordan_forward(*args, time_major=time_major)
    return module.jordan_backward(dy, cache, **options)


@pytest.mark.parametrize("overwrite_cache", [False, True], ids=["keep", "overwrite"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_jordan_backward_writes_every_weight_gradient(overwrite_cache, time_major, dtype):
    """Jordan's network: N in 0, 1, 2, 5, T in 1, 4, xi with zeros."""
    weight_grads = fastbptt.CELLS["jordan"].weight_grads
    names = ("dx", "dy0") + weight_grads
    for n_batch in BATCHES:
        for n_steps in STEPS:
            args, dy = jordan_problem(n_batch, n_steps, time_major, dtype)
            options = {"xi": np.resize([0.0, 1.0, 2.5, 0.0], n_steps),
                       "overwrite_cache": overwrite_cache}
            fresh = jordan_backward(fastbptt, args, dy, time_major, **options)
            expected = {name: getattr(fresh, name).copy() for name in names}
            target = nan_filled(jordan_backward(fastbptt, args, dy, time_major, **options),
                                names)
            got = jordan_backward(fastbptt, args, dy, time_major, out=target, **options)
            want = jordan_backward(ref, args, dy, time_major, **options)
            assert_written(got, target, expected, want, names, dtype)
            start = {name: np.full_like(expected[name], START) for name in weight_grads}
            jordan_backward(fastbptt, args, dy, time_major, grads=start, **options)
            for name in weight_grads:
                assert_close(start[name], expected[name] + START, dtype, name)


@pytest.mark.parametrize("hooks", variants("_blas_hooks"),
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("rows", [1, 2, 3, 7])
def test_a_sum_in_blocks_writes_with_its_first_block(hooks, rows):
    """beta = 0: the first block of a sum over rows writes C (its NaN gone), the others add;
    beta = 1 adds into C as before."""
    rng = np.random.default_rng(rows)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((7, 4))
    c = np.full((3, 4), np.nan)
    hooks.sum_hook(rows, 0.5, a, b, c, 0)
    np.testing.assert_allclose(c, 0.5 * a.T @ b, rtol=1e-12)
    hooks.sum_hook(rows, 0.5, a, b, c)
    np.testing.assert_allclose(c, a.T @ b, rtol=1e-12)
