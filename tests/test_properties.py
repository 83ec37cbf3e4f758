"""Property: any call on the public API either raises a clear error or agrees with NumPy.

Hypothesis generates layer configurations (cell kind, sizes, num_layers,
direction, batch_first, proj_size, dropout, bias, dtype, stateful, ONNX's
options: clip, activations, peepholes, input_forget; now and then the
Bidirectional wrapper) and a short sequence of calls (forward, backward,
zero_grad) with inputs, states, lengths and gradients of random shapes, dtypes
and layouts, valid and invalid. Every call runs on two twins built alike, one
on backend="c" and one on backend="numpy", and the rule is API.md's:

- either both raise ValueError, TypeError or MemoryError, of the same type and
  with a message (an argument check is the same Python code for both backends,
  so the C binding must not refuse what the reference accepts, nor the
  reverse);
- or both return, and every tensor (output, states, dx, state gradients, every
  accumulated parameter gradient) of the C run equals the reference's within
  the dtype's tolerance;
- and the caller's arrays are never written to.

Anything else (another exception type, a crash, a wrong number) fails. The
one-step cells get the same treatment, including the C inference fast path,
and so does fastrnn.load of a saved file edited by hand (an untrusted file):
it raises one of the three, or gives an object that works.

The runs are derandomized (a fixed seed per test, no example database), so CI
sees the same examples every time; FASTRNN_PROPERTY_EXAMPLES=2000 runs more
of them locally. The array contents are drawn from a seed, not element by
element: Hypothesis explores shapes, dtypes and options, and shrinks a failure
to the smallest such case.

Generated sizes stay small, or beyond the kernels' 32-bit sizes (2**31 and
up), or absurd (2**40 and up): those must fail at once (ValueError or
MemoryError), while a middling size that this machine's memory can hold
(hidden_size=20000: 6.4 GB of parameters and gradients) would really
allocate it.

The library bugs these properties found (all fixed since) keep a test of
their own each, at the end; they were xfail(strict=True) with the bug in the
reason until the fix, and the generators steered around them meanwhile.
"""
from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import ACTIVATION_DEFAULTS
from fastrnn.kinds import CELLS, ELEMENTWISE

ALLOWED = (ValueError, TypeError, MemoryError)
EXAMPLES = int(os.environ.get("FASTRNN_PROPERTY_EXAMPLES", "0")) or None


def property_settings(examples: int, shrink: bool = True):
    """Bounded and reproducible: a fixed number of examples, derandomized, no
    database, no deadline (a first call may pay for BLAS's warm-up), and no
    "explain" phase (it reruns a failure hundreds of times); shrink=False stops
    at the first failure (for a test expected to fail)."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=EXAMPLES or examples, derandomize=True, database=None,
                    deadline=None, print_blob=True, phases=phases,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- the rule

def attempt(fn: Callable[[], Any]) -> Tuple[bool, Any]:
    """(True, result) or (False, exception) for an allowed exception with a
    message; any other exception propagates and fails the test."""
    try:
        return True, fn()
    except ALLOWED as e:
        assert str(e).strip(), f"{type(e).__name__} raised with an empty message"
        return False, e


def flatten(prefix: str, value: Any, into: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A call's result (arrays, nested tuples of arrays, None) as {name: array}."""
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            flatten(f"{prefix}[{i}]", v, into)
    elif value is not None:
        into[prefix] = value
    return into


def same_outcome(step: str, got: Tuple[bool, Any], want: Tuple[bool, Any], dtype,
                 assert_tensors_close, truth: Optional[Tuple[bool, Any]] = None) -> None:
    """The C run and the reference run of one call agree (see the module docstring);
    truth is the same call's outcome on a float64 reference (see assert_agree)."""
    ok_c, c = got
    ok_np, ref = want
    event(f"{step.split()[-1]}: {'compared' if ok_c and ok_np else 'raised'}")
    if not ok_c or not ok_np:
        assert not ok_c and not ok_np, (
            f"{step}: backend 'c' {'returned' if ok_c else f'raised {c!r}'} but 'numpy' "
            f"{'returned' if ok_np else f'raised {ref!r}'}")
        assert type(c) is type(ref), f"{step}: 'c' raised {c!r}, 'numpy' raised {ref!r}"
        return
    got_t, want_t = flatten("", c, {}), flatten("", ref, {})
    if not all(np.all(np.isfinite(v)) for v in want_t.values()):
        # the reference overflowed (unbounded activations, say): "NaN policy aside"
        # (API.md), only the names, shapes and dtypes are compared
        event("reference overflowed: shapes only")
        assert {k: (v.shape, v.dtype) for k, v in got_t.items()} == \
            {k: (v.shape, v.dtype) for k, v in want_t.items()}, step
        return
    assert_agree(step, got_t, want_t, dtype, assert_tensors_close,
                 flatten("", truth[1], {}) if truth and truth[0] else None)


