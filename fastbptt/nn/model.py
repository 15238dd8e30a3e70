"""A recurrent model to train: input layer, stacked recurrent layers, time-distributed output.

::

    inputs (N, T)  token ids  --embedding / one-hot-->  x (T, N, D)        (or dense (N, T, D))
    layer 0 .. L-1: h^l = <cell>_forward(h^{l-1}, state^l, Wx^l, Wh^l, b^l)   (T, N, H)
    output:   Z = h^{L-1} W_out + b_out                       one GEMM, (T*N, H) @ (H, O)
    loss:     softmax cross-entropy against target ids (mean over the unmasked steps), or
              mean squared error against float targets (mean over unmasked steps and outputs)

The recurrent layers run on fastbptt's compiled kernels (``backend="kernels"``, the default) or on
the NumPy reference (``backend="reference"``); both are called by cell name, so any cell the
package has ('rnn', 'lstm', 'gru') can be stacked. Everything outside the time-step loop (the
embedding lookup, the output layer and its loss, their gradients) is computed for all steps at
once with a few large matrix products. Inside, arrays are time-major (T, N, ...), which is what
the kernels use, so no layer copies its input; the public API is batch-major like the kernels'.

Parameters and gradients are plain dicts of NumPy arrays with the same keys::

    "embed"                    (V, E)    input="embedding" only
    "layer{l}.Wx"              (D_l, G*H)  D_0 = E, V (one-hot) or D (dense); D_l = H for l > 0
    "layer{l}.Wh"              (H, G*H)
    "layer{l}.b"               (G*H,)
    "layer{l}.bh"              (3*H,)    GRU only: the hidden bias
    "out.W"                    (H, O)
    "out.b"                    (O,)

Initialisation follows PyTorch: every recurrent weight and bias uniform(-1/sqrt(H), 1/sqrt(H))
(``b`` of an RNN/LSTM is the sum of PyTorch's two biases, so the sum of two such draws), the
output layer uniform(-1/sqrt(H), 1/sqrt(H)) like ``nn.Linear(H, O)``, the embedding N(0, 1) like
``nn.Embedding``.

The recurrent state is a list with one dict per layer, ``{"h": (N, H)}`` and for an LSTM also
``"c"``; ``None`` anywhere means zeros. A forward pass hands back the final state so a stream of
segments can carry it on (truncated BPTT).

Speed: the kernels run BLAS on one thread per call; the output layer's products run on NumPy's
BLAS. With OpenBLAS's default thread pool, its workers keep spinning after each NumPy product and
take cores from the kernel's thread: on a busy 2-core machine one LSTM training step (H=128,
32 x 64 characters) took 132 ms that way and 54 ms with NumPy's BLAS on one thread
(``fastbptt train`` does that for its duration, ``--blas-threads``; in your own loop use
threadpoolctl or ``OPENBLAS_NUM_THREADS=1``).

Typical use::

    model = Model(n_input=V, n_hidden=128, n_output=V, cell="lstm", input="embedding")
    opt = fastbptt.optim.Adam(model.params, lr=2e-3)
    loss, grads, state = model.loss_and_grads(x_ids, y_ids, state=state)
    opt.step(grads)
"""
import json
import os
from types import SimpleNamespace

import numpy as np

CELLS = ("rnn", "lstm", "gru")
N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
INPUTS = ("embedding", "onehot", "dense")
LOSSES = ("softmax", "mse")
BACKENDS = ("kernels", "reference")
_FORMAT = "fastbptt.model/1"


def _backend_module(backend):
    if backend == "kernels":
        import fastbptt
        return fastbptt
    if backend == "reference":
        import fastbptt.reference
        return fastbptt.reference
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def softmax_cross_entropy(z, targets, weights=None):
    """Mean softmax cross-entropy of logits ``z`` (M, O) against class ids ``targets`` (M,),
    weighted by ``weights`` (M,) if given (``sum(w * nll) / sum(w)``); returns the loss (float)
    and its gradient with respect to ``z`` (a new (M, O) array of z's dtype). The log-sum-exp
    is taken after subtracting each row's maximum, its sums in float64."""
    rows = np.arange(targets.size)
    total = float(weights.sum()) if weights is not None else float(targets.size)
    scale = 1.0 / total if total > 0 else 0.0
    dz = z - z.max(axis=1, keepdims=True)                        # shifted logits
    picked = dz[rows, targets].astype(np.float64)
    np.exp(dz, out=dz)
    norm = dz.sum(axis=1, dtype=np.float64)
    nll = np.log(norm) - picked                                  # -log softmax[target]
    loss = float((nll if weights is None else nll * weights).sum()) * scale
    row_scale = (scale / norm) if weights is None else (weights * scale / norm)
    dz *= row_scale.astype(z.dtype)[:, None]                     # softmax * w / total
    dz[rows, targets] -= (scale if weights is None else weights * scale)
    return loss, dz


