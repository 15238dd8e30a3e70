# cython: language_level=3
"""Jordan network kernels: the forward time-step loop and backpropagation through time.

    h_t = phi_h(x_t Wx + y_{t-1} Wy + b),   phi_h in {tanh, sigmoid, relu}
    y_t = phi_y(h_t Wo + bo),               phi_y in {identity, tanh, sigmoid}

The output of the step before, not its hidden state, feeds back. Every per-step buffer (x, h, y,
dy, dAh, dAo, dx) is C-contiguous in the caller's layout, batch-major (N, T, .) or time-major
(T, N, .), and no copy is made of either: step t is an (N, .) matrix whose rows are
n_rows * width apart (``src/_layout.pxd``). Below, buf[t] is step t of a buffer in either layout.
Math symbols and variables (shapes; T = n_steps, N = n_batch, D = n_input, H = n_hidden,
O = n_output):

    x_t            x[t]           (N, D)   input of step t
    y_{t-1}        y0 or y[t-1]   (N, O)   output step t receives
    h_t            h[t]           (N, H)   x_t Wx + b + y_{t-1} Wy is written there, then phi_h
    y_t            y[t]           (N, O)   bo + h_t Wo is written there, then phi_y
    Wx, Wy, b      Wx, Wy, b      (D, H), (O, H), (H,)
    Wo, bo         Wo, bo         (H, O), (O,)
    dL/dy_t        dy[t]          (N, O)   upstream gradient of step t's output
    dL/d(h_t Wo)   dAo[t]         (N, O)   workspace of backward: (dy[t] + carry) * phi_y'
    dL/d(.. b)     dAh[t]         (N, H)   workspace of backward: (dAo[t] Wo^T) * phi_h'
    xi_t           xi[t]                   truncation multiplier of the flow from step t into
                                           y_{t-1}
    carry          carry          (N, O)   gradient reaching y_t through step t+1: dyT at the
                                           start, dL/dy0 at the end
    ||dL/dy_t||    norms[t]                Frobenius norm of dy[t] + carry, only if norms is given

phi'(.) is computed from the values after it: tanh' = 1 - v^2, sigmoid' = v (1 - v),
relu' = [v > 0] (a factor 0 or 1, so that a NaN stays one, as in the reference), identity' = 1.
Forward: one hoisted GEMM X @ Wx for all steps (and b, bo written into h, y), then per step two
dependent products, y_{t-1} @ Wy and h_t @ Wo, each followed by a fused elementwise pass.
Backward: per step two fused passes and two products, dAo_t @ Wo.T and dAh_t @ Wy.T (the second
skipped where xi_t == 0); then the weight gradients and dx as products over all steps. Weight
gradients are written into the arrays passed in (``write_weight_grads``: the first product or
sum into each with beta = 0) or accumulated into them. At N = 1 every per-step product is a GEMV
(``src/_blas.pxd``).
"""
from cython cimport floating
from libc.math cimport sqrt

from _blas cimport NO_TRANS, TRANS, gemm
from _hoisted cimport add_hidden_weight_grad, product_by_rows, sum_by_rows, sum_rows
from _interrupt cimport Watch, interrupted, raise_pending, watch
from _layout cimport Steps, check_blas_ld, steps_of
from _phi cimport IDENTITY, RELU, SIGMOID, TANH, phi_in_place
from _truncation cimport cut

NONLINEARITIES = {"identity": IDENTITY, "tanh": TANH, "sigmoid": SIGMOID, "relu": RELU}


cdef void _phi_rows(floating* a, Py_ssize_t ld, int n_batch, int width,
                    int nonlinearity) noexcept nogil:
    """phi in place on the n_batch rows of width ``width``, ld apart, of one step."""
    cdef Py_ssize_t n
    if nonlinearity == IDENTITY:
        return
    if ld == width:                     # rows back to back: one flat pass
        phi_in_place(a, <Py_ssize_t> n_batch * width, nonlinearity)
        return
    for n in range(n_batch):
        phi_in_place(a + n * ld, width, nonlinearity)


