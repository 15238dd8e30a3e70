# cython: language_level=3
"""The BLAS floor of a cell: exactly the matrix products of its kernels, all through BLAS
(SciPy's OpenBLAS), with no elementwise work.

Benchmarks time it beside the kernels, so kernel / floor is what the elementwise passes and the
loop's overhead cost. Where the kernels run their per-step products on a Wh packed once per call
(the AVX2 build with N >= 2, ``src/_packed.pxd``), the floor still calls BLAS for each of them,
as the baseline build does: it stays the time of those products through BLAS, which the packed
path can beat (BLAS packs Wh again for every product). The per-step
buffers are in the caller's layout, batch-major or time-major, with the kernels' leading
dimensions (``src/_layout.pxd``). Every cell makes these calls with G = n_gates blocks
(T = n_steps, N = n_batch, D = n_input, H = n_hidden; h_{-1} = h0):

    forward:   A = X @ Wx                   (T*N, G*H) = (T*N, D)(D, G*H)       once
               A[t] += h_{t-1} @ Wh         (N, G*H)  += (N, H)(H, G*H)          per step
    backward:  dh_{t-1} = dA[t] @ Wh.T      (N, H)     = (N, G*H)(H, G*H)'       per step
               dWx = X.T @ dA               (D, G*H)   = (T*N, D)'(T*N, G*H)     once
               dWh = H_prev.T @ dA          (H, G*H)   = (T*N, H)'(T*N, G*H)     once (time-major;
                                                         batch-major one per sequence and one
                                                         for h0, as the kernels)
               dx = dA @ Wx.T               (T*N, D)   = (T*N, G*H)(D, G*H)'     once

The GRU's differ where its kernels' do: its per-step forward product goes to a (N, 3H)
workspace hh (beta = 0) instead of A[t]; its per-step backward product adds to the carry; and
its input-side gradients are [dxr dxz] = dA[..., :2H] and a separate (.., H) dxn, so dx and dWx
take two products each.

At N = 1 the per-step products go through GEMV, as in the kernels (``_blas.gemm`` picks it).
The products over all steps run in the kernels' blocks of rows (``src/_hoisted.pxd``: one
block below 2**30 multiply-adds), without the kernels' looks for Ctrl-C between them. With
n_threads > 1 the products are split over threads as the kernels split theirs
(``src/_shards.pxd``): the per-step ones by shards of sequences, the others by rows or columns.
"""
from cython cimport floating
from cython.parallel cimport prange

from _blas cimport NO_TRANS, TRANS, gemm
from _interrupt cimport Watch
from _layout cimport Steps, check_blas_ld, steps_of
from _hoisted cimport add_hidden_weight_grad, product_by_rows, sum_by_rows
from _shards cimport cols_hidden, cols_sum, rows_product, shard_first


cdef void _forward_shard(int s, int n_shards, const Steps* steps, const floating* hp,
                         const floating* h0, const floating* Wh, floating* Ap, int a_width,
                         floating* hh, int n_hidden, int gh, bint gru) noexcept nogil:
    """Shard s of n_shards of the floor's forward: sequences n0 .. n0 + nb - 1, every step."""
    cdef Py_ssize_t n0 = shard_first(steps.n_batch, n_shards, s)
    cdef Py_ssize_t nb = shard_first(steps.n_batch, n_shards, s + 1) - n0
    cdef Py_ssize_t t_rows = steps.t_rows, n_rows = steps.n_rows, t
    cdef Py_ssize_t ld = n_rows * n_hidden, step = t_rows * n_hidden
    for t in range(steps.n_steps):
        if gru:
            # hh = h_{t-1} @ Wh     (N,3H) = (N,H)(H,3H)
            gemm(NO_TRANS, NO_TRANS, <int> nb, gh, n_hidden,
                 1, hp + n0 * ld + (t - 1) * step if t else h0 + n0 * n_hidden,
                 <int> (ld if t else n_hidden), Wh, gh, 0, hh + n0 * gh, gh)
        else:
            # A[t] += h_{t-1} @ Wh     (N,GH) += (N,H)(H,GH)
            gemm(NO_TRANS, NO_TRANS, <int> nb, gh, n_hidden,
                 1, hp + n0 * ld + (t - 1) * step if t else h0 + n0 * n_hidden,
                 <int> (ld if t else n_hidden), Wh, gh,
                 1, Ap + (t * t_rows + n0 * n_rows) * a_width, <int> (n_rows * a_width))


