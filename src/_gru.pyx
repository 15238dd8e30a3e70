# cython: language_level=3
"""GRU kernels: the forward time-step loop and backpropagation through time.

Gate blocks (r, z, n) are column blocks of Wx, Wh, b and bh (PyTorch semantics):

    [xr xz xn] = x_t Wx + b,    [hr hz hn] = h_{t-1} Wh + bh
    r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
    h_t = (1 - z) * n + z * h_{t-1}

Every per-step buffer (x, h, gates, hn, dh, dAh, dxn, dx) is C-contiguous in the caller's
layout, batch-major (N, T, .) or time-major (T, N, .) (``time_major``), and no copy is made of
either: step t is an (N, .) matrix whose rows are n_rows * width apart (``src/_layout.pxd``).
Below, buf[t] is step t of a buffer in either layout. Math symbols and variables (shapes;
T = n_steps, N = n_batch, D = n_input, H = n_hidden; "block" k of a row is its columns k*H to
(k+1)*H):

    x_t                x[t]           (N, D)    input of step t
    h_{t-1}            h0 or h[t-1]   (N, H)    state step t receives
    h_t                h[t]           (N, H)
    Wx, Wh             Wx, Wh         (D, 3H), (H, 3H)
    b, bh              b, bh          (3H,)     input-side and hidden-side biases
    x_t Wx             gates[t]       (N, 3H)   written by the hoisted input GEMM (b is added in
    r, z, n            gates[t]       (N, 3H)   the step's pass), then overwritten by the gates
    h_{t-1} Wh         hh             (N, 3H)   workspace (bh is added in the pass)
    hn                 hn[t]          (N, H)    h_{t-1} Wh_n + bh_n, kept for backward
    dL/dh_t            dh[t]          (N, H)    upstream gradient of step t's output
    g                  dh[t] + carry  (N, H)    the whole gradient dL/dh_t
    g (one row)        g_row          (H,)      workspace: g of the row the pass is at
    dL/dhr, dL/dhz,    dAh[t]         (N, 3H)   workspace: the hidden-side pre-activation
      dL/dhn                                    gradients, blocks [dhr dhz dhn]
    dL/dxn             dxn[t]         (N, H)    workspace; the input-side gradients are
                                                [dxr dxz dxn] = [dAh[t][:, :2H] | dxn[t]], as
                                                dxr = dhr and dxz = dhz
    xi_t               xi[t]                    truncation multiplier of all that step t sends
                                                back to h_{t-1}
    carry              carry          (N, H)    gradient reaching h_t through step t+1: dhT at
                                                the start, dL/dh0 at the end
    ||dL/dh_t||        norms[t]                 Frobenius norm of g, only if norms is given

With overwrite_cache, dAh is gates itself and dxn is hn itself: dhr over r, dhz over z, dhn over
n, dxn over hn, each once it is read.

Backward of one step, from g = dL/dh_t:

    dL/dxn = g (1 - z) (1 - n^2)            dL/dhn = r dL/dxn
    dL/dxr = dL/dhr = dL/dxn hn r (1 - r)
    dL/dxz = dL/dhz = g (h_{t-1} - n) z (1 - z)
    dL/dh_{t-1} = xi_t (g z + dAh_t Wh^T)

Forward: one hoisted GEMM X @ Wx for all steps, then per step one GEMM h_{t-1} @ Wh and one
elementwise pass. Backward: per step one elementwise pass and one GEMM dAh_t @ Wh.T (skipped
where xi_t == 0); db and dbh are summed in the pass, while the rows are in L1; then dWh, dWx and
dx as products over all steps (two each for dWx and dx, one for [dxr dxz] and one for dxn).
The weight gradients are written (``write_weight_grads``: db and dbh set to zero before the
loop, the first product into each column block of dWh and dWx with beta = 0) or accumulated
into the arrays passed in.
The AVX2 build packs Wh (forward) or Wh.T (backward) once per call into the workspace
``packed`` and runs the per-step products on it (``src/_packed.pxd``); the baseline build calls
BLAS.

A cache's arrays (x, h0, Wx, Wh, b, bh, h, gates, hn) and the workspaces (hh, g_row, dAh, dxn,
packed, shard_rows, norm_parts) reach the kernels as one ``Buffers``, made once per cache and
read by name (``src/_held.pxd``); only the arrays of one call (dh, xi, the carry, dx, the weight
gradients, the norms) are arguments. What a call derives from them and from its arguments before
its loops (sizes, strides, the rows that run, threads, the watch for Ctrl-C) is one ``Call``
(``src/_call.pxd``), which also tells how sequences of unequal lengths (``active``) and several
threads (``n_threads``) run.

What runs on which thread: with several sequences, each thread runs the whole loop over a shard
of them (``src/_shards.pxd``; db and dbh per shard, joined in shard order). One sequence
(N = 1) whose step has at least 64 columns a thread (3H >= 128, H >= 43) runs on c.n_parts
threads split by hidden units (``src/_units.pxd``): thread s owns units u0 .. u1 (whole panels)
and, with them, columns u0 .. u1 of each gate block of gates and dAh (and of hh, or, where Wh
is packed, a row of products of its own), of h, hn, dxn, the carry and g_row, and of db and
dbh. In one parallel region for the whole loop, each step of
forward is its product h_{t-1} @ Wh[:, its columns] (its columns of Wh packed once per call, its
three gate blocks one after the other, into one product; n's r * (h_{t-1} Wh_n + bh_n) is per
unit too), its gates, hn and h_t, then a spinning barrier (``src/_columns.pxd``) before the next
step reads h_t whole; each step of backward is the pass over its units (g, its part of the norm,
its columns of dAh_t, dxn_t, db, dbh, carry <- xi_t g z), the barrier, then carry[u0:u1] +=
xi_t dAh_t @ Wh.T[:, u0:u1] over the whole row of dAh_t, on its own panels of the packed Wh.T.
Every element is the sum the one-thread call makes, so h, hn, the gates, dAh, dxn, db, dbh and
the carry equal its results bit for bit; the norms are joined from the parts' (to rounding).
The products over all steps (X @ Wx, dWh, dWx, dx) run on the same threads, split by rows or
columns. Thread 0, the calling thread, alone looks for Ctrl-C and passes what it saw to the
barrier, so all stop after the same step. Where BLAS takes the per-step products (the baseline
build; Wh too large to read in place over fewer than 32 steps), the steps run on one thread.

Each elementwise pass is a few short loops over a row rather than one: GCC vectorises a loop
only if it needs at most 10 run-time checks that its arrays do not overlap
(``--param vect-max-version-for-alias-checks``), and Cython cannot declare pointers ``restrict``.
Backward's loops are ordered so that dAh and dxn may be gates and hn themselves: the first loop
reads z (and writes g to g_row and the carry); the z and n loop reads z and n and writes dhz
over z and dxn, for the moment, over n; the r loop then reads r, hn and that dxn and writes dhr
over r, dhn over n and dxn over hn. (The first two are two loops, not one, to stay within GCC's
10 alias checks.) Each element is read into a local before its slot is written, a
write-after-read at distance 0 that GCC's run-time alias checks accept (seen with GCC 12), so
the in-place pass runs the same vector code.
Backward walks time downwards, which the hardware prefetcher does not follow, so each step asks
for the start of step t-1's rows in L2 (not L1: the step's GEMM streams Wh through L1).
"""
import numpy as np

