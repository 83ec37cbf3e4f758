"""Keras' variational dropout: ``input_dropout=`` and ``recurrent_dropout=`` on
every layer and cell, in both backends.

One keep-mask per sequence and per gate block (Keras' LSTMCell and GRUCell with
implementation 1, which Keras uses whenever recurrent_dropout is set), the same
at every step, drawn from the layer's seeded generator: two layers built with
the same seed draw the same masks, so the C kernels are compared with the NumPy
reference tensor by tensor, the gradients with central differences (the masks
replayed before each forward), and both with an independent PyTorch
implementation and with Keras 3 itself (on its torch backend), fed the same masks.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastrnn
from fastrnn.convert import to_keras

from test_gradcheck import check_gradients

T, B, I, H = 5, 3, 4, 6

CASES = {
    "plain": {},
    "stacked_bi_bf_lengths": {"num_layers": 2, "bidirectional": True, "batch_first": True,
                              "lengths": [3, 5, 1]},
    "reverse_lengths_dropout": {"direction": "reverse", "lengths": [5, 0, 2], "dropout": 0.2,
                                "num_layers": 2},
    "general_cells": {"clip": 5.0},
}


def _rates(cell, p_x=0.3, p_h=0.4):
    return {"input_dropout": p_x, "recurrent_dropout": p_h}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_c_equals_reference_with_the_same_masks(cell, dtype, case, make_layer, make_inputs,
                                                run_layer, assert_tensors_close):
    kw = {k: v for k, v in case.items() if k != "lengths"}
    results = {}
    for backend in ("c", "numpy"):
        layer = make_layer(cell, I, H, dtype=dtype, seed=5, backend=backend, **kw, **_rates(cell))
        inputs = make_inputs(layer, T, B, seed=6)
        results[backend] = run_layer(layer, lengths=case.get("lengths"), **inputs)
    assert_tensors_close(results["c"], results["numpy"], dtype, context=f"{cell} dropout")


def test_lstm_projection(dtype, make_inputs, run_layer, assert_tensors_close):
    results = {}
    for backend in ("c", "numpy"):
        layer = fastrnn.LSTM(I, H, proj_size=2, bidirectional=True, dtype=dtype, seed=7,
                             backend=backend, input_dropout=0.25, recurrent_dropout=0.5)
        inputs = make_inputs(layer, T, B, seed=8)
        inputs["h0"] = inputs["h0"][..., :2]
        inputs["dh_n"] = inputs["dh_n"][..., :2]
        inputs["dy"] = inputs["dy"][..., :4]
        results[backend] = run_layer(layer, lengths=[2, 5, 4], **inputs)
    assert_tensors_close(results["c"], results["numpy"], dtype, context="lstm proj dropout")


@pytest.mark.parametrize("backend", ("c", "numpy"))
def test_gradients_match_finite_differences(cell, backend, make_layer, make_inputs,
                                            assert_close, numeric_gradient):
    layer = make_layer(cell, 2, 3, dtype=np.float64, seed=9, backend=backend, num_layers=2,
                       bidirectional=True, batch_first=True, **_rates(cell, 0.4, 0.5))
    inputs = make_inputs(layer, 3, 3, seed=10)
    check_gradients(layer, inputs, [3, 1, 2], assert_close, numeric_gradient,
                    replay_masks=True)


def test_masks_per_sequence_and_gate():
    layer = fastrnn.LSTM(3, 40, input_dropout=0.25, recurrent_dropout=0.5, seed=1)
    mask_x, mask_h, p_x, p_h = layer._dropout_masks(200, 3, training=True)
    assert mask_x.dtype == np.uint8 and mask_x.shape == (4, 200, 3)
    assert mask_h.shape == (4, 200, 40) and (p_x, p_h) == (0.25, 0.5)
    assert abs(mask_x.mean() - 0.75) < 0.03 and abs(mask_h.mean() - 0.5) < 0.02
    assert not np.array_equal(mask_h[0], mask_h[1])        # a mask per gate block
    assert layer._dropout_masks(4, 3, training=False) is None


def test_inference_is_the_plain_layer(cell, make_layer, make_inputs):
    plain = make_layer(cell, I, H, seed=4).eval()
    dropped = make_layer(cell, I, H, seed=4, **_rates(cell)).eval()
    x = make_inputs(plain, T, B, seed=4)["x"]
    np.testing.assert_array_equal(dropped(x)[0], plain(x)[0])


def test_training_is_inverted_dropout():
    """Averaged over many masks, the input product with dropout is the plain one."""
    layer = fastrnn.RNN(3, 2, nonlinearity="relu", bias=False, input_dropout=0.5, seed=3,
                        dtype=np.float64)
    layer.weight_hh_l0 = np.zeros((2, 2))
    layer.weight_ih_l0 = np.abs(layer.weight_ih_l0)
    x = np.ones((1, 20000, 3))
    mean = layer(x)[0].mean(axis=(0, 1))
    np.testing.assert_allclose(mean, layer.weight_ih_l0.sum(1), rtol=0.03)


@pytest.mark.parametrize("backend", ("c", "numpy"))
def test_cells(cell, backend, dtype, make_cell, make_layer, run_cell, assert_tensors_close):
    """A cell with dropout is its one-step layer (same seed: same masks)."""
    one = make_cell(cell, I, H, dtype=dtype, seed=11, backend=backend, **_rates(cell))
    ref = make_layer(cell, I, H, dtype=dtype, seed=11, backend="numpy", **_rates(cell))
    rng = np.random.default_rng(12)
    x, h, c, dh, dc = (rng.standard_normal(s).astype(dtype) for s in
                       ((B, I), (B, H), (B, H), (B, H), (B, H)))
    if cell == "lstm":
        got = run_cell(one, x, h, c, dh, dc)
        h1, c1 = ref(x[None], (h[None], c[None]))[1]
        dx, (dh0, dc0) = ref.backward(None, (dh[None], dc[None]))
        expected = {"h": h1[0], "c": c1[0], "dx": dx[0], "dh": dh0[0], "dc": dc0[0]}
    else:
        got = run_cell(one, x, h, None, dh)
        h1 = ref(x[None], h[None])[1]
        dx, dh0 = ref.backward(None, dh[None])
        expected = {"h": h1[0], "dx": dx[0], "dh": dh0[0]}
    expected.update({f"grads[{k[:-3]}]": g for k, g in ref.grads.items()})
    assert_tensors_close(got, expected, dtype, context=f"{cell} cell dropout")


def test_cells_keep_their_masks_until_reset():
    """One mask for every step of a sequence stepped through a cell, as Keras' cells."""
    cell = fastrnn.GRUCell(3, 4, input_dropout=0.5, recurrent_dropout=0.5, seed=2)
    drawn = _recorded(cell._layer)
    x = np.ones((2, 3), np.float32)
    h = cell(x)
    cell(x, h)
    assert drawn[0][0] is drawn[1][0] and drawn[0][1] is drawn[1][1]
    cell.reset_dropout_mask()
    cell(x, h)
    assert drawn[2][0] is not drawn[1][0]
    cell(np.ones((5, 3), np.float32))     # another batch size: new masks
    assert drawn[3][0].shape == (3, 5, 3)


