"""``fastbptt gradflow``: vanishing and exploding gradients through time, measured.

For a loss on the last step only, L = L_T, backpropagation gives the gradient reaching every
hidden state, dL_T/dh_t = dL_T/dh_T * prod_{s=t+1..T} dh_s/dh_{s-1}. Its size is estimated by
the product of the Jacobians' sizes (Bengio, Simard and Frasconi 1994; Pascanu, Mikolov and
Bengio 2013),

    ||dL_T/dh_t|| ~ ||dL_T/dh_T|| * (lambda * gamma)^(T - t),

with lambda the size of Wh and gamma the size of the activation's derivative: it vanishes when
lambda * gamma < 1 and explodes when lambda * gamma > 1. This command measures the left side and
draws the right side beside it, for

* a vanilla tanh RNN whose Wh is scaled to a spectral radius below one (default 0.9),
* the same RNN with Wh scaled to a spectral radius above one (default 1.8),
* an LSTM with PyTorch's initialisation, whose forget gates start near 0.5,
* the same LSTM with ``--forget-bias`` (default 3) added to the forget gate's bias, so that
  f_t starts near 0.95: the regime in which the LSTM keeps its gradient over many steps,
* a Jordan network (one layer, O = H outputs, phi_y the identity) whose loop Wy Wo is scaled to
  the high radius: its state is its output, and it measures ||dL_T/dy_t||.

Each model is ``fastbptt.nn.Model`` with dense random inputs and a softmax output; the loss is
the cross-entropy of the last step against a random class (a mask zeroes every other step). The
measured norms come from the kernels' backward: ``h_grad_norms`` receives ||dL/dh_t|| (the
Frobenius norm over the batch) inside the compiled time-step loop, no second pass.

How lambda and gamma are measured
---------------------------------
* lambda is the spectral radius of Wh, max |eigenvalue| (W^t = V diag(lambda)^t V^-1 for
  W = V diag(lambda) V^-1): the quantity the experiment sets.
* gamma is the root mean square of tanh'(a_t) = 1 - h_t**2 over all steps, units and sequences
  of the forward pass. The root *mean square* rather than the mean because a gradient's squared
  norm picks up squared derivatives: for a random Wh, E ||Wh diag(d) v||^2 ~ lambda^2 mean(d^2)
  ||v||^2 (the mean-field estimate). When Wh's radius is above one the units saturate
  (tanh' -> 0) until lambda * gamma settles just above one, which is why exploding gradients
  in a tanh RNN grow more slowly than lambda^(T-t) alone would say.
* In the Jordan network the state is y and dy_t/dy_{t-1} = Wy diag(tanh'(a_t)) Wo (row
  vectors; phi_y' = 1): lambda is the spectral radius of Wy Wo and gamma the rms of tanh', as
  for the RNN with Wy Wo in place of Wh.
* In the LSTM, dc_t/dc_{t-1} is dominated by the forget gate f_t (the cell state's direct path), so
  the line beside its measurement is ||dL_T/dh_T|| * mean(f)^(T-t), the forget gate's mean over
  all steps, units and sequences standing for lambda * gamma.

The table (also written to ``gradflow.txt``) lists the measured norms and the estimates at
every tenth step; the PNG (``gradflow.png``, needs matplotlib) draws them on a log scale.
"""

import numpy as np

from ..nn.model import IMPLS, Model
from ._options import UsageError, at_least, check_memory, finite_float, positive_int
from ._output import CLI_EXTRA, DPI, OutDir, figure, make_out_dir

DEFAULT_RADII = (0.9, 1.8)
MAX_RADIUS = 100.0   # beyond it every unit saturates at once: nothing more to see


def add_arguments(parser):
    parser.add_argument("--steps", type=at_least(2), default=100, metavar="T",
                        help="time steps T, at least 2 (default 100)")
    parser.add_argument("--hidden", type=positive_int, default=128, metavar="H",
                        help="hidden units (default 128)")
    parser.add_argument("--batch", type=positive_int, default=8, metavar="N",
                        help="sequences per batch (default 8)")
    parser.add_argument("--inputs", type=positive_int, default=8, metavar="D",
                        help="input features, standard normal (default 8)")
    parser.add_argument("--radii", type=finite_float, nargs=2, default=DEFAULT_RADII,
                        metavar=("LOW", "HIGH"),
                        help="spectral radii of the RNN's Wh, 0 < LOW < 1 < HIGH <= 100 "
                             "(default 0.9 1.8)")
    parser.add_argument("--forget-bias", type=finite_float, default=3.0, metavar="B",
                        help="also measure an LSTM with B added to its forget gate's bias "
                             "(default 3; 0 leaves that line out)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--backend", choices=tuple(IMPLS), default="kernels",
                        help="run the recurrent layers on the kernels (default) or the NumPy "
                             "reference")
    parser.add_argument("--out", default="fastbptt-gradflow", metavar="DIR",
                        help="folder for gradflow.png and gradflow.txt "
                             "(default ./fastbptt-gradflow)")