def floor(const floating[:, :, ::1] x, const floating[:, ::1] Wx, const floating[:, ::1] Wh,
          floating[:, :, ::1] A, floating[:, :, ::1] dA, floating[:, :, ::1] dxn,
          floating[:, :, ::1] h,
          const floating[:, ::1] h0, floating[:, ::1] carry, floating[:, ::1] hh,
          floating[:, :, ::1] dx, floating[:, ::1] dWx, floating[:, ::1] dWh,
          bint backward, bint gru, bint time_major, int n_threads=1):
    """Run the BLAS calls of forward (and backward) of a cell with A (the gate buffer, G*H
    columns) and h (H columns) as the buffers forward writes and dA (G*H columns) as backward's;
    the values are meaningless. x, A, dA, h and dx are (N, T, .), or (T, N, .) if time_major.
    hh (N, 3H) and dxn (like h) are the GRU's workspaces (unused otherwise)."""
    cdef Steps steps = steps_of(x.shape[0], x.shape[1], time_major)
    cdef int n_steps = steps.n_steps, n_batch = steps.n_batch
    cdef int n_input = x.shape[2], n_hidden = Wh.shape[0], gh = Wh.shape[1]
    cdef int a_width = A.shape[2], da_width = dA.shape[2]
    cdef Py_ssize_t n_rows = steps.n_rows
    cdef int s, n_shards
    cdef floating* Ap = &A[0, 0, 0]
    cdef const floating* hp = &h[0, 0, 0]
    check_blas_ld(n_rows, a_width if a_width > da_width else da_width)
    if n_batch < 2:
        n_threads = 1     # one sequence: on one thread (src/_shards.pxd)
    n_shards = n_threads if n_threads < n_batch else n_batch
    with nogil:
        # A = X @ Wx     (T*N,GH) = (T*N,D)(D,GH)
        rows_product(<Watch*> NULL, n_threads, NO_TRANS, n_steps * n_batch, gh, n_input,
                     1, &x[0, 0, 0], n_input, &Wx[0, 0], gh, 0, Ap, a_width, NULL)
        # shard s: its sequences, every step; one shard on this thread, without a parallel
        # region (as the kernels run it)
        if n_shards == 1:
            _forward_shard(0, n_shards, &steps, hp, &h0[0, 0], &Wh[0, 0], Ap, a_width,
                           &hh[0, 0], n_hidden, gh, gru)
        else:
            for s in prange(n_shards, num_threads=n_shards, schedule="static"):
                _forward_shard(s, n_shards, &steps, hp, &h0[0, 0], &Wh[0, 0], Ap, a_width,
                               &hh[0, 0], n_hidden, gh, gru)
        if backward:
            _backward_floor(x, Wx, Wh, &dA[0, 0, 0], da_width, &dxn[0, 0, 0] if gru else NULL,
                            hp, &h0[0, 0], carry, dx, dWx, dWh, gru, time_major, n_threads)


cdef void _backward_shard(int s, int n_shards, const Steps* steps, const floating* dAp,
                          int da_width, const floating* Wh, floating* carry, int n_hidden,
                          int gh, bint gru) noexcept nogil:
    """Shard s of n_shards of the floor's backward: sequences n0 .. n0 + nb - 1, every step."""
    cdef Py_ssize_t n0 = shard_first(steps.n_batch, n_shards, s)
    cdef Py_ssize_t nb = shard_first(steps.n_batch, n_shards, s + 1) - n0
    cdef Py_ssize_t t_rows = steps.t_rows, n_rows = steps.n_rows, t
    for t in range(steps.n_steps - 1, -1, -1):
        # carry = dA[t] @ Wh.T     (N,H) = (N,GH)(H,GH)'; the GRU adds it to the direct path
        gemm(NO_TRANS, TRANS, <int> nb, n_hidden, gh,
             1, dAp + (t * t_rows + n0 * n_rows) * da_width, <int> (n_rows * da_width),
             Wh, gh, 1 if gru else 0, carry + n0 * n_hidden, n_hidden)


