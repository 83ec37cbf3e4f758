"""Layer normalization (Ba et al. 2016, haste's LayerNormLSTM/LayerNormGRU):
``layer_norm=True`` on LSTM, GRU (reset after), LSTMCell and GRUCell.

With random gains and shifts: the C kernels against the NumPy reference tensor
by tensor (lengths, directions, stacking, the regularizers' masks drawn alike
from the same seed), against central differences, and against a PyTorch
2-layer bidirectional stack written here; the inference paths against
training's forward; the cells against the layer; parameters, persistence,
refusals; and LN's semantics (it changes the layer; W_ih's scale does not).
The reference's own tests are tests/test_layer_norm_reference.py.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels
from fastrnn.convert import export_onnx, to_keras, to_onnx

from test_gradcheck import check_gradients

T, B, I, H = 5, 3, 4, 6
LN_CELLS = ("lstm", "gru")

CASES = {
    "plain": {},
    "stacked_bi_bf_lengths": {"num_layers": 2, "bidirectional": True, "batch_first": True,
                              "lengths": [3, 5, 0]},
    "reverse_nobias_lengths": {"direction": "reverse", "bias": False, "lengths": [0, 2, 5]},
    "regularized_stacked": {"num_layers": 2, "dropout": 0.2, "zoneout": 0.3,
                            "input_dropout": 0.3, "recurrent_dropout": 0.4,
                            "weight_dropout": 0.2, "lengths": [5, 1, 4]},
}


def _randomize_ln(layer, seed):
    """Gains in [0.5, 1.5], ln_bias_c in [-0.5, 0.5] (the defaults 1 and 0 would
    hide a gain or shift applied to the wrong columns)."""
    rng, sd = np.random.default_rng(seed), layer.state_dict()
    for k, v in sd.items():
        if k.startswith("ln_"):      # ln_bias_c: minus 1
            sd[k] = rng.uniform(0.5, 1.5, v.shape) - k.startswith("ln_bias")
    layer.load_state_dict(sd)
    return layer


def _forward(layer, inputs, lengths=None, training=None):
    """output, h_n, c_n (None for the GRU)."""
    if fastrnn.LSTM in type(getattr(layer, "layer", layer)).__mro__:
        out, (h, c) = layer(inputs["x"], (inputs["h0"], inputs["c0"]), lengths=lengths,
                            training=training)
        return out, h, c
    out, h = layer(inputs["x"], inputs["h0"], lengths=lengths, training=training)
    return out, h, None


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("cell", LN_CELLS)
def test_c_equals_reference(cell, dtype, case, make_layer, make_inputs, run_layer,
                            assert_tensors_close):
    kw, lengths = {k: v for k, v in case.items() if k != "lengths"}, case.get("lengths")
    if cell == "lstm" and "zoneout" in kw:
        kw["cell_zoneout"] = 0.4
    results = {}
    for backend in ("c", "numpy"):
        layer = _randomize_ln(make_layer(cell, I, H, dtype=dtype, seed=5, backend=backend,
                                         layer_norm=True, **kw), seed=1)
        inputs = make_inputs(layer, T, B, seed=6)
        results[backend] = run_layer(layer, lengths=lengths, **inputs)
        ln_grads = [v for k, v in results[backend].items() if k.startswith("grads[ln_")]
        assert len(ln_grads) >= 2 and all(g.any() for g in ln_grads), "ln gradients missing"
        evaluated = zip(("output", "h_n", "c_n"), _forward(layer, inputs, lengths, training=False))
        results[backend].update({f"{k}[eval]": v for k, v in evaluated if v is not None})
    assert_tensors_close(results["c"], results["numpy"], dtype, context=f"{cell} layer_norm")


@pytest.mark.parametrize("masks", [False, True], ids=["plain", "zoneout_dropout"])
@pytest.mark.parametrize("cell", LN_CELLS)
def test_gradients_match_finite_differences(cell, masks, make_layer, make_inputs, assert_close,
                                            numeric_gradient):
    kw = {"zoneout": 0.3, "input_dropout": 0.4, "recurrent_dropout": 0.5, "weight_dropout": 0.3,
          **({"cell_zoneout": 0.4} if cell == "lstm" else {})} if masks else {}
    layer = _randomize_ln(make_layer(cell, 2, 3, dtype=np.float64, seed=9, num_layers=2,
                                     bidirectional=True, batch_first=True, layer_norm=True,
                                     bias=not masks, **kw), seed=2)
    inputs = make_inputs(layer, 3, 3, seed=10)
    check_gradients(layer, inputs, [3, 1, 2], assert_close, numeric_gradient,
                    replay_masks=masks)


# ------------------------------------------------------------------ PyTorch

def _torch_stack(torch, layer, inputs, lengths):
    """An independent 2-layer bidirectional LN-LSTM/LN-GRU in torch ops, time
    major, float64: output, h_n, c_n and the gradients of sum(out*dy) +
    sum(h_n*dh_n) [+ sum(c_n*dc_n)], under run_layer's names."""
    F = torch.nn.functional
    lstm = isinstance(layer, fastrnn.LSTM)
    arrays = {"x": inputs["x"], "h0": inputs["h0"], **({"c0": inputs["c0"]} if lstm else {}),
              **{f"grads[{k}]": v for k, v in layer.state_dict().items()}}
    leaf = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
            for k, v in arrays.items()}
    x = leaf["x"]
    keep = torch.tensor(np.arange(T)[:, None] < np.asarray(lengths)[None, :])[..., None]

    def ln(a, gain, shift=None):
        return F.layer_norm(a, (a.shape[-1],), weight=gain, bias=shift, eps=1e-5)

    h_n, c_n = [], []
    for k in range(layer.num_layers):
        halves = []
        for d, suffix in enumerate(("", "_reverse")):
            p = lambda name: leaf.get(f"grads[{name}_l{k}{suffix}]")   # noqa: E731
            h = leaf["h0"][2 * k + d]
            c = leaf["c0"][2 * k + d] if lstm else None
            ys = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                gi = ln(x[t] @ p("weight_ih").T, p("ln_weight_ih"), p("bias_ih"))
                gh = ln(h @ p("weight_hh").T, p("ln_weight_hh"), p("bias_hh"))
                if lstm:
                    i, f, g, o = (gi + gh).chunk(4, 1)
                    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h_new = torch.sigmoid(o) * torch.tanh(ln(c_new, p("ln_weight_c"),
                                                             p("ln_bias_c")))
                    c = torch.where(keep[t], c_new, c)
                else:
                    (ir, iz, in_), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    h_new = (1 - z) * torch.tanh(in_ + r * hn) + z * h
                ys[t] = torch.where(keep[t], h_new, torch.zeros_like(h_new))
                h = torch.where(keep[t], h_new, h)
            halves.append(torch.stack(ys))
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(halves, -1)
    result = {"output": x, "h_n": torch.stack(h_n), **({"c_n": torch.stack(c_n)} if lstm else {})}
    upstream = {"output": "dy", "h_n": "dh_n", "c_n": "dc_n"}
    loss = sum((v * torch.tensor(np.asarray(inputs[upstream[k]], np.float64))).sum()
               for k, v in result.items())
    loss.backward()
    result = {k: v.detach().numpy() for k, v in result.items()}
    for name, t in leaf.items():
        result[name if name.startswith("grads[") else "d" + name] = t.grad.numpy()
    return result


