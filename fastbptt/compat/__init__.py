"""Compatibility layers: bring existing NumPy code and PyTorch weights to fastbptt unchanged.

``fastbptt.compat.cs231n``
    The layer functions of the CS231n assignment's ``rnn_layers.py`` (same names, arguments,
    shapes and return values; LSTM gates in CS231n's order i, f, o, g). A notebook written for that
    API runs on the compiled kernels by changing one import.

``fastbptt.compat.torch``
    Convert the arrays of a PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` state dict to fastbptt's
    ``Wx, Wh, b`` (and ``bh``) and back, one layer and direction at a time, without importing torch.

Import the submodule you need: ``from fastbptt.compat import cs231n``.
"""
__all__ = ["cs231n", "torch"]
