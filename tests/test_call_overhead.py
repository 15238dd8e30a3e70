"""What makes a call cheap changes no result and no check: ``check_finite=``, the compiled fast
path of the input checks (``forward_ready``, ``backward_ready`` of ``src/_checks.pyx``), weight
gradients accumulated into ``grads=``, and the TBPTT driver's grouped run."""
import numpy as np
import pytest
from conftest import IMPLS, assert_close, make_problem, relayout

import fastbptt
from fastbptt import TBPTT
from fastbptt._kernels import variants

CELLS = [name for name in ("rnn", "lstm", "gru") if name in fastbptt.CELLS]   # x, h0, Wx, Wh, b
impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
cell_param = pytest.mark.parametrize("cell", CELLS)
builds = pytest.mark.parametrize("checks", variants("_checks"),
                                 ids=lambda m: m.__name__.rsplit(".", 1)[-1])


def run(module, cell, args, kwargs, dh, **options):
    """Forward, then backward with ``dh``, both with ``options``: (h, Grads)."""
    record = module.CELLS[cell]
    h, cache = record.forward(*args, **kwargs, **options)
    return np.array(h), record.backward(dh, cache, **options)


def results(h, grads, cell):
    """h and every gradient of a backward's result, by name."""
    names = ("dx", "dh0", "dWx", "dWh", "db") + fastbptt.CELLS[cell].extra_grads
    return {"h": h, **{name: getattr(grads, name) for name in names}}


def raised(fn, *args, **kwargs):
    """(type, message) of what ``fn`` raised, or None."""
    try:
        fn(*args, **kwargs)
    except (TypeError, ValueError) as err:
        return type(err), str(err)
    return None


@impl
@cell_param
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_finite_false_gives_the_same_results(module, cell, dtype):
    """On finite data, skipping the scan changes nothing, to the bit."""
    args, kwargs, dh = make_problem(cell, 2, 4, 3, 5, dtype)
    checked = results(*run(module, cell, args, kwargs, dh), cell)
    unchecked = results(*run(module, cell, args, kwargs, dh, check_finite=False), cell)
    for name, value in checked.items():
        np.testing.assert_array_equal(unchecked[name], value, err_msg=name)


@impl
@cell_param
@pytest.mark.parametrize("where", ["x", "h0", "Wx", "Wh", "b"])
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_check_finite_true_refuses_nan_and_false_does_not_scan(module, cell, where):
    """True (the default) names the array holding a NaN, as before; False runs on it: the NaN
    goes into the results instead of an error."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5)
    index = ["x", "h0", "Wx", "Wh", "b"].index(where)
    args[index] = args[index].copy()
    args[index].flat[0] = np.nan
    record = module.CELLS[cell]
    with pytest.raises(ValueError, match=f"{where} contains NaN or infinity"):
        record.forward(*args, **kwargs)
    with pytest.raises(ValueError, match=f"{where} contains NaN or infinity"):
        record.forward(*args, **kwargs, check_finite=True)
    h, _ = record.forward(*args, **kwargs, check_finite=False)
    assert np.isnan(h).any()


@impl
@cell_param
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_backward_check_finite(module, cell):
    """Backward: a NaN in dh, dhT or xi is refused by default and not scanned with False."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5)
    record = module.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    bad_dh = dh.copy()
    bad_dh[0, 0, 0] = np.inf
    bad_final = np.full((2, 5), np.nan)
    bad_xi = np.array([1.0, np.nan, 1.0])
    for name, call in [("dh", {"dh": bad_dh}), ("dhT", {"dhT": bad_final}),
                       ("xi", {"xi": bad_xi})]:
        options = {"dh": dh, **call}
        given = options.pop("dh")
        with pytest.raises(ValueError, match=f"{name} contains NaN or infinity"):
            record.backward(given, cache, **options)
        grads = record.backward(given, cache, **options, check_finite=False)
        assert not np.isfinite(np.concatenate([g.ravel() for g in grads])).all(), name


