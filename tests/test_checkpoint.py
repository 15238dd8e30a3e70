"""checkpoint=k: forward keeps the states entering every k-th step only, backward recomputes one
segment at a time. Gradients equal full storage's to rounding for every cell, option, layout,
dtype and backward keyword; memory is T/k + 2k step-states; the cache behaves as the others do
(read-only, pickled, consumed, refilled with out=); bad values are refused before any work."""
import pickle
import tracemalloc

import numpy as np
import pytest
from conftest import IMPLS, assert_close, make_problem
from test_equivalence import CASE_IDS, CASES

import fastbptt
from fastbptt._checkpoint import CheckpointCache, takes_checkpoint

impl = pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
# the cells whose forward takes checkpoint= (every cell of the (x, h0, Wx, Wh, b) contract)
CKPT_CELLS = [name for name, cell in fastbptt.CELLS.items() if takes_checkpoint(cell.forward)]
cases = pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
layout = pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])


def extras(cell, n_batch, n_hidden, n_steps, dtype, seed=3):
    """The backward keywords that change the arithmetic: dhT, dcT, xi (with zeros), norms."""
    rng = np.random.default_rng(seed)
    out = {"dhT": rng.standard_normal((n_batch, n_hidden)).astype(dtype),
           "xi": rng.choice([0.0, 0.5, 1.0, 1.5], n_steps),
           "h_grad_norms": np.zeros(n_steps, dtype)}
    if cell == "lstm":
        out["dcT"] = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    return out


def assert_same_grads(got, expected, dtype):
    for name in expected._fields + tuple(vars(expected)):
        assert_close(getattr(got, name), getattr(expected, name), dtype, name)


