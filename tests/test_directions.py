"""direction="reverse" and lengths of 0.

A reverse-only layer must equal, per sequence, a forward layer run on that
sequence's valid steps reversed (outputs reversed back); a length-0 sequence
outputs zeros, keeps its initial state and passes its state gradient through.
"""
from __future__ import annotations

import numpy as np
import pytest

T, B, I, H = 6, 4, 3, 5
LENGTHS = np.array([6, 2, 0, 4])


def per_sequence_reversal(x, lengths):
    """x (T, B, F) with each sequence's first lengths[b] steps reversed."""
    out = x.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = x[:n, b][::-1]
    return out


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_reverse_equals_forward_on_reversed_sequences(cell, backend, lengths, make_layer,
                                                      make_inputs, run_layer, assert_close):
    dtype = np.float64
    rev = make_layer(cell, I, H, direction="reverse", dtype=dtype, backend=backend, seed=3)
    fwd = make_layer(cell, I, H, dtype=dtype, backend=backend, seed=3)
    assert list(rev.state_dict()) == list(fwd.state_dict())   # no suffix
    fwd.load_state_dict(rev.state_dict())
    inputs = make_inputs(rev, T, B, seed=5)
    got = run_layer(rev, lengths=lengths, **inputs)
    lens = LENGTHS if lengths is not None else np.full(B, T)
    flipped = dict(inputs, x=per_sequence_reversal(inputs["x"], lens),
                   dy=per_sequence_reversal(inputs["dy"], lens))
    want = run_layer(fwd, lengths=lengths, **flipped)
    want["output"] = per_sequence_reversal(want["output"], lens)
    want["dx"] = per_sequence_reversal(want["dx"], lens)
    for name in want:
        assert_close(name, got[name], want[name], dtype)


def test_reverse_stack_c_matches_numpy(cell, dtype, make_layer, make_inputs, run_layer,
                                       assert_tensors_close):
    layers = {b: make_layer(cell, I, H, num_layers=2, direction="reverse", batch_first=True,
                            dtype=dtype, backend=b, seed=1) for b in ("c", "numpy")}
    inputs = make_inputs(layers["c"], T, B, seed=2)
    assert_tensors_close(run_layer(layers["c"], lengths=LENGTHS, **inputs),
                         run_layer(layers["numpy"], lengths=LENGTHS, **inputs), dtype)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_length_zero(cell, backend, direction, make_layer, make_inputs, run_layer):
    layer = make_layer(cell, I, H, num_layers=2, direction=direction, dtype=np.float64,
                       backend=backend, seed=4)
    inputs = make_inputs(layer, T, B, seed=6)
    got = run_layer(layer, lengths=LENGTHS, **inputs)
    b = 2                                                # the length-0 row
    assert np.all(got["output"][:, b] == 0)
    assert np.array_equal(got["h_n"][:, b], inputs["h0"][:, b])
    assert np.array_equal(got["dh0"][:, b], inputs["dh_n"][:, b])
    assert np.all(got["dx"][:, b] == 0)
    if "c_n" in got:
        assert np.array_equal(got["c_n"][:, b], inputs["c0"][:, b])
        assert np.array_equal(got["dc0"][:, b], inputs["dc_n"][:, b])
    # the other rows are what they are without the empty one
    keep = [0, 1, 3]
    sub = {k: (None if v is None else (v[:, keep])) for k, v in inputs.items()}
    alone = run_layer(layer, lengths=LENGTHS[keep], **sub)
    for name in ("output", "h_n", "dx", "dh0"):
        np.testing.assert_allclose(got[name][:, keep], alone[name], rtol=1e-12, atol=1e-14,
                                   err_msg=name)


def test_all_lengths_zero(make_layer):
    layer = make_layer("lstm", I, H, dtype=np.float64, seed=0)
    h0, c0 = np.ones((1, 2, H)), np.full((1, 2, H), 2.0)
    out, (h_n, c_n) = layer(np.ones((T, 2, I)), (h0, c0), lengths=[0, 0])
    assert np.all(out == 0) and np.array_equal(h_n, h0) and np.array_equal(c_n, c0)
    dx, (dh0, dc0) = layer.backward(np.ones_like(out), (np.ones_like(h0), np.ones_like(c0)))
    assert np.all(dx == 0) and np.all(dh0 == 1) and np.all(dc0 == 1)
    assert all(np.all(g == 0) for g in layer.grads.values())


def test_reverse_gradients_by_finite_differences(cell, make_layer, make_inputs,
                                                 numeric_gradient):
    for backend in ("c", "numpy"):
        layer = make_layer(cell, I, H, direction="reverse", dtype=np.float64, backend=backend,
                           seed=7)
        inputs = make_inputs(layer, T, B, seed=8)
        lstm = inputs["c0"] is not None

        def loss(x):
            if lstm:
                out, (h_n, c_n) = layer(x, (inputs["h0"], inputs["c0"]), lengths=LENGTHS)
                return (out * inputs["dy"]).sum() + (h_n * inputs["dh_n"]).sum() \
                    + (c_n * inputs["dc_n"]).sum()
            out, h_n = layer(x, inputs["h0"], lengths=LENGTHS)
            return (out * inputs["dy"]).sum() + (h_n * inputs["dh_n"]).sum()

        loss(inputs["x"])
        d_state = (inputs["dh_n"], inputs["dc_n"]) if lstm else inputs["dh_n"]
        dx = layer.backward(inputs["dy"], d_state)[0]
        x = inputs["x"].copy()
        numeric = numeric_gradient(lambda: loss(x), x)
        np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8, err_msg=backend)
