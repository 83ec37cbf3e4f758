"""Bad input gets a clear exception naming the argument; odd but valid input just works.

Three parts:

1. The public API (layers, cells, the Bidirectional wrapper): every bad input
   raises ValueError or TypeError whose message names the argument
   (pytest.raises(..., match=...)), and a failed load_state_dict changes nothing.
2. Inputs that must just work and give the same numbers as the clean version:
   non-contiguous, Fortran-ordered, integer, big-endian, unaligned and
   read-only arrays, Python lists, float64 into a float32 layer, lengths as a
   list or any integer array; the caller's arrays are never modified.
3. The private binding fastrnn._kernels.forward/backward, the last line of
   memory safety: wrong dtypes, non-contiguous or read-only arrays, mismatched
   shapes, too-small buffers and out-of-range offsets or lengths raise, never
   crash the process.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

BACKENDS = ["c", "numpy"]
T, B, I, H = 5, 2, 3, 4


def layer_of(kind, **kw):
    kw.setdefault("dtype", np.float64)
    if kind == "rnn":
        return fastrnn.RNN(I, H, **kw)
    if kind == "lstm":
        return fastrnn.LSTM(I, H, **kw)
    return fastrnn.GRU(I, H, **kw)


def xs(*shape, seed=0):
    """A random float64 array of the shape."""
    return np.random.default_rng(seed).standard_normal(shape)


def name(arg):
    """A regex matching the argument's name as a word."""
    return rf"(?<![\w.]){re.escape(arg)}(?!\w)"


# ===================================================== 1. public API errors

# ------------------------------------------------------------- x

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", [(I,), (1, T, B, I), ()], ids=["1d", "4d", "0d"])
def test_x_of_wrong_rank(kind, shape):
    with pytest.raises(ValueError, match=name("x")):
        layer_of(kind)(np.zeros(shape))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("shape", [(T, B, I + 1), (T, I - 1)], ids=["batched", "unbatched"])
def test_x_with_wrong_feature_size(shape, batch_first):
    with pytest.raises(ValueError, match="input_size") as e:
        layer_of("gru", batch_first=batch_first)(np.zeros(shape))
    assert re.search(name("x"), str(e.value)), str(e.value)


@pytest.mark.parametrize("shape", [(0, B, I), (T, 0, I), (0, I), (0,)],
                         ids=["T=0", "B=0", "unbatched T=0", "empty list"])
def test_empty_x(shape):
    with pytest.raises(ValueError, match=name("x")):
        layer_of("lstm")(np.zeros(shape))


@pytest.mark.parametrize("x", [np.zeros((T, B, I), complex), np.full((T, B, I), "a"),
                               np.zeros((T, B, I), object), "abc", None],
                         ids=["complex", "str-array", "object", "str", "None"])
def test_x_not_real_numbers(x):
    with pytest.raises(TypeError, match=name("x")):
        layer_of("rnn")(x)


def test_x_ragged_list_names_x():
    with pytest.raises(ValueError, match=name("x")):
        layer_of("rnn")([[[1.0, 2.0, 3.0]], [[1.0, 2.0]]])


# ------------------------------------------------------------- states

@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kind,which", [("rnn", "h0"), ("gru", "h0"), ("lstm", "h0"),
                                        ("lstm", "c0")])
def test_state_of_wrong_shape(kind, which, unbatched):
    layer = layer_of(kind, num_layers=2)
    x = xs(T, I) if unbatched else xs(T, B, I)
    good = np.zeros((2, H) if unbatched else (2, B, H))
    bads = [np.zeros((1, H)), np.zeros((2, B, H)), np.zeros((2, H + 1))] if unbatched else \
        [np.zeros((1, B, H)), np.zeros((2, B + 1, H)), np.zeros((2, B, H - 1)), np.zeros((2, H))]
    for bad in bads:
        with pytest.raises(ValueError, match=name(which)):
            if kind == "lstm":
                layer(x, (bad, good) if which == "h0" else (good, bad))
            else:
                layer(x, bad)


@pytest.mark.parametrize("state", [np.zeros((1, B, H)), [np.zeros((1, B, H))],
                                   (np.zeros((1, B, H)),) * 3, "hc"],
                         ids=["array", "list-of-1", "3-tuple", "str"])
def test_lstm_state_not_a_pair(state):
    with pytest.raises(TypeError, match=name("state")):
        layer_of("lstm")(xs(T, B, I), state)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_state_not_real_numbers(kind):
    layer = layer_of(kind)
    bad = np.zeros((1, B, H), complex)
    with pytest.raises(TypeError, match=name("h0")):
        layer(xs(T, B, I), (bad, None) if kind == "lstm" else bad)


# ------------------------------------------------------------- lengths

@pytest.mark.parametrize("lengths", [[T] * (B + 1), [[T] * B], T, [], np.array([[T], [T]])],
                         ids=["B+1", "2-D", "scalar", "empty", "column"])
def test_lengths_of_wrong_shape(lengths):
    with pytest.raises(ValueError, match=name("lengths")):
        layer_of("gru")(xs(T, B, I), lengths=lengths)


def test_unbatched_lengths_of_wrong_shape():
    with pytest.raises(ValueError, match=name("lengths")):
        layer_of("gru")(xs(T, I), lengths=[2, 3])


@pytest.mark.parametrize("lengths", [[1.5, 2], ["a", "b"], [True, True], [None, 2],
                                     [np.nan, 2], np.array([2, 3], complex)],
                         ids=["1.5", "str", "bool", "None", "nan", "complex"])
def test_lengths_not_integers(lengths):
    with pytest.raises(TypeError, match=name("lengths")):
        layer_of("rnn")(xs(T, B, I), lengths=lengths)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [[T + 1, 1], [-1, T], [2**40, 1],
                                     np.array([2**63, 1], np.uint64)],
                         ids=["T+1", "negative", "2**40", "uint64-huge"])
def test_lengths_out_of_range(lengths, batch_first):
    x = xs(B, T, I) if batch_first else xs(T, B, I)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=name("lengths")):
            layer_of("lstm", backend=backend, batch_first=batch_first)(x, lengths=lengths)


@pytest.mark.parametrize("kw", [{"direction": "sideways"},
                                {"direction": "reverse", "bidirectional": True},
                                {"direction": "forward", "bidirectional": True}])
def test_bad_direction(kw):
    with pytest.raises(ValueError, match="direction"):
        layer_of("gru", **kw)


