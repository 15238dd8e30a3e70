"""``fastbptt gradflow``: vanishing and exploding gradients through time, measured.

For a loss on the last step only, L = L_T, backpropagation gives the gradient reaching every
hidden state, dL_T/dh_t = dL_T/dh_T * prod_{s=t+1..T} dh_s/dh_{s-1}. The seeds (000, 002)
estimate its size by the product of the Jacobians' sizes,

    ||dL_T/dh_t|| ~ ||dL_T/dh_T|| * (lambda * gamma)^(T - t),

with lambda the size of Wh and gamma the size of the activation's derivative: it vanishes when
lambda * gamma < 1 and explodes when lambda * gamma > 1. This command measures the left side and
draws the right side beside it, for

* a vanilla tanh RNN whose Wh is scaled to a spectral radius below one (default 0.9),
* the same RNN with Wh scaled to a spectral radius above one (default 1.8),
* an LSTM with PyTorch's initialisation, whose forget gates start near 0.5,
* the same LSTM with ``--forget-bias`` (default 3) added to the forget gate's bias, so that
  f_t starts near 0.95: the regime in which the seeds (004) say the LSTM keeps its gradient
  (the LSTM lines need a build of fastbptt with the LSTM).

Each model is ``fastbptt.model.Model`` with dense random inputs and a softmax output; the loss is
the cross-entropy of the last step against a random class (a mask zeroes every other step). The
measured norms come from the kernels' backward: ``h_grad_norms`` receives ||dL/dh_t|| (the
Frobenius norm over the batch) inside the compiled time-step loop, no second pass.

How lambda and gamma are measured
---------------------------------
* lambda is the spectral radius of Wh, max |eigenvalue| (seed 002 decomposes W = V diag(lambda)
  V^-1 and raises it to the power t): the quantity the experiment sets.
* gamma is the root mean square of tanh'(a_t) = 1 - h_t**2 over all steps, units and sequences
  of the forward pass. The root *mean square* rather than the mean because a gradient's squared
  norm picks up squared derivatives: for a random Wh, E ||Wh diag(d) v||^2 ~ lambda^2 mean(d^2)
  ||v||^2 (the mean-field estimate). When Wh's radius is above one the units saturate
  (tanh' -> 0) until lambda * gamma settles just above one, which is why exploding gradients
  in a tanh RNN grow more slowly than lambda^(T-t) alone would say.
* For the LSTM the seeds (004) show that dc_t/dc_{t-1} is dominated by the forget gate f_t, so
  the line beside its measurement is ||dL_T/dh_T|| * mean(f)^(T-t), the forget gate's mean over
  all steps, units and sequences standing for lambda * gamma.

The table (also written to ``gradflow.txt``) lists the measured norms and the estimates at
every tenth step; the PNG (``gradflow.png``, needs matplotlib) draws them on a log scale.
"""
import os
import sys

import numpy as np

from ..nn.model import Model

DEFAULT_RADII = (0.9, 1.8)


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=100, metavar="T",
                        help="time steps T (default 100)")
    parser.add_argument("--hidden", type=int, default=128, metavar="H",
                        help="hidden units (default 128)")
    parser.add_argument("--batch", type=int, default=8, metavar="N",
                        help="sequences per batch (default 8)")
    parser.add_argument("--inputs", type=int, default=8, metavar="D",
                        help="input features, standard normal (default 8)")
    parser.add_argument("--radii", type=float, nargs=2, default=DEFAULT_RADII,
                        metavar=("LOW", "HIGH"),
                        help="spectral radii of the RNN's Wh, LOW < 1 < HIGH (default 0.9 1.8)")
    parser.add_argument("--forget-bias", type=float, default=3.0, metavar="B",
                        help="also measure an LSTM with B added to its forget gate's bias "
                             "(default 3; 0 leaves that line out)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--backend", choices=("kernels", "reference"), default="kernels",
                        help="run the recurrent layers on the kernels (default) or the NumPy "
                             "reference")
    parser.add_argument("--out", default="fastbptt-gradflow", metavar="DIR",
                        help="folder for gradflow.png and gradflow.txt "
                             "(default ./fastbptt-gradflow)")


def _check_args(args):
    for name in ("steps", "hidden", "batch", "inputs"):
        if getattr(args, name) < 1:
            return f"--{name} must be at least 1, got {getattr(args, name)}"
    if args.steps < 2:
        return f"--steps must be at least 2, got {args.steps}"
    low, high = args.radii
    if not (0 < low < 1 < high) or not np.isfinite(high):
        return f"--radii needs 0 < LOW < 1 < HIGH (finite), got {low} {high}"
    if not np.isfinite(args.forget_bias):
        return f"--forget-bias must be a finite number, got {args.forget_bias}"
    return None


