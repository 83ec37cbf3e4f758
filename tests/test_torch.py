"""PyTorch parity of the fastrnn layers and cells, on both backends.

A torch module's state_dict is loaded into the fastrnn twin as
``{k: v.detach().numpy() for k, v in m.state_dict().items()}`` (the API's
promise), both run the same inputs, and everything is compared tensor by
tensor: output, h_n, c_n, and the gradients of the scalar

    loss = sum(output * R) + sum(h_n * S) (+ sum(c_n * U))

with respect to x, h0, c0 and every parameter by name (fastrnn gets R, S, U
as the upstream gradients of its backward). Variable lengths are compared
against pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence
(total_length=T), whose padded steps are 0 like fastrnn's. Inference forwards
(training=False, a different C code path) are compared too.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from _compare import assert_close

torch = pytest.importorskip("torch")

BACKENDS = ["c", "numpy"]
CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
TOL = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=2e-4, atol=5e-5)}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}

T, B, I, H = 6, 5, 3, 4
RAGGED = [3, 6, 1, 6, 2]    # unsorted, with the extremes 1 and T (twice)
SHORT = [2, 3, 1, 2, 3]     # no sequence reaches T: every row is padded at the end


# ------------------------------------------------------------------ builders

def make_pair(cell, dtype, backend, num_layers=1, bidirectional=False, batch_first=False,
              bias=True, seed=0):
    """A torch module and a fastrnn layer with the same parameters."""
    torch.manual_seed(seed)
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional)
    if cell.startswith("rnn"):
        act = cell[4:]
        tm = torch.nn.RNN(I, H, nonlinearity=act, **kw)
        fm = fastrnn.RNN(I, H, nonlinearity=act, dtype=dtype, backend=backend, **kw)
    elif cell == "lstm":
        tm = torch.nn.LSTM(I, H, **kw)
        fm = fastrnn.LSTM(I, H, dtype=dtype, backend=backend, **kw)
    else:
        tm = torch.nn.GRU(I, H, **kw)
        fm = fastrnn.GRU(I, H, dtype=dtype, backend=backend, **kw)
    tm = tm.to(TORCH_DTYPE[dtype])
    fm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, fm


def make_data(cell, dtype, num_layers, bidirectional, batch_first, unbatched, seed=1,
              batch=B, steps=T):
    """x, h0, c0 (random), and the upstream gradients R, S, U, shaped as the API says."""
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    if unbatched:
        xs, ss, ys = (steps, I), (D * num_layers, H), (steps, D * H)
    else:
        xs = (batch, steps, I) if batch_first else (steps, batch, I)
        ss = (D * num_layers, batch, H)
        ys = xs[:2] + (D * H,)

    def n(shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    lstm = cell == "lstm"
    return dict(x=n(xs), h0=n(ss, 0.5), c0=n(ss, 0.5) if lstm else None,
                R=n(ys), S=n(ss), U=n(ss) if lstm else None)


def torch_run(tm, cell, data, lengths, batch_first, dtype, init_state=True):
    """torch's output, h_n, c_n and gradients; zeros are passed as the initial
    state when init_state is False, so that torch still reports dh0/dc0."""
    tdt = TORCH_DTYPE[dtype]
    xt = torch.tensor(data["x"], dtype=tdt, requires_grad=True)
    h0 = data["h0"] if init_state else np.zeros_like(data["h0"])
    h0t = torch.tensor(h0, dtype=tdt, requires_grad=True)
    c0t = None
    if cell == "lstm":
        c0 = data["c0"] if init_state else np.zeros_like(data["c0"])
        c0t = torch.tensor(c0, dtype=tdt, requires_grad=True)
    hx = (h0t, c0t) if cell == "lstm" else h0t
    tm.zero_grad()
    if lengths is None:
        out, st = tm(xt, hx)
    else:
        steps = data["x"].shape[1] if batch_first else data["x"].shape[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths, dtype=torch.int64), batch_first=batch_first,
            enforce_sorted=False)
        out, st = tm(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                        total_length=steps)
    h_n, c_n = st if cell == "lstm" else (st, None)
    loss = (out * torch.tensor(data["R"])).sum() + (h_n * torch.tensor(data["S"])).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.tensor(data["U"])).sum()
    loss.backward()
    res = {"output": out.detach().numpy(), "h_n": h_n.detach().numpy(),
           "dx": xt.grad.numpy(), "dh0": h0t.grad.numpy()}
    if cell == "lstm":
        res.update(c_n=c_n.detach().numpy(), dc0=c0t.grad.numpy())
    grads = {name: p.grad.numpy().copy() for name, p in tm.named_parameters()}
    return res, grads


def fastrnn_forward(fm, cell, data, lengths, init_state, training=True):
    h0 = data["h0"] if init_state else None
    if cell == "lstm":
        state = (h0, data["c0"] if init_state else None)
        out, (h_n, c_n) = fm(data["x"], state, lengths=lengths, training=training)
        return {"output": out, "h_n": h_n, "c_n": c_n}
    out, h_n = fm(data["x"], h0, lengths=lengths, training=training)
    return {"output": out, "h_n": h_n}


def fastrnn_run(fm, cell, data, lengths, init_state):
    """fastrnn's forward results and gradients (backward gets R, S, U)."""
    res = fastrnn_forward(fm, cell, data, lengths, init_state)
    fm.zero_grad()
    if cell == "lstm":
        dx, (dh0, dc0) = fm.backward(data["R"], (data["S"], data["U"]))
        res.update(dx=dx, dh0=dh0, dc0=dc0)
    else:
        dx, dh0 = fm.backward(data["R"], data["S"])
        res.update(dx=dx, dh0=dh0)
    return res, {k: v.copy() for k, v in fm.grads.items()}


