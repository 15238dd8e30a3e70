"""PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` weights <-> fastbptt weights, without torch.

This module never imports torch: it works on the *arrays* of a state dict. Give it NumPy arrays::

    sd = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    w = from_state_dict("lstm", sd)             # {"Wx": ..., "Wh": ..., "b": ...}
    h, cache = fastbptt.lstm_forward(x, h0, **w, c0=c0, time_major=not module.batch_first)

and back::

    sd = to_state_dict("lstm", w["Wx"], w["Wh"], w["b"])
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})

(CPU tensors are also accepted in place of arrays: anything ``np.asarray`` takes.)

The mapping, for one layer ``k`` (``_l{k}``, and ``_l{k}_reverse`` for the reverse direction of a
bidirectional module)::

    Wx = weight_ih_l{k}.T    (D, G*H)       Wh = weight_hh_l{k}.T    (H, G*H)
    RNN, LSTM:  b = bias_ih_l{k} + bias_hh_l{k}                       (G*H,)
    GRU:        b = bias_ih_l{k},  bh = bias_hh_l{k}                  (3*H,)

The gate blocks are already in the same order on both sides (LSTM i, f, g, o; GRU r, z, n).
The RNN/LSTM hidden bias is summed into ``b`` because the cell only ever sees the sum; the GRU
keeps both because its hidden bias sits inside ``r * (h Wh_n + bh_n)``: the cell's record
(``fastbptt.CELLS``) lists ``bh`` among its extra weights.

What the state dict does not say, you pass to fastbptt yourself: ``nonlinearity`` of an
``nn.RNN`` ('tanh' or 'relu'), and ``time_major = not batch_first``.

What is covered
---------------
- One layer and one direction at a time: fastbptt runs a single cell. A stacked
  (``num_layers > 1``) or bidirectional module is several cells; pick each with ``layer=`` and
  ``reverse=`` and chain them yourself (the reverse direction runs the cell with
  ``reverse=True``). A state dict holding more than layer 0's forward cell must say which one it
  wants (``layer=``), so that half a model is never converted silently.
- All cells at once, ``_reverse`` ones included: ``layers_from_state_dict`` gives the recurrent
  parameters of a ``fastbptt.nn.Model`` with as many layers (``bidirectional=True`` where the
  module is).
- ``bias=False`` modules: their state dict has no bias arrays; ``from_state_dict`` returns zero
  biases, and ``to_state_dict(..., bias=False)`` writes none (the biases must then be zero).
- ``nn.LSTM(proj_size > 0)`` (``weight_hr_l{k}``) is not supported: a ValueError says so.
- A state dict of a larger model (keys such as ``"encoder.weight_ih_l0"``): pass
  ``prefix="encoder."``.

Data types: float32 or float64, one per state dict, kept as it is (torch modules are float32
unless made ``.double()``); the arrays returned are fresh C-contiguous copies, so that later
changes to the torch module do not reach them, nor the other way round.
"""
import numpy as np

from .. import CELLS

__all__ = ["from_state_dict", "to_state_dict", "grads_to_state_dict", "state_dict_keys",
           "layers_from_state_dict"]

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _either(words):
    """'a', 'a or b', 'a, b or c'."""
    return " or ".join(filter(None, [", ".join(words[:-1]), words[-1]]))


def _check_cell(cell):
    """The record of ``cell`` (a name, case-insensitive) in ``fastbptt.CELLS``."""
    names = [name for name, record in CELLS.items() if not record.output_feedback]
    if not isinstance(cell, str) or cell.lower() not in names:
        raise ValueError(f"cell must be {_either([repr(n) for n in names])} (the torch module "
                         f"{_either(['nn.' + n.upper() for n in names])}), got {cell!r}")
    return CELLS[cell.lower()]


def _hidden_bias(record):
    """Whether the cell keeps torch's hidden bias apart, as ``bh`` (the GRU), rather than
    summed into ``b``."""
    return "bh" in record.extra_weights


def _suffix(layer, reverse):
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer, got {layer!r}")
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse must be True or False, got {reverse!r}")
    return f"_l{int(layer)}" + ("_reverse" if reverse else "")


def _check_prefix(prefix):
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string such as 'rnn.', got {prefix!r}")
    return prefix


def state_dict_keys(cell, *, layer=0, reverse=False, bias=True, prefix=""):
    """The state-dict keys of one cell of a torch module, in the order weight_ih, weight_hh,
    bias_ih, bias_hh (without the biases if ``bias=False``)."""
    _check_cell(cell)
    suffix = _suffix(layer, reverse)
    names = _NAMES if bias else _NAMES[:2]
    return [f"{_check_prefix(prefix)}{name}{suffix}" for name in names]


