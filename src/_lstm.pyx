# cython: language_level=3
"""LSTM kernels: the forward time-step loop and backpropagation through time.

    [a_i a_f a_g a_o] = x_t Wx + h_{t-1} Wh + b          (four column blocks of H)
    i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
    c_t = f * c_{t-1} + i * g,        h_t = o * tanh(c_t)

Every per-step buffer (x, h, c, gates, dh, dA, dx) is C-contiguous in the caller's layout,
batch-major (N, T, .) or time-major (T, N, .) (``time_major``), and no copy is made of either:
step t is an (N, .) matrix whose rows are n_rows * width apart (``src/_layout.pxd``). Below,
buf[t] is step t of a buffer in either layout. Math symbols and variables (shapes; T = n_steps,
N = n_batch, D = n_input, H = n_hidden):

    x_t            x[t]            (N, D)    input of step t
    h_{t-1}        h0 or h[t-1]    (N, H)    hidden state step t receives
    c_{t-1}        c0 or c[t-1]    (N, H)    cell state step t receives
    a_t; i f g o   gates[t]        (N, 4H)   a_t is written there, then overwritten by the
                                             activated gates, blocks [i f g o] of each row
    c_t, h_t       c[t], h[t]      (N, H)
    Wx, Wh, b      Wx, Wh, b       (D, 4H), (H, 4H), (4H,)
    dL/dh_t        dh[t]           (N, H)    upstream gradient of step t's output
    dL/da_t        dA[t]           (N, 4H)   workspace of backward, blocks [da_i da_f da_g da_o];
                                             with overwrite_cache it is gates itself, da_t
                                             overwriting step t's gates once they are read
    xi_t           xi[t]                     truncation multiplier of the flow from step t into
                                             (h_{t-1}, c_{t-1})
    carry_h        carry_h         (N, H)    gradient reaching h_t through step t+1: dhT at the
                                             start, dL/dh0 at the end; within a step it holds
                                             dL/dh_t = dh[t] + carry_h before the GEMM
    carry_c        carry_c         (N, H)    gradient reaching c_t through step t+1: dcT at the
                                             start, dL/dc0 at the end; within a step it holds
                                             dL/dc_t before it is multiplied by xi_t f
    ||dL/dh_t||    norms[t]                  Frobenius norm of dh[t] + carry_h, only if norms
                                             is given

Backward, with dh_t = dL/dh_t and tanh(c_t) recomputed (not stored by forward):

    dc_t = carry_c + dh_t * o * (1 - tanh(c_t)^2)
    da_i = dc_t * g * i (1 - i),    da_f = dc_t * c_{t-1} * f (1 - f)
    da_g = dc_t * i * (1 - g^2),    da_o = dh_t * tanh(c_t) * o (1 - o)
    carry_h <- xi_t * dA_t Wh^T,    carry_c <- xi_t * dc_t * f

Forward: one hoisted GEMM X @ Wx for all steps, then per step one GEMM and one fused pass over
the gates. Backward: per step one fused pass giving dA_t and one GEMM dA_t @ Wh.T (skipped where
xi_t == 0); then the weight gradients and dx as four products over all steps. Gradients of the
weights are written into the arrays passed in (``write_weight_grads``) or accumulated into them.
The AVX2 build packs Wh (forward) or Wh.T (backward) once per call into the workspace ``packed``
and runs the per-step products on it (``src/_packed.pxd``); the baseline build calls BLAS.

A cache's arrays (x, h0, c0, Wx, Wh, b, h, c, gates) and the workspaces (dA, packed, norm_parts)
reach the kernels as one ``Buffers``, made once per cache and read by name (``src/_held.pxd``);
only the arrays of one call (dh, xi, the carries, dx, the weight gradients, the norms) are
arguments. What a call derives from them and from its arguments before its loops (sizes,
strides, the rows that run, threads, the watch for Ctrl-C) is one ``Call`` (``src/_call.pxd``),
which also tells how sequences of unequal lengths (``active``) and several threads
(``n_threads``) run.

What runs on which thread: with several sequences, each thread runs the whole loop over a shard
of them (``src/_shards.pxd``). One sequence (N = 1) whose step has at least 64 columns a thread
(4H >= 128, H >= 32) runs on c.n_parts threads split by hidden units (``src/_units.pxd``):
thread s owns units u0 .. u1 (whole panels) and, with them, columns u0 .. u1 of each gate block
of gates and dA, and of h, c and the carries. In one parallel region for the whole loop, each
step of forward is its product h_{t-1} @ Wh[:, its columns] (its columns of Wh packed once per
call, its four gate blocks one after the other, into one product), its gates, c_t and h_t, then
a spinning barrier (``src/_columns.pxd``) before the next step reads h_t whole; each step of
backward is dL/dh_t, its part of the norm, its columns of dA_t and carry_c (dc is per unit: it
never leaves the thread), the barrier, then carry_h[u0:u1] = xi_t dA_t @ Wh.T[:, u0:u1] over the
whole row of dA_t, on its own panels of the packed Wh.T. Every element is the sum the
one-thread call makes, so h, c, the gates, dA and the carries equal its results bit for bit; the
norms are joined from the parts' (to rounding). The products over all steps (X @ Wx, the
weight gradients, dx) run on the same threads, split by rows or columns. Thread 0, the calling
thread, alone looks for Ctrl-C and passes what it saw to the barrier, so all stop after the
same step. Where BLAS takes the per-step products (the baseline build; Wh too large to read in
place over fewer than 32 steps), the steps run on one thread.

The fused passes walk one batch row at a time, j over the H units of each gate block, and call
only the vectorisable ``_vmath`` functions. Each row's pass is three short loops rather than
one: a single loop over all the arrays of a step (gates, c_{t-1}, c_t, h_t; in backward also
dh, carry_c, dA) needs about 40 run-time alias checks, more than GCC versions a loop for (10),
and stays scalar; each of the three touches at most five arrays, and GCC vectorises all of them
(``-fopt-info-vec`` on the generated C). The row, a few KiB, stays in L1 between the loops.
When dA is the gate buffer itself, each gate block is overwritten by its own gradient at the
same element, which it has just read: a write-after-read at distance 0, which GCC's run-time
alias checks accept (seen with GCC 12), so the in-place pass runs the same vector code.
"""
import numpy as np

