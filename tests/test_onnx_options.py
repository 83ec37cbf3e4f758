"""ONNX Runtime as the oracle of ONNX's cell options: every activation (with
alpha/beta), clip, LSTM peepholes and input_forget, through layers exported
with fastrnn.export_onnx, in every direction, with unsorted lengths (0 included)
and non-zero initial states. ONNX Runtime's CPU kernels run float32 only."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

T, B, I, H = 6, 4, 3, 5
LENGTHS = np.array([6, 0, 3, 1], np.int32)
WITH_PARAMS = {"affine": (0.7, 0.2), "leaky_relu": (0.2,), "thresholded_relu": (0.1,),
               "scaled_tanh": (1.3, 0.8), "hard_sigmoid": (0.3, 0.45), "elu": (0.6,)}


def spec(name):
    return (name, *WITH_PARAMS[name]) if name in WITH_PARAMS else name


def ort_outputs(layer, x, h0, c0):
    model = fastrnn.export_onnx(layer)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"X": x, "sequence_lens": LENGTHS, "initial_h": h0, "initial_c": c0}
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def check(layer, seed=0):
    rng = np.random.default_rng(seed)
    D = layer.num_directions * layer.num_layers
    x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    c0 = rng.standard_normal((D, B, H)).astype(np.float32)
    lstm = isinstance(layer, fastrnn.LSTM)
    want = ort_outputs(layer, x, h0, c0 if lstm else None)
    for backend in ("c", "numpy"):
        layer.backend = backend
        if lstm:
            out, (h_n, c_n) = layer(x, (h0, c0), lengths=LENGTHS, training=False)
            got = [out, h_n, c_n]
        else:
            out, h_n = layer(x, h0, lengths=LENGTHS, training=False)
            got = [out, h_n]
        for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5,
                                       err_msg=f"{name} ({backend} backend)")


ACTS = sorted(fastrnn.ACTIVATION_DEFAULTS)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("name", ACTS)
def test_rnn_activation(name, direction):
    check(fastrnn.RNN(I, H, activations=[spec(name)], direction=direction, seed=1))


@pytest.mark.parametrize("reset_after", [True, False], ids=["lbr1", "lbr0"])
@pytest.mark.parametrize("slot", [0, 1])
@pytest.mark.parametrize("name", ACTS)
def test_gru_activation(name, slot, reset_after):
    acts = ["sigmoid", "tanh"]
    acts[slot] = spec(name)
    check(fastrnn.GRU(I, H, activations=acts, reset_after=reset_after, seed=2,
                      direction="bidirectional"))


@pytest.mark.parametrize("slot", [0, 1, 2])
@pytest.mark.parametrize("name", ACTS)
def test_lstm_activation(name, slot):
    acts = ["sigmoid", "tanh", "tanh"]
    acts[slot] = spec(name)
    check(fastrnn.LSTM(I, H, activations=acts, seed=3, direction="reverse"))


@pytest.mark.parametrize("kind,kw", [
    ("rnn", dict(clip=0.4)),
    ("gru", dict(clip=0.3, reset_after=False)),
    ("gru", dict(clip=0.3, bidirectional=True, batch_first=True)),
    ("lstm", dict(clip=0.5)),
    ("lstm", dict(peepholes=True)),
    ("lstm", dict(peepholes=True, direction="bidirectional")),
    ("lstm", dict(input_forget=True)),
    ("lstm", dict(peepholes=True, input_forget=True, clip=0.8, direction="reverse")),
    ("lstm", dict(peepholes=True, activations=[("hard_sigmoid", 0.25, 0.5), "softsign",
                                               ("elu", 0.7)], num_layers=2, batch_first=True)),
], ids=lambda v: v if isinstance(v, str) else "-".join(sorted(v)))
def test_options(kind, kw):
    cls = {"rnn": fastrnn.RNN, "gru": fastrnn.GRU, "lstm": fastrnn.LSTM}[kind]
    layer = cls(I, H, seed=4, **kw)
    for name in layer.grads:                       # peepholes large enough to matter
        if "peephole" in name:
            getattr(layer, name)[...] *= 3
    check(layer, seed=5)


def test_round_trip_keeps_options():
    layer = fastrnn.LSTM(I, H, peepholes=True, input_forget=True, clip=2.0, seed=6,
                         activations=[("hard_sigmoid", 0.3, 0.4), "softplus", "softsign"])
    back = fastrnn.load_onnx(fastrnn.export_onnx(layer))
    # ONNX attributes are float32
    assert [a[0] for a in back.activations] == [a[0] for a in layer.activations]
    np.testing.assert_allclose([a[1:] for a in back.activations],
                               [a[1:] for a in layer.activations], rtol=1e-7)
    assert back.clip == layer.clip
    assert back.peepholes and back.input_forget
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