def test_bad_values_raise():
    for name in ("input_dropout", "recurrent_dropout"):
        for bad in (-0.1, 1.0, float("nan"), "0.1"):
            with pytest.raises(ValueError, match=f"{name}: expected a probability in"):
                fastrnn.LSTM(2, 3, **{name: bad})
    fastrnn.GRU(2, 3, reset_after=False, input_dropout=0.1, recurrent_dropout=0.1)


def test_binding_checks_masks():
    from fastrnn import _kernels
    layer = fastrnn.LSTM(2, 3, seed=0)
    x = np.zeros((4, 2, 2), np.float32)
    h0 = np.zeros((2, 3), np.float32)
    y = np.empty((4, 2, 3), np.float32)
    cache = np.empty(_kernels.cache_size("lstm", 4, 2, 2, 3), np.float32)
    work = np.empty(_kernels.forward_work_size("lstm", 4, 2, 2, 3, True, 0, False, True),
                    np.float32)
    w = layer._weights(0, "", layer._params)[:5]

    def run(dropout, training=True):
        _kernels.forward("lstm", x, h0, h0, *w, None, y, 0, np.empty_like(h0), np.empty_like(h0),
                         cache if training else None, work, False, False, dropout=dropout)

    run((np.ones((4, 2, 2), np.uint8), np.ones((4, 2, 3), np.uint8), 0.5, 0.5))
    with pytest.raises(TypeError, match="mask_x: expected dtype uint8"):
        run((np.ones((4, 2, 2), np.float32), None, 0.5, 0.0))
    with pytest.raises(ValueError, match="mask_h: expected shape"):
        run((None, np.ones((3, 2, 3), np.uint8), 0.0, 0.5))
    with pytest.raises(ValueError, match="C-contiguous"):
        run((np.ones((4, 2, 4), np.uint8)[..., ::2], None, 0.5, 0.0))
    with pytest.raises(ValueError, match="p_x must be in"):
        run((None, None, 1.0, 0.0))
    with pytest.raises(ValueError, match="training calls"):
        run((np.ones((4, 2, 2), np.uint8), None, 0.5, 0.0), training=False)


