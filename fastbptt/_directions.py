"""A bidirectional layer's two directions at once, each on its share of the threads.

The forward and reverse directions of a layer read the same input and share nothing else, and
the kernels release the GIL, so the two can run side by side: the calling thread runs the first
and one worker thread, started once per process and reused, runs the second. With n threads the
first runs on n // 2 of them and the second (the reverse direction, whose sequences are copied
into the kernels' order and back, ``fastbptt._lengths``) on n - n // 2: with two threads, one
each, so a bidirectional layer costs about one direction's time on two cores. Each direction's
arithmetic is what it would be alone, so the results are the same to the bit; only where it runs
changes.

The pair holds the threads' team (``fastbptt._threads``) for both directions: the two take no
team of their own, and other kernel calls of the process that start meanwhile run on one thread,
as beside any call using the threads. Where the team is taken, only one thread is available, or
the layer is small (its largest product below ``THREADED_WORK`` multiply-adds, where waking
another thread costs more than it saves), the two run one after the other on the calling thread.

An exception in either direction is raised in the caller once both have stopped. Ctrl-C stops
the calling thread's direction within the kernels' time between two looks for signals; the
worker's direction cannot see it (Python runs signal handlers in the main thread only), so the
call raises KeyboardInterrupt when that one is done, at most one direction's time later.
"""
import os
import queue
import threading

from . import _threads


class _Worker:
    """One daemon thread that runs one function at a time for the thread holding the team."""

    def __init__(self):
        self._jobs = queue.SimpleQueue()
        self._done = threading.Event()
        self._result = None
        threading.Thread(target=self._serve, name="fastbptt-direction", daemon=True).start()

    def _serve(self):
        while True:
            call, n_threads = self._jobs.get()
            try:
                with _threads.share(n_threads):
                    self._result = (True, call())
            except BaseException as err:    # raised in the caller (KeyboardInterrupt too)
                self._result = (False, err)
            self._done.set()

    def start(self, call, n_threads):
        """Run ``call()`` on the worker with kernel calls on ``n_threads`` threads."""
        self._done.clear()
        self._jobs.put((call, n_threads))

    def wait(self):
        """Wait for the call ``start`` began: ``(finished, value or exception)``. Waits it
        out even through Ctrl-C, which it raises afterwards: the worker's call cannot be
        stopped, and must not outlive this one."""
        interrupted = None
        while True:
            try:
                self._done.wait()       # returns at once once set: safe to repeat
                break
            except BaseException as err:
                if interrupted is None:
                    interrupted = err
        result, self._result = self._result, None
        if interrupted is not None:
            raise interrupted
        return result


_worker = {"worker": None}


def _forget_worker():
    _worker["worker"] = None        # a forked child has no such thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker)


def _get_worker():
    worker = _worker["worker"]
    if worker is None:
        worker = _worker["worker"] = _Worker()
    return worker


def both_directions(run, work):
    """``(run(0), run(1))``: a bidirectional layer's forward direction (0) and reverse
    direction (1), at once on two threads where that pays (see the module docstring), else one
    after the other. ``work`` is the multiply-adds of a direction's largest product
    (``fastbptt._blas_threads.largest_product``), or 0 to run them one after the other."""
    n_threads = _threads.team_threads() if work >= _threads.THREADED_WORK else 0
    if not n_threads:
        return run(0), run(1)
    try:
        worker = _get_worker()
        worker.start(lambda: run(1), n_threads - n_threads // 2)
        try:
            with _threads.share(n_threads // 2):
                first = run(0)
        except BaseException:
            worker.wait()       # the worker's direction is done before the error goes on
            raise
        finished, second = worker.wait()
    finally:
        _threads._team.release()
    if not finished:
        raise second
    return first, second
