"""Weight conversion with PyTorch, Keras and ONNX (fastrnn.convert).

- PyTorch: from_torch(module) gives a layer of the same configuration whose
  state_dict equals the module's bit for bit and whose outputs equal the
  module's, for every class and option.
- Keras: Keras arrays -> from_keras -> to_keras returns the same arrays (exactly);
  when Keras 3 imports (torch backend), real SimpleRNN/LSTM/GRU/Bidirectional
  layers holding to_keras' arrays give fastrnn's outputs, and from_keras of
  their get_weights() gives the same layer back.
- ONNX: to_onnx -> from_onnx and load_onnx(export_onnx(layer)) round trips are
  exact; ONNX Runtime runs export_onnx's models to fastrnn's numbers (and to
  torch's, for from_torch layers), with sequence_lens (including 0), reverse and
  bidirectional directions, batch-first, linear_before_reset 0 and 1, initial
  states; torch's own ONNX exporter's models load to from_torch's weights.
- Unsupported options raise ValueError naming the option.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn.convert import (export_onnx, from_keras, from_onnx, from_torch, load_onnx,
                             to_keras, to_onnx)

# float32 results of two implementations of the same arithmetic (different
# BLAS, summation order, exp/tanh) differ by a few ulps per step
TOL = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
       np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}
KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before")
T, B, I, H = 5, 4, 3, 4


def assert_close(name, got, expected, dtype=np.float32):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    err = np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0)
    assert np.allclose(got, expected, **TOL[np.dtype(dtype)]), f"{name}: max abs error {err:.3e}"


def assert_same_weights(got, expected):
    """Two state_dicts (or lists of arrays) equal bit for bit, name by name."""
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), f"names {sorted(got)} vs {sorted(expected)}"
        pairs = [(k, got[k], expected[k]) for k in expected]
    else:
        assert len(got) == len(expected), f"{len(got)} arrays, expected {len(expected)}"
        pairs = [(str(i), g, e) for i, (g, e) in enumerate(zip(got, expected))]
    for name, g, e in pairs:
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape, f"{name}: shape {g.shape}, expected {e.shape}"
        assert np.array_equal(g, e), f"{name}: differs (max {np.max(np.abs(g - e)):.3e})"


def make(kind, input_size=I, hidden_size=H, **kwargs):
    if kind.startswith("rnn"):
        return fastrnn.RNN(input_size, hidden_size, nonlinearity=kind[4:], **kwargs)
    if kind == "lstm":
        return fastrnn.LSTM(input_size, hidden_size, **kwargs)
    return fastrnn.GRU(input_size, hidden_size, reset_after=kind == "gru", **kwargs)


def inner(layer):
    return layer.layer if isinstance(layer, fastrnn.Bidirectional) else layer


def is_lstm(layer):
    return isinstance(inner(layer), fastrnn.LSTM)


def data(layer, seed=0, batch=B, steps=T):
    """x, h0, c0 (c0 None unless LSTM) in the layer's layout and dtype."""
    L = inner(layer)
    rng = np.random.default_rng(seed)
    lead = (batch, steps) if L.batch_first else (steps, batch)
    st = (L.num_directions * L.num_layers, batch, L.hidden_size)
    x = rng.standard_normal(lead + (L.input_size,)).astype(L.dtype)
    h0 = (0.5 * rng.standard_normal(st)).astype(L.dtype)
    c0 = (0.5 * rng.standard_normal(st)).astype(L.dtype) if is_lstm(layer) else None
    return x, h0, c0


def run(layer, x, h0=None, c0=None, lengths=None):
    """[output, h_n(, c_n)] of a fastrnn layer in inference mode."""
    if is_lstm(layer):
        y, (h, c) = layer(x, (h0, c0) if h0 is not None else None, lengths=lengths,
                          training=False)
        return [y, h, c]
    y, h = layer(x, h0, lengths=lengths, training=False)
    return [y, h]


def test_no_framework_imported():
    """Importing fastrnn and its conversion and saving modules imports no framework."""
    code = ("import sys, fastrnn, fastrnn.convert, fastrnn.serialize; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'keras', 'tensorflow') "
            "if m in sys.modules))")
    # the fastrnn this test imported (installed, or built in place), whatever the cwd
    where = os.path.dirname(os.path.dirname(fastrnn.__file__))
    env = dict(os.environ, PYTHONPATH=where)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=where, env=env)
    assert out.stdout.strip() == "[]", out.stdout


