"""The cell kinds, defined once for every part of fastrnn.

A cell kind names the recurrence one layer-direction runs; the C kernels know
the same kinds as ``fastrnn_cell`` (csrc/fastrnn.h), and the bindings map these
names onto that enum. Gate order is PyTorch's: LSTM ``i, f, g, o``; GRU
``r, z, n``.

    >>> from fastrnn.kinds import CELLS, NUM_GATES
    >>> NUM_GATES["lstm"]
    4
"""
from __future__ import annotations

from typing import Dict, Tuple

#: Every cell kind: Elman RNN with tanh or relu, LSTM, GRU with the reset gate
#: applied after the recurrent product (PyTorch, Keras and ONNX
#: ``linear_before_reset=1``) or before it (the original GRU), and IndRNN with
#: tanh or relu (Li et al. 2018: the recurrent weight is a vector u (H,), one
#: weight per unit, so its recurrence is elementwise).
CELLS: Tuple[str, ...] = ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before",
                          "indrnn_tanh", "indrnn_relu")

#: Gates G of each kind: the weight matrices have G*H rows.
NUM_GATES: Dict[str, int] = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3,
                             "gru_reset_before": 3, "indrnn_tanh": 1, "indrnn_relu": 1}

#: The kinds whose recurrent weight ``weight_hh`` is a vector (H,) applied
#: elementwise (no recurrent matrix product).
ELEMENTWISE: Tuple[str, ...] = ("indrnn_tanh", "indrnn_relu")