def assert_agree(step: str, got: Dict[str, np.ndarray], want: Dict[str, np.ndarray], dtype,
                 assert_tensors_close, truth: Optional[Dict[str, np.ndarray]] = None) -> None:
    """C's tensors equal the reference's within the dtype's tolerance. In float32
    an ill-conditioned case (the derivative of a saturated activation taken from
    its output, after an unbounded gate) loses more than that to rounding in both
    backends; there truth, the float64 reference's tensors, decides: C's largest
    error against it may be at most 4 times the float32 reference's own."""
    if not all(np.all(np.isfinite(v)) for v in want.values()):
        event("reference overflowed: shapes only")         # as in same_outcome
        return
    try:
        assert_tensors_close(got, want, dtype, context=step)
    except AssertionError as direct:
        if truth is None or truth.keys() != got.keys():
            raise
        for name, t in truth.items():
            err_c = float(np.max(np.abs(got[name].astype(np.float64) - t), initial=0.0))
            err_ref = float(np.max(np.abs(want[name].astype(np.float64) - t), initial=0.0))
            if not err_c <= 4 * err_ref + 1e-6:
                raise AssertionError(
                    f"{direct}\n{step}: {name}: against the float64 reference, C's error "
                    f"{err_c:.3e} exceeds 4 times the float32 reference's ({err_ref:.3e})"
                ) from None
        event("float32: decided against float64")


def on_twin(twin, call: Callable[[Any, Any], Any], args: Any) -> Optional[Tuple[bool, Any]]:
    """call(twin, a copy of args) as attempt() gives it, or None without a twin."""
    return None if twin is None else attempt(lambda: call(twin, copy.deepcopy(args)))


def float64_twin(obj, make: Callable[[Dict[str, Any], str], Any], cfg: Dict[str, Any]):
    """The float64 NumPy reference with obj's weights, for a float32 obj (else None)."""
    if obj.dtype != np.float32:
        return None
    twin = make(dict(cfg, dtype=np.float64), "numpy")
    twin.load_state_dict({k: v.astype(np.float64) for k, v in obj.state_dict().items()})
    return twin


def built_alike(make: Callable[[str], Any]) -> Tuple[Any, Any]:
    """The object made on backend "c" and on "numpy", or (None, None) when both
    constructors raised the same allowed error."""
    (ok_c, c), (ok_np, ref) = attempt(lambda: make("c")), attempt(lambda: make("numpy"))
    event(f"constructor: {'built' if ok_c else 'raised ' + type(c).__name__}")
    assert ok_c == ok_np, f"constructor: 'c' gave {c!r}, 'numpy' gave {ref!r}"
    if not ok_c:
        assert type(c) is type(ref), f"constructor: 'c' raised {c!r}, 'numpy' raised {ref!r}"
        return None, None
    return c, ref


def snapshot(args: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Copies of the arrays among a call's arguments (tuples of arrays included)."""
    found = flatten("", list(args.values()), {})
    return {k: v.copy() for k, v in found.items() if isinstance(v, np.ndarray)}


def assert_untouched(step: str, args: Dict[str, Any], before: Dict[str, np.ndarray]) -> None:
    after = flatten("", list(args.values()), {})
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=f"{step}: an argument was written "
                                                           f"to by the call")


# ----------------------------------------------------------- configurations

# sizes refused at once: beyond the kernels' C ints (ValueError), or absurd
# (MemoryError before anything is allocated)
HUGE = [2**31, 2**32, 2**40, 2**62, 2**63, 2**64]
BAD_SIZES = [0, -1, 2.5, "3", None, True] + HUGE
BAD_DTYPES = [np.int32, "float16", None, "nonsense", object, np.complex64]
ACT_NAMES = sorted(ACTIVATION_DEFAULTS)
CAMEL = {"leaky_relu": "LeakyRelu", "hard_sigmoid": "HardSigmoid", "scaled_tanh": "ScaledTanh",
         "thresholded_relu": "ThresholdedRelu", "tanh": "Tanh", "elu": "Elu"}
NUM_ACTIVATIONS = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 3, "gru": 2, "gru_reset_before": 2}


@st.composite
def activation(draw) -> Any:
    name = draw(st.sampled_from(ACT_NAMES))
    if draw(st.booleans()) and name in CAMEL:
        name = CAMEL[name]
    params = draw(st.lists(st.sampled_from([0.1, 0.5, 1.0, 1.7, -0.3]), max_size=2))
    return name if not params else (name, *params)


