# cython: language_level=3
"""One sequence of a gated cell (the LSTM, the GRU) split between threads by hidden units.

Where a call of one sequence has c.n_parts > 1 (``src/_call.pxd``, ``src/_columns.pxd``), its
threads each own a part of the hidden units, cut at panel boundaries (``part_first(H,
panel_columns(itemsize), n_parts, s)``), and with them the G gate columns of those units in
every per-step buffer: a thread's gate math needs only its own columns of the step's product
h_{t-1} @ Wh in forward, and in backward its own carries; the barrier of each step comes
before the product that reads the whole row the other threads wrote (h_{t-1} in forward, the
pre-activations' gradients in backward).

Each element of a part's product must be the sum the one-thread call makes, so that the
results are the same bit for bit; the part's products therefore run on what the one-thread
call runs on (``split_route``):

    SPLIT_PACKED   the call packs Wh (the AVX2 build; one sequence over at least
                   FEW_PACK_STEPS steps, ``src/_packed.pxd``): each part packs its own columns
                   of Wh (forward: its G column blocks one after the other,
                   ``units_packed_len``) or of Wh.T (backward: its panels of the whole packing,
                   where that puts them), in the one workspace, each element one FMA chain
                   over k in order as in the one-thread product
    SPLIT_FEW      the call reads Wh in place with the few-rows loops (``src/_few.h``): the
                   part's products on its columns (forward) or rows (backward) of Wh, per
                   element the same loops
    NO_SPLIT       BLAS takes the products (the baseline build, or Wh too large to read in
                   place over a short call): its sums over a part of the columns need not be
                   those over all of them, so the step loop runs on one thread

    split_route(c, packed, n_gates, itemsize)   the route of a call; ``packed`` the workspace
    units_of(n_hidden, itemsize, n_parts, p)    part p's units: first unit, count, count
                                                rounded up to whole panels

Thread s runs part s. Thread 0 runs every part, one after the other, where the parallel region
got fewer threads than it asked for (``team_size``), or from the step after a barrier whose
verdict says the waits were slow (``BARRIER_ALONE``, ``src/_columns.pxd``); a part's results
are the same on any thread.
"""
from _call cimport Call
from _columns cimport part_first
from _packed cimport FEW_GEMM, FEW_IN_PLACE, panel_columns, units_packed_len

cdef enum:
    NO_SPLIT = 0
    SPLIT_PACKED = 1
    SPLIT_FEW = 2

cdef struct Units:
    Py_ssize_t u0       # the first unit
    Py_ssize_t n        # units: u0 .. u0 + n - 1
    Py_ssize_t n_pad    # n rounded up to whole panels


cdef inline int split_route(const Call* c, const Py_buffer* packed, int n_gates,
                            Py_ssize_t itemsize) noexcept nogil:
    """How a call of one sequence runs its steps: split by hidden units between c.n_parts
    threads on Wh packed by parts (SPLIT_PACKED: the workspace ``packed`` has the room,
    ``units_packed_len``) or on Wh in place (SPLIT_FEW: nothing is packed and the one-thread
    call runs the few-rows loops), else on one thread (NO_SPLIT)."""
    cdef Py_ssize_t H = c.n_hidden
    cdef Py_ssize_t need = units_packed_len(c.n_hidden, n_gates, <int> itemsize)
    if c.n_parts < 2:
        return NO_SPLIT
    if need and packed.len >= need * itemsize:
        return SPLIT_PACKED
    if packed.len == 0 and FEW_GEMM and n_gates * H * H * itemsize <= FEW_IN_PLACE:
        return SPLIT_FEW
    return NO_SPLIT


cdef inline Units units_of(int n_hidden, Py_ssize_t itemsize, int n_parts,
                           int s) noexcept nogil:
    """Part s of n_parts of the n_hidden units, cut at panel boundaries (it may be empty)."""
    cdef Units u
    cdef int nr = panel_columns(itemsize)
    u.u0 = part_first(n_hidden, nr, n_parts, s)
    u.n = part_first(n_hidden, nr, n_parts, s + 1) - u.u0
    u.n_pad = (u.n + nr - 1) // nr * nr
    return u
