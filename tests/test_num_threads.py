"""One kernel call on several threads: the same answers as the reference at 1, 2 and 3 threads,
with fewer, as many and more sequences than threads; the thread count API; determinism; calls
from several Python threads at once; Ctrl-C."""
import os
import textwrap
import threading

import numpy as np
import pytest
from conftest import HIDDEN_CELLS, assert_close, make_problem, run_script

import fastbptt
import fastbptt._blas_threads
import fastbptt._threads
import fastbptt.reference as ref

THREADS = [1, 2, 3]
BATCHES = [1, 2, 5, 7]      # fewer sequences than threads, as many, more, not a multiple


@pytest.fixture(params=THREADS, ids=lambda n: f"threads{n}")
def threads(request, monkeypatch):
    """Every call threaded, however small (the tests' problems are far below the size where a
    call starts other threads)."""
    monkeypatch.setattr(fastbptt._threads, "THREADED_WORK", 0)
    monkeypatch.setattr(fastbptt._blas_threads, "SINGLE_THREADED_WORK", 0)
    with fastbptt.num_threads(request.param):
        yield request.param


def run_all(module, cell, args, kwargs, dh, time_major):
    """Every option of one cell's calls: forward, forward again with out=, backward with xi
    (zeros among it), dhT (dcT), grads= and h_grad_norms, then with overwrite_cache."""
    record = module.CELLS[cell]
    n_steps = dh.shape[0 if time_major else 1]
    n_batch, n_hidden = args[1].shape
    rng = np.random.default_rng(3)
    dtype = dh.dtype
    carries = {"dhT": rng.standard_normal((n_batch, n_hidden)).astype(dtype)}
    if cell == "lstm":
        carries["dcT"] = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    xi = np.resize([1.0, 0.0, 2.5, 1.0, 0.5], n_steps)
    h, cache = record.forward(*args, **kwargs)
    results = {"h": h.copy(), "hT": cache.hT.copy()}
    h, cache = record.forward(*args, **kwargs, out=cache)
    results["h again"] = h
    norms = np.full(n_steps, np.nan, dtype)
    first = record.backward(dh, cache, xi=xi, h_grad_norms=norms, **carries)
    for name in first._fields:
        results[name] = getattr(first, name).copy()
    results["norms"] = norms
    second = record.backward(dh, cache, grads=first)
    for name in record.weight_grads:
        results[f"{name} added"] = getattr(second, name)
    lean = record.backward(dh, cache, overwrite_cache=True, h_grad_norms=norms.copy(),
                           **carries)
    for name in lean._fields:
        results[f"{name} lean"] = getattr(lean, name)
    for extra in record.extra_grads:
        results[extra] = getattr(lean, extra)
    return results


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
@pytest.mark.parametrize("n_batch", BATCHES, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_threaded_calls_equal_the_reference(cell, n_batch, time_major, dtype, threads):
    args, kwargs, dh = make_problem(cell, n_batch, 6, 3, 4, dtype=dtype, time_major=time_major)
    ours = run_all(fastbptt, cell, args, kwargs, dh, time_major)
    theirs = run_all(ref, cell, args, kwargs, dh, time_major)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert_close(ours[name], theirs[name], dtype, name)


@pytest.mark.parametrize("cell", HIDDEN_CELLS)
def test_a_thread_count_gives_the_same_bits_every_time(cell, threads):
    args, kwargs, dh = make_problem(cell, 7, 9, 5, 6, time_major=False)
    first = run_all(fastbptt, cell, args, kwargs, dh, False)
    for _ in range(3):
        again = run_all(fastbptt, cell, args, kwargs, dh, False)
        for name in first:
            np.testing.assert_array_equal(again[name], first[name], err_msg=name)


def test_the_thread_count_changes_nothing_but_rounding():
    args, kwargs, dh = make_problem("lstm", 7, 9, 5, 6)
    fastbptt._threads.THREADED_WORK, saved = 0, fastbptt._threads.THREADED_WORK
    try:
        results = {}
        for n in THREADS:
            with fastbptt.num_threads(n):
                results[n] = run_all(fastbptt, "lstm", args, kwargs, dh, False)
    finally:
        fastbptt._threads.THREADED_WORK = saved
    for n in THREADS[1:]:
        for name in results[1]:
            assert_close(results[n][name], results[1][name], np.float64, name)


def test_set_get_and_the_context():
    before = fastbptt.get_num_threads()
    try:
        assert fastbptt.set_num_threads(3) == before
        assert fastbptt.get_num_threads() == 3
        with fastbptt.num_threads(1):
            assert fastbptt.get_num_threads() == 1
            with fastbptt.num_threads(np.int64(2)):
                assert fastbptt.get_num_threads() == 2
            assert fastbptt.get_num_threads() == 1
        assert fastbptt.get_num_threads() == 3
        with pytest.raises(KeyError), fastbptt.num_threads(2):
            raise KeyError("the count comes back after an exception too")
        assert fastbptt.get_num_threads() == 3
    finally:
        fastbptt.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None, True])
