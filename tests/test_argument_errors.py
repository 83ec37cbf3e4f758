"""One kind of error (issue 8, item 4, outside ONNX and load).

Each case was found raising a message that named no argument (numpy's or
Python's own: "too many values to unpack", "'int' object is not iterable",
"could not convert string to float") or one that misled; each now raises
ValueError or TypeError whose message starts with the argument's name and
says what was expected and what was got, and leaves the object as it was.
(Sizes: tests/test_limits.py; load: tests/test_load_errors.py.)
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastrnn

T, B, I, H = 4, 2, 3, 5


def starts_with(arg):
    return rf"^{re.escape(arg)}: expected"


# ------------------------------------------------------------- constructors

@pytest.mark.parametrize("activations", [5, 2.5, object()], ids=["int", "float", "object"])
def test_activations_of_the_wrong_type(activations):
    with pytest.raises(TypeError, match=starts_with("activations")):
        fastrnn.RNN(I, H, activations=activations)


@pytest.mark.parametrize("spec", [5, [], ("swish", 1.0), ("tanh", 1, 2, 3)],
                         ids=["int", "empty", "unknown", "four"])
def test_activation_entries_that_are_not_a_name(spec):
    with pytest.raises(ValueError, match=starts_with("activations")):
        fastrnn.RNN(I, H, activations=[spec])


@pytest.mark.parametrize("alpha", ["x", None, [1.0], True], ids=["str", "None", "list", "bool"])
def test_alpha_and_beta_must_be_numbers(alpha):
    with pytest.raises(TypeError, match=starts_with("activations") + ".*real numbers"):
        fastrnn.GRU(I, H, activations=[("hard_sigmoid", alpha), "tanh"])
    with pytest.raises(TypeError, match=starts_with("activations")):
        fastrnn.GRU(I, H, activations=[("hard_sigmoid", 0.2, alpha), "tanh"])


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), ("a", TypeError), (1.5, TypeError),
                                       ([1, -2], ValueError)],
                         ids=["negative", "str", "float", "negative-in-list"])
@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTMCell])
def test_bad_seeds(cls, seed, exc):
    with pytest.raises(exc, match=starts_with("seed") + f" None or a non-negative integer, "
                                                        f"got {re.escape(repr(seed))}"):
        cls(I, H, seed=seed)


@pytest.mark.parametrize("mode", ["x", 1, None])
def test_train_mode_must_be_a_bool(mode):
    layer = fastrnn.GRU(I, H).eval()
    with pytest.raises(TypeError, match=starts_with("mode") + " True or False"):
        layer.train(mode)
    assert layer.training is False
    with pytest.raises(TypeError, match=starts_with("mode")):
        fastrnn.Bidirectional(fastrnn.GRU(I, H)).train(mode)


@pytest.mark.parametrize("training", ["x", 2])
def test_training_argument_must_be_a_bool(training):
    layer = fastrnn.LSTM(I, H)
    with pytest.raises(TypeError, match=starts_with("training") + " True or False"):
        layer(np.ones((T, B, I)), training=training)


# ------------------------------------------------------------- states

@pytest.mark.parametrize("cls", [fastrnn.GRU, fastrnn.RNN])
@pytest.mark.parametrize("second", ["array", "None"])
def test_an_lstm_state_given_to_a_gru_or_rnn(cls, second):
    layer = cls(I, H)
    h = np.zeros((1, B, H))
    with pytest.raises(TypeError, match=starts_with("h0") + r" one array of shape \(1, 2, 5\)"
                                        r".*got a tuple of 2 \(an \(h, c\) pair is an LSTM"):
        layer(np.ones((T, B, I)), (h, h if second == "array" else None))
    out, _ = layer(np.ones((T, B, I)))
    with pytest.raises(TypeError, match=starts_with("d_h_n") + ".*tuple of 2"):
        layer.backward(np.ones_like(out), (h, h))


@pytest.mark.parametrize("cls", [fastrnn.GRUCell, fastrnn.RNNCell])
@pytest.mark.parametrize("training", [True, False])
def test_an_lstm_state_given_to_a_cell(cls, training):
    cell = cls(I, H)
    h = np.zeros((B, H))
    with pytest.raises(TypeError, match=starts_with("h") + r" one array of shape \(2, 5\).*"
                                        r"tuple of 2"):
        cell(np.ones((B, I)), (h, h), training=training)


def test_a_tuple_state_that_is_an_array_still_works():
    # a tuple of per-layer states is an array-like of the right shape: accepted
    layer = fastrnn.GRU(I, H, num_layers=2, seed=0)
    h = np.random.default_rng(0).standard_normal((2, B, H))
    want, _ = layer(np.ones((T, B, I)), h)
    got, _ = layer(np.ones((T, B, I)), (h[0], h[1]))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cls", [fastrnn.GRUCell, fastrnn.LSTMCell])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape, what", [((0,), "input_size: got 0 expected 3"),
                                         ((B, 0), "input_size: got 0 expected 3"),
                                         ((0, I), r"non-empty input, got shape \(0, 3\)")])
def test_empty_cell_inputs(cls, training, shape, what):
    with pytest.raises(ValueError, match=rf"^x: .*{what}"):
        cls(I, H)(np.zeros(shape), training=training)


def test_an_lstm_state_of_three():
    with pytest.raises(TypeError, match=starts_with("state") + r" a tuple \(h, c\) or None, "
                                        r"got a tuple of 3"):
        fastrnn.LSTM(I, H)(np.ones((T, B, I)), (1, 2, 3))


# ------------------------------------------------------------- load_state_dict

def test_missing_keys_say_what_was_expected():
    layer = fastrnn.GRU(I, H, num_layers=2)
    sd = layer.state_dict()
    del sd["bias_hh_l1"]
    with pytest.raises(ValueError) as e:
        layer.load_state_dict(sd)
    message = str(e.value)
    assert message.startswith("state_dict: expected the names ['weight_ih_l0', "), message
    assert "missing ['bias_hh_l1']" in message and "unexpected" not in message, message
    with pytest.raises(ValueError, match=r"^state_dict: .*got unexpected \['extra'\]$"):
        layer.load_state_dict({**layer.state_dict(), "extra": 1})


# ------------------------------------------------------------- tapes

def test_a_tape_recorded_before_the_backend_changed():
    layer = fastrnn.GRU(I, H)
    out, _ = layer(np.ones((T, B, I)))
    tape = layer.tape
    layer.backend = "numpy"
    with pytest.raises(ValueError, match=r"^tape: expected a record of backend 'numpy', got "
                                         r"one of 'c'"):
        layer.backward(np.ones_like(out), tape=tape)
    layer.backend = "c"                               # its own backend again: accepted
    dx, _ = layer.backward(np.ones_like(out), tape=tape)
    assert dx.shape == (T, B, I)


def test_a_tape_that_is_not_a_tape():
    layer = fastrnn.GRU(I, H)
    layer(np.ones((T, B, I)))
    with pytest.raises(ValueError, match=r"^tape: expected a Tape .*, got str"):
        layer.backward(None, tape="tape")


# ------------------------------------------------------------- unchanged when raising

@pytest.mark.parametrize("cls", [fastrnn.GRUCell, fastrnn.LSTMCell])
def test_a_failed_cell_call_leaves_the_cell_as_it_was(cls):
    # a batched training step, then an unbatched call that fails on its state:
    # backward still differentiates the batched step with its shapes
    cell = cls(I, H, dtype=np.float64, seed=0)
    lstm = cls is fastrnn.LSTMCell
    out = cell(np.ones((B, I)))
    bad = np.zeros(H + 1)
    with pytest.raises(ValueError, match="h"):
        cell(np.ones(I), (bad, None) if lstm else bad)
    d = (np.ones((B, H)), None) if lstm else np.ones((B, H))
    dx, _ = cell.backward(d)
    assert dx.shape == (B, I) and (out[0] if lstm else out).shape == (B, H)


@pytest.mark.parametrize("bad_call", [
    lambda m: m(np.ones((T, B, I + 1))),
    lambda m: m(np.ones((T, B, I)), np.zeros((1, B + 1, H))),
    lambda m: m(np.ones((T, B, I)), lengths=[T + 1, 1]),
    lambda m: m(np.ones((T, B, I)), training="yes"),
    lambda m: m.backward(np.ones((T, B, H + 1))),
    lambda m: m.train("no"),
    lambda m: m.load_state_dict({"weight_ih_l0": 1}),
], ids=["x", "h0", "lengths", "training", "d_output", "train", "load_state_dict"])
def test_a_failed_call_leaves_the_layer_as_it_was(bad_call):
    layer = fastrnn.GRU(I, H, dtype=np.float64, seed=0)
    x = np.random.default_rng(1).standard_normal((T, B, I))
    out, _ = layer(x)
    params = layer.state_dict()
    with pytest.raises((ValueError, TypeError)):
        bad_call(layer)
    assert layer.training is True
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)
    dx, _ = layer.backward(np.ones_like(out))        # the good forward is still there
    twin = fastrnn.GRU(I, H, dtype=np.float64, seed=0)
    out2, _ = twin(x)
    want, _ = twin.backward(np.ones_like(out2))
    np.testing.assert_array_equal(dx, want)
