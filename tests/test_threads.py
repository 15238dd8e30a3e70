"""The kernels release the GIL: another Python thread makes progress during one long call."""
import threading
import time

import numpy as np

import fastbptt


def test_gil_is_released_during_a_kernel_call():
    rng = np.random.default_rng(0)
    n_steps, n_hidden = 200_000, 64
    x = rng.standard_normal((1, n_steps, 8))
    Wx = rng.standard_normal((8, n_hidden)) * 0.1
    Wh = rng.standard_normal((n_hidden, n_hidden)) * 0.1
    b = np.zeros(n_hidden)
    stamps = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.0005)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        time.sleep(0.01)
        start = time.perf_counter()
        fastbptt.rnn_forward(x, None, Wx, Wh, b)   # one kernel call
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    inside = [s for s in stamps if start <= s <= end]
    # with the GIL held the ticker could not run at all during the call: one gap as long as it
    assert end - start > 0.05, "the call was too short to tell"
    gaps = np.diff([start] + inside + [end])
    assert len(inside) > 10 and gaps.max() < 0.25 * (end - start), (
        len(inside), gaps.max(), end - start)


def test_set_blas_threads_validates_and_keeps_results():
    import pytest
    from conftest import make_problem

    with pytest.raises(ValueError, match="n_threads must be an int >= 1 or None"):
        fastbptt.set_blas_threads(0)
    with pytest.raises(ValueError, match="n_threads must be an int >= 1 or None"):
        fastbptt.set_blas_threads(2.0)
    args, kwargs, dh = make_problem("rnn", 8, 20, 16, 32)
    results = []
    try:
        for n in (None, 2, 1):
            fastbptt.set_blas_threads(n)
            h, cache = fastbptt.rnn_forward(*args, **kwargs)
            results.append((h.copy(), *fastbptt.rnn_backward(dh, cache)))
    finally:
        fastbptt.set_blas_threads(1)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_run_kernel_sets_and_restores_the_blas_thread_count():
    from fastbptt import _blas_threads

    controls = _blas_threads._controls()
    if controls is None:
        import pytest
        pytest.skip("SciPy's BLAS here is not an OpenBLAS fastbptt can steer")
    _, get_threads = controls
    before = get_threads()
    # the shapes of x (T, N, D) and Wh (H, G*H) give the size of the call's largest product
    big = (np.broadcast_to(np.zeros(1), (1000, 10, 64)), np.zeros((64, 64)))
    assert _blas_threads.largest_product(*big) >= 10 * _blas_threads.SINGLE_THREADED_WORK
    with fastbptt.num_threads(1):
        assert _blas_threads.run_kernel(get_threads, *big) == 1
        assert get_threads() == before
        # nested (concurrent) calls: the count is restored only when the last one returns
        assert _blas_threads.run_kernel(
            lambda: (_blas_threads.run_kernel(get_threads, *big), get_threads()), *big) == (1, 1)
        assert get_threads() == before
        # a small call leaves the count alone: OpenBLAS would not thread it anyway
        assert _blas_threads.run_kernel(
            get_threads, np.zeros((1, 1, 1)), np.zeros((1, 1))) == before
    # a call on several fastbptt threads runs BLAS on one thread in each
    with fastbptt.num_threads(2):
        n_threads, blas = _blas_threads.run_kernel(lambda n_threads=1: (n_threads, get_threads()),
                                                   *big)
    assert blas == 1 and n_threads == min(2, fastbptt._threads._openmp_threads())
    assert get_threads() == before


def test_concurrent_calls_give_the_sequential_results():
    """Kernels on several Python threads at once (the GIL released, BLAS's thread count shared)
    give exactly what they give one after another."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import make_problem

    jobs = [(cell, seed) for seed in range(4) for cell in fastbptt.CELLS]

    def run(job):
        cell, seed = job
        # large enough that the BLAS thread bookkeeping runs, not only the small-call path
        args, kwargs, dh = make_problem(cell, 16, 60, 32, 48, seed=seed)
        record = fastbptt.CELLS[cell]
        h, cache = record.forward(*args, **kwargs)
        return (h.copy(), *record.backward(dh, cache))

    # one fastbptt thread per call: a call that finds the threads taken runs on one, and the
    # GRU's bias gradients are summed in another order on several (tests/test_num_threads.py
    # compares threaded calls running at once)
    with fastbptt.num_threads(1):
        sequential = [run(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(run, jobs))
    for seq, con in zip(sequential, concurrent):
        for a, b in zip(seq, con):
            np.testing.assert_array_equal(a, b)