# ================================================================== PyTorch

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


TORCH_LAYERS = [
    ("RNN", {}),
    ("RNN", dict(nonlinearity="relu", num_layers=2, bidirectional=True)),
    ("RNN", dict(bias=False, batch_first=True, dropout=0.25, num_layers=2)),
    ("LSTM", {}),
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True, dropout=0.5)),
    ("LSTM", dict(proj_size=2, num_layers=2, bidirectional=True)),
    ("LSTM", dict(proj_size=3, bias=False, batch_first=True)),
    ("GRU", {}),
    ("GRU", dict(num_layers=3, bidirectional=True, bias=False)),
    ("GRU", dict(batch_first=True, num_layers=2, dropout=0.1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,options", TORCH_LAYERS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for n, o in TORCH_LAYERS])
def test_from_torch_layer(torch, name, options, dtype):
    torch.manual_seed(0)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    module = getattr(torch.nn, name)(I, H, **options).to(tdtype).eval()
    layer = from_torch(module)

    assert type(layer) is getattr(fastrnn, name)
    assert layer.dtype == dtype and layer.training is False
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                 "dropout", "bidirectional", "proj_size", "nonlinearity"):
        if hasattr(module, attr):
            assert getattr(layer, attr) == getattr(module, attr), attr
    assert_same_weights(layer.state_dict(),
                        {k: v.detach().numpy() for k, v in module.state_dict().items()})

    x, h0, c0 = data(layer, seed=1)
    if name == "LSTM":
        c0 = c0[..., :H]
        h0 = h0[..., :module.proj_size or H]
        y, (h, c) = module(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        expected = [y, h, c]
    else:
        y, h = module(torch.from_numpy(x), torch.from_numpy(h0))
        expected = [y, h]
    got = run(layer, x, h0, c0)
    for n, g, e in zip(["output", "h_n", "c_n"], got, expected):
        assert_close(n, g, e.detach().numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,options", [("RNNCell", {}), ("RNNCell", dict(nonlinearity="relu")),
                                          ("RNNCell", dict(bias=False)), ("LSTMCell", {}),
                                          ("LSTMCell", dict(bias=False)), ("GRUCell", {})])
def test_from_torch_cell(torch, name, options, dtype):
    torch.manual_seed(0)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    module = getattr(torch.nn, name)(I, H, **options).to(tdtype)
    cell = from_torch(module)
    assert type(cell) is getattr(fastrnn, name) and cell.dtype == dtype
    assert_same_weights(cell.state_dict(),
                        {k: v.detach().numpy() for k, v in module.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    c = rng.standard_normal((B, H)).astype(dtype)
    tx, th, tc = (torch.from_numpy(a) for a in (x, h, c))
    if name == "LSTMCell":
        got, expected = cell(x, (h, c)), module(tx, (th, tc))
    else:
        got, expected = [cell(x, h)], [module(tx, th)]
    for g, e in zip(got, expected):
        assert_close(name, g, e.detach().numpy(), dtype)


def test_from_torch_dtype_and_mode(torch):
    module = torch.nn.GRU(I, H, num_layers=2, dropout=0.3).double()
    assert from_torch(module).dtype == np.float64
    layer = from_torch(module, dtype=np.float32, backend="numpy")
    assert layer.dtype == np.float32 and layer.backend == "numpy" and layer.training
    # half precision upcasts exactly
    half = torch.nn.LSTM(I, H).half()
    layer = from_torch(half)
    assert layer.dtype == np.float32
    assert_same_weights(layer.state_dict(),
                        {k: v.float().numpy() for k, v in half.state_dict().items()})
    with pytest.raises(TypeError, match="module"):
        from_torch(torch.nn.Linear(3, 4))


# ==================================================================== Keras

KERAS_CASES = [  # kind, reset_after, bias, bidirectional
    ("SimpleRNN", True, True, False), ("SimpleRNN", True, False, True),
    ("LSTM", True, True, False), ("LSTM", True, True, True), ("LSTM", True, False, False),
    ("GRU", True, True, False), ("GRU", False, True, False), ("GRU", True, True, True),
    ("GRU", False, False, True),
]


def keras_arrays(kind, reset_after, bias, bidirectional, dtype=np.float32, seed=0):
    """Random arrays with the shapes of a Keras layer's get_weights()."""
    G = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    rng = np.random.default_rng(seed)
    arrays = []
    for _ in range(2 if bidirectional else 1):
        shapes = [(I, G * H), (H, G * H)]
        if bias:
            shapes.append((2, G * H) if kind == "GRU" and reset_after else (G * H,))
        arrays += [rng.standard_normal(s).astype(dtype) for s in shapes]
    return arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind,reset_after,bias,bidirectional", KERAS_CASES)
def test_keras_arrays_round_trip(kind, reset_after, bias, bidirectional, dtype):
    arrays = keras_arrays(kind, reset_after, bias, bidirectional, dtype)
    layer = from_keras(kind, arrays, reset_after=reset_after, bidirectional=bidirectional,
                       dtype=dtype)
    assert layer.bias == bias and layer.bidirectional == bidirectional and layer.batch_first
    back = to_keras(layer)
    assert all(a.dtype == dtype for a in back)
    assert_same_weights(back, arrays)


def test_keras_go_backwards_and_merge_mode():
    arrays = keras_arrays("GRU", True, True, False)
    layer = from_keras("gru", arrays, go_backwards=True)
    assert layer.direction == "reverse"
    assert_same_weights(to_keras(layer), arrays)
    arrays = keras_arrays("LSTM", True, True, True)
    bi = from_keras("LSTM", arrays, bidirectional=True, merge_mode="ave")
    assert isinstance(bi, fastrnn.Bidirectional) and bi.merge_mode == "ave"
    assert_same_weights(to_keras(bi), arrays)


@pytest.mark.parametrize("kind", KINDS)
def test_fastrnn_to_keras_to_fastrnn(kind):
    """fastrnn -> Keras -> fastrnn: the same function (two biases merge into one,
    except GRU reset_after=True, which is exact)."""
    layer = make(kind, bidirectional=True, batch_first=True, seed=3)
    back = from_keras({"r": "SimpleRNN", "l": "LSTM", "g": "GRU"}[kind[0]], to_keras(layer),
                      reset_after=getattr(layer, "reset_after", True),
                      activation=getattr(layer, "nonlinearity", "tanh"), bidirectional=True)
    if kind == "gru":
        assert_same_weights(back.state_dict(), layer.state_dict())
    x, h0, c0 = data(layer)
    for n, g, e in zip(["output", "h_n", "c_n"], run(back, x, h0, c0), run(layer, x, h0, c0)):
        assert_close(n, g, e)


def test_keras_cells():
    cell = fastrnn.GRUCell(I, H, reset_after=False, seed=1)
    arrays = to_keras(cell)
    assert [a.shape for a in arrays] == [(I, 3 * H), (H, 3 * H), (3 * H,)]


# -- real Keras 3 layers

@pytest.fixture(scope="module")
def keras():
    """Keras 3 on its torch backend (pip install ".[torch]")."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch", reason="Keras runs on its torch backend here, and torch is "
                                        "not installed (pip install \".[torch]\")")
    return pytest.importorskip("keras", reason="keras is not installed "
                                               "(pip install \".[torch]\")")


def keras_run(keras, klayer, x, states):
    out = klayer(x, initial_state=states) if states else klayer(x)
    return [keras.ops.convert_to_numpy(o) for o in out]


@pytest.mark.parametrize("kind,options", [
    ("rnn_tanh", {}), ("rnn_relu", {}), ("lstm", {}), ("gru", {}), ("gru_reset_before", {}),
    ("lstm", dict(bias=False)), ("gru", dict(direction="reverse")),
    ("lstm", dict(direction="bidirectional")), ("gru_reset_before", dict(bidirectional=True)),
])
def test_keras_layers_match(keras, kind, options):
    layer = make(kind, batch_first=True, seed=4, **options)
    L = keras.layers
    kw = dict(return_sequences=True, return_state=True, use_bias=layer.bias,
              go_backwards=layer.direction == "reverse")
    if kind.startswith("rnn"):
        klayer = L.SimpleRNN(H, activation=layer.nonlinearity, **kw)
    elif kind == "lstm":
        klayer = L.LSTM(H, **kw)
    else:
        klayer = L.GRU(H, reset_after=layer.reset_after, **kw)
    if layer.bidirectional:
        klayer = L.Bidirectional(klayer, merge_mode="concat")
    x, h0, c0 = data(layer, seed=5)
    klayer.build(x.shape)
    klayer.set_weights(to_keras(layer))
    D = layer.num_directions
    # Keras' initial_state: [h, (c,)] per direction, forward first
    states = [s[d] for d in range(D) for s in ((h0, c0) if c0 is not None else (h0,))]
    got = keras_run(keras, klayer, x, states)
    expected = run(layer, x, h0, c0)
    if layer.direction == "reverse":
        # go_backwards returns its outputs in processing order: reversed in time
        got[0] = got[0][:, ::-1]
    assert_close("output", got[0], expected[0])
    per_direction = len(got[1:]) // D
    for i, state in enumerate(got[1:]):
        d, which = divmod(i, per_direction)
        assert_close(f"state {which} direction {d}", state, expected[1 + which][d])
    # and back: Keras' get_weights() -> the same function
    back = from_keras(type(klayer.forward_layer if D == 2 else klayer).__name__,
                      klayer.get_weights(), reset_after=getattr(layer, "reset_after", True),
                      activation=getattr(layer, "nonlinearity", "tanh"),
                      go_backwards=layer.direction == "reverse", bidirectional=D == 2)
    assert_close("output (from_keras)", run(back, x, h0, c0)[0], expected[0])


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave"])
def test_keras_bidirectional_merge(keras, merge_mode):
    bi = fastrnn.Bidirectional(fastrnn.GRU(I, H, batch_first=True, seed=6), merge_mode)
    klayer = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True),
                                        merge_mode=merge_mode)
    x, _, _ = data(bi, seed=7)
    klayer.build(x.shape)
    klayer.set_weights(to_keras(bi))
    got = keras.ops.convert_to_numpy(klayer(x))
    assert_close("output", got, bi(x, training=False)[0])


# ===================================================================== ONNX

@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def ort_run(ort, model, layer, x, h0=None, c0=None, lengths=None):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {"X": x, "sequence_lens": None if lengths is None else np.asarray(lengths, np.int32),
             "initial_h": h0, "initial_c": c0}
    return session.run(None, {n: feeds[n] for n in names})


ONNX_CASES = [  # kind, options
    ("rnn_tanh", {}), ("rnn_relu", dict(direction="reverse")),
    ("rnn_tanh", dict(bidirectional=True, num_layers=2, batch_first=True)),
    ("lstm", {}), ("lstm", dict(direction="reverse", batch_first=True)),
    ("lstm", dict(bidirectional=True, num_layers=2)), ("lstm", dict(bias=False, num_layers=2)),
    ("gru", {}), ("gru", dict(bidirectional=True, batch_first=True)),
    ("gru", dict(direction="reverse", num_layers=3)),
    ("gru_reset_before", {}), ("gru_reset_before", dict(bidirectional=True, num_layers=2)),
    ("gru_reset_before", dict(direction="reverse", batch_first=True, bias=False)),
]


@pytest.mark.parametrize("kind,options", ONNX_CASES,
                         ids=[f"{k}-{'-'.join(f'{a}={v}' for a, v in o.items())}"
                              for k, o in ONNX_CASES])
def test_export_onnx_runs_in_onnxruntime(ort, kind, options):
    layer = make(kind, seed=8, **options)
    x, h0, c0 = data(layer, seed=9)
    model = export_onnx(layer)
    # full lengths, ragged lengths (with 0 and T), and no optional inputs at all
    for lengths in (None, [T, 2, 0, 1]):
        feed_lengths = [T] * B if lengths is None else lengths
        got = ort_run(ort, model, layer, x, h0, c0, feed_lengths)
        expected = run(layer, x, h0, c0, lengths)
        for n, g, e in zip(["Y", "Y_h", "Y_c"], got, expected):
            assert_close(f"{n} lengths={lengths}", g, e)
    bare = export_onnx(layer, sequence_lens=False, initial_state=False)
    assert [i.name for i in bare.graph.input] == ["X"]
    for n, g, e in zip(["Y", "Y_h", "Y_c"], ort_run(ort, bare, layer, x), run(layer, x)):
        assert_close(f"{n} (bare)", g, e)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_export_onnx_bidirectional_wrapper(ort, merge_mode, batch_first):
    bi = fastrnn.Bidirectional(fastrnn.LSTM(I, H, batch_first=batch_first, seed=10), merge_mode)
    x, h0, c0 = data(bi, seed=11)
    lengths = [3, T, 1, 0]
    got = ort_run(ort, export_onnx(bi), bi, x, h0, c0, lengths)
    for n, g, e in zip(["Y", "Y_h", "Y_c"], got, run(bi, x, h0, c0, lengths)):
        assert_close(n, g, e)


TORCH_TO_ONNX = [
    ("RNN", dict(nonlinearity="relu", bidirectional=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(batch_first=True)),
    ("GRU", dict(num_layers=2, batch_first=True, bidirectional=True)),
    ("GRU", dict(bias=False)),
]


@pytest.mark.parametrize("name,options", TORCH_TO_ONNX)
def test_torch_to_fastrnn_to_onnxruntime(torch, ort, name, options):
    """PyTorch -> from_torch -> export_onnx -> ONNX Runtime equals the torch module,
    with packed (variable-length) sequences and non-zero initial states."""
    torch.manual_seed(12)
    module = getattr(torch.nn, name)(I, H, **options).eval()
    layer = from_torch(module)
    x, h0, c0 = data(layer, seed=13)
    lengths = [T, 2, 1, 4]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.tensor(lengths), batch_first=layer.batch_first,
        enforce_sorted=False)
    state = torch.from_numpy(h0) if c0 is None else (torch.from_numpy(h0), torch.from_numpy(c0))
    with torch.no_grad():
        y, state = module(packed, state)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=layer.batch_first,
                                                  total_length=T)
    expected = [y] + (list(state) if c0 is not None else [state])
    got = ort_run(ort, export_onnx(layer), layer, x, h0, c0, lengths)
    for n, g, e in zip(["Y", "Y_h", "Y_c"], got, expected):
        assert_close(n, g, e.numpy())


def test_torch_onnx_exporter_models_load(torch, ort):
    """A model from torch's own ONNX exporter loads to from_torch's weights: the
    gate orders agree with an independent implementation."""
    import onnx
    for module in (torch.nn.LSTM(I, H, bidirectional=True), torch.nn.GRU(I, H),
                   torch.nn.RNN(I, H, nonlinearity="relu", batch_first=True)):
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (torch.randn(1, T, I),), buffer, dynamo=False,
                                  opset_version=17)
        except Exception as e:   # the legacy exporter may be gone or need extras
            pytest.skip(f"torch.onnx.export unavailable: {e}")
        loaded = load_onnx(onnx.load_from_string(buffer.getvalue()))
        assert repr(loaded) == repr(from_torch(module).eval())
        assert_same_weights(loaded.state_dict(), from_torch(module).state_dict())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_to_onnx_from_onnx_round_trip(kind, direction):
    layer = make(kind, direction=direction, batch_first=direction == "reverse", seed=14,
                 dtype=np.float64)
    op, inputs, attrs = to_onnx(layer)
    D, G = layer.num_directions, {"r": 1, "l": 4, "g": 3}[kind[0]]
    assert op == {"r": "RNN", "l": "LSTM", "g": "GRU"}[kind[0]]
    assert inputs["W"].shape == (D, G * H, I) and inputs["R"].shape == (D, G * H, H)
    assert inputs["B"].shape == (D, 2 * G * H)
    assert attrs["direction"] == direction and attrs["hidden_size"] == H
    assert attrs["layout"] == int(layer.batch_first)
    assert attrs["activations"] == {"rnn_tanh": ["Tanh"], "rnn_relu": ["Relu"],
                                    "lstm": ["Sigmoid", "Tanh", "Tanh"]}.get(
        kind, ["Sigmoid", "Tanh"]) * D
    if op == "GRU":
        assert attrs["linear_before_reset"] == int(layer.reset_after)
    back = from_onnx(op, inputs["W"], inputs["R"], inputs["B"], dtype=np.float64, **attrs)
    assert repr(back) == repr(layer)
    assert_same_weights(back.state_dict(), layer.state_dict())


def test_onnx_gate_order():
    """ONNX's LSTM is i,o,f,c and GRU z,r,h: spelled out on one layer each."""
    lstm = fastrnn.LSTM(1, 1, bias=False)
    lstm.weight_ih_l0 = np.array([[1], [2], [3], [4]])    # i, f, g, o
    assert to_onnx(lstm)[1]["W"].ravel().tolist() == [1, 4, 2, 3]
    gru = fastrnn.GRU(1, 1, bias=False)
    gru.weight_hh_l0 = np.array([[1], [2], [3]])           # r, z, n
    assert to_onnx(gru)[1]["R"].ravel().tolist() == [2, 1, 3]
    assert to_keras(gru)[1].ravel().tolist() == [2, 1, 3]


@pytest.mark.parametrize("kind,options", [("lstm", {}), ("gru", dict(bidirectional=True)),
                                          ("rnn_relu", dict(bias=False, batch_first=True))])
def test_load_onnx_round_trip(ort, tmp_path, kind, options):
    layer = make(kind, seed=15, **options)
    path = tmp_path / "layer.onnx"
    model = export_onnx(layer, path)
    for source in (model, path, str(path), model.SerializeToString()):
        back = load_onnx(source)
        assert repr(back) == repr(layer)
        assert_same_weights(back.state_dict(), layer.state_dict())


def test_load_onnx_stack_by_node(ort):
    layer = fastrnn.GRU(I, H, num_layers=3, bidirectional=True, seed=16)
    model = export_onnx(layer)
    for k in range(3):
        node = load_onnx(model, node=k)
        assert node.input_size == (I if k == 0 else 2 * H)
        assert_same_weights(node.state_dict(), {n.replace(f"_l{k}", "_l0"): v
                                                for n, v in layer.state_dict().items()
                                                if f"_l{k}" in n})
    assert_same_weights(load_onnx(model, node="gru_l1").state_dict(),
                        load_onnx(model, node=1).state_dict())
    with pytest.raises(ValueError, match="node"):
        load_onnx(model, node="nope")
    with pytest.raises(ValueError, match="node"):
        load_onnx(model, node=3)


def test_onnx_reference_evaluator_layout_and_float64():
    """Models with layout=1 nodes (which ONNX Runtime's CPU kernels reject) and
    float64 models (which they do not run) checked with ONNX's reference
    evaluator, which ignores sequence_lens."""
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator
    for kind in ("rnn_tanh", "lstm", "gru", "gru_reset_before"):
        for dtype in (np.float32, np.float64):
            layer = make(kind, bidirectional=True, num_layers=2, batch_first=True, seed=17,
                         dtype=dtype)
            model = export_onnx(layer, sequence_lens=False, layout_attribute=True)
            assert {a.i for n in model.graph.node if n.op_type in ("RNN", "LSTM", "GRU")
                    for a in n.attribute if a.name == "layout"} == {1}
            x, h0, c0 = data(layer, seed=18)
            feeds = {"X": x, "initial_h": h0}
            if c0 is not None:
                feeds["initial_c"] = c0
            got = ReferenceEvaluator(model).run(None, feeds)
            for n, g, e in zip(["Y", "Y_h", "Y_c"], got, run(layer, x, h0, c0)):
                assert_close(f"{kind} {np.dtype(dtype).name} {n}", g, e, dtype)
            back = load_onnx(model, node=1)
            assert back.batch_first and back.dtype == dtype


def test_onnxruntime_raw_semantics(ort):
    """What ONNX Runtime itself does with sequence_lens (one bare LSTM node, no
    fastrnn graph around it): each sequence runs within its own length, the
    reverse direction starting at its own last valid step; outputs at padded
    steps are zero; Y is (T, D, B, H). All as fastrnn, except a sequence of
    length 0, whose Y_h/Y_c are zeros in ONNX Runtime and the initial state in
    fastrnn (export_onnx adds a Where for it)."""
    from onnx import TensorProto, helper, numpy_helper
    layer = fastrnn.LSTM(I, H, bidirectional=True, seed=19)
    op, arrays, attrs = to_onnx(layer)
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I]),
           helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]),
           helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [2, "B", H]),
           helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [2, "B", H])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")]
    node = helper.make_node(op, ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"],
                            ["Y", "Y_h", "Y_c"], **attrs)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(helper.make_graph([node], "raw", ins, outs, inits),
                              opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    x, h0, c0 = data(layer, seed=20)
    lengths = [T, 3, 0, 1]
    y, yh, yc = ort_run(ort, model, layer, x, h0, c0, lengths)
    ey, eh, ec = run(layer, x, h0, c0, lengths)
    assert y.shape == (T, 2, B, H)
    assert_close("Y", y.transpose(0, 2, 1, 3).reshape(T, B, 2 * H), ey)
    full = [b for b in range(B) if lengths[b] > 0]
    assert_close("Y_h (non-empty rows)", yh[:, full], eh[:, full])
    assert_close("Y_c (non-empty rows)", yc[:, full], ec[:, full])
    empty_h, empty_c = yh[:, 2], yc[:, 2]
    assert (np.all(empty_h == 0) and np.all(empty_c == 0)) or \
        (np.allclose(empty_h, h0[:, 2]) and np.allclose(empty_c, c0[:, 2])), \
        "ONNX Runtime's final state of a length-0 sequence is neither zeros nor h0/c0"


# ==================================================================== errors

def test_single_layer_only_errors():
    with pytest.raises(ValueError, match="num_layers"):
        to_keras(fastrnn.GRU(I, H, num_layers=2))
    with pytest.raises(ValueError, match="proj_size"):
        to_keras(fastrnn.LSTM(I, H, proj_size=2))
    with pytest.raises(ValueError, match="num_layers"):
        to_onnx(fastrnn.LSTM(I, H, num_layers=2))
    with pytest.raises(ValueError, match="proj_size"):
        to_onnx(fastrnn.LSTM(I, H, proj_size=2))
    with pytest.raises(TypeError, match="cells"):
        to_onnx(fastrnn.LSTMCell(I, H))
    with pytest.raises(TypeError, match="layer"):
        to_keras(object())


def test_general_cells_refused_by_keras():
    """Layers with ONNX's general options are not written as Keras' default
    cells: the conversion names the option instead."""
    with pytest.raises(ValueError, match="clip.*not supported yet"):
        to_keras(fastrnn.LSTM(I, H, clip=1.0))
    with pytest.raises(ValueError, match="activations.*not supported yet"):
        to_keras(fastrnn.GRU(I, H, activations=["hard_sigmoid", "tanh"]))


def test_export_onnx_errors():
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="proj_size"):
        export_onnx(fastrnn.LSTM(I, H, proj_size=2))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(fastrnn.GRU(I, H), opset=13)