def _rnn_rate(model, cache, radius, forget_bias):
    """lambda * gamma of a tanh RNN: Wh's spectral radius times the rms of tanh'."""
    h = cache.layers[0].h                                            # (T, N, H)
    lam = float(np.abs(np.linalg.eigvals(model.params["layer0.Wh"])).max())
    gamma = float(np.sqrt(np.mean((1 - h * h) ** 2)))
    return {"rate": lam * gamma, "rate_name": "(lambda*gamma)", "lam": lam, "gamma": gamma,
            "label": f"RNN, radius {radius:g}",
            "what": f"lambda = {lam:.3f} (spectral radius of Wh), gamma = {gamma:.3f} "
                    f"(rms tanh'), lambda*gamma = {lam * gamma:.3f}"}


def _lstm_rate(model, cache, radius, forget_bias):
    """The LSTM's mean forget gate over all steps, units and sequences."""
    h = cache.layers[0].h                                            # (T, N, H)
    f = slice(model.n_hidden, 2 * model.n_hidden)                    # gate blocks i, f, g, o
    h_prev = np.concatenate([np.zeros((1,) + h.shape[1:]), h[:-1]])
    a_f = (cache.x @ model.params["layer0.Wx"][:, f] + h_prev @ model.params["layer0.Wh"][:, f]
           + model.params["layer0.b"][f])
    rate = float(np.mean(1 / (1 + np.exp(-a_f))))
    return {"rate": rate, "rate_name": "mean(f)", "what": f"mean forget gate = {rate:.3f}",
            "label": f"LSTM, forget bias +{forget_bias:g}" if forget_bias else "LSTM"}


def _jordan_rate(model, cache, radius, forget_bias):
    """lambda * gamma of a Jordan layer, whose state is its output y (O = H in a Model, phi_y
    the identity): dy_t/dy_{t-1} = Wy diag(phi_h'(a_t)) Wo, so lambda is the spectral radius of
    the loop Wy Wo (O, O) and gamma the rms of tanh'(a_t) = 1 - h_t**2."""
    h = cache.layers[0].h                                            # (T, N, H)
    loop = model.params["layer0.Wy"] @ model.params["layer0.Wo"]
    lam = float(np.abs(np.linalg.eigvals(loop)).max())
    gamma = float(np.sqrt(np.mean((1 - h * h) ** 2)))
    return {"rate": lam * gamma, "rate_name": "(lambda*gamma)", "lam": lam, "gamma": gamma,
            "label": f"Jordan, radius {radius:g}" if radius is not None else "Jordan",
            "what": f"lambda = {lam:.3f} (spectral radius of Wy Wo), gamma = {gamma:.3f} "
                    f"(rms tanh'), lambda*gamma = {lam * gamma:.3f}"}


# the cells measured, each with its estimate
RATES = {"rnn": _rnn_rate, "lstm": _lstm_rate, "jordan": _jordan_rate}


def measure(cell, *, radius=None, forget_bias=0.0, n_steps=100, n_hidden=128, n_batch=8,
            n_input=8, seed=0, impl=None, backend=None, n_classes=10):
    """Measure ||dL_T/dh_t|| for t = 1..T with the loss on the last step only.

    Returns a dict: ``norms`` (T,), ``estimate`` (T,) the estimate's line through
    ||dL_T/dh_T||, ``rate`` its per-step factor (lambda * gamma, or mean(f) for the LSTM),
    ``measured_rate`` the measured per-step factor (||dL_T/dh_1|| / ||dL_T/dh_T||)^(1/(T-1)),
    and for the RNN ``lam`` and ``gamma``. ``radius`` scales the RNN's Wh to that spectral
    radius; ``forget_bias`` is added to the LSTM's forget-gate bias. ``impl`` (or ``backend``)
    is the implementation the model runs on, as for ``Model``.
    """
    if cell not in RATES:
        raise ValueError(f"gradflow measures the cells {tuple(RATES)}, got {cell!r}")
    if radius is not None and cell not in ("rnn", "jordan"):
        raise ValueError("radius scales the vanilla RNN's Wh (or the Jordan loop Wy Wo) only")
    if forget_bias and cell != "lstm":
        raise ValueError("forget_bias is for the LSTM only")
    rng = np.random.default_rng(seed)
    model = Model(n_input, n_hidden, n_classes, cell=cell, input="dense", loss="softmax",
                  dtype=np.float64, impl=impl, backend=backend, seed=rng)
    if radius is not None and cell == "jordan":
        Wy = model.params["layer0.Wy"]
        Wy *= radius / np.abs(np.linalg.eigvals(Wy @ model.params["layer0.Wo"])).max()
    elif radius is not None:
        Wh = model.params["layer0.Wh"]
        Wh *= radius / np.abs(np.linalg.eigvals(Wh)).max()
    if forget_bias:
        model.params["layer0.b"][n_hidden:2 * n_hidden] += forget_bias
    x = rng.standard_normal((n_batch, n_steps, n_input))
    targets = rng.integers(0, n_classes, (n_batch, n_steps))
    mask = np.zeros((n_batch, n_steps))
    mask[:, -1] = 1                                                  # loss on step T only
    _, cache = model.forward(x)
    loss, dz = model.loss(cache, targets, mask)
    norms = np.zeros(n_steps)
    model.backward(dz, cache, h_grad_norms=[norms])

    result = {"cell": cell, **RATES[cell](model, cache, radius, forget_bias)}
    back = np.arange(n_steps)[::-1]                                  # T - t
    with np.errstate(over="ignore"):         # an estimate past float64's range is inf
        estimate = norms[-1] * result["rate"] ** back
    result.update(norms=norms, estimate=estimate, loss=loss,
                  measured_rate=float((norms[0] / norms[-1]) ** (1 / (n_steps - 1)))
                  if norms[-1] > 0 and norms[0] > 0 else 0.0)
    return result