def test_unbatched_length_out_of_range():
    for k in (T + 1, -3):
        with pytest.raises(ValueError, match=name("lengths")):
            layer_of("rnn")(xs(T, I), lengths=k)


# ------------------------------------------------------------- backward

@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_d_output_of_wrong_shape(kind, unbatched):
    layer = layer_of(kind, bidirectional=True)
    layer(xs(T, I) if unbatched else xs(T, B, I))
    bads = [np.zeros((T, H)), np.zeros((T + 1, 2 * H)), np.zeros((T, B, 2 * H))] if unbatched \
        else [np.zeros((T, B, H)), np.zeros((T, B + 1, 2 * H)), np.zeros((B, T, 2 * H)),
              np.zeros((T, 2 * H))]
    for bad in bads:
        with pytest.raises(ValueError, match=name("d_output")):
            layer.backward(bad)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_d_output_not_real_numbers(kind):
    layer = layer_of(kind)
    layer(xs(T, B, I))
    with pytest.raises(TypeError, match=name("d_output")):
        layer.backward(np.full((T, B, H), "a"))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_d_h_n_of_wrong_shape(kind):
    layer = layer_of(kind)
    layer(xs(T, B, I))
    dy, bad = np.zeros((T, B, H)), np.zeros((2, B, H))
    with pytest.raises(ValueError, match=name("d_h_n")):
        layer.backward(dy, (bad, None) if kind == "lstm" else bad)
    if kind == "lstm":
        with pytest.raises(ValueError, match=name("d_c_n")):
            layer.backward(dy, (None, bad))
        with pytest.raises(TypeError, match=name("d_state")):
            layer.backward(dy, np.zeros((1, B, H)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_backward_before_any_forward(kind, backend):
    with pytest.raises(ValueError, match="backward.*forward"):
        layer_of(kind, backend=backend).backward(np.zeros((T, B, H)))


@pytest.mark.parametrize("how", ["training=False", "eval()", "train-then-infer",
                                 "backend-changed"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_without_a_training_forward(backend, how):
    layer = layer_of("lstm", backend=backend)
    x = xs(T, B, I)
    if how == "training=False":
        layer(x, training=False)
    elif how == "eval()":
        layer.eval()
        layer(x)
    elif how == "train-then-infer":
        layer(x)                      # a training forward ...
        layer(x, training=False)      # ... forgotten by the inference forward after it
    else:
        layer(x)
        layer.backend = "numpy" if backend == "c" else "c"
    with pytest.raises(ValueError, match="backward.*forward"):
        layer.backward(np.zeros((T, B, H)))


def test_eval_then_train_allows_backward_again():
    layer = layer_of("gru").eval()
    layer(xs(T, B, I))
    layer.train()
    layer(xs(T, B, I))
    dx, dh0 = layer.backward(np.ones((T, B, H)))
    assert dx.shape == (T, B, I) and dh0.shape == (1, B, H)


# ------------------------------------------------------------- cells

@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.GRUCell, fastrnn.LSTMCell])
def test_cell_bad_inputs(cls):
    cell = cls(I, H, dtype=np.float64)
    lstm = cls is fastrnn.LSTMCell

    def call(x, h=None):
        return cell(x, None if h is None else ((h, None) if lstm else h))

    with pytest.raises(ValueError, match=name("x")):
        call(np.zeros((1, B, I)))
    with pytest.raises(ValueError, match=name("x")):
        call(np.zeros(()))
    with pytest.raises(ValueError, match="input_size"):
        call(np.zeros((B, I + 1)))
    with pytest.raises(ValueError, match="input_size"):
        call(np.zeros(I + 1))
    with pytest.raises(ValueError, match=name("x")):
        call(np.zeros((0, I)))
    with pytest.raises(TypeError, match=name("x")):
        call(np.zeros((B, I), complex))
    with pytest.raises(ValueError, match=name("h")):
        call(np.zeros((B, I)), np.zeros((B + 1, H)))
    with pytest.raises(ValueError, match=name("h")):
        call(np.zeros(I), np.zeros((1, H)))      # unbatched x takes an (H,) state
    with pytest.raises(ValueError, match=name("h")):
        call(np.zeros((B, I)), np.zeros(H))      # batched x takes a (B, H) state
    if lstm:
        with pytest.raises(ValueError, match=name("c")):
            cell(np.zeros((B, I)), (None, np.zeros((B, H + 1))))
        with pytest.raises(TypeError, match=name("state")):
            cell(np.zeros((B, I)), np.zeros((B, H)))


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.GRUCell, fastrnn.LSTMCell])
def test_cell_gradient_of_wrong_shape(cls):
    cell = cls(I, H, dtype=np.float64)
    cell(np.zeros((B, I)))
    bad = np.zeros((B + 1, H))
    if cls is fastrnn.LSTMCell:
        with pytest.raises(ValueError, match=name("d_h")):
            cell.backward((bad, None))
        with pytest.raises(ValueError, match=name("d_c")):
            cell.backward((None, bad))
    else:
        with pytest.raises(ValueError, match=name("d_h")):
            cell.backward(bad)


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.LSTMCell])
def test_cell_backward_before_any_call(cls):
    cell = cls(I, H)
    d = np.zeros((B, H))
    with pytest.raises(ValueError, match="backward.*forward"):
        cell.backward((d, d) if cls is fastrnn.LSTMCell else d)


def test_cell_backward_after_inference_call_batch_of_one():
    cell = fastrnn.GRUCell(I, H)
    cell(np.zeros((1, I)), training=False)
    with pytest.raises(ValueError, match="backward.*forward"):
        cell.backward(np.zeros((1, H)))


def test_cell_backward_after_inference_call_batch_of_two():
    cell = fastrnn.GRUCell(I, H)
    cell(np.zeros((B, I)), training=False)
    with pytest.raises(ValueError, match="backward.*forward"):
        cell.backward(np.zeros((B, H)))


# ------------------------------------------------------------- state_dict

def _sd_cases(sd):
    first = next(iter(sd))
    last = list(sd)[-1]
    missing = {k: v for k, v in sd.items() if k != last}
    unexpected = {**sd, "weight_ih_l9": sd[first]}
    # a valid first entry followed by a wrongly shaped one: nothing may be half-loaded
    shaped = {k: v + 1 for k, v in sd.items()}
    shaped[last] = np.zeros(sd[last].shape + (1,))
    not_real = {k: v + 1 for k, v in sd.items()}
    not_real[last] = np.full(sd[last].shape, "a")
    return {"missing": (missing, ValueError, re.escape(last)),
            "unexpected": (unexpected, ValueError, "weight_ih_l9"),
            "wrong-shape": (shaped, ValueError, re.escape(last)),
            "not-real": (not_real, TypeError, re.escape(last))}


