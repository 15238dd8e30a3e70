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
    assert len(inside) > 10 and gaps.max() < 0.25 * (end - start), (len(inside), gaps.max(), end - start)
