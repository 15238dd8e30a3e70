"""PyTorch modules on fastbptt's kernels: ``RNN``, ``LSTM`` and ``GRU``, drop-ins for torch.nn's.

::

    import fastbptt.torch
    lstm = fastbptt.torch.LSTM(input_size, hidden_size, num_layers=2, batch_first=True)
    output, (h_n, c_n) = lstm(x, (h_0, c_0))        # as torch.nn.LSTM, on fastbptt's kernels
    lstm.load_state_dict(torch_lstm.state_dict())   # and the other way round

Each class is a subclass of its ``torch.nn`` namesake: the same constructor (``input_size,
hidden_size, num_layers=1, nonlinearity='tanh'`` (RNN), ``bias=True, batch_first=False,
dropout=0.0, bidirectional=False, device=None, dtype=None``), the same parameters under the
same names and shapes (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``,
``..._reverse``), initialised alike, so state dicts go both ways, and the same call and results:
``output, h_n = m(input, h_0)`` (``output, (h_n, c_n) = m(input, (h_0, c_0))`` for the LSTM),
batched (3-D) or unbatched (2-D) input. Only ``forward`` differs: each layer and direction runs
forward and backward in fastbptt's kernels through a ``torch.autograd.Function``.

- The kernels read the tensors' memory as NumPy arrays, without copies where the layout allows:
  the input in either layout (``batch_first`` or not, C-contiguous; other strides are copied
  once), the initial states, the incoming gradients; a layer hands its hidden states to the next
  as a view of what the kernel wrote. The weights are laid out as fastbptt's
  ``Wx = weight_ih.T``, ``Wh = weight_hh.T`` (C-contiguous copies, made on every call),
  ``b = bias_ih + bias_hh`` (the GRU keeps ``bias_hh`` apart, inside
  ``r * (h Wh_n + bias_hh_n)``); see ``fastbptt.compat.torch``. The gradient of the sum reaches
  both biases, each its own tensor, as in PyTorch. The copies are not kept from call to call:
  a parameter may change without torch's version counter seeing it (a write through ``.data``,
  as in the soft updates of a target network, or through a NumPy view), and a kept copy would
  then run stale weights without a word; they cost 5 to 8% of a call at N = 1, T = 25
  (``benchmarks/RESULTS.md``).
- What the caller gets (``output``, ``h_n``, ``c_n``) is a copy of what the kernel wrote, which
  its backward reads: the caller may change it in place, as torch.nn's. Changing the input in
  place between forward and backward raises autograd's error, as with torch.nn.
- A ``PackedSequence`` input (``torch.nn.utils.rnn.pack_padded_sequence``) runs each sequence
  over its own steps (the kernels' ``lengths=``; the reverse direction from each sequence's
  last step, ``reverse=True``), and the output is a ``PackedSequence`` laid out as the input;
  ``h_n`` (``c_n``) holds each sequence's state after its last step, as torch.nn's.
- Stacked layers (``num_layers``) are fastbptt layers chained by autograd, with
  ``torch.nn.functional.dropout`` on each layer's output but the last's in training mode, as
  torch.nn does. The reverse direction of a bidirectional module runs the kernels on a copy of
  its input flipped in time, and the result is flipped back.
- Backward writes its workspace over the cache of forward (``overwrite_cache=True``), so a
  layer holds no more than its activations; a second backward through the same graph
  (``retain_graph=True``) runs that layer's forward again first.
- Only what the kernels run is accepted, each refusal naming the argument before any kernel
  runs: CPU tensors (``ValueError``), float32 or float64 input, states and parameters of one
  dtype (``TypeError``), no ``proj_size`` (``ValueError``). Shapes are checked as torch.nn
  does, with a ``ValueError`` where torch raises a RuntimeError. NaN or infinity in the input,
  the states, the parameters or an incoming gradient raises a ``ValueError`` (fastbptt's input
  checks), where torch.nn would carry it through.
- Double backward (``create_graph=True`` then differentiating the gradients) is not supported:
  the layers' backward is ``once_differentiable``, and differentiating through it raises torch's
  RuntimeError "trying to differentiate twice a function that was marked with
  @once_differentiable".
- ``torch.compile``: the layers are excluded from compilation (``torch.compiler.disable``);
  compiled code around them runs compiled, each layer runs as here, with a graph break around
  it. ``torch.jit.script`` is not supported.

PyTorch is optional for fastbptt: ``import fastbptt`` never imports it, and importing this
module without it installed raises a ModuleNotFoundError that says how to install it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, cast

import numpy as np
from numpy.typing import NDArray

try:
    import torch
except ModuleNotFoundError as _err:      # only torch itself missing, not one of its parts
    if _err.name != "torch":
        raise
    raise ModuleNotFoundError(
        "fastbptt.torch needs PyTorch, which is not installed: pip install torch (or "
        "pip install 'fastbptt[torch]'). The rest of fastbptt runs without it.",
        name="torch") from None
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import CELLS
from ._validation import _zeros
from .compat.torch import state_dict_keys

__all__ = ["RNN", "LSTM", "GRU"]

# torch >= 2.1; torch 2.0 has it under torch._dynamo
_compiler_disable = getattr(getattr(torch, "compiler", None), "disable", None) or \
    torch._dynamo.disable

_FLOATS = (torch.float32, torch.float64)


class _Layer(NamedTuple):
    """One layer and direction of a module, as the autograd function runs it: the cell's name
    in ``fastbptt.CELLS``, its options (the RNN's nonlinearity), the layout, whether the hidden
    states go to the caller (a copy, which the caller may change in place as torch.nn's) or only
    to the next layer (a view of the kernel's own), and the module's names of fastbptt's
    arguments, for the errors of fastbptt's own checks. The rest is read from the cell's record
    once, when the module is made, rather than on every call (``_layer``)."""

    cell: str
    options: Dict[str, Any]
    time_major: bool
    copy_output: bool
    names: Dict[str, str]
    forward: Callable[..., Any]                # the cell's forward and backward in the kernels
    backward: Callable[..., Any]
    kwargs: Dict[str, Any]                     # forward's keywords: the options, time_major
    n_states: int                              # 1, or 2 for the LSTM (h and c)
    finals: Tuple[str, ...]                    # the cache's final states: 'hT' (, 'cT')
    final_grads: Tuple[str, ...]               # backward's keywords for them: 'dhT' (, 'dcT')
    extra_states: Tuple[str, ...]              # forward's keywords beyond h0: () or ('c0',)
    extra_state_grads: Tuple[str, ...]         # their gradients' attributes: () or ('dc0',)
    bias_apart: bool                           # the GRU: bias_hh is fastbptt's bh, not in b
    lengths: Optional[NDArray[Any]] = None     # a PackedSequence's lengths, in batch order
    reverse: bool = False                      # the reverse direction, run by the kernels


def _layer(cell_name: str, options: Dict[str, Any], time_major: bool, copy_output: bool,
           names: Dict[str, str]) -> _Layer:
    """The ``_Layer`` of a layer and direction of ``cell_name``'s module."""
    cell = CELLS[cell_name]
    return _Layer(cell_name, options, time_major, copy_output, names,
                  _bound(cell.forward), _bound(cell.backward),
                  {**options, "time_major": time_major}, len(cell.states),
                  tuple(state + "T" for state in cell.states),
                  tuple("d" + state + "T" for state in cell.states),
                  cell.extra_states, tuple("d" + name for name in cell.extra_states),
                  "bh" in cell.extra_weights)


def _array(tensor: Tensor) -> NDArray[Any]:
    """The NumPy array on a CPU tensor's memory (no copy)."""
    return tensor.detach().numpy()


def _writeable(arr: NDArray[Any]) -> NDArray[Any]:
    """A writeable view of an array fastbptt returned read-only, for ``torch.from_numpy``, which
    wants writeable memory; only for the hidden states one layer hands to the next, which no
    one writes."""
    view = arr.view()
    view.flags.writeable = True
    return view


def _bound(function: Optional[Callable[..., Any]]) -> Callable[..., Any]:
    """A function of a record of ``fastbptt.CELLS``, which binds them all."""
    return cast(Callable[..., Any], function)


def _renamed(err: Exception, names: Dict[str, str]) -> Exception:
    """fastbptt's error ("x contains NaN or infinity") with the argument named as the module's
    user knows it ("input contains ..."), of the same type."""
    message = str(err)
    first, _, rest = message.partition(" ")
    return type(err)(f"{names[first]} {rest}" if first in names else message)


class _Recurrence(torch.autograd.Function):
    """One layer and direction of a module on fastbptt's kernels.

    apply(layer, x, *states, weight_ih, weight_hh, bias_ih, bias_hh) -> (h, *finals): ``x`` in
    the layer's layout, one (N, H) initial state per state of the cell (None: zeros), the
    biases None for a module without them; ``h`` every hidden state in x's layout and one final
    state (1, N, H) per state of the cell, new, ready to be concatenated into ``h_n``."""

    @staticmethod
    def forward(ctx: Any, layer: _Layer, x: Tensor, *tensors: Optional[Tensor]) -> Any:
        ctx.set_materialize_grads(False)
        ctx.layer = layer
        ctx.cache = cache = _run_forward(layer, x, tensors)
        h = cache.h if layer.time_major else cache.h.swapaxes(0, 1)    # in x's layout
        h = torch.from_numpy(np.array(h) if layer.copy_output else _writeable(h))
        # the cache holds a view of x (and of the GRU's biases): saved, so that autograd
        # refuses a backward after they were changed in place
        ctx.save_for_backward(x, *tensors)
        # the final states (1, N, H), new: the caller may change them in place
        if layer.n_states == 1:
            return h, torch.from_numpy(np.array(cache.hT)[None])
        return (h, *[torch.from_numpy(np.array(getattr(cache, name))[None])
                     for name in layer.finals])

    @staticmethod
    def backward(ctx: Any, dh: Optional[Tensor], *dfinals: Optional[Tensor]) -> Any:
        if torch.is_grad_enabled():     # create_graph=True: refuse to differentiate the result
            return _backward_once(ctx, dh, *dfinals)
        return _backward(ctx, dh, *dfinals)


def _backward(ctx: Any, dh: Optional[Tensor], *dfinals: Optional[Tensor]) -> Any:
    """The gradients of a layer's inputs from those of its outputs (``_Recurrence.backward``),
    in fastbptt's kernels."""
    layer, cache = ctx.layer, ctx.cache
    saved = ctx.saved_tensors              # raises if one was changed in place
    if cache.consumed:                      # a second backward (retain_graph=True)
        cache = ctx.cache = _run_forward(layer, saved[0], saved[1:])
    finals = {}
    for name, g in zip(layer.final_grads, dfinals):
        finals[name] = None if g is None else g.detach().numpy()[0]
    try:
        grads = layer.backward(None if dh is None else dh.detach().numpy(), cache,
                               overwrite_cache=True, **finals)
    except (TypeError, ValueError) as err:
        raise _renamed(err, layer.names) from None
    needs = ctx.needs_input_grad
    n_states = layer.n_states
    out: List[Optional[Tensor]] = [None, torch.from_numpy(grads.dx) if needs[1] else None]
    if needs[2]:
        out.append(torch.from_numpy(grads.dh0))
    else:
        out.append(None)
    for i, name in enumerate(layer.extra_state_grads, 3):
        out.append(torch.from_numpy(getattr(grads, name)) if needs[i] else None)
    i = 2 + n_states
    # torch's (G*H, D) layout, made here: NumPy transposes these small matrices several times
    # faster than autograd does when it lays a transposed gradient out as the parameter
    out.append(torch.from_numpy(np.ascontiguousarray(grads.dWx.T)) if needs[i] else None)
    out.append(torch.from_numpy(np.ascontiguousarray(grads.dWh.T)) if needs[i + 1] else None)
    if layer.bias_apart:                    # the GRU: its own gradient for each bias
        db_ih, db_hh = grads.db, grads.dbh
    else:                                   # b = bias_ih + bias_hh: db for both
        db_ih = grads.db
        db_hh = db_ih.copy() if needs[i + 2] and needs[i + 3] else db_ih
    out.append(torch.from_numpy(db_ih) if needs[i + 2] else None)
    out.append(torch.from_numpy(db_hh) if needs[i + 3] else None)
    return tuple(out)


# with create_graph=True, the gradients come out marked so that differentiating them raises
# torch's "trying to differentiate twice a function that was marked with @once_differentiable"
_backward_once = once_differentiable(_backward)


def _run_forward(layer: _Layer, x: Tensor, tensors: Sequence[Optional[Tensor]]) -> Any:
    """fastbptt's forward of one layer on the tensors' memory: its cache."""
    n_states = layer.n_states
    w_ih, w_hh, b_ih, b_hh = tensors[n_states:]
    kwargs = layer.kwargs.copy()            # the options and time_major
    if layer.lengths is not None:
        kwargs["lengths"], kwargs["reverse"] = layer.lengths, layer.reverse
    if n_states > 1:
        for name, state in zip(layer.extra_states, tensors[1:n_states]):
            kwargs[name] = None if state is None else state.detach().numpy()
    # (D, G*H) and (H, G*H), C-contiguous: laid out for the kernels on every call (the
    # parameters' memory may have changed in ways torch's version counters miss, such as writes
    # through ``.data``), so that their checks find every argument ready as it is
    Wx = np.ascontiguousarray(_array(cast(Tensor, w_ih)).T)
    Wh = np.ascontiguousarray(_array(cast(Tensor, w_hh)).T)
    if b_ih is None or b_hh is None:               # bias=False
        b = _zeros(Wh.shape[1], Wh.dtype)
    elif layer.bias_apart:                         # the GRU: bias_hh is bh
        b = b_ih.detach().numpy()
        kwargs["bh"] = b_hh.detach().numpy()
    else:
        b = b_ih.detach().numpy() + b_hh.detach().numpy()
    h0 = tensors[0]
    try:
        return layer.forward(x.detach().numpy(), None if h0 is None else h0.detach().numpy(),
                             Wx, Wh, b, **kwargs)[1]
    except (TypeError, ValueError) as err:
        raise _renamed(err, layer.names) from None


@_compiler_disable
def _apply(layer: _Layer, x: Tensor, *tensors: Optional[Tensor]) -> Any:
    """``_Recurrence.apply``, left out of ``torch.compile``'s graphs: NumPy and compiled kernels
    inside, nothing it can trace."""
    return _Recurrence.apply(layer, x, *tensors)


class _Recurrent:
    """What fastbptt's modules add to their torch.nn base class: ``forward`` on the kernels, and
    the checks of what they can run. ``_cell`` is the cell's name in ``fastbptt.CELLS``."""

    _cell: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        me: Any = self
        name = type(self).__name__
        if getattr(me, "proj_size", 0):
            raise ValueError(f"proj_size={me.proj_size}: fastbptt.torch.{name} has no "
                             "projections (its kernels have none); use torch.nn.LSTM for them")
        dtype = me.weight_ih_l0.dtype
        if dtype not in _FLOATS:
            raise TypeError(f"dtype must be torch.float32 or torch.float64 for fastbptt.torch."
                            f"{name}, got {dtype}")
        me._fastbptt_layers = {time_major: self._layers(time_major)
                               for time_major in (False, True)}

    def _layers(self, time_major: bool) -> List[Tuple[_Layer, List[str]]]:
        """[(layer spec, parameter names)] for each layer and direction, in the order of
        torch's ``h_0``: layer 0 forward, layer 0 reverse, layer 1 forward, ..."""
        me: Any = self
        cell = CELLS[self._cell]
        options = {option: getattr(me, option) for option in cell.options}
        out = []
        for layer in range(me.num_layers):
            for reverse in range(2 if me.bidirectional else 1):
                k = layer * (2 if me.bidirectional else 1) + reverse
                keys = state_dict_keys(self._cell, layer=layer, reverse=bool(reverse))
                w_ih, w_hh, b_ih, b_hh = keys
                names = {
                    "x": "input" if layer == 0 else f"the input of layer {layer}",
                    "Wx": w_ih, "Wh": w_hh,
                    "b": b_ih if "bh" in cell.extra_weights else f"{b_ih} + {b_hh}",
                    "bh": b_hh, "dh": f"the gradient of layer {layer}'s output",
                }
                for state in cell.states:
                    names[f"{state}0"] = f"{state}_0[{k}]"
                    names[f"d{state}T"] = f"the gradient of {state}_n[{k}]"
                last = layer == me.num_layers - 1 and not me.bidirectional
                spec = _layer(self._cell, options, time_major, last, names)
                out.append((spec, keys if me.bias else keys[:2]))
        return out

    # -- the call ---------------------------------------------------------------------------

    def forward(self, input: Tensor, hx: Any = None) -> Tuple[Tensor, Any]:
        """``output, h_n = m(input, h_0)`` (LSTM: ``output, (h_n, c_n) = m(input, (h_0,
        c_0))``), as torch.nn's forward, on fastbptt's kernels."""
        me: Any = self
        name = type(self).__name__
        time_major = not me.batch_first
        layers = me._fastbptt_layers[time_major]
        n_states = layers[0][0].n_states
        # the parameters of each layer and direction, looked up once (nn.Module's __getattr__)
        weights = [[getattr(me, key) for key in keys] for _, keys in layers]
        dtype, device = weights[0][0].dtype, weights[0][0].device
        if device.type != "cpu":
            raise ValueError(f"fastbptt.torch.{name} runs on the CPU: its parameters are on "
                             f"{device}; use torch.nn.{name} on other devices")
        if dtype not in _FLOATS:
            raise TypeError(f"fastbptt.torch.{name} runs in float32 or float64: its parameters "
                            f"are {dtype}")
        packed = input if isinstance(input, PackedSequence) else None
        lengths = None
        if packed is not None:
            input, lengths_t = pad_packed_sequence(packed, batch_first=me.batch_first)
            lengths = lengths_t.numpy()
        x = self._check_input(input, dtype)
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1 if time_major else 0)
        n_batch = x.shape[1 if time_major else 0]
        states = self._check_states(hx, batched, n_batch, dtype)
        time_axis = 0 if time_major else 1
        n_dirs = 2 if me.bidirectional else 1
        finals: List[List[Tensor]] = [[] for _ in range(n_states)]
        layer_input = x
        for layer in range(me.num_layers):
            outputs = []
            for reverse in range(n_dirs):
                k = layer * n_dirs + reverse
                spec = layers[k][0]
                layer_weights = weights[k] if len(weights[k]) == 4 else [*weights[k], None, None]
                if lengths is not None:         # each sequence over its own steps, both ways
                    spec = spec._replace(lengths=lengths, reverse=bool(reverse),
                                         copy_output=False)
                    given = layer_input
                else:
                    given = (layer_input if not reverse
                             else torch.flip(layer_input, (time_axis,)))
                h, *last = _apply(spec, given, *(None if s is None else s[k] for s in states),
                                  *layer_weights)
                outputs.append(h if not reverse or lengths is not None
                               else torch.flip(h, (time_axis,)))
                for i, final in enumerate(last):
                    finals[i].append(final)
            layer_input = outputs[0] if n_dirs == 1 else torch.cat(outputs, dim=2)
            if me.dropout and me.training and layer < me.num_layers - 1:
                layer_input = self._dropout(layer_input, time_major)
        output = layer_input
        if packed is not None:
            output = _repacked(output, lengths_t, packed, me.batch_first)
        finals_t = [f[0] if len(f) == 1 else torch.cat(f) for f in finals]
        if not batched:
            output = output.squeeze(1 if time_major else 0)
            finals_t = [f.squeeze(1) for f in finals_t]
        if n_states == 1:
            return output, finals_t[0]
        return output, tuple(finals_t)

    def _dropout(self, layer_output: Tensor, time_major: bool) -> Tensor:
        """torch's dropout on a layer's output, drawn as torch.nn draws it: on a time-major
        (T, N, features) tensor, so that the same seed drops the same units (batch-major
        output is transposed for the draw and back; the next layer copies it into its
        layout)."""
        me: Any = self
        p = me.dropout
        if time_major:
            return torch.nn.functional.dropout(layer_output, p, training=True)
        by_step = layer_output.transpose(0, 1).contiguous()
        return torch.nn.functional.dropout(by_step, p, training=True).transpose(0, 1)

    # -- checks -----------------------------------------------------------------------------

    def _check_input(self, input: Any, dtype: torch.dtype) -> Tensor:
        me: Any = self
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.layout != torch.strided:
            raise TypeError(f"input must be a dense tensor, got layout {input.layout}")
        if input.device.type != "cpu":
            raise ValueError(f"input is on {input.device}: fastbptt.torch.{name} runs on the "
                             f"CPU; use torch.nn.{name} on other devices")
        if input.dtype not in _FLOATS:
            raise TypeError(f"input must be float32 or float64 for fastbptt.torch.{name}, got "
                            f"{input.dtype}")
        if input.dtype != dtype:
            raise TypeError(f"input has dtype {input.dtype} but the parameters are {dtype}: "
                            f"convert the input (input.to({dtype})) or the module "
                            f"(module.to({input.dtype}))")
        layout = "(N, T, input_size)" if me.batch_first else "(T, N, input_size)"
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 3-D {layout}, or 2-D (T, input_size) unbatched, "
                             f"got shape {tuple(input.shape)}")
        if input.shape[-1] != me.input_size:
            raise ValueError(f"input must have input_size = {me.input_size} features in its last "
                             f"dimension, got shape {tuple(input.shape)}")
        n_steps = input.shape[1 if (me.batch_first and input.dim() == 3) else 0]
        if n_steps == 0:
            raise ValueError(f"input must have at least one time step, got shape "
                             f"{tuple(input.shape)}")
        return input

    def _check_states(self, hx: Any, batched: bool, n_batch: int,
                      dtype: torch.dtype) -> List[Optional[Tensor]]:
        """The initial states (num_layers * num_directions, N, H) as given (None for zeros),
        one per state of the cell, checked; unbatched ones get their batch dimension."""
        me: Any = self
        cell = CELLS[self._cell]
        labels = [f"{state}_0" for state in cell.states]
        if hx is None:
            return [None] * len(labels)
        if len(labels) == 1:
            given = [hx]
        else:
            spelled = "(" + ", ".join(labels) + ")"
            if not isinstance(hx, (tuple, list)) or len(hx) != len(labels):
                raise TypeError(f"hx must be a tuple {spelled} of tensors or None, got "
                                f"{type(hx).__name__}")
            given = list(hx)
        n_layers = me.num_layers * (2 if me.bidirectional else 1)
        shape = (n_layers, n_batch, me.hidden_size) if batched else (n_layers, me.hidden_size)
        spelled_shape = ("(num_layers * num_directions, N, hidden_size)" if batched
                         else "(num_layers * num_directions, hidden_size) for unbatched input")
        states = []
        for label, state in zip(labels, given):
            if not isinstance(state, Tensor):
                raise TypeError(f"{label} must be a torch.Tensor, got {type(state).__name__}")
            if state.layout != torch.strided:
                raise TypeError(f"{label} must be a dense tensor, got layout {state.layout}")
            if state.device.type != "cpu":
                raise ValueError(f"{label} is on {state.device}: fastbptt.torch runs on the CPU")
            if state.dtype != dtype:
                raise TypeError(f"{label} has dtype {state.dtype} but the input and the "
                                f"parameters are {dtype}")
            if tuple(state.shape) != shape:
                raise ValueError(f"{label} must have shape {spelled_shape} = {shape}, got "
                                 f"{tuple(state.shape)}")
            states.append(state if batched else state.unsqueeze(1))
        return states


def _repacked(output: Tensor, lengths: Tensor, packed: PackedSequence,
              batch_first: bool) -> PackedSequence:
    """The padded ``output`` as a PackedSequence laid out as the input ``packed`` was: its
    sequences in its order, with its sorted and unsorted indices."""
    order = packed.sorted_indices
    if order is not None:
        output = output.index_select(0 if batch_first else 1, order)
        lengths = lengths.index_select(0, order.cpu())
    data = pack_padded_sequence(output, lengths, batch_first=batch_first,
                                enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                          packed.unsorted_indices)


class RNN(_Recurrent, torch.nn.RNN):
    """``torch.nn.RNN`` (tanh or relu) on fastbptt's kernels: same constructor, parameters,
    call and results; see the module's docstring for what differs."""

    _cell = "rnn"


class LSTM(_Recurrent, torch.nn.LSTM):
    """``torch.nn.LSTM`` on fastbptt's kernels (without ``proj_size``): same constructor,
    parameters, call and results; see the module's docstring for what differs."""

    _cell = "lstm"


class GRU(_Recurrent, torch.nn.GRU):
    """``torch.nn.GRU`` on fastbptt's kernels: same constructor, parameters, call and results;
    see the module's docstring for what differs."""

    _cell = "gru"