def test_keras_option_errors():
    arrays = keras_arrays("LSTM", True, True, False)
    with pytest.raises(ValueError, match="activation"):
        from_keras("LSTM", arrays, activation="relu")
    with pytest.raises(ValueError, match="recurrent_activation"):
        from_keras("LSTM", arrays, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="activation"):
        from_keras("SimpleRNN", keras_arrays("SimpleRNN", True, True, False),
                   activation="sigmoid")
    with pytest.raises(ValueError, match="kind"):
        from_keras("ConvLSTM", arrays)
    with pytest.raises(ValueError, match="weights"):
        from_keras("GRU", arrays)                       # LSTM's shapes
    with pytest.raises(ValueError, match="bias"):
        from_keras("GRU", keras_arrays("GRU", True, True, False), reset_after=False)
    with pytest.raises(ValueError, match="weights"):
        from_keras("LSTM", arrays, bidirectional=True)  # one direction's arrays
    with pytest.raises(ValueError, match="go_backwards"):
        from_keras("LSTM", arrays + arrays, bidirectional=True, go_backwards=True)


def test_onnx_options_import():
    """Each ONNX option becomes the layer's; alpha/beta go, in order, to the
    activations that take them."""
    _, inputs, _ = to_onnx(fastrnn.LSTM(I, H))
    W, R, B = inputs["W"], inputs["R"], inputs["B"]
    layer = from_onnx("LSTM", W, R, B, activations=["HardSigmoid", "Tanh", "ScaledTanh"],
                      activation_alpha=[0.3, 1.5], activation_beta=[0.4, 0.7], clip=3.0,
                      input_forget=1, P=np.arange(3 * H, dtype=np.float32)[None])
    assert layer.activations == (("hard_sigmoid", 0.3, 0.4), ("tanh", 0.0, 0.0),
                                 ("scaled_tanh", 1.5, 0.7))
    assert layer.clip == 3.0 and layer.input_forget and layer.peepholes
    p = np.arange(3 * H)                   # ONNX i, o, f -> fastrnn p_i, p_f, p_o
    np.testing.assert_array_equal(layer.weight_peephole_l0,
                                  np.concatenate([p[:H], p[2 * H:], p[H:2 * H]]))
    # missing alpha/beta take ONNX's operator defaults
    layer = from_onnx("LSTM", W, R, B, activations=["LeakyRelu", "Elu", "Tanh"])
    assert layer.activations[:2] == (("leaky_relu", 0.01, 0.0), ("elu", 1.0, 0.0))