cimport cython
from cpython.buffer cimport PyBuffer_Release
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt

from _active cimport zero_inactive
from _blas cimport NO_TRANS, TRANS
from _call cimport Call, begin_call, end_call, input_product, rows_backward, rows_forward
from _columns cimport (SpinBarrier, barrier_init, barrier_wait, fetch_row, leaves, split_skip,
                       team_size)
from _held cimport (Dims, Held, begin_held, hold_matrix, hold_new, hold_steps, holds_nothing,
                    refresh_held, release_held, steps_shape)
from _interrupt cimport interrupted
from _packed cimport gemm_b, pack_held, packed_aligned, panel_columns
from _shards cimport Shard, grads_and_dx, join_norms, shard_norms, shard_of
from _truncation cimport cut
from _units cimport (NO_SPLIT, SPLIT_PACKED, Units, pack_part_columns, pack_part_rows,
                     split_route, units_of)
from _vmath cimport sigmoid_, tanh_


@cython.auto_pickle(False)
cdef class Buffers:
    """One LSTM cache's arrays, held for the kernels (``src/_held.pxd``): its x, h0, c0, Wx, Wh,
    b, h, c and gates, and the workspaces packed (Wh or Wh.T packed once per call,
    ``src/_packed.pxd``), dA (like gates), made by the first backward that needs it (one
    with overwrite_cache writes over gates instead), and norm_parts (the sharded backward's
    norms, ``src/_shards.pxd``). ``Buffers(cache)`` holds the cache's;
    ``refresh(cache)`` holds again those that a forward with out=cache replaced."""
    cdef Held held          # sizes, x, h0, Wx, Wh, b, h, packed, norm_parts (src/_held.pxd)
    cdef Py_buffer c0, c, gates     # the cache's other arrays
    cdef Py_buffer dA               # workspace
    cdef object dtype

    def __cinit__(self, cache):
        self.dtype = begin_held(&self.held, cache, 4, np.empty)
        self.refresh(cache)

    def refresh(self, cache):
        """Hold the arrays of ``cache`` (the one these were made for) that it holds no longer:
        a forward with out=cache puts in the caller's x, c0 and weights."""
        cdef const Dims* d = &self.held.dims
        cdef Py_ssize_t N = d.steps.n_batch, H = d.n_hidden
        refresh_held(&self.held, cache, 4)
        hold_matrix(&self.c0, cache.c0, "cache.c0", d, N, H, False)
        hold_steps(&self.c, cache.c, "cache.c", d, H, True)
        hold_steps(&self.gates, cache.gates, "cache.gates", d, 4 * H, True)

    def __dealloc__(self):
        release_held(&self.held)
        PyBuffer_Release(&self.c0)
        PyBuffer_Release(&self.c)
        PyBuffer_Release(&self.gates)
        PyBuffer_Release(&self.dA)


