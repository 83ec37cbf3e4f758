"""The implementations the report times, fastrnn's two backends and its peers, as
adapters with one interface (``Impl``) built from the same weights, and the check
that they agree before timing.

    c            fastrnn, backend "c" (the compiled kernels)
    numpy        fastrnn, backend "numpy" (the reference). Skipped at S4 and S5, where a
                 call takes seconds ("skipped" in the table); timed everywhere else.
    torch        torch.nn.RNN / LSTM / GRU on the CPU (a peer)
    onnxruntime  the model fastrnn.export_onnx writes in an InferenceSession: one ONNX
                 RNN / LSTM / GRU node whose Y the graph lays out as (T, B, D*H), as
                 the others return it, inside the timed call; inference only (a peer;
                 "n/a" in training rows)
A peer that is not installed shows "n/a"; one whose construction fails shows "error";
one whose outputs disagree with the reference shows "mismatch" (not timed). Neither
stops the run. The weights are a seeded torch module's state_dict (fastrnn's own
seeded initialisation when torch is absent), loaded into every implementation; ONNX
gets them through a fastrnn layer holding them and fastrnn.export_onnx (which reorders
the gates and concatenates the biases).

Checks before timing: each implementation's result (output; after training also dx and
every parameter gradient) must agree with the reference implementation's (torch when
installed, else fastrnn numpy where it runs, else fastrnn c) within float32 tolerance,
max abs error <= tol * max(1, max |reference|), tol 1e-4 for output and dx, 5e-4 for
the gradients (``TOLERANCE`` and ``compare``, which bench/conftest.py uses too).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Dict, Optional, Tuple

import numpy as np

import fastrnn
from fastrnn.bench.grid import DEFAULT_THREADS, MODES, SEED, Spec

IMPLS = ("c", "numpy", "torch", "onnxruntime")
PEERS = ("torch", "onnxruntime")

# float32 agreement, here and in bench/: max abs error <= tol * max(1, max |reference|);
# the implementations sum in different orders, and gradients sum over T*B rows
TOLERANCE = {"output": 1e-4, "dx": 1e-4, "grads": 5e-4}

Result = Dict[str, np.ndarray]


@dataclasses.dataclass
class Problem:
    """The shared data of one Spec: weights under PyTorch's names, x (T, B, I) and
    d_output (T, B, D*H), in the Spec's dtype."""

    spec: Spec
    weights: Dict[str, np.ndarray]
    x: np.ndarray
    d_output: np.ndarray