@st.composite
def layer_configs(draw) -> Dict[str, Any]:
    """Constructor arguments of RNN/LSTM/GRU/IndRNN, sometimes with one bad value,
    and whether to wrap the layer in Bidirectional (with which merge mode)."""
    cell = draw(st.sampled_from(CELLS))
    H = draw(st.integers(1, 6))
    cfg: Dict[str, Any] = {
        "cell": cell, "input_size": draw(st.integers(1, 5)), "hidden_size": H,
        "num_layers": draw(st.integers(1, 3)), "batch_first": draw(st.booleans()),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "bias": draw(st.booleans()), "stateful": draw(st.integers(0, 4)) == 0,
        "seed": draw(st.integers(0, 2**16)),
    }
    direction = draw(st.sampled_from(["default", "bidirectional=True", "forward", "reverse",
                                      "bidirectional"]))
    if direction == "bidirectional=True":
        cfg["bidirectional"] = True
    elif direction != "default":
        cfg["direction"] = direction
    if cfg["num_layers"] > 1 and draw(st.booleans()):
        cfg["dropout"] = draw(st.sampled_from([0.25, 0.6]))
    if cell == "lstm":
        if H > 1 and draw(st.booleans()):
            cfg["proj_size"] = draw(st.integers(1, H - 1))
        if draw(st.integers(0, 3)) == 0:
            cfg["peepholes"] = True
        if draw(st.integers(0, 3)) == 0:
            cfg["input_forget"] = True
    onnx_options = cell not in ELEMENTWISE     # IndRNN takes neither clip nor activations
    if onnx_options and draw(st.integers(0, 3)) == 0:
        cfg["clip"] = draw(st.sampled_from([0.5, 2.0, 30.0, float("inf")]))
    if onnx_options and draw(st.integers(0, 3)) == 0:
        n = NUM_ACTIVATIONS[cell]
        acts = draw(st.lists(activation(), min_size=n, max_size=n))
        # a cell of one activation also takes it alone, by name
        cfg["activations"] = acts[0] if n == 1 and isinstance(acts[0], str) \
            and draw(st.booleans()) else acts

    # one bad argument in a fifth of the configurations
    bad = draw(st.sampled_from(["none"] * 40 + ["input_size", "hidden_size", "num_layers",
                                               "dtype", "bias", "dropout", "direction",
                                               "proj_size", "clip", "activations",
                                               "wrap"]))
    if bad in ("input_size", "hidden_size"):
        cfg[bad] = draw(st.sampled_from(BAD_SIZES))
    elif bad == "num_layers":
        cfg[bad] = draw(st.sampled_from([0, -2, 1.0, None, "2", 2**31, 2**40]))
    elif bad == "dtype":
        cfg[bad] = draw(st.sampled_from(BAD_DTYPES))
    elif bad == "bias":
        cfg[bad] = draw(st.sampled_from([1, "yes", None]))
    elif bad == "dropout":
        cfg[bad] = draw(st.sampled_from([1.0, -0.1, "0.5", float("nan"), None]))
    elif bad == "direction":
        cfg.pop("bidirectional", None)
        cfg.update(draw(st.sampled_from([{"direction": "sideways"}, {"direction": None},
                                         {"direction": "reverse", "bidirectional": True},
                                         {"direction": 2}])))
    elif bad == "proj_size" and cell == "lstm":
        cfg[bad] = draw(st.sampled_from([H, H + 3, -1, 1.5, True]))
    elif bad == "clip" and onnx_options:
        cfg[bad] = draw(st.sampled_from([0, -1.0, "a", float("nan")]))
    elif bad == "activations" and onnx_options:
        n = NUM_ACTIVATIONS[cell]
        cfg[bad] = draw(st.sampled_from([["tanh"] * (n + 1), ["swish"] * n,
                                         [("elu", 1.0, 2.0, 3.0)] * n, [("elu", "a")] * n,
                                         [("elu", None)] * n, [7] * n, []]))

    # the Bidirectional wrapper takes a forward single-layer RNN/LSTM/GRU
    if draw(st.integers(0, 3)) == 0:
        cfg["wrap"] = draw(st.sampled_from(["concat", "sum", "mul", "ave"]))
        if bad != "wrap":
            cfg["num_layers"] = 1
            cfg.pop("bidirectional", None)
            cfg.pop("direction", None)
            cfg.pop("dropout", None)
    if bad == "wrap":
        cfg["wrap"] = draw(st.sampled_from(["max", None, "Concat"]))
    return cfg


def build(cfg: Dict[str, Any], backend: str):
    """The layer (or Bidirectional wrapper) of a configuration on one backend."""
    kw = {k: v for k, v in cfg.items() if k not in ("cell", "wrap")}
    kw["backend"] = backend
    cell = cfg["cell"]
    if cell.startswith("rnn"):
        layer = fastrnn.RNN(nonlinearity=cell[4:], **kw)
    elif cell.startswith("indrnn"):
        layer = fastrnn.IndRNN(nonlinearity=cell[7:], **kw)
    elif cell == "lstm":
        layer = fastrnn.LSTM(**kw)
    else:
        layer = fastrnn.GRU(reset_after=cell == "gru", **kw)
    if "wrap" in cfg:
        layer = fastrnn.Bidirectional(layer, merge_mode=cfg["wrap"])
    return layer


# ---------------------------------------------------------------- the calls

