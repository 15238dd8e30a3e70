"""The model layer on top of the cells: a stacked recurrent model, its losses, its optimizers,
and the corpus helpers of ``fastbptt train`` (``fastbptt.nn.data``).

It uses the library only through an implementation's cell registry (``Model(impl=fastbptt)`` or
``impl=fastbptt.reference``); nothing in the library imports it.
"""
from .losses import mean_squared_error, softmax_cross_entropy
from .model import Model, ModelCache
from .optim import OPTIMIZERS, SGD, Adagrad, Adam, Optimizer

__all__ = ["Model", "ModelCache", "softmax_cross_entropy", "mean_squared_error", "Optimizer",
           "SGD", "Adagrad", "Adam", "OPTIMIZERS"]
