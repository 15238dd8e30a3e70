"""One sequence (N = 1) on several threads: the gated cells' kernels split each step between
the call's threads by hidden units (``src/_units.pxd``). At 2 and 3 threads every result of
the step loops (h, the final states, the gradients into the initial ones, the biases'
gradients) equals the one-thread result bit for bit, on inputs whose x_t Wx + b is exact in
any order (``exact_input_product``); the norms of dL/dh_t to rounding (the parts' sums are
joined), and so dx, dWx and dWh, products over all steps that BLAS runs split by rows or
columns between the threads (``src/_shards.pxd``; OpenBLAS may round the edge rows and
columns of a part otherwise than the whole's); all equal the reference to rounding. Where the
step's product is too narrow to split, or the products run on BLAS, the call runs its steps on
one thread. Ctrl-C stops a split call."""
import os
import textwrap

import numpy as np
import pytest
from conftest import assert_close, make_problem, run_script

import fastbptt
import fastbptt._blas_threads
import fastbptt._kernels
import fastbptt._threads
import fastbptt.reference as ref

GATED = ["lstm", "gru"]
# the products over all steps, split between threads by BLAS calls (results to rounding)
HOISTED = ("dx", "dWx", "dWh")
# (H, T): G*H < 128 (no split), a multiple of the panels, not one (67, 100), a last part of a
# few units (130); T = 1 runs the per-step products on Wh in place, T > 32 on Wh packed
SHAPES = [(16, 40), (64, 1), (64, 40), (67, 33), (100, 1), (100, 35), (130, 1), (130, 34)]


@pytest.fixture
def threaded(monkeypatch):
    """Every call threaded, however small."""
    monkeypatch.setattr(fastbptt._threads, "THREADED_WORK", 0)
    monkeypatch.setattr(fastbptt._blas_threads, "SINGLE_THREADED_WORK", 0)


def run_all(module, cell, args, kwargs, dh, lengths=None):
    """Forward, forward again with out=, backward with xi (zeros among it), the final states'
    gradients, norms and out=, backward again adding into grads=, then with overwrite_cache."""
    record = module.CELLS[cell]
    dtype = dh.dtype
    n_steps = dh.shape[0 if kwargs["time_major"] else 1]
    n_hidden = args[1].shape[1]
    rng = np.random.default_rng(3)
    finals = {f"d{s}T": rng.standard_normal((1, n_hidden)).astype(dtype)
              for s in record.states}
    xi = np.resize([1.0, 0.0, 2.5, 1.0, 0.5], n_steps)
    results = {}
    h, cache = record.forward(*args, **kwargs, lengths=lengths)
    results["h"] = h.copy()
    for state in record.states:
        results[f"{state}T"] = np.array(getattr(cache, f"{state}T"))
    h, cache = record.forward(*args, **kwargs, lengths=lengths, out=cache)
    results["h again"] = h
    norms = np.full(n_steps, np.nan, dtype)
    first = record.backward(dh, cache, xi=xi, h_grad_norms=norms, **finals)
    grads = {name: getattr(first, name).copy() for name in first._fields}
    grads.update({name: getattr(first, name).copy() for name in record.extra_grads})
    results.update(grads)
    results["norms"] = norms
    second = record.backward(dh, cache, grads=first)
    for name in record.weight_grads:
        results[f"{name} added"] = getattr(second, name)
    lean = record.backward(dh, cache, overwrite_cache=True, **finals)
    for name in lean._fields + tuple(record.extra_grads):
        results[f"{name} lean"] = getattr(lean, name)
    return results


def exact_input_product(args, seed=1):
    """x, Wx and b made of small multiples of 1/64 (the same values in the problem's dtype), so
    that x_t Wx + b is exact in any order: the products over all steps are BLAS's, split
    between threads by rows, and BLAS may round a part of a product otherwise than the whole
    (the column tail of a block), which would show in h. The per-step products are the
    library's own loops, whose elements do not depend on the split: those are what is checked
    bit for bit."""
    x, _, Wx, _, b = args
    rng = np.random.default_rng(seed)
    x[...] = rng.integers(-2, 3, x.shape)
    Wx[...] = rng.integers(-8, 9, Wx.shape) / 64
    b[...] = rng.integers(-8, 9, b.shape) / 64