def _as_array(key, value):
    """A state-dict value as a float32/float64 NumPy array; TypeError naming the key if not."""
    try:
        arr = np.asarray(value)
    except Exception as exc:            # e.g. a CUDA tensor, a bfloat16 tensor, a tensor with grad
        raise TypeError(f"state_dict[{key!r}] cannot be read as a NumPy array ({exc}); "
                        "pass NumPy arrays: {k: v.detach().cpu().numpy() for k, v in "
                        "module.state_dict().items()}") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"state_dict[{key!r}] must be a float32 or float64 array, got dtype "
                        f"{arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"state_dict[{key!r}] contains NaN or infinity")
    return arr


def _cells_in(state_dict, prefix):
    """The (layer, reverse) cells whose weight_ih a state dict holds."""
    cells = set()
    for key in state_dict:
        if not (isinstance(key, str) and key.startswith(prefix + "weight_ih_l")):
            continue
        rest = key[len(prefix + "weight_ih_l"):]
        reverse = rest.endswith("_reverse")
        digits = rest[:-len("_reverse")] if reverse else rest
        if digits.isdigit():
            cells.add((int(digits), reverse))
    return sorted(cells)


def _describe(cells):
    return ", ".join(f"layer={k}" + (" reverse=True" if r else "") for k, r in cells)


def from_state_dict(cell, state_dict, *, layer=None, reverse=False, prefix=""):
    """fastbptt weights of one cell of a torch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` state dict.

    Parameters
    ----------
    cell : 'rnn', 'lstm' or 'gru' (case-insensitive): which torch module the state dict is of.
    state_dict : mapping of key -> NumPy array, as ``{k: v.detach().cpu().numpy() for k, v in
        module.state_dict().items()}``.
    layer : which layer to convert. None (the default) means layer 0, and is only accepted when
        the state dict holds a single cell (one layer, one direction); otherwise say which.
    reverse : the reverse direction of a bidirectional module.
    prefix : prepended to every key, e.g. ``"rnn."`` for a submodule of a larger model.

    Returns
    -------
    dict with ``Wx`` (D, G*H), ``Wh`` (H, G*H), ``b`` (G*H,), and for a GRU ``bh`` (3*H,): new
    C-contiguous arrays of the state dict's dtype, to pass as ``<cell>_forward(x, h0, **w)``.
    A module made with ``bias=False`` gives zero ``b`` (and ``bh``).

    Raises
    ------
    TypeError for a state dict that is not a mapping or arrays that are not float32/float64;
    ValueError for missing keys, wrong shapes (a hint is given when the shapes fit another
    cell), mixed dtypes, an LSTM with ``proj_size``, or several cells and no ``layer=``.
    """
    record = _check_cell(cell)
    cell = record.name
    prefix = _check_prefix(prefix)
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"state_dict must be a mapping of key -> array (module.state_dict()), "
                        f"got {type(state_dict).__name__}")
    if layer is None:
        cells = _cells_in(state_dict, prefix)
        if len(cells) > 1:
            raise ValueError(
                f"state_dict holds {len(cells)} cells ({_describe(cells)}) of a stacked or "
                "bidirectional module; fastbptt runs one cell at a time: pass layer= (and "
                "reverse=True for the reverse direction) to convert one of them")
        layer = 0
    suffix = _suffix(layer, reverse)
    w_ih, w_hh, b_ih, b_hh = (f"{prefix}{name}{suffix}" for name in _NAMES)

    def missing(key):
        hint = ""
        matches = [k for k in state_dict if isinstance(k, str) and k.endswith(key[len(prefix):])]
        cells = _cells_in(state_dict, prefix)
        if matches and not any(k == key for k in matches):
            found = matches[0]
            hint = f"; found {found!r}: pass prefix={found[:-len(key) + len(prefix)]!r}"
        elif cells:
            hint = f"; the state dict has {_describe(cells)}"
        keys = sorted(map(str, state_dict))
        shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} keys)" if len(keys) > 12 else "")
        return ValueError(f"state_dict has no {key!r}{hint} (keys: {shown or 'none'})")

    for key in (w_ih, w_hh):
        if key not in state_dict:
            raise missing(key)
    if f"{prefix}weight_hr{suffix}" in state_dict:
        raise ValueError(f"state_dict has {prefix}weight_hr{suffix}: an nn.LSTM with "
                         "proj_size > 0 is not supported by fastbptt (its hidden state is "
                         "projected before the recurrence)")
    W_ih = _as_array(w_ih, state_dict[w_ih])
    W_hh = _as_array(w_hh, state_dict[w_hh])
    n_gates = record.n_gates
    g = "" if n_gates == 1 else f"{n_gates}*"
    if W_hh.ndim != 2 or W_hh.shape[1] == 0 or W_hh.shape[0] != n_gates * W_hh.shape[1]:
        hint = ""
        if W_hh.ndim == 2 and W_hh.shape[1]:
            others = [c.name for c in CELLS.values()
                      if c is not record and W_hh.shape[0] == c.n_gates * W_hh.shape[1]]
            if others:
                hint = f" (the shape of cell={others[0]!r}: is the state dict of another module?)"
        raise ValueError(f"{w_hh} must have shape ({g}H, H) for cell={cell!r}, got "
                         f"{W_hh.shape}{hint}")
    n_hidden = W_hh.shape[1]
    gh = n_gates * n_hidden
    if W_ih.ndim != 2 or W_ih.shape[0] != gh or W_ih.shape[1] == 0:
        raise ValueError(f"{w_ih} must have shape ({g}H, D) = ({gh}, D) with D >= 1, "
                         f"got {W_ih.shape}")
    dtype = W_ih.dtype
    arrays = {w_ih: W_ih, w_hh: W_hh}
    has_bias = [key in state_dict for key in (b_ih, b_hh)]
    if any(has_bias) and not all(has_bias):
        raise missing(b_hh if has_bias[0] else b_ih)
    if all(has_bias):
        for key in (b_ih, b_hh):
            arrays[key] = _as_array(key, state_dict[key])
            if arrays[key].shape != (gh,):
                raise ValueError(f"{key} must have shape ({g}H,) = ({gh},), "
                                 f"got {arrays[key].shape}")
    else:
        arrays[b_ih] = arrays[b_hh] = np.zeros(gh, dtype)
    for key, arr in arrays.items():
        if arr.dtype != dtype:
            raise TypeError(f"{key} has dtype {arr.dtype} but {w_ih} has dtype {dtype}; a "
                             "state dict must be in one float dtype")

    out = {"Wx": np.ascontiguousarray(W_ih.T), "Wh": np.ascontiguousarray(W_hh.T)}
    if _hidden_bias(record):
        out["b"] = np.array(arrays[b_ih], order="C")
        out["bh"] = np.array(arrays[b_hh], order="C")
    else:
        out["b"] = arrays[b_ih] + arrays[b_hh]
    return out


