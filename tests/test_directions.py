"""A bidirectional layer's two directions at once (fastbptt/_directions.py): the same results to
the bit as one after the other, on any thread count; errors from either direction reach the
caller once both have stopped; the pair holds the threads' team once, and Ctrl-C still stops."""
import os
import textwrap
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import make_problem, run_script

import fastbptt
import fastbptt._directions as directions
import fastbptt._lengths as by_length
import fastbptt._threads as threads
from fastbptt.nn import Model

CELLS = ("rnn", "lstm", "gru")


@pytest.fixture
def starts(monkeypatch):
    """Small layers run their directions at once too, OpenMP allowing any count; counts the
    worker's calls."""
    monkeypatch.setattr(threads, "THREADED_WORK", 0)
    monkeypatch.setattr(threads, "_openmp_threads", lambda: 64)
    count = []
    start = directions._Worker.start

    def counted(self, call, n_threads):
        count.append(n_threads)
        return start(self, call, n_threads)
    monkeypatch.setattr(directions._Worker, "start", counted)
    return count


def _train_step(model, x, y, lengths, n_threads):
    with fastbptt.num_threads(n_threads):
        out, cache = model.forward(x, lengths=lengths)
        loss, dz = model.loss(cache, y)
        norms = [np.zeros(x.shape[1], model.dtype) for _ in range(2 * model.n_layers)]
        dstate = [{s: np.full((x.shape[0], model.n_hidden), 0.5, model.dtype)
                   for s in model._cell.states} for _ in range(2 * model.n_layers)]
        grads, dstate0, dx = model.backward(dz, cache, dstate=dstate, h_grad_norms=norms)
    arrays = {"out": out, "dx": dx, **{"grad " + k: v for k, v in grads.items()}}
    for k, (final, d0) in enumerate(zip(cache.state, dstate0)):
        arrays.update({f"state{k} {s}": final[s] for s in final})
        arrays.update({f"dstate0{k} {s}": d0[s] for s in d0})
        arrays[f"norms{k}"] = norms[k]
    return arrays


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [None, [5, 0, 3, 5, 1]])
def test_at_once_equals_one_after_the_other(cell, dtype, lengths, starts):
    model = Model(3, 4, 2, cell=cell, n_layers=2, input="dense", loss="mse", dtype=dtype,
                  bidirectional=True, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 5, 3)).astype(dtype)
    y = rng.standard_normal((5, 5, 2)).astype(dtype)
    alone = _train_step(model, x, y, lengths, 1)
    assert starts == []                 # one thread: one after the other
    for n_threads in (2, 3):
        at_once = _train_step(model, x, y, lengths, n_threads)
        # forward and backward of both layers, the worker's share n - n // 2
        assert starts == [n_threads - n_threads // 2] * 4
        starts.clear()
        assert at_once.keys() == alone.keys()
        for name, value in alone.items():
            assert np.array_equal(at_once[name], value), (n_threads, name)


def test_small_layers_and_the_reference_run_one_after_the_other(monkeypatch):
    starts = []
    monkeypatch.setattr(directions._Worker, "start", lambda *args: starts.append(args))
    x = np.zeros((2, 3, 3), np.float32)
    for impl in (fastbptt, fastbptt.reference):
        model = Model(3, 4, 2, cell="gru", input="dense", loss="mse", bidirectional=True,
                      impl=impl)
        with fastbptt.num_threads(2):
            model.loss_and_grads(x, np.zeros((2, 3, 2), np.float32))
    assert starts == []


def test_shares_hold_the_team_once(starts):
    """Each direction's kernel calls run on its share, neither taking nor releasing the team
    that the pair holds; another call meanwhile gets one thread."""
    seen = {}

    def run(direction):
        n_threads = threads.threads_for(10 ** 12)
        seen[direction] = (n_threads, threads._team.locked())
        if n_threads > 1:
            threads.release()       # a share's release leaves the team to the pair
        seen[direction] += (threads._team.locked(),)
        return direction

    with fastbptt.num_threads(5):
        assert directions.both_directions(run, 10 ** 12) == (0, 1)
    assert seen == {0: (2, True, True), 1: (3, True, True)}
    assert not threads._team.locked()
    # the team taken by another call: one after the other, each call on one thread
    assert threads._team.acquire(False)
    try:
        with fastbptt.num_threads(4):
            assert directions.both_directions(run, 10 ** 12) == (0, 1)
    finally:
        threads._team.release()
    assert starts == [3]
    assert seen[0][0] == seen[1][0] == 1


def test_an_error_in_the_worker_reaches_the_caller(starts):
    model = Model(3, 4, 2, cell="lstm", input="dense", loss="mse", bidirectional=True, seed=0)
    forward = model._cell.forward

    def failing(*args, reverse=False, **kwargs):
        if reverse:
            raise ValueError("the reverse direction failed")
        return forward(*args, **kwargs)
    model._cell = replace(model._cell, forward=failing)
    x = np.zeros((2, 3, 3), np.float32)
    with fastbptt.num_threads(2), pytest.raises(ValueError, match="reverse direction failed"):
        model.forward(x)
    assert starts == [1]
    assert not threads._team.locked()
    model._cell = replace(model._cell, forward=forward)
    with fastbptt.num_threads(2):
        model.forward(x)                # the worker serves the next call
    assert starts == [1, 1]


def test_a_check_in_the_worker_reaches_the_caller(starts):
    """A NaN in the gradient into the reverse direction's final state only: its backward, on
    the worker, refuses it; the forward direction's runs meanwhile, and the next call works."""
    model = Model(3, 4, 2, cell="gru", input="dense", loss="mse", bidirectional=True, seed=0)
    x = np.ones((2, 3, 3), np.float32)
    with fastbptt.num_threads(2):
        _, cache = model.forward(x)
        _, dz = model.loss(cache, np.zeros((2, 3, 2), np.float32))
        bad = [{}, {"h": np.full((2, 4), np.nan, np.float32)}]
        with pytest.raises(ValueError, match="dhT contains NaN"):
            model.backward(dz, cache, dstate=bad)
        assert starts == [1, 1] and not threads._team.locked()
        grads, _, _ = model.backward(dz, cache)
    with fastbptt.num_threads(1):       # one after the other
        want, _, _ = model.backward(dz, model.forward(x)[1])
    for name, value in want.items():
        assert np.array_equal(grads[name], value), name


def test_an_error_in_the_caller_waits_for_the_worker(starts):
    finished = []

    def run(direction):
        if direction == 0:
            raise KeyError("the forward direction failed")
        time.sleep(0.05)
        finished.append(direction)

    with fastbptt.num_threads(2), pytest.raises(KeyError, match="forward direction failed"):
        directions.both_directions(run, 1)
    assert finished == [1]              # done before the error went on
    assert not threads._team.locked()
    names = [t.name for t in threading.enumerate() if t.name == "fastbptt-direction"]
    assert len(names) == 1              # one worker, made once


SCRIPT = textwrap.dedent("""
    import json, os, signal, threading, time
    import numpy as np
    import fastbptt
    import fastbptt._threads as threads
    from fastbptt.nn import Model

    fastbptt.set_num_threads(2)
    rng = np.random.default_rng(0)
    model = Model(1, 64, 1, cell="gru", input="dense", loss="mse", bidirectional=True)
    x = rng.standard_normal((1, 20_000, 1)).astype(np.float32)
    model.forward(x)                   # the worker started, the kernels loaded
    start = time.perf_counter()
    model.forward(x)
    full = time.perf_counter() - start
    sent, started = {}, threading.Event()
    def send():
        started.wait()
        time.sleep(0.02)
        sent["t"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        started.set()
        model.forward(x)
        stopped = None
    except KeyboardInterrupt:
        stopped = time.perf_counter() - sent["t"]
    sender.join()
    free = not threads._team.locked()
    start = time.perf_counter()
    model.forward(x)                   # the worker is free again
    print(json.dumps({"full": full, "stopped": stopped, "free": free,
                      "again": time.perf_counter() - start}))
""")


@pytest.mark.skipif(os.name != "posix", reason="sends itself SIGINT")
def test_ctrl_c_stops_both_directions():
    report = run_script(SCRIPT)
    # raised once the worker's direction, which cannot see the signal, is done: within about
    # one call's time (twice, and half a second, for a machine whose load changes meanwhile)
    assert report["stopped"] is not None, report
    assert report["stopped"] < 2 * report["full"] + 0.5, report
    assert report["free"], report


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
@pytest.mark.parametrize("lengths", [None, "all"])
def test_reverse_of_whole_sequences_is_a_flip(cell, time_major, lengths, monkeypatch):
    """reverse=True where every sequence has all T steps lays its arrays out by a flip in time
    (``Order.flipped``): the same to the bit as the gather by rows, and the reference's."""
    args, kwargs, dh = make_problem(cell, 3, 5, 2, 4, dtype=np.float64, time_major=time_major,
                                    seed=2)
    lengths = None if lengths is None else np.full(3, 5)

    def run(impl=fastbptt, backward_impl=None):
        h, cache = impl.CELLS[cell].forward(*args, **kwargs, lengths=lengths, reverse=True)
        grads = (backward_impl or impl).CELLS[cell].backward(dh, cache)
        return [np.array(h), cache.hT] + list(grads)
    flipped = run()
    # the kernels' backward on the reference's cache lays it out by the flip too
    for a, b in zip(flipped, run(fastbptt.reference, backward_impl=fastbptt)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    orders = []
    init = by_length.Order.__init__

    def gathered(self, *args):
        init(self, *args)
        orders.append(self.flipped)
        self.flipped = False
    monkeypatch.setattr(by_length.Order, "__init__", gathered)
    gather = run()
    assert orders == [True]
    for a, b in zip(flipped, gather):
        assert np.array_equal(a, b)
    for a, b in zip(flipped, run(fastbptt.reference)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
