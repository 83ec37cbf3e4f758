"""The per-step products of the time loop (csrc/gemm.h) take one of four kernels by
batch size and number of steps: dot products on W itself (NT: B <= 2, T < 4), the
row kernel on W^T (SMALL: B <= 2), the packed register-blocked kernel (PACKED:
3 <= B <= 32) and BLAS (B > 32). Each path, on every compiled instruction set
(whose vector width and register block differ), forward and backward, with
lengths (fewer active rows than the batch), a projection and sizes that are no
multiple of any vector width, matches the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import _kernels

I, H = 11, 37   # 4H = 148, 3H = 111: no multiple of any tile width

# (T, B) per path; B = 9 and 13 leave remainders of every register block (MR 4 or 8)
SHAPES = {
    "nt_T1_B1": (1, 1), "nt_T3_B2": (3, 2),
    "small_T5_B1": (5, 1), "small_T4_B2": (4, 2),
    "packed_T1_B3": (1, 3), "packed_T5_B9": (5, 9), "packed_T3_B13": (3, 13),
    "packed_T2_B32": (2, 32),
    "blas_T3_B33": (3, 33),
}


@pytest.fixture(params=_kernels.available_isas())
def isa(request):
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(None)


def _lengths(T: int, B: int, seed: int) -> np.ndarray:
    """Lengths in [0, T] with the longest first and last rows short, so the active
    rows shrink step by step (and some rows are inactive from the start)."""
    lengths = np.random.default_rng(seed).integers(0, T + 1, B)
    lengths[0] = T
    return lengths


def _projection_runs(layer, T: int, B: int, seed: int, run_layer):
    """run_layer on backends "c" and "numpy" for an LSTM with proj_size, with
    random states, upstream gradients and lengths: (got, expected)."""
    rng = np.random.default_rng(seed)
    S, P, dtype = layer.num_layers * layer.num_directions, layer.proj_size, layer.dtype

    def u(*shape):
        return rng.uniform(-1, 1, shape).astype(dtype)
    inputs = {"x": u(T, B, I), "h0": u(S, B, P), "c0": u(S, B, H),
              "dy": u(T, B, layer.num_directions * P), "dh_n": u(S, B, P), "dc_n": u(S, B, H)}
    lengths = _lengths(T, B, seed + 1)
    layer.backend = "c"
    got = run_layer(layer, lengths=lengths, **inputs)
    layer.backend = "numpy"
    return got, run_layer(layer, lengths=lengths, **inputs)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_step_kernel_paths_match_reference(isa, cell, dtype, shape, make_layer, make_inputs,
                                           run_layer, assert_tensors_close):
    T, B = shape
    layer = make_layer(cell, I, H, dtype=dtype, seed=3)
    inputs = make_inputs(layer, T, B, seed=4)
    for lengths in (None, _lengths(T, B, 5)):
        layer.backend = "c"
        got = run_layer(layer, lengths=lengths, **inputs)
        layer.backend = "numpy"
        expected = run_layer(layer, lengths=lengths, **inputs)
        assert_tensors_close(got, expected, dtype,
                             context=f"{isa} T={T} B={B} lengths={lengths is not None}")


@pytest.mark.parametrize("shape", [SHAPES["nt_T1_B1"], SHAPES["small_T5_B1"],
                                   SHAPES["packed_T5_B9"], SHAPES["blas_T3_B33"]],
                         ids=["nt", "small", "packed", "blas"])
def test_step_kernel_paths_with_projection(isa, dtype, shape, make_layer, run_layer,
                                           assert_tensors_close):
    """LSTM with proj_size: W_hr is a per-step operand too (both directions, 2 layers)."""
    T, B = shape
    layer = make_layer("lstm", I, H, proj_size=5, num_layers=2, bidirectional=True,
                       dtype=dtype, seed=6)
    got, expected = _projection_runs(layer, T, B, 7, run_layer)
    assert_tensors_close(got, expected, dtype, context=f"{isa} T={T} B={B} projection")


def test_inference_matches_training_forward(cell, dtype, make_layer, make_inputs, assert_close):
    """Inference (projection chunks, no cache) and training forwards share the per-step
    kernels but not the projection: the outputs agree on every path."""
    for T, B in SHAPES.values():
        layer = make_layer(cell, I, H, dtype=dtype, seed=9)
        x = make_inputs(layer, T, B, seed=10)["x"]
        trained = layer(x, training=True)[0]
        inferred = layer(x, training=False)[0]
        assert_close(f"output T={T} B={B}", inferred, trained, dtype)


# ------------------------------------------------------- threaded time loop

def _training_and_inference_match(layer, inputs, T, B, dtype, context, run_layer,
                                  assert_tensors_close, assert_close):
    """C training (forward and backward) and inference equal the NumPy reference,
    without and with lengths."""
    for lengths in (None, _lengths(T, B, 13)):
        layer.backend = "c"
        got = run_layer(layer, lengths=lengths, **inputs)
        state = inputs["h0"] if inputs["c0"] is None else (inputs["h0"], inputs["c0"])
        inferred = layer(inputs["x"], state, lengths=lengths, training=False)[0]
        layer.backend = "numpy"
        expected = run_layer(layer, lengths=lengths, **inputs)
        where = f"{context} lengths={lengths is not None}"
        assert_tensors_close(got, expected, dtype, context=where)
        assert_close(f"inference output ({where})", inferred, expected["output"], dtype)


@pytest.fixture(params=[2, 3], ids=["threads2", "threads3"])
def loop_threads(request):
    before = _kernels.get_loop_threads()
    _kernels.set_loop_threads(request.param)
    yield request.param
    _kernels.set_loop_threads(before)


@pytest.mark.parametrize("layout", [
    {}, {"batch_first": True}, {"bidirectional": True, "num_layers": 2},
], ids=["time_major", "batch_first", "bi_layers2"])
# float32 sums over 40+ rows drift past the float32 gradient tolerance (rounding
# alone); the slicing logic is the same source in both precisions
@pytest.mark.parametrize("dtype,B", [(np.float32, 16), (np.float32, 17)]
                         + [(np.float64, b) for b in (16, 17, 40, 64, 65)],
                         ids=["f32-B16", "f32-B17", "f64-B16", "f64-B17", "f64-B40", "f64-B64",
                              "f64-B65"])
def test_threaded_loop_matches_reference(loop_threads, cell, dtype, B, layout, make_layer,
                                         make_inputs, run_layer, assert_tensors_close,
                                         assert_close):
    """In inference, batch slices run the time loop in threads (B >= 16 with at
    most 32 rows per thread; B = 65 keeps one thread), projecting their own rows:
    the output matches the reference, with and without lengths (gathered rows);
    training (one thread) still matches with the thread setting on."""
    T = 4
    expected_threads = 1 if B > 32 * loop_threads else min(loop_threads, B // 8)
    assert _kernels.loop_threads(cell, T, B, I, H, training=False) == expected_threads
    assert _kernels.loop_threads(cell, T, B, I, H, training=True) == 1
    layer = make_layer(cell, I, H, dtype=dtype, seed=11, **layout)
    _training_and_inference_match(layer, make_inputs(layer, T, B, seed=12), T, B, dtype,
                                  f"threads={loop_threads} B={B}", run_layer,
                                  assert_tensors_close, assert_close)


def test_threaded_loop_with_projection(loop_threads, dtype, make_layer, run_layer,
                                       assert_tensors_close):
    layer = make_layer("lstm", I, H, proj_size=5, dtype=dtype, seed=14)
    got, expected = _projection_runs(layer, 3, 24, 15, run_layer)
    assert_tensors_close(got, expected, dtype, context=f"threads={loop_threads} projection")


def test_loop_threads_rule(loop_threads):
    """The documented rule: inference only, 8 to 32 rows per thread, W_hh of at
    most 256K elements, default cells only."""
    n = loop_threads
    assert _kernels.loop_threads("lstm", 10, 16, 64, 64, training=False) == 2
    assert _kernels.loop_threads("lstm", 10, 15, 64, 64, training=False) == 1
    assert _kernels.loop_threads("gru", 10, 8 * n, 64, 64, training=False) == n
    assert _kernels.loop_threads("gru", 10, 32 * n + 1, 64, 64, training=False) == 1
    assert _kernels.loop_threads("gru", 10, 32, 64, 64, training=True) == 1
    assert _kernels.loop_threads("gru", 10, 32, 256, 256, training=False) == n      # 196K
    assert _kernels.loop_threads("lstm", 10, 32, 256, 256, training=False) == n     # 256K
    assert _kernels.loop_threads("gru", 10, 32, 512, 512, training=False) == 1      # 768K
    _kernels.set_loop_threads(1)
    assert _kernels.loop_threads("gru", 10, 32, 64, 64, training=False) == 1


# (T, B, H, layout) of the unit-split loop: every per-step kernel (NT at B=1 T<4,
# SMALL at B=1, PACKED at B=16, BLAS at B=40), each with at least 4M multiply-adds
# per step for the LSTM; H = 352 gives eleven blocks of 32 units, which two or
# three threads share unequally
UNIT_SHAPES = {"nt_B1": (2, 1, 1024, {}),
               "small_B1": (4, 1, 1024, {"batch_first": True}),
               "packed_B16": (2, 16, 512, {"bidirectional": True}),
               "blas_B40": (2, 40, 352, {"batch_first": True, "bidirectional": True})}
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}
# the cells each shape splits in training (at least 4M multiply-adds per step)
UNIT_CASES = [(cell, shape) for shape, (T, B, H_, _) in UNIT_SHAPES.items()
              for cell in ("rnn_tanh", "rnn_relu", "lstm", "gru")
              if B * H_ * GATES[cell] * H_ >= 4 * 1024 * 1024]


@pytest.mark.parametrize("cell,shape", UNIT_CASES, ids=[f"{c}-{s}" for c, s in UNIT_CASES])
def test_unit_split_loop_matches_reference(loop_threads, cell, dtype, shape, make_layer,
                                           make_inputs, run_layer, assert_tensors_close,
                                           assert_close):
    """Where batch slices do not apply, threads split the hidden units of the forward
    loop (one barrier per step, internal.h unit_threads): training and inference
    match the NumPy reference, with and without lengths, on every per-step kernel.
    (Column ranges are whole 32-unit blocks, a multiple of every instruction set's
    tile, so the instruction sets differ here only as the per-step tests cover.)"""
    T, B, hidden, layout = UNIT_SHAPES[shape]
    I_ = 8
    for training in (True, False):
        slices = _kernels.loop_threads(cell, T, B, I_, hidden, training=training)
        expected = 1 if slices > 1 else min(loop_threads, hidden // 32)
        assert _kernels.unit_threads(cell, T, B, I_, hidden, training=training) == expected
    layer = make_layer(cell, I_, hidden, dtype=dtype, seed=21, **layout)
    _training_and_inference_match(layer, make_inputs(layer, T, B, seed=22), T, B, dtype,
                                  f"threads={loop_threads} {shape}", run_layer,
                                  assert_tensors_close, assert_close)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("shape", ["packed_B16", "blas_B40"])
def test_unit_split_in_turn_is_bitwise_the_team(loop_threads, cell, shape, run_layer,
                                                make_layer, make_inputs):
    """After a stall (a member whose core another process holds), calls do every
    member's share of the units one after another in the caller: the same
    products and gate passes, so training and inference give bit for bit what
    the team gives, with and without lengths."""
    T, B, hidden, layout = UNIT_SHAPES[shape]
    layer = make_layer(cell, 8, hidden, dtype=np.float32, seed=23, **layout)
    inputs = make_inputs(layer, T, B, seed=24)
    state = inputs["h0"] if inputs["c0"] is None else (inputs["h0"], inputs["c0"])
    for lengths in (None, _lengths(T, B, 13)):
        runs = []
        for in_turn in (False, True):
            _kernels.back_off(60.0 if in_turn else 0.0)
            try:
                assert _kernels.backing_off() == in_turn
                got = run_layer(layer, lengths=lengths, **inputs)
                got["inferred"] = layer(inputs["x"], state, lengths=lengths, training=False)[0]
            finally:
                _kernels.back_off(0.0)
            runs.append(got)
        team, in_turn = runs
        for name in team:
            assert np.array_equal(team[name], in_turn[name]), \
                f"{name} differs ({cell} {shape}, lengths={lengths is not None})"


def test_unit_threads_rule(loop_threads):
    """The documented rule: plain cells without projection, H a multiple of 32 with
    a block per thread, at least 4M multiply-adds per step, batch slices first."""
    n = loop_threads
    assert _kernels.unit_threads("lstm", 10, 64, 64, 256, training=True) == n      # 16M
    assert _kernels.unit_threads("lstm", 10, 64, 64, 256, training=False) == 1     # slices
    assert _kernels.unit_threads("lstm", 10, 128, 64, 256, training=False) == n
    assert _kernels.unit_threads("lstm", 10, 16, 64, 64, training=True) == 1       # 256K
    assert _kernels.unit_threads("rnn_tanh", 10, 64, 64, 256, training=True) == n  # 4M
    assert _kernels.unit_threads("rnn_tanh", 10, 63, 64, 256, training=True) == 1
    assert _kernels.unit_threads("lstm", 10, 1, 64, 1024, training=False) == n     # B = 1
    assert _kernels.unit_threads("lstm", 10, 64, 64, 240, training=True) == 1      # H % 32
    assert _kernels.unit_threads("lstm", 10, 64, 64, 256, training=True, P=128) == 1
    assert _kernels.unit_threads("gru_reset_before", 10, 64, 64, 256, training=True) == 1
    assert _kernels.unit_threads("lstm", 10, 64, 64, 32, training=True) == 1       # 1 block