cdef void _cell_update(floating* gates_t, const floating* c_prev, Py_ssize_t ld_prev,
                       floating* c_t, floating* h_t, Py_ssize_t ld,
                       int n_batch, int n_hidden, int n_units) noexcept nogil:
    """gates_t (N, 4H) holds a_t on entry, the activated gates on exit; fills c_t and h_t.
    Rows of c_prev are ld_prev apart, those of c_t and h_t ld apart and those of gates_t 4 ld.
    Of each gate block, the first n_units units (all: n_hidden); a part of the units from
    unit u0 on is the same call on the pointers moved by u0."""
    cdef Py_ssize_t n, j
    cdef floating* gi
    cdef floating* gf
    cdef floating* gg
    cdef floating* go
    cdef const floating* cp
    cdef floating* ct
    cdef floating* ht
    for n in range(n_batch):
        gi = gates_t + 4 * n * ld
        gf = gi + n_hidden
        gg = gf + n_hidden
        go = gg + n_hidden
        cp = c_prev + n * ld_prev
        ct = c_t + n * ld
        ht = h_t + n * ld
        for j in range(n_units):
            gi[j] = <floating> sigmoid_(gi[j])
            gf[j] = <floating> sigmoid_(gf[j])
        for j in range(n_units):
            gg[j] = <floating> tanh_(gg[j])
            ct[j] = gf[j] * cp[j] + gi[j] * gg[j]
        for j in range(n_units):
            go[j] = <floating> sigmoid_(go[j])
            ht[j] = go[j] * <floating> tanh_(ct[j])


cdef void _forward_step(const floating* h_prev, const floating* c_prev, Py_ssize_t ld_prev,
                        floating* gates_t, floating* c_t, floating* h_t, Py_ssize_t ld,
                        const floating* Wh, const floating* Whp,
                        int n_batch, int n_hidden) noexcept nogil:
    """Rows of h_prev and c_prev are ld_prev apart, those of c_t and h_t ld apart and those
    of gates_t 4 ld. Whp is Wh packed, or NULL (BLAS)."""
    # gates_t += h_prev @ Wh     (N,4H) += (N,H)(H,4H); gates_t holds x_t Wx + b
    gemm_b(Whp, NO_TRANS, n_batch, 4 * n_hidden, n_hidden,
           1, h_prev, <int> ld_prev, Wh, 4 * n_hidden, 1, gates_t, <int> (4 * ld))
    _cell_update(gates_t, c_prev, ld_prev, c_t, h_t, ld, n_batch, n_hidden, n_hidden)


cdef void _forward_part(int p, int n_parts, int route, Py_ssize_t t, const Call* c,
                        const floating* h0, const floating* c0, const floating* Wh,
                        const floating* packed, floating* gp, floating* hp,
                        floating* cp) noexcept nogil:
    """Part p's units u0 .. u0 + n of forward step t: a_t = (x_t Wx + b) + h_{t-1} @ Wh[:, its
    columns], the sum the one-thread call makes, on its packed blocks (SPLIT_PACKED; its row
    of products at packed + 4 * H_pad * H + 4 * u0) or on Wh in place; then its gates, c_t and
    h_t."""
    cdef int H = c.n_hidden, n_gh = 4 * c.n_hidden, g
    cdef int nr = panel_columns(sizeof(floating))
    cdef Units part = units_of(H, sizeof(floating), n_parts, p)
    cdef Py_ssize_t j, step = c.step, u0 = part.u0, n = part.n, n_pad = part.n_pad
    cdef Py_ssize_t h_pad = (H + nr - 1) // nr * nr
    cdef floating* gates_t = gp + 4 * t * step
    cdef floating* prod
    cdef const floating* h_prev = <const floating*> hp + (t - 1) * step if t else h0
    cdef const floating* c_prev = <const floating*> cp + (t - 1) * step if t else c0
    if n == 0:
        return
    if route == SPLIT_PACKED:
        prod = <floating*> packed + 4 * h_pad * H + 4 * u0
        # prod = h_prev @ Wh[:, its columns]     (1,4 n_pad) = (1,H)(H,4 n_pad)
        gemm_b(packed + 4 * u0 * H, NO_TRANS, 1, <int> (4 * n_pad), H, 1, h_prev, H, Wh, n_gh,
               0, prod, <int> (4 * n_pad))
        for g in range(4):
            for j in range(n):
                gates_t[g * H + u0 + j] += prod[g * n_pad + j]
    else:
        for g in range(4):
            # gates_t[g*H + u0 : +n] += h_prev @ Wh[:, g*H + u0 : +n]     (1,n) += (1,H)(H,n)
            gemm_b(<const floating*> NULL, NO_TRANS, 1, <int> n, H, 1, h_prev, H,
                   Wh + g * H + u0, n_gh, 1, gates_t + g * H + u0, n_gh)
    _cell_update(gates_t + u0, c_prev + u0, H, cp + t * step + u0, hp + t * step + u0, H, 1, H,
                 <int> n)


