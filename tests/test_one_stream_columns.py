"""One sequence (N = 1) on several threads, each step's columns split between them
(src/_columns.pxd), in the Elman RNN's and Jordan's kernels: at 1, 2 and 3 threads, where the
split happens (H >= 128) and where it does not (H = 64), at widths that are a multiple of the
packed panel and that are not (200, 257), over one step (Wh not packed) and over more than
FEW_PACK_STEPS (packed), in both layouts and dtypes, for every nonlinearity, with truncation
(zeros in xi), the norms, the lean backward (overwrite_cache), a shorter length, out= and
grads=.

Every element of a step's work is computed by one thread as the same sum as on one thread, so
the states h and the carries (dL/dh0) equal the one-thread ones bit for bit where the per-step
products are this library's own loops (the AVX2 build; the baseline build calls BLAS, which
is not bound to round a part of a product as it rounds the whole). The RNN's products over all
steps (X @ Wx, dx, the weight gradients) run on BLAS split by rows or columns between the same
threads: equal to rounding, as with several sequences. Bit for bit is checked on inputs whose
product X @ Wx + b is exact (small integers and multiples of 1/64), so that what BLAS does with
a part of it cannot show; the norms join the threads' sums of squares, equal to rounding.
Jordan's network keeps its products over all steps on one thread: every result but the norms
is checked bit for bit where its per-step products are the loops on the weights in place."""
import textwrap

import numpy as np
import pytest
from conftest import assert_close, run_script

import fastbptt
import fastbptt._blas_threads
import fastbptt._threads
import fastbptt.reference as ref
from fastbptt._kernels import use_avx2

RNN = fastbptt.CELLS["rnn"]
REF = ref.CELLS["rnn"]
N_INPUT = 8
LONG = 40       # more than FEW_PACK_STEPS: Wh packed in the AVX2 build


@pytest.fixture(autouse=True)
def threaded(monkeypatch):
    """Every call threaded, however small (the tests' problems are far below the size where a
    call starts other threads)."""
    monkeypatch.setattr(fastbptt._threads, "THREADED_WORK", 0)
    monkeypatch.setattr(fastbptt._blas_threads, "SINGLE_THREADED_WORK", 0)


def problem(n_hidden, n_steps, dtype, time_major, seed=0):
    """x, h0, Wx, Wh, b, dh, dhT, xi for one sequence: X @ Wx + b exact in any order (x small
    integers, Wx and b multiples of 1/64), xi with zeros."""
    rng = np.random.default_rng(seed)
    shape = (n_steps, 1, N_INPUT) if time_major else (1, n_steps, N_INPUT)
    x = rng.integers(-2, 3, shape).astype(dtype)
    Wx = (rng.integers(-8, 9, (N_INPUT, n_hidden)) / 64).astype(dtype)
    b = (rng.integers(-8, 9, n_hidden) / 64).astype(dtype)
    h0 = rng.standard_normal((1, n_hidden)).astype(dtype)
    Wh = (rng.standard_normal((n_hidden, n_hidden)) * 0.9 / np.sqrt(n_hidden)).astype(dtype)
    dh = rng.standard_normal(shape[:2] + (n_hidden,)).astype(dtype)
    dhT = rng.standard_normal((1, n_hidden)).astype(dtype)
    xi = np.resize([1.0, 0.0, 2.5, 1.0, 0.5], n_steps)
    return x, h0, Wx, Wh, b, dh, dhT, xi