@pytest.mark.parametrize("cell", LN_CELLS)
def test_matches_pytorch(cell, dtype, make_layer, make_inputs, run_layer, assert_tensors_close):
    torch = pytest.importorskip("torch")
    layer = _randomize_ln(make_layer(cell, I, H, dtype=dtype, seed=13, num_layers=2,
                                     bidirectional=True, layer_norm=True), seed=3)
    inputs = make_inputs(layer, T, B, seed=14)
    lengths = [5, 0, 3]
    got = run_layer(layer, lengths=lengths, **inputs)
    expected = _torch_stack(torch, layer, inputs, lengths)
    if dtype == np.float64:
        assert_tensors_close(got, expected, dtype, context=f"{cell} vs torch")
        return
    assert got.keys() == expected.keys()
    for name, value in expected.items():   # float32 against float64: loose
        np.testing.assert_allclose(got[name], value, rtol=5e-5, atol=5e-6 * np.abs(value).max(),
                                   err_msg=f"{cell} float32 vs torch: {name}")


# ------------------------------------------------------------------ inference paths

@pytest.mark.parametrize("hidden", [64, 96])
@pytest.mark.parametrize("cell", LN_CELLS)
def test_inference_equals_training_forward(cell, hidden, dtype, make_layer, assert_close):
    """B = 1 (one-row kernels), 2, 24 and 64 (with two threads: slices of the
    batch, each projecting its own rows), T = 11 (several projection chunks at
    B = 24 and 64); batch-first at H = 96, with lengths 0 and T."""
    before = fastrnn.get_num_threads()
    rng = np.random.default_rng(hidden)
    layer = _randomize_ln(make_layer(cell, 16, hidden, dtype=dtype, seed=15, layer_norm=True,
                                     bidirectional=True, batch_first=hidden == 96), seed=4)
    try:
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            for batch in (1, 2, 24, 64):
                x = rng.uniform(-1, 1, (batch, 11, 16) if layer.batch_first
                                else (11, batch, 16)).astype(dtype)
                h0 = rng.uniform(-1, 1, (2, batch, hidden)).astype(dtype)
                inputs = {"x": x, "h0": h0, "c0": h0[::-1].copy()}
                lengths = None if batch == 1 else np.r_[0, 11, rng.integers(0, 12, batch - 2)]
                if threads == fastrnn.get_num_threads() == 2:   # still the sliced loop?
                    assert _kernels.loop_threads(cell, 11, batch, 16, hidden, False) == \
                        (2 if batch >= 24 else 1)
                train = _forward(layer, inputs, lengths, training=True)
                infer = _forward(layer, inputs, lengths, training=False)
                for name, a, b in zip(("output", "h_n", "c_n"), infer, train):
                    if b is not None:
                        assert_close(f"{name} B={batch} threads={threads}", a, b, dtype)
    finally:
        fastrnn.set_num_threads(before)