@impl
@pytest.mark.parametrize("value", [1, None, "no", np.array([True])])
def test_check_finite_must_be_a_bool(module, value):
    args, kwargs, dh = make_problem("rnn", 2, 3, 4, 5)
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        module.rnn_forward(*args, **kwargs, check_finite=value)
    _, cache = module.rnn_forward(*args, **kwargs)
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        module.rnn_backward(dh, cache, check_finite=value)


@cell_param
@pytest.mark.parametrize("layout", ["F", "strided", "byteswapped", "readonly", "list"])
@pytest.mark.parametrize("time_major", [False, True])
def test_fast_and_full_checks_give_the_same_results(cell, layout, time_major):
    """Arrays the fast path takes (C-contiguous, native) and the same values as arrays it hands
    to the full checks (Fortran-ordered, strided, byte-swapped, read-only, lists): equal
    results, to the bit."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5, time_major=time_major)
    expected = results(*run(fastbptt, cell, args, kwargs, dh), cell)

    def other(a):
        return a.tolist() if layout == "list" else relayout(a, layout)
    args2 = [other(a) for a in args]
    kwargs2 = {k: other(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    record = fastbptt.CELLS[cell]
    h, cache = record.forward(*args2, **kwargs2)
    dh2 = relayout(dh, layout) if layout != "list" else dh.tolist()
    got = results(np.array(h), record.backward(dh2, cache), cell)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@cell_param
def test_a_bad_call_after_good_ones_raises_as_a_first_call(cell):
    """The checks keep nothing from one call to the next: after good calls with the same shapes,
    a wrong dtype, a NaN, an out= with a read-only, strided, mistyped, misshapen or overlapping
    array, a read-only or overlapping grads= raise the message
    the reference raises (which has no fast path) for the same call."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5)
    kernels, reference = fastbptt.CELLS[cell], fastbptt.reference.CELLS[cell]
    for _ in range(2):
        run(fastbptt, cell, args, kwargs, dh)
    _, cache = kernels.forward(*args, **kwargs)
    _, ref_cache = reference.forward(*args, **kwargs)
    good = kernels.backward(dh, cache)
    ref_good = reference.backward(dh, ref_cache)

    def frozen(a):
        a = a.copy()
        a.flags.writeable = False
        return a
    x, h0, Wx, Wh, b = args
    bad_forward = [
        ([x.astype(np.float32), h0, Wx, Wh, b], {}),
        ([x, h0, Wx.astype(np.float32), Wh, b], {}),
        ([x, h0, Wx, Wh, np.full_like(b, np.nan)], {}),
        ([x, h0, Wx, Wh, b], {"time_major": 1}),
        ([x, h0, Wx, Wh[:, :-1], b], {}),
    ]
    for bad_args, extra in bad_forward:
        options = {**kwargs, **extra}
        expected = raised(reference.forward, *bad_args, **options)
        assert expected is not None
        assert raised(kernels.forward, *bad_args, **options) == expected
        kernels.forward(*args, **kwargs)       # and a good call in between

    def bad_backward(impl_cache, result):
        return [
            ({"dh": dh.astype(np.float32)}),
            ({"dh": dh[:, :2]}),
            ({"out": result._replace(dx=frozen(result.dx))}),
            ({"out": result._replace(dx=np.asfortranarray(result.dx))}),
            ({"out": result._replace(dWh=result.dWh.astype(np.float32))}),
            ({"out": result._replace(db=result.db[:-1])}),
            ({"out": result._replace(dh0=impl_cache.h0)}),
            ({"grads": result._replace(dWh=frozen(result.dWh))}),
            ({"grads": result._replace(dWx=impl_cache.Wx)}),
            ({"dhT": np.zeros((2, 4))}),
        ]
    for ours, theirs in zip(bad_backward(cache, good), bad_backward(ref_cache, ref_good)):
        given, ref_given = ours.pop("dh", dh), theirs.pop("dh", dh)
        expected = raised(reference.backward, ref_given, ref_cache, **theirs)
        assert expected is not None, theirs
        got = raised(kernels.backward, given, cache, **ours)
        assert got == (expected[0], expected[1].replace("fastbptt.reference", "fastbptt")), ours
        kernels.backward(dh, cache)