class ModelCache:
    """What ``Model.forward`` hands to ``Model.backward`` (all time-major inside).

    ``state`` is the final recurrent state (one dict per layer), to pass as the ``state`` of the
    next segment. ``outputs`` is the output layer's result (N, T, O): logits for a softmax model,
    predictions for an MSE one.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def outputs(self):
        n_steps, n_batch = self.shape
        return self.z.reshape(n_steps, n_batch, -1).swapaxes(0, 1)


class Model:
    """Input layer, ``n_layers`` stacked recurrent layers of one cell, a time-distributed output.

    Parameters
    ----------
    n_input : vocabulary size V (``input`` 'embedding' or 'onehot') or feature count D ('dense').
    n_hidden : H, hidden units of every recurrent layer.
    n_output : O, classes (``loss='softmax'``) or regression outputs (``loss='mse'``).
    cell : 'rnn', 'lstm' or 'gru' (any cell the package provides).
    n_layers : stacked recurrent layers; layer l > 0 takes layer l-1's hidden states as input.
    input : 'embedding' (a learned (V, E) table), 'onehot' (one-hot vectors into ``Wx``) or
        'dense' (float features (N, T, D) given by the caller).
    n_embed : E for ``input='embedding'`` (default H).
    loss : 'softmax' (cross-entropy with integer targets) or 'mse' (float targets).
    nonlinearity : the RNN cell's phi ('tanh', 'sigmoid', 'relu'); ignored by other cells.
    dtype : float32 or float64, of every parameter and computation.
    backend : 'kernels' (compiled, default) or 'reference' (plain NumPy).
    seed : seed or ``numpy.random.Generator`` for the initialisation.
    """

    def __init__(self, n_input, n_hidden, n_output, *, cell="lstm", n_layers=1, input="embedding",
                 n_embed=None, loss="softmax", nonlinearity="tanh", dtype=np.float32,
                 backend="kernels", seed=None):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if nonlinearity not in ("tanh", "sigmoid", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh', 'sigmoid' or 'relu', got {nonlinearity!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.config = {
            "n_input": _positive_int("n_input", n_input),
            "n_hidden": _positive_int("n_hidden", n_hidden),
            "n_output": _positive_int("n_output", n_output),
            "cell": cell, "n_layers": _positive_int("n_layers", n_layers), "input": input,
            "n_embed": _positive_int("n_embed", n_embed if n_embed is not None else n_hidden),
            "loss": loss, "nonlinearity": nonlinearity, "dtype": dtype.name,
        }
        self.backend = backend
        for name in ("forward", "backward"):
            if not hasattr(self._module, f"{cell}_{name}"):
                raise ValueError(f"this build of fastbptt has no {cell}_{name} "
                                 f"(backend {backend!r})")
        self.params = self._init_params(np.random.default_rng(seed))

    # ----------------------------------------------------------------------------- properties
    cell = property(lambda self: self.config["cell"])
    n_layers = property(lambda self: self.config["n_layers"])
    n_hidden = property(lambda self: self.config["n_hidden"])
    n_input = property(lambda self: self.config["n_input"])
    n_output = property(lambda self: self.config["n_output"])
    dtype = property(lambda self: np.dtype(self.config["dtype"]))

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        self._module = _backend_module(value)
        self._backend = value

    @property
    def n_params(self):
        """The number of scalar parameters."""
        return sum(p.size for p in self.params.values())

    def __repr__(self):
        c = self.config
        return (f"Model({c['input']} {c['n_input']} -> {c['n_layers']} x {c['cell']} "
                f"{c['n_hidden']} -> {c['loss']} {c['n_output']}, {c['dtype']}, "
                f"{self.n_params} parameters, backend={self.backend!r})")

    def _init_params(self, rng):
        c, dtype = self.config, self.dtype
        n_hidden, gh = c["n_hidden"], N_GATES[c["cell"]] * c["n_hidden"]
        k = 1.0 / np.sqrt(n_hidden)

        def uniform(*shape):
            return rng.uniform(-k, k, size=shape).astype(dtype)

        params = {}
        if c["input"] == "embedding":
            params["embed"] = rng.standard_normal((c["n_input"], c["n_embed"])).astype(dtype)
            n_in = c["n_embed"]
        else:
            n_in = c["n_input"]
        for layer in range(c["n_layers"]):
            p = f"layer{layer}."
            params[p + "Wx"] = uniform(n_in if layer == 0 else n_hidden, gh)
            params[p + "Wh"] = uniform(n_hidden, gh)
            if c["cell"] == "gru":
                params[p + "b"] = uniform(gh)
                params[p + "bh"] = uniform(gh)
            else:   # PyTorch's bias_ih + bias_hh
                params[p + "b"] = uniform(gh) + uniform(gh)
        params["out.W"] = uniform(n_hidden, c["n_output"])
        params["out.b"] = uniform(c["n_output"])
        return params

    def zeros_like_params(self):
        """A gradient dict: zeros of every parameter's shape and dtype."""
        return {name: np.zeros_like(p) for name, p in self.params.items()}

    def init_state(self, n_batch):
        """Zero recurrent state for ``n_batch`` sequences: one dict per layer."""
        n_batch = int(n_batch)
        keys = ("h", "c") if self.cell == "lstm" else ("h",)
        return [{k: np.zeros((n_batch, self.n_hidden), self.dtype) for k in keys}
                for _ in range(self.n_layers)]

    # ----------------------------------------------------------------------------- forward
    def _check_inputs(self, inputs):
        c = self.config
        arr = np.asarray(inputs)
        if c["input"] == "dense":
            if arr.ndim != 3 or arr.shape[2] != c["n_input"]:
                raise ValueError(f"inputs must be dense features of shape (N, T, D) with "
                                 f"D = {c['n_input']}, got shape {arr.shape}")
            if arr.dtype != self.dtype:
                raise TypeError(f"inputs have dtype {arr.dtype} but the model is {self.dtype}; "
                                "pass features in the model's dtype")
            return arr
        if arr.ndim != 2:
            raise ValueError(f"inputs must be token ids of shape (N, T), got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"inputs must be integer token ids, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= c["n_input"]):
            raise ValueError(f"inputs must be token ids in [0, {c['n_input']}), "
                             f"got values in [{arr.min()}, {arr.max()}]")
        return arr

    def _check_state(self, state, n_batch):
        if state is None:
            return [{} for _ in range(self.n_layers)]
        if not isinstance(state, (list, tuple)) or len(state) != self.n_layers:
            raise ValueError(f"state must be a list of {self.n_layers} dicts (one per layer), "
                             f"got {type(state).__name__}"
                             + (f" of length {len(state)}" if hasattr(state, "__len__") else ""))
        out = []
        for layer, st in enumerate(state):
            if st is None:
                st = {}
            if not isinstance(st, dict):
                raise ValueError(f"state[{layer}] must be a dict like {{'h': (N, H) array}}, "
                                 f"got {type(st).__name__}")
            extra = set(st) - ({"h", "c"} if self.cell == "lstm" else {"h"})
            if extra:
                raise ValueError(f"state[{layer}] has unexpected keys {sorted(extra)} "
                                 f"for a {self.cell} model")
            out.append(st)
        return out

    def forward(self, inputs, state=None):
        """Run the model over all steps.

        Parameters
        ----------
        inputs : (N, T) integer ids (``input`` 'embedding'/'onehot') or (N, T, D) features.
        state : initial recurrent state (see ``init_state``) or None (zeros).

        Returns
        -------
        outputs : (N, T, O) logits (softmax model) or predictions (MSE model), a view.
        cache : for ``loss``/``backward``; ``cache.state`` is the final state.
        """
        c = self.config
        params, module, dtype = self.params, self._module, self.dtype
        inputs = self._check_inputs(inputs)
        n_batch, n_steps = inputs.shape[:2]
        if n_steps == 0:
            raise ValueError(f"inputs must have at least one time step, got shape {inputs.shape}")
        states = self._check_state(state, n_batch)
        if c["input"] == "embedding":
            ids = np.ascontiguousarray(inputs.T)
            x = params["embed"][ids]                                 # (T, N, E)
        elif c["input"] == "onehot":
            ids = np.ascontiguousarray(inputs.T)
            x = np.zeros((n_steps, n_batch, c["n_input"]), dtype)    # (T, N, V)
            np.put_along_axis(x, ids[..., None], 1, axis=2)
        else:
            ids = None
            x = inputs.swapaxes(0, 1)                                # (T, N, D), copied once
        forward = getattr(module, f"{c['cell']}_forward")
        caches, final = [], []
        h = x
        for layer in range(c["n_layers"]):
            p, st = f"layer{layer}.", states[layer]
            kwargs = {"time_major": True}
            if c["cell"] == "rnn":
                kwargs["nonlinearity"] = c["nonlinearity"]
            elif c["cell"] == "lstm":
                kwargs["c0"] = st.get("c")
            elif c["cell"] == "gru":
                kwargs["bh"] = params[p + "bh"]
            h, cache = forward(h, st.get("h"), params[p + "Wx"], params[p + "Wh"], params[p + "b"],
                               **kwargs)
            caches.append(cache)
            new = {"h": cache.hT}
            if c["cell"] == "lstm":
                new["c"] = cache.cT
            final.append(new)
        top = h.reshape(n_steps * n_batch, c["n_hidden"])            # (T*N, H)
        z = top @ params["out.W"]                                    # (T*N, O) one GEMM
        z += params["out.b"]
        return (z.reshape(n_steps, n_batch, -1).swapaxes(0, 1),
                ModelCache(ids=ids, x=x, top=top, z=z, layers=caches, state=final,
                           shape=(n_steps, n_batch)))

    # ----------------------------------------------------------------------------- loss
    def loss(self, cache, targets, mask=None):
        """The loss of a forward pass and its gradient with respect to the outputs.

        Parameters
        ----------
        cache : from ``forward``.
        targets : (N, T) integer class ids (softmax) or (N, T, O) floats (MSE).
        mask : (N, T) weights, bool or float, or None (all ones). A step with weight 0 adds
            nothing to the loss; the loss is the weighted mean over steps (and over the O
            outputs for MSE): ``sum(mask * l) / sum(mask)``.

        Returns
        -------
        loss : float.
        dz : (T*N, O) time-major gradient of the loss with respect to the outputs, for
            ``backward``.
        """
        c = self.config
        n_steps, n_batch = cache.shape
        n_out = c["n_output"]
        z = cache.z
        targets = np.asarray(targets)
        if c["loss"] == "softmax":
            if targets.shape != (n_batch, n_steps):
                raise ValueError(f"targets must be class ids of shape (N, T) = "
                                 f"{(n_batch, n_steps)}, got {targets.shape}")
            if targets.dtype.kind not in "iu":
                raise TypeError(f"targets must be integer class ids, got dtype {targets.dtype}")
            if targets.size and (targets.min() < 0 or targets.max() >= n_out):
                raise ValueError(f"targets must be class ids in [0, {n_out}), "
                                 f"got values in [{targets.min()}, {targets.max()}]")
        elif targets.shape != (n_batch, n_steps, n_out):
            raise ValueError(f"targets must have shape (N, T, O) = "
                             f"{(n_batch, n_steps, n_out)}, got {targets.shape}")
        weights = self._weights(mask, n_batch, n_steps)              # (T*N,) or None

        if c["loss"] == "softmax":
            loss, dz = softmax_cross_entropy(z, np.ascontiguousarray(targets.T).reshape(-1),
                                             weights)
        else:
            total = float(weights.sum()) if weights is not None else float(n_steps * n_batch)
            scale = 1.0 / total if total > 0 else 0.0
            y = np.ascontiguousarray(targets.swapaxes(0, 1)).reshape(-1, n_out)
            if y.dtype != z.dtype:
                raise TypeError(f"targets have dtype {y.dtype} but the model is {z.dtype}")
            diff = z - y
            sq = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
            loss = float((sq if weights is None else sq * weights).sum()) * scale / n_out
            dz = diff
            dz *= (2 * scale / n_out)
            if weights is not None:
                dz *= weights.astype(z.dtype)[:, None]
        return loss, dz

    def _weights(self, mask, n_batch, n_steps):
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.shape != (n_batch, n_steps):
            raise ValueError(f"mask must have shape (N, T) = {(n_batch, n_steps)}, got {m.shape}")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask must be bool or real, got dtype {m.dtype}")
        m = np.ascontiguousarray(m.T, dtype=np.float64).reshape(-1)
        if not np.isfinite(m).all() or (m < 0).any():
            raise ValueError("mask must be finite and non-negative")
        return m

    # ----------------------------------------------------------------------------- backward
    def backward(self, dz, cache, *, grads=None, xi=None, dstate=None, h_grad_norms=None,
                 overwrite_cache=False):
        """Backpropagate ``dz`` (from ``loss``) through the output and every layer and time step.

        Parameters
        ----------
        dz : (T*N, O) gradient of the loss with respect to the outputs (time-major rows), as
            ``loss`` returns it.
        cache : from ``forward``.
        grads : a dict like ``params`` to ADD the gradients into in place, or None (new zeros).
        xi : (T,) truncation multipliers (``fastbptt.truncation``), applied to every layer's
            recurrence; None is full BPTT within the segment.
        dstate : gradient flowing into the final state from a later segment (same structure as
            ``cache.state``), or None.
        h_grad_norms : a list with one entry per layer, each a (T,) array of the model's dtype
            to receive ||dL/dh_t|| of that layer, or None.
        overwrite_cache : passed to every layer's backward: True lets the LSTM's and GRU's
            backward use the cache's gate values as workspace, consuming the cache (a second
            backward on it raises a ValueError).

        Returns
        -------
        grads : the gradient dict.
        dstate0 : gradient with respect to the initial state, one dict per layer.
        dx : (N, T, D) gradient with respect to dense inputs (None for token inputs).
        """
        c = self.config
        params, module = self.params, self._module
        n_steps, n_batch = cache.shape
        if grads is None:
            grads = self.zeros_like_params()
        else:
            missing = set(self.params) - set(grads)
            if missing:
                raise ValueError(f"grads is missing {sorted(missing)}")
        dstate = self._check_state(dstate, n_batch)
        if h_grad_norms is None:
            h_grad_norms = [None] * c["n_layers"]
        elif len(h_grad_norms) != c["n_layers"]:
            raise ValueError(f"h_grad_norms must have one entry per layer ({c['n_layers']})")
        if dz.shape != cache.z.shape:
            raise ValueError(f"dz must have shape (T*N, O) = {cache.z.shape}, got {dz.shape}")

        grads["out.W"] += cache.top.T @ dz                           # (H, O) = (TN, H)' (TN, O)
        grads["out.b"] += dz.sum(axis=0)
        dh = (dz @ params["out.W"].T).reshape(n_steps, n_batch, -1)  # (T, N, H)
        backward = getattr(module, f"{c['cell']}_backward")
        dstate0 = [None] * c["n_layers"]
        for layer in reversed(range(c["n_layers"])):
            p, ds = f"layer{layer}.", dstate[layer]
            buffers = SimpleNamespace(dWx=grads[p + "Wx"], dWh=grads[p + "Wh"], db=grads[p + "b"])
            kwargs = {}
            if c["cell"] == "gru":
                buffers.dbh = grads[p + "bh"]
            if c["cell"] == "lstm":
                kwargs["dcT"] = ds.get("c")
            res = backward(dh, cache.layers[layer], dhT=ds.get("h"), xi=xi, grads=buffers,
                           h_grad_norms=h_grad_norms[layer], overwrite_cache=overwrite_cache,
                           **kwargs)
            dstate0[layer] = {"h": res.dh0}
            if c["cell"] == "lstm":
                dstate0[layer]["c"] = res.dc0
            dh = res.dx                                              # (T, N, D_layer)
        dx = None
        if c["input"] == "embedding":
            np.add.at(grads["embed"], cache.ids.reshape(-1),
                      dh.reshape(n_steps * n_batch, -1))
        elif c["input"] == "dense":
            dx = dh.swapaxes(0, 1)
        return grads, dstate0, dx

    def loss_and_grads(self, inputs, targets, *, state=None, mask=None, xi=None, grads=None,
                       dstate=None):
        """Forward, loss and backward in one call: ``(loss, grads, final_state)``.

        ``grads`` (a dict like ``params``) is overwritten with the gradient if given, else
        allocated. The final state is detached: pass it as ``state`` of the next segment.
        """
        _, cache = self.forward(inputs, state)
        loss, dz = self.loss(cache, targets, mask)
        if grads is not None:
            for g in grads.values():
                g[...] = 0
        # the cache is this call's own: backward may use its gate values as workspace
        grads, _, _ = self.backward(dz, cache, grads=grads, xi=xi, dstate=dstate,
                                    overwrite_cache=True)
        return loss, grads, cache.state

    def evaluate(self, inputs, targets, *, state=None, mask=None):
        """The loss without gradients: ``(loss, final_state)``."""
        _, cache = self.forward(inputs, state)
        loss, _ = self.loss(cache, targets, mask)
        return loss, cache.state

    # ----------------------------------------------------------------------------- sampling
    def sample(self, prefix, n, *, rng=None, temperature=1.0, state=None):
        """Generate ``n`` token ids after the ids in ``prefix`` (a softmax model on tokens).

        The prefix primes the state in one forward pass; then each token is drawn from
        softmax(logits / temperature) and fed back. Returns an int64 array of length ``n``.
        """
        c = self.config
        if c["loss"] != "softmax" or c["input"] == "dense" or c["n_input"] != c["n_output"]:
            raise ValueError("sample needs a softmax model on token inputs with "
                             "n_input == n_output")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        rng = np.random.default_rng(rng)
        prefix = np.asarray(prefix, dtype=np.int64).reshape(1, -1)
        if prefix.size == 0:
            prefix = np.zeros((1, 1), np.int64)
        out = np.empty(int(n), np.int64)
        logits, cache = self.forward(prefix, state)
        for i in range(out.size):
            z = logits[0, -1].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            out[i] = rng.choice(p.size, p=p)
            logits, cache = self.forward(out[i:i + 1].reshape(1, 1), cache.state)
        return out

    # ----------------------------------------------------------------------------- save/load
    def save(self, path, *, metadata=None):
        """Write the parameters and the configuration to ``path`` (.npz, no pickles).

        ``metadata`` is any JSON-serialisable dict kept beside them (e.g. a vocabulary);
        ``Model.load`` returns it as ``model.metadata``. The file is written to a temporary
        name and renamed, so an interrupted save never leaves a broken file.
        """
        path = os.fspath(path)
        header = {"format": _FORMAT, "config": self.config,
                  "metadata": metadata if metadata is not None else getattr(self, "metadata", {})}
        arrays = {name: p for name, p in self.params.items()}
        arrays["__header__"] = np.array(json.dumps(header))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path, *, backend="kernels"):
        """A model saved by ``save``; ``model.metadata`` holds what was saved beside it."""
        with np.load(os.fspath(path), allow_pickle=False) as f:
            if "__header__" not in f.files:
                raise ValueError(f"{path} is not a fastbptt model file (no __header__)")
            header = json.loads(str(f["__header__"]))
            if header.get("format") != _FORMAT:
                raise ValueError(f"{path}: unknown model format {header.get('format')!r}")
            arrays = {k: f[k] for k in f.files if k != "__header__"}
        config = dict(header["config"])
        model = cls(config.pop("n_input"), config.pop("n_hidden"), config.pop("n_output"),
                    backend=backend, seed=0, **config)
        if set(arrays) != set(model.params):
            raise ValueError(f"{path}: parameters {sorted(arrays)} do not match the "
                             f"configuration's {sorted(model.params)}")
        for name, value in arrays.items():
            if value.shape != model.params[name].shape or value.dtype != model.dtype:
                raise ValueError(f"{path}: {name} has {value.dtype} {value.shape}, expected "
                                 f"{model.dtype} {model.params[name].shape}")
            model.params[name] = np.ascontiguousarray(value)
        model.metadata = header.get("metadata", {})
        return model
