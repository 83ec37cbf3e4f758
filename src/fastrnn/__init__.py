"""fastrnn: fast CPU RNN, LSTM, GRU and IndRNN layers for NumPy, trained by BPTT.

    >>> import numpy as np, fastrnn
    >>> lstm = fastrnn.LSTM(8, 16)
    >>> out, (h_n, c_n) = lstm(np.zeros((5, 2, 8)))
    >>> out.shape, h_n.shape
    ((5, 2, 16), (1, 2, 16))

The layers follow PyTorch's torch.nn conventions; backend="c" runs the
compiled kernels, backend="numpy" the readable reference (fastrnn.reference).
The pieces a model needs around them follow torch.nn and torch.optim too:
Linear, Embedding, Dropout, Sequential and Module (fastrnn.nn), the losses
(fastrnn.losses), optimizers, clipping and schedules (fastrnn.optim), and
truncated BPTT and generation (fastrnn.training).
"""
import importlib.util as _util
import os as _os

if _util.find_spec("fastrnn._kernels") is None:
    # said here, before a module that needs the kernels fails to import them with
    # Python's "(most likely due to a circular import)"
    raise ImportError(
        f"fastrnn's compiled extension (fastrnn._kernels) is not in "
        f"{_os.path.dirname(__file__)}: that is a source tree, not a built fastrnn. Install "
        f"it (pip install .) and import it from anywhere but that directory, or build it in "
        f"place for development (pip install -e .)")
del _util, _os
from fastrnn.convert import (export_onnx, from_keras, from_onnx, from_torch, load_onnx,
                             to_keras, to_onnx)
from fastrnn._validation import ACTIVATION_DEFAULTS
from fastrnn.bidirectional import Bidirectional
from fastrnn.cells import GRUCell, IndRNNCell, LSTMCell, RNNCell
from fastrnn.layers import GRU, LSTM, RNN, IndRNN, Tape
from fastrnn.losses import (BCEWithLogitsLoss, CrossEntropyLoss, MSELoss,
                            binary_cross_entropy_with_logits, cross_entropy, mse_loss,
                            sequence_mask)
from fastrnn.nn import Dropout, Embedding, Linear, Module, Sequential
from fastrnn.optim import (SGD, Adam, AdamW, CosineAnnealingLR, LRScheduler, Optimizer, StepLR,
                           clip_grad_norm_, clip_grad_value_)
from fastrnn.serialize import load, save
from fastrnn.threads import get_num_threads, set_num_threads
from fastrnn.training import Stepper, from_cells, generate, sample, to_cells, truncated_bptt

from fastrnn._version import __version__

__all__ = ["RNN", "LSTM", "GRU", "IndRNN", "Bidirectional", "RNNCell", "LSTMCell", "GRUCell",
           "IndRNNCell", "Tape",
           "ACTIVATION_DEFAULTS", "from_torch", "to_keras", "from_keras", "to_onnx",
           "from_onnx", "export_onnx", "load_onnx", "save", "load", "set_num_threads",
           "get_num_threads",
           # the pieces around the layers (fastrnn.nn, .losses, .optim, .training)
           "Module", "Linear", "Embedding", "Dropout", "Sequential",
           "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "mse_loss", "cross_entropy",
           "binary_cross_entropy_with_logits", "sequence_mask",
           "Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "clip_grad_value_",
           "LRScheduler", "StepLR", "CosineAnnealingLR",
           "truncated_bptt", "to_cells", "from_cells", "Stepper", "sample", "generate"]