cimport cython
from cpython.buffer cimport PyBuffer_Release
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt
from libc.string cimport memset

from _active cimport (hidden_grad_by_steps, product_by_steps, running_rows, sum_by_steps,
                      zero_inactive, zero_steps)
from _blas cimport NO_TRANS, TRANS
from _call cimport Call, begin_call, end_call, input_product, rows_backward, rows_forward
from _columns cimport (SpinBarrier, barrier_init, barrier_wait, fetch_row, leaves, split_skip,
                       team_size)
from _held cimport (Dims, Held, begin_held, hold_new, hold_steps, hold_vector, holds_nothing,
                    refresh_held, release_held, steps_shape)
from _interrupt cimport interrupted
from _packed cimport gemm_b, pack_held, packed_aligned, panel_columns
from _shards cimport (Shard, cols_hidden_part, cols_sum_part, join_norms, rows_product_part,
                      shard_norms, shard_of)
from _units cimport (NO_SPLIT, SPLIT_PACKED, Units, pack_part_columns, pack_part_rows,
                     split_route, units_of)
from _vmath cimport sigmoid_, tanh_

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FASTBPTT_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
    #else
    #define FASTBPTT_PREFETCH_L2(p) ((void) (p))
    #endif
    """
    void prefetch_l2 "FASTBPTT_PREFETCH_L2"(const void* p) noexcept nogil


@cython.auto_pickle(False)
cdef class Buffers:
    """One GRU cache's arrays, held for the kernels (``src/_held.pxd``): its x, h0, Wx, Wh, b,
    bh, h, gates and hn, and the workspaces hh (N, 3H), g_row (H,), packed (Wh or Wh.T packed
    once per call, ``src/_packed.pxd``), dAh (like gates) and dxn (like hn), these two made by
    the first backward that needs them (one with overwrite_cache writes over gates and hn
    instead), and shard_rows (a 7H row per shard) and norm_parts (the norms per shard,
    ``src/_shards.pxd``), made by the first backward on several threads. ``Buffers(cache)``
    holds the cache's; ``refresh(cache)`` holds again those that a forward with out=cache
    replaced."""
    cdef Held held          # sizes, x, h0, Wx, Wh, b, h, packed, norm_parts (src/_held.pxd)
    cdef Py_buffer bh, gates, hn        # the cache's other arrays
    cdef Py_buffer hh, g_row, dAh, dxn  # workspaces
    cdef Py_buffer shard_rows   # per shard: g_row, db, dbh (7H), made by a sharded backward
    cdef object dtype

    def __cinit__(self, cache):
        cdef const Dims* d
        self.dtype = begin_held(&self.held, cache, 3, np.empty)
        self.refresh(cache)
        d = &self.held.dims
        hold_new(&self.hh, np.empty((d.steps.n_batch, 3 * d.n_hidden), self.dtype))
        hold_new(&self.g_row, np.empty(d.n_hidden, self.dtype))

    def refresh(self, cache):
        """Hold the arrays of ``cache`` (the one these were made for) that it holds no longer:
        a forward with out=cache puts in the caller's x and weights (and bh)."""
        cdef const Dims* d = &self.held.dims
        cdef Py_ssize_t H = d.n_hidden
        refresh_held(&self.held, cache, 3)
        hold_vector(&self.bh, cache.bh, "cache.bh", d, 3 * H, False)
        hold_steps(&self.gates, cache.gates, "cache.gates", d, 3 * H, True)
        hold_steps(&self.hn, cache.hn, "cache.hn", d, H, True)

    def __dealloc__(self):
        release_held(&self.held)
        PyBuffer_Release(&self.bh)
        PyBuffer_Release(&self.gates)
        PyBuffer_Release(&self.hn)
        PyBuffer_Release(&self.hh)
        PyBuffer_Release(&self.g_row)
        PyBuffer_Release(&self.shard_rows)
        PyBuffer_Release(&self.dAh)
        PyBuffer_Release(&self.dxn)


