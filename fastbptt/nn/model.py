"""A recurrent model to train: input layer, stacked recurrent layers, time-distributed output.

::

    inputs (N, T)  token ids  --embedding / one-hot-->  x (T, N, D)        (or dense (N, T, D))
    layer 0 .. L-1: h^l = cell.forward(h^{l-1}, state^l, Wx^l, Wh^l, b^l)   (T, N, H)
    output:   Z = h^{L-1} W_out + b_out                       one GEMM, (T*N, H) @ (H, O)
    loss:     softmax cross-entropy against target ids (mean over the unmasked steps), or
              mean squared error against float targets (mean over unmasked steps and outputs)

The recurrent layers run the cell ``impl.CELLS[cell]`` of an implementation: ``fastbptt``, the
compiled kernels (the default), or ``fastbptt.reference``, the NumPy reference (``backend=``
'kernels' or 'reference' names the same two). The cell's record says what its layers hold and
take beyond ``Wx, Wh, b``: its states (h, and c for the LSTM), its extra weights (the GRU's
``bh``) and its options (the RNN's ``nonlinearity``); so any cell of the registry can be
stacked. Everything outside the time-step loop (the embedding lookup, the output layer and its
loss, their gradients) is computed for all steps at once with a few large matrix products.
Inside, arrays are time-major (T, N, ...), which is what the kernels use, so no layer copies its
input; the public API is batch-major like the kernels'.

Parameters and gradients are plain dicts of NumPy arrays with the same keys::

    "embed"                    (V, E)    input="embedding" only
    "layer{l}.Wx"              (D_l, G*H)  D_0 = E, V (one-hot) or D (dense); D_l = H for l > 0
    "layer{l}.Wh"              (H, G*H)
    "layer{l}.b"               (G*H,)
    "layer{l}.bh"              (3*H,)    GRU only: the hidden bias (the cell's extra weights)
    "layer{l}.Wy", ".Wo", ".bo"  (H, H), (H, H), (H,)   Jordan only, in place of Wh: the
                               recurrent weight of its output and its output layer (O = H)
    "out.W"                    (H, O)    (2H, O) if bidirectional
    "out.b"                    (O,)

A bidirectional model (``bidirectional=True``) has in each layer a second cell, its reverse
direction, with the parameters ``"layer{l}_reverse.Wx"``... (PyTorch's ``_reverse`` layers): it
reads each sequence from its last step back to its first, and the layer's output is the two
directions' hidden states side by side, (T, N, 2H), forward first, as in PyTorch; the next layer
and the output layer take those 2H features. Its state has one dict per layer and direction
(layer 0 forward, layer 0 reverse, layer 1 forward, ...).

Sequences of unequal lengths in one batch: ``forward(..., lengths=...)`` runs each sequence
over its own steps only (the cells' ``lengths=``), and the loss then counts the real steps only
(a mask from the lengths).

Initialisation follows PyTorch: every recurrent weight and bias uniform(-1/sqrt(H), 1/sqrt(H))
(``b`` of a cell without a hidden bias of its own, RNN and LSTM, is the sum of PyTorch's two
biases, so the sum of two such draws), the output layer uniform(-1/sqrt(H), 1/sqrt(H)) like
``nn.Linear(H, O)``, the embedding N(0, 1) like ``nn.Embedding``.

The recurrent state is a list with one dict per layer, ``{"h": (N, H)}`` and for an LSTM also
``"c"`` (the cell's ``states``; a Jordan layer's is its output, ``{"y": (N, H)}``); ``None``
anywhere means zeros. A forward pass hands back the
final state so a stream of segments can carry it on (truncated BPTT).

The ``TBPTT`` driver (``fastbptt.tbptt``) runs one recurrent layer over a stream on its own; the
model gives it what it needs, so a training loop has one path to the cells: ``encode`` (the
layer's input for a chunk of tokens), ``layer_arguments`` and ``layer_grads`` (the layer's
weights, keywords and gradient buffers, named as the cell's functions name them) and
``output_loss`` (the output layer and loss over given hidden states, adding their gradients).

Speed: the kernels run BLAS on one thread per call; the output layer's products run on NumPy's
BLAS, whose OpenBLAS workers, left spinning after each product, take cores from the kernels'
thread (measured in ``benchmarks/RESULTS.md``). ``fastbptt train`` runs NumPy's BLAS on one
thread while it trains (``--blas-threads``); in your own loop use threadpoolctl or
``OPENBLAS_NUM_THREADS=1``.

Typical use::

    model = Model(n_input=V, n_hidden=128, n_output=V, cell="lstm", input="embedding")
    opt = fastbptt.nn.Adam(model.params, lr=2e-3)
    loss, grads, state = model.loss_and_grads(x_ids, y_ids, state=state)
    opt.step(grads)
"""
import contextlib
import inspect
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

