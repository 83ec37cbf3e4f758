"""The cells' inference fast path (one _kernels.cell_forward call per step).

The fast path must give what the layer path gives (the layer object run with
T = 1, as the cells did before) and what the NumPy reference gives, convert or
reject the same inputs with the same errors, read the parameters as they are
now, and stay out of the way of training. The binding's own checks must
refuse, with ValueError/TypeError, every array the C code could misuse.
"""
from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels
from fastrnn._backend import CBackend
from fastrnn.kinds import ELEMENTWISE

I, H = 5, 7
LSTM = "lstm"


@pytest.fixture
def spy(monkeypatch):
    """Counts of binding calls (fast path) and layer-backend forwards (layer path)."""
    counts = {"fast": 0, "layer": 0}
    cell_forward, backend_forward = _kernels.cell_forward, CBackend.forward

    def counting_cell_forward(*args):
        counts["fast"] += 1
        return cell_forward(*args)

    def counting_backend_forward(self, *args, **kwargs):
        counts["layer"] += 1
        return backend_forward(self, *args, **kwargs)

    monkeypatch.setattr(_kernels, "cell_forward", counting_cell_forward)
    monkeypatch.setattr(CBackend, "forward", counting_backend_forward)
    return counts


def states(kind, B, dtype, seed=1, unbatched=False):
    """(h, c) for LSTM, else h; (H,) each when unbatched."""
    rng = np.random.default_rng(seed)
    shape = (H,) if unbatched else (B, H)
    h = rng.uniform(-1, 1, shape).astype(dtype)
    c = rng.uniform(-1, 1, shape).astype(dtype)
    return (h, c) if kind == LSTM else h


def inputs(B, dtype, seed=0, unbatched=False):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (I,) if unbatched else (B, I)).astype(dtype)


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def layer_path(cell, x, state):
    """The cell's step through its layer object (T = 1), as the cells ran before."""
    layer = cell._layer
    x3 = np.asarray(x)[None]   # T = 1: (1, B, I), or (1, I) unbatched
    if isinstance(layer, fastrnn.LSTM):
        h, c = (None, None) if state is None else state
        st = (None if h is None else np.asarray(h)[None], None if c is None else np.asarray(c)[None])
        _, (h_n, c_n) = layer(x3, st, training=False)
        return (h_n[0], c_n[0])
    _, h_n = layer(x3, None if state is None else np.asarray(state)[None], training=False)
    return (h_n[0],)


def reference(cell, x, state):
    """The same step on the NumPy backend (then back to "c")."""
    cell.backend = "numpy"
    try:
        return as_tuple(cell(x, state, training=False))
    finally:
        cell.backend = "c"


def assert_outputs(got, expected, dtype, assert_close, what):
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        assert_close(f"{what}[{'hc'[k]}]", g, e, dtype)


# ------------------------------------------------------------ equality

@pytest.mark.parametrize("batch", [1, 3, "unbatched"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "none"])
def test_fast_equals_layer_path_and_reference(cell, dtype, batch, with_state, make_cell, spy,
                                               assert_close):
    c = make_cell(cell, I, H, dtype=dtype, seed=3)
    unbatched = batch == "unbatched"
    B = 1 if unbatched else batch
    x = inputs(B, dtype, unbatched=unbatched)
    state = states(cell, B, dtype, unbatched=unbatched) if with_state else None

    c(x, state, training=False)    # the first call also sizes the workspace
    spy.update(fast=0, layer=0)
    out = c(x, state, training=False)
    assert spy == {"fast": 1, "layer": 0}, "the inference step is not one binding call"
    for o in as_tuple(out):
        assert isinstance(o, np.ndarray) and o.dtype == dtype
        assert o.shape == ((H,) if unbatched else (B, H))
        assert o.flags.c_contiguous and o.flags.writeable

    assert_outputs(out, layer_path(c, x, state), dtype, assert_close, "layer path")
    assert_outputs(out, reference(c, x, state), dtype, assert_close, "reference")