cdef void _row_update(floating* gate_r, const floating* hh_r, Py_ssize_t hh_block,
                      floating* hn_i, floating* h_i, const floating* h_prev_i,
                      const floating* b, const floating* bh, Py_ssize_t n_hidden,
                      Py_ssize_t n_units) noexcept nogil:
    """One row's gates, hn and h_t from its x_t Wx (in gate_r's row, blocks n_hidden apart) and
    its h_{t-1} Wh (hh_r, blocks hh_block apart): the first n_units units of each block (all:
    n_hidden); a part of the units from unit u0 on is the same call on gate_r, hn_i, h_i,
    h_prev_i, b and bh moved by u0."""
    cdef Py_ssize_t H = n_hidden, j
    cdef floating n
    cdef floating one = 1       # a bare 1 would be a C double, and the float32 loop with it
    cdef floating* gate_z = gate_r + H
    cdef floating* gate_n = gate_z + H
    cdef const floating* hh_z = hh_r + hh_block
    cdef const floating* hh_n = hh_z + hh_block
    # short loops, so that GCC vectorises every one (see the module docstring)
    # r = sigma(xr + hr), in place of x_t Wx_r
    for j in range(n_units):
        gate_r[j] = sigmoid_((gate_r[j] + b[j]) + (hh_r[j] + bh[j]))
    # z = sigma(xz + hz), in place of x_t Wx_z
    for j in range(n_units):
        gate_z[j] = sigmoid_((gate_z[j] + b[H + j]) + (hh_z[j] + bh[H + j]))
    # xn = x_t Wx_n + b_n in place;  hn = h_prev Wh_n + bh_n
    for j in range(n_units):
        gate_n[j] = gate_n[j] + b[2 * H + j]
        hn_i[j] = hh_n[j] + bh[2 * H + j]
    # n = tanh(xn + r * hn), in place of xn;  h_t = (1 - z) * n + z * h_prev
    for j in range(n_units):
        n = tanh_(gate_n[j] + gate_r[j] * hn_i[j])
        gate_n[j] = n
        h_i[j] = (one - gate_z[j]) * n + gate_z[j] * h_prev_i[j]


cdef void _forward_step(const floating* h_prev, Py_ssize_t ld_prev, floating* gates_t,
                        floating* hn_t, floating* h_t, Py_ssize_t ld, floating* hh,
                        const floating* Wh, const floating* Whp, const floating* b,
                        const floating* bh, int n_batch, int n_hidden) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of hn_t and h_t ld apart, those of gates_t 3 ld;
    hh is (N, 3H) C-contiguous. Whp is Wh packed, or NULL (BLAS)."""
    cdef Py_ssize_t H = n_hidden, i
    # hh = h_prev @ Wh     (N,3H) = (N,H)(H,3H)
    gemm_b(Whp, NO_TRANS, n_batch, 3 * n_hidden, n_hidden,
           1, h_prev, <int> ld_prev, Wh, 3 * n_hidden, 0, hh, 3 * n_hidden)
    for i in range(n_batch):
        _row_update(gates_t + 3 * ld * i, hh + 3 * H * i, H, hn_t + ld * i, h_t + ld * i,
                    h_prev + ld_prev * i, b, bh, H, H)


cdef void _forward_part(int p, int n_parts, int route, Py_ssize_t t, const Call* c,
                        const floating* h0, const floating* Wh, const floating* b,
                        const floating* bh, const floating* packed, floating* hh,
                        floating* gp, floating* hnp, floating* hp) noexcept nogil:
    """Part p's units u0 .. u0 + n of forward step t: its products h_{t-1} @ Wh[:, its
    columns], the sums the one-thread call makes, on its packed blocks (SPLIT_PACKED; its row
    of products at packed + 3 * H_pad * H + 3 * u0) or on Wh in place (into its columns of
    hh); then its gates, hn and h_t."""
    cdef int H = c.n_hidden, n_gh = 3 * c.n_hidden, g
    cdef int nr = panel_columns(sizeof(floating))
    cdef Units part = units_of(H, sizeof(floating), n_parts, p)
    cdef Py_ssize_t step = c.step, u0 = part.u0, n = part.n, n_pad = part.n_pad
    cdef Py_ssize_t h_pad = (H + nr - 1) // nr * nr, hh_block = H
    cdef floating* prod = hh + u0   # its products, blocks hh_block apart
    cdef const floating* h_prev = <const floating*> hp + (t - 1) * step if t else h0
    if n == 0:
        return
    if route == SPLIT_PACKED:
        prod, hh_block = <floating*> packed + 3 * h_pad * H + 3 * u0, n_pad
        # prod = h_prev @ Wh[:, its columns]     (1,3 n_pad) = (1,H)(H,3 n_pad)
        gemm_b(packed + 3 * u0 * H, NO_TRANS, 1, <int> (3 * n_pad), H, 1, h_prev, H, Wh, n_gh,
               0, prod, <int> (3 * n_pad))
    else:
        for g in range(3):
            # hh[g*H + u0 : +n] = h_prev @ Wh[:, g*H + u0 : +n]     (1,n) = (1,H)(H,n)
            gemm_b(<const floating*> NULL, NO_TRANS, 1, <int> n, H, 1, h_prev, H,
                   Wh + g * H + u0, n_gh, 0, prod + g * H, n_gh)
    _row_update(gp + 3 * t * step + u0, prod, hh_block, hnp + t * step + u0, hp + t * step + u0,
                h_prev + u0, b + u0, bh + u0, H, n)


cdef void _forward_units(Call* c, SpinBarrier* bar, SpinBarrier* alone, int s, int team,
                         int route, const floating* h0, const floating* Wh,
                         const floating* b, const floating* bh, floating* packed,
                         floating* hh, floating* gp, floating* hnp, floating* hp) noexcept nogil:
    """Thread s's share of a forward of one sequence split by hidden units (``src/_units.pxd``):
    part s (``_forward_part``) of every step, then the barrier ``bar`` before the next step
    reads h_t whole. Thread 0 runs every part, one after the other, where the region got fewer
    threads than c.n_parts (``team``: the others run nothing) or from the step after a barrier
    whose waits were slow (BARRIER_ALONE: the others leave; c.went_alone set), with the
    barrier of one ``alone``. ``packed``: the workspace, 64-byte aligned, where each thread
    packs its parts' columns of Wh (SPLIT_PACKED). Each element of h_{t-1} Wh is the sum the
    one-thread call makes, so h, hn and the gates equal its results bit for bit."""
    cdef int n_parts = c.n_parts, sense = 0, verdict, p, p0 = s, p1 = s + 1
    cdef Py_ssize_t t
    if team != n_parts:
        if s != 0:
            return
        p0, p1, bar = 0, n_parts, alone
    if route == SPLIT_PACKED:
        for p in range(p0, p1):
            pack_part_columns(p, n_parts, 3, c.n_hidden, Wh, packed)
    for t in range(c.n_run):
        fetch_row(<const floating*> hp + (t - 1) * c.step if t else h0,
                  c.n_hidden * sizeof(floating))
        for p in range(p0, p1):
            _forward_part(p, n_parts, route, t, c, h0, Wh, b, bh, packed, hh, gp, hnp, hp)
        verdict = barrier_wait(bar, &sense, s == 0 and interrupted(&c.w))
        if leaves(verdict, s):
            break       # Ctrl-C: every thread stops after this step (or thread 0 goes on)
        if verdict:     # the waits were slow: thread 0 goes on alone, every part
            p0, p1, bar = 0, n_parts, alone
            c.went_alone = True


cdef void _forward_shard(Call* c, int s, const floating* h0, const floating* Wh,
                         const floating* Whp, const floating* b, const floating* bh,
                         floating* gp, floating* hnp, floating* hp,
                         floating* hh) noexcept nogil:
    """Shard s of c.n_shards of a forward: its sequences n0 .. n1 - 1 (``src/_shards.pxd``),
    every step that runs one of them, its rows n0 .. n1 - 1 of hh."""
    cdef Shard sh = shard_of(c.n_batch, c.n_shards, s, c.ld)
    # its first row in h and hn; in hh
    cdef Py_ssize_t t, first = sh.first, n0 = sh.n0, ld = c.ld, step = c.step
    cdef int rows, n_hidden = c.n_hidden
    for t in range(c.n_run):
        rows = rows_forward(c, s, &sh, t)
        if rows == 0:
            break   # none of the shard's rows runs this step or later, or Ctrl-C
        _forward_step(<const floating*> hp + first + (t - 1) * step if t
                      else h0 + n0 * n_hidden, ld if t else n_hidden,
                      gp + 3 * (first + t * step), hnp + first + t * step,
                      hp + first + t * step, ld, hh + 3 * n0 * n_hidden, Wh, Whp, b, bh, rows,
                      n_hidden)


def forward(Buffers bufs, const floating[:, :, ::1] x, active=None, int n_threads=1):
    """Fill the cache's h with the hidden states of x, its gates with r, z, n and its hn with
    h_{t-1} Wh_n + bh_n. Arguments as for every cell's forward (``src/_call.pxd``)."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 3, active, n_threads)
    cdef int n_hidden = c.n_hidden
    cdef int s
    cdef const floating* h0 = <const floating*> bufs.held.h0.buf
    cdef const floating* Wx = <const floating*> bufs.held.Wx.buf
    cdef const floating* Wh = <const floating*> bufs.held.Wh.buf
    cdef const floating* b = <const floating*> bufs.held.b.buf
    cdef const floating* bh = <const floating*> bufs.bh.buf
    cdef floating* gp = <floating*> bufs.gates.buf
    cdef floating* hp = <floating*> bufs.held.h.buf
    cdef floating* hnp = <floating*> bufs.hn.buf
    cdef floating* hh = <floating*> bufs.hh.buf
    cdef floating* Whp   # Wh packed for the per-step products, or NULL (BLAS)
    cdef SpinBarrier bar, alone     # the parts' barrier; thread 0's when it runs them all
    cdef int route = split_route(&c, &bufs.held.packed, 3, sizeof(floating))
    with nogil:
        if route != NO_SPLIT:
            # gates = X @ Wx     (T*N,3H) = (T*N,D)(D,3H) (src/_call.pxd); b is added in the
            # step's pass
            input_product(&c, 3 * n_hidden, &x[0, 0, 0], Wx, NULL, gp)
            # one sequence, its hidden units split between c.n_parts threads: one region for
            # the whole loop, a barrier a step (src/_units.pxd)
            barrier_init(&bar, c.n_parts)
            barrier_init(&alone, 1)
            if not c.w.stopped:
                with parallel(num_threads=c.n_parts):
                    _forward_units(&c, &bar, &alone, threadid(), team_size(), route, h0, Wh, b,
                                   bh, <floating*> packed_aligned(bufs.held.packed.buf), hh, gp,
                                   hnp, hp)
        else:
            Whp = pack_held(NO_TRANS, c.n_batch, n_hidden, 3 * n_hidden, Wh, 3 * n_hidden,
                            &bufs.held.packed)
            # gates = X @ Wx     (T*N,3H) = (T*N,D)(D,3H) (src/_call.pxd); b is added in the
            # step's pass
            input_product(&c, 3 * n_hidden, &x[0, 0, 0], Wx, NULL, gp)
            # shard s: its sequences (src/_shards.pxd); one shard on this thread, without a
            # parallel region
            if c.n_shards == 1:
                _forward_shard(&c, 0, h0, Wh, Whp, b, bh, gp, hnp, hp, hh)
            else:
                for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                    _forward_shard(&c, s, h0, Wh, Whp, b, bh, gp, hnp, hp, hh)
        zero_inactive(hp, n_hidden, c.n_steps, c.n_batch, c.act)
    end_call(&c)