def compare(got, got_grads, expected, expected_grads, tol):
    assert set(got) == set(expected), f"tensors: got {sorted(got)}, expected {sorted(expected)}"
    for name in expected:
        assert_close(name, got[name], expected[name], tol)
    assert set(got_grads) == set(expected_grads), \
        f"parameter names: got {sorted(got_grads)}, expected {sorted(expected_grads)}"
    for name in expected_grads:
        assert_close(f"grad {name}", got_grads[name], expected_grads[name], tol)


def padded_mask(lengths, batch_first, steps=T):
    """(T, B, 1) or (B, T, 1) boolean: True where the step is padding."""
    pad = np.arange(steps)[:, None] >= np.asarray(lengths)[None, :]     # (T, B)
    return (pad.T if batch_first else pad)[..., None]


# ------------------------------------------------------------------ layers

CONFIGS = {
    "L1": dict(),
    "L1-h0": dict(init=True),
    "L1-bidir-nobias": dict(bidirectional=True, bias=False),
    "L2-bidir-h0": dict(num_layers=2, bidirectional=True, init=True),
    "L2-batchfirst-nobias-h0": dict(num_layers=2, batch_first=True, bias=False, init=True),
    "L3": dict(num_layers=3),
    "L3-bidir-batchfirst-h0": dict(num_layers=3, bidirectional=True, batch_first=True,
                                   init=True),
    "unbatched-L1-nobias": dict(unbatched=True, bias=False),
    "unbatched-L2-bidir-h0": dict(num_layers=2, bidirectional=True, unbatched=True, init=True),
    "unbatched-batchfirst-L1-h0": dict(batch_first=True, unbatched=True, init=True),
    "packed-L1": dict(lengths=RAGGED),
    "packed-L2-bidir-h0": dict(num_layers=2, bidirectional=True, lengths=RAGGED, init=True),
    "packed-L2-bidir-batchfirst": dict(num_layers=2, bidirectional=True, batch_first=True,
                                       lengths=RAGGED),
    "packed-L3-bidir-batchfirst-nobias-h0": dict(num_layers=3, bidirectional=True,
                                                 batch_first=True, bias=False,
                                                 lengths=RAGGED, init=True),
    "packed-short-L2-bidir-h0": dict(num_layers=2, bidirectional=True, lengths=SHORT,
                                     init=True),
}


def run_config(cell, backend, dtype, cfg):
    L, bidir = cfg.get("num_layers", 1), cfg.get("bidirectional", False)
    bf, unbatched = cfg.get("batch_first", False), cfg.get("unbatched", False)
    lengths, init = cfg.get("lengths"), cfg.get("init", False)
    tm, fm = make_pair(cell, dtype, backend, L, bidir, bf, cfg.get("bias", True))
    data = make_data(cell, dtype, L, bidir, bf, unbatched)
    expected, expected_grads = torch_run(tm, cell, data, lengths, bf, dtype, init)
    tol = TOL[dtype]

    # inference first (its own C code path), then a training forward and backward
    infer = fastrnn_forward(fm, cell, data, lengths, init, training=False)
    for name, value in infer.items():
        assert_close(f"inference {name}", value, expected[name], tol)
    got, got_grads = fastrnn_run(fm, cell, data, lengths, init)
    compare(got, got_grads, expected, expected_grads, tol)
    if lengths is not None:
        pad = padded_mask(lengths, bf)
        assert np.all(got["output"][np.broadcast_to(pad, got["output"].shape)] == 0), \
            "output: padded steps must be exactly 0"
        assert np.all(got["dx"][np.broadcast_to(pad, got["dx"].shape)] == 0), \
            "dx: padded steps must get exactly 0"


