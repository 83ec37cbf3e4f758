"""Shared fixtures of the layer-level tests: tolerances, comparisons, runners.

Helpers are handed out as fixtures rather than imported (``from conftest import``
breaks as soon as a second rootless conftest.py exists under the testpaths, e.g.
in bench/):

    assert_close(name, got, expected, dtype)   one tensor, TOLERANCES[dtype][kind]
    assert_tensors_close(got, expected, dtype) every tensor of two run_layer dicts
    run_layer(layer, x, ...)                   forward + backward -> {name: tensor}
    run_cell(cell, x, ...)                     the same for the one-step cells
    make_layer(cell, I, H, **kwargs)           RNN/LSTM/GRU/IndRNN from a cell-kind name
    make_inputs(layer, T, B, ...)              x, states, upstream gradients
    naive_gemm                                 the kernels on the naive C GEMM
    numeric_gradient(f, value)                 central differences of f() w.r.t. value

``cell`` and ``dtype`` are parametrized fixtures: a test that takes them runs for
every cell kind and both dtypes.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels
from fastrnn.kinds import CELLS

# ------------------------------------------------------------------ tolerances

# The two backends differ only by rounding (BLAS blocking and summation order,
# expf/tanhf against NumPy's ufuncs), which grows with T*B for the gradients,
# since those are sums over every step and row.
TOLERANCES = {
    np.dtype(np.float32): {"out": {"rtol": 1e-5, "atol": 1e-6},
                           "grad": {"rtol": 4e-5, "atol": 4e-6}},
    np.dtype(np.float64): {"out": {"rtol": 1e-12, "atol": 1e-14},
                           "grad": {"rtol": 1e-11, "atol": 1e-13},
                           # analytic against central differences (eps = 1e-6)
                           "fd": {"rtol": 1e-6, "atol": 1e-8}},
}

# tensor names compared with the "out" tolerance; every other name (dx, dh0, dc0,
# grads[...], dh, dc) is a gradient
OUTPUT_NAMES = ("output", "h_n", "c_n", "h", "c")


def _kind(name: str) -> str:
    """"out" or "grad": which column of TOLERANCES a tensor name uses."""
    return "out" if name.split("[")[0] in OUTPUT_NAMES else "grad"


def _assert_close(name: str, got, expected, dtype, kind: Optional[str] = None) -> None:
    """got ~ expected within the dtype's tolerance for outputs or for gradients
    (kind "out"/"grad" by default from the name, or "fd" for finite differences
    in float64); on failure the message names
    the tensor, the max abs error and where it is. got must have the dtype."""
    if expected is None:
        assert got is None, f"{name}: expected None, got {type(got).__name__}"
        return
    assert got is not None, f"{name}: got None, expected an array of shape {np.shape(expected)}"
    dtype = np.dtype(dtype)
    assert isinstance(got, np.ndarray), f"{name}: expected a numpy.ndarray, got {type(got).__name__}"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    tol = TOLERANCES[dtype][kind or _kind(name)]
    ok = np.isclose(got, expected, **tol)    # NaN anywhere fails
    if not ok.all():
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        diff[np.isnan(diff)] = np.inf
        where = np.unravel_index(np.argmax(diff), diff.shape)
        raise AssertionError(
            f"{name}: max abs error {diff.max():.3e} at {tuple(int(i) for i in where)} "
            f"(got {got[where]!r}, expected {expected[where]!r}); {int((~ok).sum())} of "
            f"{ok.size} elements outside rtol={tol['rtol']:g} atol={tol['atol']:g} ({dtype})")


def _assert_tensors_close(got: dict, expected: dict, dtype, context: str = "") -> None:
    """Every tensor of two run_layer / run_cell results, name by name."""
    prefix = f"{context}: " if context else ""
    assert got.keys() == expected.keys(), \
        f"{prefix}tensor names differ: {sorted(got)} vs {sorted(expected)}"
    for name in expected:
        _assert_close(prefix + name, got[name], expected[name], dtype, kind=_kind(name))


@pytest.fixture
def assert_close():
    return _assert_close


@pytest.fixture
def assert_tensors_close():
    return _assert_tensors_close


# ------------------------------------------------------------------ layers



def _make_layer(cell: str, input_size: int, hidden_size: int, **kwargs):
    """fastrnn.RNN / LSTM / GRU / IndRNN for a cell-kind name of fastrnn.reference."""
    if cell in ("rnn_tanh", "rnn_relu"):
        return fastrnn.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kwargs)
    if cell in ("indrnn_tanh", "indrnn_relu"):
        return fastrnn.IndRNN(input_size, hidden_size, nonlinearity=cell[7:], **kwargs)
    if cell == "lstm":
        return fastrnn.LSTM(input_size, hidden_size, **kwargs)
    if cell in ("gru", "gru_reset_before"):
        return fastrnn.GRU(input_size, hidden_size, reset_after=cell == "gru", **kwargs)
    raise ValueError(f"unknown cell kind {cell!r}")


def _make_cell(cell: str, input_size: int, hidden_size: int, **kwargs):
    """fastrnn.RNNCell / LSTMCell / GRUCell / IndRNNCell for a cell-kind name."""
    if cell in ("rnn_tanh", "rnn_relu"):
        return fastrnn.RNNCell(input_size, hidden_size, nonlinearity=cell[4:], **kwargs)
    if cell in ("indrnn_tanh", "indrnn_relu"):
        return fastrnn.IndRNNCell(input_size, hidden_size, nonlinearity=cell[7:], **kwargs)
    if cell == "lstm":
        return fastrnn.LSTMCell(input_size, hidden_size, **kwargs)
    if cell in ("gru", "gru_reset_before"):
        return fastrnn.GRUCell(input_size, hidden_size, reset_after=cell == "gru", **kwargs)
    raise ValueError(f"unknown cell kind {cell!r}")


def _inner(layer):
    """The RNN/LSTM/GRU behind a Bidirectional wrapper, or the layer itself."""
    return layer.layer if isinstance(layer, fastrnn.Bidirectional) else layer


def _is_lstm(layer) -> bool:
    return isinstance(_inner(layer), fastrnn.LSTM)


def _run_layer(layer, x, h0=None, c0=None, lengths=None, dy=None, dh_n=None, dc_n=None,
               training=None, zero_grad=True) -> Dict[str, np.ndarray]:
    """Forward then backward of a layer (or Bidirectional wrapper).

    Returns {"output", "h_n", ["c_n",] "dx", "dh0", ["dc0",] "grads[<name>]" ...}
    with a copy of every parameter gradient; c_n and dc0 only for LSTM. With
    zero_grad the gradients are cleared first, so they are this call's alone."""
    lstm = _is_lstm(layer)
    if zero_grad:
        layer.zero_grad()
    if lstm:
        state = None if h0 is None and c0 is None else (h0, c0)
        output, (h_n, c_n) = layer(x, state, lengths=lengths, training=training)
        d_state = None if dh_n is None and dc_n is None else (dh_n, dc_n)
        dx, (dh0, dc0) = layer.backward(dy, d_state)
        result = {"output": output, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0}
    else:
        assert c0 is None and dc_n is None, "c0/dc_n given to a layer without a cell state"
        output, h_n = layer(x, h0, lengths=lengths, training=training)
        dx, dh0 = layer.backward(dy, dh_n)
        result = {"output": output, "h_n": h_n, "dx": dx, "dh0": dh0}
    for name, g in layer.grads.items():
        result[f"grads[{name}]"] = g.copy()
    return result