def split_parts(cell, args, kwargs, n_threads):
    """The threads a call of these sizes on ``n_threads`` splits each step between."""
    kernels = fastbptt._kernels.load("_" + cell)
    _, cache = fastbptt.CELLS[cell].forward(*args, **kwargs)
    return kernels.split_parts(kernels.Buffers(cache), n_threads)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"H{s[0]}-T{s[1]}")
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_parts_equal_one_thread_bit_for_bit(cell, shape, time_major, dtype, threaded):
    n_hidden, n_steps = shape
    args, kwargs, dh = make_problem(cell, 1, n_steps, 3, n_hidden, dtype=dtype,
                                    time_major=time_major)
    exact_input_product(args)
    if n_steps > 1:     # a zero input step: x_t Wx = 0
        args[0][(slice(None), 2) if not time_major else (2, slice(None))] = 0
    with fastbptt.num_threads(1):
        alone = run_all(fastbptt, cell, args, kwargs, dh)
    want = run_all(ref, cell, args, kwargs, dh)
    for name in want:
        assert_close(alone[name], want[name], dtype, name)
    for n_threads in (2, 3):
        with fastbptt.num_threads(n_threads):
            got = run_all(fastbptt, cell, args, kwargs, dh)
        assert got.keys() == alone.keys()
        for name in alone:
            if name == "norms" or name.startswith(HOISTED):
                assert_close(got[name], alone[name], dtype, name)
            else:
                np.testing.assert_array_equal(got[name], alone[name],
                                              err_msg=f"{name}, {n_threads} threads")


@pytest.mark.parametrize("cell", GATED)
def test_where_a_step_is_split(cell, threaded):
    """Split where G*H >= 128 and the products are packed or on Wh in place (AVX2 build); not
    for G*H < 128, on one thread, or where BLAS takes the products."""
    avx2 = fastbptt._kernels.load("_" + cell).__name__.endswith("_avx2")
    G = fastbptt.CELLS[cell].n_gates

    def parts(n_hidden, n_steps, n_threads, dtype=np.float32):
        args, kwargs, _ = make_problem(cell, 1, n_steps, 3, n_hidden, dtype=dtype)
        return split_parts(cell, args, kwargs, n_threads)

    assert parts(16, 40, 2) == 1
    assert parts(64, 40, 1) == 1
    if not avx2:        # the baseline build's products are BLAS's
        assert parts(64, 40, 2) == 1
        return
    assert parts(64, 40, 2) == 2
    assert parts(64, 40, 3) == (3 if G * 64 >= 3 * 64 else 2)
    assert parts(100, 35, 3, np.float64) == 3
    assert parts(64, 1, 2) == 2                 # Wh in place
    assert parts(130, 1, 2) == 1                # Wh too large to read in place: BLAS


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_a_shorter_length(cell, time_major, dtype, threaded):
    """N = 1 with lengths shorter than T: the steps past it give nothing, as on one thread."""
    args, kwargs, dh = make_problem(cell, 1, 40, 3, 64, dtype=dtype, time_major=time_major)
    exact_input_product(args)
    lengths = np.array([33])
    with fastbptt.num_threads(1):
        alone = run_all(fastbptt, cell, args, kwargs, dh, lengths)
    want = run_all(ref, cell, args, kwargs, dh, lengths)
    with fastbptt.num_threads(2):
        got = run_all(fastbptt, cell, args, kwargs, dh, lengths)
    for name in want:
        assert_close(alone[name], want[name], dtype, name)
        assert_close(got[name], alone[name], dtype, name)
        if name != "norms" and not name.startswith(HOISTED):
            np.testing.assert_array_equal(got[name], alone[name], err_msg=name)


