# cython: language_level=3
"""Ctrl-C during a long kernel call: the loops look for signals now and then.

A kernel runs without the GIL, and Python runs a signal's handler (SIGINT: KeyboardInterrupt)
only when the main thread runs Python code, so a long call would see Ctrl-C only when it
returned. The time-step loops call ``interrupted(&w)`` once per step, and the products hoisted
out of them call ``interrupted_now(&w)`` between their blocks of rows (``src/_hoisted.pxd``).
Every ``w.every`` steps, about 2**20 multiply-adds of the per-step product (0.1 to 1 ms; a look
at the clock every step cost a few percent of a short call), ``interrupted`` reads the monotonic
clock; once ``CHECK_SECONDS`` have passed since the call started or since the last look, it
takes the GIL and runs Python's signal handlers
(``PyErr_CheckSignals``). If one raised (KeyboardInterrupt), ``interrupted`` returns True from
then on: the loop stops, the kernel skips what is left, and ``raise_pending`` raises that
exception once the kernel holds the GIL again (no exception is raised without it).

Only the main thread looks, since Python runs signal handlers there alone: kernels in other
threads never wait for the GIL. A call shorter than ``CHECK_SECONDS`` never takes it. A ``Watch``
pointer may be NULL: never interrupted (the BLAS floor of the benchmarks).
"""
from cpython.module cimport PyImport_ImportModule
from cpython.pythread cimport PyThread_get_thread_ident
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "Python.h":
    # declared without Cython's exception check: the exception it sets stays pending until
    # raise_pending raises it
    int check_signals "PyErr_CheckSignals" ()

cdef extern from *:
    """
    #define FASTBPTT_CHECK_SECONDS 0.02   /* between two looks for signals */
    #define FASTBPTT_STEP_WORK 1048576.0  /* multiply-adds between two looks at the clock */
    static unsigned long fastbptt_main_thread = 0;   /* its ident; 0 until looked up */
    static void fastbptt_set_main_thread(unsigned long ident) { fastbptt_main_thread = ident; }
    """
    double CHECK_SECONDS "FASTBPTT_CHECK_SECONDS"
    double STEP_WORK "FASTBPTT_STEP_WORK"
    unsigned long main_thread "fastbptt_main_thread"
    void set_main_thread "fastbptt_set_main_thread" (unsigned long ident)


cdef struct Watch:
    bint on               # this call looks for signals: it runs in the main thread
    bint stopped          # a signal handler raised: its exception is pending
    Py_ssize_t every      # steps between two looks at the clock
    Py_ssize_t left       # steps until the next look
    double due            # the time of the next look for signals


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double> ts.tv_sec + 1e-9 * <double> ts.tv_nsec


cdef inline Watch watch(double step_work) except *:
    """A watch for one kernel call, made holding the GIL; ``step_work`` is the multiply-adds of
    one step's product (N * G*H * H)."""
    cdef Watch w
    if main_thread == 0:
        set_main_thread(PyImport_ImportModule("threading").main_thread().ident)
    w.on = <unsigned long> PyThread_get_thread_ident() == main_thread
    w.stopped = False
    w.every = <Py_ssize_t> (STEP_WORK / step_work) if step_work < STEP_WORK else 1
    w.left = w.every
    w.due = _now() + CHECK_SECONDS if w.on else 0
    return w


cdef inline bint interrupted_now(Watch* w) noexcept nogil:
    """Whether a signal handler raised: looks for signals (taking the GIL) if CHECK_SECONDS have
    passed since the last look; True from then on."""
    cdef double now
    if w == NULL or not w.on:
        return False
    if w.stopped:
        return True
    now = _now()
    if now < w.due:
        return False
    w.due = now + CHECK_SECONDS
    with gil:
        w.stopped = check_signals() != 0
    return w.stopped


cdef inline bint interrupted(Watch* w) noexcept nogil:
    """``interrupted_now`` once every ``w.every`` calls (one per step), else False (or True once
    stopped)."""
    if w == NULL or not w.on:
        return False
    if w.stopped:
        return True
    w.left -= 1
    if w.left > 0:
        return False
    w.left = w.every
    return interrupted_now(w)


cdef inline int raise_pending(const Watch* w) except -1:
    """Raise what a signal handler raised during the call, if it did (holding the GIL)."""
    if w.stopped:
        return -1          # the exception is set: the caller's check of -1 raises it
    return 0