def run(cells, args, nonlinearity, time_major, lengths=None):
    """Forward, forward again with out=, backward with xi, dhT and the norms, again with grads=,
    and the lean backward (overwrite_cache, last: it overwrites the cache)."""
    x, h0, Wx, Wh, b, dh, dhT, xi = args
    kwargs = {"nonlinearity": nonlinearity, "time_major": time_major}
    if lengths is not None:
        kwargs["lengths"] = lengths
    h, cache = cells.forward(x, h0, Wx, Wh, b, **kwargs)
    out = {"h": h.copy()}
    h, cache = cells.forward(x, h0, Wx, Wh, b, **kwargs, out=cache)
    out["h out="] = h
    norms = np.full(x.shape[0 if time_major else 1], np.nan, x.dtype)
    grads = cells.backward(dh, cache, xi=xi, dhT=dhT, h_grad_norms=norms)
    out.update({name: getattr(grads, name).copy() for name in grads._fields})
    out["norms"] = norms
    again = cells.backward(dh, cache, xi=xi, dhT=dhT, grads=grads)
    out.update({f"{name} grads=": getattr(again, name) for name in ("dWx", "dWh", "db")})
    if lengths is None:
        norms = np.full_like(norms, np.nan)
        lean = cells.backward(dh, cache, xi=xi, dhT=dhT, h_grad_norms=norms,
                              overwrite_cache=True)
        out.update({f"{name} lean": getattr(lean, name) for name in lean._fields})
        out["norms lean"] = norms
    return out


EXACT = ("h", "h out=", "dh0", "dh0 lean")      # the per-step work alone


def check(n_hidden, n_steps, dtype, time_major, nonlinearity, lengths=None):
    args = problem(n_hidden, n_steps, dtype, time_major)
    with fastbptt.num_threads(1):
        one = run(RNN, args, nonlinearity, time_major, lengths)
    theirs = run(REF, args, nonlinearity, time_major, lengths)
    for name in theirs:
        assert_close(one[name], theirs[name], dtype, name)
    # where the per-step products are BLAS's (the baseline build; Wh too large for the loops
    # on Wh in place over a short call), their parts round as BLAS rounds them
    in_place = n_hidden * n_hidden * np.dtype(dtype).itemsize <= 192 * 1024
    exact = use_avx2() and (n_steps >= 32 or in_place)
    for n in (2, 3):
        with fastbptt.num_threads(n):
            ours = run(RNN, args, nonlinearity, time_major, lengths)
        assert ours.keys() == theirs.keys()
        for name in theirs:
            assert_close(ours[name], theirs[name], dtype, name)
            assert_close(ours[name], one[name], dtype, name)
            if exact and name in EXACT:
                np.testing.assert_array_equal(ours[name], one[name], err_msg=f"{n}: {name}")


@pytest.mark.parametrize("n_hidden", [64, 128, 200, 257])
@pytest.mark.parametrize("n_steps", [1, LONG])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_split_steps_equal_one_thread(n_hidden, n_steps, time_major, dtype):
    check(n_hidden, n_steps, dtype, time_major, "tanh")


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "relu"])
@pytest.mark.parametrize("n_hidden", [128, 200])
def test_every_nonlinearity(nonlinearity, n_hidden, dtype):
    check(n_hidden, LONG, dtype, False, nonlinearity)


@pytest.mark.parametrize("n_hidden", [128, 257])
def test_a_shorter_length(n_hidden, dtype):
    """N = 1 with lengths: the steps past the length do not run (their h zero, their norms
    zero, no gradient from them)."""
    check(n_hidden, LONG, dtype, False, "tanh", lengths=np.array([LONG - 7]))


def jordan_problem(n_hidden, n_output, n_steps, dtype, time_major, seed=0):
    """x, y0, Wx, Wy, b, Wo, bo, dy, dyT, xi for one sequence of Jordan's network."""
    rng = np.random.default_rng(seed)
    shape = (n_steps, 1, N_INPUT) if time_major else (1, n_steps, N_INPUT)
    x = rng.standard_normal(shape)
    weights = [rng.standard_normal((1, n_output)),
               rng.standard_normal((N_INPUT, n_hidden)) * 0.6 / np.sqrt(N_INPUT),
               rng.standard_normal((n_output, n_hidden)) * 0.6 / np.sqrt(n_output),
               rng.standard_normal(n_hidden) * 0.1,
               rng.standard_normal((n_hidden, n_output)) * 0.6 / np.sqrt(n_hidden),
               rng.standard_normal(n_output) * 0.1]
    dy = rng.standard_normal(shape[:2] + (n_output,))
    dyT = rng.standard_normal((1, n_output))
    args = [a.astype(dtype) for a in [x, *weights, dy, dyT]]
    return args + [np.resize([1.0, 0.0, 2.5, 1.0, 0.5], n_steps)]


