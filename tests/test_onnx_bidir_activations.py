"""Bidirectional layers whose two directions run different activations.

ONNX gives each direction of a bidirectional RNN/GRU/LSTM node its own
activations (and alpha/beta), and ONNX Runtime runs such nodes; fastrnn layers
take them as ``activations={"forward": [...], "reverse": [...]}``.

- ONNX Runtime is the oracle: nodes written by hand load with load_onnx to
  its numbers, and export_onnx writes such layers back (both backends, with
  and without sequence_lens).
- The C kernels equal the NumPy reference tensor by tensor; analytic
  gradients equal finite differences (float64); a bidirectional layer equals
  a forward and a reverse layer run apart.
- The form survives save/load, pickling and repr; a file or pickle of the
  form before it still loads; bad per-direction specs name the argument.
"""
from __future__ import annotations

import copy
import io
import json
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn.convert import from_onnx, load_onnx, to_keras, to_onnx

T, B, I, H = 6, 4, 3, 5
LENGTHS = np.array([6, 0, 3, 1], np.int32)    # unsorted, one empty sequence
CLASSES = {"RNN": fastrnn.RNN, "GRU": fastrnn.GRU, "LSTM": fastrnn.LSTM}

# (class, constructor arguments): every activation of a direction may differ,
# with alpha/beta (Affine, LeakyRelu, ScaledTanh, HardSigmoid, Elu)
LAYERS = {
    "rnn": ("RNN", dict(activations={"forward": [("leaky_relu", 0.2)],
                                     "reverse": [("scaled_tanh", 1.3, 0.8)]})),
    "rnn-relu-tanh": ("RNN", dict(activations={"forward": "relu", "reverse": "tanh"})),
    "gru-lbr0": ("GRU", dict(reset_after=False,
                             activations={"forward": [("hard_sigmoid", 0.3, 0.45),
                                                      ("affine", 0.7, 0.2)],
                                          "reverse": ["sigmoid", "tanh"]})),
    "gru-lbr1": ("GRU", dict(activations={"forward": ["sigmoid", "softsign"],
                                          "reverse": [("hard_sigmoid", 0.25, 0.5),
                                                      ("leaky_relu", 0.1)]})),
    "lstm": ("LSTM", dict(activations={"forward": ["sigmoid", "tanh", "tanh"],
                                       "reverse": [("hard_sigmoid", 0.3, 0.45),
                                                   ("affine", 0.7, 0.2),
                                                   ("scaled_tanh", 1.2, 0.9)]})),
    "lstm-peep-clip": ("LSTM", dict(peepholes=True, clip=1.5, input_forget=True,
                                    activations={"forward": ["softsign", ("elu", 0.6), "tanh"],
                                                 "reverse": ["sigmoid", "softplus",
                                                             ("leaky_relu", 0.3)]})),
}


def make(case, **kwargs):
    op, kw = LAYERS[case]
    return CLASSES[op](I, H, bidirectional=True, seed=7, **{**kw, **kwargs})


def run(layer, x, h0, c0=None, lengths=None):
    """[output, h_n(, c_n)] of an inference call."""
    if isinstance(layer, fastrnn.LSTM):
        out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths, training=False)
        return [out, h_n, c_n]
    out, h_n = layer(x, h0, lengths=lengths, training=False)
    return [out, h_n]


