"""Zoneout (Krueger et al. 2016): ``zoneout=`` on every layer and cell, and
``cell_zoneout=`` on LSTM's c, in both backends.

The masks are drawn in Python from the layer's seeded generator and passed to
the backends, so two layers built with the same seed draw the same masks: the
C kernels are compared with the NumPy reference tensor by tensor, the
gradients with central differences (the masks replayed before each forward),
and both with an independent PyTorch implementation fed the same masks.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import reference

from test_gradcheck import check_gradients

T, B, I, H = 5, 3, 4, 6

CASES = {
    "plain": {},
    "stacked_bi_bf_lengths": {"num_layers": 2, "bidirectional": True, "batch_first": True,
                              "lengths": [3, 5, 1]},
    "reverse_lengths": {"direction": "reverse", "lengths": [5, 0, 2]},
    "dropout_between": {"num_layers": 2, "dropout": 0.3},
}


def _zoneout_kwargs(cell, p_h=0.3, p_c=0.4):
    return {"zoneout": p_h, **({"cell_zoneout": p_c} if cell == "lstm" else {})}


def _split(case):
    return ({k: v for k, v in case.items() if k != "lengths"}, case.get("lengths"))


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_c_equals_reference_with_the_same_masks(cell, dtype, case, make_layer, make_inputs,
                                                run_layer, assert_tensors_close):
    kw, lengths = _split(case)
    results = {}
    for backend in ("c", "numpy"):
        layer = make_layer(cell, I, H, dtype=dtype, seed=5, backend=backend, **kw,
                           **_zoneout_kwargs(cell))
        inputs = make_inputs(layer, T, B, seed=6)
        results[backend] = run_layer(layer, lengths=lengths, **inputs)
        # inference: the expectation, no masks
        results[backend]["output[eval]"] = _forward(layer, inputs, lengths, training=False)
    assert_tensors_close(results["c"], results["numpy"], dtype, context=f"{cell} zoneout")


def test_lstm_projection_and_h_only(dtype, make_inputs, run_layer, assert_tensors_close):
    results = {}
    for backend in ("c", "numpy"):
        layer = fastrnn.LSTM(I, H, proj_size=2, bidirectional=True, dtype=dtype, seed=7,
                             backend=backend, zoneout=0.5)
        inputs = make_inputs(layer, T, B, seed=8)
        inputs["h0"] = inputs["h0"][..., :2]
        inputs["dh_n"] = inputs["dh_n"][..., :2]
        inputs["dy"] = inputs["dy"][..., :4]
        results[backend] = run_layer(layer, lengths=[2, 5, 4], **inputs)
    assert_tensors_close(results["c"], results["numpy"], dtype, context="lstm proj zoneout")


def _forward(layer, inputs, lengths=None, training=None):
    if isinstance(layer, fastrnn.LSTM):
        return layer(inputs["x"], (inputs["h0"], inputs["c0"]), lengths=lengths,
                     training=training)[0]
    return layer(inputs["x"], inputs["h0"], lengths=lengths, training=training)[0]


@pytest.mark.parametrize("backend", ("c", "numpy"))
def test_gradients_match_finite_differences(cell, backend, make_layer, make_inputs,
                                            assert_close, numeric_gradient):
    layer = make_layer(cell, 2, 3, dtype=np.float64, seed=9, backend=backend, num_layers=2,
                       bidirectional=True, batch_first=True, **_zoneout_kwargs(cell, 0.4, 0.5))
    inputs = make_inputs(layer, 3, 3, seed=10)
    check_gradients(layer, inputs, [3, 1, 2], assert_close, numeric_gradient,
                    replay_masks=True)


def test_masks_are_bernoulli_per_unit_step_and_row():
    """About p of the units keep their previous value; the masks differ across
    steps and rows (white box: the layer draws them in _zoneout)."""
    layer = fastrnn.LSTM(3, 50, zoneout=0.25, cell_zoneout=0.6, seed=1)
    mask_h, mask_c, p_h, p_c = layer._zoneout((40, 8), training=True)
    assert mask_h.dtype == np.uint8 and mask_h.shape == (40, 8, 50)
    assert mask_c.shape == (40, 8, 50) and (p_h, p_c) == (0.25, 0.6)
    assert abs(mask_h.mean() - 0.25) < 0.02 and abs(mask_c.mean() - 0.6) < 0.02
    assert not np.array_equal(mask_h[0], mask_h[1]) and not np.array_equal(mask_h[:, 0],
                                                                            mask_h[:, 1])
    assert layer._zoneout((4, 2), training=False) == (None, None, 0.25, 0.6)


def test_inference_is_the_expectation(cell, dtype, make_layer):
    """Eval: h_t = p * h_{t-1} + (1 - p) * h_new, step by step (the reference's
    cells, no zoneout in them)."""
    layer = make_layer(cell, I, H, dtype=dtype, seed=2, **_zoneout_kwargs(cell, 0.3, 0.6))
    layer.eval()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    w = [layer.state_dict()[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                         "bias_hh_l0")]
    h = np.zeros((B, H), dtype)
    c = np.zeros((B, H), dtype) if cell == "lstm" else None
    expected = []
    for t in range(T):
        h_new, c_new, _ = reference.cell_forward(cell, x[t], h, c, *w)
        h = 0.3 * h + 0.7 * h_new
        c = None if c is None else 0.6 * c + 0.4 * c_new
        expected.append(h)
    out = layer(x)[0]
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-13)


def test_zero_is_the_plain_layer(cell, make_layer, make_inputs, run_layer, assert_tensors_close):
    plain = make_layer(cell, I, H, seed=4)
    zero = make_layer(cell, I, H, seed=4, zoneout=0.0)
    inputs = make_inputs(plain, T, B, seed=4)
    assert_tensors_close(run_layer(zero, **inputs), run_layer(plain, **inputs), np.float32)


@pytest.mark.parametrize("backend", ("c", "numpy"))
def test_cells(cell, backend, dtype, make_cell, assert_tensors_close, run_cell):
    """A cell with zoneout is its one-step layer (same seed: same masks); in
    inference the expectation (not the fast path)."""
    kw = _zoneout_kwargs(cell, 0.5, 0.5)
    one = make_cell(cell, I, H, dtype=dtype, seed=11, backend=backend, **kw)
    assert one._fast_kind is None
    rng = np.random.default_rng(12)
    x, h, c, dh, dc = (rng.standard_normal(s).astype(dtype) for s in
                       ((B, I), (B, H), (B, H), (B, H), (B, H)))
    lstm = cell == "lstm"
    got = run_cell(one, x, h, c if lstm else None, dh, dc if lstm else None)
    ref = make_layer_like(one, seed=11, backend="numpy")
    if lstm:
        h1, c1 = ref(x[None], (h[None], c[None]))[1]
        dx, (dh0, dc0) = ref.backward(None, (dh[None], dc[None]))
        expected = {"h": h1[0], "c": c1[0], "dx": dx[0], "dh": dh0[0], "dc": dc0[0]}
    else:
        h1 = ref(x[None], h[None])[1]
        dx, dh0 = ref.backward(None, dh[None])
        expected = {"h": h1[0], "dx": dx[0], "dh": dh0[0]}
    for name, g in ref.grads.items():
        expected[f"grads[{name[:-3]}]"] = g
    assert_tensors_close(got, expected, dtype, context=f"{cell} cell zoneout")
    one.eval()
    h_eval = one(x, (h, c))[0] if lstm else one(x, h)
    plain = make_cell(cell, I, H, dtype=dtype, seed=11).eval()
    h_new = plain(x, (h, c))[0] if lstm else plain(x, h)
    np.testing.assert_allclose(h_eval, 0.5 * h + 0.5 * h_new, rtol=1e-5, atol=1e-6)


def make_layer_like(cell_obj, seed, backend):
    layer = cell_obj._layer
    kind = layer._cell
    kw = {"zoneout": layer.zoneout, "dtype": layer.dtype, "seed": seed, "backend": backend}
    if kind == "lstm":
        return fastrnn.LSTM(layer.input_size, layer.hidden_size, cell_zoneout=layer.cell_zoneout,
                            **kw)
    if kind.startswith("rnn"):
        return fastrnn.RNN(layer.input_size, layer.hidden_size, nonlinearity=kind[4:], **kw)
    return fastrnn.GRU(layer.input_size, layer.hidden_size, reset_after=kind == "gru", **kw)


def test_bad_values_raise():
    for bad in (-0.1, 1.0, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="zoneout: expected a probability in"):
            fastrnn.GRU(2, 3, zoneout=bad)
        with pytest.raises(ValueError, match="cell_zoneout: expected a probability in"):
            fastrnn.LSTM(2, 3, cell_zoneout=bad)
    with pytest.raises(TypeError):
        fastrnn.GRU(2, 3, cell_zoneout=0.5)       # c is LSTM's
    with pytest.raises(TypeError):
        fastrnn.RNNCell(2, 3, cell_zoneout=0.5)


def test_binding_checks_masks():
    """The binding refuses masks of the wrong dtype, shape or layout before C runs."""
    from fastrnn import _kernels
    layer = fastrnn.GRU(2, 3, seed=0)
    x = np.zeros((4, 2, 2), np.float32)
    h0 = np.zeros((2, 3), np.float32)
    y = np.empty((4, 2, 3), np.float32)
    work = np.empty(_kernels.forward_work_size("gru", 4, 2, 2, 3, False, 0, True), np.float32)
    w = layer._weights(0, "", layer._params)[:5]

    def run(zoneout):
        _kernels.forward("gru", x, h0, None, *w, None, y, 0, np.empty_like(h0), None, None,
                         work, False, False, zoneout=zoneout)

    run((np.zeros((4, 2, 3), np.uint8), None, 0.5, 0.0))
    with pytest.raises(TypeError, match="mask_h: expected dtype uint8"):
        run((np.zeros((4, 2, 3), np.float32), None, 0.5, 0.0))
    with pytest.raises(ValueError, match="mask_h: expected shape"):
        run((np.zeros((4, 2, 2), np.uint8), None, 0.5, 0.0))
    with pytest.raises(ValueError, match="C-contiguous"):
        run((np.zeros((4, 3, 2), np.uint8).transpose(0, 2, 1), None, 0.5, 0.0))
    with pytest.raises(ValueError, match="p_h must be in"):
        run((None, None, 1.0, 0.0))
    with pytest.raises(ValueError, match="LSTM only"):
        run((None, np.zeros((4, 2, 3), np.uint8), 0.5, 0.0))


def test_saved_and_loaded(tmp_path):
    layer = fastrnn.LSTM(2, 3, zoneout=0.2, cell_zoneout=0.3, seed=0)
    layer.save(tmp_path / "m")
    back = fastrnn.load(tmp_path / "m")
    assert (back.zoneout, back.cell_zoneout) == (0.2, 0.3)
    assert "zoneout=0.2" in repr(layer)


# ------------------------------------------------------------------ PyTorch

def _torch_zoneout(cell, layer, x, h0, c0, masks):
    """An independent implementation: torch's own cell, stepped in Python, with
    zoneout applied to the given masks; one layer, one direction, time-major."""
    torch = pytest.importorskip("torch")
    sd = {k[:-3]: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    xt = torch.tensor(x, requires_grad=True)
    h = torch.tensor(h0, requires_grad=True)
    c = torch.tensor(c0, requires_grad=True) if c0 is not None else None
    leaves = {"x": xt, "h0": h, **({"c0": c} if c is not None else {}),
              **{f"grads[{k}_l0]": v for k, v in sd.items()}}
    mask_h, mask_c = (None if m is None else torch.tensor(m.astype(x.dtype)) for m in masks[:2])
    outs = []
    for t in range(x.shape[0]):
        if cell == "lstm":
            h_new, c_new = torch.lstm_cell(xt[t], (h, c), sd["weight_ih"], sd["weight_hh"],
                                           sd["bias_ih"], sd["bias_hh"])
            c = mask_c[t] * c + (1 - mask_c[t]) * c_new
        elif cell == "gru":
            h_new = torch.gru_cell(xt[t], h, sd["weight_ih"], sd["weight_hh"], sd["bias_ih"],
                                   sd["bias_hh"])
        else:
            fn = torch.rnn_tanh_cell if cell == "rnn_tanh" else torch.rnn_relu_cell
            h_new = fn(xt[t], h, sd["weight_ih"], sd["weight_hh"], sd["bias_ih"], sd["bias_hh"])
        h = mask_h[t] * h + (1 - mask_h[t]) * h_new
        outs.append(h)
    return torch.stack(outs), h, c, leaves


@pytest.mark.parametrize("cell_kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_matches_pytorch_with_the_same_masks(cell_kind, make_layer, make_inputs, run_layer,
                                             assert_tensors_close):
    torch = pytest.importorskip("torch")
    layer = make_layer(cell_kind, I, H, dtype=np.float64, seed=13,
                       **_zoneout_kwargs(cell_kind, 0.4, 0.5))
    inputs = make_inputs(layer, T, B, seed=14)
    drawn = []
    draw = layer._zoneout
    layer._zoneout = lambda rows, training: drawn.append(draw(rows, training)) or drawn[-1]
    got = run_layer(layer, **inputs)
    lstm = cell_kind == "lstm"
    out, h_n, c_n, leaves = _torch_zoneout(cell_kind, layer, inputs["x"], inputs["h0"][0],
                                           inputs["c0"][0] if lstm else None, drawn[0])
    loss = (out * torch.tensor(inputs["dy"])).sum() + (h_n * torch.tensor(inputs["dh_n"][0])).sum()
    if lstm:
        loss = loss + (c_n * torch.tensor(inputs["dc_n"][0])).sum()
    loss.backward()
    expected = {"output": out.detach().numpy(), "h_n": h_n.detach().numpy()[None],
                "dx": leaves["x"].grad.numpy(), "dh0": leaves["h0"].grad.numpy()[None]}
    if lstm:
        expected.update(c_n=c_n.detach().numpy()[None], dc0=leaves["c0"].grad.numpy()[None])
    for name, leaf in leaves.items():
        if name.startswith("grads["):
            expected[name] = leaf.grad.numpy()
    assert_tensors_close(got, expected, np.float64, context=f"{cell_kind} vs torch")


@pytest.mark.parametrize("cell_kind,B_,H_", [("lstm", 4, 512), ("gru", 2, 1024)])
def test_unit_split_loop(cell_kind, B_, H_, make_layer, make_inputs, run_layer,
                         assert_tensors_close):
    """The loop that splits the hidden units over threads (internal.h
    unit_threads) applies zoneout per member's units, forward and backward."""
    from fastrnn import _kernels
    if _kernels.unit_threads(cell_kind, 3, B_, 8, H_, training=True) < 2:
        pytest.skip("the unit-split loop does not apply at this thread count")
    results = {}
    for backend in ("c", "numpy"):
        layer = make_layer(cell_kind, 8, H_, dtype=np.float64, seed=15, backend=backend,
                           **_zoneout_kwargs(cell_kind, 0.3, 0.4))
        inputs = make_inputs(layer, 3, B_, seed=16)
        results[backend] = run_layer(layer, lengths=[3, 1, 2, 3][:B_], **inputs)
        results[backend]["output[eval]"] = _forward(layer, inputs, training=False)
    assert_tensors_close(results["c"], results["numpy"], np.float64, context="unit split")


def test_exports_refuse_zoneout():
    """Keras and ONNX run the plain cell: a zoneout layer's inference would change."""
    from fastrnn.convert import to_keras, to_onnx
    layer = fastrnn.LSTM(2, 3, cell_zoneout=0.3)
    for convert in (to_keras, to_onnx):
        with pytest.raises(ValueError, match="cell_zoneout: to_"):
            convert(layer)
    to_keras(fastrnn.GRU(2, 3, input_dropout=0.2, recurrent_dropout=0.2, weight_dropout=0.1))


@pytest.fixture
def cell(regularized_cell):
    """This file's cell kinds: those that take the regularization options."""
    return regularized_cell
