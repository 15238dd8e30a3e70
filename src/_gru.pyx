# cython: language_level=3
"""GRU kernels: the forward time-step loop and backpropagation through time.

Gate blocks (r, z, n) are column blocks of Wx, Wh, b and bh (PyTorch semantics):

    [xr xz xn] = x_t Wx + b,    [hr hz hn] = h_{t-1} Wh + bh
    r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
    h_t = (1 - z) * n + z * h_{t-1}

Every per-step buffer (x, h, act, dh, dA, dx) is C-contiguous in the caller's layout,
batch-major (N, T, .) or time-major (T, N, .) (``time_major``), and no copy is made of either:
step t is an (N, .) matrix whose rows are n_rows * width apart (``src/_layout.pxd``). Below,
buf[t] is step t of a buffer in either layout. Math symbols and variables (shapes;
T = n_steps, N = n_batch, D = n_input, H = n_hidden; "block" k of a row is its columns k*H to
(k+1)*H):

    x_t                x[t]           (N, D)    input of step t
    h_{t-1}            h0 or h[t-1]   (N, H)    state step t receives
    h_t                h[t]           (N, H)
    Wx, Wh             Wx, Wh         (D, 3H), (H, 3H)
    b, bh              b, bh          (3H,)     input-side and hidden-side biases
    x_t Wx             act[t]         (N, 4H)   blocks 0-2 written by the hoisted input GEMM (b is
    r, z, n | hn                                added in the step's pass), then overwritten by the
                                                gates r, z, n; block 3 is hn = h_{t-1} Wh_n + bh_n,
                                                kept for backward (the cache's gates and hn are
                                                views of blocks 0-2 and 3)
    h_{t-1} Wh         hh             (N, 3H)   per-call workspace (bh is added in the pass)
    dL/dh_t            dh[t]          (N, H)    upstream gradient of step t's output
    g                  dh[t] + carry  (N, H)    the whole gradient dL/dh_t
    dL/dxn, dL/dhr,    dA[t]          (N, 4H)   workspace: blocks [dxn | dhr dhz dhn]. Blocks
      dL/dhz, dL/dhn                            1-3 are the hidden-side pre-activation gradients
                                                dAh in the order (r, z, n); blocks 0-2 are the
                                                input-side ones dAx, in the order (n, r, z), as
                                                dxr = dhr and dxz = dhz. With overwrite_cache it
                                                is act itself: dxn over r, dhr over z, dhz over n,
                                                dhn over hn, each once it is read
    xi_t               xi[t]                    truncation multiplier of all that step t sends
                                                back to h_{t-1}
    carry              carry          (N, H)    gradient reaching h_t through step t+1: dhT at
                                                the start, dL/dh0 at the end
    g (one row)        g_row          (H,)      workspace: g of the row the pass is at
    ||dL/dh_t||        norms[t]                 Frobenius norm of g, only if norms has T entries

Backward of one step, from g = dL/dh_t:

    dL/dxn = g (1 - z) (1 - n^2)            dL/dhn = r dL/dxn
    dL/dxr = dL/dhr = dL/dxn hn r (1 - r)
    dL/dxz = dL/dhz = g (h_{t-1} - n) z (1 - z)
    dL/dh_{t-1} = xi_t (g z + dAh_t Wh^T)

Forward: one hoisted GEMM X @ Wx for all steps, then per step one GEMM h_{t-1} @ Wh and one
elementwise pass. Backward: per step one elementwise pass and one GEMM dAh_t @ Wh.T (skipped
where xi_t == 0); db and dbh are summed in the pass, while the rows are in L1; then dWh, dWx and
dx as products over all steps (two each for dWx and dx, as dAx's blocks are Wx's rotated: no
reordered copy of Wx, whose (D, 3H) could outweigh the activations of a short sequence). Gradients of the weights are accumulated into the arrays
passed in.

Each elementwise pass is a few short loops over a row rather than one: GCC vectorises a loop
only if it needs at most 10 run-time checks that its arrays do not overlap
(``--param vect-max-version-for-alias-checks``), and Cython cannot declare pointers ``restrict``.
Backward's loops are ordered so that dA may be act itself: the first loop reads z (and writes
g to a row of workspace and the carry); the z and n loop reads z and n and writes dhz over n and
dxn, for the moment, over z; the r loop then reads r, hn and that dxn and writes dxn over r, dhr
over z and dhn over hn. (The first two are two loops, not one, to stay within GCC's 10 alias
checks.) Each element is read into a local before its slot
is written, a write-after-read at distance 0 that GCC's run-time alias checks accept (seen with
GCC 12), so the in-place pass runs the same vector code.
Backward walks time downwards, which the hardware prefetcher does not follow, so each step asks
for the start of step t-1's rows in L2 (not L1: the step's GEMM streams Wh through L1).
"""
from cython cimport floating
from libc.math cimport sqrt