import fastbptt
import fastbptt.reference

from .._checkpoint import check_checkpoint, takes_checkpoint
from .._directions import both_directions
from .._validation import check_option
from ..truncation import _count
from .losses import mean_squared_error, softmax_cross_entropy

IMPLS = {"kernels": fastbptt, "reference": fastbptt.reference}   # the names backend= takes
INPUTS = ("embedding", "onehot", "dense")
LOSSES = {"softmax": softmax_cross_entropy, "mse": mean_squared_error}
_FORMAT = "fastbptt.model/1"


def _implementation(impl, backend):
    """The implementation named by ``impl`` or by its alias ``backend`` (default: fastbptt)."""
    if backend is not None:
        if backend not in IMPLS:
            raise ValueError(f"backend must be one of {tuple(IMPLS)}, got {backend!r}")
        if impl is not None and impl is not IMPLS[backend]:
            raise TypeError("pass the implementation once: impl= (backend= is its name, "
                            "'kernels' or 'reference')")
        return IMPLS[backend]
    return fastbptt if impl is None else impl


@dataclass(eq=False)
class ModelCache:
    """What ``Model.forward`` hands to ``Model.backward`` (all time-major inside).

    ``state`` is the final recurrent state (one dict per layer), to pass as the ``state`` of the
    next segment. ``outputs`` is the output layer's result (N, T, O): logits for a softmax model,
    predictions for an MSE one.

    ids : (T, N) token ids (token inputs) or None; x : (T, N, D) the first layer's input;
    top : (T*N, H) the last layer's hidden states; z : (T*N, O) the outputs; layers : each
    layer's cell cache; state : the final state; shape : (T, N).
    """

    ids: np.ndarray
    x: np.ndarray
    top: np.ndarray
    z: np.ndarray
    layers: list
    state: list
    shape: tuple
    lengths: np.ndarray = None      # (N,) steps of each sequence, or None: all T

    @property
    def outputs(self):
        n_steps, n_batch = self.shape
        return self.z.reshape(n_steps, n_batch, self.z.shape[1]).swapaxes(0, 1)