# the forms each argument takes: valid ones (converted, or None for the
# default) and bad ones; a call makes at most one argument bad, so that most
# calls get through to the numbers
FORMS = {
    "x": (["ok"] * 6 + ["list", "noncontiguous", "fortran", "float16", "int8", "bool",
                        "big-endian", "other-float", "unaligned"],
          ["rank1", "rank4", "wrong-I", "empty-T", "empty-B", "complex", "str", "object",
           "None", "ragged"]),
    "state": (["none", "ok", "ok", "list", "int", "noncontiguous", "other-float"],
              ["wrong-shape", "wrong-B", "complex", "partial"]),
    "state_pack": (["tuple", "tuple", "list"], ["array", "triple"]),
    "lengths": (["none", "none", "ok", "ok", "floats", "list", "uint8"],
                ["too-long", "negative", "wrong-shape", "non-integer", "bool", "huge"]),
    "grad": (["ok", "ok", "none", "list", "other-float", "noncontiguous"],
             ["wrong-shape", "complex"]),
}
ARGUMENTS = {"x": "x", "h0": "state", "c0": "state", "state_pack": "state_pack",
             "lengths": "lengths", "d_output": "grad", "d_h_n": "grad", "d_c_n": "grad"}


def forms(draw, arguments: Dict[str, str], no_bad_weight: int = 12) -> Dict[str, str]:
    """A form for each argument: valid ones, but one bad one in about a third of
    the calls (none in no_bad_weight of no_bad_weight + len(arguments))."""
    bad = draw(st.sampled_from(["none"] * no_bad_weight + sorted(arguments)))
    return {name: draw(st.sampled_from(FORMS[kind][1 if name == bad else 0]))
            for name, kind in arguments.items()}


@st.composite
def calls(draw, max_calls: int = 3) -> List[Dict[str, Any]]:
    """1 to max_calls calls, each a forward with an optional backward after it."""
    out = []
    for _ in range(draw(st.integers(1, max_calls))):
        call = forms(draw, ARGUMENTS)
        call.update({
            "T": draw(st.integers(1, 5)),
            "B": draw(st.sampled_from([1, 2, 3, 5, 17, "unbatched"])),
            "training": draw(st.sampled_from([None, None, True, False])),
            "backward": draw(st.integers(0, 3)) > 0,
            "zero_grad": draw(st.booleans()),
            "scale": draw(st.sampled_from([1.0, 1.0, 4.0])),
            "seed": draw(st.integers(0, 2**16)),
        })
        out.append(call)
    return out


def shaped(form: str, a: np.ndarray) -> Any:
    """An array in one of the accepted forms (or a bad one) for an argument."""
    if form in ("ok", "other-float"):
        if form == "other-float":
            return a.astype(np.float64 if a.dtype == np.float32 else np.float32)
        return a
    if form == "list":
        return a.tolist()
    if form == "noncontiguous":
        wide = np.repeat(a, 2, axis=-1)
        return wide[..., ::2]
    if form == "fortran":
        return np.asfortranarray(a)
    if form == "float16":
        return a.astype(np.float16)
    if form == "int8" or form == "int":
        return np.round(a).astype(np.int8)
    if form == "bool":
        return a > 0
    if form == "big-endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if form == "unaligned":
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
        u = raw.view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if form == "complex":
        return a.astype(np.complex128)
    if form == "wrong-shape":
        return np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)
    raise AssertionError(form)