from _blas cimport gemm
from _layout cimport add_hidden_weight_grad, check_blas_ld
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


cdef void _forward_step(const floating* h_prev, Py_ssize_t ld_prev, floating* act_t,
                        floating* h_t, Py_ssize_t ld, floating* hh, const floating* Wh,
                        const floating* b, const floating* bh, int n_batch,
                        int n_hidden) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of h_t ld apart, those of act_t 4 ld; hh is
    (N, 3H) C-contiguous."""
    cdef Py_ssize_t H = n_hidden, i, j
    cdef floating n
    # row i of each block; the act rows are 4H long, the hh rows 3H, the others H
    cdef floating* gate_r
    cdef floating* gate_z
    cdef floating* gate_n
    cdef floating* hn_i
    cdef const floating* hh_r
    cdef const floating* hh_z
    cdef const floating* hh_n
    cdef const floating* h_prev_i
    cdef floating* h_i
    # hh = h_prev @ Wh     (N,3H) = (N,H)(H,3H)
    gemm(False, False, n_batch, 3 * n_hidden, n_hidden,
         1, h_prev, <int> ld_prev, Wh, 3 * n_hidden, 0, hh, 3 * n_hidden)
    # short loops over each row, so that GCC vectorises every one (see the module docstring)
    for i in range(n_batch):
        gate_r = act_t + 4 * ld * i
        gate_z = gate_r + H
        gate_n = gate_z + H
        hn_i = gate_n + H
        hh_r = hh + 3 * H * i
        hh_z = hh_r + H
        hh_n = hh_z + H
        h_prev_i = h_prev + ld_prev * i
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


def forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
            const floating[:, ::1] Wx, const floating[:, ::1] Wh, const floating[::1] b,
            const floating[::1] bh, floating[:, :, ::1] h, floating[:, :, ::1] act,
            floating[:, ::1] hh, bint time_major):
    """Fill h (N, T, H) with the hidden states and act (N, T, 4H) with [r z n | hn],
    hn = h_{t-1} Wh_n + bh_n, x being (N, T, D); all (T, N, .) if time_major. hh (N, 3H) is
    workspace. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0] if time_major else x.shape[1]
    cdef int n_batch = x.shape[1] if time_major else x.shape[0]
    cdef int n_input = x.shape[2], n_hidden = Wh.shape[0]
    # rows from step t to t+1 and from sequence n to n+1 (src/_layout.pxd)
    cdef bint by_step = time_major or n_batch == 1   # rows in time-major order
    cdef Py_ssize_t t_rows = n_batch if by_step else 1
    cdef Py_ssize_t n_rows = 1 if by_step else n_steps
    cdef Py_ssize_t ld = n_rows * n_hidden, step = t_rows * n_hidden
    cdef Py_ssize_t t
    cdef floating* ap = &act[0, 0, 0]
    cdef floating* hp = &h[0, 0, 0]
    check_blas_ld(n_rows, 4 * n_hidden)
    with nogil:
        # act[..., :3H] = X @ Wx     (T*N,3H) = (T*N,D)(D,3H), rows in the caller's order; b is
        # added in the step's pass
        gemm(False, False, n_steps * n_batch, 3 * n_hidden, n_input,
             1, &x[0, 0, 0], n_input, &Wx[0, 0], 3 * n_hidden, 0, ap, 4 * n_hidden)
        _forward_step(&h0[0, 0], n_hidden, ap, hp, ld, &hh[0, 0], &Wh[0, 0], &b[0], &bh[0],
                      n_batch, n_hidden)
        for t in range(1, n_steps):
            _forward_step(hp + (t - 1) * step, ld, ap + 4 * t * step, hp + t * step, ld,
                          &hh[0, 0], &Wh[0, 0], &b[0], &bh[0], n_batch, n_hidden)


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


