"""The cells as data: one record per cell, shared by every layer above the cell functions.

A ``Cell`` says what a cell is (its name, gate blocks, states, the weights and options beyond
``Wx, Wh, b``, its cache type) and, once an implementation binds them, which functions run it.
``fastbptt.CELLS`` binds the compiled kernels' functions and ``fastbptt.reference.CELLS`` the
NumPy reference's; the model, TBPTT, the commands, the benchmarks and the tests iterate over
either and never build a function's name from a string. Adding a cell means adding a kernel, a
reference function and one record here.
"""
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Callable, Optional

from ._caches import GRUCache, JordanCache, LSTMCache, RNNCache


@dataclass(frozen=True, eq=False)
class Cell:
    """One recurrent cell.

    name : 'rnn', 'lstm', 'gru', 'jordan': the prefix of its functions ``<name>_forward`` and
        ``<name>_backward``.
    n_gates : G, the column blocks of ``Wx`` (D, G*H), ``Wh`` (H, G*H) and ``b`` (G*H,).
    states : the recurrent state, ('h',), ('h', 'c') or Jordan's output ('y',). Forward takes
        ``h0`` (``y0``) and, for each further state s, the keyword ``s0``; backward takes
        ``dhT`` (``dsT``) and its result has ``dh0`` (``.ds0``); the cache has ``hT`` (``sT``).
    extra_weights : weights beyond ``Wx, Wh, b``, taken by forward as keywords and whose
        gradients backward adds as attributes: ('bh',) for the GRU.
    options : forward's keywords that are choices, each with its allowed values, the default
        first: {'nonlinearity': ('tanh', 'sigmoid', 'relu')} for the RNN.
    cache_type : the type of the cache forward returns.
    forward, backward : the implementation's functions, None in the records of ``_cells``
        before an implementation binds them (``Cell.bind``).

    output_feedback : False: the state is the hidden state h and the weights are ``Wx, Wh, b``
        and the extra ones; True for Jordan's network (``OutputFeedbackCell``).

    The names derived from these (``weights``, ``weight_grads``, ...) are computed once per
    record: backward reads them on every call.
    """

    name: str
    n_gates: int
    states: tuple
    extra_weights: tuple
    options: dict
    cache_type: type
    forward: Optional[Callable] = field(default=None, repr=False)
    backward: Optional[Callable] = field(default=None, repr=False)

    output_feedback = False      # a class attribute: True in OutputFeedbackCell

    def bind(self, forward, backward):
        """This record with an implementation's ``forward`` and ``backward``."""
        return replace(self, forward=forward, backward=backward)

    @cached_property
    def weights(self):
        """The names of the weights: ('Wx', 'Wh', 'b') and the extra ones."""
        return ("Wx", "Wh", "b") + self.extra_weights

    @cached_property
    def weight_grads(self):
        """The names of the weight gradients: ('dWx', 'dWh', 'db') and the extra ones."""
        return tuple("d" + name for name in self.weights)

    @cached_property
    def extra_states(self):
        """Forward's keywords for the initial states beyond h0: ('c0',) for the LSTM."""
        return tuple(state + "0" for state in self.states[1:])

    @cached_property
    def extra_grads(self):
        """The gradients backward's result has beyond the five, as attributes."""
        return tuple("d" + name for name in self.extra_states + self.extra_weights)

    @cached_property
    def forward_reads(self):
        """The weights a forward reads, in the order its checks take them after x: ('Wh', 'b',
        the extra ones, 'Wx')."""
        return ("Wh",) + self.weights[2:] + ("Wx",)

    @cached_property
    def out_writes(self):
        """(label, field) of the arrays a forward with out= writes in the cache: the initial
        states' copies ('out.h0', 'h0'), then the per-step arrays ('out.h', 'h')."""
        return (tuple(("out." + state + "0", state + "0") for state in self.states)
                + tuple(("out." + name, name) for name in self.cache_type.outputs))

    @cached_property
    def grads_out_writes(self):
        """(label, field) of the arrays a backward with out= writes in the earlier result: dx,
        the initial states' gradients ('out.dh0', 'dh0'), then the weight gradients (written
        only without grads=)."""
        return tuple(("out." + name, name) for name in
                     ("dx",) + tuple("d" + state + "0" for state in self.states)
                     + self.weight_grads)

    @cached_property
    def weight_shapes_spelled(self):
        """{name: shape in symbols} of the weights, as error messages spell them."""
        gh = "H" if self.n_gates == 1 else f"{self.n_gates}*H"
        spelled = {"Wx": f"(D, {gh})", "Wh": f"(H, {gh})", "b": f"({gh},)"}
        spelled.update((name, f"({gh},)") for name in self.extra_weights)
        return spelled

    def weight_shapes(self, n_input, n_hidden):
        """{name: shape} of the weights, for inputs of D = ``n_input`` and H = ``n_hidden``."""
        gh = self.n_gates * n_hidden
        shapes = {"Wx": (n_input, gh), "Wh": (n_hidden, gh), "b": (gh,)}
        shapes.update((name, (gh,)) for name in self.extra_weights)
        return shapes


@dataclass(frozen=True, eq=False)
class OutputFeedbackCell(Cell):
    """A cell whose recurrent state is its output y (N, O), not its hidden state: Jordan's
    network. Its weights are ``Wx`` (D, H), the recurrent ``Wy`` (O, H), ``b`` (H,) and the
    output layer's ``Wo`` (H, O), ``bo`` (O,); backward's result is a ``JordanGrads`` whose
    fields name all of their gradients, so it has no extra attributes. ``output_feedback``
    tells the layers built for hidden-state cells (the (Wx, Wh, b) weights of PyTorch's cells,
    ``Model``, ``TBPTT``) that it is not one of them."""

    output_feedback = True

    @cached_property
    def weights(self):
        return ("Wx", "Wy", "b") + self.extra_weights

    @cached_property
    def extra_grads(self):
        return ()

    @cached_property
    def weight_shapes_spelled(self):
        return {"Wx": "(D, H)", "Wy": "(O, H)", "b": "(H,)", "Wo": "(H, O)", "bo": "(O,)"}

    def weight_shapes(self, n_input, n_hidden, n_output=None):
        """{name: shape} of the weights, for D = ``n_input``, H = ``n_hidden`` and O =
        ``n_output`` (H where None)."""
        n_output = n_hidden if n_output is None else n_output
        return {"Wx": (n_input, n_hidden), "Wy": (n_output, n_hidden), "b": (n_hidden,),
                "Wo": (n_hidden, n_output), "bo": (n_output,)}


RNN = Cell("rnn", 1, ("h",), (), {"nonlinearity": ("tanh", "sigmoid", "relu")}, RNNCache)
LSTM = Cell("lstm", 4, ("h", "c"), (), {}, LSTMCache)
GRU = Cell("gru", 3, ("h",), ("bh",), {}, GRUCache)
JORDAN = OutputFeedbackCell(
    "jordan", 1, ("y",), ("Wo", "bo"),
    {"nonlinearity": ("tanh", "sigmoid", "relu"),
     "output_nonlinearity": ("identity", "tanh", "sigmoid")}, JordanCache)


def registry(*cells):
    """A read-only {name: Cell} of ``cells``, each bound to its functions."""
    return MappingProxyType({cell.name: cell for cell in cells})
