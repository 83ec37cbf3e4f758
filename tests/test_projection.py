"""LSTM proj_size (PyTorch semantics): h_t = W_hr (o * tanh(c_t)), h has P columns,
c has H, weight_hr_l{k}, deeper layers read D*P inputs."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

T, B, I, H, P = 5, 3, 4, 6, 3
LENGTHS = np.array([5, 2, 4])


def lstm(backend="c", dtype=np.float64, **kw):
    return fastrnn.LSTM(I, H, proj_size=P, dtype=dtype, backend=backend, seed=2, **kw)


def test_shapes_and_names():
    layer = lstm(num_layers=2, bidirectional=True)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert shapes["weight_hh_l0"] == (4 * H, P)
    assert shapes["weight_hr_l0_reverse"] == (P, H)
    assert shapes["weight_ih_l1"] == (4 * H, 2 * P)
    assert list(shapes)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                "weight_hr_l0"]
    out, (h_n, c_n) = layer(np.zeros((T, B, I)))
    assert out.shape == (T, B, 2 * P) and h_n.shape == (4, B, P) and c_n.shape == (4, B, H)
    out, (h_n, c_n) = layer(np.zeros((T, I)))                      # unbatched
    assert out.shape == (T, 2 * P) and h_n.shape == (4, P) and c_n.shape == (4, H)


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True},
                                {"batch_first": True, "direction": "reverse"},
                                {"num_layers": 2, "bias": False}],
                         ids=["plain", "stack-bi", "bf-reverse", "nobias"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_matches_reference(kw, lengths, dtype, make_inputs, run_layer, assert_tensors_close):
    layers = {b: lstm(b, dtype, **kw) for b in ("c", "numpy")}
    inputs = make_inputs(layers["c"], T, B, seed=3)
    # make_inputs sizes states by hidden_size; the projected h is P wide
    rng = np.random.default_rng(4)
    D = layers["c"].num_directions * layers["c"].num_layers
    out_w = layers["c"].num_directions * P
    lead = (B, T) if layers["c"].batch_first else (T, B)
    inputs.update(h0=rng.uniform(-1, 1, (D, B, P)).astype(dtype),
                  dh_n=rng.uniform(-1, 1, (D, B, P)).astype(dtype),
                  dy=rng.uniform(-1, 1, lead + (out_w,)).astype(dtype))
    got = run_layer(layers["c"], lengths=lengths, **inputs)
    want = run_layer(layers["numpy"], lengths=lengths, **inputs)
    assert_tensors_close(got, want, dtype)
    # inference gives the training output
    out, _ = layers["c"](inputs["x"], (inputs["h0"], inputs["c0"]), lengths=lengths,
                         training=False)
    np.testing.assert_allclose(out, got["output"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_finite_differences(backend, numeric_gradient):
    layer = lstm(backend, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H))
    dy, dh, dc = (rng.standard_normal(s) for s in ((T, B, 2 * P), (4, B, P), (4, B, H)))

    def loss():
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=LENGTHS)
        return (out * dy).sum() + (h_n * dh).sum() + (c_n * dc).sum()

    layer.zero_grad()
    loss()
    dx, (dh0, dc0) = layer.backward(dy, (dh, dc))
    eps = 1e-6
    for name, arr, grad in [("x", x, dx), ("h0", h0, dh0), ("c0", c0, dc0),
                            ("weight_hr_l0", layer.weight_hr_l0, layer.grads["weight_hr_l0"]),
                            ("weight_hr_l1_reverse", layer.weight_hr_l1_reverse,
                             layer.grads["weight_hr_l1_reverse"]),
                            ("weight_hh_l1", layer.weight_hh_l1, layer.grads["weight_hh_l1"])]:
        numeric = numeric_gradient(loss, arr, eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True},
                                {"batch_first": True}], ids=["plain", "stack-bi", "bf"])
@pytest.mark.parametrize("packed", [False, True])
def test_torch_parity(backend, kw, packed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch.nn.LSTM(I, H, proj_size=P, **kw).double()
    layer = lstm(backend, **kw)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(6)
    bf = kw.get("batch_first", False)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I))
    D = layer.num_directions * layer.num_layers
    h0, c0 = rng.standard_normal((D, B, P)), rng.standard_normal((D, B, H))
    lengths = LENGTHS if packed else None
    out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    dy = rng.standard_normal(out.shape)
    dh, dc = rng.standard_normal(h_n.shape), rng.standard_normal(c_n.shape)
    dx, (dh0, dc0) = layer.backward(dy, (dh, dc))

    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    inp = xt
    if packed:
        inp = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(LENGTHS), batch_first=bf,
                                                      enforce_sorted=False)
    ot, (ht, ct) = tm(inp, (h0t, c0t))
    if packed:
        ot, _ = torch.nn.utils.rnn.pad_packed_sequence(ot, batch_first=bf, total_length=T)
    ((ot * torch.tensor(dy)).sum() + (ht * torch.tensor(dh)).sum()
     + (ct * torch.tensor(dc)).sum()).backward()
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, ot.detach().numpy(), **tol, err_msg="output")
    np.testing.assert_allclose(h_n, ht.detach().numpy(), **tol, err_msg="h_n")
    np.testing.assert_allclose(c_n, ct.detach().numpy(), **tol, err_msg="c_n")
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol, err_msg="dx")
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), **tol, err_msg="dh0")
    np.testing.assert_allclose(dc0, c0t.grad.numpy(), **tol, err_msg="dc0")
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), **tol, err_msg=name)


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bidirectional_wrapper(merge_mode):
    layers = {b: fastrnn.Bidirectional(lstm(b), merge_mode) for b in ("c", "numpy")}
    x = np.random.default_rng(7).standard_normal((T, B, I))
    outs = {b: w(x)[0] for b, w in layers.items()}
    assert outs["c"].shape == (T, B, 2 * P if merge_mode == "concat" else P)
    np.testing.assert_allclose(outs["c"], outs["numpy"], rtol=1e-12, atol=1e-14)
    grads = {b: w.backward(np.ones_like(outs[b]))[0] for b, w in layers.items()}
    np.testing.assert_allclose(grads["c"], grads["numpy"], rtol=1e-12, atol=1e-14)