def _check_weight(name, value, shape, expected, dtype=None):
    arr = np.asarray(value)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but Wh has dtype {dtype}; pass all "
                        "arrays in one float dtype")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {expected} = {shape}, got {arr.shape}")
    return arr


def _check_weights(record, Wx, Wh, b, bh, names):
    cell, n_gates = record.name, record.n_gates
    g = "" if n_gates == 1 else f"{n_gates}*"
    nWx, nWh, nb, nbh = names
    Wh = _check_weight(nWh, Wh, None, None)
    if Wh.ndim != 2 or Wh.shape[0] == 0 or Wh.shape[1] != n_gates * Wh.shape[0]:
        raise ValueError(f"{nWh} must have shape (H, {g}H) with H >= 1 for cell={cell!r}, "
                         f"got {Wh.shape}")
    gh = Wh.shape[1]
    Wx = _check_weight(nWx, Wx, None, None, Wh.dtype)
    if Wx.ndim != 2 or Wx.shape[0] == 0 or Wx.shape[1] != gh:
        raise ValueError(f"{nWx} must have shape (D, {g}H) = (D, {gh}) with D >= 1, "
                         f"got {Wx.shape}")
    b = _check_weight(nb, b, (gh,), f"({g}H,)", Wh.dtype)
    if _hidden_bias(record):
        bh = (np.zeros(gh, Wh.dtype) if bh is None else
              _check_weight(nbh, bh, (gh,), f"({g}H,)", Wh.dtype))
    elif bh is not None:
        with_bh = [c.name for c in CELLS.values() if _hidden_bias(c)]
        raise TypeError(f"{nbh} is only for cell={_either([repr(n) for n in with_bh])}, "
                        f"not {cell!r}")
    return Wx, Wh, b, bh