def jordan_run(impl, args, opts, time_major):
    """Forward, forward again with out=, backward with xi, dyT and the norms, again with grads=,
    and with overwrite_cache."""
    *fargs, dy, dyT, xi = args
    y, cache = impl.jordan_forward(*fargs, **opts, time_major=time_major)
    out = {"y": y.copy(), "h": cache.h.copy()}
    y, cache = impl.jordan_forward(*fargs, **opts, time_major=time_major, out=cache)
    out["y out="] = y
    norms = np.full(len(xi), np.nan, y.dtype)
    grads = impl.jordan_backward(dy, cache, xi=xi, dyT=dyT, h_grad_norms=norms)
    out.update({name: getattr(grads, name).copy() for name in grads._fields})
    out["norms"] = norms
    again = impl.jordan_backward(dy, cache, xi=xi, dyT=dyT, grads=grads)
    out.update({f"{name} grads=": getattr(again, name) for name in ("dWx", "dWy", "dWo")})
    lean = impl.jordan_backward(dy, cache, xi=xi, dyT=dyT, overwrite_cache=True)
    out.update({f"{name} lean": getattr(lean, name) for name in ("dx", "dy0")})
    return out


def jordan_check(n_hidden, n_output, n_steps, dtype, time_major, opts):
    args = jordan_problem(n_hidden, n_output, n_steps, dtype, time_major)
    with fastbptt.num_threads(1):
        one = jordan_run(fastbptt, args, opts, time_major)
    theirs = jordan_run(ref, args, opts, time_major)
    # the per-step products are the loops on the weights in place (AVX2 build, weights of at
    # most 192 KiB), and the products over all steps are not split: all but the norms exact
    exact = use_avx2() and n_hidden * n_output * np.dtype(dtype).itemsize <= 192 * 1024
    for n in (2, 3):
        with fastbptt.num_threads(n):
            ours = jordan_run(fastbptt, args, opts, time_major)
        assert ours.keys() == theirs.keys()
        for name in theirs:
            assert_close(ours[name], theirs[name], dtype, name)
            assert_close(ours[name], one[name], dtype, name)
            if exact and name != "norms":
                np.testing.assert_array_equal(ours[name], one[name], err_msg=f"{n}: {name}")


@pytest.mark.parametrize("n_hidden", [64, 128, 200])
@pytest.mark.parametrize("n_output", [3, 40])
@pytest.mark.parametrize("n_steps", [1, LONG])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_jordan_split_steps_equal_one_thread(n_hidden, n_output, n_steps, time_major, dtype):
    check_opts = {"nonlinearity": "tanh", "output_nonlinearity": "identity"}
    jordan_check(n_hidden, n_output, n_steps, dtype, time_major, check_opts)


@pytest.mark.parametrize("opts", [{"nonlinearity": "relu", "output_nonlinearity": "tanh"},
                                  {"nonlinearity": "sigmoid", "output_nonlinearity": "sigmoid"}],
                         ids=["relu-tanh", "sigmoid-sigmoid"])
def test_jordan_every_nonlinearity(opts, dtype):
    jordan_check(200, 40, LONG, dtype, False, opts)


def test_the_split_is_at_panel_boundaries():
    """The columns cut where a packed panel ends, the parts differing by one panel at most;
    below MIN_PART_COLUMNS columns a part, no split."""
    from fastbptt._blas_hooks import column_parts_hook as cuts
    assert cuts(1, 64, 2, 4) == [0, 64]
    assert cuts(1, 128, 2, 4) == [0, 64, 128]
    assert cuts(1, 128, 3, 4) == [0, 64, 128]
    assert cuts(1, 200, 3, 4) == [0, 64, 128, 200]
    assert cuts(1, 200, 3, 8) == [0, 64, 128, 200]
    assert cuts(1, 257, 3, 4) == [0, 80, 176, 257]
    assert cuts(1, 257, 2, 8) == [0, 128, 257]
    assert cuts(2, 1024, 2, 4) == [0, 1024]
    assert cuts(1, 1024, 1, 4) == [0, 1024]