@pytest.mark.parametrize("op,kw,match", [
    ("LSTM", dict(activations=["Swish", "Tanh", "Tanh"]), "activations"),
    ("LSTM", dict(activations=["Sigmoid", "Tanh"]), "activations"),
    ("GRU", dict(input_forget=1), "input_forget"),
    ("GRU", dict(P=np.zeros((1, 3 * H))), "P"),
    ("LSTM", dict(P=np.zeros((1, 2 * H))), "P"),
])
def test_onnx_options_fastrnn_cannot_run(op, kw, match):
    layer = fastrnn.LSTM(I, H) if op == "LSTM" else fastrnn.GRU(I, H)
    _, inputs, _ = to_onnx(layer)
    with pytest.raises(ValueError, match=match):
        from_onnx(op, inputs["W"], inputs["R"], inputs["B"], **kw)


def test_onnx_supported_defaults_and_shapes():
    _, inputs, _ = to_onnx(fastrnn.LSTM(I, H))
    # explicit defaults and zero peepholes are fine
    layer = from_onnx("LSTM", inputs["W"], inputs["R"], inputs["B"],
                      activations=["sigmoid", "tanh", "tanh"], P=np.zeros((1, 3 * H)))
    assert isinstance(layer, fastrnn.LSTM)
    _, rnn, _ = to_onnx(fastrnn.RNN(I, H))
    assert from_onnx("RNN", rnn["W"], rnn["R"]).nonlinearity == "tanh"   # ONNX default Tanh
    assert from_onnx("RNN", rnn["W"], rnn["R"], activations=["Relu"]).nonlinearity == "relu"
    sig = from_onnx("RNN", rnn["W"], rnn["R"], activations=["Sigmoid"])
    assert sig.activations == (("sigmoid", 0.0, 0.0),)
    _, gru, _ = to_onnx(fastrnn.GRU(I, H))
    assert from_onnx("GRU", gru["W"], gru["R"], gru["B"]).reset_after is False  # ONNX default 0
    with pytest.raises(ValueError, match="hidden_size"):
        from_onnx("GRU", gru["W"], gru["R"], hidden_size=H + 1)
    with pytest.raises(ValueError, match="R"):
        from_onnx("GRU", gru["W"], gru["R"], direction="bidirectional")
    with pytest.raises(ValueError, match="B"):
        from_onnx("GRU", gru["W"], gru["R"], gru["B"][:, 1:])
    with pytest.raises(ValueError, match="op_type"):
        from_onnx("Scan", gru["W"], gru["R"])
    with pytest.raises(ValueError, match="direction"):
        from_onnx("GRU", gru["W"], gru["R"], direction="backward")


def test_load_onnx_options_and_unknown_attributes(ort):
    """A node's clip loads; an attribute fastrnn does not know is named."""
    from onnx import helper
    model = export_onnx(fastrnn.GRU(I, H))
    gru = next(n for n in model.graph.node if n.op_type == "GRU")
    gru.attribute.append(helper.make_attribute("clip", 2.0))
    assert load_onnx(model).clip == 2.0
    gru.attribute.append(helper.make_attribute("mystery", 1))
    with pytest.raises(ValueError, match="mystery"):
        load_onnx(model)
