"""fastrnn.training: layer <-> cells, Stepper, sample, generate, truncated_bptt.

1. A layer's weights move to its cells and back in one call; the cells
   stepped one at a time compute what the layer computes.
2. A Stepper gives, step by step, the model's whole-sequence outputs;
   generate feeds back sampled ids or values; sampling is greedy, tempered,
   top-k and reproducible.
3. truncated_bptt's gradients are those of BPTT over the last k2 steps,
   built independently from the layer's tapes; it trains a character model.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

rng = np.random.default_rng(0)


def assert_same_weights(a, b):
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name], err_msg=name)


# ============================================================ layer <-> cells

@pytest.mark.parametrize("make", [
    lambda: fastrnn.LSTM(3, 5, num_layers=3, dtype=np.float64, seed=0),
    lambda: fastrnn.GRU(3, 5, num_layers=2, reset_after=False, dtype=np.float64, seed=0),
    lambda: fastrnn.RNN(3, 5, num_layers=2, nonlinearity="relu", bias=False,
                        dtype=np.float64, seed=0)], ids=["lstm", "gru", "rnn"])
def test_layer_to_cells_and_back(make):
    layer = make()
    cells = fastrnn.to_cells(layer)
    assert len(cells) == layer.num_layers and cells[1].input_size == 5
    x = rng.standard_normal((7, 2, 3))
    expected, _ = layer(x, training=False)
    states = [None] * len(cells)
    for t in range(7):
        h = x[t]
        for k, cell in enumerate(cells):
            states[k] = cell(h, states[k], training=False)
            h = states[k][0] if isinstance(states[k], tuple) else states[k]
        np.testing.assert_allclose(h, expected[t], rtol=1e-12, atol=1e-13)
    for cell in cells:
        for p in cell.parameters():
            p += 1
    other = make()
    assert fastrnn.from_cells(cells, other) is other
    expected = {name: value + 1 for name, value in layer.state_dict().items()}
    assert_same_weights(expected, other.state_dict())


def test_layers_without_a_step_form_and_mismatched_cells():
    for layer, why in [(fastrnn.GRU(3, 4, bidirectional=True), "direction='bidirectional'"),
                       (fastrnn.GRU(3, 4, direction="reverse"), "direction='reverse'"),
                       (fastrnn.LSTM(3, 4, proj_size=2), "proj_size=2"),
                       (fastrnn.LSTM(3, 4, peepholes=True), "ONNX's activations")]:
        with pytest.raises(ValueError, match=f"layer: the cells step forward.*{why}"):
            fastrnn.to_cells(layer)
    with pytest.raises(TypeError, match="unwrap it"):
        fastrnn.to_cells(fastrnn.Bidirectional(fastrnn.GRU(3, 4)))
    lstm = fastrnn.LSTM(3, 4, num_layers=2, seed=0)
    before = lstm.state_dict()
    cells = fastrnn.to_cells(lstm)
    with pytest.raises(ValueError, match=r"cells: expected 2 \(the layer's num_layers\), got 1"):
        fastrnn.from_cells(cells[:1], lstm)
    with pytest.raises(TypeError, match=r"cells\[1\]: expected a LSTMCell, got GRUCell"):
        fastrnn.from_cells([cells[0], fastrnn.GRUCell(4, 4)], lstm)
    with pytest.raises(ValueError, match="reset_after=False, the layer has reset_after=True"):
        fastrnn.from_cells([fastrnn.GRUCell(3, 4, reset_after=False)], fastrnn.GRU(3, 4))
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l1'\]: expected shape"):
        fastrnn.from_cells([cells[0], fastrnn.LSTMCell(3, 4)], lstm)
    assert_same_weights(before, lstm.state_dict())


# ============================================================== generation

def char_model(V=6, stateful=False):
    return fastrnn.Sequential(fastrnn.Embedding(V, 4, seed=0),
                              fastrnn.LSTM(4, 8, num_layers=2, seed=1, stateful=stateful),
                              fastrnn.Dropout(0.3, seed=2),
                              fastrnn.Linear(8, V, seed=3))


def test_stepper_gives_the_whole_sequence_outputs():
    model = char_model()
    ids = rng.integers(0, 6, size=(9, 3))
    expected = model(ids, training=False)
    step = fastrnn.Stepper(model)
    got = np.stack([step(ids[t]) for t in range(9)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    step.reset_state()
    np.testing.assert_allclose(step(ids[0, 0]), expected[0, 0], rtol=1e-5, atol=1e-6)

    values = fastrnn.Sequential(fastrnn.Linear(2, 3, seed=0), fastrnn.GRU(3, 4, seed=0),
                                fastrnn.Linear(4, 2, seed=0))
    x = rng.standard_normal((5, 2)).astype(np.float32)          # unbatched (T, I)
    step = fastrnn.Stepper(values)
    np.testing.assert_allclose(np.stack([step(x_t) for x_t in x]), values(x, training=False),
                               rtol=1e-5, atol=1e-6)


def test_stepper_errors():
    with pytest.raises(ValueError, match=r"model: part 1 \(LSTM\) takes 5 features, the part "
                                         r"before gives 4"):
        fastrnn.Stepper(fastrnn.Sequential(fastrnn.Embedding(3, 4), fastrnn.LSTM(5, 2)))
    with pytest.raises(TypeError, match="part 0 is a Tagger"):
        class Tagger(fastrnn.Module):
            pass
        fastrnn.Stepper(Tagger())
    step = fastrnn.Stepper(char_model())
    with pytest.raises(ValueError, match=r"x: expected indices in \[0, 6\), got 9"):
        step(np.array([9]))
    with pytest.raises(ValueError, match="x: input has inconsistent input_size"):
        fastrnn.Stepper(fastrnn.GRU(3, 4))(np.ones((2, 5)))


def test_sample_greedy_top_k_temperature():
    logits = np.log(np.array([[0.1, 0.5, 0.15, 0.25], [0.4, 0.1, 0.3, 0.2]]))
    np.testing.assert_array_equal(fastrnn.sample(logits, greedy=True), [1, 0])
    np.testing.assert_array_equal(fastrnn.sample(logits, top_k=1, rng=5), [1, 0])
    draws = np.stack([fastrnn.sample(logits, top_k=2, rng=g) for g in range(400)])
    assert set(draws[:, 0]) == {1, 3} and set(draws[:, 1]) == {0, 2}
    many = fastrnn.sample(np.broadcast_to(logits[0], (20000, 4)), rng=0)
    np.testing.assert_allclose(np.bincount(many, minlength=4) / 20000, [0.1, 0.5, 0.15, 0.25],
                               atol=0.015)
    cold = fastrnn.sample(np.broadcast_to(logits[0], (2000, 4)), temperature=0.05, rng=0)
    assert (cold == 1).mean() > 0.99
    np.testing.assert_array_equal(fastrnn.sample(logits, rng=3), fastrnn.sample(logits, rng=3))
    with pytest.raises(ValueError, match="temperature: expected a positive number"):
        fastrnn.sample(logits, temperature=0)
    with pytest.raises(ValueError, match="top_k: expected a positive integer"):
        fastrnn.sample(logits, top_k=0)
    with pytest.raises(ValueError, match="logits: expected numbers, got NaN"):
        fastrnn.sample([np.nan, 1.0])


def test_generate_feeds_back_ids_and_values():
    model = char_model(stateful=True).eval()
    prompt = np.array([[1, 2], [3, 0]])                          # (P, B)
    ids = fastrnn.generate(model, prompt, steps=8, greedy=True)
    # the same greedy choices made through the (stateful) layer path, a step per call
    model.reset_state()
    logits = model(prompt)[-1]
    for t in range(8):
        nxt = logits.argmax(-1)
        np.testing.assert_array_equal(ids[t], nxt, err_msg=f"step {t}")
        logits = model(nxt[None])[0]
    a = fastrnn.generate(model, prompt[:, 0], steps=12, temperature=0.7, top_k=3, seed=1)
    b = fastrnn.generate(fastrnn.Stepper(model), prompt[:, 0], steps=12, temperature=0.7,
                         top_k=3, seed=1)
    assert a.shape == (12,) and a.dtype.kind == "i"
    np.testing.assert_array_equal(a, b)

    wave = fastrnn.Sequential(fastrnn.GRU(1, 8, seed=0, stateful=True),
                              fastrnn.Linear(8, 1, seed=0))
    start = np.array([[0.5]], np.float32)                        # one step, unbatched (1, I)
    values = fastrnn.generate(wave, start, steps=5)
    wave.reset_state()
    y = wave(start, training=False)
    for t in range(5):                                           # one-to-many, by hand
        np.testing.assert_allclose(values[t], y[0], rtol=1e-5, atol=1e-6)
        y = wave(y, training=False)
    with pytest.raises(ValueError, match="cannot be fed back"):
        fastrnn.generate(fastrnn.GRU(2, 3), np.ones((1, 2)), steps=2)
    with pytest.raises(ValueError, match="temperature, top_k, greedy"):
        fastrnn.generate(wave, start, steps=2, top_k=2)
    with pytest.raises(ValueError, match=r"prompt: expected ids \(P,\) or \(P, B\)"):
        fastrnn.generate(model, np.zeros((0,), int), steps=2)


# ============================================================ truncated BPTT

class Recorder:
    """An optimizer that keeps a copy of each step's gradients and updates nothing."""

    def __init__(self):
        self.steps = []

    def step(self, grads):
        self.steps.append({k: g.copy() for k, g in grads.items()})