def data(layer, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    D = layer.num_directions * layer.num_layers
    lead = (B, T) if layer.batch_first else (T, B)
    return (rng.standard_normal(lead + (I,)).astype(dtype),
            rng.standard_normal((D, B, H)).astype(dtype),
            rng.standard_normal((D, B, H)).astype(dtype))


def assert_ort_close(got, want, what):
    # ONNX Runtime's float32 kernels: test_onnx_options.py's tolerances
    for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=f"{name} ({what})")


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def session(ort, model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ================================================= ONNX nodes written by hand

# (op, linear_before_reset, activations of both directions, activation_alpha,
# activation_beta) as an ONNX node spells them: each activation that takes an
# alpha (beta) takes the next one, across both directions
NODES = [
    ("RNN", 0, ["LeakyRelu", "ScaledTanh"], [0.2, 1.3], [0.8]),
    ("RNN", 0, ["Relu", "Tanh"], None, None),
    ("GRU", 0, ["HardSigmoid", "Affine", "Sigmoid", "Tanh"], [0.3, 0.7], [0.45, 0.2]),
    ("GRU", 1, ["Sigmoid", "Tanh", "HardSigmoid", "LeakyRelu"], [0.25, 0.1], [0.5]),
    ("LSTM", 0, ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Affine", "ScaledTanh"],
     [0.3, 0.7, 1.2], [0.45, 0.2, 0.9]),
    ("LSTM", 0, ["Sigmoid", "Softsign", "Tanh", "Sigmoid", "Tanh", "Elu"], [0.6], None),
]


def onnx_node_model(op, lbr, acts, alpha, beta, with_lengths, seed=0):
    """A model of one bidirectional node with random weights and nonzero initial
    states (all graph inputs but X are initializers) and the node's x."""
    from onnx import TensorProto, helper, numpy_helper
    G = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    rng = np.random.default_rng(seed)
    arrays = {"W": rng.uniform(-0.6, 0.6, (2, G * H, I)), "R": rng.uniform(-0.6, 0.6, (2, G * H, H)),
              "B": rng.uniform(-0.3, 0.3, (2, 2 * G * H)),
              "initial_h": rng.standard_normal((2, B, H)), "initial_c": rng.standard_normal((2, B, H))}
    if with_lengths:
        # no zero length: ONNX Runtime's final state of an empty sequence is
        # zeros, fastrnn's the initial state (export_onnx bridges that)
        arrays["sequence_lens"] = np.array([T, 2, 5, 1], np.int32)
    inits = [numpy_helper.from_array(v if v.dtype == np.int32 else v.astype(np.float32), k)
             for k, v in arrays.items()]
    ins = ["X", "W", "R", "B", "sequence_lens" if with_lengths else "", "initial_h"]
    outs = ["Y", "Y_h"]
    if op == "LSTM":
        ins.append("initial_c")
        outs.append("Y_c")
    attrs = dict(hidden_size=H, direction="bidirectional", activations=acts)
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    node = helper.make_node(op, ins, outs, name="node", **attrs)
    graph = helper.make_graph(
        [node], "bidirectional", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs], inits)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    states = [arrays["initial_h"].astype(np.float32), arrays["initial_c"].astype(np.float32)]
    return model, x, states[:len(outs) - 1], arrays.get("sequence_lens")


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
@pytest.mark.parametrize("op,lbr,acts,alpha,beta", NODES,
                         ids=[f"{n[0]}{n[1]}-{'-'.join(n[2])}" for n in NODES])
def test_load_onnx_node_matches_onnxruntime(ort, op, lbr, acts, alpha, beta, with_lengths):
    model, x, states, lengths = onnx_node_model(op, lbr, acts, alpha, beta, with_lengths)
    want = session(ort, model).run(None, {"X": x})
    want[0] = want[0].transpose(0, 2, 1, 3).reshape(T, B, 2 * H)   # (T, D, B, H) -> (T, B, D*H)
    layer = load_onnx(model)
    assert isinstance(layer.activations, dict), layer.activations   # the directions differ
    for backend in ("c", "numpy"):
        layer.backend = backend
        assert_ort_close(run(layer, x, *states, lengths=lengths), want, f"{backend} backend")


def test_from_onnx_runs_what_it_refused():
    """This node raised "the two directions differ" before per-direction activations."""
    _, inputs, _ = to_onnx(fastrnn.LSTM(I, H, bidirectional=True, seed=1))
    layer = from_onnx("LSTM", inputs["W"], inputs["R"], inputs["B"], direction="bidirectional",
                      activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Tanh", "Relu"])
    default = (("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0), ("tanh", 0.0, 0.0))
    assert layer.activations == {"forward": default, "reverse": default[:2] + (("relu", 0.0, 0.0),)}
    assert layer._cell_options[0] is None   # the forward direction keeps PyTorch's fast cell
    out, _ = layer(np.ones((T, B, I)))
    assert out.shape == (T, B, 2 * H)


def test_from_onnx_alpha_beta_across_directions():
    """Each activation that takes an alpha (beta) takes the next one, across both
    directions; a missing one takes ONNX's default."""
    _, inputs, _ = to_onnx(fastrnn.GRU(I, H, bidirectional=True))
    layer = from_onnx("GRU", inputs["W"], inputs["R"], inputs["B"], direction="bidirectional",
                      activations=["Sigmoid", "Affine", "HardSigmoid", "LeakyRelu"],
                      activation_alpha=[0.5, 0.25], activation_beta=[0.125])
    assert layer.activations == {"forward": (("sigmoid", 0.0, 0.0), ("affine", 0.5, 0.125)),
                                 "reverse": (("hard_sigmoid", 0.25, 0.5),
                                             ("leaky_relu", 0.01, 0.0))}


# ======================================================= layers through export_onnx

@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "full"])
@pytest.mark.parametrize("case,kw", [(case, {}) for case in LAYERS] + [
    ("gru-lbr1", dict(num_layers=2, batch_first=True)), ("lstm", dict(num_layers=2))],
    ids=lambda v: v if isinstance(v, str) else "-".join(sorted(v)))
def test_export_onnx_matches_onnxruntime(ort, case, kw, with_lengths):
    layer = make(case, **kw)
    for name in layer.grads:                       # peepholes large enough to matter
        if "peephole" in name:
            getattr(layer, name)[...] *= 3
    x, h0, c0 = data(layer, seed=1)
    lstm = isinstance(layer, fastrnn.LSTM)
    feeds = {"X": x, "sequence_lens": LENGTHS, "initial_h": h0, "initial_c": c0}
    sess = session(ort, fastrnn.export_onnx(layer, sequence_lens=with_lengths))
    want = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    lengths = LENGTHS if with_lengths else None
    for backend in ("c", "numpy"):
        layer.backend = backend
        assert_ort_close(run(layer, x, h0, c0 if lstm else None, lengths), want,
                         f"{backend} backend")


def test_onnx_round_trip():
    layer = make("lstm-peep-clip")
    op, inputs, attrs = to_onnx(layer)
    assert attrs["activations"] == ["Softsign", "Elu", "Tanh", "Sigmoid", "Softplus", "LeakyRelu"]
    assert attrs["activation_alpha"] == [0.6, 0.3] and "activation_beta" not in attrs
    back = from_onnx(op, **inputs, **attrs)
    assert back.activations == layer.activations and repr(back) == repr(layer)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)


