"""Caches with a schema: every cell's cache declares its fields, the fields are read-only, and a
cache that went through pickle (as multiprocessing sends it) works in either backward as the
original does. For both implementations, every cell, both dtypes and both layouts."""
import pickle

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, IMPLS, assert_close, make_problem

import fastbptt

CELLS = HIDDEN_CELLS
impls = pytest.mark.parametrize("impl", list(IMPLS.values()), ids=list(IMPLS))
cells = pytest.mark.parametrize("cell", CELLS)
layouts = pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
SHAPES = [(3, 5, 4, 3), (1, 5, 4, 3), (3, 1, 4, 3)]   # (N, T, D, H): N = 1 and T = 1 too
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
PROTOCOLS = sorted({pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL})


def make_cache(impl, cell, dtype, time_major, shape=(3, 5, 4, 3)):
    """(args, kwargs, dh, cache) of one forward of ``impl``'s ``cell``."""
    args, kwargs, dh = make_problem(cell, *shape, dtype=dtype, time_major=time_major)
    _, cache = impl.CELLS[cell].forward(*args, **kwargs)
    return args, kwargs, dh, cache


def gradients(impl, cell, dh, cache, **kwargs):
    """{name: array} of every gradient backward returns: the five and the cell's extra ones."""
    grads = impl.CELLS[cell].backward(dh, cache, **kwargs)
    names = grads._fields + fastbptt.CELLS[cell].extra_grads
    return {name: getattr(grads, name) for name in names}


def final_states(cell, cache):
    """{'hT': ..., 'cT': ...}: the final value of each of the cell's states."""
    return {s + "T": getattr(cache, s + "T") for s in fastbptt.CELLS[cell].states}


# -- the schema --------------------------------------------------------------------------------

@impls
@cells
@layouts
def test_fields_follow_the_cell_record(impl, cell, time_major, dtype):
    """A cell's cache is its record's cache type; its fields are the input x, each state (the
    per-step values and the initial one), each weight and option, and per-step gate values;
    each per-step field is indexed by step: (T, N, ...)."""
    record = impl.CELLS[cell]
    n_batch, n_steps, _, n_hidden = 3, 5, 4, 3
    _, _, _, cache = make_cache(impl, cell, dtype, time_major)
    assert type(cache) is record.cache_type and cache.cell == cell
    assert len(set(cache.fields)) == len(cache.fields)
    declared = ({"x"} | set(record.states) | {s + "0" for s in record.states}
                | set(record.weights) | set(record.options))
    assert declared <= set(cache.fields), declared - set(cache.fields)
    assert set(cache.fields) - declared <= set(cache.by_step)      # the gate values
    for name in cache.by_step:
        assert name in cache.fields
        assert getattr(cache, name).shape[:2] == (n_steps, n_batch), name
    for name, value in final_states(cell, cache).items():
        assert value.shape == (n_batch, n_hidden), name
    with pytest.raises(AttributeError):        # no undeclared attribute can be added
        cache.extra = np.zeros(3)
    backward = impl.CELLS[cell].backward
    backward(None, cache)                       # workspaces made, under declared names
    held = set(vars(cache))
    assert held <= (set(cache.fields) | {"time_major", "consumed", "dtype", "_readers",
                                         "_consumed_by", "_fills", "_held"}
                    | {"_" + name for name in cache.workspaces}), held


@impls
@cells
@layouts
def test_fields_are_read_only(impl, cell, time_major, dtype):
    """No field can be replaced or deleted, with an array of the same shape or of another
    (a smaller h0 or another Wh would be read out of bounds by a kernel), nor can anything
    else be set on a cache; the cache is left as it was and backward's answer is unchanged."""
    args, kwargs, dh, cache = make_cache(impl, cell, dtype, time_major)
    expected = gradients(impl, cell, dh, cache)
    before = {name: getattr(cache, name) for name in cache.fields}
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            replacements = [value.copy(), value[:1], np.zeros((1,) * value.ndim, dtype)]
        else:
            replacements = [value, "relu", None, np.zeros(3, dtype)]
        for new in replacements:
            with pytest.raises(AttributeError, match="read-only"):
                setattr(cache, name, new)
        with pytest.raises(AttributeError):
            delattr(cache, name)
        assert getattr(cache, name) is value, name
    # the ones the issue names, written as a user would
    with pytest.raises(AttributeError, match="read-only"):
        cache.Wh = np.zeros((7, 7), dtype)
    with pytest.raises(AttributeError, match="read-only"):
        cache.h0 = cache.h0[:1].copy()
    with pytest.raises(AttributeError):
        del cache.x
    # nor the cache's state, its final states, or an attribute it does not declare
    for name in ("consumed", "time_major", "hT", "cT", "cell", "fields", "workspace",
                 "_packed", "gates_extra"):
        with pytest.raises(AttributeError):
            setattr(cache, name, True)
    assert not cache.consumed and cache.time_major is time_major
    got = gradients(impl, cell, dh, cache)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# -- pickle ------------------------------------------------------------------------------------