SCRIPT = textwrap.dedent("""
    import json, signal, threading, time
    import numpy as np
    import fastbptt

    armed = [False]

    def on_sigint(signum, frame):
        if armed[0]:      # a signal after the call returned (a late timer) is dropped
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def interrupt(call, after=0.005):
        # seconds from SIGINT to the KeyboardInterrupt, or None if the call finished first
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
    rnn = fastbptt.CELLS["rnn"]
    H, T = 128, 30_000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, T, 4)).astype(np.float32)
    Wx = (rng.standard_normal((4, H)) * 0.5).astype(np.float32)
    Wh = (rng.standard_normal((H, H)) * 0.5 / np.sqrt(H)).astype(np.float32)
    b = np.zeros(H, np.float32)
    h, cache = rnn.forward(x, None, Wx, Wh, b)
    report = {"forward": interrupt(lambda: rnn.forward(x, None, Wx, Wh, b)),
              "backward": interrupt(lambda: rnn.backward(None, cache)),
              "lean": interrupt(lambda: rnn.backward(None, cache, overwrite_cache=True))}
    jordan = fastbptt.CELLS["jordan"]
    Wy = (rng.standard_normal((H, H)) * 0.5 / np.sqrt(H)).astype(np.float32)
    jargs = (x, None, Wx, Wy, b, Wh, b)
    y, jcache = jordan.forward(*jargs)
    report["jordan forward"] = interrupt(lambda: jordan.forward(*jargs))
    report["jordan backward"] = interrupt(lambda: jordan.backward(None, jcache))
    # the threads work on after it: a short call, as on one thread
    h2 = rnn.forward(x[:, :500], None, Wx, Wh, b)[0]
    report["again"] = bool(np.allclose(h2, h[:, :500], rtol=1e-5, atol=1e-6))
    print(json.dumps(report))
""")


def test_ctrl_c_stops_a_split_call():
    report = run_script(SCRIPT, timeout=120, env={"FASTBPTT_NUM_THREADS": "2"})
    assert report.pop("again") is True
    assert any(seconds is not None for seconds in report.values()), report
    for name, seconds in report.items():
        # within a fraction of a second (the kernels look every 20 ms), or done before it came
        assert seconds is None or seconds < 1.0, (name, seconds)


FEWER = textwrap.dedent("""
    import json
    import numpy as np
    import fastbptt, fastbptt._threads, fastbptt._blas_threads

    fastbptt._threads.THREADED_WORK = 0
    fastbptt._blas_threads.SINGLE_THREADED_WORK = 0
    rnn = fastbptt.CELLS["rnn"]
    rng = np.random.default_rng(0)
    H, T = 128, 40
    x = rng.standard_normal((1, T, 8))
    Wx = rng.standard_normal((8, H)) * 0.2
    Wh = rng.standard_normal((H, H)) * 0.08
    b = np.zeros(H)
    out = {}
    for n in (1, 2):
        with fastbptt.num_threads(n):
            h, cache = rnn.forward(x, None, Wx, Wh, b)
            full = rnn.backward(np.ones_like(h), cache)
            lean = rnn.backward(np.ones_like(h), cache, overwrite_cache=True)
            out[n] = [h, full.dh0, full.dWh, lean.dh0, lean.dWh]
    print(json.dumps({"asked": fastbptt._threads._openmp_threads(),
                      "equal": [bool(np.allclose(a, b, rtol=1e-12, atol=1e-12))
                                for a, b in zip(out[1], out[2])]}))
""")


def test_a_team_smaller_than_asked_runs_alone():
    """OMP_THREAD_LIMIT=1: OpenMP still reports 2 threads for the calling thread, but gives the
    call's region one; the call must not wait at the barrier for a thread that never comes. It
    runs every column on the calling thread, with the one-thread results (to rounding: the
    products over all steps still run in two parts)."""
    report = run_script(FEWER, timeout=60, env={"OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "2",
                                                "FASTBPTT_NUM_THREADS": "2"})
    if report["asked"] == 1:
        pytest.skip("the kernels are built without OpenMP here: no call splits its steps")
    assert report["asked"] == 2, report
    assert report["equal"] == [True] * 5, report