def test_none_states_are_zeros(cell, dtype, make_cell):
    c = make_cell(cell, I, H, dtype=dtype, seed=4)
    x = inputs(2, dtype)
    zeros = np.zeros((2, H), dtype)
    explicit = c(x, (zeros, zeros) if cell == LSTM else zeros, training=False)
    for got, exp in zip(as_tuple(c(x, None, training=False)), as_tuple(explicit)):
        np.testing.assert_array_equal(got, exp)
    if cell == LSTM:
        rng = np.random.default_rng(0)
        h = rng.uniform(-1, 1, (2, H)).astype(dtype)
        for got, exp in zip(c(x, (h, None), training=False), c(x, (h, zeros), training=False)):
            np.testing.assert_array_equal(got, exp)
        for got, exp in zip(c(x, (None, h), training=False), c(x, (zeros, h), training=False)):
            np.testing.assert_array_equal(got, exp)


def test_unbatched_equals_batch_of_one(cell, dtype, make_cell):
    c = make_cell(cell, I, H, dtype=dtype, seed=5)
    x = inputs(1, dtype, unbatched=True)
    state = states(cell, 1, dtype, unbatched=True)
    batched_state = tuple(s[None] for s in state) if cell == LSTM else state[None]
    for got, exp in zip(as_tuple(c(x, state, training=False)),
                        as_tuple(c(x[None], batched_state, training=False))):
        assert got.shape == (H,)
        np.testing.assert_array_equal(got, exp[0])


def test_a_sequence_of_steps(dtype, assert_close):
    """Stepping an LSTMCell equals the LSTM layer over the whole sequence."""
    T, B = 6, 3
    cell = fastrnn.LSTMCell(I, H, dtype=dtype, seed=8)
    layer = cell._layer
    xs = np.random.default_rng(1).uniform(-1, 1, (T, B, I)).astype(dtype)
    out, (h_n, c_n) = layer(xs, training=False)
    h = c = None
    state = None
    for t in range(T):
        h, c = cell(xs[t], state, training=False)
        state = (h, c)
        assert_close(f"output[{t}]", h, out[t], dtype)
    assert_close("h", h, h_n[0], dtype)
    assert_close("c", c, c_n[0], dtype)


def test_eval_mode_takes_the_fast_path_training_mode_does_not(cell, make_cell, spy):
    c = make_cell(cell, I, H, seed=6)
    x = inputs(2, np.float32)
    c(x, training=False)                       # sizes the workspace
    spy.update(fast=0, layer=0)
    c(x)                                       # training (the default): the layer path
    assert spy == {"fast": 0, "layer": 1}
    c.eval()
    c(x)
    assert spy == {"fast": 1, "layer": 1}
    c(x, training=True)                        # an explicit training step: the layer path
    assert spy == {"fast": 1, "layer": 2}
    c.train()
    c(x, training=False)
    assert spy == {"fast": 2, "layer": 2}
    c.training = False                         # the attribute, as eval() sets it
    c(x, training=None)
    assert spy == {"fast": 3, "layer": 2}


def test_numpy_backend_takes_no_fast_path(cell, make_cell, spy):
    c = make_cell(cell, I, H, seed=6, backend="numpy")
    c(inputs(2, np.float32), training=False)
    assert spy["fast"] == 0


# ------------------------------------------------------------ conversions

def conversions(dtype):
    """(name, x, state maker) cases the fast path must convert as the layer path does."""
    other = np.float64 if dtype == np.float32 else np.float32
    rng = np.random.default_rng(2)
    wide = rng.uniform(-1, 1, (3, 2 * I)).astype(dtype)
    raw = bytearray(3 * I * np.dtype(dtype).itemsize + 1)
    misaligned = np.frombuffer(raw, dtype=dtype, offset=1, count=3 * I).reshape(3, I)
    misaligned[...] = rng.uniform(-1, 1, (3, I))
    assert not misaligned.flags.aligned
    return {
        "other dtype": wide[:, :I].astype(other),
        "non-contiguous": wide[:, ::2][:, :I],
        "fortran order": np.asfortranarray(wide[:, :I]),
        "list": wide[:, :I].tolist(),
        "integers": np.arange(3 * I).reshape(3, I) % 3 - 1,
        "booleans": (wide[:, :I] > 0),
        "misaligned": misaligned,
        "read-only": np.require(wide[:, :I], requirements="C").copy().view(),
    }


@pytest.mark.parametrize("case", ["other dtype", "non-contiguous", "fortran order", "list",
                                  "integers", "booleans", "misaligned", "read-only"])
