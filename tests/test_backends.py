"""The C backend against the NumPy reference backend, tensor by tensor.

Every test builds the same layer twice (same seed, so the same parameters and
the same dropout masks) on backend="c" and backend="numpy", runs forward and
backward, and compares output, h_n, c_n, dx, dh0, dc0 and every parameter
gradient by name (conftest.run_layer). The reference itself is checked against
finite differences and PyTorch in test_reference.py and test_gradcheck.py.

Also here: switching backends on a live layer, gradient accumulation and
zero_grad, inference mode, the naive C GEMM, and the chunked input projection
of the C inference path (FASTRNN_INFER_CHUNK_ROWS = 256 rows per chunk).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

I, H = 3, 5                 # input and hidden sizes of the small cases
T, B = 5, 4                 # steps and batch rows of the small cases
LENGTHS = [3, 1, 5, 2]      # unsorted, with 1 and T
BACKENDS = ("c", "numpy")

# One entry per layer configuration; run options (unbatched, lengths, which of the
# states and upstream gradients are given) are popped off before building the layer.
CASES = {
    "plain": {},
    "layers2": {"num_layers": 2},
    "layers3_bi": {"num_layers": 3, "bidirectional": True},
    "bi": {"bidirectional": True},
    "batch_first": {"batch_first": True},
    "bf_bi_layers2_lengths": {"batch_first": True, "bidirectional": True, "num_layers": 2,
                              "lengths": LENGTHS},
    "unbatched": {"unbatched": True},
    "unbatched_bf_bi_layers2": {"unbatched": True, "batch_first": True,
                                "bidirectional": True, "num_layers": 2},
    "unbatched_lengths_bi": {"unbatched": True, "lengths": [3], "bidirectional": True},
    "lengths": {"lengths": LENGTHS},
    "lengths_bi": {"lengths": LENGTHS, "bidirectional": True},
    "lengths_all_1_bi": {"lengths": [1, 1, 1, 1], "bidirectional": True},
    "lengths_all_T": {"lengths": [T] * B, "bidirectional": True},
    "no_bias": {"bias": False},
    "no_bias_bi_layers2_lengths": {"bias": False, "bidirectional": True, "num_layers": 2,
                                   "lengths": LENGTHS},
    "zero_state": {"state": False, "bidirectional": True},
    "only_h0": {"state": "h", "num_layers": 2},
    "only_c0": {"state": "c", "bidirectional": True},
    "no_d_state": {"d_state": False, "num_layers": 2},
    "only_d_h_n": {"d_state": "h", "bidirectional": True, "lengths": LENGTHS},
    "only_d_c_n": {"d_state": "c", "num_layers": 2, "lengths": LENGTHS},
    "no_d_output": {"d_output": False, "num_layers": 2, "lengths": LENGTHS},
    "no_d_output_bi": {"d_output": False, "bidirectional": True, "lengths": LENGTHS},
    "dropout_layers2": {"num_layers": 2, "dropout": 0.5},
    "dropout_layers3_bi_bf_lengths": {"num_layers": 3, "dropout": 0.3, "bidirectional": True,
                                      "batch_first": True, "lengths": LENGTHS},
}
RUN_OPTIONS = ("unbatched", "lengths", "state", "d_state", "d_output")

def case_params():
    return [pytest.param(case, id=name) for name, case in CASES.items()]


def split_case(case):
    """(layer kwargs, make_inputs kwargs, lengths) of a CASES entry."""
    layer_kw = {k: v for k, v in case.items() if k not in RUN_OPTIONS}
    input_kw = {k: case[k] for k in ("unbatched", "state", "d_state", "d_output") if k in case}
    return layer_kw, input_kw, case.get("lengths")


def twin_layers(make_layer, cell, dtype, seed=7, **kwargs):
    """The same layer on both backends: {"c": layer, "numpy": layer}."""
    layers = {b: make_layer(cell, I, H, dtype=dtype, seed=seed, backend=b, **kwargs)
              for b in BACKENDS}
    for b, layer in layers.items():
        assert layer.backend == b, f"backend: asked for {b!r}, got {layer.backend!r}"
    c_params, np_params = layers["c"].state_dict(), layers["numpy"].state_dict()
    for name in c_params:
        np.testing.assert_array_equal(c_params[name], np_params[name], err_msg=name)
    return layers


# ------------------------------------------------------------ the main matrix

@pytest.mark.parametrize("case", case_params())
def test_c_matches_reference(cell, dtype, case, make_layer, make_inputs, run_layer,
                             assert_tensors_close):
    layer_kw, input_kw, lengths = split_case(case)
    layers = twin_layers(make_layer, cell, dtype, **layer_kw)
    inputs = make_inputs(layers["c"], T, B, seed=1, **input_kw)
    got = run_layer(layers["c"], lengths=lengths, **inputs)
    want = run_layer(layers["numpy"], lengths=lengths, **inputs)
    assert_tensors_close(got, want, dtype, context="c vs numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_masks_are_applied_and_seeded(cell, backend, make_layer, make_inputs,
                                              run_layer, assert_tensors_close):
    """The dropout cases above compare the two backends; here the masks must also
    change the result (they were applied), and the same seed gives the same masks."""
    kw = {"num_layers": 2, "bidirectional": True, "dtype": np.float64, "backend": backend}
    a, b = (make_layer(cell, I, H, dropout=0.5, seed=3, **kw) for _ in range(2))
    plain = make_layer(cell, I, H, dropout=0.0, seed=3, **kw)
    inputs = make_inputs(a, T, B, seed=2)
    got_a, got_b = run_layer(a, **inputs), run_layer(b, **inputs)
    assert_tensors_close(got_a, got_b, np.float64, context="same seed")
    no_dropout = run_layer(plain, **inputs)
    assert not np.allclose(got_a["output"], no_dropout["output"]), \
        "output: dropout=0.5 between layers changed nothing"


# ------------------------------------------------------- Bidirectional wrapper

@pytest.mark.parametrize("variant", [
    pytest.param({}, id="plain"),
    pytest.param({"batch_first": True, "lengths": LENGTHS, "bias": False}, id="bf_lengths_nobias"),
])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_wrapper_matches_reference(cell, dtype, merge_mode, variant, make_layer,
                                                 make_inputs, run_layer, assert_tensors_close):
    layer_kw, _, lengths = split_case(variant)
    wrappers = {b: fastrnn.Bidirectional(layer, merge_mode=merge_mode)
                for b, layer in twin_layers(make_layer, cell, dtype, **layer_kw).items()}
    for b, w in wrappers.items():
        assert w.backend == b, f"Bidirectional.backend: expected {b!r}, got {w.backend!r}"
    inputs = make_inputs(wrappers["c"], T, B, seed=4)
    got = run_layer(wrappers["c"], lengths=lengths, **inputs)
    want = run_layer(wrappers["numpy"], lengths=lengths, **inputs)
    assert_tensors_close(got, want, dtype, context=f"Bidirectional({merge_mode}) c vs numpy")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_wrapper_of_a_stack_is_refused(cell, make_layer):
    """The wrapper has Keras semantics (one layer); a stack gets a clear error."""
    layer = make_layer(cell, 3, 4, num_layers=2)
    with pytest.raises(ValueError, match="num_layers"):
        fastrnn.Bidirectional(layer)


# -------------------------------------------------------------------- cells

@pytest.mark.parametrize("variant", [
    {"batched": True},
    {"batched": False},
    {"batched": True, "bias": False},
    {"batched": False, "bias": False},
    {"batched": True, "state": False},
], ids=["batched", "unbatched", "batched_nobias", "unbatched_nobias", "batched_zero_state"])
def test_cells_match_reference(cell, dtype, variant, make_cell, run_cell,
                               assert_tensors_close):
    cells = {b: make_cell(cell, I, H, dtype=dtype, seed=5, backend=b,
                          bias=variant.get("bias", True)) for b in BACKENDS}
    for b, c in cells.items():
        assert c.backend == b, f"cell backend: expected {b!r}, got {c.backend!r}"
    rng = np.random.default_rng(6)
    lead = (B,) if variant["batched"] else ()

    def u(*shape):
        return rng.uniform(-1, 1, lead + shape).astype(dtype)

    lstm = cell == "lstm"
    given = variant.get("state", True)
    args = {"x": u(I), "h": u(H) if given else None, "c": u(H) if given and lstm else None,
            "dh": u(H), "dc": u(H) if lstm else None}
    if not lstm:
        del args["c"], args["dc"]
    got = run_cell(cells["c"], **args)
    want = run_cell(cells["numpy"], **args)
    assert got["h"].shape == lead + (H,), f"h: shape {got['h'].shape}, expected {lead + (H,)}"
    assert got["dx"].shape == lead + (I,), f"dx: shape {got['dx'].shape}, expected {lead + (I,)}"
    assert_tensors_close(got, want, dtype, context="cell c vs numpy")


# -------------------------------------------------------- backend switching

def test_switching_backend_gives_the_same_numbers(cell, dtype, make_layer, make_inputs,
                                                  run_layer, assert_tensors_close):
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True}
    layer = make_layer(cell, I, H, dtype=dtype, seed=8, backend="c", **kw)
    inputs = make_inputs(layer, T, B, seed=9)
    on_c = run_layer(layer, lengths=LENGTHS, **inputs)
    layer.backend = "numpy"
    assert layer.backend == "numpy", f"backend: set to 'numpy', reads {layer.backend!r}"
    on_numpy = run_layer(layer, lengths=LENGTHS, **inputs)
    assert_tensors_close(on_numpy, on_c, dtype, context="after switching to numpy")
    # a layer built on numpy agrees with the switched one
    built = make_layer(cell, I, H, dtype=dtype, seed=8, backend="numpy", **kw)
    assert_tensors_close(run_layer(built, lengths=LENGTHS, **inputs), on_numpy, dtype,
                         context="built on numpy vs switched to numpy")
    layer.backend = "c"
    assert layer.backend == "c", f"backend: set to 'c', reads {layer.backend!r}"
    assert_tensors_close(run_layer(layer, lengths=LENGTHS, **inputs), on_c, dtype,
                         context="after switching back to c")


def test_switching_backend_of_wrapper_and_cell(dtype, make_layer, make_cell, make_inputs,
                                               run_layer, run_cell, assert_tensors_close):
    bi = fastrnn.Bidirectional(make_layer("lstm", I, H, dtype=dtype, seed=1), merge_mode="mul")
    inputs = make_inputs(bi, T, B, seed=2)
    on_c = run_layer(bi, **inputs)
    bi.backend = "numpy"
    assert bi.layer.backend == "numpy", "Bidirectional.backend = 'numpy' did not reach the layer"
    assert_tensors_close(run_layer(bi, **inputs), on_c, dtype, context="Bidirectional switched")

    cell = make_cell("gru", I, H, dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    x, h, dh = (rng.uniform(-1, 1, (B, n)).astype(dtype) for n in (I, H, H))
    on_c = run_cell(cell, x, h, dh=dh)
    cell.backend = "numpy"
    assert cell.backend == "numpy", "GRUCell.backend = 'numpy' did not reach the layer"
    assert_tensors_close(run_cell(cell, x, h, dh=dh), on_c, dtype, context="GRUCell switched")


# ---------------------------------------------------- accumulation, zero_grad

@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_accumulate_and_zero_grad_clears(cell, dtype, backend, make_layer,
                                                   make_inputs, run_layer, assert_close):
    layer = make_layer(cell, I, H, dtype=dtype, seed=10, backend=backend, num_layers=2,
                       bidirectional=True)
    assert sorted(layer.grads) == sorted(layer.state_dict()), "grads: keys differ from state_dict"
    first, second = (make_inputs(layer, T, B, seed=s) for s in (11, 12))
    g1 = run_layer(layer, lengths=LENGTHS, **first)
    g2 = run_layer(layer, **second)
    # two backward calls without zero_grad in between: the sum
    run_layer(layer, lengths=LENGTHS, **first)                  # clears grads first
    both = run_layer(layer, zero_grad=False, **second)
    for name in layer.grads:
        key = f"grads[{name}]"
        assert np.any(g1[key] != 0), f"{key}: zero after a backward"
        assert_close(f"{key} after two backwards", both[key], g1[key] + g2[key], dtype)
    layer.zero_grad()
    for name, g in layer.grads.items():
        assert g.shape == layer.state_dict()[name].shape, f"grads[{name}]: shape changed"
        assert not np.any(g), f"grads[{name}]: not cleared by zero_grad"
    again = run_layer(layer, lengths=LENGTHS, zero_grad=False, **first)
    for name in layer.grads:
        key = f"grads[{name}]"
        assert_close(f"{key} after zero_grad", again[key], g1[key], dtype)


# ----------------------------------------------------------- inference mode

@pytest.mark.parametrize("how", ["eval", "training_false"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_equals_training_output_and_refuses_backward(cell, dtype, backend, how,
                                                               make_layer, make_inputs,
                                                               run_layer, assert_close):
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "dtype": dtype,
          "backend": backend}
    layer = make_layer(cell, I, H, dropout=0.5, seed=13, **kw)
    no_dropout = make_layer(cell, I, H, seed=0, **kw)
    no_dropout.load_state_dict(layer.state_dict())
    inputs = make_inputs(layer, T, B, seed=14)
    lstm = cell == "lstm"
    state = (inputs["h0"], inputs["c0"]) if lstm else inputs["h0"]
    d_state = (inputs["dh_n"], inputs["dc_n"]) if lstm else inputs["dh_n"]

    def forward(m, **kwargs):
        out, st = m(inputs["x"], state, lengths=LENGTHS, **kwargs)
        return {"output": out, **({"h_n": st[0], "c_n": st[1]} if lstm else {"h_n": st})}

    want = forward(no_dropout)                       # training mode, no dropout
    assert no_dropout.training
    forward(layer)                                   # a training forward first ...
    if how == "eval":
        assert layer.eval() is layer, "eval() should return the layer"
        assert layer.training is False
        got = forward(layer)
    else:
        got = forward(layer, training=False)
        assert layer.training is True, "training=False changed the layer's mode"
    for name in want:
        assert_close(f"{how}: {name}", got[name], want[name], dtype, kind="out")
    # ... then an inference forward: backward has nothing to differentiate
    with pytest.raises(ValueError):
        layer.backward(inputs["dy"], d_state)
    # training again: backward works
    layer.train()
    forward(layer)
    dx = layer.backward(inputs["dy"], d_state)[0]
    assert dx.shape == inputs["x"].shape


def test_inference_without_any_training_forward_refuses_backward(cell, make_layer):
    for backend in BACKENDS:
        layer = make_layer(cell, I, H, backend=backend).eval()
        out = layer(np.ones((T, B, I)))[0]
        with pytest.raises(ValueError):
            layer.backward(np.ones_like(out))


# --------------------------------------------------------- naive C GEMM

ODD_SHAPES = {
    "T3_B5_I7_H9": (3, 5, 7, 9),
    "T4_B1_I3_H1": (4, 1, 3, 1),
    "T1_B1_I1_H1": (1, 1, 1, 1),
    "T6_B3_I1_H2": (6, 3, 1, 2),
}


@pytest.mark.parametrize("layout", [
    {},
    {"bidirectional": True, "batch_first": True, "num_layers": 2, "lengths": True},
], ids=["plain", "bi_bf_layers2_lengths"])
@pytest.mark.parametrize("shape", list(ODD_SHAPES.values()), ids=list(ODD_SHAPES))
def test_naive_gemm_matches_blas(cell, dtype, shape, layout, naive_gemm, make_layer,
                                 make_inputs, run_layer, assert_tensors_close):
    t, b, i, h = shape
    layer_kw = {k: v for k, v in layout.items() if k != "lengths"}
    lengths = None
    if layout.get("lengths"):
        lengths = np.random.default_rng(0).integers(1, t + 1, b)
        lengths[0] = t
        lengths[-1] = 1 if b > 1 else t
    layer = make_layer(cell, i, h, dtype=dtype, seed=15, **layer_kw)
    inputs = make_inputs(layer, t, b, seed=16)

    _kernels.set_blas(True)          # the fixture restores whatever was set before
    assert _kernels.blas_enabled()
    with_blas = run_layer(layer, lengths=lengths, **inputs)
    _kernels.set_blas(False)
    assert not _kernels.blas_enabled()
    naive = run_layer(layer, lengths=lengths, **inputs)
    assert_tensors_close(naive, with_blas, dtype, context="naive GEMM vs BLAS")
    layer.backend = "numpy"
    reference = run_layer(layer, lengths=lengths, **inputs)
    assert_tensors_close(naive, reference, dtype, context="naive GEMM vs numpy")


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_naive_gemm_inference_path(cell, dtype, batch_first, naive_gemm, make_layer,
                                   make_inputs, assert_close):
    """Inference (chunked projection) on the naive GEMM, T*B > 256, odd sizes."""
    t, b = 91, 3
    layer = make_layer(cell, 7, 9, dtype=dtype, seed=17, bidirectional=True,
                       batch_first=batch_first)
    x = make_inputs(layer, t, b, seed=18)["x"]
    lengths = [t, 1, 50]
    _kernels.set_blas(True)
    with_blas = layer(x, lengths=lengths, training=False)[0]
    _kernels.set_blas(False)
    naive = layer(x, lengths=lengths, training=False)[0]
    naive_training = layer(x, lengths=lengths)[0]
    assert_close("output (naive inference vs BLAS inference)", naive, with_blas, dtype)
    assert_close("output (naive inference vs naive training)", naive, naive_training, dtype)


# ------------------------------------------- chunked input projection (inference)

CHUNK_SHAPES = {                      # (T, B): FASTRNN_INFER_CHUNK_ROWS = 256
    "T130_B3": (130, 3),              # chunks of 85 steps: 85 + 45
    "T100_B7": (100, 7),              # 36 + 36 + 28
    "T257_B2": (257, 2),              # 128 + 128 + 1
    "T3_B300": (3, 300),              # B > 256: one step per chunk
    "T300_B1": (300, 1),              # B = 1: 256 + 44
}


@pytest.mark.parametrize("variant", [
    {},
    {"bidirectional": True, "num_layers": 2, "lengths": True},
], ids=["plain", "bi_layers2_lengths"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("shape", list(CHUNK_SHAPES.values()), ids=list(CHUNK_SHAPES))
def test_chunked_inference_matches_training_and_reference(cell, dtype, shape, batch_first,
                                                          variant, make_layer, make_inputs,
                                                          assert_close):
    t, b = shape
    kw = {k: v for k, v in variant.items() if k != "lengths"}
    layer = make_layer(cell, 3, 4, dtype=dtype, seed=19, batch_first=batch_first, **kw)
    inputs = make_inputs(layer, t, b, seed=20, scale=0.5)
    lengths = None
    if variant.get("lengths"):
        lengths = np.random.default_rng(21).integers(1, t + 1, b)
        lengths[b // 2] = t
        if b > 1:
            lengths[0] = 1
    lstm = cell == "lstm"
    state = (inputs["h0"], inputs["c0"]) if lstm else inputs["h0"]

    def forward(**kwargs):
        out, st = layer(inputs["x"], state, lengths=lengths, **kwargs)
        return {"output": out, **({"h_n": st[0], "c_n": st[1]} if lstm else {"h_n": st})}

    c_infer = forward(training=False)
    c_train = forward(training=True)
    layer.backend = "numpy"
    reference = forward(training=False)
    for name in c_infer:
        assert_close(f"{name} (c inference vs c training)", c_infer[name], c_train[name], dtype)
        assert_close(f"{name} (c inference vs numpy)", c_infer[name], reference[name], dtype)


def test_one_definition_of_the_cell_kinds():
    """fastrnn.kinds, the bindings' map onto the C enum and the C gate counts agree."""
    from fastrnn import kinds
    assert tuple(_kernels.CELLS) == kinds.CELLS
    for cell in kinds.CELLS:
        assert _kernels.num_gates(cell) == kinds.NUM_GATES[cell], cell


def test_denormals_flushed_inside_calls_only(dtype):
    """A call flushes denormal states to zero and leaves the caller's
    floating-point mode as it was (NumPy keeps computing denormals after)."""
    info = np.finfo(dtype)
    layer = fastrnn.RNN(4, 4, bias=False, dtype=dtype, seed=0)
    sd = {k: np.zeros_like(v) for k, v in layer.state_dict().items()}
    sd["weight_hh_l0"][...] = 0.5 * np.eye(4, dtype=dtype)
    layer.load_state_dict(sd)
    h0 = np.full((1, 2, 4), info.tiny * 4, dtype)      # normal, halves each step
    out, h_n = layer(np.zeros((6, 2, 4), dtype), h0, training=False)
    assert np.all(out[:2] != 0)                         # 2 and 1 x tiny: normal
    assert np.all(out[2:] == 0) and np.all(h_n == 0)    # below tiny: flushed
    # the caller's mode is back: NumPy still produces a denormal
    assert np.asarray(info.tiny, dtype) * dtype.type(0.25) != 0