@cell_param
def test_out_overlap_is_seen_after_a_refill(cell):
    """What backward reads of a cache is looked up again after a forward refilled it with other
    weights (the checks keep it between calls on the same cache): an out= whose weight gradient
    is now the cache's Wh is refused, as on a first call."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5)
    record = fastbptt.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    out = record.backward(dh, cache)
    record.backward(dh, cache, out=out)
    x, h0, Wx, Wh, b = args
    out.dWh[...] = Wh
    record.forward(x, h0, Wx, out.dWh, b, out=cache, **kwargs)     # cache.Wh is out.dWh
    with pytest.raises(ValueError, match="out.dWh and cache.Wh overlap in memory"):
        record.backward(dh, cache, out=out)
    record.forward(*args, out=cache, **kwargs)
    np.testing.assert_array_equal(record.backward(dh, cache, out=out).dWh,
                                  record.backward(dh, cache).dWh)


@cell_param
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grads_still_accumulate(cell, dtype):
    """grads= adds into what the buffers hold; without it each result is this call's alone."""
    args, kwargs, dh = make_problem(cell, 2, 3, 4, 5, dtype)
    record = fastbptt.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    one = record.backward(dh, cache)
    names = record.weight_grads
    start = {name: np.full_like(getattr(one, name), 0.25) for name in names}
    acc = {name: value.copy() for name, value in start.items()}
    for _ in range(2):
        record.backward(dh, cache, grads=acc)
    again = record.backward(dh, cache)
    for name in names:
        assert_close(acc[name], start[name] + 2 * getattr(one, name).astype(np.float64), dtype,
                     name)
        np.testing.assert_array_equal(getattr(again, name), getattr(one, name), err_msg=name)


