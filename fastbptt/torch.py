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
batched (3-D) or unbatched (2-D) input. Only ``forward`` differs: each layer (both directions of
a bidirectional one) runs forward and backward in fastbptt's kernels through one
``torch.autograd.Function``.

- The kernels read the tensors' memory as NumPy arrays, without copies where the layout allows:
  the input in either layout (``batch_first`` or not, C-contiguous; other strides are copied
  once), the initial states, the incoming gradients; a layer hands its hidden states to the next
  as a view of what the kernel wrote. fastbptt's weights are ``Wx = weight_ih.T``,
  ``Wh = weight_hh.T``, ``b = bias_ih + bias_hh`` (the GRU keeps ``bias_hh`` apart, inside
  ``r * (h Wh_n + bias_hh_n)``); see ``fastbptt.compat.torch``. The weights are torch.nn's,
  C-contiguous (G*H, D) tensors, and each call lays them out for the kernels (a copy of each,
  and each gradient copied back into torch's layout). Nothing is kept from call to call: a
  parameter may change without torch's version counter seeing it (a write through ``.data``, as
  in the soft updates of a target network, or through a NumPy view), and a kept copy would then
  run stale weights without a word. The gradient of the bias sum reaches both biases, each its
  own tensor, as in PyTorch.
- ``weight_layout='fastbptt'`` (a keyword of the constructor beside torch.nn's) keeps each
  weight's memory in the kernels' layout instead: ``weight_ih_l0`` (G*H, D) is the transpose of
  a C-contiguous (D, G*H) array (``weight_ih_l0.stride() == (1, G*H)``), which the kernels read
  as it is, and its gradient comes in the same strides: no copy either way (at N = 1, T = 25
  the copies took 5 to 11% of a call, ``benchmarks/RESULTS.md``). Names, shapes, values,
  initialisation (``reset_parameters`` draws as torch.nn does from the same seed) and state
  dicts stay torch.nn's; what differs is ``is_contiguous()``, False for the weights, so that
  ``weight.view(...)`` raises where torch.nn's works (``reshape`` works), and so does
  ``torch.nn.utils.parameters_to_vector``, which views each parameter (flatten them with
  ``torch.cat([p.reshape(-1) for p in m.parameters()])``); a tool that needs contiguous
  tensors, such as safetensors' ``save_file``, takes ``{k: v.contiguous() for k, v in
  m.state_dict().items()}``; and torch's in-place random initialisers (``torch.nn.init``'s
  ``uniform_``, ``normal_``, ``xavier_uniform_``, ...) draw in the order of memory, so on these
  weights they draw from the same distribution as on torch.nn's but not the same values from
  the same seed (``orthogonal_``, ``zeros_`` and ``reset_parameters`` give the same). That is
  why it is not the default. A weight in any other layout (a parameter replaced, a
  parametrization's result) is copied into the kernels' on each call, and its gradient into its
  strides.
- What the caller gets (``output``, ``h_n``, ``c_n``) is a copy of what the kernel wrote, which
  its backward reads: the caller may change it in place, as torch.nn's. Changing the input or a
  weight in place between forward and backward raises autograd's error, as with torch.nn.
- A ``PackedSequence`` input (``torch.nn.utils.rnn.pack_padded_sequence``) runs each sequence
  over its own steps (the kernels' ``lengths=``; the reverse direction from each sequence's
  last step, ``reverse=True``), and the output is a ``PackedSequence`` laid out as the input;
  ``h_n`` (``c_n``) holds each sequence's state after its last step, as torch.nn's.
- Stacked layers (``num_layers``) are fastbptt layers chained by autograd, with
  ``torch.nn.functional.dropout`` on each layer's output but the last's in training mode, as
  torch.nn does. A bidirectional layer's two directions run at once, forward and backward, one
  of them on a worker thread, where fastbptt's threads are free and the layer is large enough
  (``fastbptt._directions``; ``fastbptt.set_num_threads``), else one after the other, with the
  same results; its reverse direction runs the kernels on a copy of its input flipped in time
  (of a ``PackedSequence``: each sequence from its last step, ``reverse=True``), and its hidden
  states are laid out beside the forward direction's in the input's order of time.
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
- ``torch.compile``: the modules' ``forward`` is excluded from compilation
  (``torch.compiler.disable``); compiled code around a module runs compiled, the module runs as
  here, with a graph break around it. ``torch.jit.script`` is not supported.

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
from ._directions import both_directions
from ._kernels import transpose
from ._validation import _zeros
from .compat.torch import state_dict_keys

__all__ = ["RNN", "LSTM", "GRU"]

# torch >= 2.1; torch 2.0 has it under torch._dynamo
_compiler_disable = getattr(getattr(torch, "compiler", None), "disable", None) or \
    torch._dynamo.disable

_FLOATS = (torch.float32, torch.float64)
# np.ascontiguousarray(a.T) of a matrix, several times faster (src/_transpose.pyx)
transposed: Callable[[Any], NDArray[Any]] = transpose.transposed
WEIGHT_LAYOUTS = ("torch", "fastbptt")    # the modules' weight_layout= keyword


class _Layer(NamedTuple):
    """One direction of a layer of a module, as the autograd function runs it: the cell's name in
    ``fastbptt.CELLS``, its options (the RNN's nonlinearity), the layout, whether the hidden
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
    """The ``_Layer`` of a direction of a layer of ``cell_name``'s module."""
    cell = CELLS[cell_name]
    return _Layer(cell_name, options, time_major, copy_output, names,
                  _bound(cell.forward), _bound(cell.backward),
                  {**options, "time_major": time_major}, len(cell.states),
                  tuple(state + "T" for state in cell.states),
                  tuple("d" + state + "T" for state in cell.states),
                  cell.extra_states, tuple("d" + name for name in cell.extra_states),
                  "bh" in cell.extra_weights)


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
    """One layer of a module on fastbptt's kernels, with its one direction or both.

    apply(layers, x, *tensors) -> (h, *finals): ``layers`` the ``_Layer`` of each direction (one,
    or the forward and the reverse one), ``x`` in their layout, and for each direction in turn
    one (N, H) initial state per state of the cell (None: zeros), then ``weight_ih, weight_hh,
    bias_ih, bias_hh`` (the biases None for a module without them); ``h`` every hidden state in
    x's layout (both directions' side by side, (..., 2H)) and one final state (directions, N, H)
    per state of the cell, new, ready to be concatenated into ``h_n``.

    A bidirectional layer's two directions run at once where threads are free and the layer is
    large enough, forward and backward (``fastbptt._directions``); their results are the same
    either way."""

    @staticmethod
    def forward(ctx: Any, layers: Tuple[_Layer, ...], x: Tensor, *tensors: Optional[Tensor]
                ) -> Any:
        ctx.set_materialize_grads(False)
        ctx.layers = layers
        # the caches hold a view of x (and of the GRU's biases, of the initial states): saved,
        # so that autograd refuses a backward after they were changed in place
        ctx.save_for_backward(x, *tensors)
        ctx.caches = caches = _run_forward(layers, x, tensors)
        layer = layers[0]
        if len(caches) == 1:
            cache = caches[0]
            h = cache.h if layer.time_major else cache.h.swapaxes(0, 1)     # in x's layout
            h = torch.from_numpy(np.array(h) if layer.copy_output else _writeable(h))
            # the final states (1, N, H), new: the caller may change them in place
            if layer.n_states == 1:
                return h, torch.from_numpy(np.array(cache.hT)[None])
            return (h, *[torch.from_numpy(np.array(getattr(cache, name))[None])
                         for name in layer.finals])
        forward, reverse = caches
        # both directions' hidden states side by side, new, in x's layout (the kernels' are
        # time-major), the reverse direction's back in the order of x's steps where it ran on x
        # flipped in time
        h_reverse = reverse.h if layers[1].reverse else reverse.h[::-1]
        if layer.time_major:
            h = np.concatenate((forward.h, h_reverse), axis=2)
        else:
            h = np.concatenate((forward.h.swapaxes(0, 1), h_reverse.swapaxes(0, 1)), axis=2)
        return (torch.from_numpy(h),
                *[torch.from_numpy(np.stack((getattr(forward, name), getattr(reverse, name))))
                  for name in layer.finals])

    @staticmethod
    def backward(ctx: Any, dh: Optional[Tensor], *dfinals: Optional[Tensor]) -> Any:
        if torch.is_grad_enabled():     # create_graph=True: refuse to differentiate the result
            return _backward_once(ctx, dh, *dfinals)
        return _backward(ctx, dh, *dfinals)


def _backward(ctx: Any, dh: Optional[Tensor], *dfinals: Optional[Tensor]) -> Any:
    """The gradients of a layer's inputs from those of its outputs (``_Recurrence.backward``),
    in fastbptt's kernels."""
    layers, caches = ctx.layers, ctx.caches
    saved = ctx.saved_tensors              # raises if one was changed in place
    if caches[0].consumed:                 # a second backward (retain_graph=True)
        caches = ctx.caches = _run_forward(layers, saved[0], saved[1:])
    dh_array = None if dh is None else dh.numpy(force=True)
    needs = ctx.needs_input_grad
    if len(layers) == 1:
        layer = layers[0]
        finals = {name: g.numpy(force=True)[0] for name, g in zip(layer.final_grads, dfinals)
                  if g is not None}
        try:
            grads = layer.backward(dh_array, caches[0], overwrite_cache=True, **finals)
        except (TypeError, ValueError) as err:
            raise _renamed(err, layer.names) from None
        return (None, torch.from_numpy(grads.dx) if needs[1] else None,
                *_input_grads(layer, grads, needs, 2, saved))
    final_arrays = [None if g is None else g.numpy(force=True) for g in dfinals]
    n_hidden = caches[0].hT.shape[-1]
    flipped = not layers[1].reverse         # the reverse direction ran on x flipped in time
    time_axis = 0 if layers[0].time_major else 1
    dh_directions: List[Optional[NDArray[Any]]] = [None, None]
    if dh_array is not None:
        dh_directions = [dh_array[..., :n_hidden], dh_array[..., n_hidden:]]
        if flipped:
            dh_directions[1] = np.flip(dh_array[..., n_hidden:], time_axis)

    def run(direction: int) -> Any:
        return _layer_backward(layers[direction], caches[direction], dh_directions[direction],
                               [g if g is None else g[direction] for g in final_arrays])

    n_inputs = layers[0].n_states + 4
    forward, reverse = both_directions(run, _work(saved[0].shape, saved[n_inputs - 2].shape))
    dx = None
    if needs[1]:
        dx = np.add(forward.dx, np.flip(reverse.dx, time_axis) if flipped else reverse.dx)
    return (None, None if dx is None else torch.from_numpy(dx),
            *_input_grads(layers[0], forward, needs, 2, saved),
            *_input_grads(layers[1], reverse, needs, 2 + n_inputs, saved))


def _layer_backward(layer: _Layer, cache: Any, dh: Optional[NDArray[Any]],
                    dfinals: List[Optional[NDArray[Any]]]) -> Any:
    """fastbptt's backward of one direction of a layer: its ``Grads``."""
    finals = dict(zip(layer.final_grads, dfinals))
    try:
        return layer.backward(dh, cache, overwrite_cache=True, **finals)
    except (TypeError, ValueError) as err:
        raise _renamed(err, layer.names) from None


def _input_grads(layer: _Layer, grads: Any, needs: Tuple[bool, ...], first: int,
                 saved: Sequence[Tensor]) -> List[Optional[Tensor]]:
    """The gradients of a direction's initial states and parameters, as tensors where autograd
    needs them (``needs[first:]``, of the Function's inputs); ``saved`` its saved tensors, those
    inputs but the first (``layers``)."""
    out: List[Optional[Tensor]] = [torch.from_numpy(grads.dh0) if needs[first] else None]
    for i, name in enumerate(layer.extra_state_grads, first + 1):
        out.append(torch.from_numpy(getattr(grads, name)) if needs[i] else None)
    i = first + layer.n_states
    out.append(_weight_grad(grads.dWx, saved[i - 1]) if needs[i] else None)
    out.append(_weight_grad(grads.dWh, saved[i]) if needs[i + 1] else None)
    if layer.bias_apart:                    # the GRU: its own gradient for each bias
        db_ih, db_hh = grads.db, grads.dbh
    else:                                   # b = bias_ih + bias_hh: db for both
        db_ih = grads.db
        db_hh = db_ih.copy() if needs[i + 2] and needs[i + 3] else db_ih
    out.append(torch.from_numpy(db_ih) if needs[i + 2] else None)
    out.append(torch.from_numpy(db_hh) if needs[i + 3] else None)
    return out


def _weight_grad(grad: NDArray[Any], weight: Tensor) -> Tensor:
    """The gradient (G*H, D) of a weight from fastbptt's (D, G*H) ``grad``, in the weight's own
    strides, so that autograd takes it as it is. A weight in fastbptt's layout (a module's
    with ``weight_layout='fastbptt'``, ``_Recurrent._lay_out_weights``) gets ``grad``'s
    transpose, a view; one in torch's (the default, a parameter replaced, a parametrization's
    result) a C-contiguous copy, made here (``transposed``, in 8 x 8 blocks): several times
    faster than autograd's when it lays a transposed gradient out as the parameter."""
    if weight.stride() == (1, weight.shape[0]):
        return torch.from_numpy(grad.T)     # not torch's .T, a view autograd would copy
    return torch.from_numpy(transposed(grad))


# with create_graph=True, the gradients come out marked so that differentiating them raises
# torch's "trying to differentiate twice a function that was marked with @once_differentiable"
_backward_once = once_differentiable(_backward)


def _run_forward(layers: Tuple[_Layer, ...], x: Tensor, tensors: Sequence[Optional[Tensor]]
                 ) -> List[Any]:
    """fastbptt's forward of each direction of a layer on the tensors' memory: their caches.
    Two directions run at once where that pays (``fastbptt._directions``)."""
    # the tensors' memory (``force``: they may require gradients; they are CPU tensors of a
    # real dtype, checked, so that nothing is copied)
    x_array = x.numpy(force=True)
    arrays = [None if t is None else t.numpy(force=True) for t in tensors]
    if len(layers) == 1:
        return [_direction_forward(layers[0], x_array, arrays)]
    n_inputs = len(arrays) // 2
    # the reverse direction of whole sequences runs on x flipped in time, as the forward
    # direction on its own copy (that of a PackedSequence, by the kernels' reverse=True)
    inputs = (x_array, x_array if layers[1].reverse else
              np.ascontiguousarray(np.flip(x_array, 0 if layers[1].time_major else 1)))
    return list(both_directions(
        lambda direction: _direction_forward(
            layers[direction], inputs[direction],
            arrays[direction * n_inputs:(direction + 1) * n_inputs]),
        _work(x_array.shape, cast("NDArray[Any]", arrays[n_inputs - 3]).shape)))


def _work(x_shape: Sequence[int], weight_hh_shape: Sequence[int]) -> int:
    """The multiply-adds of the largest product of one direction of a layer on x (either
    layout) with ``weight_hh`` (G*H, H), as ``fastbptt._blas_threads.largest_product`` counts
    them: what decides whether the two directions run at once."""
    return (x_shape[0] * x_shape[1] * weight_hh_shape[0]
            * max(x_shape[2], weight_hh_shape[1]))


def _direction_forward(layer: _Layer, x: NDArray[Any], arrays: Sequence[Optional[NDArray[Any]]]
                       ) -> Any:
    """fastbptt's forward of one direction of a layer on the arrays of its tensors: its
    cache."""
    n_states = layer.n_states
    w_ih, w_hh, b_ih, b_hh = arrays[n_states:]
    kwargs = layer.kwargs.copy()            # the options and time_major
    if layer.lengths is not None:
        kwargs["lengths"], kwargs["reverse"] = layer.lengths, layer.reverse
    if n_states > 1:
        for name, state in zip(layer.extra_states, arrays[1:n_states]):
            kwargs[name] = state
    # (D, G*H) and (H, G*H), C-contiguous: the parameters' own memory where it is in
    # fastbptt's layout (``weight_layout='fastbptt'``, ``_Recurrent._lay_out_weights``), else
    # a copy made on this call (nothing kept: the parameters' memory may have changed in ways
    # torch's version counters miss, such as writes through ``.data``), so that the kernels'
    # checks find every argument ready as it is
    Wx = transposed(w_ih)
    Wh = transposed(w_hh)
    if b_ih is None or b_hh is None:               # bias=False
        b = _zeros(Wh.shape[1], Wh.dtype)
    elif layer.bias_apart:                         # the GRU: bias_hh is bh
        b = b_ih
        kwargs["bh"] = b_hh
    else:
        b = b_ih + b_hh
    try:
        return layer.forward(x, arrays[0], Wx, Wh, b, **kwargs)[1]
    except (TypeError, ValueError) as err:
        raise _renamed(err, layer.names) from None


class _Recurrent:
    """What fastbptt's modules add to their torch.nn base class: ``forward`` on the kernels, and
    the checks of what they can run. ``_cell`` is the cell's name in ``fastbptt.CELLS``."""

    _cell: str = ""

    def __init__(self, *args: Any, weight_layout: str = "torch", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        me: Any = self
        name = type(self).__name__
        if weight_layout not in WEIGHT_LAYOUTS:
            raise ValueError(f"weight_layout must be one of {WEIGHT_LAYOUTS}, got "
                             f"{weight_layout!r}")
        me.weight_layout = weight_layout
        if getattr(me, "proj_size", 0):
            raise ValueError(f"proj_size={me.proj_size}: fastbptt.torch.{name} has no "
                             "projections (its kernels have none); use torch.nn.LSTM for them")
        dtype = me.weight_ih_l0.dtype
        if dtype not in _FLOATS:
            raise TypeError(f"dtype must be torch.float32 or torch.float64 for fastbptt.torch."
                            f"{name}, got {dtype}")
        me._fastbptt_layers = {time_major: self._layers(time_major)
                               for time_major in (False, True)}
        if weight_layout == "fastbptt":
            self._lay_out_weights()

    def extra_repr(self) -> str:
        """torch.nn's, with the weights' layout where it is not torch's."""
        me: Any = self
        text: str = cast(Any, super()).extra_repr()
        if getattr(me, "weight_layout", "torch") != "torch":
            text += f", weight_layout={me.weight_layout!r}"
        return text

    def _lay_out_weights(self) -> None:
        """Each weight's memory in fastbptt's layout, in place of torch's: ``weight_ih``
        (G*H, D) becomes the transpose of a C-contiguous (D, G*H) array, whose memory the kernels
        read as ``Wx`` without a copy (``weight_hh`` likewise as ``Wh``), and into whose strides
        their gradients come, also without one. The values, names and shapes stay; the
        Parameter objects too (their ``.data`` is replaced)."""
        me: Any = self
        for name in me._flat_weights_names:
            weight = me._parameters.get(name)
            if name.startswith("weight_") and weight is not None and weight.dim() == 2 \
                    and weight.stride() != (1, weight.shape[0]):
                rows, columns = weight.shape
                laid = torch.empty_strided((rows, columns), (1, rows), dtype=weight.dtype,
                                           device=weight.device)
                with torch.no_grad():
                    laid.copy_(weight)
                weight.data = laid

    def reset_parameters(self) -> None:
        """torch.nn's initialisation (the same draws from the same seed: torch draws in the
        order of memory, so each weight is drawn in torch's layout), then, with
        ``weight_layout='fastbptt'``, laid out for the kernels (``_lay_out_weights``)."""
        me: Any = self
        if getattr(me, "weight_layout", "torch") != "fastbptt":
            cast(Any, super()).reset_parameters()    # (in torch.nn's __init__: laid out after)
            return
        for name in me._flat_weights_names:
            weight = me._parameters.get(name)
            if weight is not None and not weight.is_contiguous():
                weight.data = torch.empty(weight.shape, dtype=weight.dtype,
                                          device=weight.device)
        cast(Any, super()).reset_parameters()
        self._lay_out_weights()

    def _layers(self, time_major: bool) -> List[Tuple[Tuple[_Layer, ...], List[Optional[str]]]]:
        """[(the layer spec of each direction, their parameters' names)] for each layer: the
        names of weight_ih, weight_hh, bias_ih, bias_hh of each direction in turn (None for the
        biases of a module without them)."""
        me: Any = self
        cell = CELLS[self._cell]
        options = {option: getattr(me, option) for option in cell.options}
        n_dirs = 2 if me.bidirectional else 1
        out = []
        for layer in range(me.num_layers):
            specs: List[_Layer] = []
            names_of_layer: List[Optional[str]] = []
            for reverse in range(n_dirs):
                k = layer * n_dirs + reverse
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
                # the last layer's hidden states go to the caller: a copy (a bidirectional
                # layer's two directions are copied side by side anyway)
                last = layer == me.num_layers - 1 and n_dirs == 1
                specs.append(_layer(self._cell, options, time_major, last, names))
                names_of_layer += keys if me.bias else [w_ih, w_hh, None, None]
            out.append((tuple(specs), names_of_layer))
        return out

    # -- the call ---------------------------------------------------------------------------

    @_compiler_disable
    def forward(self, input: Tensor, hx: Any = None) -> Tuple[Tensor, Any]:
        """``output, h_n = m(input, h_0)`` (LSTM: ``output, (h_n, c_n) = m(input, (h_0,
        c_0))``), as torch.nn's forward, on fastbptt's kernels."""
        me: Any = self
        time_major = not me.batch_first
        layers = me._fastbptt_layers[time_major]
        # the parameters, from the module's dict: nn.Module's __getattr__ takes longer, and is
        # asked only where a name is not there (a parametrization's, weight_norm's)
        parameters = me._parameters
        try:
            weights = [[None if key is None else parameters[key] for key in keys]
                       for _, keys in layers]
        except KeyError:
            weights = [[None if key is None else getattr(me, key) for key in keys]
                       for _, keys in layers]
        first: Tensor = weights[0][0]
        dtype = first.dtype
        if not first.is_cpu:
            name = type(self).__name__
            raise ValueError(f"fastbptt.torch.{name} runs on the CPU: its parameters are on "
                             f"{first.device}; use torch.nn.{name} on other devices")
        if dtype not in _FLOATS:
            raise TypeError(f"fastbptt.torch.{type(self).__name__} runs in float32 or float64: "
                            f"its parameters are {dtype}")
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
        n_states = len(states)
        finals: List[List[Tensor]] = [[] for _ in range(n_states)]
        layer_input = x
        last_layer = len(layers) - 1
        for layer, (specs, _) in enumerate(layers):
            if lengths is not None:         # each sequence over its own steps, both ways
                specs = tuple(spec._replace(lengths=lengths, reverse=bool(direction),
                                            copy_output=False)
                              for direction, spec in enumerate(specs))
            n_dirs = len(specs)
            layer_weights = weights[layer]
            tensors: List[Optional[Tensor]] = []
            for direction in range(n_dirs):
                k = layer * n_dirs + direction
                tensors += [None if s is None else s[k] for s in states]
                tensors += layer_weights[4 * direction:4 * direction + 4]
            layer_input, *last = _Recurrence.apply(specs, layer_input, *tensors)
            for i, final in enumerate(last):
                finals[i].append(final)
            if me.dropout and me.training and layer < last_layer:
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
        if not input.is_cpu:
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
        if hx is None:
            return [None] * len(cell.states)
        labels = [f"{state}_0" for state in cell.states]
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
            if not state.is_cpu:
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

