"""IndRNN (Li et al. 2018): what the shared matrices do not cover.

The ``cell`` fixture already runs IndRNN through every layer test (C against
the reference, finite differences, directions, threads, cells). Here: an
independent PyTorch implementation (a few torch ops, autograd for every
gradient), shapes large enough for the chunked and threaded inference paths,
the vector u and its checks, the initialisation, and the converters' refusal.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

KINDS = ("relu", "tanh")
CASES = {
    "plain": {},
    "layers2_bi": {"num_layers": 2, "bidirectional": True},
    "bf_bi_lengths": {"batch_first": True, "bidirectional": True, "lengths": [4, 1, 6]},
    "layers3_lengths_nobias": {"num_layers": 3, "bias": False, "lengths": [2, 6, 0]},
}


def _inputs(layer, T, B, seed):
    rng = np.random.default_rng(seed)
    D, L, H = layer.num_directions, layer.num_layers, layer.hidden_size
    lead = (B, T) if layer.batch_first else (T, B)
    u = lambda *shape: rng.uniform(-1, 1, shape).astype(layer.dtype)   # noqa: E731
    return u(*lead, layer.input_size), u(D * L, B, H), u(*lead, D * H), u(D * L, B, H)


# ------------------------------------------------------------ against PyTorch

def torch_indrnn(torch, x, h0, params, lengths, layer):
    """The IndRNN stack in plain torch ops, time-major x (T, B, I): returns
    output (T, B, D*H) and h_n (D*L, B, H). Padding as PyTorch's packed
    sequences: steps at or past a length output zeros and keep the state."""
    act = torch.relu if layer.nonlinearity == "relu" else torch.tanh
    T = x.shape[0]
    active = (torch.arange(T)[:, None] < lengths[None, :]).to(x.dtype)[..., None]   # (T, B, 1)
    D = layer.num_directions
    layer_in, h_n = x, []
    for k in range(layer.num_layers):
        halves = []
        for d, suffix in enumerate(("", "_reverse")[:D]):
            w_ih, u = params[f"weight_ih_l{k}{suffix}"], params[f"weight_hh_l{k}{suffix}"]
            b = (params[f"bias_ih_l{k}{suffix}"] + params[f"bias_hh_l{k}{suffix}"]
                 if layer.bias else 0)
            h, ys = h0[k * D + d], [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                h_t = act(layer_in[t] @ w_ih.T + u * h + b)
                ys[t] = active[t] * h_t
                h = active[t] * h_t + (1 - active[t]) * h
            halves.append(torch.stack(ys))
            h_n.append(h)
        layer_in = torch.cat(halves, dim=-1)
    return layer_in, torch.stack(h_n)


@pytest.mark.parametrize("backend", ("c", "numpy"))
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_matches_an_independent_torch_implementation(kind, case, backend, dtype, assert_close):
    torch = pytest.importorskip("torch")
    T, B = 6, 3
    kw = {k: v for k, v in case.items() if k != "lengths"}
    layer = fastrnn.IndRNN(4, 5, nonlinearity=kind, dtype=dtype, seed=3, backend=backend, **kw)
    x, h0, dy, dh_n = _inputs(layer, T, B, seed=4)
    lengths = case.get("lengths")
    out, h_n = layer(x, h0, lengths=lengths)
    dx, dh0 = layer.backward(dy, dh_n)

    tt = lambda a: torch.tensor(a, requires_grad=True)   # noqa: E731
    params = {k: tt(v) for k, v in layer.state_dict().items()}
    xt, h0t = tt(x), tt(h0)
    x_tm = xt.transpose(0, 1) if layer.batch_first else xt
    L = torch.tensor(lengths if lengths is not None else [T] * B)
    out_t, h_n_t = torch_indrnn(torch, x_tm, h0t, params, L, layer)
    if layer.batch_first:
        out_t = out_t.transpose(0, 1)
    ((out_t * torch.tensor(dy)).sum() + (h_n_t * torch.tensor(dh_n)).sum()).backward()

    assert_close("output", out, out_t.detach().numpy(), dtype)
    assert_close("h_n", h_n, h_n_t.detach().numpy(), dtype)
    assert_close("dx", dx, xt.grad.numpy(), dtype)
    assert_close("dh0", dh0, h0t.grad.numpy(), dtype)
    for name, p in params.items():
        assert_close(f"grads[{name}]", layer.grads[name], p.grad.numpy(), dtype)


def test_cell_matches_torch_ops(dtype, assert_close):
    torch = pytest.importorskip("torch")
    cell = fastrnn.IndRNNCell(4, 5, nonlinearity="tanh", dtype=dtype, seed=5)
    x, h, _, dh = _inputs(cell._layer, 1, 3, seed=6)
    x, h, dh = x[0], h[0], dh[0]
    h1 = cell(x, h)
    dx, dh0 = cell.backward(dh)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in cell.state_dict().items()}
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h, requires_grad=True)
    h1t = torch.tanh(xt @ p["weight_ih"].T + p["bias_ih"] + p["weight_hh"] * ht + p["bias_hh"])
    (h1t * torch.tensor(dh)).sum().backward()
    assert_close("h", h1, h1t.detach().numpy(), dtype)
    assert_close("dx", dx, xt.grad.numpy(), dtype)
    assert_close("dh", dh0, ht.grad.numpy(), dtype)
    for name, t in p.items():
        assert_close(f"grads[{name}]", cell.grads[name], t.grad.numpy(), dtype)


# ------------------------------------------------------------ the kernels' paths

@pytest.mark.parametrize("shape", [(70, 9, 7, 33), (5, 64, 3, 40), (3, 300, 2, 8)],
                         ids=["chunked", "batch64", "batch300"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_inference_paths_match_training_and_reference(shape, batch_first, dtype,
                                                      restore_threads, assert_close):
    """Inference projects in chunks of steps, and splits batches of 16 to 64
    rows over threads (internal.h loop_threads); all give training's output."""
    T, B, I, H = shape
    layers = {b: fastrnn.IndRNN(I, H, bidirectional=True, batch_first=batch_first, dtype=dtype,
                                seed=8, backend=b) for b in ("c", "numpy")}
    x = np.random.default_rng(9).standard_normal((B, T, I) if batch_first else (T, B, I))
    lengths = np.random.default_rng(10).integers(0, T + 1, B)
    want, want_h = layers["numpy"](x, lengths=lengths, training=False)
    for threads in (1, 2):
        fastrnn.set_num_threads(threads)
        for training in (False, True):
            got, got_h = layers["c"](x, lengths=lengths, training=training)
            assert_close(f"output (threads={threads}, training={training})", got, want, dtype)
            assert_close(f"h_n (threads={threads}, training={training})", got_h, want_h, dtype)
    assert _kernels.loop_threads("indrnn_relu", 5, 64, 3, 40, False) == 2


