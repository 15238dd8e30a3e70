"""Jordan's network on the compiled kernels (``src/_jordan.pyx``)."""
from ._blas_threads import run_kernel
from ._buffers import jordan_backward_buffers, jordan_forward_buffers, make_jordan_cache
from ._cells import JORDAN
from ._grads import JordanGrads
from ._jordan_checks import check_jordan_backward, check_jordan_forward
from ._kernels import Kernels, checks
from ._layout import readonly, swap_major
from ._sharing import begin, end, refilling
from ._validation import check_option

_jordan = Kernels("_jordan")


def jordan_forward(x, y0, Wx, Wy, b, Wo, bo, *, nonlinearity="tanh",
                   output_nonlinearity="identity", time_major=False, out=None):
    """Run Jordan's network over all time steps: the output of each step feeds back,

        h_t = phi_h(x_t Wx + y_{t-1} Wy + b),    y_t = phi_y(h_t Wo + bo).

    Parameters
    ----------
    x : (N, T, D) array, or (T, N, D) if ``time_major``; float32 or float64.
    y0 : (N, O) output fed to the first step, or None (zeros).
    Wx : (D, H), Wy : (O, H), b : (H,), Wo : (H, O), bo : (O,) arrays of x's dtype.
    nonlinearity : phi_h, 'tanh', 'sigmoid' or 'relu'.
    output_nonlinearity : phi_y, 'identity', 'tanh' or 'sigmoid'.
    out : a cache from an earlier ``jordan_forward`` with the same shapes, dtype and layout, or
        None. Its arrays are refilled instead of allocating new ones (a loop over the chunks of
        a stream) and it is returned as the cache; the outputs it returned before are
        overwritten. y0 may be a view of its own final output (``out.yT``); x and the weights
        may not share memory with its arrays (a ValueError).

    Returns
    -------
    y : (N, T, O) (or (T, N, O)) outputs, read-only (backward differentiates them).
    cache : for ``jordan_backward``; ``cache.h`` holds the hidden states by step (T, N, H) and
        ``cache.yT`` is the final output, the ``y0`` of the next segment of a stream.
    """
    check_option(JORDAN, "nonlinearity", nonlinearity)
    check_option(JORDAN, "output_nonlinearity", output_nonlinearity)
    inputs = check_jordan_forward(x, y0, {"Wx": Wx, "Wy": Wy, "b": b, "Wo": Wo, "bo": bo},
                                  time_major=time_major, out=out, scan=checks.first_nonfinite,
                                  overlap=checks.first_overlap)
    return refilling(out, inputs.writes, _fill_forward, inputs, out, nonlinearity,
                     output_nonlinearity)


def _fill_forward(inputs, out, nonlinearity, output_nonlinearity):
    """``jordan_forward`` once ``out`` is counted in: the arrays it writes made (new or
    ``out``'s), the kernel run into them, the cache made of them."""
    y0, h, y = jordan_forward_buffers(inputs, out)
    w = inputs.weights
    if inputs.n_batch:
        run_kernel(_jordan.forward, inputs.x, w["Wx"], inputs.x_buffer, y0, w["Wx"], w["Wy"],
                   w["b"], w["Wo"], w["bo"], h, y, inputs.time_major, nonlinearity,
                   output_nonlinearity, sharded=inputs.n_batch == 1)
    cache = make_jordan_cache(out, inputs, y0, h, y, nonlinearity, output_nonlinearity)
    return readonly(y), cache


def jordan_backward(dy, cache, *, dyT=None, xi=None, grads=None, h_grad_norms=None,
                    overwrite_cache=False, out=None):
    """Backpropagate through every time step of ``jordan_forward``.

    Parameters
    ----------
    dy : (N, T, O) (or (T, N, O)) array: dL/dy_t for every t, as a loss on the outputs hands
        it back; None means zeros.
    cache : from ``jordan_forward``; only read, so backward may run on it more than once, also
        in several threads at once.
    dyT : (N, O) gradient flowing into the final output y_{T-1} from a later segment, or None.
    xi : (T,) truncation multipliers (``fastbptt.truncation``); None is full BPTT. ``xi[t]``
        scales the gradient flowing from step t into the output it received, y_{t-1}
        (``xi[0]``: y0).
    grads : a ``JordanGrads`` (or anything with the arrays ``dWx``, ``dWy``, ``db``, ``dWo``,
        ``dbo``, or a dict with those keys) to add the weight gradients into in place instead
        of allocating them; none may share memory with what the call reads (a ValueError).
    h_grad_norms : (T,) array of the cache's dtype, or None. If given, receives for every step
        the Frobenius norm of dL/dy_t, the whole gradient reaching the output y_t (the state
        carried to the next step; ``fastbptt gradflow`` plots it), computed inside the loop.
    overwrite_cache : bool. True consumes the cache: another backward on it raises a
        ValueError, as for the other cells (whose backward may then reuse the cache's gate
        values as workspace); the Jordan cache holds only its states and outputs, which stay.
    out : the result of an earlier ``jordan_backward`` with the same shapes, or None. Its
        arrays receive this call's gradients instead of new ones: dx, dy0 and, unless ``grads``
        is given, the weight gradients, all overwritten.

    Returns
    -------
    JordanGrads ``(dx, dy0, dWx, dWy, db, dWo, dbo)``.
    """
    inputs = check_jordan_backward(dy, cache, dyT=dyT, xi=xi, grads=grads,
                                   h_grad_norms=h_grad_norms, overwrite_cache=overwrite_cache,
                                   out=out, scan=checks.first_nonfinite,
                                   overlap=checks.first_overlap)
    mode = "consume" if inputs.overwrite_cache else "read"
    begin(cache, mode, inputs.writes)
    try:
        n_steps, n_batch, n_hidden = cache.h.shape
        written = inputs.grads is None and n_batch > 0      # the kernel writes them
        dx, carry, wg = jordan_backward_buffers(cache, inputs, written)
        if n_batch:
            tm = cache.time_major
            dAh = cache.workspace("dAh", swap_major(cache.h, tm).shape)
            dAo = cache.workspace("dAo", swap_major(cache.y, tm).shape)
            run_kernel(_jordan.backward, cache.x, cache.Wx, swap_major(cache.x, tm), cache.y0,
                       cache.Wx, cache.Wy, cache.Wo, swap_major(cache.h, tm),
                       swap_major(cache.y, tm), inputs.dy_buffer, inputs.xi, carry, dAh, dAo,
                       dx, wg, tm, cache.nonlinearity, cache.output_nonlinearity,
                       h_grad_norms, written, sharded=n_batch == 1)
        elif h_grad_norms is not None:
            h_grad_norms[...] = 0
    finally:
        end(cache, mode, inputs.writes)
    return JordanGrads(dx, carry, wg["dWx"], wg["dWy"], wg["db"], wg["dWo"], wg["dbo"])
