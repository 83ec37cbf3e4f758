"""Layer normalization (Ba et al. 2016) in fastrnn.reference: "lstm" and "gru".

Checked against independent truths: a PyTorch implementation written here
(torch.nn.functional.layer_norm, autograd, the time loop, lengths, zoneout and
Keras' dropout masks stepped in Python) and central differences in float64
through the scalar sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n). Also: ln=None
adds None gradients and nothing else, and the combinations LN does not
implement are refused.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference
from fastrnn.kinds import CELLS, NUM_GATES

T, B, I, H = 5, 3, 4, 6
LN_CELLS = ["lstm", "gru"]
PARAMS = ("w_ih", "w_hh", "b_ih", "b_hh", "g_ih", "g_hh", "g_c", "b_c")
GRAD_NAMES = {"w_ih": "w_ih", "w_hh": "w_hh", "b_ih": "b_ih", "b_hh": "b_hh",
              "g_ih": "ln_ih", "g_hh": "ln_hh", "g_c": "ln_c", "b_c": "ln_cb"}

CASES = {   # lengths, reverse, bias, masks (zoneout and dropout)
    "fwd_ragged": dict(lengths=[3, 5, 0], reverse=False, bias=True, masks=False),
    "rev_ragged_masks": dict(lengths=[2, 5, 4], reverse=True, bias=True, masks=True),
    "fwd_nobias_masks": dict(lengths=None, reverse=False, bias=False, masks=True),
}


def make_problem(cell, seed=0, bias=True, masks=False, dtype=np.float64):
    """Inputs, parameters (gains around 1, shifts around 0), upstream gradients,
    and (masks) zoneout and dropout masks of one layer-direction."""
    rng = np.random.default_rng(seed)
    G, lstm = NUM_GATES[cell], cell == "lstm"

    def u(*shape, lo=-0.8, hi=0.8):
        return rng.uniform(lo, hi, shape).astype(dtype)

    p = {"x": u(T, B, I), "h0": u(B, H), "c0": u(B, H) if lstm else None,
         "w_ih": u(G * H, I), "w_hh": u(G * H, H),
         "b_ih": u(G * H) if bias else None, "b_hh": u(G * H) if bias else None,
         "g_ih": u(G * H, lo=0.5, hi=1.5), "g_hh": u(G * H, lo=0.5, hi=1.5),
         "g_c": u(H, lo=0.5, hi=1.5) if lstm else None, "b_c": u(H) if lstm and bias else None}
    up = {"dy": u(T, B, H), "dh_n": u(B, H), "dc_n": u(B, H) if lstm else None}
    zoneout = dropout = None
    if masks:
        def bits(*shape, q):
            return (rng.uniform(size=shape) < q).astype(np.uint8)
        zoneout = (bits(T, B, H, q=0.3), bits(T, B, H, q=0.4) if lstm else None, 0.3, 0.4)
        dropout = (bits(G, B, I, q=0.7), bits(G, B, H, q=0.6), 0.3, 0.4)   # 1: kept
    return p, up, zoneout, dropout


def ln_of(p):
    return (p["g_ih"], p["g_hh"], p["g_c"], p["b_c"])


def forward(cell, p, lengths=None, reverse=False, zoneout=None, dropout=None):
    return reference.layer_forward(cell, p["x"], p["h0"], p["c0"], p["w_ih"], p["w_hh"],
                                   p["b_ih"], p["b_hh"], lengths=lengths, reverse=reverse,
                                   zoneout=zoneout, dropout=dropout, ln=ln_of(p))


def run_reference(cell, p, up, lengths, reverse, zoneout, dropout):
    y, h_n, c_n, cache = forward(cell, p, lengths, reverse, zoneout, dropout)
    dx, dh0, dc0, grads = reference.layer_backward(cell, cache, up["dy"], up["dh_n"], up["dc_n"])
    assert set(grads) == set(GRAD_NAMES.values()) | {"w_hr", "peep"}
    return {"output": y, "h_n": h_n, "c_n": c_n, "dx": dx, "dh0": dh0, "dc0": dc0,
            **{f"grads[{k}]": grads[GRAD_NAMES[k]] for k in PARAMS}}


def run_torch(torch, cell, p, up, lengths, reverse, zoneout, dropout):
    """The same layer in torch ops, written from the equations: per gate block g the
    masked products, F.layer_norm over all G*H columns, the bias, the cell."""
    F = torch.nn.functional
    t = {k: None if v is None else torch.tensor(v, requires_grad=True) for k, v in p.items()}
    G = NUM_GATES[cell]
    ones = [torch.ones(B, I, dtype=torch.float64)] * G, [torch.ones(B, H, dtype=torch.float64)] * G
    keep_x, keep_h = ones if dropout is None else (
        [torch.tensor(m / (1 - q)) for m in mask] for mask, q in zip(dropout[:2], dropout[2:]))
    zh, zc = (None, None) if zoneout is None else (
        None if m is None else torch.tensor(m.astype(np.float64)) for m in zoneout[:2])

    def norm(a, g, b):
        return F.layer_norm(a, (a.shape[-1],), weight=g, eps=1e-5) + (0 if b is None else b)

    def product(a, w, keep):
        return torch.cat([(a * keep[k]) @ w[k * H:(k + 1) * H].T for k in range(G)], 1)

    active = [torch.tensor([s < (T if lengths is None else lengths[b]) for b in range(B)])[:, None]
              for s in range(T)]
    h, c, ys = t["h0"], t["c0"], [None] * T
    for s in (range(T - 1, -1, -1) if reverse else range(T)):
        gi = norm(product(t["x"][s], t["w_ih"], keep_x), t["g_ih"], t["b_ih"])
        gh = norm(product(h, t["w_hh"], keep_h), t["g_hh"], t["b_hh"])
        c_new = None
        if cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, 1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(norm(c_new, t["g_c"], t["b_c"]))
            if zc is not None:
                c_new = zc[s] * c + (1 - zc[s]) * c_new
        else:
            (ir, iz, in_), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            h_new = (1 - z) * torch.tanh(in_ + r * hn) + z * h
        if zh is not None:
            h_new = zh[s] * h + (1 - zh[s]) * h_new
        ys[s] = torch.where(active[s], h_new, torch.zeros_like(h_new))
        h = torch.where(active[s], h_new, h)
        c = None if c is None else torch.where(active[s], c_new, c)
    y = torch.stack(ys)
    loss = (y * torch.tensor(up["dy"])).sum() + (h * torch.tensor(up["dh_n"])).sum()
    if c is not None:
        loss = loss + (c * torch.tensor(up["dc_n"])).sum()
    loss.backward()

    def grad(k):
        return None if t[k] is None else t[k].grad.numpy()
    return {"output": y.detach().numpy(), "h_n": h.detach().numpy(),
            "c_n": None if c is None else c.detach().numpy(), "dx": grad("x"),
            "dh0": grad("h0"), "dc0": grad("c0"), **{f"grads[{k}]": grad(k) for k in PARAMS}}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("cell", LN_CELLS)
def test_matches_torch(cell, case, assert_tensors_close):
    torch = pytest.importorskip("torch")
    kw = CASES[case]
    p, up, zoneout, dropout = make_problem(cell, seed=1, bias=kw["bias"], masks=kw["masks"])
    args = (p, up, kw["lengths"], kw["reverse"], zoneout, dropout)
    got = run_reference(cell, *args)
    expected = run_torch(torch, cell, *args)
    assert_tensors_close(got, expected, np.float64, context=f"{cell} {case} vs torch")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", LN_CELLS)
def test_gradients_match_finite_differences(cell, reverse, assert_close, numeric_gradient):
    p, up, zoneout, dropout = make_problem(cell, seed=2, masks=True)
    lengths = [4, 5, 2]
    got = run_reference(cell, p, up, lengths, reverse, zoneout, dropout)

    def objective():
        y, h_n, c_n, _ = forward(cell, p, lengths, reverse, zoneout, dropout)
        f = np.sum(y * up["dy"]) + np.sum(h_n * up["dh_n"])
        return f + (0.0 if c_n is None else np.sum(c_n * up["dc_n"]))

    names = {"x": "dx", "h0": "dh0", "c0": "dc0", **{k: f"grads[{k}]" for k in PARAMS}}
    for name, value in p.items():
        if value is None:
            assert got[names[name]] is None, f"{names[name]}: expected None"
            continue
        assert_close(names[name], got[names[name]], numeric_gradient(objective, value),
                     np.float64, kind="fd")


@pytest.mark.parametrize("cell", LN_CELLS)
def test_step_functions_equal_a_one_step_layer(cell):
    """cell_forward/cell_backward (which read ln from the step cache), float32 kept."""
    p, up, _, _ = make_problem(cell, seed=3, dtype=np.float32)
    p["x"] = p["x"][:1]
    h, c, step = reference.cell_forward(cell, p["x"][0], p["h0"], p["c0"], p["w_ih"], p["w_hh"],
                                        p["b_ih"], p["b_hh"], ln=ln_of(p))
    dx, dh, dc, grads = reference.cell_backward(cell, up["dh_n"], up["dc_n"], step)
    y1, h1, c1, cache = forward(cell, p)
    dx1, dh1, dc1, grads1 = reference.layer_backward(cell, cache, None, up["dh_n"], up["dc_n"])
    pairs = {"h": (h, h1), "c": (c, c1), "dx": (dx, dx1[0]), "dh": (dh, dh1), "dc": (dc, dc1),
             **{k: (grads[k], grads1[k]) for k in grads}}
    for name, (a, b) in pairs.items():
        if b is None:
            assert a is None, name
        else:
            assert a.dtype == np.float32, f"{name}: dtype {a.dtype}"
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
    for k in reference.LN_SAVED[cell]:
        assert cache[k].dtype == np.float32, k


@pytest.mark.parametrize("cell", CELLS)
def test_without_ln_the_ln_gradients_are_none(cell):
    """Every cell, plain and general, step and layer, has the four keys, None."""
    rng = np.random.default_rng(4)
    G, x, h0 = NUM_GATES[cell], rng.uniform(-1, 1, (T, B, I)), rng.uniform(-1, 1, (B, H))
    c0 = h0.copy() if cell == "lstm" else None
    w_hh = rng.uniform(-1, 1, H if cell.startswith("indrnn") else (G * H, H))
    w = (rng.uniform(-1, 1, (G * H, I)), w_hh, None, None)
    acts = {"lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh"),
            "gru_reset_before": ("sigmoid", "tanh")}.get(cell, ("tanh",))
    general = reference.Options([(a, 0.0, 0.0) for a in acts], clip=3.0)
    for opts in ([None, general] if not cell.startswith("indrnn") else [None]):
        _, _, _, cache = reference.layer_forward(cell, x, h0, c0, *w, opts=opts)
        grads = reference.layer_backward(cell, cache, np.ones((T, B, H)))[3]
        assert all(grads[k] is None for k in reference.LN_GRADS), (cell, opts)
        assert "ln" in cache and not set(reference.LN_SAVED["lstm"]) & set(cache)
    _, _, step = reference.cell_forward(cell, x[0], h0, c0, *w)
    grads = reference.cell_backward(cell, h0, c0, step)[3]
    assert all(grads[k] is None for k in reference.LN_GRADS)


def test_refused():
    p, _, _, _ = make_problem("lstm", seed=5)
    x, h0, c0 = p["x"], p["h0"], p["c0"]
    for cell in ("rnn_tanh", "rnn_relu", "indrnn_tanh", "indrnn_relu", "gru_reset_before"):
        GH = NUM_GATES[cell] * H
        w = (p["w_ih"][:GH], p["w_hh"][0] if cell.startswith("indrnn") else p["w_hh"][:GH])
        ln = (np.ones(GH), np.ones(GH), None, None)
        with pytest.raises(ValueError, match="'lstm' and 'gru' only"):
            reference.layer_forward(cell, x, h0, None, *w, None, None, ln=ln)
        with pytest.raises(ValueError, match="'lstm' and 'gru' only"):
            reference.cell_forward(cell, x[0], h0, None, *w, None, None, ln=ln)
    w4 = (p["w_ih"], p["w_hh"], None, None)
    with pytest.raises(ValueError, match="projection w_hr"):
        reference.layer_forward("lstm", x, h0[:, :2], c0, p["w_ih"], p["w_hh"][:, :2], None,
                                None, w_hr=np.ones((2, H)), ln=ln_of(p))
    with pytest.raises(ValueError, match="projection w_hr"):
        reference.lstm_cell_forward(x[0], h0[:, :2], c0, p["w_ih"], p["w_hh"][:, :2], None,
                                    None, w_hr=np.ones((2, H)), ln=ln_of(p))
    opts = reference.Options([("sigmoid", 0, 0), ("tanh", 0, 0), ("tanh", 0, 0)])
    with pytest.raises(ValueError, match="general cells"):
        reference.layer_forward("lstm", x, h0, c0, *w4, opts=opts, ln=ln_of(p))
    with pytest.raises(ValueError, match="g_c is required"):
        reference.layer_forward("lstm", x, h0, c0, *w4, ln=ln_of(p)[:2] + (None, None))
    q, _, _, _ = make_problem("gru", seed=5)
    with pytest.raises(ValueError, match="must be None for 'gru'"):
        reference.layer_forward("gru", x, h0, None, q["w_ih"], q["w_hh"], None, None,
                                ln=(q["g_ih"], q["g_hh"], np.ones(H), None))
    with pytest.raises(ValueError, match="expected None or a tuple"):
        reference.layer_forward("gru", x, h0, None, q["w_ih"], q["w_hh"], None, None,
                                ln=[q["g_ih"], q["g_hh"]])