# ------------------------------------------------------------------ cells

@pytest.mark.parametrize("backend", ("c", "numpy"))
@pytest.mark.parametrize("cell", LN_CELLS)
def test_cell_stepped_equals_the_layer(cell, backend, dtype, make_layer, make_cell,
                                       make_inputs, run_layer, assert_tensors_close):
    lstm = cell == "lstm"
    layer = _randomize_ln(make_layer(cell, I, H, dtype=dtype, seed=16, backend=backend,
                                     layer_norm=True), seed=5)
    one = make_cell(cell, I, H, dtype=dtype, backend=backend, layer_norm=True)
    assert set(one.state_dict()) == {k[:-3] for k in layer.state_dict()}
    assert {k for k in one.state_dict() if k.startswith("ln_")} == (
        {"ln_weight_ih", "ln_weight_hh"} | ({"ln_weight_c", "ln_bias_c"} if lstm else set()))
    one.load_state_dict(layer.state_dict())
    inputs = make_inputs(layer, T, B, seed=17)
    x, h, c = inputs["x"], inputs["h0"][0], inputs["c0"][0] if lstm else None
    expected = run_layer(layer, **inputs)

    ys, tapes = [], []                                # forward, step by step
    for t in range(T):
        h, c = one(x[t], (h, c)) if lstm else (one(x[t], h), None)
        ys.append(h)
        tapes.append(one.tape)
    got = {"output": np.stack(ys), "h_n": h[None], **({"c_n": c[None]} if lstm else {})}
    one.zero_grad()                                    # backward, tape by tape
    dh, dc, dxs = inputs["dh_n"][0], inputs["dc_n"][0] if lstm else None, [None] * T
    for t in range(T - 1, -1, -1):
        if lstm:
            dxs[t], (dh, dc) = one.backward((dh + inputs["dy"][t], dc), tape=tapes[t])
        else:
            dxs[t], dh = one.backward(dh + inputs["dy"][t], tape=tapes[t])
    got.update(dx=np.stack(dxs), dh0=dh[None], **({"dc0": dc[None]} if lstm else {}))
    got.update({f"grads[{k}_l0]": g for k, g in one.grads.items()})
    assert_tensors_close(got, expected, dtype, context=f"{cell} cell vs layer")

    # inference: not the plain fast path, the layer's layer-normalized step
    assert one._fast_kind is None
    one.eval()
    h0, c0 = inputs["h0"][0], inputs["c0"][0] if lstm else None
    want = [w[0] for w in _forward(layer, {**inputs, "x": x[:1]}, training=False)[1:]
            if w is not None]
    for rows in (slice(None), 1):     # batched, and row 1 unbatched
        out = one(x[0, rows], (h0[rows], c0[rows])) if lstm else (one(x[0, rows], h0[rows]),)
        for name, a, b in zip("hc", out, want):
            assert_tensors_close({name: a}, {name: b[rows]}, dtype, context=f"eval {rows}")