# ================================================================ the backends

@pytest.mark.parametrize("case", sorted(LAYERS))
def test_c_matches_reference(case, dtype, run_layer, make_inputs, assert_tensors_close):
    layers = {backend: make(case, num_layers=2, dtype=dtype, backend=backend)
              for backend in ("c", "numpy")}
    inputs = make_inputs(layers["c"], T, B, seed=2)
    got, want = (run_layer(layers[backend], inputs["x"], inputs["h0"], inputs["c0"], LENGTHS,
                           inputs["dy"], inputs["dh_n"], inputs["dc_n"])
                 for backend in ("c", "numpy"))
    assert_tensors_close(got, want, dtype, context=case)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("case", ["gru-lbr0", "lstm-peep-clip"])
def test_finite_differences(case, backend, numeric_gradient, assert_close):
    layer = make(case, dtype=np.float64, backend=backend)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, 2 * H))

    def loss():
        return (layer(x, lengths=LENGTHS)[0] * dy).sum()

    layer.zero_grad()
    loss()
    dx, _ = layer.backward(dy)
    assert_close("dx", dx, numeric_gradient(loss, x), np.float64, kind="fd")
    for name, grad in layer.grads.items():
        assert_close(f"grads[{name}]", grad, numeric_gradient(loss, getattr(layer, name)),
                     np.float64, kind="fd")


# ============================================================== the layer API

@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("case", ["rnn", "gru-lbr0", "lstm-peep-clip"])
def test_equals_two_layers_run_apart(case, backend, run_layer, make_inputs,
                                     assert_tensors_close):
    """The bidirectional layer equals a forward layer with the forward
    activations and a reverse layer with the reverse ones, on the same weights:
    every tensor of a training call, direction by direction."""
    op, kw = LAYERS[case]
    both = make(case, dtype=np.float64, backend=backend)
    inputs = make_inputs(both, T, B, seed=4)
    got = run_layer(both, inputs["x"], inputs["h0"], inputs["c0"], LENGTHS, inputs["dy"],
                    inputs["dh_n"], inputs["dc_n"])
    want = {}
    for d, (key, suffix) in enumerate((("forward", ""), ("reverse", "_reverse"))):
        alone = CLASSES[op](I, H, direction=key, dtype=np.float64, backend=backend,
                            **{**kw, "activations": kw["activations"][key]})
        alone.load_state_dict({k.removesuffix(suffix): v for k, v in both.state_dict().items()
                               if k.endswith("_l0" + suffix)})
        row = {k: None if v is None else v[d:d + 1] for k, v in inputs.items() if k != "x"}
        half = run_layer(alone, inputs["x"], row["h0"], row["c0"], LENGTHS,
                         inputs["dy"][..., d * H:(d + 1) * H], row["dh_n"], row["dc_n"])
        for name, value in half.items():
            if name.startswith("grads["):            # grads[weight_ih_l0] -> its own name
                want[f"{name[:-1]}{suffix}]"] = value
            elif name in ("output", "dx"):             # side by side; summed
                want[name] = value if d == 0 else (
                    np.concatenate([want[name], value], axis=-1) if name == "output"
                    else want[name] + value)
            else:                                      # states: one row per direction
                want[name] = value if d == 0 else np.concatenate([want[name], value])
    assert_tensors_close(got, want, np.float64, context=case)


def test_same_activations_in_both_directions_are_one_list():
    acts = ["sigmoid", ("affine", 0.7, 0.2)]
    one = fastrnn.GRU(I, H, bidirectional=True, activations=acts, seed=1)
    both = fastrnn.GRU(I, H, bidirectional=True, activations={"forward": acts, "reverse": acts},
                       seed=1)
    assert both.activations == one.activations == (("sigmoid", 0.0, 0.0), ("affine", 0.7, 0.2))
    assert repr(both) == repr(one)
    default = fastrnn.GRU(I, H, bidirectional=True,
                          activations={"forward": None, "reverse": ["Sigmoid", "Tanh"]})
    assert default._cell_options == (None, None)   # PyTorch's cells in both directions
    assert "activations" not in repr(default)


