# cython: language_level=3
"""Elman RNN kernels: the forward time-step loop and backpropagation through time.

    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = phi(a_t),    phi in {tanh, sigmoid, relu}

Every per-step buffer (x, h, dh, dA, dx) is C-contiguous in the caller's layout, batch-major
(N, T, .) or time-major (T, N, .) (``time_major``), and no copy is made of either: step t is an
(N, .) matrix whose rows are n_rows * width apart (``src/_layout.pxd``). Below, buf[t] is step t
of a buffer in either layout. Math symbols and variables (shapes; T = n_steps, N = n_batch,
D = n_input, H = n_hidden):

    x_t          x[t]           (N, D)   input of step t
    h_{t-1}      h0 or h[t-1]   (N, H)   state step t receives
    a_t, h_t     h[t]           (N, H)   a_t is written there, then overwritten by phi(a_t)
    Wx, Wh, b    Wx, Wh, b      (D, H), (H, H), (H,)
    dL/dh_t      dh[t]          (N, H)   upstream gradient of step t's output
    dL/da_t      dA[t]          (N, H)   workspace of backward (lean: dA[t - t_first], block
                                         t_first .. t_first + B - 1, rows H apart)
    xi_t         xi[t]                   truncation multiplier of the flow from step t into h_{t-1}
    carry        carry          (N, H)   gradient reaching h_t through step t+1: dhT at the start,
                                         dL/dh0 at the end
    ||dL/dh_t||  norms[t]                Frobenius norm of dh[t] + carry, only if norms is given

phi'(a_t) is computed from h_t: tanh' = 1 - h^2, sigmoid' = h (1 - h), relu' = [h > 0] (a factor
0 or 1, so that a NaN or an infinity in dL/dh_t stays non-finite, as in the reference).
Forward: one hoisted GEMM X @ Wx for all steps, then per step one GEMM and one fused phi pass.
Backward: per step one fused pass giving dA_t and one GEMM dA_t @ Wh.T (skipped where
xi_t == 0); then the weight gradients and dx as four products over all steps. The lean
backward (``backward_lean``, for ``overwrite_cache=True``) holds dA for B steps only, a (B, N, H)
workspace: it runs the same steps in blocks of B from the end and adds each block's weight
gradients and dx from its dA, one product each over the block's B*N rows where they are
consecutive (time-major, or N == 1), else one per step. Gradients of the weights are written
into the arrays passed in (``write_weight_grads``: the first product or block that touches each
array writes it, beta = 0) or accumulated into them. The AVX2 build packs Wh (forward) or Wh.T
(both backwards) once per call into the workspace ``packed`` and runs the per-step products on
it (``src/_packed.pxd``); the baseline build calls BLAS. The elementwise passes walk one row at a
time (one flat loop over the step where its rows are back to back, time-major).

One sequence (N = 1) has no shards of sequences for several threads: where its step is wide
enough (``Call.n_parts`` > 1, ``src/_columns.pxd``) each step's columns are split between the
call's threads instead, in one parallel region for the whole step loop. Thread s owns columns
[c0, c1) of h (cut at the packed panels of Wh: 16 float32 or 8 float64 columns), and thread 0
is the calling thread. Forward, per step: thread s computes h_t[c0:c1] (its columns of
h_{t-1} @ Wh and phi), then all threads wait at a spinning barrier before any reads the whole
h_t. Backward, per step: thread s computes dA_t[c0:c1] from carry[c0:c1] (which it computed
itself at step t+1), the barrier, then carry[c0:c1] = xi_t * dA_t @ Wh.T[:, c0:c1] from the
whole dA_t; with norms each thread sums the squares of its columns and thread 0 joins the
sums after the barrier. The lean backward's blocks of weight gradients and dx are split
between the same threads (columns of the weight gradients, rows of dx), between two barriers.
Thread 0 alone looks for Ctrl-C, before each barrier, whose verdict stops every thread after
the same step. Every element of h, dA and the carry is the same sum of the same terms as on one
thread where the per-step products are this module's own loops (the AVX2 build; BLAS's GEMV
may round a part of its columns otherwise), so the split adds no rounding of its own: with
X @ Wx + b exact, h and the carries equal the one-thread ones bit for bit. The products over
all steps run on BLAS split by rows or columns between the same threads, as for several
sequences, and BLAS may round a part of a product otherwise than the whole: the results equal
the one-thread ones to rounding (the norms too: the threads' sums of squares are added in part
order). Measured in ``benchmarks/one_stream_parts.py``.

A cache's arrays (x, h0, Wx, Wh, b, h) and the workspaces (dA, packed, norm_parts) reach the
kernels as one ``Buffers``, made once per cache and read by name (``src/_held.pxd``); only the
arrays of one call (dh, xi, the carry, dx, the weight gradients, the norms, the lean backward's
dA) are arguments. What a call derives from them and from its arguments before its loops (sizes,
strides, the rows that run, threads, the watch for Ctrl-C) is one ``Call`` (``src/_call.pxd``),
which also tells how sequences of unequal lengths (``active``) and several threads
(``n_threads``) run.
"""
import numpy as np

