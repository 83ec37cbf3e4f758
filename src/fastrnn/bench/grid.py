"""The grid of the report: which cells, shapes and modes make its rows, and the GEMM
FLOPs of one call.

The grid (float32, ``--threads`` threads, 2 by default)
    cells   rnn_tanh, lstm, gru; bilstm (a bidirectional LSTM) at S3 only, or at every
            chosen shape when named in --cells
    shapes  (T, B, I, H)  S1 100,1,64,64 (one stream)  S2 50,16,128,128
            S3 100,64,256,256  S4 50,64,512,512  S5 25,128,1024,1024
    modes   infer  forward with nothing kept for backward (training=False, torch under
                   inference_mode, ORT)
            train  zero the gradients, forward, backward for the input and every weight
                   given a fixed d_output (no d_h_n), i.e. one BPTT step

FLOPs (``flops``): GEMM work only, 2*M*N*K per GEMM, G gates (RNN 1, LSTM 4, GRU 3),
D directions:
    infer  D * [2*(T*B)*I*(G*H)   input projection X W_ih^T
              + T * 2*B*H*(G*H)]  recurrent h W_hh^T, every step
           = D * 2*T*B*G*H*(I + H)
    train  infer + D * [T * 2*B*(G*H)*H   dh_{t-1} = dP_t W_hh, every step
                      + 2*(G*H)*(T*B)*I   dW_ih += dP^T X
                      + 2*(G*H)*(T*B)*H   dW_hh += dP^T H_prev
                      + 2*(T*B)*(G*H)*I]  dX = dP W_ih
           = 3 * infer
The elementwise gate work (exp, tanh, products) is not counted, so GFLOP/s is the rate
of useful GEMM work; at S1 (B=1) it is far below peak by nature.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from fastrnn.kinds import NUM_GATES

SHAPES: Dict[str, Tuple[int, int, int, int]] = {   # name -> (T, B, I, H)
    "S1": (100, 1, 64, 64),          # one stream: latency of tiny GEMMs
    "S2": (50, 16, 128, 128),
    "S3": (100, 64, 256, 256),
    "S4": (50, 64, 512, 512),
    "S5": (25, 128, 1024, 1024),     # GEMM-bound
}
CELLS = ("rnn_tanh", "lstm", "gru", "bilstm")
DEFAULT_CELLS = ("rnn_tanh", "lstm", "gru")   # plus bilstm at S3
MODES = ("infer", "train")
NUMPY_SKIPPED = ("S4", "S5")          # the reference takes seconds per call there
FLOAT64_SHAPES = ("S2", "S3")
DEFAULT_THREADS = 2
SEED = 0

# a grid cell -> the cell kind (fastrnn.kinds) it runs
BASE_CELL = {"rnn_tanh": "rnn_tanh", "lstm": "lstm", "gru": "gru", "bilstm": "lstm",
             "LSTMCell": "lstm"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One configuration: cell kind, shape (T, B, I, H) and dtype."""

    cell: str                       # rnn_tanh, lstm, gru, bilstm
    T: int
    B: int
    I: int
    H: int
    shape_name: str = ""            # "S1".. or "" for a custom shape
    dtype: str = "float32"

    @classmethod
    def make(cls, cell: str, shape: str, dtype: str = "float32") -> "Spec":
        """A grid name ("S3") or a custom "TxBxIxH"."""
        T, B, I, H = parse_shape(shape)
        return cls(cell, T, B, I, H, shape if shape in SHAPES else "", dtype)

    @property
    def base(self) -> str:
        """The cell kind (fastrnn.kinds) the row runs: bilstm and LSTMCell run lstm."""
        return BASE_CELL[self.cell]

    @property
    def D(self) -> int:
        """Directions: 2 for bilstm, else 1."""
        return 2 if self.cell == "bilstm" else 1

    @property
    def G(self) -> int:
        """Gates of the cell kind (fastrnn.kinds.NUM_GATES)."""
        return NUM_GATES[self.base]

    @property
    def label(self) -> str:
        """The shape as bench/test_bench_backends.py names it: T100_B1_I64_H64."""
        return f"T{self.T}_B{self.B}_I{self.I}_H{self.H}"

    @property
    def name(self) -> str:
        """The grid name ("S3"), or the label of a custom shape."""
        return self.shape_name or self.label


def parse_shape(shape: str) -> Tuple[int, int, int, int]:
    """"S1".."S5" or "TxBxIxH" -> (T, B, I, H)."""
    if shape in SHAPES:
        return SHAPES[shape]
    try:
        dims = tuple(int(v) for v in shape.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"shape: expected one of {list(SHAPES)} or TxBxIxH with positive "
                         f"integers, got {shape!r}")
    return dims  # type: ignore[return-value]


def grid_name(shape: Tuple[int, int, int, int]) -> str:
    """The grid's name of a (T, B, I, H) shape ("S1".."S5"), else its label
    T100_B1_I64_H64."""
    for name, dims in SHAPES.items():
        if dims == tuple(shape):
            return name
    return "T{}_B{}_I{}_H{}".format(*shape)


def flops(spec: Spec, mode: str) -> int:
    """GEMM flops of one call (see the module docstring): 2*T*B*G*H*(I + H) per
    direction for inference, three times that for training."""
    forward = 2 * spec.T * spec.B * spec.G * spec.H * (spec.I + spec.H)
    return spec.D * forward * (3 if mode == "train" else 1)