@pytest.mark.parametrize("case", ["missing", "unexpected", "wrong-shape", "not-real"])
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_load_state_dict_failures_change_nothing(kind, case):
    layer = layer_of(kind, num_layers=2, bidirectional=True, seed=1)
    before = layer.state_dict()
    sd, exc, pattern = _sd_cases(before)[case]
    with pytest.raises(exc, match=pattern):
        layer.load_state_dict(sd)
    after = layer.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_cell_load_state_dict_failures():
    cell = fastrnn.LSTMCell(I, H, dtype=np.float64, seed=2)
    before = cell.state_dict()
    assert set(before) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    with pytest.raises(ValueError, match="bias_hh"):
        cell.load_state_dict({k: v for k, v in before.items() if k != "bias_hh"})
    bad = {k: v + 1 for k, v in before.items()}
    bad["weight_hh"] = np.zeros((4 * H, H + 1))
    with pytest.raises(ValueError, match="weight_hh"):
        cell.load_state_dict(bad)
    for k, v in cell.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_load_state_dict_none():
    with pytest.raises(TypeError, match="state_dict"):
        layer_of("gru").load_state_dict(None)


# ------------------------------------------------------------- constructor arguments

def test_unknown_nonlinearity():
    for bad in ("sigmoid", "Tanh", None):
        with pytest.raises(ValueError, match="nonlinearity"):
            fastrnn.RNN(I, H, nonlinearity=bad)
        with pytest.raises(ValueError, match="nonlinearity"):
            fastrnn.RNNCell(I, H, nonlinearity=bad)


def test_bidirectional_wrapper_arguments():
    for bad in ("max", "Concat", None):
        with pytest.raises(ValueError, match="merge_mode"):
            fastrnn.Bidirectional(fastrnn.GRU(I, H), merge_mode=bad)
    with pytest.raises(ValueError, match=name("layer")):
        fastrnn.Bidirectional(fastrnn.GRU(I, H, bidirectional=True))
    with pytest.raises(ValueError, match="direction"):
        fastrnn.Bidirectional(fastrnn.GRU(I, H, direction="reverse"))
    with pytest.raises(TypeError, match=name("layer")):
        fastrnn.Bidirectional(fastrnn.GRUCell(I, H))


@pytest.mark.parametrize("mode", [
    "sum", "ave", "mul", "concat"])
def test_bidirectional_wrapper_d_output_of_wrong_shape(mode):
    bi = fastrnn.Bidirectional(fastrnn.GRU(I, H, dtype=np.float64), merge_mode=mode)
    out, _ = bi(xs(T, B, I))
    with pytest.raises(ValueError, match=name("d_output")) as e:
        bi.backward(np.zeros((T, B, out.shape[2] + 1)))
    assert str(out.shape) in str(e.value), f"{e.value} does not state the expected {out.shape}"


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU, fastrnn.RNNCell,
                                 fastrnn.LSTMCell, fastrnn.GRUCell])
def test_unknown_backend(cls):
    with pytest.raises(ValueError, match="backend"):
        cls(I, H, backend="cuda")
    obj = cls(I, H)
    with pytest.raises(ValueError, match="backend"):
        obj.backend = "C"
    assert obj.backend == "c"


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128, "int64"])
@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU, fastrnn.GRUCell])
def test_bad_dtype(cls, dtype):
    with pytest.raises(TypeError, match="dtype"):
        cls(I, H, dtype=dtype)


def test_unknown_dtype_name():
    with pytest.raises(TypeError, match="dtype"):
        fastrnn.GRU(I, H, dtype="nonsense")


@pytest.mark.parametrize("arg,value", [("input_size", 0), ("input_size", -2),
                                       ("input_size", 3.0), ("input_size", True),
                                       ("hidden_size", 0), ("hidden_size", -1),
                                       ("hidden_size", "4"), ("num_layers", 0),
                                       ("num_layers", -1)])
@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU])
def test_non_positive_sizes(cls, arg, value):
    kw = dict(input_size=I, hidden_size=H, num_layers=1)
    kw[arg] = value
    with pytest.raises((ValueError, TypeError), match=arg):
        cls(**kw)


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
def test_cell_non_positive_sizes(cls):
    with pytest.raises(ValueError, match="input_size"):
        cls(0, H)
    with pytest.raises(ValueError, match="hidden_size"):
        cls(I, -3)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None])
@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU])
def test_dropout_outside_unit_interval(cls, dropout):
    with pytest.raises((ValueError, TypeError), match="dropout"):
        cls(I, H, num_layers=2, dropout=dropout)


@pytest.mark.parametrize("proj_size", [H, H + 1, -1, 1.5, True])
def test_lstm_proj_size_out_of_range(proj_size):
    with pytest.raises(ValueError, match="proj_size"):
        fastrnn.LSTM(I, H, proj_size=proj_size)


def test_projected_lstm_state_shapes_are_checked():
    lstm = fastrnn.LSTM(I, H, proj_size=2)
    with pytest.raises(ValueError, match=name("h0")):
        lstm(xs(T, B, I), (np.zeros((1, B, H)), np.zeros((1, B, H))))
    with pytest.raises(ValueError, match=name("c0")):
        lstm(xs(T, B, I), (np.zeros((1, B, 2)), np.zeros((1, B, 2))))


# ================================================ 2. inputs that must just work

def run_lstm(layer, x, state=None, lengths=None, dy=None, d_state=None):
    """Forward and backward of a fresh-gradient layer; all results in one dict."""
    out, (h_n, c_n) = layer(x, state, lengths=lengths)
    layer.zero_grad()
    dx, (dh0, dc0) = layer.backward(dy, d_state)
    res = dict(output=out, h_n=h_n, c_n=c_n, dx=dx, dh0=dh0, dc0=dc0)
    res.update({f"grad {k}": v.copy() for k, v in layer.grads.items()})
    return res


def assert_same(got, expected, rtol=1e-12, atol=1e-13):
    assert set(got) == set(expected)
    for k in expected:
        g, e = np.asarray(got[k]), np.asarray(expected[k])
        assert g.shape == e.shape, f"{k}: shape {g.shape}, expected {e.shape}"
        assert g.dtype == e.dtype, f"{k}: dtype {g.dtype}, expected {e.dtype}"
        err = np.max(np.abs(g - e), initial=0.0)
        assert np.allclose(g, e, rtol=rtol, atol=atol), f"{k}: max abs error {err:.3e}"