def tape_oracle(layer, x, y, k1, k2):
    """The gradient of each chunk's MSE backpropagated through its last k2 steps
    (k2 a multiple of k1), from the layer's tapes: backward through the chunk,
    then through the chunks before with the state's gradient alone."""
    layer.reset_state()
    tapes, outs, expected = [], [], []
    for s in range(0, len(x), k1):
        out, _ = layer(x[s:s + k1])
        tapes.append(layer.tape)
        outs.append(out)
    for c, out in enumerate(outs):
        layer.zero_grad()
        _, d_out = fastrnn.mse_loss(out, y[c * k1:(c + 1) * k1])
        _, d_state = layer.backward(d_out, tape=tapes[c], retain_graph=True)
        for before in range(c - 1, max(c - k2 // k1, -1), -1):
            _, d_state = layer.backward(None, d_state, tape=tapes[before], retain_graph=True)
        expected.append({k: g.copy() for k, g in layer.grads.items()})
    return expected


@pytest.mark.parametrize("k1, k2", [(4, 4), (4, 8), (3, 9)])
def test_truncated_bptt_gradients_are_bptt_over_k2_steps(k1, k2):
    layer = fastrnn.LSTM(2, 3, num_layers=2, dtype=np.float64, stateful=True, seed=0)
    x = rng.standard_normal((k1 * 5, 2, 2))
    y = rng.standard_normal((k1 * 5, 2, 3))
    expected = tape_oracle(layer, x, y, k1, k2)
    recorder = Recorder()
    losses = fastrnn.truncated_bptt(layer, fastrnn.MSELoss(), recorder, x, y, k1=k1, k2=k2)
    assert len(losses) == len(recorder.steps) == 5
    for c, (got, want) in enumerate(zip(recorder.steps, expected)):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12,
                                       err_msg=f"chunk {c} {name}")


def test_truncated_bptt_batch_first_and_a_short_last_chunk():
    x = rng.standard_normal((2, 11, 2))                          # (B, T, I)
    y = rng.standard_normal((2, 11, 3))
    results = []
    for batch_first in (False, True):
        layer = fastrnn.GRU(2, 3, batch_first=batch_first, dtype=np.float64, stateful=True,
                            seed=0)
        recorder = Recorder()
        xs, ys = (x, y) if batch_first else (x.transpose(1, 0, 2), y.transpose(1, 0, 2))
        losses = fastrnn.truncated_bptt(layer, fastrnn.MSELoss(), recorder, xs, ys, k1=4, k2=6,
                                        batch_first=batch_first)
        results.append((losses, recorder.steps))
    assert len(results[0][0]) == 3                                # 4 + 4 + 3 steps
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-12)


