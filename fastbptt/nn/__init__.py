"""The model layer on top of the cell functions: a stacked recurrent model, its losses, optimizers
and the corpus helpers of ``fastbptt train`` (``fastbptt.nn.data``)."""
from .model import Model, ModelCache, softmax_cross_entropy
from .optim import OPTIMIZERS, SGD, Adagrad, Adam, Optimizer

__all__ = ["Model", "ModelCache", "softmax_cross_entropy", "Optimizer", "SGD", "Adagrad", "Adam",
           "OPTIMIZERS"]