cdef void _backward_floor(const floating[:, :, ::1] x, const floating[:, ::1] Wx,
                          const floating[:, ::1] Wh, floating* dAp, int da_width,
                          floating* dxnp, const floating* hp, const floating* h0,
                          floating[:, ::1] carry, floating[:, :, ::1] dx,
                          floating[:, ::1] dWx, floating[:, ::1] dWh,
                          bint gru, bint time_major, int n_threads) noexcept nogil:
    cdef Steps steps = steps_of(x.shape[0], x.shape[1], time_major)
    cdef int n_steps = steps.n_steps, n_batch = steps.n_batch
    cdef int n_input = x.shape[2], n_hidden = Wh.shape[0], gh = Wh.shape[1]
    cdef bint by_step = steps.by_step   # rows in time-major order
    cdef int s, n_shards
    if n_batch < 2:
        n_threads = 1     # one sequence: on one thread (src/_shards.pxd)
    n_shards = n_threads if n_threads < n_batch else n_batch
    # shard s: its sequences, every step; one shard on this thread, without a parallel region
    if n_shards == 1:
        _backward_shard(0, n_shards, &steps, dAp, da_width, &Wh[0, 0], &carry[0, 0], n_hidden,
                        gh, gru)
    else:
        for s in prange(n_shards, num_threads=n_shards, schedule="static"):
            _backward_shard(s, n_shards, &steps, dAp, da_width, &Wh[0, 0], &carry[0, 0],
                            n_hidden, gh, gru)
    # dWh += sum_t h_{t-1}.T @ dA[t]     (H,GH) += (N,H)'(N,GH) summed over t
    cols_hidden(<Watch*> NULL, n_threads, by_step, n_steps, n_batch, n_hidden, gh, h0, hp,
                dAp, da_width, 1, &dWh[0, 0])
    if gru:
        # dx = dxn @ Wx[:, 2H:].T + [dxr dxz] @ Wx[:, :2H].T     (T*N,D) = (T*N,H)(D,H)' + ...
        rows_product(<Watch*> NULL, n_threads, TRANS, n_steps * n_batch, n_input, n_hidden,
                     1, dxnp, n_hidden, &Wx[0, 2 * n_hidden], gh, 0, &dx[0, 0, 0], n_input,
                     NULL)
        rows_product(<Watch*> NULL, n_threads, TRANS, n_steps * n_batch, n_input, 2 * n_hidden,
                     1, dAp, da_width, &Wx[0, 0], gh, 1, &dx[0, 0, 0], n_input, NULL)
        # dWx[:, :2H] += X.T @ [dxr dxz];  dWx[:, 2H:] += X.T @ dxn
        cols_sum(<Watch*> NULL, n_threads, n_input, 2 * n_hidden, n_steps * n_batch,
                 1, &x[0, 0, 0], n_input, dAp, da_width, 1, &dWx[0, 0], gh)
        cols_sum(<Watch*> NULL, n_threads, n_input, n_hidden, n_steps * n_batch,
                 1, &x[0, 0, 0], n_input, dxnp, n_hidden, 1, &dWx[0, 2 * n_hidden], gh)
        return
    # dWx += X.T @ dA     (D,GH) += (T*N,D)'(T*N,GH)
    cols_sum(<Watch*> NULL, n_threads, n_input, gh, n_steps * n_batch,
             1, &x[0, 0, 0], n_input, dAp, da_width, 1, &dWx[0, 0], gh)
    # dx = dA @ Wx.T     (T*N,D) = (T*N,GH)(D,GH)'
    rows_product(<Watch*> NULL, n_threads, TRANS, n_steps * n_batch, n_input, gh,
                 1, dAp, da_width, &Wx[0, 0], gh, 0, &dx[0, 0, 0], n_input, NULL)


