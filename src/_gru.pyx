# cython: language_level=3
"""GRU kernels: the forward time-step loop and backpropagation through time.

Gate blocks (r, z, n) are column blocks of Wx, Wh, b and bh (PyTorch semantics):

    [xr xz xn] = x_t Wx + b,    [hr hz hn] = h_{t-1} Wh + bh
    r = sigma(xr + hr),  z = sigma(xz + hz),  n = tanh(xn + r * hn)
    h_t = (1 - z) * n + z * h_{t-1}

Every buffer is time-major and C-contiguous, so step t is the contiguous block ``buf[t]``.
Math symbols and variables (shapes; T = n_steps, N = n_batch, D = n_input, H = n_hidden;
"block" k of a row is its columns k*H to (k+1)*H):

    x_t                x[t]           (N, D)    input of step t
    h_{t-1}            h0 or h[t-1]   (N, H)    state step t receives
    h_t                h[t]           (N, H)
    Wx, Wh             Wx, Wh         (D, 3H), (H, 3H)
    b, bh              b, bh          (3H,)     input-side and hidden-side biases
    x_t Wx             gates[t]       (N, 3H)   written by the hoisted input GEMM (b is added in
    r, z, n            gates[t]       (N, 3H)   the step's pass), then overwritten by the gates
    h_{t-1} Wh         hh             (N, 3H)   per-call workspace (bh is added in the pass)
    hn                 hn[t]          (N, H)    h_{t-1} Wh_n + bh_n, kept for backward
    dL/dh_t            dh[t]          (N, H)    upstream gradient of step t's output
    g                  dh[t] + carry  (N, H)    the whole gradient dL/dh_t
    dL/dxn, dL/dhr,    dA[t]          (N, 4H)   workspace: blocks [dxn | dhr dhz dhn]. Blocks
      dL/dhz, dL/dhn                            1-3 are the hidden-side pre-activation gradients
                                                dAh in the order (r, z, n); blocks 0-2 are the
                                                input-side ones dAx, in the order (n, r, z), as
                                                dxr = dhr and dxz = dhz
    xi_t               xi[t]                    truncation multiplier of all that step t sends
                                                back to h_{t-1}
    carry              carry          (N, H)    gradient reaching h_t through step t+1: dhT at
                                                the start, dL/dh0 at the end
    ||dL/dh_t||        norms[t]                 Frobenius norm of g, only if norms has T entries
    Wx (n, r, z)       work           (D, 3H)   backward's workspace: Wx with its blocks in dAx's
                                                order, then X.T @ dAx before it is added to dWx

Backward of one step, from g = dL/dh_t:

    dL/dxn = g (1 - z) (1 - n^2)            dL/dhn = r dL/dxn
    dL/dxr = dL/dhr = dL/dxn hn r (1 - r)
    dL/dxz = dL/dhz = g (h_{t-1} - n) z (1 - z)
    dL/dh_{t-1} = xi_t (g z + dAh_t Wh^T)

Forward: one hoisted GEMM X @ Wx for all steps, then per step one GEMM h_{t-1} @ Wh and one
elementwise pass. Backward: per step one elementwise pass and one GEMM dAh_t @ Wh.T (skipped
where xi_t == 0); db and dbh are summed in the pass, while the rows are in L1; then dWh, dWx and
dx as three products over all steps. Gradients of the weights are accumulated into the arrays
passed in.

Each elementwise pass is a few short loops over a row rather than one: GCC vectorises a loop
only if it needs at most 10 run-time checks that its arrays do not overlap
(``--param vect-max-version-for-alias-checks``), and Cython cannot declare pointers ``restrict``.
Backward walks time downwards, which the hardware prefetcher does not follow, so each step asks
for the start of step t-1's blocks in L2 (not L1: the step's GEMM streams Wh through L1).
"""
from cython cimport floating
from libc.math cimport sqrt

from _blas cimport gemm
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


