"""Training-call safety (issue 8, item 5).

2. Weights move between a one-layer layer and its cell in one call: each
   one's load_state_dict takes the other's names; cells have
   named_parameters like everything that trains.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastrnn

T, B, I, H = 4, 3, 5, 6
BACKENDS = ["c", "numpy"]


def rng_array(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def layer_of(kind, backend="c", **kw):
    cls = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[kind]
    return cls(I, H, dtype=np.float64, seed=0, backend=backend, **kw)


def grads_of(m):
    return {k: v.copy() for k, v in m.grads.items()}


def assert_grads_equal(got, want):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ===================================================== 2. layers <-> cells

CELL_OF = {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_layer_loads_into_its_cell_and_back(kind, bias):
    layer = layer_of(kind, bias=bias)
    cell = CELL_OF[kind](I, H, bias=bias, dtype=np.float64, seed=5)
    cell.load_state_dict(layer.state_dict())
    assert set(cell.state_dict()) == {k[:-3] for k in layer.state_dict()}
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(cell.state_dict()[k[:-3]], v, err_msg=k)
    # the cell stepping through x gives the layer's output
    x = rng_array(T, B, I)
    out, _ = layer(x, training=False)
    state = None
    for t in range(T):
        state = cell(x[t], state, training=False)
        np.testing.assert_allclose(state[0] if kind == "lstm" else state, out[t], rtol=1e-12)
    # and back: another layer takes the cell's names
    other = layer_of(kind, bias=bias)
    other.load_state_dict({k: v + 1 for k, v in cell.state_dict().items()})
    for k, v in cell.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k + "_l0"], v + 1, err_msg=k)


def test_reverse_one_layer_layers_take_cell_names_too():
    layer = layer_of("gru", direction="reverse")
    layer.load_state_dict(fastrnn.GRUCell(I, H, dtype=np.float64).state_dict())


@pytest.mark.parametrize("options", [{"num_layers": 2}, {"bidirectional": True}])
def test_layers_of_several_cells_refuse_cell_names(options):
    layer = layer_of("lstm", **options)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=r"^state_dict: expected the names \['weight_ih_l0'"):
        layer.load_state_dict(fastrnn.LSTMCell(I, H, dtype=np.float64).state_dict())
    assert_grads_equal(layer.state_dict(), before)


def test_cell_messages_speak_of_the_names_given():
    cell = fastrnn.LSTMCell(I, H, dtype=np.float64)
    two_layers = layer_of("lstm", num_layers=2).state_dict()
    with pytest.raises(ValueError) as e:
        cell.load_state_dict(two_layers)
    message = str(e.value)
    assert "_l0_l0" not in message and "'weight_ih_l1'" in message, message
    assert re.search(r"^state_dict: expected the names \['weight_ih_l0', .*\] \(or the names "
                     r"\['weight_ih', ", message), message
    with pytest.raises(ValueError, match=r"^state_dict: expected the names \['weight_ih', "
                                         r".*missing \['bias_hh'\]"):
        cell.load_state_dict({k: v for k, v in cell.state_dict().items() if k != "bias_hh"})
    bad = cell.state_dict()
    bad["weight_hh"] = np.zeros((4 * H, H + 1))
    with pytest.raises(ValueError, match=r"^state_dict\['weight_hh'\]: expected shape "
                                         r"\(24, 6\), got \(24, 7\)"):
        cell.load_state_dict(bad)
    layer_names = layer_of("lstm").state_dict()
    layer_names["weight_hh_l0"] = np.zeros((4 * H, H + 1))
    with pytest.raises(ValueError, match=r"^state_dict\['weight_hh_l0'\]: expected shape"):
        cell.load_state_dict(layer_names)


def test_a_mix_of_both_namings_is_refused():
    cell = fastrnn.GRUCell(I, H, dtype=np.float64)
    mixed = cell.state_dict()
    mixed["weight_hh_l0"] = mixed.pop("weight_hh")
    before = cell.state_dict()
    with pytest.raises(ValueError, match=r"missing \['weight_hh'\].*unexpected "
                                         r"\['weight_hh_l0'\]"):
        cell.load_state_dict(mixed)
    assert_grads_equal(cell.state_dict(), before)


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.GRUCell, fastrnn.LSTMCell])
def test_cells_have_named_parameters(cls):
    cell = cls(I, H, seed=0)
    named = cell.named_parameters()
    assert [k for k, _ in named] == list(cell.state_dict())
    for (k, v), p in zip(named, cell.parameters()):
        assert v is p and v is getattr(cell, k)      # the live arrays
    assert set(cell.grads) == {k for k, _ in named}