def test_truncated_bptt_trains_a_character_model():
    text = np.tile(np.array([0, 1, 2, 3, 2, 1]), 60)               # a periodic "text"
    ids = np.stack([np.roll(text, 2 * b) for b in range(4)], axis=1)   # (T, B)
    model = fastrnn.Sequential(fastrnn.Embedding(4, 8, seed=0),
                               fastrnn.GRU(8, 16, stateful=True, seed=0),
                               fastrnn.Linear(16, 4, seed=0))
    opt = fastrnn.Adam(model.named_parameters(), lr=0.05)
    losses = []
    for epoch in range(3):
        losses += fastrnn.truncated_bptt(model, fastrnn.CrossEntropyLoss(), opt, ids[:-1],
                                         ids[1:], k1=20, k2=40, max_norm=1.0)
    assert losses[-1] < 0.2 < np.log(4) - 0.3 < losses[0]
    # the carried state is the end of the sequence: generation continues the pattern
    after = fastrnn.generate(model, text[:12], steps=6, greedy=True)
    np.testing.assert_array_equal(after, text[12:18])


def test_truncated_bptt_errors():
    x, y = np.ones((8, 2, 2)), np.ones((8, 2, 3))
    with pytest.raises(ValueError, match="model: no stateful layer"):
        fastrnn.truncated_bptt(fastrnn.GRU(2, 3), fastrnn.MSELoss(), Recorder(), x, y, k1=4)
    layer = fastrnn.GRU(2, 3, stateful=True)
    with pytest.raises(ValueError, match="k2: expected at least k1 = 4"):
        fastrnn.truncated_bptt(layer, fastrnn.MSELoss(), Recorder(), x, y, k1=4, k2=2)
    with pytest.raises(ValueError, match="targets: expected as many steps as inputs"):
        fastrnn.truncated_bptt(layer, fastrnn.MSELoss(), Recorder(), x, y[:5], k1=4)