def jordan_floor(const floating[:, :, ::1] x, const floating[:, ::1] y0,
                 const floating[:, ::1] Wx, const floating[:, ::1] Wy, const floating[:, ::1] Wo,
                 floating[:, :, ::1] h, floating[:, :, ::1] y, floating[:, :, ::1] dAh,
                 floating[:, :, ::1] dAo, floating[:, ::1] carry, floating[:, :, ::1] dx,
                 floating[:, ::1] dWx, floating[:, ::1] dWy, floating[:, ::1] dWo,
                 bint backward, bint time_major):
    """The BLAS calls of ``src/_jordan.pyx`` (forward, and backward if ``backward``), with no
    elementwise work (O = n_output; y_{-1} = y0):

        forward:   H = X @ Wx                  (T*N, H) = (T*N, D)(D, H)         once
                   h[t] += y_{t-1} @ Wy        (N, H)  += (N, O)(O, H)            per step
                   y[t] += h[t] @ Wo           (N, O)  += (N, H)(H, O)            per step
        backward:  dAh[t] = dAo[t] @ Wo.T      (N, H)   = (N, O)(H, O)'           per step
                   carry = dAh[t] @ Wy.T       (N, O)   = (N, H)(O, H)'           per step
                   dWx += X.T @ dAh, dWy += Y_prev.T @ dAh, dWo += Hs.T @ dAo,
                   dx = dAh @ Wx.T                                                 once each

    x, h, y, dAh (like h), dAo (like y) and dx are (N, T, .), or (T, N, .) if time_major; the
    values are meaningless."""
    cdef Steps steps = steps_of(x.shape[0], x.shape[1], time_major)
    cdef int n_steps = steps.n_steps, n_batch = steps.n_batch
    cdef int n_input = x.shape[2], n_hidden = Wx.shape[1], n_output = Wo.shape[1]
    cdef Py_ssize_t ld_h = steps.n_rows * n_hidden, ld_y = steps.n_rows * n_output
    cdef Py_ssize_t step_h = steps.t_rows * n_hidden, step_y = steps.t_rows * n_output
    cdef Py_ssize_t t
    cdef floating* hp = &h[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef floating* dAhp = &dAh[0, 0, 0]
    cdef floating* dAop = &dAo[0, 0, 0]
    check_blas_ld(steps.n_rows, n_hidden if n_hidden > n_output else n_output)
    with nogil:
        # H = X @ Wx     (T*N,H) = (T*N,D)(D,H)
        product_by_rows(NULL, NO_TRANS, n_steps * n_batch, n_hidden, n_input,
                        1, &x[0, 0, 0], n_input, &Wx[0, 0], n_hidden, 0, hp, n_hidden)
        for t in range(n_steps):
            # h[t] += y_{t-1} @ Wy     (N,H) += (N,O)(O,H)
            gemm(NO_TRANS, NO_TRANS, n_batch, n_hidden, n_output,
                 1, yp + (t - 1) * step_y if t else &y0[0, 0], <int> (ld_y if t else n_output),
                 &Wy[0, 0], n_hidden, 1, hp + t * step_h, <int> ld_h)
            # y[t] += h[t] @ Wo     (N,O) += (N,H)(H,O)
            gemm(NO_TRANS, NO_TRANS, n_batch, n_output, n_hidden,
                 1, hp + t * step_h, <int> ld_h, &Wo[0, 0], n_output, 1, yp + t * step_y,
                 <int> ld_y)
        if backward:
            for t in range(n_steps - 1, -1, -1):
                # dAh[t] = dAo[t] @ Wo.T     (N,H) = (N,O)(H,O)'
                gemm(NO_TRANS, TRANS, n_batch, n_hidden, n_output,
                     1, dAop + t * step_y, <int> ld_y, &Wo[0, 0], n_output, 0, dAhp + t * step_h,
                     <int> ld_h)
                # carry = dAh[t] @ Wy.T     (N,O) = (N,H)(O,H)'
                gemm(NO_TRANS, TRANS, n_batch, n_output, n_hidden,
                     1, dAhp + t * step_h, <int> ld_h, &Wy[0, 0], n_hidden, 0, &carry[0, 0],
                     n_output)
            # dWx += X.T @ dAh     (D,H) += (T*N,D)'(T*N,H)
            sum_by_rows(NULL, n_input, n_hidden, n_steps * n_batch,
                        1, &x[0, 0, 0], n_input, dAhp, n_hidden, 1, &dWx[0, 0], n_hidden)
            # dWy += sum_t y_{t-1}.T @ dAh[t]     (O,H) += (N,O)'(N,H) summed over t
            add_hidden_weight_grad(NULL, steps.by_step, n_steps, n_batch, n_output, n_hidden,
                                   &y0[0, 0], yp, dAhp, n_hidden, 1, &dWy[0, 0])
            # dWo += Hs.T @ dAo     (H,O) += (T*N,H)'(T*N,O)
            sum_by_rows(NULL, n_hidden, n_output, n_steps * n_batch,
                        1, hp, n_hidden, dAop, n_output, 1, &dWo[0, 0], n_output)
            # dx = dAh @ Wx.T     (T*N,D) = (T*N,H)(D,H)'
            product_by_rows(NULL, TRANS, n_steps * n_batch, n_input, n_hidden,
                            1, dAhp, n_hidden, &Wx[0, 0], n_hidden, 0, &dx[0, 0, 0], n_input)