# ------------------------------------------------------------------ API

@pytest.mark.parametrize("cell", LN_CELLS)
def test_parameters(cell, make_layer):
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, layer_norm=True, seed=0)
    plain = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, seed=0)
    sd, G = layer.state_dict(), 4 if cell == "lstm" else 3
    expected = dict(plain.state_dict())
    for key in ("l0", "l0_reverse", "l1", "l1_reverse"):
        expected.update({f"ln_weight_{s}_{key}": np.ones(G * 4) for s in ("ih", "hh")})
        if cell == "lstm":
            expected.update({f"ln_weight_c_{key}": np.ones(4), f"ln_bias_c_{key}": np.zeros(4)})
    assert set(sd) == set(expected) == set(layer.grads)
    for k, v in expected.items():     # the same draws as the plain layer: LN's take none
        assert sd[k].dtype == np.float32 and sd[k].shape == v.shape, k
        np.testing.assert_array_equal(sd[k], v, err_msg=k)
        assert not layer.grads[k].any(), k

    other = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, layer_norm=True, seed=1)
    _randomize_ln(layer, seed=6)
    other.load_state_dict(layer.state_dict())
    x = np.random.default_rng(0).uniform(-1, 1, (4, 2, 3)).astype(np.float32)
    assert all(np.array_equal(other.state_dict()[k], v) for k, v in layer.state_dict().items())
    np.testing.assert_array_equal(other(x)[0], layer(x)[0])
    with pytest.raises(ValueError, match="ln_weight_ih_l0"):
        layer.load_state_dict(plain.state_dict())   # the gains are missing
    with pytest.raises(ValueError, match="ln_weight_ih_l0"):
        plain.load_state_dict(sd)                   # and unexpected here


@pytest.mark.parametrize("cell", LN_CELLS)
def test_saved_loaded_pickled(cell, make_layer, make_cell, tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, (4, 2, 3)).astype(np.float32)
    layer = _randomize_ln(make_layer(cell, 3, 4, bidirectional=True, layer_norm=True, seed=2), 7)
    one = _randomize_ln(make_cell(cell, 3, 4, layer_norm=True, seed=2), 7)
    assert "layer_norm=True" in repr(layer) and "layer_norm=True" in repr(one)
    assert "layer_norm" not in repr(make_layer(cell, 3, 4)) + repr(make_cell(cell, 3, 4))
    layer.save(tmp_path / "layer")
    one.save(tmp_path / "cell")
    for original, path in ((layer, tmp_path / "layer"), (one, tmp_path / "cell")):
        for back in (fastrnn.load(path), pickle.loads(pickle.dumps(original))):
            assert type(back) is type(original) and back.layer_norm is True
            step = x if original is layer else x[0]
            a, b = back(step), original(step)
            for u, v in zip(a, b) if isinstance(a, tuple) else ((a, b),):
                np.testing.assert_array_equal(u, v)