cimport cython
from cpython.buffer cimport PyBuffer_Release
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt

from _active cimport zero_inactive
from _blas cimport NO_TRANS, TRANS, gemm
from _call cimport Call, begin_call, end_call, input_product, rows_backward, rows_forward
from _columns cimport (SpinBarrier, barrier_init, barrier_wait, fetch_row, leaves, part_first,
                       split_skip, team_size)
from _held cimport (Held, begin_held, hold_new, holds_nothing, refresh_held, release_held,
                    steps_shape)
from _hoisted cimport add_hidden_weight_grad, sum_rows
from _interrupt cimport interrupted
from _layout cimport check_blas_ld
from _packed cimport PACKED_NR_D, PACKED_NR_S, gemm_b, pack_held
from _phi cimport RELU, SIGMOID, TANH, phi_in_place
from _shards cimport (Shard, cols_bias_part, cols_hidden_part, cols_sum_part, grads_and_dx,
                      join_norms, rows_product_part, shard_norms, shard_of)
from _truncation cimport cut

NONLINEARITIES = {"tanh": TANH, "sigmoid": SIGMOID, "relu": RELU}


@cython.auto_pickle(False)
cdef class Buffers:
    """One RNN cache's arrays, held for the kernels (``src/_held.pxd``): its x, h0, Wx, Wh, b
    and h, its nonlinearity, and the workspaces packed (Wh or Wh.T packed once per call,
    ``src/_packed.pxd``), dA (like h), made by the first backward that needs it (the lean
    backward's, whose size the caller picks, is an argument), and norm_parts (the sharded
    backward's norms, ``src/_shards.pxd``). ``Buffers(cache)`` holds the cache's;
    ``refresh(cache)`` holds again those that a forward with out=cache replaced."""
    cdef Held held          # sizes, x, h0, Wx, Wh, b, h, packed, norm_parts (src/_held.pxd)
    cdef Py_buffer dA       # workspace
    cdef int nonlinearity   # NONLINEARITIES[nonlinearity_name]
    cdef object nonlinearity_name, dtype

    def __cinit__(self, cache):
        self.dtype = begin_held(&self.held, cache, 1, np.empty)
        self.refresh(cache)

    def refresh(self, cache):
        """Hold the arrays of ``cache`` (the one these were made for) that it holds no longer,
        and its nonlinearity: a forward with out=cache puts in the caller's x and weights."""
        refresh_held(&self.held, cache, 1)
        if cache.nonlinearity is not self.nonlinearity_name:
            self.nonlinearity = NONLINEARITIES[cache.nonlinearity]
            self.nonlinearity_name = cache.nonlinearity

    def __dealloc__(self):
        release_held(&self.held)
        PyBuffer_Release(&self.dA)


cdef void _forward_step(const floating* h_prev, Py_ssize_t ld_prev, floating* h_t, Py_ssize_t ld,
                        const floating* Wh, const floating* Whp, int n_batch, int n_hidden,
                        int nonlinearity) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of h_t ld apart. Whp is Wh packed, or NULL
    (BLAS)."""
    cdef Py_ssize_t n
    # h_t += h_prev @ Wh     (N,H) += (N,H)(H,H); h_t holds x_t Wx + b
    gemm_b(Whp, NO_TRANS, n_batch, n_hidden, n_hidden,
           1, h_prev, <int> ld_prev, Wh, n_hidden, 1, h_t, <int> ld)
    if ld == n_hidden:                  # rows back to back: one flat pass
        phi_in_place(h_t, <Py_ssize_t> n_batch * n_hidden, nonlinearity)
        return
    for n in range(n_batch):
        phi_in_place(h_t + n * ld, n_hidden, nonlinearity)


cdef inline int _panel(const floating* unused) noexcept nogil:
    """Columns per packed panel of Wh for this dtype: the unit the columns are split in."""
    return PACKED_NR_S if floating is float else PACKED_NR_D


cdef void _forward_cols(const floating* h_prev, floating* h_t, const floating* Wh,
                        const floating* Whp, int n_hidden, int c0, int c1,
                        int nonlinearity) noexcept nogil:
    """Columns c0:c1 of a step of one sequence: h_t[c0:c1] (holding x_t Wx + b) += h_prev @
    Wh[:, c0:c1], then phi on them. Whp is Wh packed (c0 at a panel boundary: its columns'
    panels start at Whp + c0 * H), or NULL (BLAS or ``_few.h`` on Wh + c0, rows H apart)."""
    cdef Py_ssize_t H = n_hidden
    fetch_row(h_prev, H * sizeof(floating))     # the other threads' columns of it
    # h_t[c0:c1] += h_prev @ Wh[:, c0:c1]     (1,C) += (1,H)(H,C)
    gemm_b(Whp + c0 * H if Whp != NULL else NULL, NO_TRANS, 1, c1 - c0, n_hidden,
           1, h_prev, n_hidden, Wh + c0, n_hidden, 1, h_t + c0, n_hidden)
    phi_in_place(h_t + c0, c1 - c0, nonlinearity)


cdef void _forward_parts(Call* c, const floating* h0, floating* h, const floating* Wh,
                         const floating* Whp, int nonlinearity) noexcept nogil:
    """The step loop of one sequence, each step's columns split between c.n_parts threads
    (``src/_columns.pxd``): thread s computes columns [part_first(s), part_first(s + 1)) of h_t
    (cut at panel boundaries), then all wait at the barrier before any reads the whole h_t for
    step t + 1. Thread 0, the calling thread, looks for Ctrl-C before each wait, and the
    barrier's verdict stops every thread after the same step."""
    cdef SpinBarrier bar, alone
    cdef SpinBarrier* b = &alone
    cdef int s = 0, n = 1, c0 = 0, c1 = 0, sense = 0, verdict = 0, H = c.n_hidden
    cdef int unit = _panel(h0)
    cdef Py_ssize_t t = 0
    barrier_init(&bar, c.n_parts)
    barrier_init(&alone, 1)
    with parallel(num_threads=c.n_parts):
        s = threadid()
        # a team smaller than asked (OpenMP's limits): thread 0 runs every column alone
        n = c.n_parts if team_size() == c.n_parts else 1
        b = &bar if n > 1 else &alone
        if s < n:
            c0 = part_first(H, unit, n, s)
            c1 = part_first(H, unit, n, s + 1)
            sense = 0
            for t in range(c.n_run):
                _forward_cols(<const floating*> h + (t - 1) * c.step if t else h0,
                              h + t * c.step, Wh, Whp, H, c0, c1, nonlinearity)
                verdict = barrier_wait(b, &sense, s == 0 and interrupted(&c.w))
                if leaves(verdict, s):
                    break       # Ctrl-C: every thread stops after this step (or thread 0 goes on)
                if verdict:     # the waits were slow: thread 0 alone, every column
                    b, c0, c1 = &alone, 0, H
                    c.went_alone = True