def make_call(cfg: Dict[str, Any], layer, call: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments of one forward and its backward, built from the call's seed.

    Shapes come from the layer when it was built (else from the configuration),
    so most calls are valid and the rest are wrong in one chosen way."""
    inner = layer.layer if isinstance(layer, fastrnn.Bidirectional) else layer
    rng = np.random.default_rng(call["seed"])
    dtype = inner.dtype
    I, H = inner.input_size, inner.hidden_size
    R, D, L = inner.proj_size or H, inner.num_directions, inner.num_layers
    width = D * R if not isinstance(layer, fastrnn.Bidirectional) or \
        layer.merge_mode == "concat" else R
    T, B = call["T"], call["B"]
    unbatched = B == "unbatched"
    lead = (T,) if unbatched else ((B, T) if inner.batch_first else (T, B))
    st_shape = (D * L,) if unbatched else (D * L, B)

    def u(shape):
        return (call["scale"] * rng.uniform(-1, 1, shape)).astype(dtype)

    x = u(lead + (I,))
    form = call["x"]
    bad_x = {"rank1": lambda: x.reshape(-1), "rank4": lambda: x[None],
             "wrong-I": lambda: u(lead + (I + 1,)), "empty-T": lambda: u((0,) + lead[1:] + (I,)),
             "empty-B": lambda: u((T, 0, I)) if not unbatched else u((0, I)),
             "complex": lambda: x.astype(np.complex64), "str": lambda: np.full(x.shape, "a"),
             "object": lambda: x.astype(object), "None": lambda: None,
             "ragged": lambda: [[1.0] * I, [1.0] * (I + 1)]}
    x = bad_x[form]() if form in bad_x else shaped(form, x)

    def state(form, width_):
        if form == "none":
            return None
        a = u(st_shape + (width_,))
        if form == "wrong-B":
            return u((D * L, (1 if unbatched else B) + 1, width_))
        if form == "partial":
            return a[:-1] if a.shape[0] > 1 else a[..., :-1]
        return shaped(form, a)

    h0, c0 = state(call["h0"], R), state(call["c0"], H)
    lstm = isinstance(inner, fastrnn.LSTM)
    if lstm:
        pack = call["state_pack"]
        s = {"tuple": lambda: (h0, c0), "list": lambda: [h0, c0],
             "array": lambda: h0, "triple": lambda: (h0, c0, h0)}[pack]()
    else:
        s = h0

    lengths = None
    n = 1 if unbatched else B
    lf = call["lengths"]
    if lf != "none":
        ok = rng.integers(0, T + 1, n)
        lengths = {"ok": lambda: ok, "floats": lambda: ok.astype(np.float64),
                   "list": lambda: ok.tolist(), "uint8": lambda: ok.astype(np.uint8),
                   "too-long": lambda: ok + T + 1, "negative": lambda: ok - T - 1,
                   "wrong-shape": lambda: np.append(ok, 1), "non-integer": lambda: ok + 0.5,
                   "bool": lambda: ok > 0, "huge": lambda: np.full(n, 2**62)}[lf]()
        if unbatched and lf == "ok" and rng.integers(2):
            lengths = int(ok[0])          # a scalar length for an unbatched input

    def grad(form, shape):
        if form == "none":
            return None
        return shaped(form, u(shape))

    dy = grad(call["d_output"], lead + (width,))
    dh = grad(call["d_h_n"], st_shape + (R,))
    dc = grad(call["d_c_n"], st_shape + (H,))
    d_state = ((dh, dc) if (dh is not None or dc is not None) else None) if lstm else dh
    return {"forward": {"x": x, "state": s, "lengths": lengths, "training": call["training"]},
            "backward": {"d_output": dy, "d_state": d_state}}


def run_forward(layer, args):
    return layer(args["x"], args["state"], lengths=args["lengths"], training=args["training"])


def run_backward(layer, args):
    return layer.backward(args["d_output"], args["d_state"])


def grads_of(layer) -> Dict[str, np.ndarray]:
    return {f"grads[{k}]": g.copy() for k, g in layer.grads.items()}


# ------------------------------------------------------------------ layers

@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@property_settings(examples=300)
@given(cfg=layer_configs(), sequence=calls())
def test_layer_calls_raise_clearly_or_match_numpy(cfg, sequence, assert_tensors_close):
    c_layer, np_layer = built_alike(lambda backend: build(cfg, backend))
    if c_layer is None:
        return
    dtype = c_layer.dtype
    f64_layer = float64_twin(c_layer, build, cfg)
    for i, call in enumerate(sequence):
        args = make_call(cfg, c_layer, call)
        twin = copy.deepcopy(args)        # the reference gets its own copy of everything
        before = snapshot(args["forward"])
        step = f"call {i} forward"
        got = attempt(lambda: run_forward(c_layer, args["forward"]))
        assert_untouched(step, args["forward"], before)
        truth = on_twin(f64_layer, run_forward, args["forward"])
        same_outcome(step, got, attempt(lambda: run_forward(np_layer, twin["forward"])), dtype,
                     assert_tensors_close, truth)
        if call["zero_grad"]:
            for layer in (c_layer, np_layer, f64_layer):
                if layer is not None:
                    layer.zero_grad()
        if not call["backward"]:
            continue
        before = snapshot(args["backward"])
        step = f"call {i} backward"
        got = attempt(lambda: run_backward(c_layer, args["backward"]))
        assert_untouched(step, args["backward"], before)
        truth = on_twin(f64_layer, run_backward, args["backward"])
        same_outcome(step, got, attempt(lambda: run_backward(np_layer, twin["backward"])),
                     dtype, assert_tensors_close, truth)
        assert_agree(f"call {i} accumulated gradients", grads_of(c_layer), grads_of(np_layer),
                     dtype, assert_tensors_close,
                     None if f64_layer is None else grads_of(f64_layer))


# ------------------------------------------------------------------- cells

@st.composite
def cell_configs(draw) -> Dict[str, Any]:
    kind = draw(st.sampled_from(CELLS))
    cfg = {"kind": kind, "input_size": draw(st.integers(1, 6)),
           "hidden_size": draw(st.integers(1, 9)), "bias": draw(st.booleans()),
           "dtype": draw(st.sampled_from([np.float32, np.float64])),
           "seed": draw(st.integers(0, 2**16)), "eval": draw(st.booleans())}
    bad = draw(st.sampled_from(["none"] * 12 + ["input_size", "hidden_size", "dtype"]))
    if bad == "dtype":
        cfg[bad] = draw(st.sampled_from(BAD_DTYPES))
    elif bad != "none":
        cfg[bad] = draw(st.sampled_from(BAD_SIZES))
    return cfg


def build_cell(cfg: Dict[str, Any], backend: str):
    kw = {k: cfg[k] for k in ("input_size", "hidden_size", "bias", "dtype", "seed")}
    kind = cfg["kind"]
    if kind.startswith("rnn"):
        cell = fastrnn.RNNCell(nonlinearity=kind[4:], backend=backend, **kw)
    elif kind.startswith("indrnn"):
        cell = fastrnn.IndRNNCell(nonlinearity=kind[7:], backend=backend, **kw)
    elif kind == "lstm":
        cell = fastrnn.LSTMCell(backend=backend, **kw)
    else:
        cell = fastrnn.GRUCell(reset_after=kind == "gru", backend=backend, **kw)
    return cell.eval() if cfg["eval"] else cell


CELL_ARGUMENTS = {"x": "x", "h": "state", "c": "state", "d_h": "grad", "d_c": "grad"}


@st.composite
def cell_calls(draw) -> List[Dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        call = forms(draw, CELL_ARGUMENTS, no_bad_weight=10)
        call.update({"B": draw(st.sampled_from([1, 2, 3, 7, 33, "unbatched"])),
                     "training": draw(st.sampled_from([None, None, True, False])),
                     "backward": draw(st.booleans()), "seed": draw(st.integers(0, 2**16))})
        out.append(call)
    return out


def make_cell_call(cell, call):
    rng = np.random.default_rng(call["seed"])
    dtype, I, H = cell.dtype, cell.input_size, cell.hidden_size
    B = call["B"]
    lead = () if B == "unbatched" else (B,)

    def u(shape):
        return rng.uniform(-1, 1, shape).astype(dtype)

    x = u(lead + (I,))
    bad = {"rank1": lambda: x.reshape(-1)[:-1] if x.size > 1 else x[None, None],
           "rank4": lambda: x[None, None], "wrong-I": lambda: u(lead + (I + 2,)),
           "empty-T": lambda: u((0, I)), "empty-B": lambda: u((0, I)),
           "complex": lambda: x.astype(np.complex128), "str": lambda: np.full(x.shape, "a"),
           "object": lambda: x.astype(object), "None": lambda: None,
           "ragged": lambda: [[1.0] * I, [1.0] * (I + 1)]}
    x = bad[call["x"]]() if call["x"] in bad else shaped(call["x"], x)

    def state(form):
        if form == "none":
            return None
        if form == "wrong-B":
            return u((2 if B == "unbatched" else B + 1, H))
        if form == "partial":
            return u(lead + (H - 1,)) if H > 1 else u(lead + (H + 1,))
        return shaped(form, u(lead + (H,)))

    h, c = state(call["h"]), state(call["c"])
    d_h, d_c = (None if f == "none" else shaped(f, u(lead + (H,)))
                for f in (call["d_h"], call["d_c"]))
    return {"x": x, "h": h, "c": c, "training": call["training"], "d_h": d_h, "d_c": d_c}


def cell_forward(cell, a):
    if isinstance(cell, fastrnn.LSTMCell):
        state = None if a["h"] is None and a["c"] is None else (a["h"], a["c"])
        return cell(a["x"], state, training=a["training"])
    return cell(a["x"], a["h"], training=a["training"])


def cell_backward(cell, a):
    if isinstance(cell, fastrnn.LSTMCell):
        return cell.backward((a["d_h"], a["d_c"]))
    return cell.backward(a["d_h"])


@property_settings(examples=200)
@given(cfg=cell_configs(), sequence=cell_calls())
def test_cell_steps_raise_clearly_or_match_numpy(cfg, sequence, assert_tensors_close):
    c_cell, np_cell = built_alike(lambda backend: build_cell(cfg, backend))
    if c_cell is None:
        return
    dtype = c_cell.dtype
    f64_cell = float64_twin(c_cell, build_cell, cfg)
    for i, call in enumerate(sequence):
        args = make_cell_call(c_cell, call)
        twin = copy.deepcopy(args)
        before = snapshot(args)
        got = attempt(lambda: cell_forward(c_cell, args))
        truth = on_twin(f64_cell, cell_forward, args)
        same_outcome(f"step {i} forward", got, attempt(lambda: cell_forward(np_cell, twin)),
                     dtype, assert_tensors_close, truth)
        if call["backward"]:
            got = attempt(lambda: cell_backward(c_cell, args))
            truth = on_twin(f64_cell, cell_backward, args)
            same_outcome(f"step {i} backward", got,
                         attempt(lambda: cell_backward(np_cell, twin)), dtype,
                         assert_tensors_close, truth)
            assert_agree(f"step {i} accumulated gradients", grads_of(c_cell), grads_of(np_cell),
                         dtype, assert_tensors_close,
                         None if f64_cell is None else grads_of(f64_cell))
        assert_untouched(f"step {i}", args, before)


# ------------------------------------------------------------ saved files

# what a file may come from: every class, with options that change its entries
SAVED = {
    "rnn": lambda: fastrnn.RNN(3, 4, num_layers=2, nonlinearity="relu", seed=0),
    "lstm": lambda: fastrnn.LSTM(3, 4, proj_size=2, bidirectional=True, peepholes=True, seed=1),
    "gru": lambda: fastrnn.GRU(3, 4, reset_after=False, clip=2.0, dtype=np.float64, seed=2),
    "bidirectional": lambda: fastrnn.Bidirectional(fastrnn.GRU(3, 4, seed=3), "sum"),
    "cell": lambda: fastrnn.LSTMCell(3, 4, seed=4),
    "indrnn": lambda: fastrnn.IndRNN(3, 4, num_layers=2, bidirectional=True, seed=5),
}
# values a hand-edited configuration may hold
ODD_VALUES = [0, -1, 2**31, 2**40, 2**63, 2**64, 1.5, True, None, "x", "float16", "int8", [],
              {}, [1, 2], {"a": 1}, "lstm", "bidirectional", float("inf")]
CONFIG_KEY = "__fastrnn__"


def archive_of(obj) -> Dict[str, np.ndarray]:
    buffer = io.BytesIO()
    fastrnn.save(obj, buffer)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def config_paths(cfg: Any, prefix: Tuple = ()) -> List[Tuple]:
    """Every key path of a JSON configuration (nested dicts)."""
    paths = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            paths.append(prefix + (k,))
            paths += config_paths(v, prefix + (k,))
    return paths


class Archive(bytes):
    """A file's bytes, shown in a failure report by what was done to them."""

    what = ""

    def __repr__(self) -> str:
        return f"<.npz: {self.what}>"


@st.composite
def edited_archives(draw) -> Archive:
    """A saved file, well-formed as .npz, with one edit to its configuration or
    its weights."""
    arrays = archive_of(SAVED[draw(st.sampled_from(sorted(SAVED)))]())
    cfg = json.loads(str(arrays[CONFIG_KEY][()]))
    kind = draw(st.sampled_from(["set", "set", "set", "drop", "json", "weight-shape",
                                 "weight-dtype", "weight-drop", "weight-extra", "weight-nan",
                                 "rng"]))
    weights = sorted(k for k in arrays if k != CONFIG_KEY)
    name = draw(st.sampled_from(weights))
    if kind in ("set", "drop"):
        path = draw(st.sampled_from(sorted(config_paths(cfg), key=str)))
        parent = cfg
        for k in path[:-1]:
            parent = parent[k]
        if kind == "drop":
            parent.pop(path[-1], None)
        elif path[0] == "rng":
            parent[path[-1]] = draw(st.sampled_from(["x", None, [], {}, 1.5, -1, 2**64,
                                                     2**128]))
        elif path == ("layer",):
            parent[path[-1]] = draw(st.sampled_from([{}, {"class": "GRU"}, {"a": 1}] +
                                                    ODD_VALUES))
        else:
            parent[path[-1]] = draw(st.sampled_from(ODD_VALUES))
        what = f"{kind} {'.'.join(map(str, path))}" + \
            (f" = {parent[path[-1]]!r}" if kind == "set" else "")
    elif kind == "json":
        text = draw(st.sampled_from(["", "{", "[]", "null", '"fastrnn"', "1e999",
                                     '{"format": "fastrnn"}', json.dumps([cfg])]))
        arrays[CONFIG_KEY] = np.array(text)
        what = f"config {text[:20]!r}"
    elif kind == "rng":
        cfg["rng"] = draw(st.sampled_from([
            {"bit_generator": "PCG64", "state": {"state": -1, "inc": 2**200},
             "has_uint32": 0, "uinteger": 0},
            {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1},
             "has_uint32": 0, "uinteger": 0},
            {"bit_generator": "MT19937", "state": {"key": [1, 2], "pos": 0}},
            {"bit_generator": "os.system"}, [1, 2, 3], "state"]))
        what = f"rng {cfg['rng']!r}"
    else:
        w = arrays[name]
        arrays[name] = {
            "weight-shape": lambda: np.zeros(w.shape + (2,), w.dtype),
            "weight-dtype": lambda: w.astype(draw(st.sampled_from(
                [np.int8, np.complex64, np.bool_, "U3", np.float16, ">f8"]))),
            "weight-nan": lambda: np.full_like(w, np.nan),
            "weight-extra": lambda: w, "weight-drop": lambda: w,
        }[kind]()
        if kind == "weight-drop":
            del arrays[name]
        if kind == "weight-extra":
            arrays["weight_ih_l7"] = w
        what = f"{kind} {name}"
    if kind not in ("json",) and CONFIG_KEY in arrays and arrays[CONFIG_KEY].ndim == 0:
        if kind in ("set", "drop", "rng"):
            arrays[CONFIG_KEY] = np.array(json.dumps(cfg))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    archive = Archive(buffer.getvalue())
    archive.what = what
    return archive