cdef void _backward_step(const floating* dh_t, const floating* act_t, const floating* h_prev,
                         Py_ssize_t ld_prev, floating* dA_t, Py_ssize_t ld, floating* carry,
                         floating* g_row, const floating* Wh, floating* db, floating* dbh,
                         floating xi_t, floating* norm_t, int n_batch,
                         int n_hidden) noexcept nogil:
    """Rows of h_prev are ld_prev apart, those of dh_t ld apart, those of act_t and dA_t 4 ld;
    carry is (N, H) C-contiguous; g_row (H,) is workspace. dA_t may be act_t itself (see the
    module docstring)."""
    cdef Py_ssize_t H = n_hidden, i, j
    cdef floating g, r, z, n, hn, dxn
    cdef double sq = 0
    # row i of each block; the act and dA rows are 4H long, the others H
    cdef const floating* gate_r
    cdef const floating* gate_z
    cdef const floating* gate_n
    cdef const floating* hn_i
    cdef floating* dxn_i
    cdef floating* dA_r
    cdef floating* dA_z
    cdef floating* dA_n
    cdef const floating* dh_i
    cdef const floating* h_prev_i
    cdef floating* carry_i
    # short loops over each row, as in forward
    for i in range(n_batch):
        gate_r = act_t + 4 * ld * i
        gate_z = gate_r + H
        gate_n = gate_z + H
        hn_i = gate_n + H
        dxn_i = dA_t + 4 * ld * i
        dA_r = dxn_i + H
        dA_z = dA_r + H
        dA_n = dA_z + H
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
        # z, n -> dhz = g (h_prev - n) z (1 - z) over n;  dxn = g (1 - z) (1 - n^2), held in
        # dhr's slot (over z) for now
        for j in range(H):
            g = g_row[j]
            z = gate_z[j]
            n = gate_n[j]
            dA_z[j] = g * (h_prev_i[j] - n) * (z * (1 - z))
            dA_r[j] = g * (1 - z) * (1 - n * n)
        # r, hn -> dxn over r;  dhr = dxn hn r (1 - r) over z;  dhn = r dxn over hn
        for j in range(H):
            r = gate_r[j]
            hn = hn_i[j]
            dxn = dA_r[j]
            dxn_i[j] = dxn
            dA_r[j] = dxn * hn * (r * (1 - r))
            dA_n[j] = r * dxn
        # dbh += [dhr dhz dhn];  db += [dxr dxz dxn] (the row is still in L1 here)
        for j in range(3 * H):
            dbh[j] += dA_r[j]
        for j in range(2 * H):
            db[j] += dA_r[j]
        for j in range(H):
            db[2 * H + j] += dxn_i[j]
    if norm_t != NULL:
        norm_t[0] = <floating> sqrt(sq)
    if xi_t == 0:
        return
    # carry += xi_t * dA_t[:, H:] @ Wh.T     (N,H) += (N,3H)(H,3H)'
    gemm(False, True, n_batch, n_hidden, 3 * n_hidden,
         xi_t, dA_t + n_hidden, <int> (4 * ld), Wh, 3 * n_hidden, 1, carry, n_hidden)


def backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] h,
             const floating[:, ::1] h0, const floating[:, :, ::1] x,
             const floating[:, ::1] Wx, const floating[:, ::1] Wh,
             const floating[:, :, ::1] act, const floating[::1] xi, floating[:, ::1] carry,
             floating[:, :, ::1] dA, floating[::1] g_row, floating[:, :, ::1] dx,
             floating[:, ::1] dWx, floating[:, ::1] dWh, floating[::1] db, floating[::1] dbh,
             floating[::1] norms, bint time_major):
    """BPTT. dh, h, x, act, dA and dx are in one layout: (N, T, .), or (T, N, .) if time_major.
    carry holds dhT on entry and dL/dh0 on exit; dx is overwritten; dWx, dWh, db, dbh are
    accumulated into; norms (T,) receives ||dL/dh_t|| unless it is empty. dA (like act) and
    g_row (H,) are workspace; dA may be act itself (overwrite_cache): step t reads act[t] only
    before it writes dA[t]. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0] if time_major else x.shape[1]
    cdef int n_batch = x.shape[1] if time_major else x.shape[0]
    cdef int n_input = x.shape[2], n_hidden = Wh.shape[0]
    cdef bint by_step = time_major or n_batch == 1   # rows in time-major order
    cdef Py_ssize_t t_rows = n_batch if by_step else 1
    cdef Py_ssize_t n_rows = 1 if by_step else n_steps
    cdef Py_ssize_t H = n_hidden, ld = n_rows * n_hidden, step = t_rows * n_hidden
    cdef Py_ssize_t row = H * sizeof(floating), ld_bytes = ld * sizeof(floating)
    cdef Py_ssize_t t
    cdef floating* dAp = &dA[0, 0, 0]
    cdef const floating* dhp = &dh[0, 0, 0]
    cdef const floating* hp = &h[0, 0, 0]
    cdef const floating* ap = &act[0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0]
    cdef bint want_norms = norms.shape[0] == n_steps
    check_blas_ld(n_rows, 4 * n_hidden)
    with nogil:
        for t in range(n_steps - 1, -1, -1):
            if t > 0:
                # step t-1's inputs: time runs backwards, which the hardware prefetcher misses
                _prefetch(dhp + (t - 1) * step, n_batch, row, ld_bytes)
                _prefetch(ap + 4 * (t - 1) * step, n_batch, 4 * row, 4 * ld_bytes)
                if t > 1:
                    _prefetch(hp + (t - 2) * step, n_batch, row, ld_bytes)
                else:
                    _prefetch(&h0[0, 0], n_batch, row, row)
            _backward_step(dhp + t * step, ap + 4 * t * step,
                           hp + (t - 1) * step if t > 0 else &h0[0, 0], ld if t > 0 else H,
                           dAp + 4 * t * step, ld, &carry[0, 0], &g_row[0], &Wh[0, 0],
                           &db[0], &dbh[0], xi[t], &norms[t] if want_norms else NULL,
                           n_batch, n_hidden)
        # dWh += sum_t h_{t-1}.T @ dAh[t], dAh = dA[..., H:]     (H,3H) += (N,H)'(N,3H) over t
        add_hidden_weight_grad(by_step, n_steps, n_batch, n_hidden, 3 * n_hidden,
                               &h0[0, 0], hp, dAp + H, 4 * H, &dWh[0, 0])
        # The input-side gradients dAx = [dxn | dxr dxz] = dA[..., :3H] hold Wx's blocks (r, z, n)
        # rotated: two products for each of dx and dWx, one per contiguous run of blocks.
        # dx = dxn @ Wx[:, 2H:].T     (T*N,D) = (T*N,H)(D,H)'
        gemm(False, True, n_steps * n_batch, n_input, n_hidden,
             1, dAp, 4 * n_hidden, &Wx[0, 2 * H], 3 * n_hidden, 0, &dx[0, 0, 0], n_input)
        # dx += [dxr dxz] @ Wx[:, :2H].T     (T*N,D) += (T*N,2H)(D,2H)'
        gemm(False, True, n_steps * n_batch, n_input, 2 * n_hidden,
             1, dAp + H, 4 * n_hidden, &Wx[0, 0], 3 * n_hidden, 1, &dx[0, 0, 0], n_input)
        # dWx[:, :2H] += X.T @ [dxr dxz]     (D,2H) += (T*N,D)'(T*N,2H)
        gemm(True, False, n_input, 2 * n_hidden, n_steps * n_batch,
             1, xp, n_input, dAp + H, 4 * n_hidden, 1, &dWx[0, 0], 3 * n_hidden)
        # dWx[:, 2H:] += X.T @ dxn     (D,H) += (T*N,D)'(T*N,H)
        gemm(True, False, n_input, n_hidden, n_steps * n_batch,
             1, xp, n_input, dAp, 4 * n_hidden, 1, &dWx[0, 2 * H], 3 * n_hidden)
