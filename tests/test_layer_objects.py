"""Layer objects behave as Python objects should: pickling and copying, parameter
assignment, and robustness to what the caller does with its own arrays."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fastrnn

T, B, I, H = 5, 3, 4, 6


def layers():
    return [fastrnn.RNN(I, H, num_layers=2, nonlinearity="relu", seed=1),
            fastrnn.LSTM(I, H, bidirectional=True, proj_size=2, seed=1, backend="numpy"),
            fastrnn.GRU(I, H, reset_after=False, batch_first=True, seed=1, dtype=np.float64),
            fastrnn.Bidirectional(fastrnn.GRU(I, H, seed=1), merge_mode="sum"),
            fastrnn.LSTMCell(I, H, seed=1), fastrnn.GRUCell(I, H, seed=1)]


@pytest.mark.parametrize("clone", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("index", range(6))
def test_pickle_and_deepcopy(clone, index):
    layer = layers()[index]
    x = np.random.default_rng(0).standard_normal((T, I) if index >= 4 else (T, B, I))
    if index >= 4:
        x = x[0]
    before = layer(x)
    twin = clone(layer)
    after = twin(x)
    for a, b in zip(np.atleast_1d(before[0]), np.atleast_1d(after[0])):
        np.testing.assert_array_equal(a, b)
    assert twin.backend == layer.backend
    # independent parameters
    for p in twin.parameters():
        p += 1
    assert not any(np.shares_memory(p, q) for p in twin.parameters() for q in layer.parameters())


def test_parameter_assignment_reaches_the_kernels():
    layer = fastrnn.GRU(I, H, seed=0)
    x = np.ones((T, B, I))
    layer.weight_ih_l0 = np.zeros((3 * H, I))
    layer.weight_hh_l0 = np.zeros((3 * H, H))
    layer.bias_ih_l0 = np.zeros(3 * H)
    layer.bias_hh_l0 = np.zeros(3 * H)
    out, _ = layer(x)
    # every gate pre-activation is 0: r = z = 1/2, n = 0, h stays 0
    assert np.all(out == 0)
    with pytest.raises(ValueError, match="weight_hh_l0"):
        layer.weight_hh_l0 = np.zeros((3, 3))


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_non_finite_padding_does_not_leak(backend, batch_first):
    layer = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=batch_first,
                         dtype=np.float64, seed=2, backend=backend)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    lengths = np.array([5, 2, 3])
    clean = x.copy()
    for b, n in enumerate(lengths):
        if batch_first:
            x[b, n:] = np.nan
            clean[b, n:] = 0
        else:
            x[n:, b] = np.inf
            clean[n:, b] = 0
    results = []
    for inp in (x, clean):
        layer.zero_grad()
        out, _ = layer(inp, lengths=lengths)
        dx, _ = layer.backward(np.ones_like(out))
        results.append((out, dx, {k: g.copy() for k, g in layer.grads.items()}))
    (out, dx, grads), (out_c, dx_c, grads_c) = results
    np.testing.assert_array_equal(out, out_c)
    np.testing.assert_array_equal(dx, dx_c)
    for k in grads:
        assert np.all(np.isfinite(grads[k])), k
        np.testing.assert_array_equal(grads[k], grads_c[k], err_msg=k)


def test_changing_lengths_after_forward_does_not_change_backward():
    layer = fastrnn.GRU(I, H, dtype=np.float64, seed=4)
    x = np.random.default_rng(5).standard_normal((T, B, I))
    lengths = np.array([5, 2, 3], dtype=np.intc)
    out, _ = layer(x, lengths=lengths)
    want = layer.backward(np.ones_like(out))[0]
    out, _ = layer(x, lengths=lengths)
    lengths[:] = T
    got = layer.backward(np.ones_like(out))[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_nan_propagates(cell, backend, make_layer):
    layer = make_layer(cell, I, H, backend=backend, dtype=np.float32, seed=6)
    x = np.ones((T, B, I), np.float32)
    x[1, 0, 0] = np.nan
    out, _ = layer(x)
    assert np.all(np.isnan(out[1:, 0])), "a NaN input must poison its row from there on"
    assert np.all(np.isfinite(out[:, 1:])) and np.all(np.isfinite(out[0]))


def test_bidirectional_wrapper_forwards_training():
    wrapper = fastrnn.Bidirectional(fastrnn.GRU(I, H, num_layers=1))
    wrapper.training = False
    assert wrapper.layer.training is False
    wrapper(np.ones((T, B, I)))
    with pytest.raises(ValueError, match="backward"):
        wrapper.backward(np.ones((T, B, 2 * H)))
    wrapper.train()
    assert wrapper.layer.training is True


def test_wrapping_does_not_consume_the_layers_generator():
    wrapped = fastrnn.GRU(I, H, seed=7)
    fastrnn.Bidirectional(wrapped)
    fresh = fastrnn.GRU(I, H, seed=7)
    assert fresh._rng.integers(2**31) == wrapped._rng.integers(2**31)