def optional_module(module: str):
    """The module, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module(module)
    except Exception:           # ImportError, or a broken install's OSError
        return None


def unavailable(impl: str) -> Optional[str]:
    """Why impl cannot run here (a missing package), or None."""
    needs = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime")}.get(impl, ())
    missing = [m for m in needs if optional_module(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def torch_or_none():
    """The torch module, or None when ``unavailable("torch")``."""
    return optional_module("torch") if unavailable("torch") is None else None


def make_weights(spec: Spec, seed: int = SEED) -> Dict[str, np.ndarray]:
    """A seeded torch module's state_dict as float arrays (fastrnn's seeded init,
    the same distribution, when torch is absent)."""
    torch = torch_or_none()
    if torch is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _torch_module(torch, spec)
        return {k: v.detach().numpy().astype(spec.dtype) for k, v in module.state_dict().items()}
    return _fastrnn_layer(spec, seed=seed).state_dict()


def make_problem(spec: Spec, seed: int = SEED) -> Problem:
    """The Problem of a Spec: make_weights(spec, seed), and x and d_output drawn
    from a generator seeded with seed + 1."""
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((spec.T, spec.B, spec.I)).astype(spec.dtype)
    d_output = rng.standard_normal((spec.T, spec.B, spec.D * spec.H)).astype(spec.dtype)
    return Problem(spec, make_weights(spec, seed), x, d_output)


# ------------------------------------------------------------------ adapters

class Impl:
    """One implementation of one Problem. ``step(mode)`` is what is timed;
    ``result(mode)`` the last call's tensors in fastrnn's layout and names:
    {"output" (T, B, D*H)} after infer, plus "dx" (T, B, I) and "grads[<name>]"
    after train."""

    name = ""
    modes: Tuple[str, ...] = MODES

    def infer(self) -> None:
        raise NotImplementedError

    def train(self) -> None:
        raise NotImplementedError

    def step(self, mode: str) -> Callable[[], None]:
        """The call to time for mode ("infer" or "train")."""
        if mode not in self.modes:
            raise ValueError(f"{self.name}: mode {mode!r} not supported")
        return {"infer": self.infer, "train": self.train}[mode]

    def result(self, mode: str) -> Result:
        raise NotImplementedError


def _fastrnn_layer(spec: Spec, backend: str = "c", seed: Optional[int] = None,
                   weights: Optional[Dict[str, np.ndarray]] = None):
    """The fastrnn layer of a Spec, seeded or holding `weights` (PyTorch's names)."""
    cls = {"rnn_tanh": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[spec.base]
    layer = cls(spec.I, spec.H, bidirectional=spec.D == 2, dtype=np.dtype(spec.dtype),
                seed=seed, backend=backend)
    if weights is not None:
        layer.load_state_dict(weights)
    return layer


class FastrnnImpl(Impl):
    """fastrnn on backend "c" or "numpy"."""

    def __init__(self, problem: Problem, backend: str = "c", threads: int = DEFAULT_THREADS):
        self.name = backend
        self.layer = _fastrnn_layer(problem.spec, backend, weights=problem.weights)
        self.x, self.d_output = problem.x, problem.d_output
        self._output = self._dx = None

    def infer(self) -> None:
        self._output = self.layer(self.x, training=False)[0]

    def train(self) -> None:
        self.layer.zero_grad()
        self._output = self.layer(self.x, training=True)[0]
        self._dx = self.layer.backward(self.d_output)[0]

    def result(self, mode: str) -> Result:
        out = {"output": self._output}
        if mode == "train":
            out["dx"] = self._dx
            out.update({f"grads[{k}]": g.copy() for k, g in self.layer.grads.items()})
        return out


def _torch_module(torch, spec: Spec):
    nn = torch.nn
    cls = {"rnn_tanh": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[spec.base]
    kwargs = {"nonlinearity": "tanh"} if spec.base == "rnn_tanh" else {}
    module = cls(spec.I, spec.H, bidirectional=spec.D == 2, **kwargs)
    return module.to({"float32": torch.float32, "float64": torch.float64}[spec.dtype])


class TorchImpl(Impl):
    """torch.nn.RNN/LSTM/GRU; infer under torch.inference_mode, train with autograd."""

    name = "torch"

    def __init__(self, problem: Problem, threads: int = DEFAULT_THREADS):
        import torch
        self.torch = torch
        self.module = _torch_module(torch, problem.spec)
        self.module.load_state_dict({k: torch.from_numpy(v.copy())
                                     for k, v in problem.weights.items()})
        self.x = torch.from_numpy(problem.x)
        self.x_train = self.x.clone().requires_grad_(True)
        self.d_output = torch.from_numpy(problem.d_output)
        self._output = None

    def infer(self) -> None:
        with self.torch.inference_mode():
            self._output = self.module(self.x)[0]

    def train(self) -> None:
        self.module.zero_grad(set_to_none=True)
        self.x_train.grad = None
        output = self.module(self.x_train)[0]
        output.backward(self.d_output)
        self._output = output

    def result(self, mode: str) -> Result:
        out = {"output": self._output.detach().numpy()}
        if mode == "train":
            out["dx"] = self.x_train.grad.numpy()
            out.update({f"grads[{k}]": p.grad.numpy().copy()
                        for k, p in self.module.named_parameters()})
        return out


class OrtImpl(Impl):
    """fastrnn.export_onnx's model of the problem's layer in an onnxruntime
    InferenceSession (CPU), inference only."""

    name = "onnxruntime"
    modes = ("infer",)

    def __init__(self, problem: Problem, threads: int = DEFAULT_THREADS):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # inputs X (T, B, I) only: full lengths, zero initial states
        model = fastrnn.export_onnx(_fastrnn_layer(problem.spec, weights=problem.weights),
                                    sequence_lens=False, initial_state=False)
        self.session = ort.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.feeds = {"X": problem.x}
        self._output = None

    def infer(self) -> None:
        self._output = self.session.run(["Y"], self.feeds)[0]   # (T, B, D*H)

    def train(self) -> None:
        raise ValueError("onnxruntime: inference only")

    def result(self, mode: str) -> Result:
        return {"output": self._output}


def make_impl(impl: str, problem: Problem, threads: int = DEFAULT_THREADS) -> Impl:
    """The adapter named impl ("c", "numpy", "torch", "onnxruntime") of a problem.
    `threads` is ONNX Runtime's intra-op count; the others follow thread_limits."""
    if impl in ("c", "numpy"):
        return FastrnnImpl(problem, impl, threads)
    if impl == "torch":
        return TorchImpl(problem, threads)
    if impl == "onnxruntime":
        return OrtImpl(problem, threads)
    raise ValueError(f"impl: expected one of {list(IMPLS)}, got {impl!r}")


def supports(impl: str, mode: str) -> bool:
    """Whether impl runs mode: onnxruntime runs inference only."""
    return not (impl == "onnxruntime" and mode != "infer")


def compare(got: Result, expected: Result) -> Optional[str]:
    """None when got agrees with expected (the same tensor names, shapes, finite
    values, within TOLERANCE), else a description of the first disagreement."""
    if got.keys() != expected.keys():
        return f"tensors {sorted(got)}, expected {sorted(expected)}"
    for name, value in got.items():
        ref = np.asarray(expected[name], dtype=np.float64)
        value = np.asarray(value)
        if value.shape != ref.shape:
            return f"{name}: shape {value.shape}, expected {ref.shape}"
        if not np.all(np.isfinite(value)):
            return f"{name}: non-finite values"
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        err = float(np.max(np.abs(value.astype(np.float64) - ref))) if ref.size else 0.0
        tol = TOLERANCE[name.split("[")[0]] * scale
        if err > tol:
            return f"{name}: max abs error {err:.3e} > {tol:.1e}"
    return None