@impl
@cases
@layout
@pytest.mark.parametrize("k", [1, 3, 4, 7, 50, "sqrt"])
@pytest.mark.parametrize("shape", [(3, 7, 4, 5), (1, 1, 1, 1), (0, 3, 2, 2)],
                         ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_checkpointed_equals_full_storage(module, cell, opts, k, shape, time_major, dtype):
    n_batch, n_steps, _, n_hidden = shape
    args, kwargs, dh = make_problem(cell, *shape, dtype=dtype, time_major=time_major)
    kwargs.update(opts)
    record = module.CELLS[cell]
    full_kw = extras(cell, n_batch, n_hidden, n_steps, dtype)
    ckpt_kw = {name: value.copy() for name, value in full_kw.items()}
    h_full, cache_full = record.forward(*args, **kwargs)
    h_ckpt, cache = record.forward(*args, checkpoint=k, **kwargs)
    assert isinstance(cache, CheckpointCache)
    np.testing.assert_array_equal(h_ckpt, h_full)      # the same forward, segment by segment
    for state in record.states:
        np.testing.assert_array_equal(getattr(cache, state + "T"),
                                      getattr(cache_full, state + "T"))
        np.testing.assert_array_equal(getattr(cache, state + "0"),
                                      getattr(cache_full, state + "0"))
    expected = record.backward(dh, cache_full, **full_kw)
    got = record.backward(dh, cache, **ckpt_kw)
    assert_same_grads(got, expected, dtype)
    assert_close(ckpt_kw["h_grad_norms"], full_kw["h_grad_norms"], dtype, "h_grad_norms")
    # the cache was only read: a second backward gives the same
    assert_same_grads(record.backward(dh, cache, **ckpt_kw), expected, dtype)


@impl
@cases
@layout
def test_segments_and_checkpoints(module, cell, opts, time_major):
    """T = 10, k = 4: segments of 4, 4, 2 steps; the checkpoints are the states entering steps
    0, 4 and 8, as full storage has them."""
    args, kwargs, _ = make_problem(cell, 2, 10, 3, 4, time_major=time_major)
    kwargs.update(opts)
    record = module.CELLS[cell]
    _, full = record.forward(*args, **kwargs)
    _, cache = record.forward(*args, checkpoint=4, **kwargs)
    assert cache.checkpoint == 4 and cache.n_steps == 10
    for state in record.states:
        kept = getattr(cache, state + "_checkpoints")
        assert kept.shape == (3, 2, 4)
        by_step = getattr(full, state)
        np.testing.assert_array_equal(kept[0], getattr(full, state + "0"))
        np.testing.assert_array_equal(kept[1:], by_step[[3, 7]])
    _, sq = record.forward(*args, checkpoint="sqrt", **kwargs)
    assert sq.checkpoint == 4          # ceil(sqrt(10))
    _, one = record.forward(*args, checkpoint=np.int64(100), **kwargs)
    assert one.checkpoint == 10 and one.h_checkpoints.shape[0] == 1


@impl
@cases
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_grads_out_and_overwrite(module, cell, opts, time_major):
    """grads= adds into the caller's arrays, out= reuses an earlier result's, overwrite_cache
    consumes the checkpointed cache."""
    dtype = np.float64
    args, kwargs, dh = make_problem(cell, 2, 9, 3, 4, dtype=dtype, time_major=time_major)
    kwargs.update(opts)
    record = module.CELLS[cell]
    _, full = record.forward(*args, **kwargs)
    expected = record.backward(dh, full)
    _, cache = record.forward(*args, checkpoint=4, **kwargs)
    first = record.backward(dh, cache)
    start = {name: np.full_like(getattr(first, name), 0.25) for name in record.weight_grads}
    added = record.backward(dh, cache, grads=start)
    for name in record.weight_grads:
        assert_close(start[name], getattr(expected, name) + 0.25, dtype, name)
        assert added is not None
    ids = {name: id(getattr(first, name)) for name in first._fields + tuple(vars(first))}
    for name in first._fields:
        getattr(first, name)[...] = 7.0          # stale values, overwritten by out=
    again = record.backward(dh, cache, out=first, overwrite_cache=True)
    assert {name: id(getattr(again, name)) for name in ids} == ids
    assert_same_grads(again, expected, dtype)
    assert cache.consumed
    with pytest.raises(ValueError, match="consumed"):
        record.backward(dh, cache)


@impl
@cases
def test_forward_out_refills_a_stream(module, cell, opts):
    """out= refills a checkpointed cache: a loop over the chunks of a stream, the state carried
    from the cache's own final state."""
    record = module.CELLS[cell]
    args, kwargs, dh = make_problem(cell, 2, 6, 3, 4)
    kwargs.update(opts)
    _, cache = record.forward(*args, checkpoint=2, **kwargs)
    arrays = {name: id(cache.__dict__[name]) for name in cache.fields}
    nxt = list(args)
    nxt[0] = args[0][:, ::-1].copy()
    nxt[1] = cache.hT
    state_kw = {s + "0": getattr(cache, s + "T") for s in record.states[1:]}
    fresh_kw = {**kwargs, **{s: v.copy() for s, v in state_kw.items()}}
    h_new, fresh = record.forward(nxt[0], cache.hT.copy(), *args[2:], checkpoint=2, **fresh_kw)
    h_out, same = record.forward(*nxt, checkpoint=2, out=cache, **{**kwargs, **state_kw})
    assert same is cache
    np.testing.assert_array_equal(h_out, h_new)
    for name in ("h_checkpoints", "h_final"):
        assert id(cache.__dict__[name]) == arrays[name]
        np.testing.assert_array_equal(cache.__dict__[name], fresh.__dict__[name])
    assert_same_grads(record.backward(dh, cache), record.backward(dh, fresh), np.float64)


@impl
def test_pickle_and_read_only(module):
    args, kwargs, dh = make_problem("lstm", 2, 7, 3, 4)
    _, cache = module.lstm_forward(*args, checkpoint=3, **kwargs)
    back = pickle.loads(pickle.dumps(cache))
    assert isinstance(back, CheckpointCache) and back.checkpoint == 3
    np.testing.assert_array_equal(back.cT, cache.cT)
    assert_same_grads(module.lstm_backward(dh, back), module.lstm_backward(dh, cache),
                      np.float64)
    with pytest.raises(AttributeError, match="read-only"):
        cache.checkpoint = 5
    with pytest.raises(AttributeError, match="no field"):
        _ = cache.gates
    assert "checkpoint=3" in repr(cache)
    assert not (cache.hT.flags.writeable or cache.cT.flags.writeable or cache.c0.flags.writeable)


@impl
@pytest.mark.parametrize("bad", [0, -2, 2.5, "SQRT", "", True, [3], np.float64(4)])
def test_bad_checkpoint(module, bad):
    args, kwargs, _ = make_problem("gru", 2, 5, 3, 4)
    with pytest.raises(ValueError, match="checkpoint"):
        module.gru_forward(*args, checkpoint=bad, **kwargs)


@impl
def test_mismatched_caches_are_refused(module):
    args, kwargs, dh = make_problem("rnn", 2, 5, 3, 4)
    _, cache = module.rnn_forward(*args, checkpoint=2, **kwargs)
    _, full = module.rnn_forward(*args, **kwargs)
    with pytest.raises(ValueError, match="pass checkpoint="):
        module.rnn_forward(*args, out=cache, **kwargs)
    with pytest.raises(ValueError, match="with checkpoint="):
        module.rnn_forward(*args, out=full, checkpoint=2, **kwargs)
    with pytest.raises(ValueError, match="T, N, D, H, k"):
        module.rnn_forward(*args, out=cache, checkpoint=3, **kwargs)
    with pytest.raises(ValueError, match="rnn_forward, not gru_backward|not gru_forward"):
        module.gru_backward(dh, cache)
    with pytest.raises(ValueError, match="dh must have shape"):
        module.rnn_backward(dh[:, :4], cache)
    with pytest.raises(ValueError, match="xi must have shape"):
        module.rnn_backward(dh, cache, xi=np.ones(4))
    with pytest.raises(ValueError, match="overlap"):
        module.rnn_backward(dh, cache, grads={"dWx": cache.Wx, "dWh": np.zeros_like(cache.Wh),
                                              "db": np.zeros_like(cache.b)})
    with pytest.raises(ValueError, match="NaN"):
        module.rnn_backward(np.full_like(dh, np.nan), cache)


def step_state_bytes(record, n_batch, n_hidden, itemsize):
    """What full storage keeps per step (h, and c and the gate values for the LSTM...)."""
    return sum(record.cache_type.outputs.values()) * n_batch * n_hidden * itemsize


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@layout
@pytest.mark.parametrize("k", [None, "sqrt", 100])
def test_memory(cell, time_major, k):
    """tracemalloc (NumPy reports its allocations to it): the cache and backward's workspace
    take at most (T/k + 2k) step-states and a small constant beyond what the caller gets back
    (h, dx, the weight gradients), against T step-states with full storage. A step-state is
    what full storage keeps per step: 6 (N, H) arrays for the LSTM, 5 for the GRU, 1 for the
    RNN, whose backward needs as much again (its lean backward's workspace: a second k)."""
    n_batch, n_steps, n_input, n_hidden = 1, 2500, 4, 64
    record = fastbptt.CELLS[cell]
    args, kwargs, dh = make_problem(cell, n_batch, n_steps, n_input, n_hidden,
                                    time_major=time_major)
    step = step_state_bytes(record, n_batch, n_hidden, 8)
    weights = sum(np.prod(s) for s in record.weight_shapes(n_input, n_hidden).values()) * 8
    returned = (n_steps * n_batch * (n_hidden + n_input) * 8 + weights
                + len(record.states) * n_batch * n_hidden * 8)
    record.backward(dh, record.forward(*args, checkpoint=k, **kwargs)[1])   # warm up
    tracemalloc.start()
    try:
        h, cache = record.forward(*args, checkpoint=k, **kwargs)
        grads = record.backward(dh, cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grads.dx.shape == args[0].shape and h.shape == dh.shape
    used = peak - returned
    if k is None:
        assert used >= n_steps * step         # the control: full storage keeps every step
        return
    steps = 50 if k == "sqrt" else k
    # beyond the steps: 40 KiB, and a copy of the weights (the kernels pack Wh for the
    # per-step products, src/_packed.pxd)
    bound = (n_steps / steps + 2 * steps) * step + 40 * 1024 + weights
    assert used <= bound, (f"{used} bytes > {bound} = (T/k + 2k) step-states + 40 KiB + "
                           f"the weights")
    assert used < n_steps * step / 4


@pytest.mark.parametrize("cell", CKPT_CELLS)
@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
def test_model_checkpoint(cell, module):
    """Model(..., checkpoint=k): every layer checkpointed, the same loss, gradients and final
    state as full storage, to rounding."""
    from fastbptt.nn import Model
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, (3, 11))
    targets = rng.integers(0, 7, (3, 11))
    full = Model(7, 6, 7, cell=cell, n_layers=2, dtype=np.float64, impl=module, seed=0)
    ckpt = Model(7, 6, 7, cell=cell, n_layers=2, dtype=np.float64, impl=module, seed=0,
                 checkpoint="sqrt")
    assert ckpt.checkpoint == "sqrt" and full.checkpoint is None
    _, cache = ckpt.forward(ids)
    assert all(isinstance(layer, CheckpointCache) for layer in cache.layers)
    loss_full, grads_full, state_full = full.loss_and_grads(ids, targets)
    loss, grads, state = ckpt.loss_and_grads(ids, targets)
    assert loss == pytest.approx(loss_full, rel=1e-12)
    for name, value in grads_full.items():
        assert_close(grads[name], value, np.float64, name)
    for layer, layer_full in zip(state, state_full):
        for s, value in layer_full.items():
            np.testing.assert_array_equal(layer[s], value)
    with pytest.raises(ValueError, match="checkpoint"):
        Model(7, 6, 7, cell=cell, checkpoint=0)


def test_model_refuses_a_cell_without_checkpoint():
    """An implementation whose cell's forward takes no checkpoint= is refused by name, before
    any work (and accepted without checkpoint)."""
    import types

    from fastbptt import _cells
    from fastbptt.nn import Model

    def gru_forward(x, h0, Wx, Wh, b, *, bh=None, time_major=False, out=None):
        return fastbptt.gru_forward(x, h0, Wx, Wh, b, bh=bh, time_major=time_major, out=out)
    impl = types.SimpleNamespace(
        CELLS=_cells.registry(_cells.GRU.bind(gru_forward, fastbptt.gru_backward)))
    with pytest.raises(ValueError, match="gru cell of this implementation does not take"):
        Model(5, 4, 5, cell="gru", impl=impl, checkpoint="sqrt")
    assert Model(5, 4, 5, cell="gru", impl=impl).checkpoint is None


def test_train_command_checkpoint(tmp_path, capsys):
    """``fastbptt train --checkpoint sqrt`` trains as without it (the same losses, to
    rounding); a bad value or TBPTT is refused with a clear message."""
    import csv

    from fastbptt.cli import main
    words = ["def ", "return ", "self", ".x", " = ", "(", ")", ":\n    ", "if ", "None", "\n"]
    text = tmp_path / "corpus.txt"
    text.write_text("".join(np.random.default_rng(0).choice(words, 3000)), encoding="utf-8")
    common = ["train", "--text", str(text), "--cell", "gru", "--hidden", "16", "--seq-len", "20",
              "--batch", "4", "--steps", "10", "--eval-every", "5", "--eval-chars", "2000",
              "--sample-len", "10", "--no-progress", "--dtype", "float64"]
    losses = []
    for extra in ([], ["--checkpoint", "sqrt"], ["--checkpoint", "3"]):
        out = tmp_path / f"run{len(losses)}"
        assert main(common + ["--out", str(out)] + extra) == 0
        with open(out / "loss.csv", newline="") as f:
            losses.append([float(row["train_loss"]) for row in csv.DictReader(f)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-9)
    np.testing.assert_allclose(losses[2], losses[0], rtol=1e-9)
    capsys.readouterr()
    for extra, message in ((["--checkpoint", "0"], "argument --checkpoint: must be 'sqrt' or"),
                           (["--checkpoint", "half"], "argument --checkpoint: must be 'sqrt' or"),
                           (["--checkpoint", "sqrt", "--truncation", "tbptt"],
                            "--checkpoint goes with"),
                           (["--checkpoint", "4", "--cluster", "local:1"],
                            "--checkpoint runs on one process")):
        try:
            rc = main(common + ["--out", str(tmp_path / "bad")] + extra)
        except SystemExit as exc:
            rc = exc.code
        assert rc == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("cell", CKPT_CELLS)
def test_threads_share_a_checkpointed_cache(cell):
    """Backward calls in several threads read one checkpointed cache at once (each recomputes
    into a workspace of its own) and give the gradients of one call alone."""
    import threading
    args, kwargs, dh = make_problem(cell, 2, 40, 3, 8)
    record = fastbptt.CELLS[cell]
    _, cache = record.forward(*args, checkpoint=6, **kwargs)
    expected = record.backward(dh, cache)
    results = [None] * 4
    barrier = threading.Barrier(len(results))

    def work(index):
        barrier.wait()
        for _ in range(5):
            results[index] = record.backward(dh, cache, xi=np.ones(40))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got in results:
        assert_same_grads(got, expected, np.float64)


@pytest.mark.parametrize("cell", CKPT_CELLS)
@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
@pytest.mark.parametrize("by_length", [{"lengths": [3, 5]}, {"reverse": True}])
def test_checkpoint_refuses_lengths_and_reverse(cell, module, by_length):
    """Segments run every sequence from step 0: lengths= and reverse= are refused by name."""
    args, kwargs, _ = make_problem(cell, 2, 5, 3, 4, time_major=False)
    with pytest.raises(ValueError, match="lengths= nor reverse="):
        module.CELLS[cell].forward(*args, checkpoint=2, **kwargs, **by_length)


@pytest.mark.parametrize("settings", [{"cell": "jordan", "bidirectional": True},
                                      {"cell": "lstm", "bidirectional": True,
                                       "checkpoint": "sqrt"}])
def test_model_refuses_what_a_direction_cannot_do(settings):
    """A bidirectional Model needs a cell with a reverse direction, which checkpoint= lacks."""
    from fastbptt.nn import Model
    with pytest.raises(ValueError, match="bidirectional|checkpoint"):
        Model(5, 4, 5, **settings)


@pytest.mark.parametrize("cell", CKPT_CELLS)
@pytest.mark.parametrize("module", list(IMPLS.values()), ids=list(IMPLS))
def test_check_finite_false_skips_the_scan(cell, module):
    """check_finite=False reaches the checkpointed checks: a NaN in x is then computed with,
    as without checkpoint=, instead of refused; True (the default) refuses it by name."""
    args, kwargs, dh = make_problem(cell, 2, 5, 3, 4, time_major=False)
    record = module.CELLS[cell]
    args[0][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x"):
        record.forward(*args, checkpoint=2, **kwargs)
    h, cache = record.forward(*args, checkpoint=2, check_finite=False, **kwargs)
    h_full, _ = record.forward(*args, check_finite=False, **kwargs)
    np.testing.assert_array_equal(np.isnan(h), np.isnan(h_full))
    dh[0, 0, 0] = np.nan
    grads = record.backward(dh, cache, check_finite=False)
    assert np.isnan(grads.dx).any()
    with pytest.raises(ValueError, match="dh"):
        record.backward(dh, record.forward(*args, checkpoint=2, check_finite=False,
                                           **kwargs)[1])