@cell_param
@pytest.mark.parametrize("n_steps", [5, 25, 30])
def test_tbptt_run_of_one_window_per_group(cell, n_steps):
    """TBPTT(25, 25).run at N = 1, a group of windows per call: a stream no longer than a window
    gives full BPTT's weight gradients and final state; a longer one what one call per window
    gives (``windows``); grads= adds into the caller's buffers."""
    args, kwargs, dh = make_problem(cell, 1, n_steps, 4, 5)
    record = fastbptt.CELLS[cell]

    def loss_grad(h, t0):
        return float(h.sum()), dh[:, t0:t0 + h.shape[1]]
    res = TBPTT(25, cell=cell).run(*args, loss_grad, **kwargs)
    per_window = None
    for win in TBPTT(25, cell=cell).windows(*args, loss_grad, **kwargs):
        per_window = {name: arr.copy() for name, arr in win.grads.items()} if per_window is None \
            else {name: per_window[name] + arr for name, arr in win.grads.items()}
    h, cache = record.forward(*args, **kwargs)
    assert res.n_steps == n_steps and res.n_windows == -(-n_steps // 25)
    np.testing.assert_array_equal(res.h, cache.hT)
    for name, arr in res.grads.items():
        assert_close(arr, per_window[name], np.float64, name)
    if n_steps <= 25:
        full = record.backward(dh, cache)
        for name, arr in res.grads.items():
            assert_close(arr, getattr(full, name), np.float64, name)
    buffers = res.grads.copy()
    TBPTT(25, cell=cell).run(*args, loss_grad, grads=buffers, **kwargs)
    for name, arr in buffers.items():
        assert_close(arr, 2 * getattr(res.grads, name), np.float64, name)


@builds
def test_ready_takes_only_what_needs_nothing_done(checks):
    """forward_ready gives (T, N, D, H) for plain arrays and None for anything the full checks
    must convert or refuse; backward_ready likewise True or False."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    Wx, Wh, b, h0 = (rng.standard_normal(s) for s in ((4, 20), (5, 20), (20,), (2, 5)))
    weights = {"Wx": Wx, "Wh": Wh, "b": b}

    def ready(x=x, h0=h0, c0=None, time_major=False, check_finite=True, **changed):
        return checks.forward_ready(x, {"h0": h0, "c0": c0}, {**weights, **changed}, 4,
                                    time_major, check_finite)
    assert ready() == (3, 2, 4, 5)
    assert ready(time_major=True, h0=None) == (2, 3, 4, 5)
    assert ready(h0=None, bh=None) == (3, 2, 4, 5)       # an extra weight not given
    nan = b.copy()
    nan[3] = np.nan
    assert ready(b=nan) is None and ready(b=nan, check_finite=False) == (3, 2, 4, 5)

    class Sub(np.ndarray):
        pass
    for changed in [{"x": np.asfortranarray(x)}, {"x": x.astype(">f8")}, {"x": x[:, ::2]},
                    {"x": x.view(Sub)}, {"x": x.tolist()}, {"x": x[0]}, {"x": x[:, :0]},
                    {"h0": h0.astype(np.float32)}, {"h0": h0[:1]}, {"c0": h0.T.copy()},
                    {"Wx": Wx[:3]}, {"Wh": Wh[:, :-1]}, {"Wh": Wh[:0, :0]}, {"b": None},
                    {"b": b.astype(np.float32)}, {"b": b.astype(np.int64)},
                    {"time_major": 1}, {"time_major": np.bool_(True)},
                    {"x": np.zeros((2, 3), "M8[s]")}]:
        assert ready(**changed) is None, changed
    dh = rng.standard_normal((2, 3, 5))
    assert checks.backward_ready(dh, {"dhT": None}, 8, (2, 3, 5), 2, True)
    assert checks.backward_ready(dh, {"dhT": h0}, 8, (2, 3, 5), 2, True)
    for args in [(dh.astype(np.float32), {"dhT": None}, 8), (dh[:1], {"dhT": None}, 8),
                 (np.asfortranarray(dh), {"dhT": None}, 8), (dh, {"dhT": h0[:1]}, 8),
                 (dh, {"dhT": h0.astype(np.float32)}, 8), (dh, {"dhT": None}, 4),
                 (dh * np.nan, {"dhT": None}, 8), (None, {"dhT": None}, 8)]:
        assert not checks.backward_ready(*args, (2, 3, 5), 2, True)
    assert checks.backward_ready(dh * np.nan, {"dhT": None}, 8, (2, 3, 5), 2, False)


@cell_param
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("overwrite_cache", [False, True])
@pytest.mark.parametrize("shape", [(2, 3), (1, 1), (3, 1), (1, 70)])
def test_weight_gradients_are_overwritten_not_added(cell, time_major, overwrite_cache, shape):
    """Without grads=, out='s weight gradients are overwritten: out= whose weight gradients
    hold NaN gives the result of a new backward, to the bit (the RNN's lean backward too, in
    blocks: T = 70)."""
    n_batch, n_steps = shape
    args, kwargs, dh = make_problem(cell, n_batch, n_steps, 4, 5, time_major=time_major)
    record = fastbptt.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    fresh = record.backward(dh, cache)
    _, cache = record.forward(*args, **kwargs)
    expected = record.backward(dh, cache, overwrite_cache=overwrite_cache)
    for name in record.weight_grads:
        getattr(fresh, name)[...] = np.nan
    _, cache = record.forward(*args, **kwargs)
    got = record.backward(dh, cache, out=fresh, overwrite_cache=overwrite_cache)
    for name in ("dx", "dh0") + record.weight_grads:
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        assert getattr(got, name) is getattr(fresh, name)


@cell_param
def test_no_sequences_give_zero_weight_gradients(cell):
    """N = 0: no kernel runs, and the weight gradients are zeros (out='s set to zero too)."""
    args, kwargs, dh = make_problem(cell, 0, 3, 4, 5)
    record = fastbptt.CELLS[cell]
    _, cache = record.forward(*args, **kwargs)
    grads = record.backward(dh, cache)
    for name in record.weight_grads:
        getattr(grads, name)[...] = np.nan
    again = record.backward(dh, cache, out=grads)
    for name in record.weight_grads:
        assert not getattr(again, name).any(), name