class Model:
    """Input layer, ``n_layers`` stacked recurrent layers of one cell, a time-distributed output.

    Parameters
    ----------
    n_input : vocabulary size V (``input`` 'embedding' or 'onehot') or feature count D ('dense').
    n_hidden : H, hidden units of every recurrent layer.
    n_output : O, classes (``loss='softmax'``) or regression outputs (``loss='mse'``).
    cell : the name of a cell of ``impl.CELLS``: 'rnn', 'lstm', 'gru' or 'jordan'. A Jordan
        layer has O = H outputs, y_t = h_t Wo + bo (phi_y the identity), which feed back into
        its next step and forward to the next layer or the output layer.
    n_layers : stacked recurrent layers; layer l > 0 takes layer l-1's hidden states as input.
    input : 'embedding' (a learned (V, E) table), 'onehot' (one-hot vectors into ``Wx``) or
        'dense' (float features (N, T, D) given by the caller).
    n_embed : E for ``input='embedding'`` (default H).
    loss : 'softmax' (cross-entropy with integer targets) or 'mse' (float targets).
    nonlinearity : the RNN cell's phi, or a Jordan layer's phi_h ('tanh', 'sigmoid', 'relu');
        ignored by cells without that option.
    dtype : float32 or float64, of every parameter and computation.
    bidirectional : each layer also runs a reverse-direction cell and outputs both directions'
        hidden states (2H features), as PyTorch's ``bidirectional=True``. On the kernels the
        two directions run at once, each on its share of the threads, where two or more are
        free and the layer is not small (``fastbptt._directions``); the same results.
    impl : the implementation whose cells the layers run: ``fastbptt`` (compiled, the default),
        ``fastbptt.reference`` (plain NumPy), or anything with a ``CELLS`` registry of the same
        kind.
    backend : the name of ``impl`` instead: 'kernels' or 'reference'.
    seed : seed or ``numpy.random.Generator`` for the initialisation.
    checkpoint : None, 'sqrt' or a positive int k: every recurrent layer's forward keeps only
        the states entering every k-th step, and backward runs it again one segment at a time
        (the cells' ``checkpoint=``): the gate values of T steps are never held, for one more
        forward pass. A setting of the run, like ``impl``: not saved with the model. A cell
        whose forward takes no ``checkpoint=`` is refused with a ValueError.
    """

    checkpoint = None      # (a model built by ``load`` has this until it is set)

    def __init__(self, n_input, n_hidden, n_output, *, cell="lstm", n_layers=1, input="embedding",
                 n_embed=None, loss="softmax", nonlinearity="tanh", dtype=np.float32,
                 impl=None, backend=None, seed=None, checkpoint=None, bidirectional=False):
        self.checkpoint = check_checkpoint(checkpoint)
        self._configure(n_input, n_hidden, n_output, cell=cell, n_layers=n_layers, input=input,
                        n_embed=n_embed, loss=loss, nonlinearity=nonlinearity, dtype=dtype,
                        impl=_implementation(impl, backend), bidirectional=bidirectional)
        self.params = self._init_params(np.random.default_rng(seed))

    def _configure(self, n_input, n_hidden, n_output, *, cell, n_layers, input, n_embed, loss,
                   nonlinearity, dtype, impl, bidirectional=False):
        """Check the settings and set ``config`` and ``impl``: everything but the parameters."""
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        counts = {"n_input": n_input, "n_hidden": n_hidden, "n_output": n_output,
                  "n_layers": n_layers, "n_embed": n_embed if n_embed is not None else n_hidden}
        counts = {name: _count(name, value, 1) for name, value in counts.items()}
        self.config = {
            "n_input": counts["n_input"], "n_hidden": counts["n_hidden"],
            "n_output": counts["n_output"], "cell": cell, "n_layers": counts["n_layers"],
            "input": input, "n_embed": counts["n_embed"], "loss": loss,
            "nonlinearity": nonlinearity, "dtype": dtype.name,
            "bidirectional": _check_bool("bidirectional", bidirectional),
        }
        self.impl = impl
        for name, value in self._options().items():
            check_option(self._cell, name, value)

    # ----------------------------------------------------------------------------- properties
    cell = property(lambda self: self.config["cell"])
    n_layers = property(lambda self: self.config["n_layers"])
    n_hidden = property(lambda self: self.config["n_hidden"])
    n_input = property(lambda self: self.config["n_input"])
    n_output = property(lambda self: self.config["n_output"])
    dtype = property(lambda self: np.dtype(self.config["dtype"]))
    bidirectional = property(lambda self: self.config.get("bidirectional", False))

    @property
    def directions(self):
        """The parameter-name suffix of each direction of a layer: ('',), or ('', '_reverse')
        for a bidirectional model."""
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def n_features(self):
        """The features a layer outputs: H, or 2H for a bidirectional model."""
        return len(self.directions) * self.n_hidden

    @property
    def impl(self):
        """The implementation the layers run on (``fastbptt`` or ``fastbptt.reference``);
        assign another to switch."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        cells = getattr(impl, "CELLS", None)
        if cells is None:
            name = getattr(impl, "__name__", type(impl).__name__)
            raise ValueError(f"impl must be fastbptt, fastbptt.reference or another "
                             f"implementation with a CELLS registry; {name} has none")
        if self.cell not in cells:
            raise ValueError(f"cell must be one of {tuple(cells)}, got {self.cell!r}")
        if self.checkpoint is not None and not takes_checkpoint(cells[self.cell].forward):
            raise ValueError(f"checkpoint: the {self.cell} cell of this implementation does not "
                             "take checkpoint=; pass checkpoint=None")
        if self.bidirectional:
            if "reverse" not in inspect.signature(cells[self.cell].forward).parameters:
                raise ValueError(f"bidirectional: the {self.cell} cell of this implementation "
                                 "has no reverse direction; pass bidirectional=False")
            if self.checkpoint is not None:
                raise ValueError("checkpoint: a bidirectional model's reverse direction runs "
                                 "each sequence from its last step, which checkpoint= does not "
                                 "do; pass checkpoint=None or bidirectional=False")
        self._impl, self._cell = impl, cells[self.cell]

    @property
    def backend(self):
        """The name of ``impl``: 'kernels' or 'reference' (None for another implementation);
        assign a name to switch."""
        return next((name for name, impl in IMPLS.items() if impl is self._impl), None)

    @backend.setter
    def backend(self, value):
        self.impl = _implementation(None, value)

    @property
    def n_params(self):
        """The number of scalar parameters."""
        return sum(p.size for p in self.params.values())

    def __repr__(self):
        c = self.config
        impl = getattr(self.impl, "__name__", type(self.impl).__name__)
        bi = "bidirectional " if self.bidirectional else ""
        return (f"Model({c['input']} {c['n_input']} -> {c['n_layers']} x {bi}{c['cell']} "
                f"{c['n_hidden']} -> {c['loss']} {c['n_output']}, {c['dtype']}, "
                f"{self.n_params} parameters, impl={impl})")

    def _options(self):
        """The cell's options (the RNN's nonlinearity) as its forward takes them; one the
        configuration does not name (a Jordan layer's output_nonlinearity) has its default."""
        config = self.config
        return {name: config.get(name, allowed[0]) for name, allowed in self._cell.options.items()}

    def param_shapes(self):
        """{name: shape} of every parameter (see the module docstring), from ``config`` alone."""
        c, cell = self.config, self._cell
        shapes = {}
        n_in = c["n_input"]
        if c["input"] == "embedding":
            shapes["embed"] = (c["n_input"], c["n_embed"])
            n_in = c["n_embed"]
        for layer in range(c["n_layers"]):
            for suffix in self.directions:
                for name, shape in cell.weight_shapes(n_in if layer == 0 else self.n_features,
                                                      c["n_hidden"]).items():
                    shapes[f"layer{layer}{suffix}.{name}"] = tuple(shape)
        shapes["out.W"] = (self.n_features, c["n_output"])
        shapes["out.b"] = (c["n_output"],)
        return shapes

    def _init_params(self, rng):
        dtype, cell = self.dtype, self._cell
        k = 1.0 / np.sqrt(self.config["n_hidden"])
        params = {}
        for name, shape in self.param_shapes().items():
            if name == "embed":
                params[name] = rng.standard_normal(shape).astype(dtype)
                continue
            w = rng.uniform(-k, k, size=shape).astype(dtype)
            if name.startswith("layer") and name.endswith(".b") and \
                    "bh" not in cell.extra_weights:
                w += rng.uniform(-k, k, size=shape).astype(dtype)   # PyTorch's two biases
            params[name] = w
        return params

    def zeros_like_params(self):
        """A gradient dict: zeros of every parameter's shape and dtype."""
        return {name: np.zeros_like(p) for name, p in self.params.items()}

    def init_state(self, n_batch):
        """Zero recurrent state for ``n_batch`` sequences: one dict per layer (and direction)."""
        n_batch = int(n_batch)
        return [{k: np.zeros((n_batch, self.n_hidden), self.dtype) for k in self._cell.states}
                for _ in range(self._n_cells)]

    @property
    def _n_cells(self):
        """The recurrent cells: one per layer and direction."""
        return self.n_layers * len(self.directions)

    # ----------------------------------------------------------------------------- a layer
    def layer_arguments(self, layer, reverse=False):
        """What recurrent layer ``layer`` passes to its cell's forward after the input and the
        initial state: ``(args, kwargs)``, ``args`` its weights ``(Wx, Wh, b)`` and ``kwargs``
        the cell's extra weights (the GRU's ``bh``) and options (the RNN's ``nonlinearity``).

        The arrays are those of ``params``, not copies: an update in place reaches them. So
        ``TBPTT(...).windows(x, h0, *args, loss_grad, **kwargs)`` runs the layer as ``forward``
        does. ``reverse``: the reverse direction's cell of a bidirectional layer."""
        p, params, cell = f"layer{layer}{'_reverse' if reverse else ''}.", self.params, self._cell
        args = tuple(params[p + name] for name in cell.weights[:3])    # Wx, Wh (Wy), b
        kwargs = {name: params[p + name] for name in cell.extra_weights}
        kwargs.update(self._options())
        return args, kwargs

    def layer_grads(self, grads, layer, reverse=False):
        """The entries of ``grads`` (a dict like ``params``) of recurrent layer ``layer``, named
        as the cell's backward names its weight gradients: {'dWx', 'dWh', 'db'[, 'dbh']}, to
        pass (e.g. as a ``fastbptt.tbptt.WeightGrads``) to add into in place. ``reverse``:
        the reverse direction's cell of a bidirectional layer."""
        p, cell = f"layer{layer}{'_reverse' if reverse else ''}.", self._cell
        return {grad: grads[p + name] for name, grad in zip(cell.weights, cell.weight_grads)}

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
            return [{} for _ in range(self._n_cells)]
        if not isinstance(state, (list, tuple)) or len(state) != self._n_cells:
            per = " and direction" if self.bidirectional else ""
            raise ValueError(f"state must be a list of {self._n_cells} dicts (one per layer{per}), "
                             f"got {type(state).__name__}"
                             + (f" of length {len(state)}" if hasattr(state, "__len__") else ""))
        out = []
        for layer, st in enumerate(state):
            if st is None:
                st = {}
            if not isinstance(st, dict):
                raise ValueError(f"state[{layer}] must be a dict like {{'h': (N, H) array}}, "
                                 f"got {type(st).__name__}")
            extra = set(st) - set(self._cell.states)
            if extra:
                raise ValueError(f"state[{layer}] has unexpected keys {sorted(extra)} "
                                 f"for a {self.cell} model")
            out.append(st)
        return out

    def _encode(self, inputs, time_major):
        """(x, ids): the first layer's input for checked ``inputs``, (T, N, D) if
        ``time_major`` else (N, T, D), and the token ids in the same layout (None if dense)."""
        c = self.config
        if c["input"] == "dense":
            return (inputs.swapaxes(0, 1) if time_major else inputs), None
        ids = np.ascontiguousarray(inputs.T) if time_major else inputs
        if c["input"] == "embedding":
            return self.params["embed"][ids], ids
        x = np.zeros(ids.shape + (c["n_input"],), self.dtype)
        np.put_along_axis(x, ids[..., None], 1, axis=2)
        return x, ids

    def encode(self, inputs):
        """The first recurrent layer's input for ``inputs`` (as ``forward`` takes them):
        (N, T, D) one-hot vectors, embedding rows or the dense features themselves.

        With the embedding, its gradient is ``forward``/``backward``'s business: a driver
        given this array (``TBPTT``) trains the layers above it only."""
        return self._encode(self._check_inputs(inputs), time_major=False)[0]

    def forward(self, inputs, state=None, *, lengths=None):
        """Run the model over all steps.

        Parameters
        ----------
        inputs : (N, T) integer ids (``input`` 'embedding'/'onehot') or (N, T, D) features.
        state : initial recurrent state (see ``init_state``) or None (zeros).
        lengths : (N,) integer steps of each sequence (0 .. T), the rest padding, or None (all
            T): each layer runs each sequence over its own steps only (the cells' ``lengths=``),
            the outputs at padded steps are those of zero hidden states, the final state is each
            sequence's after its last step, and ``loss`` counts the real steps only.

        Returns
        -------
        outputs : (N, T, O) logits (softmax model) or predictions (MSE model), a view.
        cache : for ``loss``/``backward``; ``cache.state`` is the final state.
        """
        cell = self._cell
        inputs = self._check_inputs(inputs)
        n_batch, n_steps = inputs.shape[:2]
        if n_steps == 0:
            raise ValueError(f"inputs must have at least one time step, got shape {inputs.shape}")
        states = self._check_state(state, n_batch)
        x, ids = self._encode(inputs, time_major=True)               # (T, N, D)
        caches, final = [], []
        h = x
        by_length = {} if lengths is None else {"lengths": lengths}
        for layer in range(self.n_layers):
            def run(direction, layer=layer, h=h):
                st = states[layer * len(self.directions) + direction]
                args, kwargs = self.layer_arguments(layer, reverse=bool(direction))
                kwargs.update((name, st.get(s)) for s, name in zip(cell.states[1:],
                                                                    cell.extra_states))
                if direction:
                    kwargs["reverse"] = True
                if self.checkpoint is not None:
                    kwargs["checkpoint"] = self.checkpoint
                return cell.forward(h, st.get(cell.states[0]), *args, time_major=True,
                                    **by_length, **kwargs)
            if self.bidirectional:      # the two at once where threads are free (_directions)
                runs = both_directions(run, self._work(n_steps, n_batch, layer))
            else:
                runs = (run(0),)
            for _, cache in runs:
                caches.append(cache)
                final.append({s: getattr(cache, s + "T") for s in cell.states})
            if lengths is not None:
                by_length["lengths"] = caches[-1].lengths       # checked once
            h = runs[0][0] if len(runs) == 1 else np.concatenate([r[0] for r in runs], axis=2)
        top = h.reshape(n_steps * n_batch, self.n_features)         # (T*N, H or 2H)
        z = self._output(top)
        return (z.reshape(n_steps, n_batch, z.shape[1]).swapaxes(0, 1),
                ModelCache(ids=ids, x=x, top=top, z=z, layers=caches, state=final,
                           shape=(n_steps, n_batch), lengths=by_length.get("lengths")))

    def _work(self, n_steps, n_batch, layer):
        """The multiply-adds of the largest product of one direction of ``layer`` (as
        ``fastbptt._blas_threads.largest_product`` counts them), which decides whether its two
        directions run at once (``fastbptt._directions``); 0 for an implementation other than
        the kernels, whose threads are not fastbptt's."""
        if self._impl is not fastbptt:
            return 0
        n_input, n_cols = self.params[f"layer{layer}.Wx"].shape
        return n_steps * n_batch * n_cols * max(n_input, self.n_hidden)

    # ----------------------------------------------------------------------------- output
    def _output(self, top):
        """The output layer on rows of hidden states (M, H): (M, O), one GEMM."""
        z = top @ self.params["out.W"]
        z += self.params["out.b"]
        return z

    def _output_backward(self, top, dz, grads):
        """Add the output layer's gradients for ``dz`` (M, O) into ``grads``; dL/dtop (M, H)."""
        grads["out.W"] += top.T @ dz                                 # (H, O) = (M, H)' (M, O)
        grads["out.b"] += dz.sum(axis=0)
        return dz @ self.params["out.W"].T

    def _check_targets(self, targets, shape):
        """``targets`` for outputs whose leading axes are ``shape`` (N, T)."""
        n_out = self.config["n_output"]
        targets = np.asarray(targets)
        if self.config["loss"] == "softmax":
            if targets.shape != shape:
                raise ValueError(f"targets must be class ids of shape (N, T) = "
                                 f"{shape}, got {targets.shape}")
            if targets.dtype.kind not in "iu":
                raise TypeError(f"targets must be integer class ids, got dtype {targets.dtype}")
            if targets.size and (targets.min() < 0 or targets.max() >= n_out):
                raise ValueError(f"targets must be class ids in [0, {n_out}), "
                                 f"got values in [{targets.min()}, {targets.max()}]")
        else:
            if targets.shape != shape + (n_out,):
                raise ValueError(f"targets must have shape (N, T, O) = "
                                 f"{shape + (n_out,)}, got {targets.shape}")
            if targets.dtype != self.dtype:
                raise TypeError(f"targets have dtype {targets.dtype} but the model is "
                                f"{self.dtype}")
        return targets

    def _check_mask(self, mask, shape):
        """``mask`` (N, T) as float64 weights, or None."""
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.shape != shape:
            raise ValueError(f"mask must have shape (N, T) = {shape}, got {m.shape}")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask must be bool or real, got dtype {m.dtype}")
        m = m.astype(np.float64)
        if not np.isfinite(m).all() or (m < 0).any():
            raise ValueError("mask must be finite and non-negative")
        return m

    def _loss_rows(self, z, targets, weights):
        """The loss of outputs ``z`` (M, O) against targets and weights in the same rows."""
        return LOSSES[self.config["loss"]](z, targets, weights)

    def loss(self, cache, targets, mask=None):
        """The loss of a forward pass and its gradient with respect to the outputs.

        Parameters
        ----------
        cache : from ``forward``.
        targets : (N, T) integer class ids (softmax) or (N, T, O) floats (MSE).
        mask : (N, T) weights, bool or float, or None (all ones). A step with weight 0 adds
            nothing to the loss; the loss is the weighted mean over steps (and over the O
            outputs for MSE): ``sum(mask * l) / sum(mask)``. After a forward with ``lengths``,
            the padded steps have weight 0 as well (``lengths_mask``).

        Returns
        -------
        loss : float.
        dz : (T*N, O) time-major gradient of the loss with respect to the outputs, for
            ``backward``.
        """
        n_steps, n_batch = cache.shape
        targets = self._check_targets(targets, (n_batch, n_steps))
        weights = self._check_mask(mask, (n_batch, n_steps))
        if cache.lengths is not None:
            real = lengths_mask(cache.lengths, n_steps)
            weights = real if weights is None else weights * real
        if weights is not None:                                      # time-major rows
            weights = np.ascontiguousarray(weights.T).reshape(-1)
        rows = np.ascontiguousarray(targets.swapaxes(0, 1))
        rows = rows.reshape(n_steps * n_batch, *targets.shape[2:])
        return self._loss_rows(cache.z, rows, weights)

    def output_loss(self, h, targets, grads, *, mask=None):
        """The output layer and the loss on given hidden states of the last recurrent layer,
        adding the output layer's gradients into ``grads``.

        Parameters
        ----------
        h : (N, T, H) hidden states (or time-major (T, N, H)), e.g. those a ``TBPTT`` driver
            hands to its ``loss_grad``.
        targets : as for ``loss``, with the leading axes of h: (N, T) class ids (softmax) or
            (N, T, O) floats (MSE).
        grads : a dict like ``params`` (at least ``'out.W'``, ``'out.b'``) to add into.
        mask : weights with the leading axes of h, as for ``loss``, or None.

        Returns
        -------
        loss : float, the (weighted) mean over the steps of h, as ``loss`` would give.
        dh : dL/dh in h's shape: what a ``loss_grad`` returns to the driver.
        """
        h = np.asarray(h)
        if h.ndim != 3 or h.shape[2] != self.n_features:
            raise ValueError(f"h must have shape (N, T, H) with H = {self.n_features}, "
                             f"got {h.shape}")
        if h.dtype != self.dtype:
            raise TypeError(f"h has dtype {h.dtype} but the model is {self.dtype}")
        shape = h.shape[:2]
        targets = self._check_targets(targets, shape)
        weights = self._check_mask(mask, shape)
        top = h.reshape(-1, self.n_features)
        loss, dz = self._loss_rows(self._output(top),
                                   targets.reshape(top.shape[0], *targets.shape[2:]),
                                   None if weights is None else weights.reshape(-1))
        return loss, self._output_backward(top, dz, grads).reshape(h.shape)

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
        h_grad_norms : a list with one entry per layer (and direction), each a (T,) array of
            the model's dtype to receive ||dL/dh_t|| of that cell, or None.
        overwrite_cache : passed to every layer's backward: True lets the LSTM's and GRU's
            backward use the cache's gate values as workspace, consuming the cache (a second
            backward on it raises a ValueError).

        Returns
        -------
        grads : the gradient dict.
        dstate0 : gradient with respect to the initial state, one dict per layer.
        dx : (N, T, D) gradient with respect to dense inputs (None for token inputs).
        """
        c, cell = self.config, self._cell
        n_steps, n_batch = cache.shape
        if grads is None:
            grads = self.zeros_like_params()
        else:
            missing = set(self.params) - set(grads)
            if missing:
                raise ValueError(f"grads is missing {sorted(missing)}")
        dstate = self._check_state(dstate, n_batch)
        if h_grad_norms is None:
            h_grad_norms = [None] * self._n_cells
        elif len(h_grad_norms) != self._n_cells:
            raise ValueError(f"h_grad_norms must have one entry per layer and direction "
                             f"({self._n_cells})")
        if dz.shape != cache.z.shape:
            raise ValueError(f"dz must have shape (T*N, O) = {cache.z.shape}, got {dz.shape}")

        dh = self._output_backward(cache.top, dz, grads).reshape(n_steps, n_batch,
                                                                 self.n_features)
        dstate0 = [None] * self._n_cells
        n_dirs, H = len(self.directions), self.n_hidden
        for layer in reversed(range(c["n_layers"])):
            def run(direction, layer=layer, dh=dh):
                k = layer * n_dirs + direction
                carried = {f"d{s}T": dstate[k].get(s) for s in cell.states}
                dh_dir = dh if n_dirs == 1 else dh[..., direction * H:(direction + 1) * H]
                return cell.backward(dh_dir, cache.layers[k], xi=xi,
                                     grads=SimpleNamespace(**self.layer_grads(
                                         grads, layer, reverse=bool(direction))),
                                     h_grad_norms=h_grad_norms[k],
                                     overwrite_cache=overwrite_cache, **carried)
            if n_dirs == 2:
                runs = both_directions(run, self._work(n_steps, n_batch, layer))
            else:
                runs = (run(0),)
            for direction, res in enumerate(runs):
                dstate0[layer * n_dirs + direction] = {s: getattr(res, f"d{s}0")
                                                       for s in cell.states}
            dh = runs[0].dx if n_dirs == 1 else runs[0].dx + runs[1].dx    # (T, N, D_layer)
        dx = None
        if c["input"] == "embedding":
            np.add.at(grads["embed"], cache.ids.reshape(-1),
                      dh.reshape(n_steps * n_batch, dh.shape[-1]))
        elif c["input"] == "dense":
            dx = dh.swapaxes(0, 1)
        return grads, dstate0, dx

    def loss_and_grads(self, inputs, targets, *, state=None, mask=None, xi=None, grads=None,
                       dstate=None, lengths=None):
        """Forward, loss and backward in one call: ``(loss, grads, final_state)``.

        ``grads`` (a dict like ``params``) is overwritten with the gradient if given, else
        allocated. The final state is detached: pass it as ``state`` of the next segment.
        ``lengths`` as for ``forward``.
        """
        _, cache = self.forward(inputs, state, lengths=lengths)
        loss, dz = self.loss(cache, targets, mask)
        if grads is not None:
            for g in grads.values():
                g[...] = 0
        # the cache is this call's own: backward may use its gate values as workspace
        grads, _, _ = self.backward(dz, cache, grads=grads, xi=xi, dstate=dstate,
                                    overwrite_cache=True)
        return loss, grads, cache.state

    def evaluate(self, inputs, targets, *, state=None, mask=None, lengths=None):
        """The loss without gradients: ``(loss, final_state)``."""
        _, cache = self.forward(inputs, state, lengths=lengths)
        loss, _ = self.loss(cache, targets, mask)
        return loss, cache.state

    # ----------------------------------------------------------------------------- sampling
    def sample(self, prefix, n, *, rng=None, temperature=1.0, state=None):
        """Generate ``n`` token ids after the ids in ``prefix`` (a softmax model on tokens).

        The prefix primes the state in one forward pass; then each token is drawn from
        softmax(logits / temperature) and fed back. Any positive temperature works: towards 0
        the draw becomes the most likely token. Returns an int64 array of length ``n``.
        """
        c = self.config
        if c["loss"] != "softmax" or c["input"] == "dense" or c["n_input"] != c["n_output"]:
            raise ValueError("sample needs a softmax model on token inputs with "
                             "n_input == n_output")
        if self.bidirectional:
            raise ValueError("sample generates left to right; a bidirectional model reads "
                             "each sequence from both ends")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        temperature = float(temperature)
        rng = np.random.default_rng(rng)
        prefix = np.asarray(prefix, dtype=np.int64).reshape(1, -1)
        if prefix.size == 0:
            prefix = np.zeros((1, 1), np.int64)
        out = np.empty(int(n), np.int64)
        logits, cache = self.forward(prefix, state)
        for i in range(out.size):
            # shifted before the division: a tiny temperature gives -inf, not inf - inf, so
            # the draw tends to the most likely token instead of failing
            z = logits[0, -1].astype(np.float64)
            with np.errstate(over="ignore"):
                z = (z - z.max()) / temperature
            p = np.exp(z)
            p /= p.sum()
            out[i] = rng.choice(p.size, p=p)
            logits, cache = self.forward(out[i:i + 1].reshape(1, 1), cache.state)
        return out

    # ----------------------------------------------------------------------------- save/load
    def save(self, path, *, metadata=None):
        """Write the parameters and the configuration to ``path`` (.npz, no pickles).

        ``metadata`` is any JSON-serialisable dict kept beside them (e.g. a vocabulary);
        ``Model.load`` returns it as ``model.metadata``. The file is written under a temporary
        name of its own in the same folder (so that saves from several threads or processes
        never share one) and renamed over ``path`` once complete: an interrupted save never
        leaves a broken file, and a failed one (``path`` a folder, a full disk, Ctrl-C) removes
        its temporary file before the error goes on.
        """
        path = os.fspath(path)
        header = {"format": _FORMAT, "config": self.config,
                  "metadata": metadata if metadata is not None else getattr(self, "metadata", {})}
        arrays = {name: p for name, p in self.params.items()}
        arrays["__header__"] = np.array(json.dumps(header))
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "xb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path, *, impl=None, backend=None):
        """A model saved by ``save``, on the implementation ``impl`` (or ``backend``, its name;
        default fastbptt); ``model.metadata`` holds what was saved beside it.

        A file that is not such a model (empty, cut short, text, a single ``.npy`` array, a
        header that is not a JSON object, a configuration without all its keys, arrays that do
        not fit it) raises one ``ValueError`` saying why. The stored arrays' names and shapes
        are compared with the configuration's before anything is built, so a small file that
        claims a huge model costs nothing."""
        impl = _implementation(impl, backend)
        path = os.fspath(path)
        header, arrays = _read_model_file(path)
        config = header["config"]
        model = cls.__new__(cls)
        try:
            model._configure(**config, impl=impl)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a fastbptt model: its configuration is not "
                             f"valid ({err})") from None
        shapes = model.param_shapes()
        if set(arrays) != set(shapes):
            raise ValueError(f"{path} is not a fastbptt model: parameters {sorted(arrays)} do "
                             f"not match the configuration's {sorted(shapes)}")
        for name, shape in shapes.items():
            value = arrays[name]
            if value.shape != shape or value.dtype != model.dtype:
                raise ValueError(f"{path} is not a fastbptt model: {name} has {value.dtype} "
                                 f"{value.shape}, the configuration's is {model.dtype} {shape}")
        model.params = {name: np.ascontiguousarray(arrays[name]) for name in shapes}
        model.metadata = header.get("metadata", {})
        return model


_CONFIG_KEYS = ("n_input", "n_hidden", "n_output", "cell", "n_layers", "input", "n_embed", "loss",
                "nonlinearity", "dtype")


def lengths_mask(lengths, n_steps):
    """(N, T) float64: 1 at the real steps of sequences of ``lengths`` (t < lengths[n]), 0 at
    the padding; the weights ``Model.loss`` takes as its mask."""
    return (np.arange(n_steps) < np.asarray(lengths)[:, None]).astype(np.float64)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _read_model_file(path):
    """(header, {name: array}) of a file written by ``Model.save``; a ValueError saying why
    for anything else (never a suggestion to unpickle). A missing or unreadable file raises
    its OSError."""
    def bad(why):
        return ValueError(f"{path} is not a fastbptt model: {why}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except EOFError:
        raise bad("the file is empty") from None
    except (ValueError, zipfile.BadZipFile) as err:
        raise bad("it is not an .npz archive" + (" (it is cut short or damaged)"
                  if isinstance(err, zipfile.BadZipFile) else "")) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise bad("it holds a single array (.npy), not an .npz archive of parameters")
    try:
        with loaded as f:
            if "__header__" not in f.files:
                text, arrays = None, {}
            else:
                text = f["__header__"]
                arrays = {k: f[k] for k in f.files if k != "__header__"}
    except ValueError:
        raise bad("it holds Python objects (only arrays of numbers are read)") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as err:
        raise bad(f"the archive is damaged ({type(err).__name__}: {err})") from None
    if text is None:
        raise bad("it has no __header__")
    try:
        header = json.loads(str(text)) if text.dtype.kind == "U" and text.ndim == 0 else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise bad("its __header__ is not a JSON object")
    if header.get("format") != _FORMAT:
        raise bad(f"unknown model format {header.get('format')!r}")
    config = header.get("config")
    if not isinstance(config, dict):
        raise bad("its header has no configuration (a JSON object under 'config')")
    missing = [key for key in _CONFIG_KEYS if key not in config]
    if missing:
        raise bad(f"its configuration lacks {', '.join(missing)}")
    return header, arrays
