#!/usr/bin/env python3
"""Fuzz smoke run: random short call sequences on fastrnn's C backend, in child processes.

API.md promises that nothing a caller passes crashes the process. This script
generates cases (a case: construct a layer, cell or Bidirectional wrapper,
then up to three calls among forward, backward, load_state_dict, save and
load through a temporary directory, set_num_threads, eval/train/zero_grad),
with sizes, shapes, dtypes, memory layouts and values both valid and not,
and runs them in batches, each batch in a child process. A call may return
or raise ValueError, TypeError or MemoryError (and OSError from save/load);
anything else fails the run:

- a child killed by a signal (segfault, abort, a sanitizer's report),
- a child that raised another exception (its traceback is printed),
- a child still running after --timeout seconds (a hang).

A crash names the case it happened in (each child prints the index of every
case before running it) and the command that reruns that case alone.

    python tools/fuzz_smoke.py                         # 300 cases, seed 0
    python tools/fuzz_smoke.py --seed 7 --cases 5000 --budget 600
    python tools/fuzz_smoke.py --seed 0 --case 137     # one case, in this process, verbose

Cases are a pure function of (seed, index), so a run is reproducible, and
every case starts from the same thread setting. Sizes are small, or beyond
the kernels' C ints or absurd (2**31 and up: refused at once); each child
runs under an address-space limit (--memory-mb) so a bug that allocates
without bound fails the child, not the machine. Exit status: 0 when every case passed, 1 otherwise; the last
line is a summary.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

# Which fastrnn runs: the one in the directory given by --path (the tests pass
# the one they imported), by default the installed one (the checkout's src/
# holds no built extension).

ALLOWED = (ValueError, TypeError, MemoryError)
ALLOWED_IO = ALLOWED + (OSError,)      # save/load document OSError for the file itself

# sizes: mostly small, now and then odd or absurd (numpy refuses 2**40+ at once)
SMALL = [1, 2, 3, 4, 5, 8]
FAULTS = ["rank-", "rank+", "wider", "narrower", "empty", "batch+"]
ODD_SIZES = [0, -1, 2**31, 2**32, 2**40, 2**62, 2**63, 2**64, 2.0, "3", None, True]
BATCHES = [1, 2, 3, 8, 16, 17, 33, 40, 70]     # every loop path: dots, packed, slices, BLAS
STEPS = [1, 2, 5, 13]
DTYPES = ["float32", "float64", "float16", "int8", "int64", "bool", "complex64", "object",
          ">f8", "str"]
LAYOUTS = ["c"] * 4 + ["fortran", "strided", "unaligned", "readonly", "list"]
VALUES = ["huge", "nan", "inf", "zeros", "denormal", "large-int"]
ACTIVATIONS = ["sigmoid", "tanh", "relu", "affine", "leaky_relu", "thresholded_relu",
               "scaled_tanh", "hard_sigmoid", "elu", "softsign", "softplus", "Tanh", "swish"]
THREADS = [1, 1, 2, 3, 4, 8, 64, 0, -1, 2**31, 2**63, 1.5, True, "2"]


# ============================================================== generation
# A case is a list of plain dicts (printable, JSON-able); arrays are made from
# their "seed" only when the case runs.

def _construct(r: random.Random) -> Dict[str, Any]:
    """Valid arguments, and in a fifth of the cases one odd one."""
    cls = r.choice(["RNN", "LSTM", "GRU", "RNN", "LSTM", "GRU", "Bidirectional",
                    "RNNCell", "LSTMCell", "GRUCell"])
    inner = r.choice(["RNN", "LSTM", "GRU"]) if cls == "Bidirectional" else cls
    spec: Dict[str, Any] = {"op": "construct", "cls": cls, "I": r.choice(SMALL),
                            "H": r.choice(SMALL)}
    kw: Dict[str, Any] = {"seed": r.randrange(1000)}
    if r.random() < 0.3:
        kw["dtype"] = "float64"
    if r.random() < 0.2:
        kw["bias"] = False
    if inner == "RNN" and r.random() < 0.3:
        kw["nonlinearity"] = "relu"
    if inner == "GRU" and r.random() < 0.3:
        kw["reset_after"] = False
    if not cls.endswith("Cell"):
        if cls != "Bidirectional":
            kw["num_layers"] = r.choice([1, 1, 2, 3])
            if r.random() < 0.3:
                kw["bidirectional"] = True
            elif r.random() < 0.2:
                kw["direction"] = "reverse"
            if kw["num_layers"] > 1 and r.random() < 0.2:
                kw["dropout"] = r.choice([0.3, 0.5])
        for name, p, values in [("batch_first", 0.4, [True]), ("stateful", 0.15, [True]),
                                ("clip", 0.15, [0.5, 3.0, float("inf")])]:
            if r.random() < p:
                kw[name] = r.choice(values)
        if r.random() < 0.15:
            n = {"RNN": 1, "LSTM": 3, "GRU": 2}[inner]
            kw["activations"] = [r.choice(ACTIVATIONS[:-1]) if r.random() < 0.7 else
                                 [r.choice(ACTIVATIONS[:-1]), r.uniform(-2, 2),
                                  r.uniform(-2, 2)] for _ in range(n)]
        if inner == "LSTM":
            if r.random() < 0.3 and spec["H"] > 1:
                kw["proj_size"] = r.randrange(1, spec["H"])
            if r.random() < 0.2:
                kw["peepholes"] = True
            if r.random() < 0.15:
                kw["input_forget"] = True
    if cls == "Bidirectional":
        spec["inner"] = inner
        spec["merge_mode"] = r.choice(["concat", "sum", "mul", "ave"])
    if r.random() < 0.2:                                  # one odd argument
        odd = r.choice(["I", "H", "dtype", "bias", "num_layers", "direction", "dropout",
                        "clip", "activations", "proj_size", "merge_mode", "nonlinearity"])
        if odd in ("I", "H"):
            spec[odd] = r.choice(ODD_SIZES)
        elif odd == "merge_mode" and cls == "Bidirectional":
            spec[odd] = r.choice(["max", None])
        elif odd == "nonlinearity" and inner == "RNN":
            kw[odd] = r.choice(["gelu", None])
        elif odd == "activations":
            kw[odd] = [r.choice(ACTIVATIONS)] * r.randint(0, 4)
        elif odd == "proj_size" and inner == "LSTM":
            kw[odd] = r.choice([-1, spec["H"], 100, 1.5])
        elif odd in ("dtype", "bias", "num_layers", "direction", "dropout", "clip"):
            kw[odd] = r.choice({"dtype": ["float16", "int32", None, "x"],
                                "bias": [1, None], "num_layers": [0, -1, 2.0, 2**31, 2**40],
                                "direction": ["sideways", None], "dropout": [1.0, -0.1],
                                "clip": [0.0, -1.0, float("nan")]}[odd])
    spec["kwargs"] = kw
    return spec


def _array_spec(r: random.Random, odd: bool = False) -> Dict[str, Any]:
    """How an array argument is made: dtype, memory layout, values. odd: a dtype
    the layers refuse (complex, object, str) or values that are not ordinary."""
    return {"dtype": r.choice(DTYPES[2:]) if odd else r.choice(["native"] * 5 + DTYPES[:2]),
            "layout": r.choice(LAYOUTS), "values": r.choice(VALUES) if odd or
            r.random() < 0.1 else "normal"}


def _forward(r: random.Random) -> Dict[str, Any]:
    """A forward call; in a third of them one argument is odd."""
    odd = r.choice([None] * 12 + ["x", "x-shape", "state", "lengths", "x-values"])
    return {"op": "forward", "T": r.choice(STEPS), "B": r.choice(BATCHES),
            "unbatched": r.random() < 0.15, "x": _array_spec(r, odd == "x"),
            "x_fault": r.choice(FAULTS) if odd == "x-shape" else None,
            "state": r.choice(["none", "ok"]) if odd != "state" else "fault",
            "state_fault": r.choice(FAULTS), "state_array": _array_spec(r),
            "lengths": r.choice(["none", "ok", "ok", "zeros", "floats"]) if odd != "lengths"
            else r.choice(["over", "negative", "short", "huge", "halves"]),
            "training": r.choice([None, None, True, False]), "seed": r.randrange(2**31)}


def _backward(r: random.Random) -> Dict[str, Any]:
    odd = r.choice([None] * 8 + ["d_output", "d_state", "array"])
    return {"op": "backward",
            "d_output": "fault" if odd == "d_output" else r.choice(["match"] * 4 + ["none"]),
            "d_output_fault": r.choice(FAULTS),
            "d_state": "fault" if odd == "d_state" else r.choice(["none", "match"]),
            "array": _array_spec(r, odd == "array"), "seed": r.randrange(2**31)}


def _load_state_dict(r: random.Random) -> Dict[str, Any]:
    return {"op": "load_state_dict", "how": r.choice(
        ["same", "scaled", "nan", "wrong-shape", "missing", "extra", "int", "list",
         "transposed", "strided", "complex", "none", "scalar"]), "seed": r.randrange(2**31)}


def _save_load(r: random.Random) -> Dict[str, Any]:
    return {"op": "save_load", "to": r.choice(["path", "bytes"]),
            "edit": r.choice([None, None, None, "hidden_size", "input_size", "dtype",
                              "class", "proj_size", "activations", "weights"]),
            "value": r.choice([0, -1, 3, 2**40, "x", None, [1], 1.5])}


def _set_num_threads(r: random.Random) -> Dict[str, Any]:
    return {"op": "set_num_threads", "n": r.choice(THREADS)}


def _mode(r: random.Random) -> Dict[str, Any]:
    return {"op": "mode", "how": r.choice(["eval", "train", "zero_grad", "reset_state"])}


def make_case(seed: int, index: int) -> List[Dict[str, Any]]:
    """The case (seed, index): construct, then 0 to 3 further calls."""
    r = random.Random(f"fastrnn-fuzz:{seed}:{index}")
    case = [_construct(r)]
    makers = [_forward] * 5 + [_backward] * 3 + [_load_state_dict, _save_load,
                                                  _set_num_threads, _mode]
    for _ in range(r.randint(0, 3)):
        case.append(r.choice(makers)(r))
    return case


# ================================================================ running

class Case:
    """Runs one case's calls on the C backend, keeping the object they act on."""

    def __init__(self, tmp: str, verbose: bool = False) -> None:
        import numpy as np
        import fastrnn
        self.np, self.fastrnn = np, fastrnn
        self.obj: Any = None
        self.out_shape: Optional[Tuple[int, ...]] = None
        self.verbose = verbose
        self.tmp = tmp           # save_load's files

    # -- arrays

    def _values(self, rng, shape, how: str):
        np = self.np
        if how == "huge":
            return rng.standard_normal(shape) * 1e30
        if how == "nan":
            a = rng.standard_normal(shape)
            a[rng.random(shape) < 0.3] = np.nan
            return a
        if how == "inf":
            a = rng.standard_normal(shape)
            a[rng.random(shape) < 0.3] = np.inf
            return a
        if how == "zeros":
            return np.zeros(shape)
        if how == "denormal":
            return rng.standard_normal(shape) * 1e-310
        if how == "large-int":
            return rng.integers(-2**60, 2**60, shape).astype(np.float64)
        return rng.uniform(-2, 2, shape)

    def _array(self, rng, shape, spec: Dict[str, Any], native) -> Any:
        np = self.np
        a = self._values(rng, shape, spec["values"])
        dtype = spec["dtype"]
        with np.errstate(all="ignore"):
            if dtype == "native":
                a = a.astype(native)
            elif dtype == "str":
                a = np.full(shape, "a")
            elif dtype == "object":
                a = a.astype(object)
            else:
                a = a.astype(dtype)
        layout = spec["layout"]
        if layout == "fortran":
            return np.asfortranarray(a)
        if layout == "strided" and a.ndim:
            wide = np.repeat(a, 2, axis=-1)
            return wide[..., ::2]
        if layout == "unaligned" and a.dtype.kind in "fc" and a.size:
            raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
            u = raw.view(a.dtype).reshape(a.shape)
            u[...] = a
            return u
        if layout == "readonly":
            a.flags.writeable = False
            return a
        if layout == "list":
            return a.tolist()
        return a

    @staticmethod
    def _fault(shape: Tuple[int, ...], fault: Optional[str]) -> Tuple[int, ...]:
        if fault is None or not shape:
            return shape
        return {"rank-": shape[1:], "rank+": (1,) + shape, "wider": shape[:-1] + (shape[-1] + 1,),
                "narrower": shape[:-1] + (max(shape[-1] - 1, 0),),
                "empty": (0,) + shape[1:], "batch+": shape[:1] + (shape[1] + 1,) + shape[2:]
                if len(shape) > 2 else shape + (1,)}[fault]

    # -- what the object is

    def _layer(self):
        obj = self.obj
        if isinstance(obj, self.fastrnn.Bidirectional):
            return obj.layer
        return getattr(obj, "_layer", obj)

    def _is_cell(self) -> bool:
        f = self.fastrnn
        return isinstance(self.obj, (f.RNNCell, f.LSTMCell, f.GRUCell))

    def _is_lstm(self) -> bool:
        return isinstance(self._layer(), self.fastrnn.LSTM)

    # -- the calls

    def construct(self, spec):
        f = self.fastrnn
        kw = dict(spec["kwargs"])
        if isinstance(kw.get("dtype"), str) and kw["dtype"] in ("float64", "float16", "int32"):
            kw["dtype"] = getattr(self.np, kw["dtype"])
        if spec["cls"] == "Bidirectional":
            inner = getattr(f, spec["inner"])(spec["I"], spec["H"], **kw)
            self.obj = f.Bidirectional(inner, merge_mode=spec["merge_mode"])
        else:
            self.obj = getattr(f, spec["cls"])(spec["I"], spec["H"], **kw)

    def forward(self, spec):
        np = self.np
        layer = self._layer()
        rng = np.random.default_rng(spec["seed"])
        I, H, dtype = layer.input_size, layer.hidden_size, layer.dtype
        T, B, unbatched = spec["T"], spec["B"], spec["unbatched"]
        if self._is_cell():
            lead: Tuple[int, ...] = () if unbatched else (B,)
            st_shape = lead + (H,)
        else:
            lead = (T,) if unbatched else ((B, T) if layer.batch_first else (T, B))
            DL = layer.num_directions * layer.num_layers
            st_shape = (DL,) + (() if unbatched else (B,)) + (layer.proj_size or H,)
        x = self._array(rng, self._fault(lead + (I,), spec["x_fault"]), spec["x"], dtype)
        state = None
        if spec["state"] != "none":
            shape = self._fault(st_shape, spec["state_fault"] if spec["state"] == "fault"
                                else None)
            h = self._array(rng, shape, spec["state_array"], dtype)
            if self._is_lstm():
                c_shape = shape[:-1] + (H,)
                state = (h, self._array(rng, c_shape, spec["state_array"], dtype))
            else:
                state = h
        training = spec["training"]
        if self._is_cell():
            out = self.obj(x, state, training=training)
        else:
            n = 1 if unbatched else B
            lengths = {"none": lambda: None, "ok": lambda: rng.integers(0, T + 1, n),
                       "zeros": lambda: np.zeros(n, int), "over": lambda: np.full(n, T + 1),
                       "negative": lambda: np.full(n, -1),
                       "floats": lambda: rng.integers(0, T + 1, n).astype(float),
                       "halves": lambda: rng.integers(0, T + 1, n) + 0.5,
                       "short": lambda: np.ones(max(n - 1, 0), int),
                       "huge": lambda: np.full(n, 2**62)}[spec["lengths"]]()
            out = self.obj(x, state, lengths=lengths, training=training)
        first = out[0] if isinstance(out, tuple) else out
        self.out_shape = getattr(first, "shape", None)
        return out

    def backward(self, spec):
        np = self.np
        layer = self._layer()
        rng = np.random.default_rng(spec["seed"])
        dtype = layer.dtype
        shape = self.out_shape or (3, 2, layer.hidden_size)
        if self._is_cell():
            d = self._array(rng, shape, spec["array"], dtype)
            if spec["d_output"] == "fault":
                d = self._array(rng, self._fault(shape, spec["d_output_fault"]), spec["array"],
                                dtype)
            if self._is_lstm():
                return self.obj.backward((d, None if spec["d_state"] == "none" else d))
            return self.obj.backward(d)
        dy = None
        if spec["d_output"] != "none":
            fault = spec["d_output_fault"] if spec["d_output"] == "fault" else None
            dy = self._array(rng, self._fault(shape, fault), spec["array"], dtype)
        d_state = None
        if spec["d_state"] != "none":
            DL = layer.num_directions * layer.num_layers
            unbatched = len(shape) == 2
            B = 1 if unbatched else shape[0 if layer.batch_first else 1]
            st_shape = (DL,) + (() if unbatched else (B,)) + (layer.proj_size or
                                                               layer.hidden_size,)
            if spec["d_state"] == "fault":
                st_shape = self._fault(st_shape, "wider")
            dh = self._array(rng, st_shape, spec["array"], dtype)
            d_state = (dh, None) if self._is_lstm() else dh
        return self.obj.backward(dy, d_state)

    def load_state_dict(self, spec):
        np = self.np
        rng = np.random.default_rng(spec["seed"])
        sd = self.obj.state_dict()
        how = spec["how"]
        names = sorted(sd)
        k = names[rng.integers(len(names))]
        if how == "none":
            return self.obj.load_state_dict(None)
        if how == "scaled":
            sd = {n: v * 1.5 for n, v in sd.items()}
        elif how == "nan":
            sd[k] = np.full_like(sd[k], np.nan)
        elif how == "wrong-shape":
            sd[k] = np.zeros(sd[k].shape + (1,))
        elif how == "missing":
            del sd[k]
        elif how == "extra":
            sd["weight_ih_l99"] = sd[k]
        elif how == "int":
            sd = {n: v.astype(np.int32) for n, v in sd.items()}
        elif how == "list":
            sd = {n: v.tolist() for n, v in sd.items()}
        elif how == "transposed":
            sd[k] = sd[k].T
        elif how == "strided":
            sd = {n: np.repeat(v, 2, axis=-1)[..., ::2] for n, v in sd.items()}
        elif how == "complex":
            sd[k] = sd[k].astype(np.complex64)
        elif how == "scalar":
            sd[k] = 1.0
        return self.obj.load_state_dict(sd)

    def save_load(self, spec):
        np, f = self.np, self.fastrnn
        if spec["to"] == "path":
            target: Any = os.path.join(self.tmp, "layer.npz")
        else:
            target = io.BytesIO()
        f.save(self.obj, target)
        if spec["edit"] is not None:
            if not isinstance(target, str):
                target.seek(0)
            with np.load(target, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            cfg = json.loads(str(arrays["__fastrnn__"][()]))
            args = cfg.get("layer", cfg).get("args", {})
            if spec["edit"] == "class":
                cfg["class"] = spec["value"]
            elif spec["edit"] == "weights":
                k = sorted(arrays)[-1]
                arrays[k] = np.zeros(arrays[k].shape[:-1] + (2,))
            elif spec["edit"] in args:
                args[spec["edit"]] = spec["value"]
            arrays["__fastrnn__"] = np.array(json.dumps(cfg))
            if isinstance(target, str):
                with open(target, "wb") as file:
                    np.savez(file, **arrays)
            else:
                target = io.BytesIO()
                np.savez(target, **arrays)
        if not isinstance(target, str):
            target.seek(0)
        self.obj = f.load(target)

    def set_num_threads(self, spec):
        self.fastrnn.set_num_threads(spec["n"])

    def mode(self, spec):
        how = spec["how"]
        if how == "reset_state":
            if hasattr(self.obj, "reset_state"):
                self.obj.reset_state()
        else:
            getattr(self.obj, how)()

    def run(self, case: List[Dict[str, Any]], stats: Dict[str, int]) -> None:
        """Every call of a case; an allowed error is counted and the case goes on
        (calls after a failed construct have no object and are skipped)."""
        for spec in case:
            op = spec["op"]
            if op != "construct" and self.obj is None:
                stats["skipped"] = stats.get("skipped", 0) + 1
                continue
            allowed = ALLOWED_IO if op == "save_load" else ALLOWED
            try:
                getattr(self, op)(spec)
                outcome = "returned"
            except allowed as e:
                if not str(e).strip():
                    raise AssertionError(f"{type(e).__name__} with an empty message") from e
                outcome, message = type(e).__name__, str(e)
            stats[outcome] = stats.get(outcome, 0) + 1
            if self.verbose:
                print(f"  {op} {json.dumps(spec, default=repr)}: {outcome}")
                if outcome != "returned":
                    print(f"    {outcome}: {message}")


def run_child(seed: int, first: int, count: int, memory_mb: int,
              fail_at: Optional[Tuple[int, str]] = None, tmp_root: Optional[str] = None) -> int:
    """Run cases first..first+count-1 here; print each index before its case and
    the counts at the end. An exception that is not allowed propagates (exit 1).
    fail_at (index, "segfault" | "abort" | "raise") makes that case fail on
    purpose: the negative controls of the parent's detection."""
    if memory_mb:
        import resource
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import fastrnn
    threads = fastrnn.get_num_threads()
    stats: Dict[str, int] = {}
    # (inside the parent's directory: a child killed by a signal cleans up nothing)
    with tempfile.TemporaryDirectory(prefix="fastrnn-fuzz-", dir=tmp_root) as tmp:
        for index in range(first, first + count):
            print(f"case {index}", flush=True)
            fastrnn.set_num_threads(threads)    # every case starts from the same setting
            if fail_at and fail_at[0] == index:
                if fail_at[1] == "segfault":
                    os.kill(os.getpid(), signal.SIGSEGV)
                if fail_at[1] == "abort":
                    os.abort()
                raise RuntimeError("a deliberate failure (--fail-at)")
            Case(tmp).run(make_case(seed, index), stats)
    print("stats " + json.dumps(stats), flush=True)
    return 0


# ================================================================= parent

def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=300)
    p.add_argument("--per-child", type=int, default=50, help="cases per child process")
    p.add_argument("--jobs", type=int, default=2, help="children at once")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds after which no new child starts (the run then fails)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a child may run")
    p.add_argument("--memory-mb", type=int, default=4096,
                   help="address-space limit of a child (0: none)")
    p.add_argument("--min-cases", type=int,
                   help="cases that must have run when the budget is spent (default: all)")
    p.add_argument("--path", default="",
                   help="directory whose fastrnn package to run (default: the installed one)")
    p.add_argument("--case", type=int, help="run this one case here, verbosely")
    p.add_argument("--child", nargs=2, type=int, metavar=("FIRST", "COUNT"),
                   help=argparse.SUPPRESS)
    p.add_argument("--fail-at", nargs=2, metavar=("INDEX", "HOW"), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    fail_at = (int(args.fail_at[0]), args.fail_at[1]) if args.fail_at else None
    args.path = args.path and os.path.abspath(args.path)
    if args.path and os.path.isdir(os.path.join(args.path, "fastrnn")):
        sys.path.insert(0, args.path)

    if args.child:
        return run_child(args.seed, args.child[0], args.child[1], args.memory_mb, fail_at,
                         args.tmp)
    if args.case is not None:
        case = make_case(args.seed, args.case)
        print(f"case {args.case} (seed {args.seed}):")
        stats: Dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="fastrnn-fuzz-") as tmp:
            Case(tmp, verbose=True).run(case, stats)
        print(f"passed: {stats}")
        return 0

    here = os.path.abspath(__file__)
    batches = [(first, min(args.per_child, args.cases - first))
               for first in range(0, args.cases, args.per_child)]
    pending, running, failures = list(batches), [], []
    totals: Dict[str, int] = {}
    done_cases = children = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fastrnn-fuzz-out-") as out_dir:
        while pending or running:
            while pending and len(running) < args.jobs and \
                    time.monotonic() - start < args.budget:
                first, count = pending.pop(0)
                log = open(os.path.join(out_dir, f"{first}.log"), "w+")
                cmd = [sys.executable, here, "--seed", str(args.seed), "--path", args.path,
                       "--memory-mb", str(args.memory_mb), "--tmp", out_dir,
                       "--child", str(first), str(count)]
                if fail_at:
                    cmd += ["--fail-at", str(fail_at[0]), fail_at[1]]
                children += 1
                running.append((first, count, log, time.monotonic(),
                                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL)))
            if pending and not running:
                break                                   # out of budget
            time.sleep(0.05)
            for item in list(running):
                first, count, log, began, proc = item
                timed_out = time.monotonic() - began > args.timeout
                if proc.poll() is None and not timed_out:
                    continue
                if timed_out and proc.poll() is None:
                    proc.kill()
                    proc.wait()
                running.remove(item)
                log.seek(0)
                text = log.read()
                log.close()
                started = [int(line.split()[1]) for line in text.splitlines()
                           if line.startswith("case ")]
                last = started[-1] if started else first
                if proc.returncode == 0 and not timed_out:
                    done_cases += count
                    stats = json.loads(text.splitlines()[-1].split(" ", 1)[1])
                    for k, v in stats.items():
                        totals[k] = totals.get(k, 0) + v
                    continue
                done_cases += len(started)
                why = f"hung (> {args.timeout:g} s)" if timed_out else describe(proc.returncode)
                failures.append(last)
                if last + 1 < first + count:      # the rest of the batch, in a new child
                    pending.insert(0, (last + 1, first + count - last - 1))
                case = json.dumps(make_case(args.seed, last), default=repr)
                tail = "\n".join(text.splitlines()[-40:])
                print(f"FAIL case {last}: child of cases {first}..{first + count - 1} {why}\n"
                      f"  calls: {case}\n"
                      f"  rerun: python {os.path.relpath(here)} --seed {args.seed} "
                      f"--case {last}\n  output:\n{tail}\n", flush=True)
    elapsed = time.monotonic() - start
    import fastrnn
    print(f"fastrnn: {os.path.dirname(fastrnn.__file__)}")
    calls = ", ".join(f"{v} {k}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]))
    skipped = sum(count for _, count in pending)
    short = done_cases < (args.cases if args.min_cases is None else args.min_cases)
    print(f"fuzz smoke: seed {args.seed}, {done_cases} of {args.cases} cases in "
          f"{children} children, {elapsed:.1f} s; calls: {calls}; "
          f"{len(failures)} failed" + (f" (cases {failures})" if failures else "") +
          (f"; {skipped} not run: budget of {args.budget:g} s spent" if skipped else "") +
          (" (too few)" if short else ""))
    return 1 if failures or short else 0


if __name__ == "__main__":
    sys.exit(main())