cdef void _forward_step(const floating* h_prev, floating* gates_t, floating* hn_t,
                        floating* h_t, floating* hh, const floating* Wh, const floating* b,
                        const floating* bh, int n_batch, int n_hidden) noexcept nogil:
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
    gemm(False, False, n_batch, 3 * n_hidden, n_hidden,
         1, h_prev, n_hidden, Wh, 3 * n_hidden, 0, hh, 3 * n_hidden)
    # short loops over each row, so that GCC vectorises every one (see the module docstring)
    for i in range(n_batch):
        gate_r = gates_t + 3 * H * i
        gate_z = gate_r + H
        gate_n = gate_z + H
        hh_r = hh + 3 * H * i
        hh_z = hh_r + H
        hh_n = hh_z + H
        h_prev_i = h_prev + H * i
        hn_i = hn_t + H * i
        h_i = h_t + H * i
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
            const floating[::1] bh, floating[:, :, ::1] h, floating[:, :, ::1] gates,
            floating[:, :, ::1] hn, floating[:, ::1] hh):
    """Fill h (T, N, H) with the hidden states, gates (T, N, 3H) with r, z, n and hn (T, N, H)
    with h_{t-1} Wh_n + bh_n. hh (N, 3H) is workspace. Shapes are checked by the caller; N >= 1."""
    cdef int n_steps = x.shape[0], n_batch = x.shape[1], n_input = x.shape[2]
    cdef int n_hidden = Wh.shape[0]
    cdef Py_ssize_t block = <Py_ssize_t> n_batch * n_hidden
    cdef Py_ssize_t t
    cdef floating* gp = &gates[0, 0, 0]
    cdef floating* hp = &h[0, 0, 0]
    cdef floating* hnp = &hn[0, 0, 0]
    with nogil:
        # gates = X @ Wx     (T*N,3H) = (T*N,D)(D,3H); b is added in the step's pass
        gemm(False, False, n_steps * n_batch, 3 * n_hidden, n_input,
             1, &x[0, 0, 0], n_input, &Wx[0, 0], 3 * n_hidden, 0, gp, 3 * n_hidden)
        _forward_step(&h0[0, 0], gp, hnp, hp, &hh[0, 0], &Wh[0, 0], &b[0], &bh[0],
                      n_batch, n_hidden)
        for t in range(1, n_steps):
            _forward_step(hp + (t - 1) * block, gp + 3 * t * block, hnp + t * block,
                          hp + t * block, &hh[0, 0], &Wh[0, 0], &b[0], &bh[0],
                          n_batch, n_hidden)


cdef void _prefetch(const void* p, Py_ssize_t n_bytes) noexcept nogil:
    """Ask for the first cache lines (at most 4 KB) of p[0:n_bytes] in L2, ahead of their use."""
    cdef Py_ssize_t k
    for k in range(0, n_bytes if n_bytes < 4096 else 4096, 64):
        prefetch_l2(<const char*> p + k)


cdef void _backward_step(const floating* dh_t, const floating* gates_t, const floating* hn_t,
                         const floating* h_prev, floating* dA_t, floating* carry,
                         const floating* Wh, floating* db, floating* dbh, floating xi_t,
                         floating* norm_t, int n_batch, int n_hidden) noexcept nogil:
    cdef Py_ssize_t H = n_hidden, i, j, size = <Py_ssize_t> n_batch * n_hidden
    cdef floating g, r, z, n
    cdef double sq = 0
    # row i of each block; the gate rows are 3H long, the dA rows 4H, the others H
    cdef const floating* gate_r
    cdef const floating* gate_z
    cdef const floating* gate_n
    cdef floating* dxn_i
    cdef floating* dA_r
    cdef floating* dA_z
    cdef floating* dA_n
    cdef const floating* dh_i
    cdef const floating* hn_i
    cdef const floating* h_prev_i
    cdef floating* carry_i
    if norm_t != NULL:
        # ||dL/dh_t|| = ||dh[t] + carry||
        for j in range(size):
            sq += (dh_t[j] + carry[j]) * (dh_t[j] + carry[j])
        norm_t[0] = <floating> sqrt(sq)
    # short loops over each row, as in forward
    for i in range(n_batch):
        gate_r = gates_t + 3 * H * i
        gate_z = gate_r + H
        gate_n = gate_z + H
        dxn_i = dA_t + 4 * H * i
        dA_r = dxn_i + H
        dA_z = dA_r + H
        dA_n = dA_z + H
        dh_i = dh_t + H * i
        hn_i = hn_t + H * i
        h_prev_i = h_prev + H * i
        carry_i = carry + H * i
        # g = dh[t] + carry, held in dxn for now;  carry = xi_t * g * z, the direct path
        for j in range(H):
            g = dh_i[j] + carry_i[j]
            dxn_i[j] = g
            carry_i[j] = xi_t * (g * gate_z[j])
        # dhz = g (h_prev - n) z (1 - z);  dxn = g (1 - z) (1 - n^2)
        for j in range(H):
            g = dxn_i[j]
            z = gate_z[j]
            n = gate_n[j]
            dA_z[j] = g * (h_prev_i[j] - n) * (z * (1 - z))
            dxn_i[j] = g * (1 - z) * (1 - n * n)
        # dhr = dxn hn r (1 - r);  dhn = r dxn
        for j in range(H):
            r = gate_r[j]
            dA_r[j] = dxn_i[j] * hn_i[j] * (r * (1 - r))
            dA_n[j] = r * dxn_i[j]
        # dbh += [dhr dhz dhn];  db += [dxr dxz dxn] (the row is still in L1 here)
        for j in range(3 * H):
            dbh[j] += dA_r[j]
        for j in range(2 * H):
            db[j] += dA_r[j]
        for j in range(H):
            db[2 * H + j] += dxn_i[j]
    if xi_t == 0:
        return
    # carry += xi_t * dA_t[:, H:] @ Wh.T     (N,H) += (N,3H)(H,3H)'
    gemm(False, True, n_batch, n_hidden, 3 * n_hidden,
         xi_t, dA_t + n_hidden, 4 * n_hidden, Wh, 3 * n_hidden, 1, carry, n_hidden)


def backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] h,
             const floating[:, ::1] h0, const floating[:, :, ::1] x,
             const floating[:, ::1] Wx, const floating[:, ::1] Wh,
             const floating[:, :, ::1] gates, const floating[:, :, ::1] hn,
             const floating[::1] xi, floating[:, ::1] carry, floating[:, :, ::1] dA,
             floating[:, ::1] work, floating[:, :, ::1] dx, floating[:, ::1] dWx,
             floating[:, ::1] dWh, floating[::1] db, floating[::1] dbh, floating[::1] norms):
    """BPTT. carry holds dhT on entry and dL/dh0 on exit; dx is overwritten; dWx, dWh, db, dbh
    are accumulated into; norms (T,) receives ||dL/dh_t|| unless it is empty. dA (T, N, 4H)
    and work (D, 3H) are workspace; gates and hn are only read. Shapes are checked by the
    caller; N >= 1."""
    cdef int n_steps = x.shape[0], n_batch = x.shape[1], n_input = x.shape[2]
    cdef int n_hidden = Wh.shape[0]
    cdef Py_ssize_t H = n_hidden, block = <Py_ssize_t> n_batch * n_hidden
    cdef Py_ssize_t nbytes = block * sizeof(floating)
    cdef Py_ssize_t i, j, t
    cdef floating* dAp = &dA[0, 0, 0]
    cdef bint want_norms = norms.shape[0] == n_steps
    with nogil:
        for t in range(n_steps - 1, -1, -1):
            if t > 0:
                # step t-1's inputs: time runs backwards, which the hardware prefetcher misses
                _prefetch(&dh[t - 1, 0, 0], nbytes)
                _prefetch(&gates[t - 1, 0, 0], 3 * nbytes)
                _prefetch(&hn[t - 1, 0, 0], nbytes)
                _prefetch(&h[t - 2, 0, 0] if t > 1 else &h0[0, 0], nbytes)
            _backward_step(&dh[t, 0, 0], &gates[t, 0, 0], &hn[t, 0, 0],
                           &h[t - 1, 0, 0] if t > 0 else &h0[0, 0], dAp + 4 * t * block,
                           &carry[0, 0], &Wh[0, 0], &db[0], &dbh[0], xi[t],
                           &norms[t] if want_norms else NULL, n_batch, n_hidden)
        # dWh += h0.T @ dAh[0] + h[:-1].T @ dAh[1:], dAh = dA[..., H:]
        #     (H,3H) += (N,H)'(N,3H) + ((T-1)*N,H)'((T-1)*N,3H)
        gemm(True, False, n_hidden, 3 * n_hidden, n_batch,
             1, &h0[0, 0], n_hidden, dAp + H, 4 * n_hidden, 1, &dWh[0, 0], 3 * n_hidden)
        gemm(True, False, n_hidden, 3 * n_hidden, (n_steps - 1) * n_batch,
             1, &h[0, 0, 0], n_hidden, dAp + 4 * block + H, 4 * n_hidden,
             1, &dWh[0, 0], 3 * n_hidden)
        # work = Wx with its column blocks in the order (n, r, z) of dAx = dA[..., :3H]
        for i in range(n_input):
            for j in range(H):
                work[i, j] = Wx[i, 2 * H + j]
            for j in range(2 * H):
                work[i, H + j] = Wx[i, j]
        # dx = dAx @ work.T     (T*N,D) = (T*N,3H)(D,3H)'
        gemm(False, True, n_steps * n_batch, n_input, 3 * n_hidden,
             1, dAp, 4 * n_hidden, &work[0, 0], 3 * n_hidden, 0, &dx[0, 0, 0], n_input)
        # work = X.T @ dAx     (D,3H) = (T*N,D)'(T*N,3H), columns (n, r, z)
        gemm(True, False, n_input, 3 * n_hidden, n_steps * n_batch,
             1, &x[0, 0, 0], n_input, dAp, 4 * n_hidden, 0, &work[0, 0], 3 * n_hidden)
        # dWx[:, :2H] += work[:, H:];  dWx[:, 2H:] += work[:, :H]
        for i in range(n_input):
            for j in range(2 * H):
                dWx[i, j] += work[i, H + j]
            for j in range(H):
                dWx[i, 2 * H + j] += work[i, j]