TAKEN = textwrap.dedent("""
    import os
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})     # one core for both threads
    import json
    import numpy as np
    import fastbptt, fastbptt._threads, fastbptt._blas_threads
    from fastbptt._kernels import load

    fastbptt._threads.THREADED_WORK = 0
    fastbptt._blas_threads.SINGLE_THREADED_WORK = 0
    rng = np.random.default_rng(0)
    H, T = 256, 400
    x = rng.standard_normal((1, T, 8))
    Wx = rng.standard_normal((8, H)) * 0.2
    Wh = rng.standard_normal((H, H)) * 0.06
    b = np.zeros(H)
    jordan_args = (x, None, rng.standard_normal((8, H)) * 0.2,
                   rng.standard_normal((H, H)) * 0.06, np.zeros(H),
                   rng.standard_normal((H, H)) * 0.06, np.zeros(H))
    gated = {cell: (rng.standard_normal((8, g * H)) * 0.2,
                    rng.standard_normal((H, g * H)) * 0.06, np.zeros(g * H))
             for cell, g in (("lstm", 4), ("gru", 3))}
    out = {}
    for n in (1, 2):
        with fastbptt.num_threads(n):
            h, cache = fastbptt.rnn_forward(x, None, Wx, Wh, b)
            after_forward = load("_rnn").split_backoff()
            g = fastbptt.rnn_backward(np.ones_like(h), cache, h_grad_norms=np.empty(T))
            lean = fastbptt.rnn_backward(np.ones_like(h), cache, overwrite_cache=True)
            yj, cj = fastbptt.jordan_forward(*jordan_args)
            jordan_after_forward = load("_jordan").split_backoff()
            gj = fastbptt.jordan_backward(np.ones_like(yj), cj)
            out[n] = [h, g.dh0, g.dWh, lean.dh0, lean.dWh, yj, gj.dy0, gj.dWy]
            for cell in ("lstm", "gru"):
                record = fastbptt.CELLS[cell]
                hg, cg = record.forward(x, None, gated[cell][0], gated[cell][1],
                                        gated[cell][2])
                backoff = load("_" + cell).split_backoff()
                gg = record.backward(np.ones_like(hg), cg)
                out[n] += [hg, gg.dh0, gg.dWh]
                out[f"backoff {n}"] = out.get(f"backoff {n}", []) + [backoff]
            out[f"backoff {n}"] += [after_forward, load("_rnn").split_backoff(),
                                    jordan_after_forward]
    print(json.dumps({"asked": fastbptt._threads._openmp_threads(),
                      "backoff": [out["backoff 1"], out["backoff 2"]],
                      "equal": [bool(np.allclose(a, b, rtol=1e-10, atol=1e-12))
                                for a, b in zip(out[1], out[2])]}))
""")


def test_a_split_call_whose_threads_share_one_core_goes_on_alone():
    """Both threads of a split call on one core, as when the machine's cores are taken by
    other processes: every wait at the barrier outlasts its spinning, and after a few such
    waits the calling thread finishes the call alone (src/_spin.h) with the same results; the
    module's next calls then keep to one thread for a while (``split_backoff``)."""
    report = run_script(TAKEN, timeout=120, env={"OMP_NUM_THREADS": "2",
                                                 "FASTBPTT_NUM_THREADS": "2"})
    if report["asked"] == 1:
        pytest.skip("the kernels are built without OpenMP here: no call splits its steps")
    assert report["asked"] == 2, report
    assert report["equal"] == [True] * 14, report
    assert report["backoff"][0] == [0] * 5, report      # one thread: nothing to give up
    # each forward gave up, leaving its module's next call (its backward) to keep to one
    # thread; the RNN's backward did, and its lean backward split again, gave up again and
    # left two
    assert report["backoff"][1] == [1, 1, 1, 2, 1], report
