"""What backward returns: ``Grads``, shared by the kernels and the reference."""
from collections import namedtuple

_GradsBase = namedtuple("Grads", "dx dh0 dWx dWh db")


class Grads(_GradsBase):
    """The five gradients ``dx, dh0, dWx, dWh, db``, unpacking as CS231n's do.

    What a cell has beyond the five is an attribute: ``dc0`` (LSTM), ``dbh`` (GRU). Pass a
    ``Grads`` back as ``grads=`` to accumulate the next backward's weight gradients into it.
    """

    def __new__(cls, dx, dh0, dWx, dWh, db, **extra):
        # tuple.__new__ rather than the named tuple's own, a Python function: this runs on
        # every backward
        self = tuple.__new__(cls, (dx, dh0, dWx, dWh, db))
        if extra:
            self.__dict__.update(extra)
        return self

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.__dict__.items())
        return super().__repr__()[:-1] + extra + ")"


class JordanGrads(namedtuple("JordanGrads", "dx dy0 dWx dWy db dWo dbo")):
    """What ``jordan_backward`` returns: ``dx``, ``dy0`` (the gradient of the initial output)
    and the gradients of the weights ``Wx, Wy, b, Wo, bo``, each a named field. Pass it back as
    ``grads=`` to accumulate the next backward's weight gradients into it, or as ``out=`` to
    reuse all of its arrays."""

    __slots__ = ()


def cell_grads(cell, dx, carries, weight_grads):
    """The ``Grads`` of ``cell``'s backward from the arrays it wrote: dx, ``carries``
    ({'dhT': ..., 'dcT': ...}, carried back to the initial states' gradients) and
    ``weight_grads`` ({'dWx': ..., 'dbh': ...}); the cell's gradients beyond the five are
    attributes (dc0, from dcT, for the LSTM; dbh for the GRU)."""
    if not cell.extra_grads:
        return Grads(dx, carries["dhT"], weight_grads["dWx"], weight_grads["dWh"],
                     weight_grads["db"])
    extra = {}
    for name in cell.extra_grads:
        extra[name] = (weight_grads[name] if name in weight_grads
                       else carries[name[:-1] + "T"])
    return Grads(dx, carries["dhT"], weight_grads["dWx"], weight_grads["dWh"],
                 weight_grads["db"], **extra)