def _run_cell(cell, x, h=None, c=None, dh=None, dc=None, zero_grad=True
              ) -> Dict[str, np.ndarray]:
    """One step of a Cell forward then backward: {"h", ["c",] "dx", "dh", ["dc",] grads}."""
    if zero_grad:
        cell.zero_grad()
    if isinstance(cell, fastrnn.LSTMCell):
        state = None if h is None and c is None else (h, c)
        h1, c1 = cell(x, state)
        dx, (dh0, dc0) = cell.backward((dh, dc))
        result = {"h": h1, "c": c1, "dx": dx, "dh": dh0, "dc": dc0}
    else:
        h1 = cell(x, h)
        dx, dh0 = cell.backward(dh)
        result = {"h": h1, "dx": dx, "dh": dh0}
    for name, g in cell.grads.items():
        result[f"grads[{name}]"] = g.copy()
    return result


def _make_inputs(layer, T: int, B: int, seed: int = 0, unbatched: bool = False,
                 state: bool = True, d_state: bool = True, d_output: bool = True,
                 scale: float = 1.0) -> Dict[str, Optional[np.ndarray]]:
    """Random x, h0, c0 (LSTM), dy, dh_n, dc_n (LSTM) in the layer's layout and dtype.

    state=False leaves h0/c0 None (implicit zeros), d_state=False dh_n/dc_n, and
    d_output=False dy; state or d_state "h" gives only the h part, "c" only the c
    part (LSTM). The output width follows a Bidirectional merge mode."""
    inner = _inner(layer)
    rng = np.random.default_rng(seed)
    D, H, L = inner.num_directions, inner.hidden_size, inner.num_layers
    width = D * H
    if isinstance(layer, fastrnn.Bidirectional) and layer.merge_mode != "concat":
        width = H
    lead = (T,) if unbatched else ((B, T) if inner.batch_first else (T, B))
    st = (D * L, H) if unbatched else (D * L, B, H)

    def u(shape):
        return (scale * rng.uniform(-1, 1, shape)).astype(inner.dtype)

    lstm = _is_lstm(layer)
    return {"x": u(lead + (inner.input_size,)),
            "h0": u(st) if state in (True, "h") else None,
            "c0": u(st) if state in (True, "c") and lstm else None,
            "dy": u(lead + (width,)) if d_output else None,
            "dh_n": u(st) if d_state in (True, "h") else None,
            "dc_n": u(st) if d_state in (True, "c") and lstm else None}


