"""The general cells (ONNX's options): every activation with alpha/beta, clip,
LSTM peepholes and input_forget -- C against the reference, finite differences,
and the default path left alone. (ONNX Runtime as the oracle: test_onnx_options.py.)"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import ACTIVATION_DEFAULTS

T, B, I, H = 5, 3, 4, 5
LENGTHS = np.array([5, 2, 0])
ALL = sorted(ACTIVATION_DEFAULTS)
SMOOTH = ["sigmoid", "tanh", "affine", "scaled_tanh", "elu", "softsign", "softplus"]


def layer_of(kind, backend, dtype=np.float64, **kw):
    cls = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[kind]
    return cls(I, H, dtype=dtype, backend=backend, seed=5, **kw)


def run(layer, x, lengths=None):
    layer.zero_grad()
    out, st = layer(x, lengths=lengths)
    rng = np.random.default_rng(9)
    dy = rng.standard_normal(out.shape).astype(layer.dtype)
    dx, _ = layer.backward(dy)
    return {"output": out, "dx": dx, **{k: g.copy() for k, g in layer.grads.items()}}


def activation_sets(kind):
    """Each activation in each slot, with non-default alpha/beta where they matter."""
    n = {"rnn": 1, "lstm": 3, "gru": 2}[kind]
    sets = []
    for name in ALL:
        spec = (name, 0.3, 0.6) if name in ("affine", "leaky_relu", "thresholded_relu",
                                            "scaled_tanh", "hard_sigmoid", "elu") else name
        for slot in range(n):
            acts = list({"rnn": ["tanh"], "lstm": ["sigmoid", "tanh", "tanh"],
                         "gru": ["sigmoid", "tanh"]}[kind])
            acts[slot] = spec
            sets.append(acts)
    return sets


CASES = [(kind, acts) for kind in ("rnn", "lstm", "gru") for acts in activation_sets(kind)]


@pytest.mark.parametrize("kind,acts", CASES,
                         ids=[f"{k}-{'-'.join(a if isinstance(a, str) else a[0] for a in acts)}"
                              for k, acts in CASES])
def test_activation_c_matches_reference(kind, acts):
    x = np.random.default_rng(1).standard_normal((T, B, I)) * 2
    got = run(layer_of(kind, "c", activations=acts, bidirectional=True), x, LENGTHS)
    want = run(layer_of(kind, "numpy", activations=acts, bidirectional=True), x, LENGTHS)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12, err_msg=name)


OPTION_CASES = [
    ("rnn", dict(clip=0.7)),
    ("gru", dict(clip=0.5)),
    ("gru", dict(clip=0.5, reset_after=False, activations=["hard_sigmoid", "softsign"])),
    ("lstm", dict(clip=0.6)),
    ("lstm", dict(peepholes=True)),
    ("lstm", dict(input_forget=True)),
    ("lstm", dict(peepholes=True, input_forget=True, clip=1.5, proj_size=2)),
    ("lstm", dict(peepholes=True, activations=["hard_sigmoid", "elu", "softsign"],
                  num_layers=2, batch_first=True, direction="reverse")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", OPTION_CASES, ids=[f"{k}-{sorted(kw)}" for k, kw in OPTION_CASES])
def test_options_c_matches_reference(kind, kw, dtype):
    layer_c, layer_np = (layer_of(kind, b, dtype, **kw) for b in ("c", "numpy"))
    bf = kw.get("batch_first", False)
    x = (np.random.default_rng(2).standard_normal((B, T, I) if bf else (T, B, I)) * 2)
    got, want = run(layer_c, x.astype(dtype), LENGTHS), run(layer_np, x.astype(dtype), LENGTHS)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], err_msg=name, **tol)
    out, _ = layer_c(x.astype(dtype), lengths=LENGTHS, training=False)
    np.testing.assert_allclose(out, got["output"], rtol=1e-6, atol=1e-6)


def test_options_change_the_result():
    """Each option really reaches the kernels (a no-op option would pass the tests above)."""
    x = np.random.default_rng(3).standard_normal((T, B, I)) * 3
    base = layer_of("lstm", "c")(x)[0]
    for kw in (dict(clip=0.5), dict(input_forget=True), dict(activations=["sigmoid", "tanh",
                                                                           "softsign"])):
        assert not np.allclose(layer_of("lstm", "c", **kw)(x)[0], base), kw
    peep = layer_of("lstm", "c", peepholes=True)
    peep.weight_peephole_l0[...] = 0                   # zero peepholes: the plain cell
    np.testing.assert_allclose(peep(x)[0], base, rtol=1e-12, atol=1e-14)
    peep.weight_peephole_l0[...] = 0.5
    assert not np.allclose(peep(x)[0], base)


def test_default_options_keep_the_default_path():
    assert layer_of("lstm", "c", activations=["sigmoid", "tanh", "tanh"])._cell_options == (None,)
    assert layer_of("rnn", "c", activations=["tanh"])._cell_options == (None,)
    assert layer_of("gru", "c", clip=1.0)._cell_options[0] is not None


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("kind,kw", [
    ("rnn", dict(activations=[("scaled_tanh", 1.5, 0.7)], clip=2.5)),
    ("gru", dict(activations=["softsign", ("elu", 0.5)], reset_after=False)),
    ("gru", dict(activations=["softplus", ("affine", 0.8, 0.1)], clip=3.0)),
    ("lstm", dict(activations=["softsign", "softplus", ("scaled_tanh", 1.2, 0.9)],
                  peepholes=True, clip=4.0)),
    ("lstm", dict(peepholes=True, input_forget=True, proj_size=2)),
], ids=["rnn", "gru-rb", "gru", "lstm-peep", "lstm-coupled-proj"])
def test_finite_differences(kind, kw, backend, numeric_gradient):
    layer = layer_of(kind, backend, num_layers=2, bidirectional=True, **kw)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    out, _ = layer(x, lengths=LENGTHS)
    dy = rng.standard_normal(out.shape)

    def loss():
        return (layer(x, lengths=LENGTHS)[0] * dy).sum()

    layer.zero_grad()
    loss()
    dx, _ = layer.backward(dy)
    eps = 1e-6
    targets = [("x", x, dx)] + [(k, getattr(layer, k), layer.grads[k])
                                for k in layer.grads if "l1" in k or "peephole" in k]
    for name, arr, grad in targets:
        numeric = numeric_gradient(loss, arr, eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("kw,match", [
    (dict(activations=["tanh", "tanh"]), "activations"),
    (dict(activations=["swish"]), "activations"),
    (dict(activations=[("elu", 1.0, 2.0, 3.0)]), "activations"),
    (dict(clip=0), "clip"), (dict(clip=-1.0), "clip"), (dict(clip="big"), "clip"),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        layer_of("rnn", "c", **kw)
    with pytest.raises(TypeError, match="peepholes"):
        fastrnn.GRU(I, H, peepholes=True)          # an LSTM option