cdef void _forward_units(Call* c, SpinBarrier* bar, SpinBarrier* alone, int s, int team,
                         int route, const floating* h0, const floating* c0, const floating* Wh,
                         floating* packed, floating* gp, floating* hp, floating* cp) noexcept nogil:
    """Thread s's share of a forward of one sequence split by hidden units: part s
    (``_forward_part``) of every step, then the barrier ``bar`` before the next step reads h_t
    whole. Thread 0 runs every part, one after the other, where the region got fewer threads
    than c.n_parts (``team``: the others run nothing) or from the step after a barrier whose
    waits were slow (BARRIER_ALONE: the others leave; c.went_alone set), with the barrier of
    one ``alone``; a part's results do not depend on the thread. ``packed``: the workspace,
    64-byte aligned, where each thread packs its parts' columns of Wh (SPLIT_PACKED)."""
    cdef int n_parts = c.n_parts, sense = 0, verdict, p, p0 = s, p1 = s + 1
    cdef Py_ssize_t t
    if team != n_parts:
        if s != 0:
            return
        p0, p1, bar = 0, n_parts, alone
    if route == SPLIT_PACKED:
        for p in range(p0, p1):
            pack_part_columns(p, n_parts, 4, c.n_hidden, Wh, packed)
    for t in range(c.n_run):
        fetch_row(<const floating*> hp + (t - 1) * c.step if t else h0,
                  c.n_hidden * sizeof(floating))
        for p in range(p0, p1):
            _forward_part(p, n_parts, route, t, c, h0, c0, Wh, packed, gp, hp, cp)
        verdict = barrier_wait(bar, &sense, s == 0 and interrupted(&c.w))
        if leaves(verdict, s):
            break       # Ctrl-C: every thread stops after this step (or thread 0 goes on)
        if verdict:     # the waits were slow: thread 0 goes on alone, every part
            p0, p1, bar = 0, n_parts, alone
            c.went_alone = True


cdef void _forward_shard(Call* c, int s, const floating* h0, const floating* c0,
                         const floating* Wh, const floating* Whp, floating* gp, floating* hp,
                         floating* cp) noexcept nogil:
    """Shard s of c.n_shards of a forward: its sequences (``src/_shards.pxd``), every step that
    runs one of them."""
    cdef Shard sh = shard_of(c.n_batch, c.n_shards, s, c.ld)
    cdef Py_ssize_t t, first = sh.first, ld = c.ld, step = c.step   # first: its row in h, c
    cdef int rows, n_hidden = c.n_hidden
    for t in range(c.n_run):
        rows = rows_forward(c, s, &sh, t)
        if rows == 0:
            break   # none of the shard's rows runs this step or later, or Ctrl-C
        _forward_step(<const floating*> hp + first + (t - 1) * step if t
                      else h0 + sh.n0 * n_hidden,
                      <const floating*> cp + first + (t - 1) * step if t
                      else c0 + sh.n0 * n_hidden,
                      ld if t else n_hidden, gp + 4 * (first + t * step), cp + first + t * step,
                      hp + first + t * step, ld, Wh, Whp, rows, n_hidden)