cdef void _forward_step(const floating* y_prev, Py_ssize_t ld_prev, floating* h_t,
                        Py_ssize_t ld_h, floating* y_t, Py_ssize_t ld_y, const floating* Wy,
                        const floating* Wo, int n_batch, int n_hidden, int n_output,
                        int nonlinearity, int output_nonlinearity) noexcept nogil:
    """One step; rows of y_prev are ld_prev apart, those of h_t ld_h and of y_t ld_y. h_t holds
    x_t Wx + b and y_t holds bo on entry."""
    # h_t += y_prev @ Wy     (N,H) += (N,O)(O,H)
    gemm(NO_TRANS, NO_TRANS, n_batch, n_hidden, n_output,
         1, y_prev, <int> ld_prev, Wy, n_hidden, 1, h_t, <int> ld_h)
    _phi_rows(h_t, ld_h, n_batch, n_hidden, nonlinearity)
    # y_t += h_t @ Wo     (N,O) += (N,H)(H,O)
    gemm(NO_TRANS, NO_TRANS, n_batch, n_output, n_hidden,
         1, h_t, <int> ld_h, Wo, n_output, 1, y_t, <int> ld_y)
    _phi_rows(y_t, ld_y, n_batch, n_output, output_nonlinearity)


cdef void _fill_rows(floating* a, const floating* row, Py_ssize_t n_rows,
                     int width) noexcept nogil:
    """Every one of the n_rows rows (back to back) of ``a`` set to ``row`` (width,)."""
    cdef Py_ssize_t i
    cdef int j
    for i in range(n_rows):
        for j in range(width):
            a[i * width + j] = row[j]


cdef struct _Call:
    int n_steps, n_batch, n_input, n_hidden, n_output
    bint by_step                # rows in time-major order (src/_layout.pxd)
    Py_ssize_t ld_h, ld_y       # elements from one row of a step to the next, in h and in y
    Py_ssize_t step_h, step_y   # elements from step t to step t+1, in h and in y
    Py_ssize_t n_rows_all       # T*N
    int phi_h, phi_y            # the nonlinearities (src/_phi.pxd)
    Watch w                     # Ctrl-C (src/_interrupt.pxd)


cdef _Call _begin(Py_ssize_t dim0, Py_ssize_t dim1, int n_input, int n_hidden, int n_output,
                  bint time_major, str nonlinearity, str output_nonlinearity) except *:
    """What a forward or backward call derives from its arguments: x's (dim0, dim1, D), (T, N)
    if time_major else (N, T), and the sizes H of Wx and O of Wo; a ValueError if a step's rows
    are too far apart for BLAS."""
    cdef _Call c
    cdef Steps s = steps_of(dim0, dim1, time_major)
    c.n_steps, c.n_batch, c.by_step = s.n_steps, s.n_batch, s.by_step
    c.n_input, c.n_hidden, c.n_output = n_input, n_hidden, n_output
    c.ld_h, c.ld_y = s.n_rows * n_hidden, s.n_rows * n_output
    c.step_h, c.step_y = s.t_rows * n_hidden, s.t_rows * n_output
    c.n_rows_all = <Py_ssize_t> s.n_steps * s.n_batch
    c.phi_h = NONLINEARITIES[nonlinearity]
    c.phi_y = NONLINEARITIES[output_nonlinearity]
    check_blas_ld(s.n_rows, n_hidden if n_hidden > n_output else n_output)
    c.w = watch(<double> s.n_batch * n_hidden * n_output * 2)
    return c