# ------------------------------------------------------------------ PyTorch

def _recorded(layer):
    """Record the masks the layer draws (white box: layer._dropout_masks)."""
    drawn = []
    draw = layer._dropout_masks
    layer._dropout_masks = lambda *a: drawn.append(draw(*a)) or drawn[-1]
    return drawn


def _torch_run(cell, sd, x, h0, c0, keep_x, keep_h):
    """An independent implementation in torch ops: per gate block g, the input
    product (x * keep_x[g]) W_ih_g^T and the recurrent (h * keep_h[g]) W_hh_g^T."""
    import torch
    G = len(keep_x)
    w_ih, w_hh = sd["weight_ih"].chunk(G), sd["weight_hh"].chunk(G)
    h, c, outs = h0, c0, []
    for t in range(x.shape[0]):
        gi = torch.cat([(x[t] * keep_x[g]) @ w_ih[g].T for g in range(G)], 1) + sd["bias_ih"]
        gh = torch.cat([(h * keep_h[g]) @ w_hh[g].T for g in range(G)], 1) + sd["bias_hh"]
        if cell == "gru_reset_before":   # Keras: the n block reads r * (h * keep_h[2])
            ir, iz, in_ = gi.chunk(3, 1)
            hr, hz, _ = gh.chunk(3, 1)
            b_hn = sd["bias_hh"].chunk(3)[2]
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + (r * (h * keep_h[2])) @ w_hh[2].T + b_hn)
            h = (1 - z) * n + z * h
        elif cell == "lstm":
            i, f, g_, o = (gi + gh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g_)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif cell == "gru":
            ir, iz, in_ = gi.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            h = (1 - z) * torch.tanh(in_ + r * hn) + z * h
        else:
            h = torch.tanh(gi + gh) if cell == "rnn_tanh" else torch.relu(gi + gh)
        outs.append(h)
    return torch.stack(outs), h, c