def test_save_load_pickle_repr():
    layer = make("lstm-peep-clip", num_layers=2)
    text = repr(layer)
    assert "'forward': (('softsign'" in text and "'reverse': (('sigmoid'" in text
    buffer = io.BytesIO()
    layer.save(buffer)
    config = json.loads(str(np.load(io.BytesIO(buffer.getvalue()))["__fastrnn__"]))
    assert config["args"]["activations"]["reverse"][2] == ["leaky_relu", 0.3, 0.0]
    buffer.seek(0)
    x, h0, c0 = data(layer, seed=5)
    want = run(layer, x, h0, c0, LENGTHS)
    for twin in (fastrnn.load(buffer), pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert twin.activations == layer.activations and repr(twin) == text
        for name, g, w in zip(["output", "h_n", "c_n"], run(twin, x, h0, c0, LENGTHS), want):
            np.testing.assert_array_equal(g, w, err_msg=name)


def test_files_and_pickles_of_the_single_list_form_load():
    """Files hold one list of activations for every direction, as before per-direction
    activations; pickles of that time hold one ``_options`` for every direction."""
    layer = fastrnn.GRU(I, H, bidirectional=True, clip=2.0, seed=6,
                        activations=["hard_sigmoid", ("elu", 0.5)])
    buffer = io.BytesIO()
    layer.save(buffer)
    config = json.loads(str(np.load(io.BytesIO(buffer.getvalue()))["__fastrnn__"]))
    assert config["args"]["activations"] == [["hard_sigmoid", 0.2, 0.5], ["elu", 0.5, 0.0]]
    buffer.seek(0)
    x, h0, _ = data(layer, seed=7)
    want = run(layer, x, h0)
    loaded = fastrnn.load(buffer)
    state = layer.__getstate__()
    state["_options"] = state.pop("_cell_options")[0]      # the former attribute
    unpickled = fastrnn.GRU.__new__(fastrnn.GRU)
    unpickled.__setstate__(state)
    for twin in (loaded, unpickled):
        assert twin._cell_options == layer._cell_options
        for name, g, w in zip(["output", "h_n"], run(twin, x, h0), want):
            np.testing.assert_array_equal(g, w, err_msg=name)


def test_keras_refuses_per_direction_activations():
    with pytest.raises(ValueError, match="activations"):
        to_keras(make("gru-lbr1"))


GRU_PAIR = ["sigmoid", "tanh"]


@pytest.mark.parametrize("kw,error,match", [
    (dict(activations={"forward": GRU_PAIR}), ValueError, r"activations: expected the keys"),
    (dict(activations={"forward": GRU_PAIR, "backward": GRU_PAIR}), ValueError,
     r"activations: expected the keys \['forward', 'reverse'\], got \['forward', 'backward'\]"),
    (dict(activations={"forward": GRU_PAIR, "reverse": GRU_PAIR, "extra": GRU_PAIR}),
     ValueError, r"activations: expected the keys"),
    (dict(activations={"forward": GRU_PAIR, "reverse": ["tanh"]}), ValueError,
     r"activations\['reverse'\]: expected 2 for this cell"),
    (dict(activations={"forward": ["swish", "tanh"], "reverse": GRU_PAIR}), ValueError,
     r"activations\['forward'\]: expected names among"),
    (dict(activations={"forward": GRU_PAIR, "reverse": [("elu", 1.0, 2.0, 3.0), "tanh"]}),
     ValueError, r"activations\['reverse'\]: expected names among"),
    (dict(activations={"forward": GRU_PAIR, "reverse": GRU_PAIR}, bidirectional=False),
     ValueError, r"activations: a dict of per-direction activations is for a bidirectional "
                 r"layer, got direction='forward'"),
    (dict(activations={"forward": GRU_PAIR, "reverse": GRU_PAIR}, bidirectional=False,
          direction="reverse"), ValueError, r"activations: .* got direction='reverse'"),
    (dict(activations={"forward": GRU_PAIR, "reverse": [("elu", "big"), "tanh"]}),
     TypeError, r"activations\['reverse'\]: expected alpha and beta to be real numbers"),
    (dict(activations={"forward": GRU_PAIR, "reverse": {"forward": GRU_PAIR}}),
     TypeError, r"activations\['reverse'\]: expected a list of 2"),
])
def test_bad_per_direction_activations(kw, error, match):
    kw = {"bidirectional": True, **kw}
    with pytest.raises(error, match=match):
        fastrnn.GRU(I, H, **kw)