def forward(const floating[:, :, ::1] x, const floating[:, ::1] y0, const floating[:, ::1] Wx,
            const floating[:, ::1] Wy, const floating[::1] b, const floating[:, ::1] Wo,
            const floating[::1] bo, floating[:, :, ::1] h, floating[:, :, ::1] y,
            bint time_major, str nonlinearity, str output_nonlinearity):
    """Fill h and y with the hidden states and outputs of x. x, h and y are in the caller's
    layout: (N, T, .), or (T, N, .) if time_major. Shapes are checked by the caller; N >= 1."""
    cdef _Call c = _begin(x.shape[0], x.shape[1], x.shape[2], Wx.shape[1], Wo.shape[1],
                          time_major, nonlinearity, output_nonlinearity)
    cdef int n_hidden = c.n_hidden, n_output = c.n_output
    cdef Py_ssize_t t
    cdef floating* hp = &h[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    with nogil:
        _fill_rows(hp, &b[0], c.n_rows_all, n_hidden)
        _fill_rows(yp, &bo[0], c.n_rows_all, n_output)
        # h += X @ Wx     (T*N,H) += (T*N,D)(D,H), rows in the caller's order
        product_by_rows(&c.w, NO_TRANS, c.n_steps * c.n_batch, n_hidden, c.n_input,
                        1, &x[0, 0, 0], c.n_input, &Wx[0, 0], n_hidden, 1, hp, n_hidden)
        if not c.w.stopped:
            _forward_step(&y0[0, 0], n_output, hp, c.ld_h, yp, c.ld_y, &Wy[0, 0], &Wo[0, 0],
                          c.n_batch, n_hidden, n_output, c.phi_h, c.phi_y)
        for t in range(1, c.n_steps):
            if interrupted(&c.w):
                break
            _forward_step(yp + (t - 1) * c.step_y, c.ld_y, hp + t * c.step_h, c.ld_h,
                          yp + t * c.step_y, c.ld_y, &Wy[0, 0], &Wo[0, 0],
                          c.n_batch, n_hidden, n_output, c.phi_h, c.phi_y)
    raise_pending(&c.w)


cdef void _times_dphi(floating* g, const floating* v, Py_ssize_t size,
                      int nonlinearity) noexcept nogil:
    """g[:size] *= phi'(.) from v = phi(.) over size elements."""
    cdef Py_ssize_t i
    if nonlinearity == TANH:
        for i in range(size):
            g[i] = g[i] * (1 - v[i] * v[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            g[i] = g[i] * (v[i] * (1 - v[i]))
    elif nonlinearity == RELU:
        # times [v > 0], as the reference: a NaN or inf in g stays one (inf * 0 = NaN)
        for i in range(size):
            g[i] = g[i] * <floating> (v[i] > 0)


cdef void _backward_step(const floating* dy_t, const floating* y_t, const floating* h_t,
                         floating* dAo_t, floating* dAh_t, Py_ssize_t ld_y, Py_ssize_t ld_h,
                         floating* carry, const floating* Wy, const floating* Wo, floating xi_t,
                         floating* norm_t, int n_batch, int n_hidden, int n_output,
                         int nonlinearity, int output_nonlinearity) noexcept nogil:
    """One step back; rows of dy_t, y_t and dAo_t are ld_y apart, those of h_t and dAh_t ld_h,
    those of carry n_output. norm_t, unless NULL, receives ||dy[t] + carry||."""
    cdef Py_ssize_t i, n, n_out = n_output
    cdef double sq = 0
    # dAo_t = (dy[t] + carry) * phi_y'
    for n in range(n_batch):
        for i in range(n_out):
            dAo_t[n * ld_y + i] = dy_t[n * ld_y + i] + carry[n * n_out + i]
        if norm_t != NULL:
            for i in range(n_out):
                sq += dAo_t[n * ld_y + i] * dAo_t[n * ld_y + i]
        if output_nonlinearity != IDENTITY:
            _times_dphi(dAo_t + n * ld_y, y_t + n * ld_y, n_out, output_nonlinearity)
    # dAh_t = dAo_t @ Wo.T     (N,H) = (N,O)(H,O)'
    gemm(NO_TRANS, TRANS, n_batch, n_hidden, n_output,
         1, dAo_t, <int> ld_y, Wo, n_output, 0, dAh_t, <int> ld_h)
    # dAh_t *= phi_h'
    if ld_h == n_hidden:                # rows back to back: one flat pass
        _times_dphi(dAh_t, h_t, <Py_ssize_t> n_batch * n_hidden, nonlinearity)
    else:
        for n in range(n_batch):
            _times_dphi(dAh_t + n * ld_h, h_t + n * ld_h, n_hidden, nonlinearity)
    if norm_t != NULL:
        norm_t[0] = <floating> sqrt(sq)
    if cut(xi_t, carry, n_batch * n_out):
        return          # xi_t == 0: carry = 0 (src/_truncation.pxd)
    # carry = xi_t * dAh_t @ Wy.T     (N,O) = (N,H)(O,H)'
    gemm(NO_TRANS, TRANS, n_batch, n_output, n_hidden,
         xi_t, dAh_t, <int> ld_h, Wy, n_hidden, 0, carry, n_output)


def backward(const floating[:, :, ::1] x, const floating[:, ::1] y0,
             const floating[:, ::1] Wx, const floating[:, ::1] Wy, const floating[:, ::1] Wo,
             const floating[:, :, ::1] h, const floating[:, :, ::1] y,
             const floating[:, :, ::1] dy, const floating[::1] xi, floating[:, ::1] carry,
             floating[:, :, ::1] dAh, floating[:, :, ::1] dAo, floating[:, :, ::1] dx,
             dict weight_grads, bint time_major, str nonlinearity, str output_nonlinearity,
             floating[::1] norms=None, bint write_weight_grads=False):
    """BPTT over a forward's x, y0, weights, h and y. x, h, y, dy, the workspaces dAh (like h)
    and dAo (like y) and dx are in the caller's layout: (N, T, .), or (T, N, .) if time_major.
    carry (N, O) holds dyT on entry and dL/dy0 on exit; dx is overwritten; weight_grads' 'dWx',
    'dWy', 'db', 'dWo', 'dbo' are accumulated into, or with write_weight_grads written (every
    element; their contents not read); norms (T,) receives ||dL/dy_t|| unless it
    is None. Shapes are checked by the caller; N >= 1."""
    cdef _Call c = _begin(x.shape[0], x.shape[1], x.shape[2], Wx.shape[1], Wo.shape[1],
                          time_major, nonlinearity, output_nonlinearity)
    cdef int n_hidden = c.n_hidden, n_output = c.n_output
    cdef Py_ssize_t t
    cdef floating[:, ::1] dWx = weight_grads["dWx"]
    cdef floating[:, ::1] dWy = weight_grads["dWy"]
    cdef floating[::1] db = weight_grads["db"]
    cdef floating[:, ::1] dWo = weight_grads["dWo"]
    cdef floating[::1] dbo = weight_grads["dbo"]
    cdef const floating* hp = &h[0, 0, 0]
    cdef const floating* yp = &y[0, 0, 0]
    cdef const floating* dyp = &dy[0, 0, 0]
    cdef floating* dAhp = &dAh[0, 0, 0]
    cdef floating* dAop = &dAo[0, 0, 0]
    cdef bint want_norms = norms is not None
    cdef bint write = write_weight_grads
    cdef floating beta = 0 if write else 1
    with nogil:
        for t in range(c.n_steps - 1, -1, -1):
            if interrupted(&c.w):
                break
            _backward_step(dyp + t * c.step_y, yp + t * c.step_y, hp + t * c.step_h,
                           dAop + t * c.step_y, dAhp + t * c.step_h, c.ld_y, c.ld_h,
                           &carry[0, 0], &Wy[0, 0], &Wo[0, 0], xi[t],
                           &norms[t] if want_norms else NULL, c.n_batch, n_hidden,
                           n_output, c.phi_h, c.phi_y)
        if not c.w.stopped:
            # dWx (+)= X.T @ dAh     (D,H) (+)= (T*N,D)'(T*N,H)
            sum_by_rows(&c.w, c.n_input, n_hidden, c.n_steps * c.n_batch,
                        1, &x[0, 0, 0], c.n_input, dAhp, n_hidden, beta, &dWx[0, 0], n_hidden)
            # dWy (+)= sum_t y_{t-1}.T @ dAh[t]     (O,H) (+)= (N,O)'(N,H) summed over t
            add_hidden_weight_grad(&c.w, c.by_step, c.n_steps, c.n_batch, n_output, n_hidden,
                                   &y0[0, 0], yp, dAhp, n_hidden, beta, &dWy[0, 0])
            # db (+)= dAh.sum(axis=(0, 1))
            sum_rows(c.n_rows_all, n_hidden, dAhp, n_hidden, write, &db[0])
            # dWo (+)= Hs.T @ dAo     (H,O) (+)= (T*N,H)'(T*N,O)
            sum_by_rows(&c.w, n_hidden, n_output, c.n_steps * c.n_batch,
                        1, hp, n_hidden, dAop, n_output, beta, &dWo[0, 0], n_output)
            # dbo (+)= dAo.sum(axis=(0, 1))
            sum_rows(c.n_rows_all, n_output, dAop, n_output, write, &dbo[0])
            # dx = dAh @ Wx.T     (T*N,D) = (T*N,H)(D,H)'
            product_by_rows(&c.w, TRANS, c.n_steps * c.n_batch, c.n_input, n_hidden,
                            1, dAhp, n_hidden, &Wx[0, 0], n_hidden, 0, &dx[0, 0, 0],
                            c.n_input)
    raise_pending(&c.w)
