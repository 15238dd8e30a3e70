# cython: language_level=3
"""One sequence on several threads: each step's columns split between them.

A call with one sequence (N = 1) has no shards of sequences to give its threads
(``src/_shards.pxd``), and its steps depend on each other. What is left is each step's own
work: the product ``h_{t-1} @ Wh`` (1, W) with W = G*H columns, and the elementwise work on its
outputs. The call's ``n_parts`` threads each own a part of the columns (hidden units, for the
gated cells: a unit's G gate columns with it), run one parallel region for the whole step loop,
and after each step wait at a spinning barrier (``src/_spin.h``) before any of them reads the
whole row it needs for the next step. Every element of a step is computed by one thread, as
the same sum in the same order as on one thread, so the states (and the carries of a backward)
equal the one-thread ones bit for bit where the per-step products are this library's own loops
(``src/_packed.h``, ``src/_few.h``). The products over all steps run on the same threads, split
by rows or columns (``src/_shards.pxd``) through BLAS, which may round a part of a product
otherwise than the whole: what they give (X @ Wx, dx, the weight gradients) equals the
one-thread results to rounding.

Where it pays (measured in ``benchmarks/one_stream_columns.c``; ``benchmarks/RESULTS.md``,
"One stream on two cores"): a barrier costs 25-50 ns and the exchange of the row about as much
again, so a part of fewer than MIN_PART_COLUMNS columns loses more than it gains (the Elman
RNN at H = 64: 0.54-1.14x on two threads; from 128 columns 1.4-2.2x).

    column_parts(n_batch, width, n_threads)   the parts a call splits each step into: 1 (no
                                              split) unless N == 1, several threads and at
                                              least MIN_PART_COLUMNS columns a part
    part_first(width, unit, n_parts, s)       the first of part s's ``width`` columns (s =
                                              n_parts: width), cut in whole units of ``unit``
                                              columns (a packed panel; 1 for hidden units), the
                                              parts differing by one unit at most

The barrier:

    cdef SpinBarrier bar            shared by the threads of the region
    barrier_init(&bar, n_parts)     before the region
    verdict = barrier_wait(&bar, &sense, asked)
                                    each thread's ``sense`` (0 before its first wait) is its own;
                                    ``asked``: this thread saw Ctrl-C (the calling thread
                                    alone looks, ``src/_interrupt.pxd``); the verdict, alike on
                                    every thread: BARRIER_STOP if any asked, so all stop after
                                    the same step; BARRIER_ALONE if too many waits were slow
                                    (the machine's cores are taken): every thread but the
                                    calling one leaves, and that one computes every column from
                                    the next piece of work on
    fetch_row(row, n_bytes)         prefetch a row the other threads have just written
    split_ended(went_alone)         after a split call, holding the GIL: a call that had to
                                    go on alone makes the next calls of this module run on one
                                    thread (``column_parts``), 1, 2, 4, ... up to 1024 of them as
                                    such calls follow one another; one that did not resets it
    team_size()                     the threads of the OpenMP team running the caller (1
                                    outside a parallel region or without OpenMP): a region
                                    given fewer threads than n_parts (OpenMP's limits) must not
                                    wait at a barrier for threads that never come
"""

cdef extern from "_spin.h" nogil:
    int SPIN_BARRIER
    int BARRIER_STOP
    int BARRIER_ALONE
    ctypedef struct SpinBarrier "fastbptt_spin_barrier":
        int n_threads
    void barrier_init "fastbptt_barrier_init" (SpinBarrier* b, int n_threads)
    int barrier_wait "fastbptt_barrier_wait" (SpinBarrier* b, int* sense, int stop)
    void fetch_row "fastbptt_fetch_row" (const void* row, size_t n_bytes)

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastbptt_team_size(void) { return omp_get_num_threads(); }
    #else
    static int fastbptt_team_size(void) { return 1; }
    #endif
    """
    int team_size "fastbptt_team_size" () noexcept nogil

cdef extern from *:
    """
    /* this module's split calls: calls left to run on one thread, and how many the next call
       that has to go on alone will leave so (read and written holding the GIL) */
    static int fastbptt_split_skip = 0;
    static int fastbptt_split_backoff = 1;
    static int fastbptt_split_allowed(void)
    {
        if (fastbptt_split_skip <= 0)
            return 1;
        fastbptt_split_skip--;
        return 0;
    }
    static void fastbptt_split_ended(int went_alone)
    {
        if (!went_alone) {
            fastbptt_split_backoff = 1;
            return;
        }
        fastbptt_split_skip = fastbptt_split_backoff;
        if (fastbptt_split_backoff < 1024)
            fastbptt_split_backoff *= 2;
    }
    """
    int split_skip "fastbptt_split_skip"
    bint split_allowed "fastbptt_split_allowed" () noexcept nogil
    void split_ended "fastbptt_split_ended" (bint went_alone) noexcept nogil

cdef enum:
    # columns of a step's product per thread at least: 64 columns are 4 float32 (8 float64)
    # panels of the packed product, the fewest that keep its accumulator chains busy
    MIN_PART_COLUMNS = 64


cdef inline int column_parts(int n_batch, int width, int n_threads) noexcept nogil:
    """The threads a call of n_batch sequences whose per-step product has ``width`` columns
    splits each step between: 1 unless one sequence, several threads allowed and at least
    MIN_PART_COLUMNS columns for each, and not while calls that had to go on alone tell this
    module's calls to keep to one thread (``split_ended``). Holding the GIL."""
    cdef int most = width // MIN_PART_COLUMNS
    if n_batch != 1 or n_threads < 2 or most < 2 or not SPIN_BARRIER or not split_allowed():
        return 1
    return n_threads if n_threads < most else most


cdef inline bint leaves(int verdict, int s) noexcept nogil:
    """Whether thread s leaves the step loop after a wait whose verdict is ``verdict``: every
    thread on BARRIER_STOP, every thread but the calling one (s = 0) on BARRIER_ALONE, which
    then computes every column itself."""
    return (verdict & BARRIER_STOP) != 0 or (verdict != 0 and s > 0)


cdef inline int part_first(int width, int unit, int n_parts, int s) noexcept nogil:
    """The first of part s's columns (of n_parts; s = n_parts: ``width``), ``width`` columns
    cut in units of ``unit`` (the last unit may be short)."""
    cdef Py_ssize_t n_units = (width + unit - 1) // unit
    cdef Py_ssize_t first = n_units * s // n_parts * unit
    return <int> (first if first < width else width)
