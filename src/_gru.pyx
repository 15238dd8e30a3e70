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
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.string cimport memset

from _active cimport (hidden_grad_by_steps, product_by_steps, running_rows, sum_by_steps,
                      zero_inactive, zero_steps)
from _blas cimport NO_TRANS, TRANS
from _call cimport Call, begin_call, input_product, rows_backward, rows_forward
from _held cimport (Dims, Held, begin_held, hold_new, hold_steps, hold_vector, holds_nothing,
                    refresh_held, release_held, steps_shape)
from _interrupt cimport raise_pending
from _packed cimport gemm_b, pack_held
from _shards cimport (Shard, cols_hidden_part, cols_sum_part, join_norms, rows_product_part,
                      shard_norms, shard_of)
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


cdef void _forward_step(const floating* h_prev, Py_ssize_t ld_prev, floating* gates_t,
                        floating* hn_t, floating* h_t, Py_ssize_t ld, floating* hh,
                        const floating* Wh, const floating* Whp, const floating* b,
                        const floating* bh, int n_batch, int n_hidden) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of hn_t and h_t ld apart, those of gates_t 3 ld;
    hh is (N, 3H) C-contiguous. Whp is Wh packed, or NULL (BLAS)."""
    cdef Py_ssize_t H = n_hidden, i, j
    cdef floating n
    # row i of each block; the gate and hh rows are 3H long, the others H
    cdef floating* gate_r
    cdef floating* gate_z
    cdef floating* gate_n
    cdef const floating* hh_r
    cdef const floating* hh_z
    cdef const floating* hh_n
    cdef const floating* h_prev_i
    cdef floating* hn_i
    cdef floating* h_i
    # hh = h_prev @ Wh     (N,3H) = (N,H)(H,3H)
    gemm_b(Whp, NO_TRANS, n_batch, 3 * n_hidden, n_hidden,
           1, h_prev, <int> ld_prev, Wh, 3 * n_hidden, 0, hh, 3 * n_hidden)
    # short loops over each row, so that GCC vectorises every one (see the module docstring)
    for i in range(n_batch):
        gate_r = gates_t + 3 * ld * i
        gate_z = gate_r + H
        gate_n = gate_z + H
        hh_r = hh + 3 * H * i
        hh_z = hh_r + H
        hh_n = hh_z + H
        h_prev_i = h_prev + ld_prev * i
        hn_i = hn_t + ld * i
        h_i = h_t + ld * i
        # r = sigma(xr + hr), in place of x_t Wx_r
        for j in range(H):
            gate_r[j] = sigmoid_((gate_r[j] + b[j]) + (hh_r[j] + bh[j]))
        # z = sigma(xz + hz), in place of x_t Wx_z
        for j in range(H):
            gate_z[j] = sigmoid_((gate_z[j] + b[H + j]) + (hh_z[j] + bh[H + j]))
        # xn = x_t Wx_n + b_n in place;  hn = h_prev Wh_n + bh_n
        for j in range(H):
            gate_n[j] = gate_n[j] + b[2 * H + j]
            hn_i[j] = hh_n[j] + bh[2 * H + j]
        # n = tanh(xn + r * hn), in place of xn;  h_t = (1 - z) * n + z * h_prev
        for j in range(H):
            n = tanh_(gate_n[j] + gate_r[j] * hn_i[j])
            gate_n[j] = n
            h_i[j] = (1 - gate_z[j]) * n + gate_z[j] * h_prev_i[j]


def forward(Buffers bufs, const floating[:, :, ::1] x, active=None, int n_threads=1):
    """Fill the cache's h with the hidden states of x, its gates with r, z, n and its hn with
    h_{t-1} Wh_n + bh_n. Arguments as for every cell's forward (``src/_call.pxd``)."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 3, active, n_threads)
    cdef int n_hidden = c.n_hidden
    cdef Py_ssize_t t, n0, first, ld = c.ld, step = c.step
    cdef int s, rows
    cdef Shard sh         # shard s's sequences and rows (src/_shards.pxd)
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
    with nogil:
        Whp = pack_held(NO_TRANS, c.n_batch, n_hidden, 3 * n_hidden, Wh, 3 * n_hidden,
                        &bufs.held.packed)
        # gates = X @ Wx     (T*N,3H) = (T*N,D)(D,3H) (src/_call.pxd); b is added in the
        # step's pass
        input_product(&c, 3 * n_hidden, &x[0, 0, 0], Wx, NULL, gp)
        # shard s: its sequences n0 .. n1 - 1, every step that runs one, its rows n0 .. n1 - 1
        # of hh (src/_shards.pxd)
        for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
            sh = shard_of(c.n_batch, c.n_shards, s, ld)
            first, n0 = sh.first, sh.n0     # the shard's first row in h and hn; in hh
            for t in range(c.n_run):
                rows = rows_forward(&c, s, &sh, t)
                if rows == 0:
                    break       # none of the shard's rows runs this step or later, or Ctrl-C
                _forward_step(<const floating*> hp + first + (t - 1) * step if t
                              else h0 + n0 * n_hidden, ld if t else n_hidden,
                              gp + 3 * (first + t * step), hnp + first + t * step,
                              hp + first + t * step, ld, hh + 3 * n0 * n_hidden, Wh, Whp, b,
                              bh, rows, n_hidden)
        zero_inactive(hp, n_hidden, c.n_steps, c.n_batch, c.act)
    raise_pending(&c.w)


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
    cdef Py_ssize_t H = n_hidden, i, j
    cdef floating g, r, z, n, hn, dxn
    cdef double sq = 0
    # row i of each block; the gate and dAh rows are 3H long, the others H
    cdef const floating* gate_r
    cdef const floating* gate_z
    cdef const floating* gate_n
    cdef const floating* hn_i
    cdef floating* dhr_i
    cdef floating* dhz_i
    cdef floating* dhn_i
    cdef floating* dxn_i
    cdef const floating* dh_i
    cdef const floating* h_prev_i
    cdef floating* carry_i
    # short loops over each row, as in forward
    for i in range(n_batch):
        gate_r = gates_t + 3 * ld * i
        gate_z = gate_r + H
        gate_n = gate_z + H
        hn_i = hn_t + ld * i
        dhr_i = dAh_t + 3 * ld * i
        dhz_i = dhr_i + H
        dhn_i = dhz_i + H
        dxn_i = dxn_t + ld * i
        dh_i = dh_t + ld * i
        h_prev_i = h_prev + ld_prev * i
        carry_i = carry + H * i
        # g = dh[t] + carry, held in g_row;  carry = xi_t * g * z, the direct path
        for j in range(H):
            g = dh_i[j] + carry_i[j]
            g_row[j] = g
            carry_i[j] = xi_t * (g * gate_z[j])
        if norm_t != NULL:
            # ||dL/dh_t||^2 = sum of g^2 over the rows
            for j in range(H):
                sq += g_row[j] * g_row[j]
        # z, n -> dhz = g (h_prev - n) z (1 - z) over z;  dxn = g (1 - z) (1 - n^2), held in
        # dhn's slot (over n) for now
        for j in range(H):
            g = g_row[j]
            z = gate_z[j]
            n = gate_n[j]
            dhz_i[j] = g * (h_prev_i[j] - n) * (z * (1 - z))
            dhn_i[j] = g * (1 - z) * (1 - n * n)
        # r, hn -> dhr = dxn hn r (1 - r) over r;  dhn = r dxn over n;  dxn over hn
        for j in range(H):
            r = gate_r[j]
            hn = hn_i[j]
            dxn = dhn_i[j]
            dhr_i[j] = dxn * hn * (r * (1 - r))
            dhn_i[j] = r * dxn
            dxn_i[j] = dxn
        # dbh += [dhr dhz dhn];  db += [dxr dxz dxn] (the row is still in L1 here)
        for j in range(3 * H):
            dbh[j] += dhr_i[j]
        for j in range(2 * H):
            db[j] += dhr_i[j]
        for j in range(H):
            db[2 * H + j] += dxn_i[j]
    if norm_t != NULL:
        norm_t[0] = <floating> sqrt(sq)
    if xi_t == 0:
        return
    # carry += xi_t * dAh_t @ Wh.T     (N,H) += (N,3H)(H,3H)'
    gemm_b(WhTp, TRANS, n_batch, n_hidden, 3 * n_hidden,
           xi_t, dAh_t, <int> (3 * ld), Wh, 3 * n_hidden, 1, carry, n_hidden)


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
    cdef Py_ssize_t H = n_hidden, ld = c.ld, step = c.step
    cdef Py_ssize_t row = H * sizeof(floating), ld_bytes = ld * sizeof(floating)
    cdef Py_ssize_t t, n0, first, j
    cdef int s, rows
    cdef Shard sh         # shard s's sequences and rows (src/_shards.pxd)
    # shard s's norms at norms_p + s * T, or NULL (src/_shards.pxd)
    cdef floating* norms_p = shard_norms(norms, c.n_shards, c.n_steps, &bufs.held.norm_parts)
    cdef floating* ns
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
    cdef int n_b
    cdef floating beta = 0 if write_weight_grads else 1    # of the first products into dWx, dWh
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
        # op(Wh) = Wh.T (3H, H), stored (H, 3H)
        WhTp = pack_held(TRANS, c.n_batch, 3 * n_hidden, n_hidden, Wh, 3 * n_hidden,
                         &bufs.held.packed)
        # shard s: sequences n0 .. n1 - 1, every step (src/_shards.pxd)
        for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
            sh = shard_of(c.n_batch, c.n_shards, s, ld)
            first, n0 = sh.first, sh.n0     # the shard's first row in dh, h, hn, dxn; in carry
            ns = norms_p + s * c.n_steps if norms_p != NULL else NULL
            for t in range(c.n_steps - 1, -1, -1):
                rows = rows_backward(&c, s, &sh, t, ns)
                if rows < 0:
                    break       # interrupted
                if rows == 0:   # none of the shard's rows runs: no gradient, carry waits
                    continue
                if t > 0:
                    # step t-1's inputs: time runs backwards, which the hardware prefetcher
                    # misses
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
                               dxnp + first + t * step, ld, &carry[0, 0] + n0 * H,
                               g_row if c.n_shards == 1 else rows_p + s * 7 * H, Wh, WhTp,
                               &db[0] if c.n_shards == 1 else rows_p + s * 7 * H + H,
                               &dbh[0] if c.n_shards == 1 else rows_p + s * 7 * H + 4 * H,
                               xi[t], ns + t if ns != NULL else NULL, rows, n_hidden)
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
            # the weight gradients and dx, thread s its part of each (src/_shards.pxd); its
            # rows of dx get both products, in order
            for s in prange(c.n_threads, num_threads=c.n_threads, schedule="static"):
                if c.w.stopped:
                    continue
                # dWh (+)= sum_t h_{t-1}.T @ dAh[t]     (H,3H) (+)= (N,H)'(N,3H) summed over t
                cols_hidden_part(&c.w, s, c.n_threads, c.by_step, c.n_steps, c.n_batch,
                                 n_hidden, 3 * n_hidden, h0, hp, dAhp, 3 * H, beta, &dWh[0, 0])
                # The input-side gradients are [dxr dxz] = dAh[..., :2H] and dxn: two
                # products each for dx and dWx.
                # dx = dxn @ Wx[:, 2H:].T     (T*N,D) = (T*N,H)(D,H)'
                rows_product_part(&c.w, s, c.n_threads, TRANS, c.n_steps * c.n_batch,
                                  c.n_input, n_hidden, 1, dxnp, n_hidden, Wx + 2 * H,
                                  3 * n_hidden, 0, &dx[0, 0, 0], c.n_input, NULL)
                # dx += [dxr dxz] @ Wx[:, :2H].T     (T*N,D) += (T*N,2H)(D,2H)'
                rows_product_part(&c.w, s, c.n_threads, TRANS, c.n_steps * c.n_batch,
                                  c.n_input, 2 * n_hidden, 1, dAhp, 3 * n_hidden, Wx,
                                  3 * n_hidden, 1, &dx[0, 0, 0], c.n_input, NULL)
                # dWx[:, :2H] (+)= X.T @ [dxr dxz]     (D,2H) (+)= (T*N,D)'(T*N,2H)
                cols_sum_part(&c.w, s, c.n_threads, c.n_input, 2 * n_hidden,
                              c.n_steps * c.n_batch, 1, xp, c.n_input, dAhp, 3 * n_hidden,
                              beta, &dWx[0, 0], 3 * n_hidden)
                # dWx[:, 2H:] (+)= X.T @ dxn     (D,H) (+)= (T*N,D)'(T*N,H)
                cols_sum_part(&c.w, s, c.n_threads, c.n_input, n_hidden,
                              c.n_steps * c.n_batch, 1, xp, c.n_input, dxnp, n_hidden,
                              beta, &dWx[0, 2 * H], 3 * n_hidden)
    raise_pending(&c.w)