@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_layer_matches_torch_float64(cell, backend, cfg):
    run_config(cell, backend, np.float64, cfg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_layer_matches_torch_float32_smoke(cell, backend):
    run_config(cell, backend, np.float32, dict(num_layers=2, bidirectional=True,
                                               lengths=RAGGED, init=True))


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("batch", [90, 300], ids=["B90", "B300"])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_projection_chunks_match_torch(cell, batch, batch_first):
    """Inference projects the input a few steps at a time (256 rows); with a
    large batch T=7 spans several chunks, the last one partial."""
    steps = 7
    tm, fm = make_pair(cell, np.float64, "c", 2, True, batch_first)
    data = make_data(cell, np.float64, 2, True, batch_first, False, batch=batch, steps=steps)
    lengths = np.random.default_rng(2).integers(1, steps + 1, batch)
    lengths[:2] = (1, steps)
    expected, _ = torch_run(tm, cell, data, lengths, batch_first, np.float64)
    got = fastrnn_forward(fm, cell, data, lengths, True, training=False)
    for name, value in got.items():
        assert_close(name, value, expected[name], TOL[np.float64])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_with_length_matches_torch_on_the_prefix(cell, backend, bidirectional):
    """An unbatched sequence with lengths=k is torch run on x[:k], zero padded."""
    k = 4
    tm, fm = make_pair(cell, np.float64, backend, 2, bidirectional)
    data = make_data(cell, np.float64, 2, bidirectional, False, True)
    short = dict(data, x=data["x"][:k], R=data["R"][:k])
    expected, expected_grads = torch_run(tm, cell, short, None, False, np.float64)
    for name in ("output", "dx"):   # fastrnn pads the steps past the length with zeros
        pad = np.zeros((T - k, expected[name].shape[1]))
        expected[name] = np.concatenate([expected[name], pad])
    got, got_grads = fastrnn_run(fm, cell, data, k, True)
    compare(got, got_grads, expected, expected_grads, TOL[np.float64])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_parameter_gradients_accumulate_like_torch(cell, backend):
    """Two backward calls add up (torch's .grad does the same); zero_grad clears."""
    tm, fm = make_pair(cell, np.float64, backend, 2, True)
    data = make_data(cell, np.float64, 2, True, False, False)
    _, expected_grads = torch_run(tm, cell, data, RAGGED, False, np.float64)
    fastrnn_run(fm, cell, data, RAGGED, True)        # zero_grad, forward, backward
    fastrnn_forward(fm, cell, data, RAGGED, True)
    if cell == "lstm":
        fm.backward(data["R"], (data["S"], data["U"]))
    else:
        fm.backward(data["R"], data["S"])
    for name, g in expected_grads.items():
        assert_close(f"twice grad {name}", fm.grads[name], 2 * g, TOL[np.float64])
    fm.zero_grad()
    for name, g in fm.grads.items():
        assert np.all(g == 0), f"zero_grad left {name} non-zero"


# ------------------------------------------------------------------- cells

def make_cell_pair(cell, backend, bias, seed=0):
    torch.manual_seed(seed)
    if cell.startswith("rnn"):
        act = cell[4:]
        tc = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=act)
        fc = fastrnn.RNNCell(I, H, bias=bias, nonlinearity=act, dtype=np.float64,
                             backend=backend)
    elif cell == "lstm":
        tc = torch.nn.LSTMCell(I, H, bias=bias)
        fc = fastrnn.LSTMCell(I, H, bias=bias, dtype=np.float64, backend=backend)
    else:
        tc = torch.nn.GRUCell(I, H, bias=bias)
        fc = fastrnn.GRUCell(I, H, bias=bias, dtype=np.float64, backend=backend)
    tc = tc.double()
    fc.load_state_dict({k: v.detach().numpy() for k, v in tc.state_dict().items()})
    return tc, fc


@pytest.mark.parametrize("variant", ["bias-state", "nobias-zerostate"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_torch(cell, backend, unbatched, variant):
    bias, init = variant == "bias-state", variant == "bias-state"
    tc, fc = make_cell_pair(cell, backend, bias)
    rng = np.random.default_rng(3)
    lead = () if unbatched else (B,)
    x = rng.standard_normal(lead + (I,))
    h = 0.5 * rng.standard_normal(lead + (H,)) if init else np.zeros(lead + (H,))
    c = 0.5 * rng.standard_normal(lead + (H,)) if init else np.zeros(lead + (H,))
    S, U = rng.standard_normal(lead + (H,)), rng.standard_normal(lead + (H,))
    lstm = cell == "lstm"

    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h, requires_grad=True)
    ct = torch.tensor(c, requires_grad=True)
    if lstm:
        h1t, c1t = tc(xt, (ht, ct))
        loss = (h1t * torch.tensor(S)).sum() + (c1t * torch.tensor(U)).sum()
    else:
        h1t = tc(xt, ht)
        loss = (h1t * torch.tensor(S)).sum()
    loss.backward()

    tol = TOL[np.float64]
    if lstm:
        h1, c1 = fc(x, (h, c) if init else None)
        assert_close("c'", c1, c1t.detach().numpy(), tol)
        dx, (dh, dc) = fc.backward((S, U))
        assert_close("dc", dc, ct.grad.numpy(), tol)
    else:
        h1 = fc(x, h if init else None)
        dx, dh = fc.backward(S)
    assert_close("h'", h1, h1t.detach().numpy(), tol)
    assert_close("dx", dx, xt.grad.numpy(), tol)
    assert_close("dh", dh, ht.grad.numpy(), tol)
    expected_grads = {n: p.grad.numpy() for n, p in tc.named_parameters()}
    assert set(fc.grads) == set(expected_grads), \
        f"parameter names: got {sorted(fc.grads)}, expected {sorted(expected_grads)}"
    for name, g in expected_grads.items():
        assert_close(f"grad {name}", fc.grads[name], g, tol)