def clean_problem(dtype=np.float64):
    """Inputs, states and upstream gradients of a 2-layer bidirectional LSTM, ragged."""
    rng = np.random.default_rng(5)
    D, L = 2, 2
    return dict(x=rng.standard_normal((T, B, I)).astype(dtype),
                h0=rng.standard_normal((D * L, B, H)).astype(dtype),
                c0=rng.standard_normal((D * L, B, H)).astype(dtype),
                lengths=np.array([3, T], np.int64),
                dy=rng.standard_normal((T, B, D * H)).astype(dtype),
                dh_n=rng.standard_normal((D * L, B, H)).astype(dtype),
                dc_n=rng.standard_normal((D * L, B, H)).astype(dtype))


def odd_layer(backend, dtype=np.float64):
    return fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=dtype, backend=backend,
                        seed=3)


def strided(a):
    """A copy of a as a non-contiguous view (every other element of the last axis)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    view = big[..., ::2]
    assert not view.flags.c_contiguous
    return view


def unaligned(a):
    """A copy of a whose data starts one byte into a buffer (misaligned)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
    out[...] = a
    assert not out.flags.aligned
    return out


def readonly(a):
    """A read-only copy of a."""
    a = np.array(a)
    a.flags.writeable = False
    return a


VARIANTS = {
    "strided": strided,
    "step-slice": lambda a: np.repeat(a, 2, axis=0)[::2],
    "fortran": np.asfortranarray,
    "transposed-view": lambda a: np.ascontiguousarray(a.transpose(2, 1, 0)).transpose(2, 1, 0),
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "unaligned": unaligned,
    "read-only": readonly,
    "list": lambda a: a.tolist(),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_arrays_give_the_clean_numbers(backend, variant):
    """Every array argument (x, states, upstream gradients) in the odd form at once."""
    p = clean_problem()
    expected = run_lstm(odd_layer(backend), p["x"], (p["h0"], p["c0"]), p["lengths"],
                        p["dy"], (p["dh_n"], p["dc_n"]))
    f = VARIANTS[variant]
    odd = {k: f(v) for k, v in p.items() if k != "lengths"}
    got = run_lstm(odd_layer(backend), odd["x"], (odd["h0"], odd["c0"]), p["lengths"],
                   odd["dy"], (odd["dh_n"], odd["dc_n"]))
    assert_same(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_x_gives_the_numbers_of_its_float_conversion(backend):
    x = np.random.default_rng(6).integers(-3, 4, (T, B, I))
    for xi in (x, x.astype(np.int8), x.astype(np.uint8) * 0 + 2, x.astype(bool)):
        clean = odd_layer(backend)(np.asarray(xi, np.float64))
        got = odd_layer(backend)(xi)
        assert_same({"output": got[0], "h_n": got[1][0], "c_n": got[1][1]},
                    {"output": clean[0], "h_n": clean[1][0], "c_n": clean[1][1]})


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_into_a_float32_layer(backend):
    p = clean_problem(np.float64)
    p32 = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in p.items()}
    expected = run_lstm(odd_layer(backend, np.float32), p32["x"], (p32["h0"], p32["c0"]),
                        p32["lengths"], p32["dy"], (p32["dh_n"], p32["dc_n"]))
    got = run_lstm(odd_layer(backend, np.float32), p["x"], (p["h0"], p["c0"]), p["lengths"],
                   p["dy"], (p["dh_n"], p["dc_n"]))
    assert_same(got, expected, rtol=1e-6, atol=1e-6)
    assert got["output"].dtype == np.float32 and got["dx"].dtype == np.float32


@pytest.mark.parametrize("lengths", [[3, T], (3, T), np.array([3, T], np.int32),
                                     np.array([3, T], np.int16), np.array([3, T], np.uint8),
                                     np.array([3.0, T]), readonly(np.array([3, T], np.intc)),
                                     np.array([3, 0, T, 0], np.intc)[::2]],
                         ids=["list", "tuple", "int32", "int16", "uint8", "integral-float",
                              "read-only", "strided"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_in_any_integer_form(backend, lengths):
    p = clean_problem()
    args = lambda ln: (p["x"], (p["h0"], p["c0"]), ln, p["dy"], (p["dh_n"], p["dc_n"]))
    expected = run_lstm(odd_layer(backend), *args(p["lengths"]))
    assert_same(run_lstm(odd_layer(backend), *args(lengths)), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_length_as_int_or_list(backend):
    layer = layer_of("gru", backend=backend)
    x = xs(T, I)
    expected, _ = layer(x, lengths=np.array([3]))
    for k in (3, [3], np.int32(3), np.array(3, np.int64)):
        out, _ = layer(x, lengths=k)
        np.testing.assert_array_equal(out, expected, err_msg=repr(k))
    assert np.all(expected[3:] == 0) and np.all(expected[:3] != 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_from_odd_arrays(backend):
    """Read-only, non-contiguous, float32 and list entries load as their values."""
    src = odd_layer(backend)
    sd = src.state_dict()
    forms = [readonly, strided, lambda a: a.astype(np.float32).astype(np.float64),
             lambda a: a.tolist(), np.asfortranarray]
    odd = {k: forms[i % len(forms)](v) for i, (k, v) in enumerate(sd.items())}
    dst = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=99,
                       backend=backend)
    dst.load_state_dict(odd)
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v, np.asarray(odd[k], np.float64), err_msg=k)
    # the layer keeps its own arrays: changing the source afterwards changes nothing
    dst.load_state_dict(sd)
    for v in sd.values():
        v[...] = 7.0
    for k, v in dst.state_dict().items():
        assert not np.any(v == 7.0), f"{k} shares memory with the loaded array"


@pytest.mark.parametrize("backend", BACKENDS)
def test_caller_arrays_are_never_modified(backend):
    p = clean_problem()
    copies = {k: v.copy() for k, v in p.items()}
    run_lstm(odd_layer(backend), p["x"], (p["h0"], p["c0"]), p["lengths"], p["dy"],
             (p["dh_n"], p["dc_n"]))
    for k, v in copies.items():
        np.testing.assert_array_equal(p[k], v, err_msg=f"{k} was modified")


class ArrayLike:
    """An array-like that hands out its own buffer (as e.g. torch.Tensor does)."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a



@pytest.mark.parametrize("container", [
    "ndarray", "memoryview", "__array__"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_uses_the_forward_inputs_even_if_the_caller_changes_them(backend, container):
    p = clean_problem()
    expected = run_lstm(odd_layer(backend), p["x"], (p["h0"], p["c0"]), p["lengths"],
                        p["dy"], (p["dh_n"], p["dc_n"]))
    layer = odd_layer(backend)
    x, h0, c0 = p["x"].copy(), p["h0"].copy(), p["c0"].copy()
    x_in = {"ndarray": x, "memoryview": memoryview(x), "__array__": ArrayLike(x)}[container]
    out, (h_n, c_n) = layer(x_in, (h0, c0), lengths=p["lengths"])
    x[...], h0[...], c0[...] = 9.0, -9.0, 9.0   # reuse of the caller's buffers
    layer.zero_grad()
    dx, (dh0, dc0) = layer.backward(p["dy"], (p["dh_n"], p["dc_n"]))
    got = dict(output=out, h_n=h_n, c_n=c_n, dx=dx, dh0=dh0, dc0=dc0)
    got.update({f"grad {k}": v.copy() for k, v in layer.grads.items()})
    assert_same(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_are_not_overwritten_by_later_calls(backend):
    layer = odd_layer(backend)
    p = clean_problem()
    out1, (h1, c1) = layer(p["x"])
    keep = out1.copy(), h1.copy(), c1.copy()
    dx1, (dh1, dc1) = layer.backward(p["dy"])
    keep_g = dx1.copy(), dh1.copy(), dc1.copy()
    layer(2 * p["x"], training=False)
    layer(3 * p["x"])
    layer.backward(-p["dy"])
    for a, b in zip((out1, h1, c1, dx1, dh1, dc1), keep + keep_g):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bidirectional", [
    False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_d_output_none_equals_zeros_c_backend(kind, bidirectional):
    _check_d_output_none(kind, bidirectional, "c")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_d_output_none_equals_zeros_numpy_backend(kind, bidirectional):
    _check_d_output_none(kind, bidirectional, "numpy")


def _check_d_output_none(kind, bidirectional, backend):
    """backward(None, d_h_n) is backward(zeros, d_h_n) (the cells rely on it)."""
    D = 2 if bidirectional else 1
    x, S = xs(T, B, I), xs(2 * D, B, H, seed=1)
    results = []
    for dy in (np.zeros((T, B, D * H)), None):
        layer = layer_of(kind, num_layers=2, bidirectional=bidirectional, backend=backend,
                         seed=4)
        layer(x)
        d_state = (S, S) if kind == "lstm" else S
        dx, dh0 = layer.backward(dy, d_state)
        results.append((dx, dh0, {k: v.copy() for k, v in layer.grads.items()}))
    (dx0, dh00, g0), (dx1, dh01, g1) = results
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-14)
    for a, b in zip(dh01 if kind == "lstm" else (dh01,), dh00 if kind == "lstm" else (dh00,)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-12, atol=1e-14, err_msg=k)


# =========================================== 3. the private kernel binding

KERNEL_CELLS = ["rnn_tanh", "lstm", "gru", "gru_reset_before"]
KT, KB, KI, KH = 4, 3, 2, 3


def kernel_forward_args(cell, dtype=np.float64, batch_first=False):
    """Valid arguments of _kernels.forward: the second direction of a
    bidirectional layer (y_offset = H into y of 2H columns), ragged lengths."""
    G = _kernels.num_gates(cell)
    rng = np.random.default_rng(7)
    xshape = (KB, KT, KI) if batch_first else (KT, KB, KI)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return dict(cell=cell, x=r(*xshape), h0=r(KB, KH), c0=r(KB, KH), w_ih=r(G * KH, KI),
                w_hh=r(G * KH, KH), b_ih=r(G * KH), b_hh=r(G * KH), w_hr=None,
                lengths=np.array([2, KT, 1], np.intc), y=np.zeros(xshape[:2] + (2 * KH,), dtype),
                y_offset=KH, h_n=np.zeros((KB, KH), dtype), c_n=np.zeros((KB, KH), dtype),
                cache=np.zeros(_kernels.cache_size(cell, KT, KB, KI, KH), dtype),
                work=np.zeros(_kernels.forward_work_size(cell, KT, KB, KI, KH, True), dtype),
                batch_first=batch_first, reverse=True)


def kernel_backward_args(cell, dtype=np.float64):
    """Valid arguments of _kernels.backward, after the forward that fills the cache."""
    f = kernel_forward_args(cell, dtype)
    _kernels.forward(**f)
    G = _kernels.num_gates(cell)

    def z(*shape):
        return np.zeros(shape, dtype)

    return dict(cell=cell, dx=np.zeros_like(f["x"]), accumulate_dx=False, dh0=z(KB, KH),
                dc0=z(KB, KH), dw_ih=z(G * KH, KI), dw_hh=z(G * KH, KH), db_ih=z(G * KH),
                db_hh=z(G * KH), dw_hr=None, dy=np.ones_like(f["y"]), y_offset=KH,
                dh_n=np.ones((KB, KH), dtype), dc_n=np.ones((KB, KH), dtype),
                cache=f["cache"], x=f["x"], w_ih=f["w_ih"], w_hh=f["w_hh"], w_hr=None,
                lengths=f["lengths"],
                work=z(_kernels.backward_work_size(cell, KT, KB, KI, KH)),
                batch_first=False, reverse=True)


@pytest.mark.parametrize("w_hr", [np.zeros((2, KH)), np.zeros((2, KH + 1)), np.zeros(KH)],
                         ids=["P-not-R", "wrong-H", "1-D"])
def test_kernel_projection_mismatch(w_hr):
    """A projection whose size disagrees with w_hh, h0 or y is refused before C runs."""
    for cell in ("lstm", "gru"):
        f = kernel_forward_args(cell)
        with pytest.raises(ValueError):
            _kernels.forward(**dict(f, w_hr=w_hr))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", KERNEL_CELLS)
def test_kernel_valid_arguments_match_the_reference(cell, dtype):
    """The baseline every bad-argument case below departs from is itself correct."""
    from fastrnn import reference
    f = kernel_forward_args(cell, dtype)
    _kernels.forward(**f)
    c0 = f["c0"] if cell == "lstm" else None
    y, h_n, c_n, cache = reference.layer_forward(cell, f["x"], f["h0"], c0, f["w_ih"],
                                                 f["w_hh"], f["b_ih"], f["b_hh"],
                                                 lengths=f["lengths"], reverse=True)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f["y"][:, :, KH:], y, **tol)
    assert np.all(f["y"][:, :, :KH] == 0), "columns outside [y_offset, y_offset + H) written"
    np.testing.assert_allclose(f["h_n"], h_n, **tol)
    if cell == "lstm":
        np.testing.assert_allclose(f["c_n"], c_n, **tol)
    b = kernel_backward_args(cell, dtype)
    _kernels.backward(**b)
    dx, dh0, dc0, grads = reference.layer_backward(
        cell, cache, b["dy"][:, :, KH:], b["dh_n"], b["dc_n"] if cell == "lstm" else None)
    np.testing.assert_allclose(b["dx"], dx, **tol)
    np.testing.assert_allclose(b["dh0"], dh0, **tol)
    if cell == "lstm":
        np.testing.assert_allclose(b["dc0"], dc0, **tol)
    for k, v in grads.items():
        if v is None:   # a parameter the call does not have (projection, peepholes)
            assert b.get(f"d{k}") is None, k
            continue
        np.testing.assert_allclose(b[f"d{k}"], v, err_msg=k, **tol)


def _z(a, *shape):
    """zeros of the arguments' dtype (the dtype of the valid w_ih)."""
    return np.zeros(shape, a["w_ih"].dtype)


def _other(arr):
    """arr in the other float dtype."""
    return arr.astype(np.float32 if arr.dtype == np.float64 else np.float64)


def _big_endian(arr):
    return arr.astype(arr.dtype.newbyteorder(">"))


def _fortran(arr):
    f = np.asfortranarray(arr)
    assert not f.flags.c_contiguous
    return f


def _ro(arr):
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


def _set(**changes):
    """A case's change: each value is a function of the valid arguments."""
    def change(a):
        a.update({k: f(a) for k, f in changes.items()})
    return change


# (case id, change to the valid arguments, exception, regex the message must match)
FORWARD_CASES = [
    ("x-other-dtype", _set(x=lambda a: _other(a["x"])), TypeError, "dtype"),
    ("x-int64", _set(x=lambda a: a["x"].astype(np.int64)), TypeError, "x"),
    ("x-big-endian", _set(x=lambda a: _big_endian(a["x"])), TypeError, "x"),
    ("x-list", _set(x=lambda a: a["x"].tolist()), ValueError, "x"),
    ("x-2d", _set(x=lambda a: a["x"][0]), ValueError, "x"),
    ("x-fortran", _set(x=lambda a: _fortran(a["x"])), ValueError, "x.*contiguous"),
    ("x-strided", _set(x=lambda a: np.repeat(a["x"], 2, axis=2)[..., ::2]), ValueError,
     "x.*contiguous"),
    ("x-empty", _set(x=lambda a: a["x"][:0]), ValueError, "T=0"),
    ("x-wrong-I", _set(x=lambda a: _z(a, KT, KB, KI + 1)), ValueError, "w_ih"),
    ("x-batch-first-mismatch", _set(batch_first=lambda a: True), ValueError, "h0|y"),
    ("h0-other-dtype", _set(h0=lambda a: _other(a["h0"])), TypeError, "h0"),
    ("h0-wrong-shape", _set(h0=lambda a: _z(a, KB + 1, KH)), ValueError, "h0"),
    ("h0-fortran", _set(h0=lambda a: _fortran(a["h0"])), ValueError, "h0"),
    ("h0-None", _set(h0=lambda a: None), TypeError, "h0"),
    ("w_ih-wrong-shape", _set(w_ih=lambda a: a["w_ih"][:, :1].copy()), ValueError, "w_ih"),
    ("w_ih-fortran", _set(w_ih=lambda a: _fortran(a["w_ih"])), ValueError, "w_ih"),
    ("w_hh-1d", _set(w_hh=lambda a: a["w_hh"].ravel()), ValueError, "w_hh"),
    ("w_hh-list", _set(w_hh=lambda a: a["w_hh"].tolist()), ValueError, "w_hh"),
    ("w_hh-too-wide", _set(w_hh=lambda a: _z(a, a["w_hh"].shape[0], KH + 1)), ValueError,
     "h0|w_hh|y_offset"),
    ("w_hh-too-tall", _set(w_hh=lambda a: _z(a, a["w_hh"].shape[0] + 1, KH)), ValueError,
     "w_hh"),
    ("b_ih-wrong-shape", _set(b_ih=lambda a: a["b_ih"][:-1].copy()), ValueError, "b_ih"),
    ("b_ih-only", _set(b_hh=lambda a: None), ValueError, "b_ih"),
    ("b_hh-other-dtype", _set(b_hh=lambda a: _other(a["b_hh"])), TypeError, "b_hh"),
    ("y-too-narrow", _set(y=lambda a: _z(a, KT, KB, 2 * KH - 1)), ValueError, "y_offset"),
    ("y-narrower-than-H", _set(y=lambda a: _z(a, KT, KB, KH - 1), y_offset=lambda a: 0),
     ValueError, "y_offset"),
    ("y-wrong-rows", _set(y=lambda a: _z(a, KT, KB + 1, 2 * KH)), ValueError, "y"),
    ("y-2d", _set(y=lambda a: _z(a, KT * KB, 2 * KH)), ValueError, "y"),
    ("y-read-only", _set(y=lambda a: _ro(a["y"])), ValueError, "y.*read-only"),
    ("y-noncontiguous", _set(y=lambda a: _z(a, KT, KB, 4 * KH)[..., ::2]), ValueError, "y"),
    ("y-other-dtype", _set(y=lambda a: _other(a["y"])), TypeError, "y"),
    ("y_offset-negative", _set(y_offset=lambda a: -1), ValueError, "y_offset"),
    ("y_offset-past-end", _set(y_offset=lambda a: KH + 1), ValueError, "y_offset"),
    ("y_offset-int-min", _set(y_offset=lambda a: -2**31), ValueError, "y_offset"),
    ("y_offset-int-max", _set(y_offset=lambda a: 2**31 - 1), ValueError, "y_offset"),
    ("y_offset-None", _set(y_offset=lambda a: None), TypeError, None),
    ("h_n-wrong-shape", _set(h_n=lambda a: _z(a, KB, KH + 1)), ValueError, "h_n"),
    ("h_n-read-only", _set(h_n=lambda a: _ro(a["h_n"])), ValueError, "h_n"),
    ("h_n-None", _set(h_n=lambda a: None), TypeError, "h_n"),
    ("cache-too-small", _set(cache=lambda a: a["cache"][:-1].copy()), ValueError, "cache"),
    ("cache-too-large", _set(cache=lambda a: _z(a, a["cache"].size + 1)), ValueError, "cache"),
    ("cache-other-dtype", _set(cache=lambda a: _other(a["cache"])), TypeError, "cache"),
    ("cache-read-only", _set(cache=lambda a: _ro(a["cache"])), ValueError, "cache"),
    ("work-too-small", _set(work=lambda a: a["work"][:-1].copy()), ValueError, "work"),
    ("work-sized-for-rnn", _set(work=lambda a: _z(a, _kernels.forward_work_size(
        "rnn_tanh", KT, KB, KI, KH, True))), ValueError, "work"),
    ("work-None", _set(work=lambda a: None), TypeError, "work"),
    ("work-noncontiguous", _set(work=lambda a: _z(a, 2 * a["work"].size)[::2]), ValueError,
     "work"),
    ("work-read-only", _set(work=lambda a: _ro(a["work"])), ValueError, "work"),
    ("lengths-int64", _set(lengths=lambda a: a["lengths"].astype(np.int64)), TypeError,
     "lengths"),
    ("lengths-list", _set(lengths=lambda a: [2, KT, 1]), TypeError, "lengths"),
    ("lengths-big-endian", _set(lengths=lambda a: _big_endian(a["lengths"])), TypeError,
     "lengths"),
    ("lengths-too-long", _set(lengths=lambda a: np.array([2, KT + 1, 1], np.intc)),
     ValueError, "lengths"),
    ("lengths-int-max", _set(lengths=lambda a: np.array([2, 2**31 - 1, 1], np.intc)),
     ValueError, "lengths"),
    ("lengths-negative", _set(lengths=lambda a: np.array([2, -1, 1], np.intc)), ValueError,
     "lengths"),
    ("lengths-int-min", _set(lengths=lambda a: np.array([2, -2**31, 1], np.intc)),
     ValueError, "lengths"),
    ("lengths-wrong-shape", _set(lengths=lambda a: np.array([2, 1], np.intc)), ValueError,
     "lengths"),
    ("lengths-noncontiguous", _set(lengths=lambda a: np.array([2, 0, KT, 0, 1, 0],
                                                              np.intc)[::2]),
     ValueError, "lengths"),
    ("cell-unknown", _set(cell=lambda a: "lstm2"), ValueError, "cell"),
    ("cell-None", _set(cell=lambda a: None), (ValueError, TypeError), "cell"),
]
LSTM_FORWARD_CASES = [
    ("c0-None", _set(c0=lambda a: None), TypeError, "c0"),
    ("c0-wrong-shape", _set(c0=lambda a: _z(a, KB, KH + 1)), ValueError, "c0"),
    ("c0-other-dtype", _set(c0=lambda a: _other(a["c0"])), TypeError, "c0"),
    ("c_n-None", _set(c_n=lambda a: None), TypeError, "c_n"),
    ("c_n-read-only", _set(c_n=lambda a: _ro(a["c_n"])), ValueError, "c_n"),
    ("cell-gru-with-lstm-arrays", _set(cell=lambda a: "gru"), ValueError, "w_ih"),
]


def _run_case(fn, args, change, exc, pattern):
    change(args)
    outputs = {k: v.copy() for k, v in args.items()
               if k in ("y", "h_n", "c_n", "dx", "dh0", "dw_ih", "dw_hh", "db_ih")
               and isinstance(v, np.ndarray)}
    with pytest.raises(exc, match=pattern):
        fn(**args)
    for k, v in outputs.items():     # rejected before anything was written
        np.testing.assert_array_equal(args[k], v, err_msg=f"{k} written by a rejected call")


@pytest.mark.parametrize("case", FORWARD_CASES + LSTM_FORWARD_CASES, ids=lambda c: c[0])
def test_kernel_forward_rejects_lstm_float64(case):
    _, change, exc, pattern = case
    _run_case(_kernels.forward, kernel_forward_args("lstm"), change, exc, pattern)


@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: c[0])
def test_kernel_forward_rejects_gru_float32(case):
    _, change, exc, pattern = case
    _run_case(_kernels.forward, kernel_forward_args("gru", np.float32), change, exc, pattern)


def test_kernel_forward_y_offset_beyond_c_int():
    """Beyond a C int the conversion itself refuses (OverflowError); nothing runs."""
    for bad in (2**31, -2**31 - 1, 2**64):
        args = kernel_forward_args("rnn_tanh")
        with pytest.raises((ValueError, TypeError, OverflowError)):
            _kernels.forward(**dict(args, y_offset=bad))
        assert np.all(args["y"] == 0)


BACKWARD_CASES = [
    ("dx-wrong-shape", _set(dx=lambda a: _z(a, KT, KB, KI + 1)), ValueError, "dx"),
    ("dx-other-dtype", _set(dx=lambda a: _other(a["dx"])), TypeError, "dx"),
    ("dx-noncontiguous", _set(dx=lambda a: _z(a, KT, KB, 2 * KI)[..., ::2]), ValueError, "dx"),
    ("dx-read-only", _set(dx=lambda a: _ro(a["dx"])), ValueError, "dx"),
    ("dx-None", _set(dx=lambda a: None), TypeError, "dx"),
    ("dh0-wrong-shape", _set(dh0=lambda a: _z(a, KB - 1, KH)), ValueError, "dh0"),
    ("dh0-read-only", _set(dh0=lambda a: _ro(a["dh0"])), ValueError, "dh0"),
    ("dc0-None", _set(dc0=lambda a: None), TypeError, "dc0"),
    ("dc0-wrong-shape", _set(dc0=lambda a: _z(a, KB, KH - 1)), ValueError, "dc0"),
    ("dw_ih-wrong-shape", _set(dw_ih=lambda a: a["dw_ih"][:, :1].copy()), ValueError, "dw_ih"),
    ("dw_ih-read-only", _set(dw_ih=lambda a: _ro(a["dw_ih"])), ValueError, "dw_ih"),
    ("dw_hh-other-dtype", _set(dw_hh=lambda a: _other(a["dw_hh"])), TypeError, "dw_hh"),
    ("dw_hh-fortran", _set(dw_hh=lambda a: _fortran(a["dw_hh"])), ValueError, "dw_hh"),
    ("db_ih-wrong-shape", _set(db_ih=lambda a: a["db_ih"][1:].copy()), ValueError, "db_ih"),
    ("db_hh-read-only", _set(db_hh=lambda a: _ro(a["db_hh"])), ValueError, "db_hh"),
    ("dy-wrong-rows", _set(dy=lambda a: _z(a, KT, KB - 1, 2 * KH)), ValueError, "dy"),
    ("dy-2d", _set(dy=lambda a: _z(a, KT * KB, 2 * KH)), ValueError, "dy"),
    ("dy-too-narrow", _set(dy=lambda a: _z(a, KT, KB, 2 * KH - 1)), ValueError, "y_offset"),
    ("dy-other-dtype", _set(dy=lambda a: _other(a["dy"])), TypeError, "dy"),
    ("dy-noncontiguous", _set(dy=lambda a: _z(a, KT, KB, 4 * KH)[..., ::2]), ValueError, "dy"),
    ("y_offset-negative", _set(y_offset=lambda a: -1), ValueError, "y_offset"),
    ("y_offset-past-end", _set(y_offset=lambda a: KH + 1), ValueError, "y_offset"),
    ("y_offset-int-max", _set(y_offset=lambda a: 2**31 - 1), ValueError, "y_offset"),
    ("dh_n-wrong-shape", _set(dh_n=lambda a: _z(a, KB, KH + 1)), ValueError, "dh_n"),
    ("dc_n-other-dtype", _set(dc_n=lambda a: _other(a["dc_n"])), TypeError, "dc_n"),
    ("cache-None", _set(cache=lambda a: None), ValueError, "cache"),
    ("cache-too-small", _set(cache=lambda a: a["cache"][:-1].copy()), ValueError, "cache"),
    ("cache-of-another-cell", _set(cache=lambda a: _z(a, _kernels.cache_size(
        "rnn_tanh", KT, KB, KI, KH))), ValueError, "cache"),
    ("cache-other-dtype", _set(cache=lambda a: _other(a["cache"])), TypeError, "cache"),
    ("x-wrong-shape", _set(x=lambda a: _z(a, KT, KB, KI + 1)), ValueError, "dx|w_ih"),
    ("x-other-dtype", _set(x=lambda a: _other(a["x"])), TypeError, "dtype"),
    ("x-fortran", _set(x=lambda a: _fortran(a["x"])), ValueError, "dx|x"),
    ("w_ih-wrong-shape", _set(w_ih=lambda a: _z(a, 4 * KH, KI + 1)), ValueError, "w_ih"),
    ("w_hh-wrong-shape", _set(w_hh=lambda a: _z(a, 4 * KH, KH + 1)), ValueError,
     "w_hh|dh0|y_offset"),
    ("w_hh-None", _set(w_hh=lambda a: None), ValueError, "w_hh"),
    ("work-too-small", _set(work=lambda a: a["work"][:-1].copy()), ValueError, "work"),
    ("work-forward-size", _set(work=lambda a: _z(a, _kernels.forward_work_size(
        "lstm", KT, KB, KI, KH, True))), ValueError, "work"),
    ("lengths-too-long", _set(lengths=lambda a: np.array([KT + 1, 1, 1], np.intc)),
     ValueError, "lengths"),
    ("lengths-negative", _set(lengths=lambda a: np.array([1, -5, 1], np.intc)), ValueError,
     "lengths"),
    ("lengths-int64", _set(lengths=lambda a: a["lengths"].astype(np.int64)), TypeError,
     "lengths"),
    ("lengths-wrong-shape", _set(lengths=lambda a: np.ones(KB + 1, np.intc)), ValueError,
     "lengths"),
    ("cell-unknown", _set(cell=lambda a: "GRU"), ValueError, "cell"),
    ("cell-gru-with-lstm-arrays", _set(cell=lambda a: "gru"), ValueError, "w_ih"),
]


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=lambda c: c[0])
def test_kernel_backward_rejects(case):
    _, change, exc, pattern = case
    _run_case(_kernels.backward, kernel_backward_args("lstm"), change, exc, pattern)


def test_kernel_backward_without_dy_at_offset_zero():
    """dy=None with y_offset 0 is valid (a one-direction layer's state-only gradient)."""
    args = kernel_backward_args("gru")
    _kernels.backward(**dict(args, dy=None, y_offset=0))
    assert np.all(np.isfinite(args["dx"])) and np.any(args["dx"] != 0)


def test_kernel_backward_y_offset_ignored_without_dy():
    args = kernel_backward_args("gru")
    _kernels.backward(**dict(args, dy=None, y_offset=KH))


@pytest.mark.parametrize("sizes", [(2**16, 2**16, 1, 1), (2**16, 2**15, 1, 1),
                                   (3, 2**30, 1, 1), (1, 1, 1, 2**30), (2, 1, 2**30, 1)],
                         ids=["T*B=2**32", "T*B=2**31", "T*B=3*2**30", "G*H=2**32",
                              "T*I=2**31"])
def test_kernel_size_guard_catches_sizes_beyond_int(sizes):
    with pytest.raises(ValueError, match="too large"):
        _kernels.cache_size("lstm", *sizes)


def test_kernel_size_helpers_refuse_bad_sizes():
    for fn in (_kernels.cache_size, _kernels.backward_work_size):
        with pytest.raises(ValueError, match=">= 1"):
            fn("gru", 0, 1, 1, 1)
        with pytest.raises(ValueError, match=">= 1"):
            fn("gru", 1, 1, 1, -1)
        with pytest.raises(ValueError, match="cell"):
            fn("gru2", 1, 1, 1, 1)
    with pytest.raises(ValueError, match=">= 1"):
        _kernels.forward_work_size("lstm", 1, 0, 1, 1, False)


def test_kernel_refuses_unaligned_arrays():
    """Misaligned float data is undefined behaviour for the C kernels (and may fault
    in vector loads): the binding refuses it; the layers pass aligned copies."""
    args = kernel_forward_args("lstm", np.float32)
    raw = np.zeros(args["x"].nbytes + 1, np.uint8)[1:]          # one byte off
    unaligned = raw.view(np.float32).reshape(args["x"].shape)
    unaligned[...] = args["x"]
    assert not unaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        _kernels.forward(**dict(args, x=unaligned))
    layer = fastrnn.LSTM(KI, KH)
    np.testing.assert_array_equal(layer(unaligned, training=False)[0],
                                  layer(args["x"], training=False)[0])