def check_loaded(obj, assert_tensors_close) -> None:
    """A loaded object works: one forward on each backend, the same outcome."""
    inner = obj.layer if isinstance(obj, fastrnn.Bidirectional) else getattr(obj, "_layer", obj)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, obj.input_size))
    if isinstance(obj, (fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell)):
        x = x[0]
    results = []
    for backend in ("c", "numpy"):
        obj.backend = backend
        inner.reset_state()          # a stateful layer would carry the first call's state
        results.append(attempt(lambda: obj(x, training=False)))
    got, want = results
    reference = flatten("", want[1], {}) if want[0] else {}
    if any(not np.all(np.isfinite(v)) for v in reference.values()):
        assert got[0], f"'c' raised {got[1]!r} where 'numpy' returned"   # NaN weights
        return
    same_outcome("loaded forward", got, want, inner.dtype, assert_tensors_close)


@property_settings(examples=150)
@given(archive=edited_archives())
def test_load_of_an_edited_file_raises_clearly_or_works(archive, assert_tensors_close):
    ok, obj = attempt(lambda: fastrnn.load(io.BytesIO(archive)))
    if ok:
        check_loaded(obj, assert_tensors_close)


@property_settings(examples=60, shrink=False)
@given(damage=st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)),
                                        min_size=1, max_size=4))))
