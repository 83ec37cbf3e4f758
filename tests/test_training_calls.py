"""Training-call safety (issue 8, item 5).

1. A forward is differentiated once, as in PyTorch ("Trying to backward
   through the graph a second time"): a second backward of the same forward
   raises ValueError and leaves ``grads`` alone, whether it comes through the
   layer's last forward or a ``tape=`` record; ``retain_graph=True`` on a
   backward keeps the forward for one more. Layers, Bidirectional and cells.
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
SECOND = "differentiated already"


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


# ===================================================== 1. one backward per forward

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True,
                                          "dropout": 0.5}], ids=["plain", "stacked"])
def test_second_backward_of_a_forward_is_refused(kind, backend, options):
    layer = layer_of(kind, backend, **options)
    out, _ = layer(rng_array(T, B, I))
    layer.backward(np.ones_like(out))
    once = grads_of(layer)
    with pytest.raises(ValueError, match=f"^backward: this forward was {SECOND}"):
        layer.backward(np.ones_like(out))
    assert_grads_equal(grads_of(layer), once)        # not doubled
    # a new forward can be differentiated again
    out, _ = layer(rng_array(T, B, I))
    layer.backward(np.ones_like(out))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first, second", [("plain", "tape"), ("tape", "plain"),
                                           ("tape", "tape")])
def test_tapes_are_differentiated_once_too(backend, first, second):
    layer = layer_of("gru", backend)
    out, _ = layer(rng_array(T, B, I))
    tape = layer.tape
    layer.backward(np.ones_like(out), tape=tape if first == "tape" else None)
    once = grads_of(layer)
    with pytest.raises(ValueError, match=SECOND):
        layer.backward(np.ones_like(out), tape=tape if second == "tape" else None)
    assert_grads_equal(grads_of(layer), once)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_bptt_with_tapes_still_works(backend):
    # each chunk's tape is differentiated once, last chunk first
    layer = layer_of("lstm", backend)
    out1, state = layer(rng_array(T, B, I, seed=1))
    tape1 = layer.tape
    out2, _ = layer(rng_array(T, B, I, seed=2), state)
    tape2 = layer.tape
    _, (dh, dc) = layer.backward(np.ones_like(out2), tape=tape2)
    layer.backward(np.ones_like(out1), (dh, dc), tape=tape1)
    with pytest.raises(ValueError, match=SECOND):
        layer.backward(np.ones_like(out1), tape=tape1)
    with pytest.raises(ValueError, match=SECOND):
        layer.backward(np.ones_like(out2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_retain_graph_allows_one_more_backward(kind, backend):
    layer = layer_of(kind, backend, num_layers=2)
    out, _ = layer(rng_array(T, B, I))
    dy = rng_array(*out.shape, seed=3)
    dx1, _ = layer.backward(dy, retain_graph=True)
    once = grads_of(layer)
    dx2, _ = layer.backward(dy)                     # allowed, and gives the same
    np.testing.assert_allclose(dx2, dx1, rtol=1e-12)
    for k, g in layer.grads.items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-12, err_msg=k)
    with pytest.raises(ValueError, match=SECOND):    # that one did not retain it
        layer.backward(dy)


def test_a_failed_backward_does_not_use_the_forward_up():
    layer = layer_of("gru")
    out, _ = layer(rng_array(T, B, I))
    with pytest.raises(ValueError, match="d_output"):
        layer.backward(np.ones((T, B, H + 1)))
    layer.backward(np.ones_like(out))                # the forward is still there


def test_a_tape_of_another_backend_is_refused():
    layer = layer_of("gru", "c")
    out, _ = layer(rng_array(T, B, I))
    tape = layer.tape
    layer.backend = "numpy"
    with pytest.raises(ValueError, match=r"^tape: expected a record of backend 'numpy', "
                                         r"got one of 'c'"):
        layer.backward(np.ones_like(out), tape=tape)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_wrapper_differentiates_once(merge_mode):
    bi = fastrnn.Bidirectional(layer_of("lstm"), merge_mode=merge_mode)
    out, _ = bi(rng_array(T, B, I))
    bi.backward(np.ones_like(out), retain_graph=True)
    bi.backward(np.ones_like(out))
    twice = grads_of(bi)
    with pytest.raises(ValueError, match=SECOND):
        bi.backward(np.ones_like(out))
    assert_grads_equal(grads_of(bi), twice)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.GRUCell, fastrnn.LSTMCell])
@pytest.mark.parametrize("use_tape", [False, True], ids=["last-call", "tape"])
def test_cells_differentiate_a_step_once(cls, backend, use_tape):
    cell = cls(I, H, dtype=np.float64, seed=0, backend=backend)
    lstm = cls is fastrnn.LSTMCell
    out = cell(rng_array(B, I))
    tape = cell.tape if use_tape else None
    d = (np.ones((B, H)), None) if lstm else np.ones((B, H))
    cell.backward(d, tape=tape, retain_graph=True)
    cell.backward(d, tape=tape)
    twice = grads_of(cell)
    with pytest.raises(ValueError, match=SECOND):
        cell.backward(d, tape=tape)
    assert_grads_equal(grads_of(cell), twice)
    assert (out[0] if lstm else out).shape == (B, H)


def test_a_differentiated_forward_gives_its_caches_back():
    # what backward needed is released with it (as PyTorch frees the graph):
    # the C backend's next forward of the same shape reuses the cache
    layer = layer_of("lstm")
    x = rng_array(T, B, I)
    for _ in range(3):
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
    assert len(layer._backend._caches) == 1      # one cache, reused by every forward


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