@pytest.mark.parametrize("cell_kind", ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"])
def test_matches_pytorch_with_the_same_masks(cell_kind, make_layer, make_inputs, run_layer,
                                             assert_tensors_close, torch_expected):
    torch = pytest.importorskip("torch")
    layer = make_layer(cell_kind, I, H, dtype=np.float64, seed=13, **_rates(cell_kind))
    inputs = make_inputs(layer, T, B, seed=14)
    drawn = _recorded(layer)
    got = run_layer(layer, **inputs)
    mask_x, mask_h, p_x, p_h = drawn[0]
    keep_x = torch.tensor(mask_x / (1 - p_x))
    keep_h = torch.tensor(mask_h / (1 - p_h))
    sd = {k[:-3]: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    lstm = cell_kind == "lstm"
    x = torch.tensor(inputs["x"], requires_grad=True)
    h0 = torch.tensor(inputs["h0"][0], requires_grad=True)
    c0 = torch.tensor(inputs["c0"][0], requires_grad=True) if lstm else None
    out, h_n, c_n = _torch_run(cell_kind, sd, x, h0, c0, keep_x, keep_h)
    expected = torch_expected(inputs, out, h_n, c_n, x, h0, c0, sd)
    assert_tensors_close(got, expected, np.float64, context=f"{cell_kind} vs torch")


# ------------------------------------------------------------------ Keras 3

@pytest.fixture
def keras():
    """Keras 3 on its torch backend (pip install ".[torch]")."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch", reason="Keras runs on its torch backend here")
    keras = pytest.importorskip("keras", reason="keras is not installed")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on {keras.backend.backend()!r}, not torch")
    return keras


# Keras' GRU masks are in its gate order z, r, h; fastrnn's in r, z, n
KERAS_GATES = {"lstm": [0, 1, 2, 3], "gru": [1, 0, 2], "gru_reset_before": [1, 0, 2],
               "rnn_tanh": [0]}


@pytest.mark.parametrize("cell_kind", ["lstm", "gru", "gru_reset_before", "rnn_tanh"])
def test_matches_keras_with_the_same_masks(keras, cell_kind, make_layer):
    """Keras' own LSTM/GRU/SimpleRNN in training, its dropout masks replaced by
    fastrnn's: the outputs, dx and the kernel gradients agree."""
    import torch
    layer = make_layer(cell_kind, I, H, dtype=np.float32, seed=17, batch_first=True,
                       **_rates(cell_kind))
    drawn = _recorded(layer)
    x = np.random.default_rng(18).standard_normal((B, T, I)).astype(np.float32)
    dy = np.random.default_rng(19).standard_normal((B, T, H)).astype(np.float32)
    out = layer(x)[0]
    dx, _ = layer.backward(dy)[:2] if cell_kind != "lstm" else (layer.backward(dy)[0], None)
    mask_x, mask_h, p_x, p_h = drawn[0]
    order = KERAS_GATES[cell_kind]
    kx = [torch.tensor(mask_x[g] / (1 - p_x), dtype=torch.float32) for g in order]
    kh = [torch.tensor(mask_h[g] / (1 - p_h), dtype=torch.float32) for g in order]
    L = keras.layers
    kw = dict(return_sequences=True, dropout=0.3, recurrent_dropout=0.4)
    klayer = (L.LSTM(H, **kw) if cell_kind == "lstm" else
              L.GRU(H, reset_after=cell_kind == "gru", **kw) if cell_kind.startswith("gru")
              else L.SimpleRNN(H, **kw))
    klayer.build((B, T, I))
    klayer.set_weights(to_keras(layer))
    kcell = klayer.cell
    if cell_kind == "rnn_tanh":     # SimpleRNN: one mask each (G = 1)
        kx, kh = kx[0], kh[0]
    kcell.get_dropout_mask = lambda inputs: kx
    kcell.get_recurrent_dropout_mask = lambda state: kh
    xt = torch.tensor(x, requires_grad=True)
    kout = klayer(xt, training=True)
    (kout * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(kout.detach().numpy(), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-4, atol=1e-5)
    # the parameter gradients in Keras' layout: to_keras of a layer holding fastrnn's
    grads = make_layer(cell_kind, I, H, dtype=np.float32, seed=17, batch_first=True)
    grads.load_state_dict(layer.grads)
    expected = to_keras(grads)
    for k, (w, e) in enumerate(zip(klayer.trainable_weights, expected)):
        g = w.value.grad.numpy()
        if cell_kind in ("lstm", "rnn_tanh", "gru_reset_before") and k == 2:
            e = e / 2    # Keras' one bias is b_ih + b_hh, whose gradients are equal
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=w.path)


def test_from_keras_carries_the_rates(keras):
    klayer = keras.layers.GRU(H, dropout=0.25, recurrent_dropout=0.5)
    klayer.build((B, T, I))
    config = klayer.get_config()
    layer = fastrnn.from_keras("GRU", klayer.get_weights(), dropout=config["dropout"],
                               recurrent_dropout=config["recurrent_dropout"])
    assert (layer.input_dropout, layer.recurrent_dropout) == (0.25, 0.5)


@pytest.fixture
def cell(regularized_cell):
    """This file's cell kinds: those that take the regularization options."""
    return regularized_cell