def forward(Buffers bufs, const floating[:, :, ::1] x, active=None, int n_threads=1):
    """Fill the cache's h, c with the states and its gates with the activated gates of x.
    Arguments as for every cell's forward (``src/_call.pxd``); the other rows of c are set to
    zero too."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 4, active, n_threads)
    cdef int n_hidden = c.n_hidden, n_gh = 4 * n_hidden
    cdef int s
    cdef const floating* h0 = <const floating*> bufs.held.h0.buf
    cdef const floating* c0 = <const floating*> bufs.c0.buf
    cdef const floating* Wx = <const floating*> bufs.held.Wx.buf
    cdef const floating* Wh = <const floating*> bufs.held.Wh.buf
    cdef const floating* b = <const floating*> bufs.held.b.buf
    cdef floating* gp = <floating*> bufs.gates.buf
    cdef floating* hp = <floating*> bufs.held.h.buf
    cdef floating* cp = <floating*> bufs.c.buf
    cdef floating* Whp   # Wh packed for the per-step products, or NULL (BLAS)
    cdef SpinBarrier bar, alone     # the parts' barrier; thread 0's when it runs them all
    cdef int route = split_route(&c, &bufs.held.packed, 4, sizeof(floating))
    with nogil:
        if route != NO_SPLIT:
            # gates = b + X @ Wx     (T*N,4H) = (4H,) + (T*N,D)(D,4H) (src/_call.pxd)
            input_product(&c, n_gh, &x[0, 0, 0], Wx, b, gp)
            # one sequence, its hidden units split between c.n_parts threads: one region for
            # the whole loop, a barrier a step (src/_columns.pxd)
            barrier_init(&bar, c.n_parts)
            barrier_init(&alone, 1)
            if not c.w.stopped:
                with parallel(num_threads=c.n_parts):
                    _forward_units(&c, &bar, &alone, threadid(), team_size(), route, h0, c0,
                                   Wh, <floating*> packed_aligned(bufs.held.packed.buf), gp, hp,
                                   cp)
        else:
            Whp = pack_held(NO_TRANS, c.n_batch, n_hidden, n_gh, Wh, n_gh, &bufs.held.packed)
            # gates = b + X @ Wx     (T*N,4H) = (4H,) + (T*N,D)(D,4H) (src/_call.pxd)
            input_product(&c, n_gh, &x[0, 0, 0], Wx, b, gp)
            # shard s: its sequences (src/_shards.pxd); one shard on this thread, without a
            # parallel region
            if c.n_shards == 1:
                _forward_shard(&c, 0, h0, c0, Wh, Whp, gp, hp, cp)
            else:
                for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                    _forward_shard(&c, s, h0, c0, Wh, Whp, gp, hp, cp)
        zero_inactive(hp, n_hidden, c.n_steps, c.n_batch, c.act)
        zero_inactive(cp, n_hidden, c.n_steps, c.n_batch, c.act)
    end_call(&c)


cdef void _gate_grads(const floating* gates_t, const floating* c_prev, Py_ssize_t ld_prev,
                      const floating* c_t, Py_ssize_t ld, const floating* dh_tot,
                      floating* carry_c, floating* dA_t, floating xi_t,
                      int n_batch, int n_hidden, int n_units) noexcept nogil:
    """dA_t (N, 4H) from dh_tot = dL/dh_t; carry_c (dL/dc_t from step t+1) <- xi_t dc_t f.
    Rows of c_prev are ld_prev apart, those of c_t ld apart, those of gates_t and dA_t 4 ld;
    dh_tot and carry_c are (N, H) C-contiguous. Of each gate block, the first n_units units
    (all: n_hidden); a part of the units from unit u0 on is the same call on the pointers moved
    by u0. dA_t may be gates_t itself (overwrite_cache):
    each loop reads the gate values of an element into locals before it writes their slots,
    and each gate block is read only in the loop that overwrites it."""
    cdef Py_ssize_t n, j
    cdef const floating* gi
    cdef const floating* gf
    cdef const floating* gg
    cdef const floating* go
    cdef floating* da_i
    cdef floating* da_f
    cdef floating* da_g
    cdef floating* da_o
    cdef const floating* cp
    cdef const floating* ct
    cdef const floating* dht
    cdef floating* dc
    cdef floating tc, i, f, g, o
    cdef floating one = 1       # a bare 1 would be a C double, and the float32 loops with it
    for n in range(n_batch):
        gi = gates_t + 4 * n * ld
        gf = gi + n_hidden
        gg = gf + n_hidden
        go = gg + n_hidden
        da_i = dA_t + 4 * n * ld
        da_f = da_i + n_hidden
        da_g = da_f + n_hidden
        da_o = da_g + n_hidden
        cp = c_prev + n * ld_prev
        ct = c_t + n * ld
        dht = dh_tot + n * n_hidden
        dc = carry_c + n * n_hidden
        for j in range(n_units):                     # dc = dL/dc_t;  o -> da_o
            o = go[j]
            tc = <floating> tanh_(ct[j])
            dc[j] += dht[j] * o * (one - tc * tc)
            da_o[j] = dht[j] * tc * (o * (one - o))
        for j in range(n_units):                     # i -> da_i, g -> da_g
            i = gi[j]
            g = gg[j]
            da_i[j] = dc[j] * g * (i * (one - i))
            da_g[j] = dc[j] * i * (one - g * g)
        for j in range(n_units):                     # f -> da_f
            f = gf[j]
            da_f[j] = dc[j] * cp[j] * (f * (one - f))
            dc[j] = xi_t * dc[j] * f


cdef void _backward_step(const floating* dh_t, const floating* gates_t, const floating* c_prev,
                         Py_ssize_t ld_prev, const floating* c_t, floating* dA_t, Py_ssize_t ld,
                         floating* carry_h, floating* carry_c, const floating* Wh,
                         const floating* WhTp, floating xi_t, floating* norm_t,
                         int n_batch, int n_hidden) noexcept nogil:
    """Rows of c_prev are ld_prev apart, those of dh_t and c_t ld apart, those of gates_t and
    dA_t 4 ld; the carries are (N, H) C-contiguous. WhTp is Wh.T packed, or NULL (BLAS)."""
    cdef Py_ssize_t i, n, H = n_hidden
    cdef double sq = 0
    # carry_h = dL/dh_t = dh[t] + carry_h
    for n in range(n_batch):
        for i in range(H):
            carry_h[n * H + i] += dh_t[n * ld + i]
    if norm_t != NULL:
        for i in range(n_batch * H):
            sq += carry_h[i] * carry_h[i]
        norm_t[0] = <floating> sqrt(sq)
    _gate_grads(gates_t, c_prev, ld_prev, c_t, ld, carry_h, carry_c, dA_t, xi_t,
                n_batch, n_hidden, n_hidden)
    if cut(xi_t, carry_h, n_batch * H):
        return          # xi_t == 0: carry_h = 0 (src/_truncation.pxd)
    # carry_h = xi_t * dA_t @ Wh.T     (N,H) = (N,4H)(H,4H)'
    gemm_b(WhTp, TRANS, n_batch, n_hidden, 4 * n_hidden,
           xi_t, dA_t, <int> (4 * ld), Wh, 4 * n_hidden, 0, carry_h, n_hidden)


cdef void _backward_pass(int p, int n_parts, Py_ssize_t t, const Call* c,
                         const floating* dh, const floating* gp, const floating* cp,
                         const floating* c0, floating* dAp, floating* carry_h,
                         floating* carry_c, const floating* xi,
                         floating* norm_parts) noexcept nogil:
    """Part p's units u0 .. u0 + n of backward step t before its product: carry_h = dL/dh_t =
    dh[t] + carry_h, its norm over them (at norm_parts[p * T + t] unless NULL), dA_t's columns
    of its units and carry_c over them, all from the part's own carries."""
    cdef int H = c.n_hidden
    cdef Units part = units_of(H, sizeof(floating), n_parts, p)
    cdef Py_ssize_t j, step = c.step, u0 = part.u0, n = part.n
    cdef floating* ch = carry_h + u0
    cdef const floating* dh_t = dh + t * step + u0
    cdef const floating* c_prev = cp + (t - 1) * step if t else c0
    cdef double sq = 0
    for j in range(n):
        ch[j] += dh_t[j]
    if norm_parts != NULL:
        for j in range(n):
            sq += ch[j] * ch[j]
        norm_parts[p * c.n_steps + t] = <floating> sqrt(sq)
    if n > 0:
        _gate_grads(gp + 4 * t * step + u0, c_prev + u0, H, cp + t * step + u0, H, ch,
                    carry_c + u0, dAp + 4 * t * step + u0, xi[t], 1, H, <int> n)