def test_load_of_a_damaged_file_raises_value_error(damage):
    data = bytearray(saved_bytes(SAVED["gru"]()))
    how, detail = damage
    if how == "truncate":
        data = data[:int(detail * len(data))]
    else:
        for where, xor in detail:
            data[int(where * len(data))] ^= xor
    attempt(lambda: fastrnn.load(io.BytesIO(bytes(data))))


def saved_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    fastrnn.save(obj, buffer)
    return buffer.getvalue()


def edited(obj, edit: Callable[[Dict[str, Any]], None]) -> io.BytesIO:
    """obj saved, with edit applied to its JSON configuration."""
    arrays = archive_of(obj)
    cfg = json.loads(str(arrays[CONFIG_KEY][()]))
    edit(cfg)
    arrays[CONFIG_KEY] = np.array(json.dumps(cfg))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("where,value", [("state", -1), ("inc", 2**128), ("uinteger", -1),
                                         ("uinteger", 2**64), ("has_uint32", 2**64)])
def test_load_of_an_out_of_range_rng_state(where, value):
    def edit(cfg):
        rng = cfg["rng"]
        (rng if where in ("uinteger", "has_uint32") else rng["state"])[where] = value
    attempt(lambda: fastrnn.load(edited(fastrnn.GRU(3, 4, seed=0), edit)))


