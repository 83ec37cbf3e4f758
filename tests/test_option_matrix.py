"""Every cell option at every batch path and thread count, C against NumPy.

The C time loop picks its path from the batch and the thread setting: dot
products for 1-2 rows, the packed kernel up to 32 rows per thread, batch
slices on several threads (inference, 16+ rows), BLAS above 32 rows. The
workspace a call needs depends on that path, and a size taken under one path
and used under another failed with "work: too small" (issue 8, item 1: any
ONNX option at B >= 16 with 2+ threads). So every option runs here at a batch
that reaches each path, with one thread and with several, in both dtypes,
both layouts and both directions, in inference and in training, against the
NumPy reference.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

T, I, H = 5, 6, 4

# B: 1 and 2 dot products; 16 and 40 batch slices on 2+ threads (packed kernel
# on one); 70 BLAS per step on one or two threads, slices of 24 on three;
# 128 BLAS per step
BATCHES = [1, 2, 16, 40, 70, 128]
THREADS = [1, 2, 3]

# (class, keyword arguments): PyTorch's cells and each ONNX option
OPTIONS = {
    "rnn": (fastrnn.RNN, {}),
    "rnn-clip": (fastrnn.RNN, {"clip": 3.0}),
    "rnn-acts": (fastrnn.RNN, {"activations": [("scaled_tanh", 1.2, 0.7)]}),
    "lstm": (fastrnn.LSTM, {}),
    "lstm-clip": (fastrnn.LSTM, {"clip": 0.8}),
    "lstm-peepholes": (fastrnn.LSTM, {"peepholes": True}),
    "lstm-input-forget": (fastrnn.LSTM, {"input_forget": True}),
    "lstm-acts": (fastrnn.LSTM, {"activations": ["hard_sigmoid", "softsign", ("elu", 0.7)]}),
    "gru": (fastrnn.GRU, {}),
    "gru-clip": (fastrnn.GRU, {"clip": 0.5}),
    "gru-reset-before-acts": (fastrnn.GRU, {"reset_after": False,
                                            "activations": ["sigmoid", "softsign"]}),
}


@pytest.fixture(params=THREADS, ids=lambda n: f"threads{n}")
def threads(request):
    before = _kernels.get_loop_threads()
    _kernels.set_loop_threads(request.param)
    try:
        yield request.param
    finally:
        _kernels.set_loop_threads(before)


def run(layer, x, h0, c0, lengths, training, dy):
    """Forward (and backward when training) -> {name: array}."""
    lstm = isinstance(layer, fastrnn.LSTM)
    layer.zero_grad()
    if lstm:
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths, training=training)
        result = {"output": out, "h_n": h_n, "c_n": c_n}
    else:
        out, h_n = layer(x, h0, lengths=lengths, training=training)
        result = {"output": out, "h_n": h_n}
    if training:
        dx, d_state = layer.backward(dy)
        result["dx"] = dx
        result["dh0"] = d_state[0] if lstm else d_state
        result.update({f"grads[{k}]": g.copy() for k, g in layer.grads.items()})
    return result


@pytest.mark.parametrize("B", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_matrix(option, B, threads, dtype, assert_tensors_close):
    cls, kwargs = OPTIONS[option]
    rng = np.random.default_rng(B)
    lengths = rng.integers(0, T + 1, B)
    for batch_first in (False, True):
        for bidirectional in (False, True):
            layer = cls(I, H, batch_first=batch_first, bidirectional=bidirectional,
                        dtype=dtype, seed=7, **kwargs)
            D = 2 if bidirectional else 1
            x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
            h0 = rng.standard_normal((D, B, H)).astype(dtype)
            c0 = rng.standard_normal((D, B, H)).astype(dtype)
            dy = rng.standard_normal(x.shape[:2] + (D * H,)).astype(dtype)
            for training in (False, True):
                got, want = {}, {}
                for backend, result in (("c", got), ("numpy", want)):
                    layer.backend = backend
                    result.update(run(layer, x, h0, c0, lengths, training, dy))
                context = (f"{option} B={B} threads={threads} batch_first={batch_first} "
                           f"bidirectional={bidirectional} training={training}")
                assert_tensors_close(got, want, dtype, context)