def _format_table(cases, n_steps):
    lines = []
    for c in cases:
        lines.append(f"{c['label']}: {c['what']}; measured factor per step "
                     f"{c['measured_rate']:.3f}")
    lines.append("")
    widths = [max(10, len(c["label"] + " measured")) for c in cases]
    head = f"{'t':>5}"
    for c, w in zip(cases, widths):
        head += f" | {c['label'] + ' measured':>{w}} {'estimate':>10}"
    lines.append(head)
    lines.append("-" * len(head))
    stride = max(1, n_steps // 10)
    rows = sorted(set(range(n_steps - 1, -1, -stride)) | {0})
    for i in reversed(rows):
        row = f"{i + 1:>5}"
        for c, w in zip(cases, widths):
            row += f" | {c['norms'][i]:>{w}.3e} {c['estimate'][i]:>10.3e}"
        lines.append(row)
    return "\n".join(lines)


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def _plot(cases, n_steps, path):
    fig = figure()
    if fig is None:
        return False
    ax = fig.add_subplot()
    t = np.arange(1, n_steps + 1)
    for i, c in enumerate(cases):
        color = f"C{i}"
        ax.semilogy(t, c["norms"], color=color, lw=2, label=f"{c['label']}: measured")
        ax.semilogy(t, c["estimate"], color=color, ls="--", lw=1,
                    label=f"{c['label']}: {c['rate_name']}^(T-t) = {c['rate']:.3f}^(T-t)")
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL_T / dh_t||")
    ax.set_title(f"Gradient of the last step's loss through time (T = {n_steps})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=DPI)
    return True


def _measure_bytes(args):
    """About the memory the largest model of a run needs (the LSTM, float64): its weights and
    their gradients, and the activations of T steps of N sequences and their gradients."""
    n_hidden, rows = args.hidden, args.steps * args.batch
    weights = 4 * n_hidden * (n_hidden + args.inputs + 1) + 10 * (n_hidden + 1)
    return 8 * (2 * weights + 2 * rows * (6 * n_hidden + args.inputs + 10))


def run(args):
    low, high = args.radii
    if not 0 < low < 1 < high <= MAX_RADIUS:
        raise UsageError(f"--radii needs 0 < LOW < 1 < HIGH <= {MAX_RADIUS:g}, got {low} {high}")
    check_memory(f"--hidden {args.hidden}, --steps {args.steps} and --batch {args.batch}",
                 _measure_bytes(args))
    if not make_out_dir("gradflow", args.out):
        return 2
    common = dict(n_steps=args.steps, n_hidden=args.hidden, n_batch=args.batch,
                  n_input=args.inputs, seed=args.seed, backend=args.backend)
    cases = [measure("rnn", radius=r, **common) for r in args.radii]
    cases.append(measure("lstm", **common))
    if args.forget_bias:
        cases.append(measure("lstm", forget_bias=args.forget_bias, **common))
    cases.append(measure("jordan", radius=high, **common))
    table = _format_table(cases, args.steps)
    print(table)
    out = OutDir("gradflow", args.out)
    txt, _ = out.write("gradflow.txt", lambda path: _write_text(path, table + "\n"))
    png, drawn = out.write("gradflow.png", lambda path: _plot(cases, args.steps, path))
    if drawn:
        print(f"wrote {png} and {txt}")
    else:
        print(f"wrote {txt}; matplotlib is not installed, so no picture: {CLI_EXTRA} (or "
              "matplotlib) to get gradflow.png")
    return 0