@pytest.fixture
def restore_threads():
    before = fastrnn.get_num_threads()
    yield
    fastrnn.set_num_threads(before)


def test_relu_layer_holds_a_long_memory():
    """The paper's point: with u = 1 a relu unit keeps its state over
    thousands of steps, where an Elman RNN's product of Jacobians fades."""
    layer = fastrnn.IndRNN(1, 2, dtype=np.float64, seed=0)
    layer.load_state_dict({"weight_ih_l0": [[1.0], [1.0]], "weight_hh_l0": [1.0, 0.5],
                           "bias_ih_l0": [0.0, 0.0], "bias_hh_l0": [0.0, 0.0]})
    x = np.zeros((5000, 1, 1))
    x[0] = 1.0
    out, _ = layer(x)
    dx, _ = layer.backward(np.eye(1, 5000, 4999).T[:, :, None] * [1.0, 0.0])
    assert out[-1, 0, 0] == 1.0 and out[-1, 0, 1] == 0.0
    assert dx[0, 0, 0] == 1.0   # d out[-1, unit 0] / d x[0]: u**4999 = 1


# ------------------------------------------------------------ parameters and checks

def test_parameters_and_initialisation():
    layer = fastrnn.IndRNN(6, 32, num_layers=2, bidirectional=True, seed=0)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert shapes["weight_ih_l0"] == (32, 6) and shapes["weight_ih_l1_reverse"] == (32, 64)
    assert shapes["weight_hh_l1_reverse"] == shapes["bias_hh_l0"] == (32,)
    bound = 1 / np.sqrt(32)
    for name, p in layer.named_parameters():
        low, high = (0, 1) if name.startswith("weight_hh") else (-bound, bound)
        assert low <= p.min() and p.max() <= high, name
    assert layer.weight_hh_l0.max() > 0.5   # U(0, 1), not the input weights' range
    assert repr(fastrnn.IndRNN(2, 3, nonlinearity="tanh")).startswith(
        "IndRNN(2, 3, num_layers=1, nonlinearity='tanh'")
    assert repr(fastrnn.IndRNNCell(2, 3)).startswith("IndRNNCell(2, 3, bias=True")


