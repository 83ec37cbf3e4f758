"""Streaming: stateful layers carry their state across calls, and truncated BPTT
chains calls backwards through tapes; chunked runs equal one long run."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

T, B, I, H = 12, 3, 4, 5
CHUNKS = [slice(0, 5), slice(5, 6), slice(6, 12)]


def make(cell, make_layer, backend, **kw):
    return make_layer(cell, I, H, dtype=np.float64, backend=backend, seed=3, **kw)


def state_of(layer, out_state):
    """(h, c or None) from a layer call's second result."""
    return out_state if isinstance(out_state, tuple) else (out_state, None)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "batch_first": True}], ids=["1", "2-bf"])
def test_stateful_chunks_equal_one_call(cell, backend, kw, make_layer):
    rng = np.random.default_rng(0)
    bf = kw.get("batch_first", False)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I))
    whole = make(cell, make_layer, backend, **kw)
    out, st = whole(x)
    h_n, c_n = state_of(whole, st)

    stream = make(cell, make_layer, backend, stateful=True, **kw)
    pieces = []
    for ch in CHUNKS:
        o, st_k = stream(x[:, ch] if bf else x[ch])
        pieces.append(o)
    h_k, c_k = state_of(stream, st_k)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1 if bf else 0), out,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_k, h_n, rtol=1e-12, atol=1e-14)
    if c_n is not None:
        np.testing.assert_allclose(c_k, c_n, rtol=1e-12, atol=1e-14)

    stream.reset_state()                       # back to zeros: the first chunk again
    o, _ = stream(x[:, CHUNKS[0]] if bf else x[CHUNKS[0]])
    np.testing.assert_allclose(o, pieces[0], rtol=0, atol=0)


def test_stateful_batch_change_needs_reset():
    layer = fastrnn.GRU(I, H, stateful=True)
    layer(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match="reset_state"):
        layer(np.zeros((T, B + 1, I)))
    layer.reset_state()
    layer(np.zeros((T, B + 1, I)))


def test_stateful_explicit_state_wins():
    layer = fastrnn.LSTM(I, H, stateful=True, dtype=np.float64)
    fresh = fastrnn.LSTM(I, H, dtype=np.float64)
    fresh.load_state_dict(layer.state_dict())
    x = np.ones((T, B, I))
    layer(x)
    zeros = (np.zeros((1, B, H)), np.zeros((1, B, H)))
    np.testing.assert_array_equal(layer(x, zeros)[0], fresh(x)[0])


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_truncated_bptt_through_tapes_equals_one_call(cell, backend, make_layer):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    lstm = cell == "lstm"
    h0 = rng.standard_normal((2, B, H))
    c0 = rng.standard_normal((2, B, H)) if lstm else None
    dy = rng.standard_normal((T, B, H))

    whole = make(cell, make_layer, backend, num_layers=2)
    whole(x, (h0, c0) if lstm else h0)
    dx, d0 = whole.backward(dy)
    dh0, dc0 = d0 if lstm else (d0, None)

    stream = make(cell, make_layer, backend, num_layers=2, stateful=True)
    tapes, state = [], ((h0, c0) if lstm else h0)
    for ch in CHUNKS:
        _, state = stream(x[ch], state)
        tapes.append(stream.tape)
    stream.zero_grad()
    d_state, dxs = None, []
    for ch, tape in zip(reversed(CHUNKS), reversed(tapes)):
        dx_k, d_state = stream.backward(dy[ch], d_state, tape=tape)
        dxs.append(dx_k)
    np.testing.assert_allclose(np.concatenate(dxs[::-1]), dx, rtol=1e-11, atol=1e-13)
    got_dh0, got_dc0 = d_state if lstm else (d_state, None)
    np.testing.assert_allclose(got_dh0, dh0, rtol=1e-11, atol=1e-13)
    if lstm:
        np.testing.assert_allclose(got_dc0, dc0, rtol=1e-11, atol=1e-13)
    for name, g in whole.grads.items():
        np.testing.assert_allclose(stream.grads[name], g, rtol=1e-11, atol=1e-13, err_msg=name)


def test_tapes_belong_to_their_layer():
    a, b = fastrnn.GRU(I, H), fastrnn.GRU(I, H)
    a(np.ones((T, B, I)))
    with pytest.raises(ValueError, match="tape"):
        b.backward(np.ones((T, B, H)), tape=a.tape)
    with pytest.raises(ValueError, match="tape"):
        a.backward(np.ones((T, B, H)), tape="not a tape")
    a(np.ones((T, B, I)), training=False)
    assert a.tape is None


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_cell_steps_with_tapes_equal_a_layer(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    layer = fastrnn.LSTM(I, H, dtype=np.float64, backend=backend, seed=4)
    layer(x)
    dx, (dh0, dc0) = layer.backward(dy)

    cell = fastrnn.LSTMCell(I, H, dtype=np.float64, backend=backend)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    state, tapes = None, []
    for t in range(T):
        state = cell(x[t], state)
        tapes.append(cell.tape)
    cell.zero_grad()
    dh, dc, dxs = np.zeros((B, H)), np.zeros((B, H)), []
    for t in reversed(range(T)):
        dx_t, (dh, dc) = cell.backward((dh + dy[t], dc), tape=tapes[t])
        dxs.append(dx_t)
    np.testing.assert_allclose(np.stack(dxs[::-1]), dx, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dh, dh0[0], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dc, dc0[0], rtol=1e-11, atol=1e-13)
    for name, g in layer.grads.items():
        np.testing.assert_allclose(cell.grads[name[:-3]], g, rtol=1e-11, atol=1e-13)