cdef void _backward_product(int p, int n_parts, int route, Py_ssize_t t, const Call* c,
                            const floating* dA_t, floating* carry_h, const floating* Wh,
                            const floating* packed, floating xi_t) noexcept nogil:
    """Part p's carry after step t's barrier: carry_h[u0:u0+n] = xi_t dA_t @ Wh.T[:, its
    units], the sum the one-thread call makes, on its panels of Wh.T (SPLIT_PACKED: where the
    whole packing puts them, at packed + u0 * 4H) or on Wh's rows u0 .. u0 + n; zero where
    xi_t == 0."""
    cdef int H = c.n_hidden, n_gh = 4 * c.n_hidden
    cdef Units part = units_of(H, sizeof(floating), n_parts, p)
    if part.n == 0 or cut(xi_t, carry_h + part.u0, part.n):
        return          # xi_t == 0: its carry_h = 0 (src/_truncation.pxd)
    # carry_h[u0:u0+n] = xi_t * dA_t @ Wh[u0:u0+n].T     (1,n) = (1,4H)(n,4H)'
    gemm_b(packed + part.u0 * n_gh if route == SPLIT_PACKED else NULL, TRANS, 1,
           <int> part.n, n_gh, xi_t, dA_t, n_gh, Wh + part.u0 * n_gh, n_gh, 0,
           carry_h + part.u0, H)