def test_u_shape_is_checked():
    layer = fastrnn.IndRNN(3, 4)
    with pytest.raises(ValueError, match=r"weight_hh_l0.*expected shape \(4,\)"):
        layer.load_state_dict({**layer.state_dict(), "weight_hh_l0": np.ones((4, 4))})
    # the bindings, before the GIL is released: a matrix or a wrong length
    x, y = np.zeros((2, 1, 3), np.float32), np.zeros((2, 1, 4), np.float32)
    h0, h_n = np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)
    w_ih = np.zeros((4, 3), np.float32)
    work = np.empty(_kernels.forward_work_size("indrnn_relu", 2, 1, 3, 4, False), np.float32)
    for u, message in ((np.zeros((4, 4), np.float32), "w_hh: expected a 1-D"),
                       (np.zeros(5, np.float32), "exceeds y.s 4 columns"),   # H from u
                       (np.zeros(4, np.float64), "w_hh: expected dtype float32"),
                       (np.zeros(8, np.float32)[::2], "C-contiguous")):
        with pytest.raises((ValueError, TypeError), match=message):
            _kernels.forward("indrnn_relu", x, h0, None, w_ih, u, None, None, None, None, y, 0,
                             h_n, None, None, work, False, False)
    cell = fastrnn.IndRNNCell(3, 4).eval()
    with pytest.raises(ValueError, match="w_hh"):
        _kernels.cell_forward(_kernels.CELLS["indrnn_relu"], np.zeros(3, np.float32), None,
                              None, cell.weight_ih, np.zeros((4, 4), np.float32), None, None,
                              np.empty(100, np.float32))


def test_cell_fast_path_equals_layer_path(dtype):
    cell = fastrnn.IndRNNCell(3, 6, dtype=dtype, seed=1)
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(dtype)
    h = cell(x, training=True)
    assert cell.eval()._fast_kind == _kernels.CELLS["indrnn_relu"]
    np.testing.assert_array_equal(cell(x), h)


def test_save_load_and_bidirectional_wrapper():
    layer = fastrnn.IndRNN(3, 4, num_layers=2, nonlinearity="tanh", seed=0)
    f = io.BytesIO()
    layer.save(f)
    f.seek(0)
    again = fastrnn.load(f)
    assert isinstance(again, fastrnn.IndRNN) and again.nonlinearity == "tanh"
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)
    wrapped = fastrnn.Bidirectional(fastrnn.IndRNN(3, 4, seed=1), merge_mode="sum")
    assert wrapped(np.ones((2, 1, 3)))[0].shape == (2, 1, 4)
    cells = fastrnn.to_cells(layer)
    assert [type(c).__name__ for c in cells] == ["IndRNNCell"] * 2


@pytest.mark.parametrize("convert", ["to_onnx", "to_keras", "export_onnx"])
def test_converters_refuse_it(convert):
    layer = fastrnn.IndRNN(3, 4)
    args = (io.BytesIO(),) if convert == "export_onnx" else ()
    with pytest.raises(TypeError, match="IndRNN has no ONNX or Keras counterpart"):
        getattr(fastrnn, convert)(layer, *args)
    with pytest.raises(TypeError, match="IndRNN"):
        getattr(fastrnn, convert)(fastrnn.Bidirectional(layer), *args)


def test_recurrent_dropout_is_not_offered():
    """IndRNN's recurrence has no product to drop into: its classes do not take
    recurrent_dropout (the binding refuses the mask too)."""
    with pytest.raises(TypeError, match="recurrent_dropout"):
        fastrnn.IndRNN(4, 8, recurrent_dropout=0.1)
    with pytest.raises(TypeError, match="recurrent_dropout"):
        fastrnn.IndRNNCell(4, 8, recurrent_dropout=0.1)
    x, h0 = np.zeros((3, 2, 4), np.float32), np.zeros((2, 5), np.float32)
    layer = fastrnn.IndRNN(4, 5, seed=0)
    w = layer._weights(0, "", layer._params)[:5]
    cache = np.empty(_kernels.cache_size("indrnn_relu", 3, 2, 4, 5), np.float32)
    work = np.empty(_kernels.forward_work_size("indrnn_relu", 3, 2, 4, 5, True, 0, False, True),
                    np.float32)
    with pytest.raises(ValueError, match="recurrent dropout is not implemented for IndRNN"):
        _kernels.forward("indrnn_relu", x, h0, None, *w, None, np.empty((3, 2, 5), np.float32),
                         0, np.empty_like(h0), None, cache, work, False, False,
                         dropout=(None, np.ones((1, 2, 5), np.uint8), 0.0, 0.5))


# ------------------------------------- zoneout, input dropout, DropConnect

