"""Layer-level gradients against central finite differences, float64, both backends.

The scalar is f = sum(output * R) + sum(h_n * S) (+ sum(c_n * U) for LSTM), whose
gradient is what layer.backward(R, S) (or (S, U)) returns: dx, dh0, dc0 and the
parameter gradients. Every entry of x, h0, c0 and of every parameter is perturbed
(sizes are tiny). Unlike test_backends.py, this also checks the Python code the
two backends share: stacking, dropout between layers, direction halves,
batch_first and unbatched reshapes, and the Bidirectional merge modes.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

EPS = 1e-6
I, H = 2, 3
T, B = 3, 3
BACKENDS = ("c", "numpy")

CASES = {
    "plain": {"state": True},
    "no_state_given": {"state": False},
    "bi_lengths_unsorted": {"bidirectional": True, "lengths": [2, 3, 1]},
    "layers2_bi_bf_lengths": {"num_layers": 2, "bidirectional": True, "batch_first": True,
                              "lengths": [1, 3, 2]},
    "unbatched_layers2_nobias": {"num_layers": 2, "bias": False, "unbatched": True},
    "unbatched_bf_bi_lengths": {"bidirectional": True, "batch_first": True,
                                "unbatched": True, "lengths": [2]},
}


def _forward(layer, x, h0, c0, lengths):
    """output, h_n, c_n (None without a cell state)."""
    if isinstance(getattr(layer, "layer", layer), fastrnn.LSTM):
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
        return out, h_n, c_n
    out, h_n = layer(x, h0, lengths=lengths)
    return out, h_n, None


def check_gradients(layer, inputs, lengths, assert_close, numeric_gradient,
                    replay_masks=False):
    """Analytic gradients of f against central differences on every entry. With
    replay_masks, the layer's generator is set back before each forward, so that
    every evaluation draws the same dropout or zoneout masks (white box: the layer
    draws them from layer._rng)."""
    x, h0, c0 = inputs["x"], inputs["h0"], inputs["c0"]
    R, S, U = inputs["dy"], inputs["dh_n"], inputs["dc_n"]
    lstm = c0 is not None or U is not None
    rng_state = layer._rng.bit_generator.state if replay_masks else None

    def f():
        if replay_masks:
            layer._rng.bit_generator.state = rng_state
        out, h_n, c_n = _forward(layer, x, h0, c0, lengths)
        total = np.sum(out * R) + np.sum(h_n * S)
        return total + (np.sum(c_n * U) if lstm else 0.0)

    layer.zero_grad()
    f()
    if lstm:
        dx, (dh0, dc0) = layer.backward(R, (S, U))
    else:
        (dx, dh0), dc0 = layer.backward(R, S), None
    analytic = {"dx": (x, dx), "dh0": (h0, dh0)}
    if lstm:
        analytic["dc0"] = (c0, dc0)
    for name, p in layer.named_parameters():
        analytic[f"grads[{name}]"] = (p, layer.grads[name].copy())

    for name, (value, grad) in analytic.items():
        if value is None:                     # an implicit zero state: dh0 still returned
            assert grad is not None and not np.any(np.isnan(grad)), f"{name}: expected an array"
            continue
        numeric = numeric_gradient(f, value, EPS)
        assert np.any(numeric != 0) or name.startswith("grads[bias"), \
            f"{name}: f does not depend on it at all; the check would be vacuous"
        assert_close(name, grad, numeric, np.float64, kind="fd")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_layer_gradients_match_finite_differences(cell, case, backend, make_layer, make_inputs,
                                                  assert_close, numeric_gradient):
    kw = {k: v for k, v in case.items() if k not in ("state", "lengths", "unbatched")}
    layer = make_layer(cell, I, H, dtype=np.float64, seed=31, backend=backend, **kw)
    inputs = make_inputs(layer, T, B, seed=32, unbatched=case.get("unbatched", False),
                         state=case.get("state", True))
    check_gradients(layer, inputs, case.get("lengths"), assert_close, numeric_gradient)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_through_dropout_match_finite_differences(cell, backend, make_layer,
                                                            make_inputs, assert_close,
                                                            numeric_gradient):
    """The masks are held fixed by replaying the layer's generator before each
    forward (white box: the layer draws its masks from layer._rng)."""
    # seed 37: at H = 3 some draws leave a relu layer-direction dead at every
    # step (33 did for IndRNN), which would make its check vacuous
    layer = make_layer(cell, I, H, dtype=np.float64, seed=37, backend=backend, num_layers=3,
                       bidirectional=True, dropout=0.4)
    inputs = make_inputs(layer, T, B, seed=34)
    check_gradients(layer, inputs, [3, 1, 2], assert_close, numeric_gradient,
                    replay_masks=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("cell_kind", ["lstm", "gru"])
def test_bidirectional_wrapper_gradients_match_finite_differences(
        cell_kind, merge_mode, backend, make_layer, make_inputs, assert_close,
        numeric_gradient):
    layer = make_layer(cell_kind, I, H, dtype=np.float64, seed=35, backend=backend,
                       batch_first=True)
    wrapper = fastrnn.Bidirectional(layer, merge_mode=merge_mode)
    inputs = make_inputs(wrapper, T, B, seed=36)
    check_gradients(wrapper, inputs, [2, 3, 1], assert_close, numeric_gradient)