cdef void _prefetch(const void* p, Py_ssize_t n_rows, Py_ssize_t row_bytes,
                    Py_ssize_t ld_bytes) noexcept nogil:
    """Ask for the first cache lines (at most 4 KB in all) of n_rows rows of row_bytes each,
    ld_bytes apart from one start to the next, in L2, ahead of their use."""
    cdef Py_ssize_t k, n, budget = 4096
    if ld_bytes == row_bytes:           # rows back to back: one block
        row_bytes *= n_rows
        n_rows = 1
    for n in range(n_rows):
        for k in range(0, row_bytes if row_bytes < budget else budget, 64):
            prefetch_l2(<const char*> p + n * ld_bytes + k)
        budget -= row_bytes
        if budget <= 0:
            return


cdef double _row_grads(const floating* dh_i, const floating* gate_r, const floating* hn_i,
                       const floating* h_prev_i, floating* dhr_i, floating* dxn_i,
                       floating* carry_i, floating* g_row, floating* db, floating* dbh,
                       floating xi_t, double sq, bint norm, Py_ssize_t n_hidden,
                       Py_ssize_t n_units) noexcept nogil:
    """One row's dAh (dhr_i, blocks n_hidden apart) and dxn from dL/dh_t = dh_i + carry_i;
    carry_i <- xi_t g z, the direct path (the product through Wh is added by the caller); db
    and dbh (3H,) added into. The first n_units units of each block (all: n_hidden); a part of
    the units from unit u0 on is the same call on every pointer moved by u0. Returns sq plus
    the sum of g^2 over the units if ``norm``, else sq. dhr_i and dxn_i may be gate_r and
    hn_i themselves (see the module docstring)."""
    cdef Py_ssize_t H = n_hidden, j
    cdef floating g, r, z, n, hn, dxn
    cdef floating one = 1       # a bare 1 would be a C double, and the float32 loops with it
    cdef const floating* gate_z = gate_r + H
    cdef const floating* gate_n = gate_z + H
    cdef floating* dhz_i = dhr_i + H
    cdef floating* dhn_i = dhz_i + H
    # g = dh[t] + carry, held in g_row;  carry = xi_t * g * z, the direct path
    for j in range(n_units):
        g = dh_i[j] + carry_i[j]
        g_row[j] = g
        carry_i[j] = xi_t * (g * gate_z[j])
    if norm:
        # ||dL/dh_t||^2 = sum of g^2 over the rows
        for j in range(n_units):
            sq += g_row[j] * g_row[j]
    # z, n -> dhz = g (h_prev - n) z (1 - z) over z;  dxn = g (1 - z) (1 - n^2), held in
    # dhn's slot (over n) for now
    for j in range(n_units):
        g = g_row[j]
        z = gate_z[j]
        n = gate_n[j]
        dhz_i[j] = g * (h_prev_i[j] - n) * (z * (one - z))
        dhn_i[j] = g * (one - z) * (one - n * n)
    # r, hn -> dhr = dxn hn r (1 - r) over r;  dhn = r dxn over n;  dxn over hn
    for j in range(n_units):
        r = gate_r[j]
        hn = hn_i[j]
        dxn = dhn_i[j]
        dhr_i[j] = dxn * hn * (r * (one - r))
        dhn_i[j] = r * dxn
        dxn_i[j] = dxn
    # dbh += [dhr dhz dhn];  db += [dxr dxz dxn] (the row is still in L1 here), a loop a
    # block: two arrays each, which GCC vectorises (six in one loop it does not)
    for j in range(n_units):
        dbh[j] += dhr_i[j]
    for j in range(n_units):
        dbh[H + j] += dhz_i[j]
    for j in range(n_units):
        dbh[2 * H + j] += dhn_i[j]
    for j in range(n_units):
        db[j] += dhr_i[j]
    for j in range(n_units):
        db[H + j] += dhz_i[j]
    for j in range(n_units):
        db[2 * H + j] += dxn_i[j]
    return sq