cdef void _backward_units(Call* c, SpinBarrier* bar, SpinBarrier* alone, int s, int team,
                          int route, const floating* dh, const floating* gp,
                          const floating* cp, const floating* c0, floating* dAp,
                          floating* carry_h, floating* carry_c, const floating* Wh,
                          floating* packed, const floating* xi,
                          floating* norm_parts) noexcept nogil:
    """Thread s's share of a backward of one sequence split by hidden units: at each step, from
    t = T - 1 down, part s's pass (``_backward_pass``), then the barrier, as the product reads
    dA_t whole, then part s's carry (``_backward_product``). Each thread packs its parts'
    panels of Wh.T (SPLIT_PACKED). Thread 0 runs every part, as in ``_forward_units``, where
    the team is short or from a barrier whose waits were slow on (c.went_alone set)."""
    cdef int n_parts = c.n_parts, sense = 0, verdict, p, p0 = s, p1 = s + 1
    cdef int H = c.n_hidden, n_gh = 4 * c.n_hidden
    cdef Py_ssize_t t
    if team != n_parts:
        if s != 0:
            return
        p0, p1, bar = 0, n_parts, alone
    if route == SPLIT_PACKED:
        for p in range(p0, p1):
            # op(Wh[u0:u0+n]) = Wh[u0:u0+n].T (4H, n): its panels of Wh.T
            pack_part_rows(p, n_parts, 4, H, Wh, packed)
    for t in range(c.n_steps - 1, -1, -1):
        if t >= c.n_run:        # no row runs: no gradient, the carries wait
            for p in range(p0, p1):
                if norm_parts != NULL:
                    norm_parts[p * c.n_steps + t] = 0
            continue
        for p in range(p0, p1):
            _backward_pass(p, n_parts, t, c, dh, gp, cp, c0, dAp, carry_h, carry_c, xi,
                           norm_parts)
        verdict = barrier_wait(bar, &sense, s == 0 and interrupted(&c.w))
        if leaves(verdict, s):
            break       # Ctrl-C: every thread stops at this step (or thread 0 goes on)
        if verdict:     # the waits were slow: thread 0 goes on alone, every part
            p0, p1, bar = 0, n_parts, alone
            c.went_alone = True
        fetch_row(dAp + 4 * t * c.step, n_gh * sizeof(floating))
        for p in range(p0, p1):
            _backward_product(p, n_parts, route, t, c, dAp + 4 * t * c.step, carry_h, Wh,
                              packed, xi[t])


cdef void _backward_shard(Call* c, int s, const floating* dhp, const floating* gp,
                          const floating* cp, const floating* c0, floating* dAp,
                          floating* carry_h, floating* carry_c, const floating* Wh,
                          const floating* WhTp, const floating* xi,
                          floating* norms) noexcept nogil:
    """Shard s of c.n_shards of a backward: its sequences (``src/_shards.pxd``), every step,
    the steps none of its rows runs passed over."""
    cdef Shard sh = shard_of(c.n_batch, c.n_shards, s, c.ld)
    # its first row in dh, h, c; its first sequence, a row of the carries
    cdef Py_ssize_t t, first = sh.first, n0 = sh.n0, ld = c.ld, step = c.step
    cdef floating* ns = norms + s * c.n_steps if norms != NULL else NULL
    cdef int rows, n_hidden = c.n_hidden
    for t in range(c.n_steps - 1, -1, -1):
        rows = rows_backward(c, s, &sh, t, ns)
        if rows < 0:
            break       # interrupted
        if rows == 0:   # none of the shard's rows runs: no gradient, carries wait
            continue
        _backward_step(dhp + first + t * step, gp + 4 * (first + t * step),
                       cp + first + (t - 1) * step if t else c0 + n0 * n_hidden,
                       ld if t else n_hidden, cp + first + t * step,
                       dAp + 4 * (first + t * step), ld, carry_h + n0 * n_hidden,
                       carry_c + n0 * n_hidden, Wh, WhTp, xi[t], ns + t if ns != NULL else NULL,
                       rows, n_hidden)