cdef void _forward_shard(Call* c, int s, const floating* h0, floating* h, const floating* Wh,
                         const floating* Whp, int nonlinearity) noexcept nogil:
    """Shard s of c.n_shards of a forward: its sequences (``src/_shards.pxd``), every step that
    runs one of them."""
    cdef Shard sh = shard_of(c.n_batch, c.n_shards, s, c.ld)
    cdef floating* hs = h + sh.first
    cdef int rows, H = c.n_hidden
    cdef Py_ssize_t t
    for t in range(c.n_run):
        rows = rows_forward(c, s, &sh, t)
        if rows == 0:
            break   # none of the shard's rows runs this step or later, or Ctrl-C
        _forward_step(<const floating*> hs + (t - 1) * c.step if t else h0 + sh.n0 * H,
                      c.ld if t else H, hs + t * c.step, c.ld, Wh, Whp, rows, H, nonlinearity)


def split_backoff():
    """How many of this module's next calls keep to one thread because split calls of one
    sequence before them had to go on alone (``src/_columns.pxd``): 0 on a machine with free
    cores."""
    return split_skip


def forward(Buffers bufs, const floating[:, :, ::1] x, active=None, int n_threads=1):
    """Fill the cache's h with the hidden states of x. Arguments as for every cell's forward
    (``src/_call.pxd``)."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 1, active, n_threads)
    cdef int H = c.n_hidden
    cdef int s
    cdef const floating* h0 = <const floating*> bufs.held.h0.buf
    cdef const floating* Wx = <const floating*> bufs.held.Wx.buf
    cdef const floating* Wh = <const floating*> bufs.held.Wh.buf
    cdef const floating* b = <const floating*> bufs.held.b.buf
    cdef floating* hp = <floating*> bufs.held.h.buf
    cdef int nonlinearity = bufs.nonlinearity
    cdef floating* Whp   # Wh packed for the per-step products, or NULL (BLAS)
    with nogil:
        Whp = pack_held(NO_TRANS, c.n_batch, H, H, Wh, H, &bufs.held.packed)
        # h = b + X @ Wx     (T*N,H) = (H,) + (T*N,D)(D,H) (src/_call.pxd)
        input_product(&c, H, &x[0, 0, 0], Wx, b, hp)
        if c.n_parts > 1:
            # one sequence: each step's columns split between threads (src/_columns.pxd)
            if not c.w.stopped:
                _forward_parts(&c, h0, hp, Wh, Whp, nonlinearity)
        else:
            # shard s: its sequences (src/_shards.pxd); one shard on this thread, without a
            # parallel region
            if c.n_shards == 1:
                _forward_shard(&c, 0, h0, hp, Wh, Whp, nonlinearity)
            else:
                for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                    _forward_shard(&c, s, h0, hp, Wh, Whp, nonlinearity)
        zero_inactive(hp, H, c.n_steps, c.n_batch, c.act)
    end_call(&c)


cdef void _dA_row(const floating* dh, const floating* h, const floating* carry, floating* dA,
                  Py_ssize_t size, int nonlinearity) noexcept nogil:
    """dA = (dh + carry) * phi'(a) over size elements, phi'(a) from h = phi(a)."""
    cdef Py_ssize_t i
    cdef floating one = 1       # a bare 1 would be a C double, and the float32 loop with it
    if nonlinearity == TANH:
        for i in range(size):
            dA[i] = (dh[i] + carry[i]) * (one - h[i] * h[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            dA[i] = (dh[i] + carry[i]) * (h[i] * (one - h[i]))
    else:
        # times [h > 0], as the reference: a NaN or inf in dh + carry stays one (inf * 0 = NaN)
        for i in range(size):
            dA[i] = (dh[i] + carry[i]) * <floating> (h[i] > 0)


cdef void _backward_step(const floating* dh_t, const floating* h_t, floating* dA_t, Py_ssize_t ld,
                         Py_ssize_t ld_dA, floating* carry, const floating* Wh,
                         const floating* WhTp, floating xi_t, floating* norm_t, int n_batch,
                         int n_hidden, int nonlinearity) noexcept nogil:
    """Rows of dh_t and h_t are ld apart, those of dA_t ld_dA, those of carry n_hidden. WhTp is
    Wh.T packed, or NULL (BLAS)."""
    cdef Py_ssize_t i, n, H = n_hidden
    cdef double sq = 0
    if norm_t != NULL:
        # ||dL/dh_t|| = ||dh[t] + carry||
        for n in range(n_batch):
            for i in range(H):
                sq += (dh_t[n * ld + i] + carry[n * H + i]) * (dh_t[n * ld + i] + carry[n * H + i])
        norm_t[0] = <floating> sqrt(sq)
    # dA_t = (dh[t] + carry) * phi'(a_t)
    if ld == H and ld_dA == H:          # rows back to back: one flat pass
        _dA_row(dh_t, h_t, carry, dA_t, n_batch * H, nonlinearity)
    else:
        for n in range(n_batch):
            _dA_row(dh_t + n * ld, h_t + n * ld, carry + n * H, dA_t + n * ld_dA, H,
                    nonlinearity)
    if cut(xi_t, carry, n_batch * H):
        return          # xi_t == 0: carry = 0 (src/_truncation.pxd)
    # carry = xi_t * dA_t @ Wh.T     (N,H) = (N,H)(H,H)'
    gemm_b(WhTp, TRANS, n_batch, n_hidden, n_hidden,
           xi_t, dA_t, <int> ld_dA, Wh, n_hidden, 0, carry, n_hidden)


def backward(Buffers bufs, const floating[:, :, ::1] dh, const floating[::1] xi,
             dict carries, floating[:, :, ::1] dx, dict weight_grads,
             floating[::1] norms=None, bint write_weight_grads=False, active=None,
             int n_threads=1):
    """BPTT over the cache's arrays. Arguments as for every cell's backward (``src/_call.pxd``):
    carries['dhT'] (N, H); weight_grads' 'dWx', 'dWh', 'db'. The workspace dA (like h) is made
    by the first call."""
    _backward(bufs, dh, xi, carries, NULL, 0, dx, weight_grads, norms, active, n_threads,
              write_weight_grads)


cdef void _block_grads(bint by_step, Py_ssize_t t_first, int n_block, int n_steps, int n_batch,
                       int n_input, int n_hidden, const floating* x, const floating* h0,
                       const floating* h, const floating* dA, const floating* Wx, floating* dx,
                       bint write, floating* dWx, floating* dWh, floating* db) noexcept nogil:
    """The weight gradients and dx of steps t_first .. t_first + n_block - 1, from their dA
    (n_block, N, H) C-contiguous (the lean workspace): the weight gradients written
    (``write``, the first block: every element, the arrays' contents not read) or added into.
    x, h and dx are per-step buffers in the caller's layout, their rows in time-major order if
    by_step."""
    cdef Py_ssize_t T = n_steps, N = n_batch, D = n_input, H = n_hidden, t
    cdef floating beta = 0 if write else 1
    cdef const floating* dA_t
    # db (+)= dA.sum(axis=(0, 1))
    sum_rows(<Py_ssize_t> n_block * N, n_hidden, dA, n_hidden, write, db)
    if by_step:
        # the block's rows are consecutive in x, h and dx: one product each over n_block*N rows
        # dWx (+)= X[blk].T @ dA     (D,H) (+)= (B*N,D)'(B*N,H)
        gemm(TRANS, NO_TRANS, n_input, n_hidden, n_block * n_batch,
             1, x + t_first * N * D, n_input, dA, n_hidden, beta, dWx, n_hidden)
        if t_first == 0:
            # dWh (+)= h0.T @ dA[0] + h[:B-1].T @ dA[1:]
            add_hidden_weight_grad(NULL, True, n_block, n_batch, n_hidden, n_hidden,
                                   h0, h, dA, n_hidden, beta, dWh)
        else:
            # dWh (+)= h[blk - 1].T @ dA     (H,H) (+)= (B*N,H)'(B*N,H)
            gemm(TRANS, NO_TRANS, n_hidden, n_hidden, n_block * n_batch,
                 1, h + (t_first - 1) * N * H, n_hidden, dA, n_hidden, beta, dWh, n_hidden)
        # dx[blk] = dA @ Wx.T     (B*N,D) = (B*N,H)(D,H)'
        gemm(NO_TRANS, TRANS, n_block * n_batch, n_input, n_hidden,
             1, dA, n_hidden, Wx, n_hidden, 0, dx + t_first * N * D, n_input)
        return
    # batch-major: the N rows of step t are T rows apart in x, h and dx; one product per step,
    # the block's first step's with beta, the others added
    for t in range(t_first, t_first + n_block):
        dA_t = dA + (t - t_first) * N * H
        if t > t_first:
            beta = 1
        # dWx (+)= x[:, t].T @ dA_t     (D,H) (+)= (N,D)'(N,H); rows of x[:, t] T*D apart
        gemm(TRANS, NO_TRANS, n_input, n_hidden, n_batch,
             1, x + t * D, <int> (T * D), dA_t, n_hidden, beta, dWx, n_hidden)
        # dWh (+)= h_{t-1}.T @ dA_t     (H,H) (+)= (N,H)'(N,H); rows of h[:, t-1] T*H apart
        if t == 0:
            gemm(TRANS, NO_TRANS, n_hidden, n_hidden, n_batch,
                 1, h0, n_hidden, dA_t, n_hidden, beta, dWh, n_hidden)
        else:
            gemm(TRANS, NO_TRANS, n_hidden, n_hidden, n_batch,
                 1, h + (t - 1) * H, <int> (T * H), dA_t, n_hidden, beta, dWh, n_hidden)
        # dx[:, t] = dA_t @ Wx.T     (N,D) = (N,H)(D,H)'; rows of dx[:, t] T*D apart
        gemm(NO_TRANS, TRANS, n_batch, n_input, n_hidden,
             1, dA_t, n_hidden, Wx, n_hidden, 0, dx + t * D, <int> (T * D))


cdef enum:
    SQUARE_STRIDE = 8       # doubles between two threads' sums of squares: one cache line each


cdef void _dA_cols(const floating* dh_t, const floating* h_t, const floating* carry,
                   floating* dA_t, int c0, int c1, double* square,
                   int nonlinearity) noexcept nogil:
    """Columns c0:c1 of dA_t = (dh[t] + carry) * phi'(a_t) for one sequence, from the columns
    of the carry that this thread computed at step t + 1. ``square`` (unless NULL) receives
    the sum of squares of those columns of dh[t] + carry, its part of ||dL/dh_t||**2."""
    cdef Py_ssize_t i
    cdef double sq = 0
    if square != NULL:
        for i in range(c0, c1):
            sq += (dh_t[i] + carry[i]) * (dh_t[i] + carry[i])
        square[0] = sq
    _dA_row(dh_t + c0, h_t + c0, carry + c0, dA_t + c0, c1 - c0, nonlinearity)


cdef floating _joined_norm(const double* squares, int n_parts, floating unused) noexcept nogil:
    """||dL/dh_t|| from the parts' sums of squares, SQUARE_STRIDE apart, added in part order."""
    cdef double sq = 0
    cdef int s
    for s in range(n_parts):
        sq += squares[s * SQUARE_STRIDE]
    return <floating> sqrt(sq)


cdef void _carry_cols(const floating* dA_t, floating xi_t, floating* carry, const floating* Wh,
                      const floating* WhTp, int n_hidden, int c0, int c1) noexcept nogil:
    """Columns c0:c1 of the carry into step t - 1 of one sequence, from the whole dA_t. WhTp is
    Wh.T packed (c0 at a panel boundary: its columns' panels start at WhTp + c0 * H), or NULL
    (BLAS or ``_few.h`` on rows c0:c1 of Wh)."""
    cdef Py_ssize_t H = n_hidden
    if cut(xi_t, carry + c0, c1 - c0):
        return          # xi_t == 0: carry[c0:c1] = 0 (src/_truncation.pxd)
    fetch_row(dA_t, H * sizeof(floating))       # the other threads' columns of it
    # carry[c0:c1] = xi_t * dA_t @ Wh[c0:c1].T     (1,C) = (1,H)(C,H)'
    gemm_b(WhTp + c0 * H if WhTp != NULL else NULL, TRANS, 1, c1 - c0, n_hidden,
           xi_t, dA_t, n_hidden, Wh + c0 * H, n_hidden, 0, carry + c0, n_hidden)


cdef void _block_grads_part(int s, int n_parts, Py_ssize_t t_first, int n_block, int n_input,
                            int n_hidden, const floating* x, const floating* h0,
                            const floating* h, const floating* dA, const floating* Wx,
                            floating* dx, bint write, floating* dWx, floating* dWh,
                            floating* db) noexcept nogil:
    """Part s of n_parts of ``_block_grads`` for one sequence (the block's rows consecutive in
    x, h and dx): its columns of the weight gradients and its rows of dx (``src/_shards.pxd``),
    each element the same sum as ``_block_grads`` takes."""
    cdef Py_ssize_t D = n_input, H = n_hidden
    cdef floating beta = 0 if write else 1
    # no part of one row where the block has several: BLAS runs a one-row product as a GEMV,
    # whose sums round otherwise than its GEMM's
    cdef int row_parts = n_parts if n_block >= 2 * n_parts else (n_block // 2 or 1)
    # db (+)= dA.sum(axis=0), its columns
    cols_bias_part(s, n_parts, n_block, n_hidden, dA, H, write, db)
    # dWx[:, c0:c1] (+)= X[blk].T @ dA[:, c0:c1]     (D,C) (+)= (B,D)'(B,C)
    cols_sum_part(NULL, s, n_parts, n_input, n_hidden, n_block, 1, x + t_first * D, n_input,
                  dA, n_hidden, beta, dWx, n_hidden)
    if t_first == 0:
        # dWh[:, c0:c1] (+)= h0.T @ dA[0, c0:c1] + h[:B-1].T @ dA[1:, c0:c1]
        cols_hidden_part(NULL, s, n_parts, True, n_block, 1, n_hidden, n_hidden, h0, h, dA, H,
                         beta, dWh)
    else:
        # dWh[:, c0:c1] (+)= h[blk - 1].T @ dA[:, c0:c1]     (H,C) (+)= (B,H)'(B,C)
        cols_sum_part(NULL, s, n_parts, n_hidden, n_hidden, n_block, 1,
                      h + (t_first - 1) * H, n_hidden, dA, n_hidden, beta, dWh, n_hidden)
    # dx[blk][r0:r1] = dA[r0:r1] @ Wx.T     (R,D) = (R,H)(D,H)'
    if s < row_parts:
        rows_product_part(NULL, s, row_parts, TRANS, n_block, n_input, n_hidden, 1, dA, n_hidden,
                          Wx, n_hidden, 0, dx + t_first * D, n_input, NULL)


cdef void _backward_parts(Call* c, const floating* dh, const floating* h, floating* dA,
                          int n_block, const floating* xi, floating* carry, const floating* Wh,
                          const floating* WhTp, floating* norms, double* squares,
                          int nonlinearity, const floating* x, const floating* h0,
                          const floating* Wx, floating* dx, bint write, floating* dWx,
                          floating* dWh, floating* db) noexcept nogil:
    """The backward step loop of one sequence, each step's columns split between c.n_parts
    threads (``src/_columns.pxd``), thread s owning columns [part_first(s), part_first(s + 1))
    (cut at panel boundaries). At step t it computes its columns of dA_t from its own columns
    of the carry, the threads meet at the barrier, and it computes its columns of the carry
    into step t - 1 from the whole dA_t. With norms, each thread's sum of squares goes to
    ``squares`` (two sets, by the parity of t, so that a thread writing step t - 1's never
    overwrites what thread 0 still reads of step t's) and thread 0 joins them after the
    barrier. Lean (n_block > 0: dA is the workspace of n_block steps, rows H apart): after each
    block its weight gradients and dx are split between the threads too
    (``_block_grads_part``), and they meet again before the next block overwrites dA. Thread 0,
    the calling thread, looks for Ctrl-C before each wait, and the barrier's verdict stops every
    thread after the same step."""
    cdef SpinBarrier bar, alone
    cdef SpinBarrier* b = &alone
    cdef int s = 0, n = 1, c0 = 0, c1 = 0, sense = 0, verdict = 0, H = c.n_hidden
    cdef int unit = _panel(h)
    cdef bint stop = False
    cdef Py_ssize_t t = 0, t_first = 0, t_end = 0
    cdef floating* dA_t = dA
    barrier_init(&bar, c.n_parts)
    barrier_init(&alone, 1)
    with parallel(num_threads=c.n_parts):
        s = threadid()
        # a team smaller than asked (OpenMP's limits): thread 0 runs every column alone
        n = c.n_parts if team_size() == c.n_parts else 1
        b = &bar if n > 1 else &alone
        if s < n:
            c0 = part_first(H, unit, n, s)
            c1 = part_first(H, unit, n, s + 1)
            sense = 0
            stop = False
            t_end = c.n_run
            while t_end > 0 and not stop:
                t_first = t_end - n_block if n_block > 0 and t_end > n_block else 0
                for t in range(t_end - 1, t_first - 1, -1):
                    dA_t = dA + ((t - t_first) * H if n_block > 0 else t * c.step)
                    _dA_cols(dh + t * c.step, h + t * c.step, carry, dA_t, c0, c1,
                             squares + ((t & 1) * n + s) * SQUARE_STRIDE if squares != NULL
                             else NULL, nonlinearity)
                    verdict = barrier_wait(b, &sense, s == 0 and interrupted(&c.w))
                    stop = leaves(verdict, s)
                    if stop:
                        break   # Ctrl-C: every thread stops at this step (or thread 0 goes on)
                    if s == 0 and squares != NULL:
                        norms[t] = _joined_norm(squares + (t & 1) * n * SQUARE_STRIDE, n,
                                                norms[t])
                    if verdict:     # the waits were slow: thread 0 alone, every column
                        b, n, c0, c1 = &alone, 1, 0, H
                        c.went_alone = True
                    _carry_cols(dA_t, xi[t], carry, Wh, WhTp, H, c0, c1)
                if n_block > 0 and not stop:
                    # the first block (t_end = T) writes the weight gradients if ``write``
                    _block_grads_part(s, n, t_first, <int> (t_end - t_first), c.n_input, H, x,
                                      h0, h, dA, Wx, dx, write and t_end == c.n_steps, dWx, dWh,
                                      db)
                    # the next block overwrites the workspace dA that every thread reads here
                    verdict = barrier_wait(b, &sense, s == 0 and interrupted(&c.w))
                    stop = leaves(verdict, s)
                    if verdict and not stop:    # thread 0 alone from the next block on
                        b, n, c0, c1 = &alone, 1, 0, H
                        c.went_alone = True
                t_end = t_first


cdef void _backward_shard(Call* c, int s, Py_ssize_t t_first, Py_ssize_t t_end,
                          const floating* dh, const floating* h, floating* dA,
                          const floating* xi, floating* carry, const floating* Wh,
                          const floating* WhTp, floating* norms, int nonlinearity) noexcept nogil:
    """Shard s of c.n_shards of a backward: its sequences (``src/_shards.pxd``), steps t_end - 1
    down to 0. t_first -1: dA holds every step (in h's layout), and the steps none of the
    shard's rows runs are passed over; else steps down to t_first (one block of the lean
    backward), step t's dA into row block t - t_first of the workspace dA (rows H apart)."""
    cdef Shard sh = shard_of(c.n_batch, c.n_shards, s, c.ld)
    cdef floating* ns = norms + s * c.n_steps if norms != NULL else NULL
    cdef int rows, H = c.n_hidden
    cdef Py_ssize_t t
    for t in range(t_end - 1, (t_first if t_first >= 0 else 0) - 1, -1):
        if t_first >= 0:
            rows = <int> (sh.n1 - sh.n0)
        else:
            rows = rows_backward(c, s, &sh, t, ns)
            if rows < 0:
                break       # interrupted
            if rows == 0:   # none of the shard's rows runs: no gradient, carries wait
                continue
        _backward_step(dh + sh.first + t * c.step, h + sh.first + t * c.step,
                       dA + (((t - t_first) * c.n_batch + sh.n0) * H if t_first >= 0
                             else sh.first + t * c.step), c.ld, H if t_first >= 0 else c.ld,
                       carry + sh.n0 * H, Wh, WhTp, xi[t], ns + t if ns != NULL else NULL, rows,
                       H, nonlinearity)


def backward_lean(Buffers bufs, const floating[:, :, ::1] dh, const floating[::1] xi,
                  dict carries, floating[:, :, ::1] dA, floating[:, :, ::1] dx,
                  dict weight_grads, floating[::1] norms=None, bint write_weight_grads=False,
                  int n_threads=1):
    """BPTT as ``backward``, with a workspace dA of B steps only, (B, N, H) C-contiguous
    whatever the layout (B >= 1, chosen by the caller). The steps run in blocks of B from the
    end; after each block its weight gradients and dx are added from its dA: one product each
    over the block's B*N rows where they are consecutive (time-major, or N == 1), else one per
    step over its N rows. Same arguments and results as ``backward`` otherwise (the sums of the
    weight gradients are taken in another order). With n_threads > 1 the steps of a block run
    in shards of sequences (``src/_shards.pxd``), which meet at the end of each block. With
    write_weight_grads the first block (the last steps) writes the weight gradients."""
    _backward(bufs, dh, xi, carries, &dA[0, 0, 0], dA.shape[0], dx, weight_grads, norms, None,
              n_threads, write_weight_grads)


cdef int _backward(Buffers bufs, const floating[:, :, ::1] dh, const floating[::1] xi,
                   dict carries, floating* dA_lean, int n_block, floating[:, :, ::1] dx,
                   dict weight_grads, floating[::1] norms, object active,
                   int n_threads, bint write) except -1:
    """``backward`` if n_block is 0 (the workspace dA of all steps, on bufs), else
    ``backward_lean`` (dA_lean its workspace of n_block steps; active is None). ``write``: the
    weight gradients are written, not added into."""
    # sizes, strides, rows that run, threads, Ctrl-C (src/_call.pxd)
    cdef Call c = begin_call(&bufs.held.dims, sizeof(floating), 1, active, n_threads)
    cdef int H = c.n_hidden
    cdef bint lean = n_block > 0
    cdef int n_in_block, s
    cdef Py_ssize_t t, t_first, t_end = c.n_steps
    cdef floating[:, ::1] carry = carries["dhT"]
    cdef floating[:, ::1] dWx = weight_grads["dWx"]
    cdef floating[:, ::1] dWh = weight_grads["dWh"]
    cdef floating[::1] db = weight_grads["db"]
    cdef const floating* dhp = &dh[0, 0, 0]
    cdef const floating* hp = <const floating*> bufs.held.h.buf
    cdef const floating* h0 = <const floating*> bufs.held.h0.buf
    cdef const floating* x = <const floating*> bufs.held.x.buf
    cdef const floating* Wx = <const floating*> bufs.held.Wx.buf
    cdef const floating* Wh = <const floating*> bufs.held.Wh.buf
    cdef int nonlinearity = bufs.nonlinearity
    # shard s's norms at norms_p + s * T, or NULL (src/_shards.pxd)
    cdef floating* norms_p = shard_norms(norms, c.n_shards, c.n_steps, &bufs.held.norm_parts)
    cdef floating* dAp
    cdef floating* WhTp   # Wh.T packed for the per-step products, or NULL (BLAS)
    cdef double[::1] squares    # the split steps' sums of squares for the norms
    cdef double* squares_p = NULL
    if c.n_parts > 1 and norms_p != NULL:
        squares = np.empty(2 * c.n_parts * SQUARE_STRIDE)
        squares_p = &squares[0]
    if lean:
        check_blas_ld(c.n_rows, c.n_input)
        dAp = dA_lean
    else:
        if holds_nothing(&bufs.dA):
            hold_new(&bufs.dA, np.empty(steps_shape(&bufs.held.dims, H), bufs.dtype))
        dAp = <floating*> bufs.dA.buf
    with nogil:
        # op(Wh) = Wh.T (H, H)
        WhTp = pack_held(TRANS, c.n_batch, H, H, Wh, H, &bufs.held.packed)
        if c.n_parts > 1:
            # one sequence: each step's columns split between threads (src/_columns.pxd)
            if norms_p != NULL:
                for t in range(c.n_run, c.n_steps):
                    norms_p[t] = 0      # steps that do not run: no gradient
            _backward_parts(&c, dhp, hp, dAp, n_block, &xi[0], &carry[0, 0], Wh, WhTp, norms_p,
                            squares_p, nonlinearity, x, h0, Wx, &dx[0, 0, 0], write, &dWx[0, 0],
                            &dWh[0, 0], &db[0])
            if c.went_alone:    # the machine's cores are taken: the rest on this thread
                c.n_threads = 1
        elif lean:
            while t_end > 0:
                if interrupted(&c.w):
                    break
                t_first = t_end - n_block if t_end > n_block else 0
                n_in_block = <int> (t_end - t_first)
                # shard s: its sequences, the block's steps (src/_shards.pxd); one shard on
                # this thread, without a parallel region
                if c.n_shards == 1:
                    _backward_shard(&c, 0, t_first, t_end, dhp, hp, dAp, &xi[0],
                                    &carry[0, 0], Wh, WhTp, norms_p, nonlinearity)
                else:
                    for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                        _backward_shard(&c, s, t_first, t_end, dhp, hp, dAp, &xi[0],
                                        &carry[0, 0], Wh, WhTp, norms_p, nonlinearity)
                # the first block (t_end = T) writes the weight gradients if ``write``
                _block_grads(c.by_step, t_first, n_in_block, c.n_steps, c.n_batch, c.n_input,
                             H, x, h0, hp, dAp, Wx, &dx[0, 0, 0], write and t_end == c.n_steps,
                             &dWx[0, 0], &dWh[0, 0], &db[0])
                t_end = t_first
        else:
            # shard s: its sequences, every step (src/_shards.pxd); one shard on this
            # thread, without a parallel region
            if c.n_shards == 1:
                _backward_shard(&c, 0, -1, c.n_steps, dhp, hp, dAp, &xi[0], &carry[0, 0], Wh,
                                WhTp, norms_p, nonlinearity)
            else:
                for s in prange(c.n_shards, num_threads=c.n_shards, schedule="static"):
                    _backward_shard(&c, s, -1, c.n_steps, dhp, hp, dAp, &xi[0], &carry[0, 0],
                                    Wh, WhTp, norms_p, nonlinearity)
        if norms_p != NULL and c.n_shards > 1:
            join_norms(norms_p, c.n_shards, c.n_steps, &norms[0])
        if not lean:
            # the weight gradients and dx (src/_shards.pxd): dWx (+)= X.T @ dA, dWh (+)= sum_t
            # h_{t-1}.T @ dA[t], db (+)= dA.sum(axis=(0, 1)), dx = dA @ Wx.T
            grads_and_dx(&c.w, c.n_threads, c.act, c.n_run, c.by_step, c.n_steps, c.n_batch,
                         c.n_input, H, H, x, h0, hp, dAp, Wx, &dx[0, 0, 0], write, &dWx[0, 0],
                         &dWh[0, 0], &db[0])
    end_call(&c)
    return 0