def to_state_dict(cell, Wx, Wh, b, bh=None, *, layer=0, reverse=False, bias=True, prefix=""):
    """The torch state-dict arrays of one cell from fastbptt weights.

    Parameters
    ----------
    cell : 'rnn', 'lstm' or 'gru'.
    Wx : (D, G*H), Wh : (H, G*H), b : (G*H,) arrays, one float dtype.
    bh : (3*H,) hidden bias of a GRU (None: zeros); must be None for 'rnn' and 'lstm'.
    layer, reverse, prefix : which keys to write (``{prefix}weight_ih_l{layer}[_reverse]``...).
    bias : False for a torch module made with ``bias=False``: no bias keys are written, and
        ``b`` (and ``bh``) must be all zeros, since such a module cannot hold them.

    Returns
    -------
    dict of ``weight_ih_l{k}`` (G*H, D), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (G*H,): new C-contiguous arrays of the weights' dtype. For 'rnn' and 'lstm'
    torch has two biases where fastbptt has their sum: all of ``b`` is written to ``bias_ih``
    and ``bias_hh`` is zeros (any split with the same sum gives the same module).
    Load with ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``
    (``strict=False`` when writing one cell of a stacked module).
    """
    record = _check_cell(cell)
    cell = record.name
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    Wx, Wh, b, bh = _check_weights(record, Wx, Wh, b, bh, ("Wx", "Wh", "b", "bh"))
    keys = state_dict_keys(cell, layer=layer, reverse=reverse, bias=True, prefix=prefix)
    out = {keys[0]: np.ascontiguousarray(Wx.T), keys[1]: np.ascontiguousarray(Wh.T)}
    hidden_bias = bh if _hidden_bias(record) else np.zeros_like(b)
    if bias:
        out[keys[2]] = np.array(b, order="C")
        out[keys[3]] = np.array(hidden_bias, order="C")
    elif b.any() or hidden_bias.any():
        raise ValueError("bias=False: a torch module without bias cannot hold a nonzero "
                         f"{'b or bh' if _hidden_bias(record) else 'b'}; make it with bias=True")
    return out


def grads_to_state_dict(cell, grads, *, layer=0, reverse=False, bias=True, prefix=""):
    """The gradients of the torch parameters of one cell, from fastbptt's weight gradients.

    ``grads`` is what ``<cell>_backward`` returned (a ``Grads``, or anything with ``dWx``,
    ``dWh``, ``db``, and ``dbh`` for a GRU). Unlike ``to_state_dict``, the gradient of the sum
    ``b = bias_ih + bias_hh`` reaches both torch biases: for 'rnn' and 'lstm' both
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` get ``db``; for 'gru', ``db`` and ``dbh``.
    The result has the keys of ``module.named_parameters()`` for that cell, each compared with
    (or assigned to) that parameter's ``.grad``.
    """
    record = _check_cell(cell)
    cell = record.name
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    fields = record.weight_grads
    for name in fields:
        if not hasattr(grads, name):
            raise TypeError(f"grads must be the result of {cell}_backward (with "
                            f"{', '.join(fields)}), got {type(grads).__name__} without {name}")
    dWx, dWh, db, dbh = _check_weights(
        record, grads.dWx, grads.dWh, grads.db, grads.dbh if _hidden_bias(record) else None,
        ("grads.dWx", "grads.dWh", "grads.db", "grads.dbh"))
    keys = state_dict_keys(cell, layer=layer, reverse=reverse, bias=bias, prefix=prefix)
    out = {keys[0]: np.ascontiguousarray(dWx.T), keys[1]: np.ascontiguousarray(dWh.T)}
    if bias:
        out[keys[2]] = np.array(db, order="C")
        out[keys[3]] = np.array(dbh if _hidden_bias(record) else db, order="C")
    return out


def layers_from_state_dict(cell, state_dict, *, prefix=""):
    """Every cell of a torch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` state dict, stacked and
    bidirectional ones included, as the recurrent parameters of a ``fastbptt.nn.Model``:
    {'layer{l}.Wx': ..., 'layer{l}.Wh': ..., 'layer{l}.b': ...(, '.bh'), and
    'layer{l}_reverse.Wx'... for the reverse direction}. The state dict must hold layers
    0 .. L-1, each with the same directions (a ValueError otherwise)."""
    _check_cell(cell)
    prefix = _check_prefix(prefix)
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"state_dict must be a mapping of key -> array (module.state_dict()), "
                        f"got {type(state_dict).__name__}")
    cells = _cells_in(state_dict, prefix)
    if not cells:
        raise ValueError(f"state_dict has no {prefix}weight_ih_l0: not the state dict of a "
                         "torch recurrent module (pass prefix= for a submodule)")
    n_layers = 1 + max(layer for layer, _ in cells)
    directions = (False, True) if (0, True) in cells else (False,)
    expected = [(layer, reverse) for layer in range(n_layers) for reverse in directions]
    if cells != expected:
        raise ValueError(f"state_dict holds the cells {_describe(cells)}; a model needs "
                         f"{_describe(expected)}")
    params = {}
    for layer, reverse in cells:
        weights = from_state_dict(cell, state_dict, layer=layer, reverse=reverse, prefix=prefix)
        name = f"layer{layer}{'_reverse' if reverse else ''}."
        params.update((name + key, value) for key, value in weights.items())
    return params