@pytest.mark.parametrize("layer", ["GRU", 3, None, ["GRU"]])
def test_load_of_a_bidirectional_whose_layer_is_not_an_object(layer):
    def edit(cfg):
        cfg["layer"] = layer
    bi = fastrnn.Bidirectional(fastrnn.GRU(3, 4, seed=0))
    with pytest.raises(ValueError, match="not a fastrnn file"):
        fastrnn.load(edited(bi, edit))


HUGE_LAYERS = """
import os, resource, sys, time
if "asan" not in os.environ.get("LD_PRELOAD", ""):   # (ASan reserves terabytes)
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))   # a bug fails here, not the host
import fastrnn
before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
try:
    fastrnn.{cls}(4, 8, num_layers={n})
except (ValueError, MemoryError) as e:
    # the peak's growth over the import's (under ASan the import alone is ~1 GB)
    grown_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mb
    print(type(e).__name__, round(time.perf_counter() - start, 2), round(grown_mb))
"""


def test_huge_num_layers_fails_fast():
    """A child process, capped at 4 GiB and 8 s: a fixed library raises in well under
    a second; the bug times out (or fills the cap)."""
    code = HUGE_LAYERS.format(cls="LSTM", n=2**40)
    try:
        # (run from the directory of the fastrnn imported here: -c puts it first)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=8, cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    except subprocess.TimeoutExpired:
        pytest.fail("LSTM(4, 8, num_layers=2**40) ran for 8 s without raising")
    assert done.returncode == 0, done.stderr[-2000:]
    kind, seconds, grown_mb = done.stdout.split()
    assert float(seconds) < 2 and float(grown_mb) < 1024, done.stdout


# ------------------------------------------------- bugs the properties found

@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.GRUCell, fastrnn.LSTMCell])
def test_rejected_inference_step_keeps_the_tape(cls):
    cell = cls(3, 4, seed=0)
    lstm = cls is fastrnn.LSTMCell
    out = cell(np.ones((2, 3), np.float32))                 # a training step: a tape
    with pytest.raises(ValueError, match="x"):
        cell(np.ones((1, 1, 3), np.float32), training=False)   # rejected (x of rank 3)
    d = np.ones((2, 4), np.float32)
    dx, _ = cell.backward((d, d) if lstm else d)            # still the training step's
    assert dx.shape == (2, 3) and out is not None