def backward(Buffers bufs, const floating[:, :, ::1] dh, const floating[::1] xi,
             dict carries, floating[:, :, ::1] dx, dict weight_grads,
             floating[::1] norms=None, bint overwrite_cache=False,
             bint write_weight_grads=False, active=None, int n_threads=1):
    """BPTT over the cache's arrays. Arguments as for every cell's backward (``src/_call.pxd``):
    carries['dhT'], carries['dcT'] (N, H); weight_grads' 'dWx', 'dWh', 'db'. dA is the workspace
    dA (like gates, made by the first call that needs it), or with overwrite_cache the cache's
    gates themselves: step t reads gates[t] only before it writes dA[t]."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 4, active, n_threads)
    cdef int n_hidden = c.n_hidden, n_gh = 4 * n_hidden
    cdef int s
    cdef const floating* Wh = <const floating*> bufs.held.Wh.buf
    cdef int route = split_route(&c, &bufs.held.packed, 4, sizeof(floating))
    cdef SpinBarrier bar, alone     # the parts' barrier; thread 0's when it runs them all
    # shard s's norms at norms_p + s * T, or NULL (src/_shards.pxd); split by units, part s's
    cdef floating* norms_p = shard_norms(norms, c.n_parts if route != NO_SPLIT else c.n_shards,
                                         c.n_steps, &bufs.held.norm_parts)
    cdef floating[:, ::1] carry_h = carries["dhT"]
    cdef floating[:, ::1] carry_c = carries["dcT"]
    cdef floating[:, ::1] dWx = weight_grads["dWx"]
    cdef floating[:, ::1] dWh = weight_grads["dWh"]
    cdef floating[::1] db = weight_grads["db"]
    cdef const floating* dhp = &dh[0, 0, 0]
    cdef const floating* gp = <const floating*> bufs.gates.buf
    cdef const floating* cp = <const floating*> bufs.c.buf
    cdef const floating* hp = <const floating*> bufs.held.h.buf
    cdef const floating* h0 = <const floating*> bufs.held.h0.buf
    cdef const floating* c0 = <const floating*> bufs.c0.buf
    cdef const floating* x = <const floating*> bufs.held.x.buf
    cdef const floating* Wx = <const floating*> bufs.held.Wx.buf
    cdef floating* dAp
    cdef floating* WhTp   # Wh.T packed for the per-step products, or NULL (BLAS)
    if overwrite_cache:
        dAp = <floating*> bufs.gates.buf
    else:
        if holds_nothing(&bufs.dA):
            hold_new(&bufs.dA, np.empty(steps_shape(&bufs.held.dims, n_gh), bufs.dtype))
        dAp = <floating*> bufs.dA.buf
    with nogil:
        if route != NO_SPLIT:
            # one sequence, its hidden units split between c.n_parts threads: one region for
            # the whole loop, a barrier a step (src/_columns.pxd)
            barrier_init(&bar, c.n_parts)
            barrier_init(&alone, 1)
            with parallel(num_threads=c.n_parts):
                _backward_units(&c, &bar, &alone, threadid(), team_size(), route, dhp, gp, cp,
                                c0, dAp, &carry_h[0, 0], &carry_c[0, 0], Wh,
                                <floating*> packed_aligned(bufs.held.packed.buf), &xi[0],
                                norms_p)
            if norms_p != NULL and not c.w.stopped:
                # the parts' norms joined: rounded otherwise than one sum over the row
                join_norms(norms_p, c.n_parts, c.n_steps, &norms[0])
            if c.went_alone:    # the machine's cores are taken: the rest on this thread
                c.n_threads = 1
        else:
            # op(Wh) = Wh.T (4H, H), stored (H, 4H)
            WhTp = pack_held(TRANS, c.n_batch, n_gh, n_hidden, Wh, n_gh, &bufs.held.packed)
            # shard s: its sequences (src/_shards.pxd); one shard on this thread, without a
            # parallel region
            if c.n_shards == 1:
                _backward_shard(&c, 0, dhp, gp, cp, c0, dAp, &carry_h[0, 0], &carry_c[0, 0],
                                Wh, WhTp, &xi[0], norms_p)
            else:
                for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                    _backward_shard(&c, s, dhp, gp, cp, c0, dAp, &carry_h[0, 0],
                                    &carry_c[0, 0], Wh, WhTp, &xi[0], norms_p)
            if norms_p != NULL and c.n_shards > 1:
                join_norms(norms_p, c.n_shards, c.n_steps, &norms[0])
        # the weight gradients and dx (src/_shards.pxd): dWx (+)= X.T @ dA, dWh (+)= sum_t
        # h_{t-1}.T @ dA[t], db (+)= dA.sum(axis=(0, 1)), dx = dA @ Wx.T
        grads_and_dx(&c.w, c.n_threads, c.act, c.n_run, c.by_step, c.n_steps, c.n_batch,
                     c.n_input, n_hidden, n_gh, x, h0, hp, dAp, Wx, &dx[0, 0, 0],
                     write_weight_grads, &dWx[0, 0], &dWh[0, 0], &db[0])
    end_call(&c)


def split_backoff():
    """How many of this module's next calls keep to one thread because split calls of one
    sequence before them had to go on alone (``src/_columns.pxd``): 0 on a machine with free
    cores."""
    return split_skip


def split_parts(Buffers bufs, int n_threads):
    """The threads a call over ``bufs`` allowed ``n_threads`` splits each step between by
    hidden units (one sequence, ``src/_units.pxd``), or 1: the step loop runs on one thread."""
    cdef Call c = begin_call(&bufs.held.dims, bufs.held.dims.itemsize, 4, None, n_threads)
    if split_route(&c, &bufs.held.packed, 4, bufs.held.dims.itemsize) == NO_SPLIT:
        return 1
    return c.n_parts
