"""Tests of fastrnn.reference alone: finite differences, lengths semantics, PyTorch parity.

The reference is the yardstick for the C kernels, so it is checked against
independent truths only: central finite differences in float64 (through the
scalar sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n), whose gradient is what
layer_backward returns for those upstream gradients), running each sequence
alone on its own valid prefix, and torch.nn.RNN/LSTM/GRU.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference
from fastrnn.kinds import NUM_GATES

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"]
T, B, I, H = 4, 3, 3, 4
RAGGED = [2, 4, 0]          # unsorted, with an empty and a full sequence
TORCH_RAGGED = [2, 4, 1]    # torch refuses length 0


def make_problem(cell, bias=True, dtype=np.float64, seed=0):
    """Parameters, inputs and upstream gradients of one layer-direction."""
    rng = np.random.default_rng(seed)
    G = NUM_GATES[cell]

    def u(*shape):
        return rng.uniform(-0.7, 0.7, shape).astype(dtype)

    p = {"x": u(T, B, I), "h0": u(B, H), "c0": u(B, H) if cell == "lstm" else None,
         "w_ih": u(G * H, I), "w_hh": u(G * H, H),
         "b_ih": u(G * H) if bias else None, "b_hh": u(G * H) if bias else None}
    up = {"dy": u(T, B, H), "dh_n": u(B, H), "dc_n": u(B, H) if cell == "lstm" else None}
    return p, up


def forward(cell, p, lengths=None, reverse=False):
    return reference.layer_forward(cell, p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"],
                                   p["b_ih"], p["b_hh"], lengths=lengths, reverse=reverse)


def objective(cell, p, up, lengths, reverse):
    y, h_n, c_n, _ = forward(cell, p, lengths, reverse)
    f = np.sum(y * up["dy"]) + np.sum(h_n * up["dh_n"])
    return f + (0.0 if c_n is None else np.sum(c_n * up["dc_n"]))


def assert_close(name, got, expected, rtol, atol):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    err = np.max(np.abs(got - expected), initial=0.0)
    assert np.allclose(got, expected, rtol=rtol, atol=atol), f"{name}: max abs error {err:.3e}"


def analytic_grads(cell, p, up, lengths=None, reverse=False):
    """{name: gradient} for every input tensor of the layer (None when absent)."""
    _, _, _, cache = forward(cell, p, lengths, reverse)
    dx, dh0, dc0, grads = reference.layer_backward(cell, cache, up["dy"], up["dh_n"], up["dc_n"])
    return {"x": dx, "h0": dh0, "c0": dc0, **grads}


# ------------------------------------------------------------------ finite differences

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [None, RAGGED], ids=["full", "ragged"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, lengths, reverse, bias):
    p, up = make_problem(cell, bias)
    got = analytic_grads(cell, p, up, lengths, reverse)
    eps = 1e-6
    for name, value in p.items():
        if value is None:
            assert got[name] is None, f"{name}: expected None for an absent tensor"
            continue
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            saved = value[idx]
            value[idx] = saved + eps
            f_plus = objective(cell, p, up, lengths, reverse)
            value[idx] = saved - eps
            f_minus = objective(cell, p, up, lengths, reverse)
            value[idx] = saved
            numeric[idx] = (f_plus - f_minus) / (2 * eps)
        assert_close(f"d{name}", got[name], numeric, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ lengths semantics

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_equal_running_each_valid_prefix_alone(cell, reverse):
    """Row b under lengths behaves as x[:L_b, b] run without lengths; zeros beyond."""
    p, up = make_problem(cell, seed=1)
    y, h_n, c_n, cache = forward(cell, p, RAGGED, reverse)
    dx, dh0, dc0, grads = reference.layer_backward(cell, cache, up["dy"], up["dh_n"], up["dc_n"])
    summed = {k: np.zeros_like(v) for k, v in grads.items() if v is not None}
    for b, L in enumerate(RAGGED):
        rows = slice(b, b + 1)
        q = dict(p, x=p["x"][:L, rows], h0=p["h0"][rows],
                 c0=None if p["c0"] is None else p["c0"][rows])
        y_b, h_b, c_b, cache_b = forward(cell, q, None, reverse)
        dx_b, dh0_b, dc0_b, grads_b = reference.layer_backward(
            cell, cache_b, up["dy"][:L, rows], up["dh_n"][rows],
            None if up["dc_n"] is None else up["dc_n"][rows])
        assert_close(f"y[:{L}, {b}]", y[:L, rows], y_b, 1e-12, 1e-14)
        assert_close(f"y[{L}:, {b}]", y[L:, rows], np.zeros_like(y[L:, rows]), 0, 0)
        assert_close(f"h_n[{b}]", h_n[rows], h_b, 1e-12, 1e-14)
        assert_close(f"dx[:{L}, {b}]", dx[:L, rows], dx_b, 1e-12, 1e-14)
        assert_close(f"dx[{L}:, {b}]", dx[L:, rows], np.zeros_like(dx[L:, rows]), 0, 0)
        assert_close(f"dh0[{b}]", dh0[rows], dh0_b, 1e-12, 1e-14)
        if cell == "lstm":
            assert_close(f"c_n[{b}]", c_n[rows], c_b, 1e-12, 1e-14)
            assert_close(f"dc0[{b}]", dc0[rows], dc0_b, 1e-12, 1e-14)
        for k in summed:
            summed[k] += grads_b[k]
    for k in summed:
        assert_close(f"d{k} (sum over rows)", grads[k], summed[k], 1e-12, 1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_missing_upstream_gradients_mean_zeros(cell):
    p, up = make_problem(cell, seed=2)
    _, _, _, cache = forward(cell, p, RAGGED, True)
    zeros = np.zeros((B, H))
    got = reference.layer_backward(cell, cache, None)
    want = reference.layer_backward(cell, cache, np.zeros((T, B, H)), zeros,
                                    zeros if cell == "lstm" else None)
    for name, g, w in zip(["dx", "dh0", "dc0"], got[:3], want[:3]):
        if w is None:
            assert g is None, name
        else:
            assert_close(name, g, w, 0, 0)
    for k in want[3]:
        if want[3][k] is None:   # a parameter the layer does not have
            assert got[3][k] is None, k
            continue
        assert_close(f"d{k}", got[3][k], want[3][k], 0, 0)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_stays_float32(cell):
    p, up = make_problem(cell, dtype=np.float32, seed=3)
    y, h_n, c_n, cache = forward(cell, p, RAGGED, False)
    dx, dh0, dc0, grads = reference.layer_backward(cell, cache, up["dy"], up["dh_n"], up["dc_n"])
    arrays = {"y": y, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0, **grads,
              **{f"cache[{k}]": cache[k] for k in reference.SAVED[cell]}}
    for name, a in arrays.items():
        assert a is None or a.dtype == np.float32, f"{name}: dtype {a.dtype}"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", CELLS)
def test_one_step_functions_equal_a_one_step_layer(cell, bias):
    """The Cell classes call the step functions directly; the layer is checked above."""
    p, up = make_problem(cell, bias, seed=5)
    p["x"] = p["x"][:1]
    h, c, step = reference.cell_forward(cell, p["x"][0], p["h0"], p["c0"], p["w_ih"], p["w_hh"],
                                        p["b_ih"], p["b_hh"])
    dx, dh_prev, dc_prev, grads = reference.cell_backward(cell, up["dh_n"], up["dc_n"], step)
    y1, h1, c1, cache = forward(cell, p)
    dx1, dh01, dc01, grads1 = reference.layer_backward(cell, cache, None, up["dh_n"], up["dc_n"])
    assert_close("h", h, h1, 1e-14, 0)
    assert_close("dx", dx, dx1[0], 1e-14, 0)
    assert_close("dh_prev", dh_prev, dh01, 1e-14, 0)
    if cell == "lstm":
        assert_close("c", c, c1, 1e-14, 0)
        assert_close("dc_prev", dc_prev, dc01, 1e-14, 0)
    else:
        assert c is None and dc_prev is None, "c, dc_prev: expected None for a cell without c"
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        if grads1[k] is None:
            assert grads[k] is None, f"d{k}: expected None without bias"
        else:
            assert_close(f"d{k}", grads[k], grads1[k], 1e-14, 0)


def test_unknown_cell_is_refused():
    p, _ = make_problem("gru")
    with pytest.raises(ValueError, match="cell must be one of"):
        reference.cell_forward("gru2", p["x"][0], p["h0"], None, p["w_ih"], p["w_hh"], None, None)


# ------------------------------------------------------------------ PyTorch parity

def torch_module(torch, cell, bias, bidirectional):
    kind = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN,
            "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    kwargs = {"nonlinearity": cell[4:]} if cell.startswith("rnn") else {}
    return kind(I, H, bias=bias, bidirectional=bidirectional, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [None, TORCH_RAGGED], ids=["full", "ragged"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_matches_torch(cell, lengths, reverse, bias):
    """Forward direction against a one-directional torch layer, reverse=True against
    the reverse half of a bidirectional one; lengths through a packed sequence."""
    torch = pytest.importorskip("torch")
    pack = torch.nn.utils.rnn
    p, up = make_problem(cell, bias, seed=4)
    d = 1 if reverse else 0                     # our direction's index in torch's layer
    suffix = "_reverse" if reverse else ""
    torch.manual_seed(0)
    m = torch_module(torch, cell, bias, bidirectional=reverse)
    with torch.no_grad():
        for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
            if p[k] is not None:
                getattr(m, f"{k.replace('w_', 'weight_').replace('b_', 'bias_')}_l0{suffix}").copy_(
                    torch.from_numpy(p[k]))

    def state(a):                               # (B, H) -> (D, B, H), ours at index d
        s = torch.zeros(d + 1, B, H, dtype=torch.float64)
        s[d] = torch.from_numpy(a)
        return s.requires_grad_()

    x, h0 = torch.from_numpy(p["x"]).requires_grad_(), state(p["h0"])
    c0 = state(p["c0"]) if cell == "lstm" else None
    inp = x if lengths is None else pack.pack_padded_sequence(
        x, torch.tensor(lengths), enforce_sorted=False)
    out, hidden = m(inp, (h0, c0) if cell == "lstm" else h0)
    if lengths is not None:
        out = pack.pad_packed_sequence(out, total_length=T)[0]
    y_t = out[..., d * H:(d + 1) * H]
    h_t, c_t = (hidden[0][d], hidden[1][d]) if cell == "lstm" else (hidden[d], None)
    loss = (y_t * torch.from_numpy(up["dy"])).sum() + (h_t * torch.from_numpy(up["dh_n"])).sum()
    if cell == "lstm":
        loss = loss + (c_t * torch.from_numpy(up["dc_n"])).sum()
    loss.backward()

    y, h_n, c_n, cache = forward(cell, p, lengths, reverse)
    dx, dh0, dc0, grads = reference.layer_backward(cell, cache, up["dy"], up["dh_n"], up["dc_n"])
    tol = {"rtol": 1e-9, "atol": 1e-12}
    assert_close("y", y, y_t.detach().numpy(), **tol)
    assert_close("h_n", h_n, h_t.detach().numpy(), **tol)
    assert_close("dx", dx, x.grad.numpy(), **tol)
    assert_close("dh0", dh0, h0.grad[d].numpy(), **tol)
    if cell == "lstm":
        assert_close("c_n", c_n, c_t.detach().numpy(), **tol)
        assert_close("dc0", dc0, c0.grad[d].numpy(), **tol)
    for k, g in grads.items():
        param = getattr(m, f"{k.replace('w_', 'weight_').replace('b_', 'bias_')}_l0{suffix}", None)
        if param is None:
            assert g is None, f"d{k}: expected None without bias"
        else:
            assert_close(f"d{k}", g, param.grad.numpy(), **tol)