def test_refusals():
    for cls, kw in [(fastrnn.LSTM, {"proj_size": 2}), (fastrnn.LSTM, {"clip": 1.0}),
                    (fastrnn.LSTM, {"peepholes": True}), (fastrnn.LSTM, {"input_forget": True}),
                    (fastrnn.LSTM, {"activations": ["sigmoid", "tanh", "relu"]}),
                    (fastrnn.GRU, {"reset_after": False}),
                    (fastrnn.GRUCell, {"reset_after": False})]:
        with pytest.raises(ValueError, match="layer_norm"):
            cls(2, 3, layer_norm=True, **kw)
    for value in (1.5, 1, "yes", None):
        with pytest.raises(TypeError, match="layer_norm"):
            fastrnn.GRU(2, 3, layer_norm=value)
        with pytest.raises(TypeError, match="layer_norm"):
            fastrnn.LSTMCell(2, 3, layer_norm=value)
    for cls in (fastrnn.RNN, fastrnn.IndRNN, fastrnn.RNNCell):
        with pytest.raises(TypeError):
            cls(2, 3, layer_norm=True)
    for layer in (fastrnn.LSTM(2, 3, layer_norm=True), fastrnn.GRU(2, 3, layer_norm=True),
                  fastrnn.Bidirectional(fastrnn.GRU(2, 3, layer_norm=True))):
        for convert in (to_keras, to_onnx, export_onnx):
            with pytest.raises(ValueError, match="layer_norm"):
                convert(layer)


@pytest.mark.parametrize("cell", LN_CELLS)
def test_bidirectional_wrapper(cell, make_layer, make_inputs, run_layer, assert_tensors_close):
    wrapper = fastrnn.Bidirectional(_randomize_ln(make_layer(cell, I, H, layer_norm=True,
                                                             seed=18), seed=8))
    assert wrapper.layer.layer_norm
    _randomize_ln(wrapper, seed=9)              # the reverse half's gains too
    layer = make_layer(cell, I, H, bidirectional=True, layer_norm=True, seed=19)
    layer.load_state_dict(wrapper.state_dict())
    inputs = make_inputs(layer, T, B, seed=20)
    assert_tensors_close(run_layer(wrapper, lengths=[5, 2, 0], **inputs),
                         run_layer(layer, lengths=[5, 2, 0], **inputs), np.float32,
                         context="Bidirectional(layer_norm)")


# ------------------------------------------------------------------ semantics

@pytest.mark.parametrize("cell", LN_CELLS)
def test_semantics(cell, make_layer, make_inputs):
    """Gains 1, shift 0 still normalize (the output is not the plain layer's);
    and LN(k a) = LN(a): scaling W_ih by k > 0 leaves the output unchanged
    (x is large, so that the 1e-5 in the variance is negligible), unlike the
    plain layer's, so that W_ih is orthogonal to its gradient (Euler)."""
    ln = make_layer(cell, I, H, dtype=np.float64, seed=21, layer_norm=True)
    plain = make_layer(cell, I, H, dtype=np.float64, seed=21)
    inputs = make_inputs(ln, T, B, seed=22)
    out_plain, w = _forward(plain, inputs)[0], plain.weight_ih_l0.copy()
    assert np.abs(_forward(ln, inputs)[0] - out_plain).max() > 0.05
    plain.weight_ih_l0 = 3.5 * w
    assert np.abs(_forward(plain, inputs)[0] - out_plain).max() > 0.05   # not invariant

    inputs["x"] = 1000 * inputs["x"]     # the eps moves the output by ~1e-10
    out = _forward(ln, inputs)[0]
    ln.zero_grad()
    ln.backward(inputs["dy"])
    dw = ln.grads["weight_ih_l0"]
    assert abs(np.sum(w * dw)) < 1e-6 * np.linalg.norm(w) * np.linalg.norm(dw), "Euler"
    ln.weight_ih_l0 = 3.5 * w
    np.testing.assert_allclose(_forward(ln, inputs)[0], out, rtol=1e-8, atol=1e-9)