def _numeric_gradient(f, value: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of value,
    which is changed in place and restored."""
    numeric = np.zeros_like(value)
    for idx in np.ndindex(value.shape):
        saved = value[idx]
        value[idx] = saved + eps
        f_plus = f()
        value[idx] = saved - eps
        f_minus = f()
        value[idx] = saved
        numeric[idx] = (f_plus - f_minus) / (2 * eps)
    return numeric


def _torch_expected(inputs, out, h_n, c_n, x, h0, c0, sd) -> Dict[str, np.ndarray]:
    """The run_layer dict of a one-layer torch computation: its loss (out * dy +
    h_n * dh_n [+ c_n * dc_n]) backpropagated to the leaves x, h0, c0 and the
    parameters sd ({cell name: tensor}); c_n, c0 None but for LSTM."""
    import torch
    loss = (out * torch.tensor(inputs["dy"])).sum() + (h_n * torch.tensor(inputs["dh_n"][0])).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.tensor(inputs["dc_n"][0])).sum()
    loss.backward()
    expected = {"output": out.detach().numpy(), "h_n": h_n.detach().numpy()[None],
                "dx": x.grad.numpy(), "dh0": h0.grad.numpy()[None]}
    if c_n is not None:
        expected.update(c_n=c_n.detach().numpy()[None], dc0=c0.grad.numpy()[None])
    expected.update({f"grads[{k}_l0]": v.grad.numpy() for k, v in sd.items()})
    return expected


@pytest.fixture
def torch_expected():
    return _torch_expected


@pytest.fixture
def numeric_gradient():
    return _numeric_gradient


@pytest.fixture
def run_layer():
    return _run_layer


@pytest.fixture
def run_cell():
    return _run_cell


@pytest.fixture
def make_layer():
    return _make_layer


@pytest.fixture
def make_cell():
    return _make_cell


@pytest.fixture
def make_inputs():
    return _make_inputs


@pytest.fixture(params=CELLS)
def cell(request) -> str:
    """Every cell kind: rnn_tanh, rnn_relu, lstm, gru (reset after), gru_reset_before,
    indrnn_tanh, indrnn_relu."""
    return request.param


#: The kinds that take the regularization options (zoneout, input, recurrent and
#: weight dropout): all but IndRNN, whose classes do not offer them.
REGULARIZED_CELLS = tuple(c for c in CELLS if not c.startswith("indrnn"))


@pytest.fixture(params=REGULARIZED_CELLS)
def regularized_cell(request) -> str:
    """Every cell kind that takes all the regularization options (IndRNN takes
    no recurrent_dropout: tests/test_indrnn.py checks the others on it)."""
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request) -> np.dtype:
    return np.dtype(request.param)


@pytest.fixture
def naive_gemm():
    """The C kernels on their naive GEMM for the test; BLAS is restored after."""
    was_blas = _kernels.blas_enabled()
    _kernels.set_blas(False)
    try:
        assert not _kernels.blas_enabled(), "set_blas(False) did not select the naive GEMM"
        yield
    finally:
        _kernels.set_blas(was_blas)