def measure(cell, *, radius=None, forget_bias=0.0, n_steps=100, n_hidden=128, n_batch=8,
            n_input=8, seed=0, backend="kernels", n_classes=10):
    """Measure ||dL_T/dh_t|| for t = 1..T with the loss on the last step only.

    Returns a dict: ``norms`` (T,), ``estimate`` (T,) the seeds' line through ||dL_T/dh_T||,
    ``rate`` its per-step factor (lambda * gamma, or mean(f) for the LSTM), ``measured_rate``
    the measured per-step factor (||dL_T/dh_1|| / ||dL_T/dh_T||)^(1/(T-1)), and for the RNN
    ``lam`` and ``gamma``. ``radius`` scales the RNN's Wh to that spectral radius;
    ``forget_bias`` is added to the LSTM's forget-gate bias.
    """
    rng = np.random.default_rng(seed)
    model = Model(n_input, n_hidden, n_classes, cell=cell, input="dense", loss="softmax",
                  dtype=np.float64, backend=backend, seed=rng)
    result = {"cell": cell}
    if radius is not None:
        Wh = model.params["layer0.Wh"]
        if cell != "rnn":
            raise ValueError("radius scales the vanilla RNN's Wh only")
        Wh *= radius / np.abs(np.linalg.eigvals(Wh)).max()
    if forget_bias:
        if cell != "lstm":
            raise ValueError("forget_bias is for the LSTM only")
        model.params["layer0.b"][n_hidden:2 * n_hidden] += forget_bias
    x = rng.standard_normal((n_batch, n_steps, n_input))
    targets = rng.integers(0, n_classes, (n_batch, n_steps))
    mask = np.zeros((n_batch, n_steps))
    mask[:, -1] = 1                                                  # loss on step T only
    _, cache = model.forward(x)
    loss, dz = model.loss(cache, targets, mask)
    norms = np.zeros(n_steps)
    model.backward(dz, cache, h_grad_norms=[norms])

    h = cache.layers[0].h                                            # (T, N, H)
    if cell == "rnn":
        lam = float(np.abs(np.linalg.eigvals(model.params["layer0.Wh"])).max())
        gamma = float(np.sqrt(np.mean((1 - h * h) ** 2)))
        rate = lam * gamma
        result.update(lam=lam, gamma=gamma, label=f"RNN, radius {radius:g}")
    elif cell == "lstm":
        H = n_hidden
        h_prev = np.concatenate([np.zeros((1,) + h.shape[1:]), h[:-1]])
        a_f = (cache.x @ model.params["layer0.Wx"][:, H:2 * H]
               + h_prev @ model.params["layer0.Wh"][:, H:2 * H] + model.params["layer0.b"][H:2 * H])
        rate = float(np.mean(1 / (1 + np.exp(-a_f))))               # mean forget gate
        result.update(label=f"LSTM, forget bias +{forget_bias:g}" if forget_bias else "LSTM")
    else:
        raise ValueError(f"gradflow measures the 'rnn' and 'lstm' cells, got {cell!r}")
    back = np.arange(n_steps)[::-1]                                  # T - t
    result.update(norms=norms, rate=rate, estimate=norms[-1] * rate ** back, loss=loss,
                  measured_rate=float((norms[0] / norms[-1]) ** (1 / (n_steps - 1)))
                  if norms[-1] > 0 and norms[0] > 0 else 0.0)
    return result


def _format_table(cases, n_steps):
    lines = []
    for c in cases:
        if c["cell"] == "rnn":
            what = (f"lambda = {c['lam']:.3f} (spectral radius of Wh), gamma = {c['gamma']:.3f} "
                    f"(rms tanh'), lambda*gamma = {c['rate']:.3f}")
        else:
            what = f"mean forget gate = {c['rate']:.3f}"
        lines.append(f"{c['label']}: {what}; measured factor per step "
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


def _figure():
    """A matplotlib Figure (no pyplot, no global backend change), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(8, 5), layout="tight")


def _plot(cases, n_steps, path):
    fig = _figure()
    if fig is None:
        return False
    ax = fig.add_subplot()
    t = np.arange(1, n_steps + 1)
    for i, c in enumerate(cases):
        color = f"C{i}"
        ax.semilogy(t, c["norms"], color=color, lw=2, label=f"{c['label']}: measured")
        what = "(lambda*gamma)" if c["cell"] == "rnn" else "mean(f)"
        ax.semilogy(t, c["estimate"], color=color, ls="--", lw=1,
                    label=f"{c['label']}: {what}^(T-t) = {c['rate']:.3f}^(T-t)")
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL_T / dh_t||")
    ax.set_title(f"Gradient of the last step's loss through time (T = {n_steps})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return True


def run(args):
    error = _check_args(args)
    if error:
        print(f"fastbptt gradflow: error: {error}", file=sys.stderr)
        return 2
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        print(f"fastbptt gradflow: error: --out {args.out}: cannot create the folder ({err})",
              file=sys.stderr)
        return 2
    from ..nn.model import _backend_module
    module = _backend_module(args.backend)
    common = dict(n_steps=args.steps, n_hidden=args.hidden, n_batch=args.batch,
                  n_input=args.inputs, backend=args.backend)
    cases = [measure("rnn", radius=r, seed=args.seed, **common) for r in args.radii]
    if hasattr(module, "lstm_forward"):
        cases.append(measure("lstm", seed=args.seed, **common))
        if args.forget_bias:
            cases.append(measure("lstm", forget_bias=args.forget_bias, seed=args.seed, **common))
    else:
        print("(this build of fastbptt has no LSTM yet: only the RNN is measured)")
    table = _format_table(cases, args.steps)
    print(table)
    with open(os.path.join(args.out, "gradflow.txt"), "w") as f:
        f.write(table + "\n")
    png = os.path.join(args.out, "gradflow.png")
    if _plot(cases, args.steps, png):
        print(f"wrote {png} and {os.path.join(args.out, 'gradflow.txt')}")
    else:
        print(f"wrote {os.path.join(args.out, 'gradflow.txt')}; matplotlib is not installed, so "
              "no picture: pip install 'fastbptt[cli]' (or matplotlib) to get gradflow.png")
    return 0