cdef void _backward_step(const floating* dh_t, const floating* gates_t, const floating* hn_t,
                         const floating* h_prev, Py_ssize_t ld_prev, floating* dAh_t,
                         floating* dxn_t, Py_ssize_t ld, floating* carry, floating* g_row,
                         const floating* Wh, const floating* WhTp, floating* db, floating* dbh,
                         floating xi_t, floating* norm_t, int n_batch,
                         int n_hidden) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of dh_t, hn_t and dxn_t ld apart, those of gates_t
    and dAh_t 3 ld; carry is (N, H) C-contiguous; g_row (H,) is workspace. dAh_t and dxn_t may
    be gates_t and hn_t themselves (see the module docstring). WhTp is Wh.T packed, or NULL
    (BLAS)."""
    cdef Py_ssize_t H = n_hidden, i
    cdef double sq = 0
    for i in range(n_batch):
        sq = _row_grads(dh_t + ld * i, gates_t + 3 * ld * i, hn_t + ld * i,
                        h_prev + ld_prev * i, dAh_t + 3 * ld * i, dxn_t + ld * i, carry + H * i,
                        g_row, db, dbh, xi_t, sq, norm_t != NULL, H, H)
    if norm_t != NULL:
        norm_t[0] = <floating> sqrt(sq)
    if xi_t == 0:
        return
    # carry += xi_t * dAh_t @ Wh.T     (N,H) += (N,3H)(H,3H)'
    gemm_b(WhTp, TRANS, n_batch, n_hidden, 3 * n_hidden,
           xi_t, dAh_t, <int> (3 * ld), Wh, 3 * n_hidden, 1, carry, n_hidden)


cdef void _backward_pass(int p, int n_parts, Py_ssize_t t, const Call* c,
                         const floating* dh, const floating* gp, const floating* hnp,
                         const floating* hp, const floating* h0, floating* dAhp,
                         floating* dxnp, floating* carry, floating* g_row, floating* db,
                         floating* dbh, const floating* xi,
                         floating* norm_parts) noexcept nogil:
    """Part p's units u0 .. u0 + n of backward step t before its product (``_row_grads``): g,
    its norm over them (at norm_parts[p * T + t] unless NULL), its columns of dAh_t, dxn_t, db
    and dbh, carry <- xi_t g z over them."""
    cdef int H = c.n_hidden
    cdef Units part = units_of(H, sizeof(floating), n_parts, p)
    cdef Py_ssize_t step = c.step, u0 = part.u0
    cdef double sq = _row_grads(dh + t * step + u0, gp + 3 * t * step + u0,
                                hnp + t * step + u0, (hp + (t - 1) * step if t else h0) + u0,
                                dAhp + 3 * t * step + u0, dxnp + t * step + u0, carry + u0,
                                g_row + u0, db + u0, dbh + u0, xi[t], 0, norm_parts != NULL, H,
                                part.n)
    if norm_parts != NULL:
        norm_parts[p * c.n_steps + t] = <floating> sqrt(sq)


cdef void _backward_units(Call* c, SpinBarrier* bar, SpinBarrier* alone, int s, int team,
                          int route, const floating* dh, const floating* gp,
                          const floating* hnp, const floating* hp, const floating* h0,
                          floating* dAhp, floating* dxnp, floating* carry, floating* g_row,
                          const floating* Wh, floating* packed, floating* db, floating* dbh,
                          const floating* xi, floating* norm_parts) noexcept nogil:
    """Thread s's share of a backward of one sequence split by hidden units (``src/_units.pxd``):
    at each step, from t = T - 1 down, part s's pass (``_backward_pass``), then the barrier,
    as the product reads dAh_t whole, then part s's carry[u0:u0+n] += xi_t dAh_t @ Wh.T[:, its
    units], on its panels of Wh.T packed in ``packed`` (SPLIT_PACKED, each thread packing its
    parts') or on Wh's rows u0 .. u0 + n (SPLIT_FEW). Every element is the sum the one-thread
    call makes. Thread 0 runs every part, as in ``_forward_units``, where the team is short or
    from a barrier whose waits were slow on (c.went_alone set)."""
    cdef int n_parts = c.n_parts, sense = 0, verdict, p, p0 = s, p1 = s + 1
    cdef int H = c.n_hidden, n_gh = 3 * c.n_hidden
    cdef Units part
    cdef Py_ssize_t t
    cdef const floating* dAh_t
    if team != n_parts:
        if s != 0:
            return
        p0, p1, bar = 0, n_parts, alone
    if route == SPLIT_PACKED:
        for p in range(p0, p1):
            # op(Wh[u0:u0+n]) = Wh[u0:u0+n].T (3H, n): its panels of Wh.T
            pack_part_rows(p, n_parts, 3, H, Wh, packed)
    for t in range(c.n_steps - 1, -1, -1):
        if t >= c.n_run:        # no row runs: no gradient, the carry waits
            for p in range(p0, p1):
                if norm_parts != NULL:
                    norm_parts[p * c.n_steps + t] = 0
            continue
        for p in range(p0, p1):
            _backward_pass(p, n_parts, t, c, dh, gp, hnp, hp, h0, dAhp, dxnp, carry, g_row, db,
                           dbh, xi, norm_parts)
        verdict = barrier_wait(bar, &sense, s == 0 and interrupted(&c.w))
        if leaves(verdict, s):
            break       # Ctrl-C: every thread stops at this step (or thread 0 goes on)
        if verdict:     # the waits were slow: thread 0 goes on alone, every part
            p0, p1, bar = 0, n_parts, alone
            c.went_alone = True
        if xi[t] == 0:
            continue
        dAh_t = dAhp + 3 * t * c.step
        fetch_row(dAh_t, n_gh * sizeof(floating))
        for p in range(p0, p1):
            part = units_of(H, sizeof(floating), n_parts, p)
            if part.n > 0:
                # carry[u0:u0+n] += xi_t * dAh_t @ Wh[u0:u0+n].T     (1,n) += (1,3H)(n,3H)'
                gemm_b(packed + part.u0 * n_gh if route == SPLIT_PACKED else NULL, TRANS, 1,
                       <int> part.n, n_gh, xi[t], dAh_t, n_gh, Wh + part.u0 * n_gh, n_gh, 1,
                       carry + part.u0, H)


cdef void _backward_shard(Call* c, int s, const floating* dhp, const floating* gp,
                          const floating* hnp, const floating* hp, const floating* h0,
                          floating* dAhp, floating* dxnp, floating* carry, floating* g_row,
                          const floating* Wh, const floating* WhTp, floating* db, floating* dbh,
                          const floating* xi, floating* norms) noexcept nogil:
    """Shard s of c.n_shards of a backward: its sequences n0 .. n1 - 1 (``src/_shards.pxd``),
    every step, the steps none of its rows runs passed over. g_row (H,) is its workspace; db
    and dbh (3H,) its sums to add into."""
    cdef Shard sh = shard_of(c.n_batch, c.n_shards, s, c.ld)
    # its first row in dh, h, hn, dxn; in carry
    cdef Py_ssize_t t, first = sh.first, n0 = sh.n0, ld = c.ld, step = c.step, H = c.n_hidden
    cdef Py_ssize_t row = H * sizeof(floating), ld_bytes = ld * sizeof(floating)
    cdef floating* ns = norms + s * c.n_steps if norms != NULL else NULL
    cdef int rows, n_b
    for t in range(c.n_steps - 1, -1, -1):
        rows = rows_backward(c, s, &sh, t, ns)
        if rows < 0:
            break       # interrupted
        if rows == 0:   # none of the shard's rows runs: no gradient, carry waits
            continue
        if t > 0:
            # step t-1's inputs: time runs backwards, which the hardware prefetcher misses
            n_b = running_rows(c.act, t - 1, c.n_batch, sh.n0, sh.n1)
            _prefetch(dhp + first + (t - 1) * step, n_b, row, ld_bytes)
            _prefetch(gp + 3 * (first + (t - 1) * step), n_b, 3 * row, 3 * ld_bytes)
            _prefetch(hnp + first + (t - 1) * step, n_b, row, ld_bytes)
            if t > 1:
                _prefetch(hp + first + (t - 2) * step, n_b, row, ld_bytes)
            else:
                _prefetch(h0 + n0 * H, n_b, row, row)
        _backward_step(dhp + first + t * step, gp + 3 * (first + t * step),
                       hnp + first + t * step,
                       hp + first + (t - 1) * step if t > 0 else h0 + n0 * H,
                       ld if t > 0 else H, dAhp + 3 * (first + t * step),
                       dxnp + first + t * step, ld, carry + n0 * H, g_row, Wh, WhTp, db, dbh,
                       xi[t], ns + t if ns != NULL else NULL, rows, <int> H)


cdef void _grads_part(Call* c, int s, const floating* h0, const floating* hp,
                      const floating* xp, const floating* dAhp, const floating* dxnp,
                      const floating* Wx, floating beta, floating* dx, floating* dWx,
                      floating* dWh) noexcept nogil:
    """Part s of c.n_threads of a backward's weight gradients and dx over every step's rows
    (``src/_shards.pxd``); its rows of dx get both products, in order. beta: 0 writes the
    weight gradients, 1 adds into them."""
    cdef int n_hidden = c.n_hidden, n_rows = c.n_steps * c.n_batch
    cdef Py_ssize_t H = n_hidden
    # dWh (+)= sum_t h_{t-1}.T @ dAh[t]     (H,3H) (+)= (N,H)'(N,3H) summed over t
    cols_hidden_part(&c.w, s, c.n_threads, c.by_step, c.n_steps, c.n_batch, n_hidden,
                     3 * n_hidden, h0, hp, dAhp, 3 * H, beta, dWh)
    # The input-side gradients are [dxr dxz] = dAh[..., :2H] and dxn: two products each for
    # dx and dWx.
    # dx = dxn @ Wx[:, 2H:].T     (T*N,D) = (T*N,H)(D,H)'
    rows_product_part(&c.w, s, c.n_threads, TRANS, n_rows, c.n_input, n_hidden, 1, dxnp,
                      n_hidden, Wx + 2 * H, 3 * n_hidden, 0, dx, c.n_input, NULL)
    # dx += [dxr dxz] @ Wx[:, :2H].T     (T*N,D) += (T*N,2H)(D,2H)'
    rows_product_part(&c.w, s, c.n_threads, TRANS, n_rows, c.n_input, 2 * n_hidden, 1, dAhp,
                      3 * n_hidden, Wx, 3 * n_hidden, 1, dx, c.n_input, NULL)
    # dWx[:, :2H] (+)= X.T @ [dxr dxz]     (D,2H) (+)= (T*N,D)'(T*N,2H)
    cols_sum_part(&c.w, s, c.n_threads, c.n_input, 2 * n_hidden, n_rows, 1, xp, c.n_input,
                  dAhp, 3 * n_hidden, beta, dWx, 3 * n_hidden)
    # dWx[:, 2H:] (+)= X.T @ dxn     (D,H) (+)= (T*N,D)'(T*N,H)
    cols_sum_part(&c.w, s, c.n_threads, c.n_input, n_hidden, n_rows, 1, xp, c.n_input, dxnp,
                  n_hidden, beta, dWx + 2 * H, 3 * n_hidden)


def backward(Buffers bufs, const floating[:, :, ::1] dh, const floating[::1] xi,
             dict carries, floating[:, :, ::1] dx, dict weight_grads,
             floating[::1] norms=None, bint overwrite_cache=False,
             bint write_weight_grads=False, active=None, int n_threads=1):
    """BPTT over the cache's arrays. Arguments as for every cell's backward (``src/_call.pxd``):
    carries['dhT'] (N, H); weight_grads' 'dWx', 'dWh', 'db', 'dbh'. dAh and dxn are the
    workspaces dAh (like gates) and dxn (like hn), made by the first call that needs them, or
    with overwrite_cache the cache's gates and hn themselves: step t reads gates[t] and hn[t]
    only before it writes dAh[t] and dxn[t]. With more than one shard, each adds db and dbh into
    a row of its own, summed into the arrays in shard order at the end."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 3, active, n_threads)
    cdef int n_hidden = c.n_hidden
    cdef Py_ssize_t H = n_hidden, j
    cdef int s
    # shard s's norms at norms_p + s * T, or NULL (src/_shards.pxd)
    cdef floating* norms_p = shard_norms(norms, c.n_shards, c.n_steps, &bufs.held.norm_parts)
    cdef floating* rows_p = NULL      # shard s's g_row, db, dbh at rows_p + s * 7H
    cdef floating[:, ::1] carry = carries["dhT"]
    cdef floating[:, ::1] dWx = weight_grads["dWx"]
    cdef floating[:, ::1] dWh = weight_grads["dWh"]
    cdef floating[::1] db = weight_grads["db"]
    cdef floating[::1] dbh = weight_grads["dbh"]
    cdef const floating* dhp = &dh[0, 0, 0]
    cdef const floating* hp = <const floating*> bufs.held.h.buf
    cdef const floating* gp = <const floating*> bufs.gates.buf
    cdef const floating* hnp = <const floating*> bufs.hn.buf
    cdef const floating* h0 = <const floating*> bufs.held.h0.buf
    cdef const floating* xp = <const floating*> bufs.held.x.buf
    cdef const floating* Wx = <const floating*> bufs.held.Wx.buf
    cdef const floating* Wh = <const floating*> bufs.held.Wh.buf
    cdef floating* g_row = <floating*> bufs.g_row.buf
    cdef floating* dAhp
    cdef floating* dxnp
    cdef floating* WhTp   # Wh.T packed for the per-step products, or NULL (BLAS)
    cdef floating beta = 0 if write_weight_grads else 1    # of the first products into dWx, dWh
    cdef int route = split_route(&c, &bufs.held.packed, 3, sizeof(floating))
    cdef SpinBarrier bar, alone     # the parts' barrier; thread 0's when it runs them all
    if route != NO_SPLIT:
        # split by units, part s's norms at norms_p + s * T
        norms_p = shard_norms(norms, c.n_parts, c.n_steps, &bufs.held.norm_parts)
    if c.n_shards > 1:     # a workspace kept on bufs, made again only for more shards
        if (holds_nothing(&bufs.shard_rows)
                or bufs.shard_rows.len < c.n_shards * 7 * H * <Py_ssize_t> sizeof(floating)):
            hold_new(&bufs.shard_rows, np.empty((c.n_shards, 7 * H), bufs.dtype))
        rows_p = <floating*> bufs.shard_rows.buf
        memset(rows_p, 0, c.n_shards * 7 * H * sizeof(floating))
    if overwrite_cache:
        dAhp, dxnp = <floating*> bufs.gates.buf, <floating*> bufs.hn.buf
    else:
        if holds_nothing(&bufs.dAh):
            hold_new(&bufs.dAh, np.empty(steps_shape(&bufs.held.dims, 3 * n_hidden), bufs.dtype))
            hold_new(&bufs.dxn, np.empty(steps_shape(&bufs.held.dims, n_hidden), bufs.dtype))
        dAhp, dxnp = <floating*> bufs.dAh.buf, <floating*> bufs.dxn.buf
    with nogil:
        if write_weight_grads:
            # db and dbh are sums over the steps' rows, added in the pass: from zero
            memset(&db[0], 0, 3 * H * sizeof(floating))
            memset(&dbh[0], 0, 3 * H * sizeof(floating))
        if route != NO_SPLIT:
            # one sequence, its hidden units split between c.n_parts threads: one region for
            # the whole loop, a barrier a step (src/_units.pxd); each part adds into its own
            # columns of db and dbh
            barrier_init(&bar, c.n_parts)
            barrier_init(&alone, 1)
            with parallel(num_threads=c.n_parts):
                _backward_units(&c, &bar, &alone, threadid(), team_size(), route, dhp, gp, hnp,
                                hp, h0, dAhp, dxnp, &carry[0, 0], g_row, Wh,
                                <floating*> packed_aligned(bufs.held.packed.buf), &db[0],
                                &dbh[0], &xi[0], norms_p)
            if norms_p != NULL and not c.w.stopped:
                # the parts' norms joined: rounded otherwise than one sum over the row
                join_norms(norms_p, c.n_parts, c.n_steps, &norms[0])
            if c.went_alone:    # the machine's cores are taken: the rest on this thread
                c.n_threads = 1
        else:
            # op(Wh) = Wh.T (3H, H), stored (H, 3H)
            WhTp = pack_held(TRANS, c.n_batch, 3 * n_hidden, n_hidden, Wh, 3 * n_hidden,
                             &bufs.held.packed)
            # shard s: its sequences (src/_shards.pxd); one shard on this thread, without a
            # parallel region
            if c.n_shards == 1:
                _backward_shard(&c, 0, dhp, gp, hnp, hp, h0, dAhp, dxnp, &carry[0, 0], g_row,
                                Wh, WhTp, &db[0], &dbh[0], &xi[0], norms_p)
            else:
                for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                    _backward_shard(&c, s, dhp, gp, hnp, hp, h0, dAhp, dxnp, &carry[0, 0],
                                    rows_p + s * 7 * H, Wh, WhTp, rows_p + s * 7 * H + H,
                                    rows_p + s * 7 * H + 4 * H, &xi[0], norms_p)
        if c.n_shards > 1:
            # db += the shards' db, dbh += theirs, in shard order
            for s in range(c.n_shards):
                for j in range(3 * H):
                    db[j] += rows_p[s * 7 * H + H + j]
                    dbh[j] += rows_p[s * 7 * H + 4 * H + j]
        if norms_p != NULL and c.n_shards > 1:
            join_norms(norms_p, c.n_shards, c.n_steps, &norms[0])
        if c.act != NULL:
            # by steps, on the calling thread (the products over the rows that run are not
            # split between threads)
            if not c.w.stopped:
                zero_inactive(dAhp, 3 * H, c.n_run, c.n_batch, c.act)
                zero_inactive(dxnp, H, c.n_run, c.n_batch, c.act)
                # dWh (+)= sum_t h_{t-1}.T @ dAh[t]     (H,3H) (+)= (N,H)'(N,3H) summed over t
                hidden_grad_by_steps(&c.w, c.act, c.by_step, c.n_run, c.n_batch, n_hidden,
                                     3 * n_hidden, h0, hp, dAhp, 3 * H, beta, &dWh[0, 0])
                # The input-side gradients are [dxr dxz] = dAh[..., :2H] and dxn: two products
                # each for dx and dWx, over the rows that run.
                # dx = dxn @ Wx[:, 2H:].T     (T*N,D) = (T*N,H)(D,H)'
                product_by_steps(&c.w, c.act, c.n_run, c.n_batch, TRANS, c.n_input, n_hidden,
                                 1, dxnp, n_hidden, Wx + 2 * H, 3 * n_hidden, 0, &dx[0, 0, 0],
                                 c.n_input)
                # dx += [dxr dxz] @ Wx[:, :2H].T     (T*N,D) += (T*N,2H)(D,2H)'
                product_by_steps(&c.w, c.act, c.n_run, c.n_batch, TRANS, c.n_input,
                                 2 * n_hidden, 1, dAhp, 3 * n_hidden, Wx, 3 * n_hidden, 1,
                                 &dx[0, 0, 0], c.n_input)
                # the steps no row runs (time-major: the last ones) have dx = 0
                zero_inactive(&dx[0, 0, 0], c.n_input, c.n_run, c.n_batch, c.act)
                zero_steps(&dx[0, 0, 0], <Py_ssize_t> c.n_batch * c.n_input, c.n_run, c.n_steps)
                # dWx[:, :2H] (+)= X.T @ [dxr dxz]     (D,2H) (+)= (T*N,D)'(T*N,2H)
                sum_by_steps(&c.w, c.act, c.n_run, c.n_batch, c.n_input, 2 * n_hidden,
                             1, xp, c.n_input, dAhp, 3 * n_hidden, beta, &dWx[0, 0],
                             3 * n_hidden)
                # dWx[:, 2H:] (+)= X.T @ dxn     (D,H) (+)= (T*N,D)'(T*N,H)
                sum_by_steps(&c.w, c.act, c.n_run, c.n_batch, c.n_input, n_hidden,
                             1, xp, c.n_input, dxnp, n_hidden, beta, &dWx[0, 2 * H],
                             3 * n_hidden)
        else:
            # the weight gradients and dx, thread s its part of each (src/_shards.pxd); one
            # thread without a parallel region
            if c.n_threads <= 1:
                if not c.w.stopped:
                    _grads_part(&c, 0, h0, hp, xp, dAhp, dxnp, Wx, beta, &dx[0, 0, 0],
                                &dWx[0, 0], &dWh[0, 0])
            else:
                for s in prange(c.n_threads, num_threads=c.n_threads, schedule="static"):
                    if c.w.stopped:
                        continue
                    _grads_part(&c, s, h0, hp, xp, dAhp, dxnp, Wx, beta, &dx[0, 0, 0],
                                &dWx[0, 0], &dWh[0, 0])
    end_call(&c)


def split_backoff():
    """How many of this module's next calls keep to one thread because split calls of one
    sequence before them had to go on alone (``src/_columns.pxd``): 0 on a machine with free
    cores."""
    return split_skip


def split_parts(Buffers bufs, int n_threads):
    """The threads a call over ``bufs`` allowed ``n_threads`` splits each step between by
    hidden units (one sequence, ``src/_units.pxd``), or 1: the step loop runs on one thread."""
    cdef Call c = begin_call(&bufs.held.dims, bufs.held.dims.itemsize, 3, None, n_threads)
    if split_route(&c, &bufs.held.packed, 3, bufs.held.dims.itemsize) == NO_SPLIT:
        return 1
    return c.n_parts