SCRIPT = textwrap.dedent("""
    import json, os, signal, threading, time
    import numpy as np
    import fastbptt
    import fastbptt._blas_threads, fastbptt._kernels, fastbptt._threads

    fastbptt._threads.THREADED_WORK = 0     # the short call after the others split too
    fastbptt._blas_threads.SINGLE_THREADED_WORK = 0

    def interrupt(call, after=0.02):
        '''call() with SIGINT sent after it started: the seconds from the signal to the
        KeyboardInterrupt, or None if the call finished first.'''
        sent, started = {}, threading.Event()
        def send():
            started.wait()
            time.sleep(after)
            sent["t"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGINT)
        sender = threading.Thread(target=send)
        sender.start()
        try:
            started.set()
            call()
        except KeyboardInterrupt:
            return time.perf_counter() - sent["t"]
        finally:
            sender.join()
        return None

    fastbptt.set_num_threads(2)
    report = {}
    for cell in ("lstm", "gru"):
        record = fastbptt.CELLS[cell]
        kernels = fastbptt._kernels.load("_" + cell)
        G, H, T = record.n_gates, 64, 200_000
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, T, 2)).astype(np.float32)
        Wx = (rng.standard_normal((2, G * H)) * 0.5).astype(np.float32)
        Wh = (rng.standard_normal((H, G * H)) * 0.2).astype(np.float32)
        b = np.zeros(G * H, np.float32)
        with fastbptt.num_threads(1):       # on a busy machine, spinning threads crawl
            h, cache = record.forward(x, None, Wx, Wh, b)
        parts = kernels.split_parts(kernels.Buffers(cache), 2)
        norms = np.full(T, -1.0, np.float32)
        report[cell] = {
            "parts": parts,
            "forward": interrupt(lambda: record.forward(x, None, Wx, Wh, b)),
            "backward": interrupt(lambda: record.backward(None, cache, h_grad_norms=norms)),
            "stopped_early": bool(norms[0] == -1)}
        # the threads work on after an interrupted call: a short split call as on one thread
        short = []
        for n in (2, 1):
            with fastbptt.num_threads(n):
                h, cache = record.forward(x[:, :40], None, Wx, Wh, b)
                short.append([h, record.backward(None, cache).dh0])
        report[cell]["after"] = all(np.allclose(a, b, rtol=1e-5, atol=1e-6)
                                    for a, b in zip(*short))
    print(json.dumps(report))
""")


@pytest.mark.skipif(os.name != "posix", reason="sends itself SIGINT")
def test_ctrl_c_stops_a_split_call():
    report = run_script(SCRIPT, timeout=300, env={"FASTBPTT_NUM_THREADS": "2"})
    for cell, r in report.items():
        # interrupted within a fraction of a second (the kernels look every 20 ms), or the
        # call finished before the signal came (a machine loaded many times over)
        for name in ("forward", "backward"):
            assert r[name] is None or r[name] < 1.0, (cell, r)
        if r["backward"] is not None:
            assert r["stopped_early"], (cell, r)
        assert r["after"], (cell, r)
        if fastbptt._kernels.load("_" + cell).__name__.endswith("_avx2"):
            assert r["parts"] == 2, (cell, r)


FEWER = textwrap.dedent("""
    import json
    import numpy as np
    import fastbptt, fastbptt._threads, fastbptt._blas_threads

    fastbptt._threads.THREADED_WORK = 0
    fastbptt._blas_threads.SINGLE_THREADED_WORK = 0
    report = {"asked": fastbptt._threads._openmp_threads()}
    for cell in ("lstm", "gru"):
        record = fastbptt.CELLS[cell]
        G, H, T = record.n_gates, 64, 40
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, T, 8))
        Wx = rng.standard_normal((8, G * H)) * 0.2
        Wh = rng.standard_normal((H, G * H)) * 0.1
        b = np.zeros(G * H)
        out = {}
        for n in (1, 2):
            with fastbptt.num_threads(n):
                h, cache = record.forward(x, None, Wx, Wh, b)
                norms = np.empty(T)
                full = record.backward(np.ones_like(h), cache, h_grad_norms=norms)
                lean = record.backward(np.ones_like(h), cache, overwrite_cache=True)
                out[n] = [h, norms, full.dh0, full.dWh, lean.dh0, lean.dWh]
        report[cell] = [bool(np.allclose(a, b, rtol=1e-12, atol=1e-12))
                        for a, b in zip(out[1], out[2])]
    print(json.dumps(report))
""")


def test_a_team_smaller_than_asked_runs_alone():
    """OMP_THREAD_LIMIT=1: OpenMP reports 2 threads for the calling thread but gives the call's
    region one; the call must not wait at the barrier for a thread that never comes. It runs
    every unit on the calling thread, with the one-thread results (to rounding: the products
    over all steps still run in two parts)."""
    report = run_script(FEWER, timeout=60, env={"OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "2",
                                                "FASTBPTT_NUM_THREADS": "2"})
    if report["asked"] == 1:
        pytest.skip("the kernels are built without OpenMP here: no call splits its steps")
    assert report["asked"] == 2, report
    for cell in ("lstm", "gru"):
        assert report[cell] == [True] * 6, (cell, report)
