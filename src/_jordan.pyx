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
sum into each with beta = 0) or accumulated into them. The per-step products run on the weights
as they are (``_packed.gemm_b`` with nothing packed): in the AVX2 build the loops of
``src/_few.h`` for up to 4 sequences and weights of at most FEW_IN_PLACE bytes, else BLAS (a
GEMV at N = 1).

One sequence (N = 1) runs on several threads where H is wide enough (``n_threads``, ``n_parts``
> 1, ``src/_columns.pxd``): one parallel region for the whole step loop, thread s owning
columns [c0, c1) of h and [o0, o1) of y (each cut at 16 float32 or 8 float64 columns; thread 0
is the calling thread), two spinning barriers per step, as each product needs the whole row
the other made. Forward: its columns of h_t from the whole y_{t-1}, the barrier, its columns of
y_t from the whole h_t, the barrier. Backward: its columns of dAo_t from its own columns of the
carry, the barrier, its columns of dAh_t from the whole dAo_t, the barrier, its columns of the
carry from the whole dAh_t; the norms from each thread's sum of squares of its columns, joined
by thread 0. Thread 0 alone looks for Ctrl-C, before a barrier whose verdict stops every
thread at the same step. The products over all steps stay on the calling thread. Every element
is the same sum of the same terms as on one thread where the per-step products are the loops
of ``_few.h`` (BLAS's GEMV may round a part of its columns otherwise): then every result but the
norms (regrouped: to rounding) equals the one-thread one bit for bit.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.math cimport sqrt

from _blas cimport NO_TRANS, TRANS
from _columns cimport (SpinBarrier, barrier_init, barrier_wait, column_parts, fetch_row,
                       leaves, part_first, split_ended, split_skip, team_size)
from _hoisted cimport add_hidden_weight_grad, product_by_rows, sum_by_rows, sum_rows
from _interrupt cimport Watch, interrupted, raise_pending, watch
from _layout cimport Steps, check_blas_ld, steps_of
from _packed cimport PACKED_NR_D, PACKED_NR_S, gemm_b
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
    gemm_b(NULL, NO_TRANS, n_batch, n_hidden, n_output,
           1, y_prev, <int> ld_prev, Wy, n_hidden, 1, h_t, <int> ld_h)
    _phi_rows(h_t, ld_h, n_batch, n_hidden, nonlinearity)
    # y_t += h_t @ Wo     (N,O) += (N,H)(H,O)
    gemm_b(NULL, NO_TRANS, n_batch, n_output, n_hidden,
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
    int n_parts                 # threads sharing each step's columns (src/_columns.pxd)
    bint went_alone             # a split call's calling thread finished it alone
    Watch w                     # Ctrl-C (src/_interrupt.pxd)


cdef _Call _begin(Py_ssize_t dim0, Py_ssize_t dim1, int n_input, int n_hidden, int n_output,
                  bint time_major, str nonlinearity, str output_nonlinearity,
                  int n_threads) except *:
    """What a forward or backward call derives from its arguments: x's (dim0, dim1, D), (T, N)
    if time_major else (N, T), the sizes H of Wx and O of Wo, and the threads the caller allows
    (one sequence splits its steps' columns between them where H is wide enough); a ValueError
    if a step's rows are too far apart for BLAS."""
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
    c.n_parts = column_parts(s.n_batch, n_hidden, n_threads)
    c.went_alone = False
    return c


cdef inline int _panel(const floating* unused) noexcept nogil:
    """Columns per packed panel for this dtype: the unit a step's columns are split in."""
    return PACKED_NR_S if floating is float else PACKED_NR_D


cdef void _forward_parts(_Call* c, const floating* y0, floating* h, floating* y,
                         const floating* Wy, const floating* Wo) noexcept nogil:
    """The step loop of one sequence, each step split between c.n_parts threads
    (``src/_columns.pxd``): thread s computes its columns [c0, c1) of h_t from the whole
    y_{t-1}, the threads meet at the barrier, it computes its columns [o0, o1) of y_t from the
    whole h_t, and they meet again before step t + 1 reads the whole y_t. Thread 0, the calling
    thread, looks for Ctrl-C before the second wait, whose verdict stops every thread after the
    same step."""
    cdef SpinBarrier bar, alone
    cdef SpinBarrier* b = &alone
    cdef int s = 0, n = 1, c0 = 0, c1 = 0, o0 = 0, o1 = 0, sense = 0, verdict = 0
    cdef int H = c.n_hidden, n_out = c.n_output, unit = _panel(y0)
    cdef Py_ssize_t t = 0
    cdef const floating* y_prev = y0
    cdef floating* h_t = h
    cdef floating* y_t = y
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
            o0 = part_first(n_out, unit, n, s)
            o1 = part_first(n_out, unit, n, s + 1)
            sense = 0
            for t in range(c.n_steps):
                y_prev = <const floating*> y + (t - 1) * c.step_y if t else y0
                h_t = h + t * c.step_h
                y_t = y + t * c.step_y
                if c1 > c0:
                    fetch_row(y_prev, n_out * sizeof(floating))
                    # h_t[c0:c1] += y_{t-1} @ Wy[:, c0:c1]     (1,C) += (1,O)(O,C)
                    gemm_b(NULL, NO_TRANS, 1, c1 - c0, n_out, 1, y_prev, n_out, Wy + c0, H,
                           1, h_t + c0, H)
                    _phi_rows(h_t + c0, c1 - c0, 1, c1 - c0, c.phi_h)
                verdict = barrier_wait(b, &sense, False)
                if leaves(verdict, s):
                    break       # the waits were slow: thread 0 goes on alone
                if verdict:
                    b, c0, c1, o0, o1 = &alone, 0, H, 0, n_out
                    c.went_alone = True
                if o1 > o0:
                    fetch_row(h_t, H * sizeof(floating))
                    # y_t[o0:o1] += h_t @ Wo[:, o0:o1]     (1,C) += (1,H)(H,C)
                    gemm_b(NULL, NO_TRANS, 1, o1 - o0, H, 1, h_t, H, Wo + o0, n_out,
                           1, y_t + o0, n_out)
                    _phi_rows(y_t + o0, o1 - o0, 1, o1 - o0, c.phi_y)
                verdict = barrier_wait(b, &sense, s == 0 and interrupted(&c.w))
                if leaves(verdict, s):
                    break       # Ctrl-C: every thread stops after this step (or thread 0 goes on)
                if verdict:     # the waits were slow: thread 0 alone, every column
                    b, c0, c1, o0, o1 = &alone, 0, H, 0, n_out
                    c.went_alone = True


def split_backoff():
    """How many of this module's next calls keep to one thread because split calls of one
    sequence before them had to go on alone (``src/_columns.pxd``): 0 on a machine with free
    cores."""
    return split_skip


def forward(const floating[:, :, ::1] x, const floating[:, ::1] y0, const floating[:, ::1] Wx,
            const floating[:, ::1] Wy, const floating[::1] b, const floating[:, ::1] Wo,
            const floating[::1] bo, floating[:, :, ::1] h, floating[:, :, ::1] y,
            bint time_major, str nonlinearity, str output_nonlinearity, int n_threads=1):
    """Fill h and y with the hidden states and outputs of x. x, h and y are in the caller's
    layout: (N, T, .), or (T, N, .) if time_major. Shapes are checked by the caller; N >= 1.
    n_threads: the threads one sequence may split its steps' columns between."""
    cdef _Call c = _begin(x.shape[0], x.shape[1], x.shape[2], Wx.shape[1], Wo.shape[1],
                          time_major, nonlinearity, output_nonlinearity, n_threads)
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
        if c.w.stopped:
            pass
        elif c.n_parts > 1:
            # one sequence: each step's columns split between threads (src/_columns.pxd)
            _forward_parts(&c, &y0[0, 0], hp, yp, &Wy[0, 0], &Wo[0, 0])
        else:
            _forward_step(&y0[0, 0], n_output, hp, c.ld_h, yp, c.ld_y, &Wy[0, 0], &Wo[0, 0],
                          c.n_batch, n_hidden, n_output, c.phi_h, c.phi_y)
            for t in range(1, c.n_steps):
                if interrupted(&c.w):
                    break
                _forward_step(yp + (t - 1) * c.step_y, c.ld_y, hp + t * c.step_h, c.ld_h,
                              yp + t * c.step_y, c.ld_y, &Wy[0, 0], &Wo[0, 0],
                              c.n_batch, n_hidden, n_output, c.phi_h, c.phi_y)
    if c.n_parts > 1:
        split_ended(c.went_alone)
    raise_pending(&c.w)


cdef void _times_dphi(floating* g, const floating* v, Py_ssize_t size,
                      int nonlinearity) noexcept nogil:
    """g[:size] *= phi'(.) from v = phi(.) over size elements."""
    cdef Py_ssize_t i
    cdef floating one = 1       # a bare 1 would be a C double, and the float32 loop with it
    if nonlinearity == TANH:
        for i in range(size):
            g[i] = g[i] * (one - v[i] * v[i])
    elif nonlinearity == SIGMOID:
        for i in range(size):
            g[i] = g[i] * (v[i] * (one - v[i]))
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
    gemm_b(NULL, TRANS, n_batch, n_hidden, n_output,
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
    gemm_b(NULL, TRANS, n_batch, n_output, n_hidden,
           xi_t, dAh_t, <int> ld_h, Wy, n_hidden, 0, carry, n_output)


cdef enum:
    SQUARE_STRIDE = 8       # doubles between two threads' sums of squares: one cache line each


cdef void _dAo_cols(const floating* dy_t, const floating* y_t, const floating* carry,
                    floating* dAo_t, int o0, int o1, double* square,
                    int output_nonlinearity) noexcept nogil:
    """Columns o0:o1 of dAo_t = (dy[t] + carry) * phi_y' for one sequence, from the columns of
    the carry this thread computed at step t + 1; ``square`` (unless NULL) receives the sum of
    squares of those columns of dy[t] + carry, its part of ||dL/dy_t||**2."""
    cdef Py_ssize_t i
    cdef double sq = 0
    for i in range(o0, o1):
        dAo_t[i] = dy_t[i] + carry[i]
    if square != NULL:
        for i in range(o0, o1):
            sq += dAo_t[i] * dAo_t[i]
        square[0] = sq
    if output_nonlinearity != IDENTITY:
        _times_dphi(dAo_t + o0, y_t + o0, o1 - o0, output_nonlinearity)


cdef floating _joined_norm(const double* squares, int n_parts, floating unused) noexcept nogil:
    """||dL/dy_t|| from the parts' sums of squares, SQUARE_STRIDE apart, added in part order."""
    cdef double sq = 0
    cdef int s
    for s in range(n_parts):
        sq += squares[s * SQUARE_STRIDE]
    return <floating> sqrt(sq)


cdef void _backward_parts(_Call* c, const floating* dy, const floating* y, const floating* h,
                          floating* dAo, floating* dAh, floating* carry, const floating* Wy,
                          const floating* Wo, const floating* xi, floating* norms,
                          double* squares) noexcept nogil:
    """The backward step loop of one sequence, each step split between c.n_parts threads
    (``src/_columns.pxd``), thread s owning columns [o0, o1) of y and [c0, c1) of h: it
    computes its columns of dAo_t from its own columns of the carry, the threads meet at the
    barrier, it computes its columns of dAh_t from the whole dAo_t, they meet again, and it
    computes its columns of the carry into step t - 1 from the whole dAh_t. With norms, each
    thread's sum of squares goes to ``squares`` (two sets, by the parity of t) and thread 0
    joins them after the first wait. Thread 0 looks for Ctrl-C before the first wait, whose
    verdict stops every thread at the same step."""
    cdef SpinBarrier bar, alone
    cdef SpinBarrier* b = &alone
    cdef int s = 0, n = 1, c0 = 0, c1 = 0, o0 = 0, o1 = 0, sense = 0, verdict = 0
    cdef int H = c.n_hidden, n_out = c.n_output, unit = _panel(y)
    cdef Py_ssize_t t = 0
    cdef floating* dAo_t = dAo
    cdef floating* dAh_t = dAh
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
            o0 = part_first(n_out, unit, n, s)
            o1 = part_first(n_out, unit, n, s + 1)
            sense = 0
            for t in range(c.n_steps - 1, -1, -1):
                dAo_t = dAo + t * c.step_y
                dAh_t = dAh + t * c.step_h
                _dAo_cols(dy + t * c.step_y, y + t * c.step_y, carry, dAo_t, o0, o1,
                          squares + ((t & 1) * n + s) * SQUARE_STRIDE if squares != NULL
                          else NULL, c.phi_y)
                verdict = barrier_wait(b, &sense, s == 0 and interrupted(&c.w))
                if leaves(verdict, s):
                    break       # Ctrl-C: every thread stops at this step (or thread 0 goes on)
                if s == 0 and squares != NULL:
                    norms[t] = _joined_norm(squares + (t & 1) * n * SQUARE_STRIDE, n, norms[t])
                if verdict:     # the waits were slow: thread 0 alone, every column
                    b, n, c0, c1, o0, o1 = &alone, 1, 0, H, 0, n_out
                    c.went_alone = True
                if c1 > c0:
                    fetch_row(dAo_t, n_out * sizeof(floating))
                    # dAh_t[c0:c1] = dAo_t @ Wo[c0:c1].T     (1,C) = (1,O)(C,O)'
                    gemm_b(NULL, TRANS, 1, c1 - c0, n_out, 1, dAo_t, n_out, Wo + c0 * n_out,
                           n_out, 0, dAh_t + c0, H)
                    _times_dphi(dAh_t + c0, h + t * c.step_h + c0, c1 - c0, c.phi_h)
                verdict = barrier_wait(b, &sense, False)
                if leaves(verdict, s):
                    break       # the waits were slow: thread 0 goes on alone
                if verdict:
                    b, n, c0, c1, o0, o1 = &alone, 1, 0, H, 0, n_out
                    c.went_alone = True
                if o1 > o0 and not cut(xi[t], carry + o0, o1 - o0):
                    fetch_row(dAh_t, H * sizeof(floating))
                    # carry[o0:o1] = xi_t * dAh_t @ Wy[o0:o1].T     (1,C) = (1,H)(C,H)'
                    gemm_b(NULL, TRANS, 1, o1 - o0, H, xi[t], dAh_t, H, Wy + o0 * H, H, 0,
                           carry + o0, n_out)


def backward(const floating[:, :, ::1] x, const floating[:, ::1] y0,
             const floating[:, ::1] Wx, const floating[:, ::1] Wy, const floating[:, ::1] Wo,
             const floating[:, :, ::1] h, const floating[:, :, ::1] y,
             const floating[:, :, ::1] dy, const floating[::1] xi, floating[:, ::1] carry,
             floating[:, :, ::1] dAh, floating[:, :, ::1] dAo, floating[:, :, ::1] dx,
             dict weight_grads, bint time_major, str nonlinearity, str output_nonlinearity,
             floating[::1] norms=None, bint write_weight_grads=False, int n_threads=1):
    """BPTT over a forward's x, y0, weights, h and y. x, h, y, dy, the workspaces dAh (like h)
    and dAo (like y) and dx are in the caller's layout: (N, T, .), or (T, N, .) if time_major.
    carry (N, O) holds dyT on entry and dL/dy0 on exit; dx is overwritten; weight_grads' 'dWx',
    'dWy', 'db', 'dWo', 'dbo' are accumulated into, or with write_weight_grads written (every
    element; their contents not read); norms (T,) receives ||dL/dy_t|| unless it
    is None. Shapes are checked by the caller; N >= 1. n_threads: the threads one sequence may
    split its steps' columns between."""
    cdef _Call c = _begin(x.shape[0], x.shape[1], x.shape[2], Wx.shape[1], Wo.shape[1],
                          time_major, nonlinearity, output_nonlinearity, n_threads)
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
    cdef double[::1] squares    # the split steps' sums of squares for the norms
    cdef double* squares_p = NULL
    if c.n_parts > 1 and want_norms:
        squares = np.empty(2 * c.n_parts * SQUARE_STRIDE)
        squares_p = &squares[0]
    with nogil:
        if c.n_parts > 1:
            # one sequence: each step's columns split between threads (src/_columns.pxd)
            _backward_parts(&c, dyp, yp, hp, dAop, dAhp, &carry[0, 0], &Wy[0, 0], &Wo[0, 0],
                            &xi[0], &norms[0] if want_norms else NULL, squares_p)
        else:
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
    if c.n_parts > 1:
        split_ended(c.went_alone)
    raise_pending(&c.w)