@impls
@cells
@layouts
@shapes
def test_a_pickled_cache_gives_the_same_gradients(impl, cell, time_major, shape, dtype):
    """A cache through pickle.dumps/loads holds the same values in the same layout, keeps its
    final states, and gives the original's gradients in either implementation's backward (with
    dhT, dcT and xi too); overwrite_cache=True on the copy consumes the copy only."""
    args, kwargs, dh, cache = make_cache(impl, cell, dtype, time_major, shape)
    n_batch, n_steps, _, n_hidden = shape
    rng = np.random.default_rng(7)
    extra = {f"d{s}T": rng.standard_normal((n_batch, n_hidden)).astype(dtype)
             for s in fastbptt.CELLS[cell].states}
    extra["xi"] = np.where(np.arange(n_steps) % 3 == 1, 0.0, 1.0)
    expected = {other: (gradients(other, cell, dh, cache),
                        gradients(other, cell, dh, cache, **extra)) for other in IMPLS.values()}
    for protocol in PROTOCOLS:
        loaded = pickle.loads(pickle.dumps(cache, protocol=protocol))
        assert type(loaded) is type(cache) and loaded is not cache
        assert loaded.time_major is time_major and not loaded.consumed
        for name in cache.fields:
            value, back = getattr(cache, name), getattr(loaded, name)
            if isinstance(value, np.ndarray):
                assert back.shape == value.shape and back.dtype == value.dtype, name
                assert not np.shares_memory(back, value), name
                np.testing.assert_array_equal(back, value, err_msg=name)
            else:
                assert back == value, name
        for name, value in final_states(cell, cache).items():      # hT (and cT) stay right
            back = getattr(loaded, name)
            np.testing.assert_array_equal(back, value, err_msg=name)
            assert not back.flags.writeable, name
        for other, (plain, with_extra) in expected.items():
            for kw, want in (({}, plain), (extra, with_extra)):
                got = gradients(other, cell, dh, loaded, **kw)
                for name, value in want.items():
                    assert_close(got[name], value, dtype, name)
        with pytest.raises(AttributeError, match="read-only"):
            loaded.Wh = np.zeros((1, 1), dtype)
        got = gradients(impl, cell, dh, loaded, overwrite_cache=True)
        for name, value in expected[impl][0].items():
            assert_close(got[name], value, dtype, name)
        assert loaded.consumed and not cache.consumed


@impls
@cells
@layouts
@shapes
def test_a_pickled_cache_can_be_refilled(impl, cell, time_major, shape, dtype):
    """forward(..., out=loaded) refills a cache that came through pickle, as it does the
    original, and backward on it equals backward on a fresh forward."""
    args, kwargs, dh, cache = make_cache(impl, cell, dtype, time_major, shape)
    loaded = pickle.loads(pickle.dumps(cache))
    more, _, dh2 = make_problem(cell, *shape, dtype=dtype, time_major=time_major, seed=1)
    record = impl.CELLS[cell]
    h_fresh, fresh = record.forward(more[0], *args[1:], **kwargs)
    h_again, again = record.forward(more[0], *args[1:], out=loaded, **kwargs)
    assert again is loaded
    np.testing.assert_array_equal(h_again, h_fresh)
    want = gradients(impl, cell, dh2, fresh)
    got = gradients(impl, cell, dh2, loaded)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@impls
@cells
@layouts
def test_a_consumed_cache_stays_consumed_after_pickle(impl, cell, time_major, dtype):
    args, kwargs, dh, cache = make_cache(impl, cell, dtype, time_major)
    impl.CELLS[cell].backward(dh, cache, overwrite_cache=True)
    assert cache.consumed
    loaded = pickle.loads(pickle.dumps(cache))
    assert loaded.consumed and "consumed" in repr(loaded)
    for other in IMPLS.values():
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="consumed by a backward with overwrite_cache"):
                other.CELLS[cell].backward(dh, loaded, overwrite_cache=overwrite)
