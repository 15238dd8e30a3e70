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
    pack_part_columns(p, ...), pack_part_rows(p, ...)
                                                part p's share of SPLIT_PACKED's packing of
                                                Wh (forward) and of Wh.T (backward)

Thread s runs part s. Thread 0 runs every part, one after the other, where the parallel region
got fewer threads than it asked for (``team_size``), or from the step after a barrier whose
verdict says the waits were slow (``BARRIER_ALONE``, ``src/_columns.pxd``); a part's results
are the same on any thread.
"""
from _call cimport Call
from _columns cimport part_first
from cython cimport floating

from _blas cimport NO_TRANS, TRANS
from _packed cimport FEW_GEMM, FEW_IN_PLACE, panel_columns, units_pack, units_packed_len

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


cdef inline void pack_part_columns(int p, int n_parts, int n_gates, int n_hidden,
                                   const floating* Wh, floating* packed) noexcept nogil:
    """Part p's column blocks Wh[:, g*H + u0 : g*H + u0 + n] of the G = n_gates gate blocks of
    Wh (H, G*H), each padded to whole panels, one after the other, at packed + G * u0 * H
    (``units_packed_len``; packed 64-byte aligned): what forward's part p reads."""
    cdef int H = n_hidden, g
    cdef Units part = units_of(H, sizeof(floating), n_parts, p)
    for g in range(n_gates if part.n > 0 else 0):
        units_pack(NO_TRANS, H, <int> part.n, Wh + g * H + part.u0, n_gates * H,
                   packed + n_gates * part.u0 * H + g * part.n_pad * H)


cdef inline void pack_part_rows(int p, int n_parts, int n_gates, int n_hidden,
                                const floating* Wh, floating* packed) noexcept nogil:
    """Part p's rows of Wh (H, G*H), G = n_gates, as the panels of their transpose:
    op(Wh[u0:u0+n]) = Wh[u0:u0+n].T (G*H, n), at packed + u0 * G*H, where the packing of the
    whole Wh.T puts them: what backward's part p reads."""
    cdef int n_gh = n_gates * n_hidden
    cdef Units part = units_of(n_hidden, sizeof(floating), n_parts, p)
    if part.n > 0:
        units_pack(TRANS, n_gh, <int> part.n, Wh + part.u0 * n_gh, n_gh,
                   packed + part.u0 * n_gh)