def test_inputs_are_converted(cell, dtype, case, make_cell, spy, assert_close):
    c = make_cell(cell, I, H, dtype=dtype, seed=7)
    x = conversions(dtype)[case]
    if case == "read-only":
        x.flags.writeable = False
    exact = np.array(x, dtype=dtype)
    state = states(cell, 3, dtype)
    # the state converted the same way as x
    def convert(s):
        if case == "list":
            return s.tolist()
        if case == "other dtype":
            return s.astype(np.float64 if dtype == np.float32 else np.float32)
        if case == "non-contiguous":
            return np.repeat(s, 2, axis=1)[:, ::2]
        if case == "fortran order":
            return np.asfortranarray(s)
        return s
    given = tuple(convert(s) for s in state) if cell == LSTM else convert(state)
    got = c(x, given, training=False)
    assert spy["layer"] == 0
    for o in as_tuple(got):
        assert o.dtype == dtype and o.shape == (3, H)
    # the same values, ready-made
    state = tuple(np.array(s, dtype) for s in given) if cell == LSTM else np.array(given, dtype)
    expected = c(exact, state, training=False)
    assert_outputs(got, expected, dtype, assert_close, case)
    assert_outputs(got, layer_path(c, exact, state), dtype, assert_close, case)


def bad_calls(kind, B=2):
    """(name, x, state, exception, match) calls that every path must refuse alike."""
    lstm = kind == LSTM
    z = np.zeros

    def st(h, c=None):
        return (h, c) if lstm else h

    cases = [
        ("x 3-D", z((1, B, I)), None, ValueError, "x"),
        ("x 0-D", z(()), None, ValueError, "x"),
        ("x input_size", z((B, I + 1)), None, ValueError, "input_size"),
        ("x unbatched input_size", z(I + 1), None, ValueError, "input_size"),
        ("x empty batch", z((0, I)), None, ValueError, "x"),
        ("x complex", z((B, I), complex), None, TypeError, "x"),
        ("x strings", np.full((B, I), "a"), None, TypeError, "x"),
        ("x ragged", [[1.0, 2.0], [1.0]], None, ValueError, "x"),
        ("h batch", z((B, I)), st(z((B + 1, H))), ValueError, "h"),
        ("h width", z((B, I)), st(z((B, H + 1))), ValueError, "h"),
        ("h 1-D for batched x", z((B, I)), st(z(H)), ValueError, "h"),
        ("h 2-D for unbatched x", z(I), st(z((1, H))), ValueError, "h"),
        ("h complex", z((B, I)), st(z((B, H), complex)), TypeError, "h"),
    ]
    if lstm:
        cases += [
            ("c shape", z((B, I)), (None, z((B, H + 1))), ValueError, "c"),
            ("state not a pair", z((B, I)), z((B, H)), TypeError, "state"),
            ("state of three", z((B, I)), (z((B, H)),) * 3, TypeError, "state"),
        ]
    return cases


@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["f32", "f64"])
def test_bad_inputs_fail_as_on_the_layer_path(cell, dtype_, make_cell):
    c = make_cell(cell, I, H, dtype=dtype_)
    for name, x, state, exc, match in bad_calls(cell):
        with pytest.raises(exc, match=match) as fast:
            c(x, state, training=False)
        with pytest.raises(exc) as layer:
            c(x, state, training=True)   # the layer path
        assert str(fast.value) == str(layer.value), name
        # a failed call leaves the cell working
        assert as_tuple(c(inputs(2, dtype_), None, training=False))[0].shape == (2, H)


def test_failed_calls_keep_the_unbatched_flag_of_training(make_cell):
    """Backward of a training call shapes its results by that call, also after inference."""
    c = make_cell("gru", I, H, dtype=np.float64)
    c(inputs(1, np.float64, unbatched=True))          # training, unbatched
    tape = c.tape
    c(inputs(2, np.float64).tolist(), training=False)  # converted, batched
    dx, dh = c.backward(np.ones(H), tape=tape)
    assert dx.shape == (I,) and dh.shape == (H,)


# ------------------------------------------------------------ parameters