OPTIONS = {"zoneout": 0.3, "input_dropout": 0.25, "weight_dropout": 0.4}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_options_c_equals_reference(kind, case, dtype, make_layer, make_inputs, run_layer,
                                    assert_tensors_close):
    """Training (the masks drawn alike from the same seed) and inference (zoneout's
    expectation) of both backends, tensor by tensor."""
    kw = {k: v for k, v in case.items() if k != "lengths"}
    results, inferred = {}, {}
    for backend in ("c", "numpy"):
        layer = make_layer(f"indrnn_{kind}", 4, 6, dtype=dtype, seed=5, backend=backend,
                           **kw, **OPTIONS)
        inputs = make_inputs(layer, 6, 3, seed=6)
        results[backend] = run_layer(layer, lengths=case.get("lengths"), **inputs)
        inferred[backend] = {"output": layer.eval()(inputs["x"], inputs["h0"],
                                                    lengths=case.get("lengths"))[0]}
    assert_tensors_close(results["c"], results["numpy"], dtype, context=f"{kind} options")
    assert_tensors_close(inferred["c"], inferred["numpy"], dtype, context=f"{kind} inference")


@pytest.mark.parametrize("backend", ("c", "numpy"))
def test_options_gradients_match_finite_differences(backend, make_layer, make_inputs,
                                                    assert_close, numeric_gradient):
    from test_gradcheck import check_gradients
    layer = make_layer("indrnn_tanh", 2, 3, dtype=np.float64, seed=9, backend=backend,
                       num_layers=2, bidirectional=True, batch_first=True, **OPTIONS)
    inputs = make_inputs(layer, 3, 3, seed=10)
    check_gradients(layer, inputs, [3, 1, 2], assert_close, numeric_gradient,
                    replay_masks=True)


@pytest.mark.parametrize("kind", KINDS)
def test_options_match_torch_with_the_same_masks(kind, assert_close):
    """torch ops on (x * keep_x) W_ih^T + (u * keep_u) * h, zoned out by the
    layer's own masks (recorded), autograd to the unmasked parameters."""
    torch = pytest.importorskip("torch")
    T, B, I, H = 6, 3, 4, 5
    layer = fastrnn.IndRNN(I, H, nonlinearity=kind, dtype=np.float64, seed=11, **OPTIONS)
    drawn = {}
    for name in ("_weight_mask", "_zoneout", "_dropout_masks"):
        draw = getattr(layer, name)
        setattr(layer, name, lambda *a, draw=draw, name=name:
                drawn.setdefault(name, draw(*a)))
    rng = np.random.default_rng(12)
    x, h0, dy = rng.normal(size=(T, B, I)), rng.normal(size=(1, B, H)), rng.normal(size=(T, B, H))
    out, h_n = layer(x, h0)
    dx, dh0 = layer.backward(dy)
    keep_u = torch.tensor(drawn["_weight_mask"])
    zone = torch.tensor(drawn["_zoneout"][0].astype(bool))
    mask_x, _, p_x, _ = drawn["_dropout_masks"]
    keep_x = torch.tensor(mask_x[0] / (1 - p_x))
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in layer.state_dict().items()}
    xt, h = torch.tensor(x, requires_grad=True), torch.tensor(h0[0], requires_grad=True)
    h_start, act, outs = h, (torch.relu if kind == "relu" else torch.tanh), []
    for t in range(T):
        new = act((xt[t] * keep_x) @ sd["weight_ih_l0"].T + sd["bias_ih_l0"]
                  + sd["weight_hh_l0"] * keep_u * h + sd["bias_hh_l0"])
        h = torch.where(zone[t], h, new)
        outs.append(h)
    (torch.stack(outs) * torch.tensor(dy)).sum().backward()
    assert_close("output", out, torch.stack(outs).detach().numpy(), np.float64)
    assert_close("dx", dx, xt.grad.numpy(), np.float64)
    assert_close("dh0", dh0[0], h_start.grad.numpy(), np.float64)
    for k, v in sd.items():
        assert_close(f"grads[{k}]", layer.grads[k], v.grad.numpy(), np.float64)


def test_cell_takes_the_options():
    cell = fastrnn.IndRNNCell(3, 4, dtype=np.float64, seed=2, **OPTIONS)
    assert "zoneout=0.3" in repr(cell) and "weight_dropout=0.4" in repr(cell)
    results = {}
    for backend in ("c", "numpy"):
        cell = fastrnn.IndRNNCell(3, 4, dtype=np.float64, seed=2, backend=backend, **OPTIONS)
        x = np.random.default_rng(3).normal(size=(2, 3))
        h = cell(x, np.ones((2, 4)))
        results[backend] = (h, cell.backward(np.ones_like(h))[0])
    for a, b in zip(results["c"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)