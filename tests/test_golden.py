"""PyTorch parity without PyTorch: both backends against stored golden files.

tests/data/make_golden.py (which needs torch) wrote, for each of rnn_tanh,
rnn_relu, lstm and gru, a 2-layer bidirectional float64 torch module's
parameters, a packed batch of unsorted lengths, random initial states and
upstream gradients R, S (U), and torch's outputs, states and every gradient.
These tests load the files with NumPy alone and check that fastrnn
reproduces every stored tensor, by name. torch is never imported here.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import fastrnn
from _compare import assert_close

DATA = pathlib.Path(__file__).resolve().parent / "data"
CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
BACKENDS = ["c", "numpy"]
TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=5e-5)}


def load(cell):
    """config, lengths and {name: float64 tensor} of golden_<cell>.npz."""
    with np.load(DATA / f"golden_{cell}.npz", allow_pickle=False) as f:
        config, lengths = f["config"], f["lengths"]
        names, shapes, values = f["names"], f["shapes"], f["values"]
    tensors, start = {}, 0
    for name, padded in zip(names, shapes):
        shape = tuple(int(n) for n in padded if n > 0)
        size = int(np.prod(shape))
        tensors[str(name)] = values[start:start + size].reshape(shape)
        start += size
    assert start == values.size, f"golden_{cell}.npz: {values.size - start} values left over"
    return config, lengths, tensors


def make_layer(cell, config, dtype, backend, batch_first=False):
    T, B, I, H, num_layers, bidirectional = (int(v) for v in config)
    kw = dict(num_layers=num_layers, bidirectional=bool(bidirectional), dtype=dtype,
              backend=backend, batch_first=batch_first)
    if cell.startswith("rnn"):
        return fastrnn.RNN(I, H, nonlinearity=cell[4:], **kw)
    if cell == "lstm":
        return fastrnn.LSTM(I, H, **kw)
    return fastrnn.GRU(I, H, **kw)


@pytest.fixture
def no_torch(monkeypatch):
    """Any attempt to import torch fails: these tests must run where it is absent."""
    monkeypatch.setitem(sys.modules, "torch", None)


def run(layer, cell, g, lengths, transpose=False, training=True):
    """fastrnn's results (and gradients when training) on the golden inputs;
    transpose feeds batch-first data and returns time-major results."""
    tr = (lambda a: a.transpose(1, 0, 2)) if transpose else (lambda a: a)
    x = tr(g["x"])
    got = {}
    if cell == "lstm":
        out, (got["h_n"], got["c_n"]) = layer(x, (g["h0"], g["c0"]), lengths=lengths,
                                              training=training)
    else:
        out, got["h_n"] = layer(x, g["h0"], lengths=lengths, training=training)
    got["output"] = tr(out)
    if not training:
        return got
    if cell == "lstm":
        dx, (got["dh0"], got["dc0"]) = layer.backward(tr(g["R"]), (g["S"], g["U"]))
    else:
        dx, got["dh0"] = layer.backward(tr(g["R"]), g["S"])
    got["dx"] = tr(dx)
    got.update({f"grad.{k}": v for k, v in layer.grads.items()})
    return got


@pytest.mark.parametrize("cell", CELLS)
def test_golden_file_is_complete(cell, no_torch):
    """Every tensor the checks below need is present, with the layer's names."""
    config, lengths, g = load(cell)
    T, B = int(config[0]), int(config[1])
    assert lengths.shape == (B,) and lengths.min() == 1 and lengths.max() == T, lengths
    assert list(lengths) != sorted(lengths, reverse=True), "lengths should be unsorted"
    layer = make_layer(cell, config, np.float64, "numpy")
    extra = ("c0", "U", "c_n", "dc0") if cell == "lstm" else ()
    expected = {"x", "h0", "R", "S", "output", "h_n", "dx", "dh0", *extra}
    expected |= {f"param.{k}" for k in layer.state_dict()}
    expected |= {f"grad.{k}" for k in layer.state_dict()}
    assert set(g) == expected, f"missing {expected - set(g)}, unexpected {set(g) - expected}"
    for name, p in layer.state_dict().items():
        assert g[f"param.{name}"].shape == p.shape, name
        assert g[f"grad.{name}"].shape == p.shape, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_backend_reproduces_golden(cell, backend, dtype, no_torch):
    config, lengths, g = load(cell)
    g = {k: v.astype(dtype) for k, v in g.items()}
    layer = make_layer(cell, config, dtype, backend)
    layer.load_state_dict({k[6:]: v for k, v in g.items() if k.startswith("param.")})
    got = run(layer, cell, g, lengths)
    expected = {k for k in g if not k.startswith("param.")
                and k not in ("x", "h0", "c0", "R", "S", "U")}
    assert set(got) == expected, f"missing {expected - set(got)}, extra {set(got) - expected}"
    for name in sorted(expected):
        assert_close(name, got[name], g[name], TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_and_inference_reproduce_golden(cell, backend, no_torch):
    """The same numbers through a batch_first layer, and from inference forwards."""
    config, lengths, g = load(cell)
    params = {k[6:]: v for k, v in g.items() if k.startswith("param.")}
    for batch_first in (False, True):
        layer = make_layer(cell, config, np.float64, backend, batch_first)
        layer.load_state_dict(params)
        infer = run(layer, cell, g, lengths, transpose=batch_first, training=False)
        for name, value in infer.items():
            assert_close(f"inference {name} (batch_first={batch_first})", value, g[name],
                         TOL[np.float64])
        if batch_first:
            got = run(layer, cell, g, lengths, transpose=True)
            for name, value in got.items():
                assert_close(f"{name} (batch_first)", value, g[name], TOL[np.float64])