def test_parameters_are_read_at_every_call(cell, dtype, make_cell, assert_close):
    c = make_cell(cell, I, H, dtype=dtype, seed=9)
    x = inputs(2, dtype)
    state = states(cell, 2, dtype)
    first = c(x, state, training=False)
    rng = np.random.default_rng(10)

    def check(what):
        got = c(x, state, training=False)
        assert_outputs(got, layer_path(c, x, state), dtype, assert_close, what)
        assert_outputs(got, reference(c, x, state), dtype, assert_close, what)
        return got

    # in place, through the cell's attributes and parameters()
    c.weight_hh[...] *= -0.5
    c.bias_ih[0] += 1.0
    changed = check("in place")
    assert not np.array_equal(as_tuple(changed)[0], as_tuple(first)[0])
    for p in c.parameters():
        p += 0.25
    check("parameters()")
    # reassigned: attribute assignment and load_state_dict copy into the parameters
    c.weight_ih = rng.uniform(-1, 1, c.weight_ih.shape)
    check("weight_ih =")
    c.load_state_dict({k: rng.uniform(-1, 1, v.shape) for k, v in c.state_dict().items()})
    check("load_state_dict")
    # even a parameter array replaced in the layer's table is read
    params = c._layer._params
    params["weight_hh_l0"] = rng.uniform(-1, 1, params["weight_hh_l0"].shape).astype(dtype)
    check("replaced array")


def test_weight_assignment_is_checked(make_cell):
    c = make_cell("lstm", I, H)
    with pytest.raises(ValueError, match="weight_ih"):
        c.weight_ih = np.zeros((4 * H, I + 1))


def test_cell_without_bias(cell, dtype, make_cell, assert_close):
    c = make_cell(cell, I, H, dtype=dtype, bias=False, seed=11)
    x = inputs(3, dtype)
    state = states(cell, 3, dtype)
    got = c(x, state, training=False)
    assert_outputs(got, layer_path(c, x, state), dtype, assert_close, "no bias")
    assert_outputs(got, reference(c, x, state), dtype, assert_close, "no bias")


# ------------------------------------------------------------ training around it

def test_inference_step_drops_the_training_record(make_cell):
    c = make_cell("lstm", I, H)
    x = inputs(2, np.float32)
    c(x)
    c(x, training=False)
    with pytest.raises(ValueError, match="backward.*forward"):
        c.backward((np.ones((2, H)), None))


def test_training_after_fast_steps(cell, dtype, make_cell, run_cell, assert_tensors_close):
    """Fast inference steps change nothing a later training step computes."""
    a = make_cell(cell, I, H, dtype=dtype, seed=12)
    b = make_cell(cell, I, H, dtype=dtype, seed=12)
    for B in (1, 4, 2):
        a(inputs(B, dtype, seed=B), training=False)
    x = inputs(3, dtype, seed=20)
    assert_tensors_close(run_cell(a, x), run_cell(b, x), dtype)


def test_batch_size_changes(cell, dtype, make_cell, assert_close):
    c = make_cell(cell, I, H, dtype=dtype, seed=13)
    for B in (1, 5, 2, 9, 1, 3):
        x = inputs(B, dtype, seed=B)
        state = states(cell, B, dtype, seed=B)
        assert_outputs(c(x, state, training=False), layer_path(c, x, state), dtype,
                       assert_close, f"B={B}")


def test_copies_and_pickles(cell, make_cell):
    c = make_cell(cell, I, H, seed=14)
    x = inputs(2, np.float32)
    expected = as_tuple(c(x, None, training=False))
    for other in (copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        assert other._work_pool == []
        for got, exp in zip(as_tuple(other(x, None, training=False)), expected):
            np.testing.assert_array_equal(got, exp)


def test_threads_stepping_one_cell():
    """Concurrent steps of one cell each get their own workspace."""
    cell = fastrnn.LSTMCell(32, 48, seed=15)
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, (B, 32)).astype(np.float32) for B in (1, 2, 3, 4) * 2]
    expected = [cell(x, None, training=False) for x in xs]
    errors = []
    barrier = threading.Barrier(len(xs))

    def run(k):
        try:
            barrier.wait(timeout=30)
            for _ in range(200):
                h, c = cell(xs[k], None, training=False)
                np.testing.assert_allclose(h, expected[k][0], rtol=1e-6, atol=1e-7)
                np.testing.assert_allclose(c, expected[k][1], rtol=1e-6, atol=1e-7)
        except BaseException as e:   # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