def test_bad_thread_counts_are_refused(bad):
    before = fastbptt.get_num_threads()
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        fastbptt.set_num_threads(bad)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        with fastbptt.num_threads(bad):
            pass
    assert fastbptt.get_num_threads() == before


def test_the_default_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setitem(fastbptt._threads._state, "threads", None)
    monkeypatch.delenv("FASTBPTT_NUM_THREADS", raising=False)
    assert fastbptt.get_num_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setitem(fastbptt._threads._state, "threads", None)
    monkeypatch.setenv("FASTBPTT_NUM_THREADS", "3")
    assert fastbptt.get_num_threads() == 3
    for bad in ("0", "two", "-2"):
        monkeypatch.setitem(fastbptt._threads._state, "threads", None)
        monkeypatch.setenv("FASTBPTT_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="FASTBPTT_NUM_THREADS"):
            fastbptt.get_num_threads()


def test_small_calls_and_one_sequence_stay_on_one_thread(monkeypatch):
    """Below THREADED_WORK a call runs alone; so does any call when the count is 1."""
    with fastbptt.num_threads(4):
        assert fastbptt._threads.threads_for(fastbptt._threads.THREADED_WORK - 1) == 1
    with fastbptt.num_threads(1):
        assert fastbptt._threads.threads_for(10 ** 12) == 1


def test_openmp_limits_the_count(monkeypatch):
    """What OpenMP allows the calling thread (OMP_NUM_THREADS, threadpoolctl) caps the count."""
    monkeypatch.setitem(fastbptt._threads._state, "openmp", lambda: 2)
    with fastbptt.num_threads(8):
        n = fastbptt._threads.threads_for(10 ** 12)
        fastbptt._threads.release()
    assert n == 2


def test_calls_that_overlap_do_not_both_take_the_threads():
    """While one call uses the threads, another one (from another Python thread) runs on one,
    so that concurrent calls never ask for more than the count; the threads are free again
    after the first returns."""
    limit = fastbptt._threads._openmp_threads()
    with fastbptt.num_threads(2):
        first = fastbptt._threads.threads_for(10 ** 12)
        try:
            assert first == min(2, limit)
            assert fastbptt._threads.threads_for(10 ** 12) == 1
        finally:
            if first > 1:
                fastbptt._threads.release()
        again = fastbptt._threads.threads_for(10 ** 12)
        if again > 1:
            fastbptt._threads.release()
        assert again == first


def test_kernels_called_from_several_python_threads_at_once(threads):
    """Independent problems in four Python threads, each call threaded where it gets the
    threads: every answer equals the one computed alone."""
    problems = [make_problem(cell, 5, 7, 3, 4, seed=seed)
                for seed, cell in enumerate(["rnn", "lstm", "gru", "lstm"])]
    cells = ["rnn", "lstm", "gru", "lstm"]
    alone = [run_all(fastbptt, cell, *p, False) for cell, p in zip(cells, problems)]
    together = [None] * len(problems)
    errors = []
    start = threading.Barrier(len(problems))

    def work(i):
        try:
            start.wait()
            for _ in range(5):
                together[i] = run_all(fastbptt, cells[i], *problems[i], False)
        except BaseException as err:      # reported below, in the test's thread
            errors.append(err)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    for got, want in zip(together, alone):
        for name in want:
            assert_close(got[name], want[name], np.float64, name)


SCRIPT = textwrap.dedent("""
    import json, os, signal, threading, time
    import numpy as np
    import fastbptt

    armed = [False]

    def on_sigint(signum, frame):
        # KeyboardInterrupt only while a call is timed: a signal that comes after the call
        # returned (on a busy machine, the timer's thread may run late) is dropped
        if armed[0]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def interrupt(call, after=0.005):
        # call() with SIGINT sent to the main thread after that many seconds: the seconds from
        # the signal to the KeyboardInterrupt, or None if the call finished first
        sent = {}
        def send():
            sent["t"] = time.perf_counter()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        timer = threading.Timer(after, send)
        try:
            armed[0] = True
            timer.start()
            call()
            return None
        except KeyboardInterrupt:
            return time.perf_counter() - sent["t"]
        finally:
            armed[0] = False
            timer.join()

    fastbptt.set_num_threads(2)
    report = {}
    for cell in ("lstm", "gru"):
        record = fastbptt.CELLS[cell]
        G, H, T, N = record.n_gates, 8, 100_000, 4
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, T, 2)).astype(np.float32)
        Wx = (rng.standard_normal((2, G * H)) * 0.5).astype(np.float32)
        Wh = (rng.standard_normal((H, G * H)) * 0.2).astype(np.float32)
        b = np.zeros(G * H, np.float32)
        h, cache = record.forward(x, None, Wx, Wh, b)
        report[cell + " forward"] = interrupt(lambda: record.forward(x, None, Wx, Wh, b))
        report[cell + " backward"] = interrupt(lambda: record.backward(None, cache))
        record.backward(None, cache)      # the threads work on after an interrupted call
    print(json.dumps(report))
""")


def test_ctrl_c_stops_a_threaded_call():
    report = run_script(SCRIPT, timeout=300, env={"FASTBPTT_NUM_THREADS": "2"})
    assert any(seconds is not None for seconds in report.values()), report
    for name, seconds in report.items():
        # interrupted within a fraction of a second (the kernels look every 20 ms; up to 0.6 s
        # seen on a 2-core machine loaded 4x over), or finished before the signal came
        assert seconds is None or seconds < 1.0, (name, seconds)


def test_train_and_bench_take_threads(tmp_path, monkeypatch, capsys):
    """``fastbptt train --threads N`` trains as on one thread (to rounding); ``--threads 0`` is
    refused by both commands; ``fastbptt bench --threads 2`` runs."""
    from fastbptt.cli import main
    from fastbptt.nn import Model

    monkeypatch.setattr(fastbptt._threads, "THREADED_WORK", 0)
    monkeypatch.setattr(fastbptt._blas_threads, "SINGLE_THREADED_WORK", 0)
    rng = np.random.default_rng(0)
    text = tmp_path / "corpus.txt"
    text.write_text("".join(rng.choice(["def ", "return ", "self", " = ", "(", ")\n"], 2000)))
    params = {}
    for n in (1, 3):
        out = tmp_path / f"run{n}"
        assert main(["train", "--text", str(text), "--steps", "4", "--hidden", "8",
                     "--batch", "5", "--seq-len", "6", "--eval-every", "4", "--eval-chars",
                     "200", "--sample-len", "0", "--no-progress", "--dtype", "float64",
                     "--threads", str(n), "--out", str(out)]) == 0
        params[n] = Model.load(out / "model.npz").params
    for name in params[1]:
        assert_close(params[3][name], params[1][name], np.float64, name)
    for command in ("train", "bench"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--threads", "0"])
        assert exc.value.code == 2
    capsys.readouterr()
    assert main(["bench", "--cases", "C", "--budget", "0.01", "--cells", "rnn", "--no-torch",
                 "--threads", "2"]) == 0
    assert "2 threads each" in capsys.readouterr().out


def test_openmp_own_limit_is_read_from_the_runtime():
    """omp_set_num_threads in the calling thread (what threadpoolctl and OMP_NUM_THREADS set)
    is what the kernels' OpenMP runtime reports, and so what caps the count."""
    import ctypes
    import ctypes.util

    limit = fastbptt._threads._openmp_threads()      # loads the kernels (and their OpenMP)
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
    libgomp = next((line.split()[-1] for line in maps.splitlines() if "libgomp" in line
                    and "fastbptt" not in line and "torch" not in line), None)
    if limit == 1 and libgomp is None:
        pytest.skip("the kernels are built without OpenMP here")
    assert libgomp is not None
    omp = ctypes.CDLL(libgomp)
    before = omp.omp_get_max_threads()
    try:
        omp.omp_set_num_threads(1)
        assert fastbptt._threads._openmp_threads() == 1
        with fastbptt.num_threads(4):
            assert fastbptt._threads.threads_for(10 ** 12) == 1
    finally:
        omp.omp_set_num_threads(before)
    assert fastbptt._threads._openmp_threads() == before
