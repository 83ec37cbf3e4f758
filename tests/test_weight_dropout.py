"""DropConnect on the recurrent weights (``weight_dropout=``, AWD-LSTM's weight
drop), in both backends.

One mask per training call, layer and direction, drawn from the layer's seeded
generator: the kernels run on W_hh * mask and the gradient of W_hh is the
masked weight's, masked. Two layers built with the same seed draw the same
masks, so the backends are compared tensor by tensor, the gradients with
central differences (the masks replayed), and both with PyTorch's autograd
through the same masked weight.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

from test_gradcheck import check_gradients

T, B, I, H = 5, 3, 4, 6

CASES = {
    "plain": {},
    "stacked_bi_bf_lengths": {"num_layers": 2, "bidirectional": True, "batch_first": True,
                              "lengths": [3, 5, 1]},
    "with_the_others": {"zoneout": 0.2, "input_dropout": 0.3, "dropout": 0.2, "num_layers": 2},
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_c_equals_reference_with_the_same_masks(cell, dtype, case, make_layer, make_inputs,
                                                run_layer, assert_tensors_close):
    kw = {k: v for k, v in case.items() if k != "lengths"}
    results = {}
    for backend in ("c", "numpy"):
        layer = make_layer(cell, I, H, dtype=dtype, seed=5, backend=backend, weight_dropout=0.4,
                           **kw)
        inputs = make_inputs(layer, T, B, seed=6)
        results[backend] = run_layer(layer, lengths=case.get("lengths"), **inputs)
    assert_tensors_close(results["c"], results["numpy"], dtype, context=f"{cell} weight drop")


@pytest.mark.parametrize("backend", ("c", "numpy"))
def test_gradients_match_finite_differences(cell, backend, make_layer, make_inputs,
                                            assert_close, numeric_gradient):
    layer = make_layer(cell, 2, 3, dtype=np.float64, seed=9, backend=backend, num_layers=2,
                       bidirectional=True, batch_first=True, weight_dropout=0.5)
    inputs = make_inputs(layer, 3, 3, seed=10)
    check_gradients(layer, inputs, [3, 1, 2], assert_close, numeric_gradient,
                    replay_masks=True)


def _recorded(layer):
    drawn = []
    draw = layer._weight_mask
    layer._weight_mask = lambda w: drawn.append(draw(w)) or drawn[-1]
    return drawn


def test_one_mask_per_call_layer_and_direction():
    layer = fastrnn.LSTM(3, 20, num_layers=2, bidirectional=True, weight_dropout=0.3, seed=1)
    drawn = _recorded(layer)
    x = np.ones((4, 2, 3), np.float32)
    layer(x)
    layer(x)
    assert len(drawn) == 8 and all(m.shape == (80, 20) for m in drawn)
    assert not np.array_equal(drawn[0], drawn[4])            # a new mask per call
    assert set(np.unique(drawn[0])) == {0, np.float32(1 / 0.7)}
    assert abs((drawn[0] == 0).mean() - 0.3) < 0.05
    layer.eval()(x)
    assert len(drawn) == 8                                     # inference: no mask


def test_inference_is_the_plain_layer_and_parameters_stay(cell, make_layer, make_inputs):
    plain = make_layer(cell, I, H, seed=4).eval()
    dropped = make_layer(cell, I, H, seed=4, weight_dropout=0.5)
    before = dropped.state_dict()
    inputs = make_inputs(plain, T, B, seed=4)
    out = dropped(inputs["x"])[0]
    dropped.backward(np.ones_like(out))
    for k, v in dropped.state_dict().items():
        np.testing.assert_array_equal(v, before[k])            # the mask never touches them
    np.testing.assert_array_equal(dropped.eval()(inputs["x"])[0], plain(inputs["x"])[0])


def test_bad_values_raise():
    for bad in (-0.1, 1.0, float("nan"), "0.1", None):
        with pytest.raises(ValueError, match="weight_dropout: expected a probability in"):
            fastrnn.GRU(2, 3, weight_dropout=bad)
    assert "weight_dropout=0.5" in repr(fastrnn.RNN(2, 3, weight_dropout=0.5))


@pytest.mark.parametrize("cell_kind", ["rnn_tanh", "lstm", "gru"])
def test_matches_pytorch_with_the_same_masks(cell_kind, make_layer, make_inputs, run_layer,
                                             assert_tensors_close, torch_expected):
    """torch's own cells on W_hh * mask, autograd to the unmasked W_hh."""
    torch = pytest.importorskip("torch")
    layer = make_layer(cell_kind, I, H, dtype=np.float64, seed=13, weight_dropout=0.4)
    inputs = make_inputs(layer, T, B, seed=14)
    drawn = _recorded(layer)
    got = run_layer(layer, **inputs)
    sd = {k[:-3]: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    w_hh = sd["weight_hh"] * torch.tensor(drawn[0])
    lstm = cell_kind == "lstm"
    x = torch.tensor(inputs["x"], requires_grad=True)
    h = h0 = torch.tensor(inputs["h0"][0], requires_grad=True)
    c = c0 = torch.tensor(inputs["c0"][0], requires_grad=True) if lstm else None
    outs = []
    for t in range(T):
        args = (sd["weight_ih"], w_hh, sd["bias_ih"], sd["bias_hh"])
        if lstm:
            h, c = torch.lstm_cell(x[t], (h, c), *args)
        elif cell_kind == "gru":
            h = torch.gru_cell(x[t], h, *args)
        else:
            h = torch.rnn_tanh_cell(x[t], h, *args)
        outs.append(h)
    expected = torch_expected(inputs, torch.stack(outs), h, c, x, h0, c0, sd)
    assert_tensors_close(got, expected, np.float64, context=f"{cell_kind} vs torch")


@pytest.fixture
def cell(regularized_cell):
    """This file's cell kinds: those that take the regularization options."""
    return regularized_cell


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_a_cell_keeps_its_mask_over_a_sequence_until_reset(kind):
    """A cell stepped over a sequence is the layer over it: one mask, drawn at
    the first training step and kept until reset_dropout_mask(); BPTT through
    the cell's tapes gives the layer's gradients."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(T, B, I))
    dy = rng.normal(size=(T, B, H))
    layer = getattr(fastrnn, kind)(I, H, dtype=np.float64, seed=21, weight_dropout=0.4)
    cell = getattr(fastrnn, kind + "Cell")(I, H, dtype=np.float64, seed=21, weight_dropout=0.4)
    assert "weight_dropout=0.4" in repr(cell)
    out = layer(x)[0]
    layer.backward(dy)
    lstm = kind == "LSTM"
    state, tapes = None, []
    for t in range(T):
        state = cell(x[t], state)
        h = state[0] if lstm else state
        np.testing.assert_allclose(h, out[t], rtol=1e-12, atol=1e-12)
        tapes.append(cell.tape)
    dh = np.zeros((B, H))
    dc = np.zeros((B, H)) if lstm else None
    for t in reversed(range(T)):
        if lstm:
            _, (dh, dc) = cell.backward((dh + dy[t], dc), tape=tapes[t])
        else:
            _, dh = cell.backward(dh + dy[t], tape=tapes[t])
    for name, g in cell.grads.items():
        np.testing.assert_allclose(g, layer.grads[name + "_l0"], rtol=1e-10, atol=1e-12)
    kept = cell._layer._kept_weight_mask
    cell.reset_dropout_mask()
    cell(x[0])
    assert not np.array_equal(cell._layer._kept_weight_mask, kept)   # a new mask