# ------------------------------------------------------------ the binding's checks

def binding_args(kind="lstm", B=2, dtype=np.float32, bias=True):
    G = _kernels.num_gates(kind)
    rng = np.random.default_rng(0)
    u = lambda *shape: rng.uniform(-1, 1, shape).astype(dtype)   # noqa: E731
    args = dict(cell=_kernels.CELLS[kind], x=u(B, I), h=u(B, H),
                c=u(B, H) if kind == LSTM else None, w_ih=u(G * H, I),
                w_hh=u(H) if kind in ELEMENTWISE else u(G * H, H),
                b_ih=u(G * H) if bias else None, b_hh=u(G * H) if bias else None,
                work=np.empty(_kernels.cell_work_size(_kernels.CELLS[kind], B, I, H), dtype))
    return args


def call(args):
    return _kernels.cell_forward(*args.values())


@pytest.mark.parametrize("bias", [True, False])
def test_binding_equals_forward(cell, dtype, bias):
    args = binding_args(cell, B=3, dtype=dtype, bias=bias)
    out = as_tuple(call(args))
    lstm = cell == LSTM
    y = np.empty((1, 3, H), dtype)
    h_n, c_n = np.empty((3, H), dtype), (np.empty((3, H), dtype) if lstm else None)
    work = np.empty(_kernels.forward_work_size(cell, 1, 3, I, H, False), dtype)
    _kernels.forward(cell, args["x"][None], args["h"], args["c"], args["w_ih"], args["w_hh"],
                     args["b_ih"], args["b_hh"], None, None, y, 0, h_n, c_n, None, work,
                     False, False)
    np.testing.assert_array_equal(out[0], h_n)
    if lstm:
        np.testing.assert_array_equal(out[1], c_n)


def test_binding_work_size():
    for kind in ("rnn_tanh", "lstm", "gru", "gru_reset_before"):
        code = _kernels.CELLS[kind]
        for B in (1, 2, 7, 100):
            extra = (3 if kind == LSTM else 2) * B * H
            assert _kernels.cell_work_size(code, B, I, H) == \
                _kernels.forward_work_size(kind, 1, B, I, H, False) + extra
    with pytest.raises(ValueError):
        _kernels.cell_work_size(99, 1, I, H)
    with pytest.raises(ValueError):
        _kernels.cell_work_size(0, 0, I, H)
    # sizes the kernels' C ints cannot index
    for B, I_, H_ in ((2**31, I, H), (1, 2**31, H), (1, I, 2**31), (2**20, I, 2**10)):
        with pytest.raises(ValueError, match="too large"):
            _kernels.cell_work_size(_kernels.CELLS["lstm"], B, I_, H_)


def misaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def bad_binding_cases():
    """(name, argument, replacement(args) -> value, exception)."""
    f64 = lambda a: a.astype(np.float64)   # noqa: E731
    return [
        ("x list", "x", lambda a: a["x"].tolist(), TypeError),
        ("x dtype", "x", lambda a: f64(a["x"]), TypeError),
        ("x int", "x", lambda a: a["x"].astype(np.int32), TypeError),
        ("x byte-swapped", "x", lambda a: a["x"].astype(">f4"), TypeError),
        ("x complex", "x", lambda a: a["x"].astype(np.complex64), TypeError),
        ("x object", "x", lambda a: a["x"].astype(object), TypeError),
        ("x datetime", "x", lambda a: np.zeros(a["x"].shape, "datetime64[s]"), TypeError),
        ("x non-contiguous float64", "x", lambda a: np.zeros((2, 2 * I))[:, ::2],
         (TypeError, ValueError)),
        ("x width", "x", lambda a: np.zeros((2, I + 1), np.float32), ValueError),
        ("x 3-D", "x", lambda a: a["x"][None], ValueError),
        ("x 0-D", "x", lambda a: np.ones((), np.float32), ValueError),
        ("x scalar", "x", lambda a: np.float32(1.0), TypeError),
        ("x empty", "x", lambda a: np.zeros((0, I), np.float32), ValueError),
        ("x non-contiguous", "x", lambda a: np.repeat(a["x"], 2, axis=1)[:, ::2], ValueError),
        ("x fortran", "x", lambda a: np.asfortranarray(np.zeros((2, I), np.float32)), ValueError),
        ("x misaligned", "x", lambda a: misaligned(a["x"]), ValueError),
        ("h batch", "h", lambda a: np.zeros((3, H), np.float32), ValueError),
        ("h 1-D", "h", lambda a: np.zeros(H, np.float32), ValueError),
        ("h dtype", "h", lambda a: f64(a["h"]), TypeError),
        ("h non-contiguous", "h", lambda a: np.repeat(a["h"], 2, axis=1)[:, ::2], ValueError),
        ("c shape", "c", lambda a: np.zeros((2, H + 1), np.float32), ValueError),
        ("c misaligned", "c", lambda a: misaligned(a["c"]), ValueError),
        ("w_ih shape", "w_ih", lambda a: a["w_ih"][:-1].copy(), ValueError),
        ("w_ih 1-D", "w_ih", lambda a: a["w_ih"].ravel(), ValueError),
        ("w_ih dtype", "w_ih", lambda a: f64(a["w_ih"]), TypeError),
        ("w_ih float16", "w_ih", lambda a: a["w_ih"].astype(np.float16), TypeError),
        ("w_ih None", "w_ih", lambda a: None, TypeError),
        ("w_hh columns", "w_hh", lambda a: np.zeros((4 * (H + 1), H + 1), np.float32),
         ValueError),
        ("w_hh rows", "w_hh", lambda a: np.zeros((4 * H + 1, H), np.float32), ValueError),
        ("w_hh fortran", "w_hh", lambda a: np.asfortranarray(a["w_hh"]), ValueError),
        ("w_hh huge H", "w_hh", lambda a: np.empty((0, 2**31), np.float32), ValueError),
        ("b_ih shape", "b_ih", lambda a: a["b_ih"][:-1].copy(), ValueError),
        ("b_ih 2-D", "b_ih", lambda a: a["b_ih"][None].copy(), ValueError),
        ("b_ih alone", "b_hh", lambda a: None, ValueError),
        ("b_hh dtype", "b_hh", lambda a: f64(a["b_hh"]), TypeError),
        ("work read-only", "work", lambda a: readonly(a["work"]), ValueError),
        ("work too small", "work", lambda a: a["work"][:-1].copy(), ValueError),
        ("work empty", "work", lambda a: np.empty(0, np.float32), ValueError),
        ("work 2-D", "work", lambda a: a["work"][None].copy(), ValueError),
        ("work dtype", "work", lambda a: np.empty(a["work"].shape, np.float64), TypeError),
        ("work None", "work", lambda a: None, TypeError),
        ("work non-contiguous", "work", lambda a: np.empty(2 * a["work"].size, np.float32)[::2],
         ValueError),
        ("work misaligned", "work", lambda a: misaligned(a["work"]), ValueError),
        ("cell code", "cell", lambda a: 7, ValueError),
        ("cell code negative", "cell", lambda a: -1, ValueError),
    ]


@pytest.mark.parametrize("case", bad_binding_cases(), ids=lambda c: c[0])
def test_binding_rejects_bad_arrays(case):
    name, arg, replace, exc = case
    args = binding_args()
    args[arg] = replace(args)
    with pytest.raises(exc):
        call(args)
    # and a good call still works afterwards
    h, c = call(binding_args())
    assert np.isfinite(h).all() and np.isfinite(c).all()


def test_binding_rejects_a_cell_state_for_hidden_state_cells():
    args = binding_args("gru")
    args["c"] = np.zeros((2, H), np.float32)
    with pytest.raises(ValueError, match="c"):
        call(args)


def test_binding_work_of_a_smaller_batch_is_too_small():
    args = binding_args(B=5)
    args["work"] = binding_args(B=1)["work"]
    with pytest.raises(ValueError, match="work"):
        call(args)


def test_binding_does_not_write_its_inputs():
    args = binding_args()
    for k in ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"):
        args[k].flags.writeable = False
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray) and k != "work"}
    call(args)
    for k, v in before.items():
        np.testing.assert_array_equal(args[k], v, err_msg=k)


def test_binding_accepts_larger_work():
    args = binding_args()
    expected = call(args)
    args["work"] = np.full(args["work"].size + 1000, np.nan, np.float32)
    for got, exp in zip(call(args), expected):
        np.testing.assert_array_equal(got, exp)
