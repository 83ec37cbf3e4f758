"""fastrnn against its peers: PyTorch and ONNX Runtime on one grid, in one process.

    python -m fastrnn.bench                       # the full grid, 2 threads (5-9 minutes)
    python -m fastrnn.bench --quick               # S1 and S2, fewer rounds (about a minute)
    python -m fastrnn.bench --cells lstm,gru --shapes S2,S3 --modes infer
    python -m fastrnn.bench --shapes 20x4x32x32 --rounds 3    # a custom shape T x B x I x H
    python -m fastrnn.bench --threads 1 --json out.json --plot speedups.png

Prints Markdown: one row per (cell, shape, mode) with the milliseconds per call of
every implementation, fastrnn "c"'s speed-up over the best peer, its GFLOP/s and
percent of the machine's GEMM peak, and whether the row meets its targets; then a
single LSTMCell step from Python and the float64/float32 time ratio. Nothing is
asserted: the targets are reported.

Implementations (adapters with one interface, ``Impl``; all built from the same weights)
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

The grid (float32, ``--threads`` threads, 2 by default)
    cells   rnn_tanh, lstm, gru; bilstm (a bidirectional LSTM) at S3 only, or at every
            chosen shape when named in --cells
    shapes  (T, B, I, H)  S1 100,1,64,64 (one stream)  S2 50,16,128,128
            S3 100,64,256,256  S4 50,64,512,512  S5 25,128,1024,1024
    modes   infer  forward with nothing kept for backward (training=False, torch under
                   inference_mode, ORT)
            train  zero the gradients, forward, backward for the input and every weight
                   given a fixed d_output (no d_h_n), i.e. one BPTT step

Checks before timing: each implementation's result (output; after training also dx and
every parameter gradient) must agree with the reference implementation's (torch when
installed, else fastrnn numpy where it runs, else fastrnn c) within float32 tolerance,
max abs error <= tol * max(1, max |reference|), tol 1e-4 for output and dx, 5e-4 for
the gradients (``TOLERANCE`` and ``compare``, which bench/conftest.py uses too).

FLOPs (``flops``): GEMM work only, 2*M*N*K per GEMM, G gates (RNN 1, LSTM 4, GRU 3),
D directions:
    infer  D * [2*(T*B)*I*(G*H)   input projection X W_ih^T
              + T * 2*B*H*(G*H)]  recurrent h W_hh^T, every step
           = D * 2*T*B*G*H*(I + H)
    train  infer + D * [T * 2*B*(G*H)*H   dh_{t-1} = dP_t W_hh, every step
                      + 2*(G*H)*(T*B)*I   dW_ih += dP^T X
                      + 2*(G*H)*(T*B)*H   dW_hh += dP^T H_prev
                      + 2*(T*B)*(G*H)*I]  dX = dP W_ih
           = 3 * infer
The elementwise gate work (exp, tanh, products) is not counted, so GFLOP/s is the rate
of useful GEMM work; at S1 (B=1) it is far below peak by nature.

GEMM peak: the best float32 GEMM rate over square matmuls of a few sizes (1024, 2048,
3072 by default) through SciPy's sgemm (the OpenBLAS fastrnn calls), NumPy's matmul
(NumPy's OpenBLAS) and torch.mm (MKL), with the same thread limits, measured at the start
and at the end of the run, and the rows' GEMM probes (below); the peak is the best of
all of them (the machine's, not one library's). Per-library numbers are in the header
and the JSON.

Timing: interleaved rounds. In each round every implementation of the row runs a short
block, in an order that rotates from round to round: a 150 ms sleep (OpenBLAS's idle
threads spin for about 0.1 s after a call and slow down whatever runs next on 2 cores:
a torch call right after fastrnn's or SciPy's BLAS measured 35% slower without it), one
untimed call when a call is shorter than 100 ms, then enough timed calls to fill about
20 ms (at least one; no more once the
block has run 100 ms, when the machine's load has slowed calls down). A round's value is
the fastest call of its block; the reported time is the **minimum over rounds** (the
median over rounds and every round's value are in the JSON). Rounds are chosen per row to
fit a time budget (3 to 15 rounds; ``--rounds`` fixes the number). Interleaving spreads
every implementation's samples over the same stretch of time, so drift and the other
tenants of a shared machine hit all alike; the minimum is what each gets from the
machine at its quietest, the least noisy estimate when others load the cores (with 2
threads on 2 busy cores one descheduled thread stalls every parallel region, and medians
then measure the neighbours). The load average before and after is in the header.
Every row's rounds also time a fixed GEMM probe (1024 square, SciPy's sgemm), so each row
carries the machine's state while it was measured. Rows measured on a busy machine (the
probe below 60% of its best in the run) or unsteady ones (some implementation's median
over twice its minimum) are run again after the grid and the extra rows, worst first,
while the run is under 8 minutes (40 s with --quick); the rounds of both passes are pooled.
They are named in the header; rows still busy or unsteady are listed under the table.

Threads: threadpoolctl limits every BLAS and OpenMP pool in the process (NumPy's and
SciPy's OpenBLAS, torch's OpenMP), fastrnn.set_num_threads (where it exists) sets
fastrnn's, torch.set_num_threads torch's intra-op pool, and ONNX Runtime sessions get
intra_op_num_threads (inter-op 1). Limits are restored on return.

Targets (reported in "target met?", not asserted):
    every row    fastrnn c faster than the best peer (infer: the faster of torch and
                 onnxruntime; train: torch)
    S4, S5       fastrnn c at >= 90% of the measured GEMM peak
    S1 infer     >= 2x faster than onnxruntime;  S1 train  >= 5x faster than torch
    LSTMCell     one step from Python (B=1, I=H=64, inference) in <= 2 us
    float64      fastrnn c float64 time <= 2.2x its float32 time (S2, S3)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

import fastrnn
from fastrnn.kinds import NUM_GATES

# ------------------------------------------------------------------ the grid

SHAPES: Dict[str, Tuple[int, int, int, int]] = {   # name -> (T, B, I, H)
    "S1": (100, 1, 64, 64),          # one stream: latency of tiny GEMMs
    "S2": (50, 16, 128, 128),
    "S3": (100, 64, 256, 256),
    "S4": (50, 64, 512, 512),
    "S5": (25, 128, 1024, 1024),     # GEMM-bound
}
CELLS = ("rnn_tanh", "lstm", "gru", "bilstm")
DEFAULT_CELLS = ("rnn_tanh", "lstm", "gru")   # plus bilstm at S3
MODES = ("infer", "train")
IMPLS = ("c", "numpy", "torch", "onnxruntime")
PEERS = ("torch", "onnxruntime")
NUMPY_SKIPPED = ("S4", "S5")          # the reference takes seconds per call there
FLOAT64_SHAPES = ("S2", "S3")
DEFAULT_THREADS = 2
SEED = 0

# a grid cell -> the cell kind (fastrnn.kinds) it runs
BASE_CELL = {"rnn_tanh": "rnn_tanh", "lstm": "lstm", "gru": "gru", "bilstm": "lstm",
             "LSTMCell": "lstm"}

# float32 agreement, here and in bench/: max abs error <= tol * max(1, max |reference|);
# the implementations sum in different orders, and gradients sum over T*B rows
TOLERANCE = {"output": 1e-4, "dx": 1e-4, "grads": 5e-4}

# targets
PEAK_FRACTION = 0.90
PEAK_SHAPES = ("S4", "S5")
S1_INFER_VS_ORT = 2.0
S1_TRAIN_VS_TORCH = 5.0
CELL_STEP_US = 2.0
FLOAT64_RATIO = 2.2

# timing policy
BLOCK_SECONDS = 0.02         # timed calls per block fill about this much
PAUSE = 0.15                 # s of sleep before each block: the last one's threads go idle
BLOCK_LIMIT = 0.1            # a block stops adding calls after this many seconds
WARMUP_BELOW = 0.1           # an untimed call opens a block when a call is shorter
MIN_ROUNDS, MAX_ROUNDS = 3, 15
ROW_BUDGET = 5.0             # seconds of timed rounds per row (full grid)
QUICK_ROW_BUDGET, QUICK_MAX_ROUNDS = 1.0, 5
UNSTEADY = 2.0               # median/min over rounds above this is listed under the table
PROBE, PROBE_N = "gemm probe", 1024
PROBE_FLOPS = 2 * PROBE_N ** 3
LOADED_FRACTION = 0.6        # a row whose probe ran below this share of its best is re-run
SECOND_PASS_UNTIL = 480.0    # s into a run: busy or unsteady rows are re-run until then
QUICK_SECOND_PASS_UNTIL = 40.0
STAT = "min"                 # the reported statistic over rounds ("median" also kept)

Result = Dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One configuration: cell kind, shape (T, B, I, H) and dtype."""

    cell: str                       # rnn_tanh, lstm, gru, bilstm
    T: int
    B: int
    I: int
    H: int
    shape_name: str = ""            # "S1".. or "" for a custom shape
    dtype: str = "float32"

    @classmethod
    def make(cls, cell: str, shape: str, dtype: str = "float32") -> "Spec":
        """A grid name ("S3") or a custom "TxBxIxH"."""
        T, B, I, H = parse_shape(shape)
        return cls(cell, T, B, I, H, shape if shape in SHAPES else "", dtype)

    @property
    def base(self) -> str:
        return BASE_CELL[self.cell]

    @property
    def D(self) -> int:
        return 2 if self.cell == "bilstm" else 1

    @property
    def G(self) -> int:
        return NUM_GATES[self.base]

    @property
    def label(self) -> str:
        """The shape as bench/test_bench_backends.py names it: T100_B1_I64_H64."""
        return f"T{self.T}_B{self.B}_I{self.I}_H{self.H}"

    @property
    def name(self) -> str:
        return self.shape_name or self.label


def parse_shape(shape: str) -> Tuple[int, int, int, int]:
    """"S1".."S5" or "TxBxIxH" -> (T, B, I, H)."""
    if shape in SHAPES:
        return SHAPES[shape]
    try:
        dims = tuple(int(v) for v in shape.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"shape: expected one of {list(SHAPES)} or TxBxIxH with positive "
                         f"integers, got {shape!r}")
    return dims  # type: ignore[return-value]


def flops(spec: Spec, mode: str) -> int:
    """GEMM flops of one call (see the module docstring): 2*T*B*G*H*(I + H) per
    direction for inference, three times that for training."""
    forward = 2 * spec.T * spec.B * spec.G * spec.H * (spec.I + spec.H)
    return spec.D * forward * (3 if mode == "train" else 1)


# ------------------------------------------------------------------ problems

@dataclasses.dataclass
class Problem:
    """The shared data of one Spec: weights under PyTorch's names, x (T, B, I) and
    d_output (T, B, D*H), in the Spec's dtype."""

    spec: Spec
    weights: Dict[str, np.ndarray]
    x: np.ndarray
    d_output: np.ndarray


def _import(module: str):
    """The module, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module(module)
    except Exception:           # ImportError, or a broken install's OSError
        return None


def unavailable(impl: str) -> Optional[str]:
    """Why impl cannot run here (a missing package), or None."""
    needs = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime")}.get(impl, ())
    missing = [m for m in needs if _import(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def make_weights(spec: Spec, seed: int = SEED) -> Dict[str, np.ndarray]:
    """A seeded torch module's state_dict as float arrays (fastrnn's seeded init,
    the same distribution, when torch is absent)."""
    torch = _import("torch") if unavailable("torch") is None else None
    if torch is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _torch_module(torch, spec)
        return {k: v.detach().numpy().astype(spec.dtype) for k, v in module.state_dict().items()}
    return _fastrnn_layer(spec, seed=seed).state_dict()


def make_problem(spec: Spec, seed: int = SEED) -> Problem:
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


# ------------------------------------------------------------------ threads

def _preload() -> None:
    """Load every library whose thread pool threadpoolctl should limit (it only
    sees libraries already loaded)."""
    import scipy.linalg.blas  # noqa: F401  (fastrnn._kernels loads the same OpenBLAS)
    for impl in PEERS:
        if unavailable(impl) is None:
            _import("onnxruntime" if impl == "onnxruntime" else "torch")


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[Dict[str, Any]]:
    """Every BLAS/OpenMP pool (threadpoolctl) and torch's intra-op pool at `threads`
    for the duration; yields a description. ORT takes its count per session."""
    _preload()
    info: Dict[str, Any] = {"threads": threads}
    with contextlib.ExitStack() as stack:
        threadpoolctl = _import("threadpoolctl")
        if threadpoolctl is not None:
            stack.enter_context(threadpoolctl.threadpool_limits(limits=threads))
            info["pools"] = [f"{p['internal_api']} {os.path.basename(p['filepath'])}: "
                             f"{p['num_threads']}" for p in threadpoolctl.threadpool_info()]
        else:
            info["pools"] = ["threadpoolctl not installed: BLAS threads not limited "
                             "(set OPENBLAS_NUM_THREADS)"]
        if hasattr(fastrnn, "set_num_threads"):      # fastrnn's own say, when it has one
            stack.callback(fastrnn.set_num_threads, fastrnn.get_num_threads())
            fastrnn.set_num_threads(threads)
            info["fastrnn"] = fastrnn.get_num_threads()
        torch = _import("torch") if unavailable("torch") is None else None
        if torch is not None:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, previous)
            info["torch"] = torch.get_num_threads()
        yield info


# ------------------------------------------------------------------ timing

def _block(fn: Callable[[], object], calls: int, warmup: int,
           limit: float = math.inf, pause: float = 0.0) -> float:
    """The fastest of `calls` timed calls after `warmup` untimed ones, in seconds;
    fewer (at least one) once the block has run `limit` seconds, so that a call
    slowed down 100-fold by the machine's load cannot stretch the block with it.
    `pause` seconds of sleep first let the thread pools of whatever ran before go idle."""
    if pause:
        time.sleep(pause)
    opened = time.perf_counter()
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        best = min(best, end - start)
        if end - opened > limit:
            break
    return best


def _estimate(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: Dict[str, Callable[[], object]], budget: float,
                rounds: Optional[int] = None, max_rounds: int = MAX_ROUNDS,
                estimates: Optional[Dict[str, float]] = None) -> Dict[str, Dict[str, Any]]:
    """Time every fn in interleaved rounds (module docstring: Timing).

    Returns {name: {"min": s, "median": s, "rounds": [s, ...], "calls": k, "warmup": w}}:
    the minimum and the median over rounds of each round's fastest call.
    The number of rounds fits `budget` seconds, within [MIN_ROUNDS, max_rounds], unless
    `rounds` is given; rounds also stop once `budget` has passed (after MIN_ROUNDS), in
    case the machine slowed down. `estimates` are seconds per call (measured here when
    missing)."""
    if not fns:
        return {}
    est = dict(estimates or {})
    for name, fn in fns.items():
        if name not in est:
            est[name] = _estimate(fn)
    plan = {}
    for name, t in est.items():
        t = max(t, 1e-7)
        plan[name] = (max(1, min(200, int(BLOCK_SECONDS / t))), 1 if t < WARMUP_BELOW else 0)
    round_cost = sum(PAUSE + (calls + warm) * est[n] for n, (calls, warm) in plan.items())
    fixed = rounds is not None
    if not fixed:
        rounds = int(budget / max(round_cost, 1e-9))
        rounds = max(MIN_ROUNDS, min(max_rounds, rounds))
    names = list(fns)
    values: Dict[str, List[float]] = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(rounds):
        if not fixed and r >= MIN_ROUNDS and time.perf_counter() - started > budget:
            break
        for i in range(len(names)):
            name = names[(r + i) % len(names)]   # rotate: nobody always follows the same peer
            calls, warm = plan[name]
            values[name].append(_block(fns[name], calls, warm, limit=BLOCK_LIMIT,
                                       pause=PAUSE))
    return {n: {"min": min(v), "median": statistics.median(v), "rounds": v,
                "calls": plan[n][0], "warmup": plan[n][1]} for n, v in values.items()}


# ------------------------------------------------------------------ GEMM peak

def measure_gemm_peak(sizes: Sequence[int] = (1024, 2048, 3072), repeats: int = 3
                      ) -> Dict[str, Any]:
    """Best float32 GEMM GFLOP/s of square N x N matmuls per library (SciPy sgemm,
    NumPy matmul, torch.mm when installed), interleaved; call inside thread_limits."""
    from scipy.linalg import blas as scipy_blas
    torch = _import("torch") if unavailable("torch") is None else None
    best: Dict[str, float] = {}
    rng = np.random.default_rng(SEED)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        fa, fb = np.asfortranarray(a), np.asfortranarray(b)
        fns: Dict[str, Callable[[], object]] = {
            "scipy sgemm": lambda: scipy_blas.sgemm(1.0, fa, fb),
            "numpy matmul": lambda: a @ b,
        }
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch.mm"] = lambda: torch.mm(ta, tb)
        for fn in fns.values():
            fn()                                   # warm-up: thread pools, packing buffers
        for r in range(repeats):
            for name, fn in fns.items():
                t = _block(fn, 1, 0, pause=PAUSE)
                best[name] = max(best.get(name, 0.0), 2.0 * n ** 3 / t / 1e9)
    return {"gflops": max(best.values()), "by_library": best, "sizes": list(sizes)}


# ------------------------------------------------------------------ one row

@dataclasses.dataclass
class Row:
    spec: Spec
    mode: str
    flops: int
    impls: Dict[str, Dict[str, Any]]     # name -> {"status", "min", "median", ...}
    reference: str = ""
    probe: Optional[Dict[str, Any]] = None   # the GEMM probe's timings in the same rounds

    @property
    def probe_gflops(self) -> Optional[float]:
        """The GEMM probe's best rate in this row's rounds: the machine's state then."""
        return None if not self.probe else PROBE_FLOPS / self.probe["min"] / 1e9

    def time(self, impl: str) -> Optional[float]:
        entry = self.impls.get(impl, {})
        return entry.get(STAT) if entry.get("status") == "ok" else None

    @property
    def label(self) -> str:
        return f"{self.spec.cell} {self.spec.name} {self.mode}"

    def best_peer(self) -> Tuple[Optional[str], Optional[float]]:
        """(name, seconds) of the fastest peer that ran: torch or onnxruntime (infer),
        torch (train); (None, None) if none."""
        times = {p: self.time(p) for p in PEERS if supports(p, self.mode)}
        times = {p: t for p, t in times.items() if t is not None}
        if not times:
            return None, None
        name = min(times, key=times.get)
        return name, times[name]

    def speedup(self, peer: Optional[str] = None) -> Optional[float]:
        """peer time / fastrnn c time (> 1: fastrnn faster); the best peer by default."""
        c = self.time("c")
        t = self.best_peer()[1] if peer is None else self.time(peer)
        return None if c is None or t is None else t / c

    def gflops(self) -> Optional[float]:
        c = self.time("c")
        return None if c is None else self.flops / c / 1e9

    def targets(self, peak: float) -> List[Dict[str, Any]]:
        """[{"name", "goal", "value", "met" (None: not measurable here)}]."""
        out = []
        ratio = self.speedup()
        out.append({"name": "faster than best peer", "goal": 1.0, "value": ratio,
                    "met": None if ratio is None else ratio > 1.0})
        shape = self.spec.shape_name
        if shape in PEAK_SHAPES and self.spec.dtype == "float32":
            g = self.gflops()
            pct = None if g is None else g / peak
            out.append({"name": f">= {PEAK_FRACTION:.0%} of GEMM peak", "goal": PEAK_FRACTION,
                        "value": pct, "met": None if pct is None else pct >= PEAK_FRACTION})
        if shape == "S1" and self.mode == "infer":
            r = self.speedup("onnxruntime")
            out.append({"name": f">= {S1_INFER_VS_ORT:g}x onnxruntime", "goal": S1_INFER_VS_ORT,
                        "value": r, "met": None if r is None else r >= S1_INFER_VS_ORT})
        if shape == "S1" and self.mode == "train":
            r = self.speedup("torch")
            out.append({"name": f">= {S1_TRAIN_VS_TORCH:g}x torch", "goal": S1_TRAIN_VS_TORCH,
                        "value": r, "met": None if r is None else r >= S1_TRAIN_VS_TORCH})
        return out


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_row(spec: Spec, mode: str, threads: int, budget: float, rounds: Optional[int],
            max_rounds: int, impls: Sequence[str] = IMPLS) -> Row:
    """Build, check and time every implementation of one (spec, mode)."""
    problem = make_problem(spec)
    entries: Dict[str, Dict[str, Any]] = {}
    adapters: Dict[str, Impl] = {}
    for impl in impls:
        if not supports(impl, mode):
            entries[impl] = {"status": "n/a", "reason": f"{impl} runs inference only"}
            continue
        if impl == "numpy" and spec.shape_name in NUMPY_SKIPPED:
            entries[impl] = {"status": "skipped", "reason": "seconds per call at S4/S5"}
            continue
        reason = unavailable(impl)
        if reason:
            entries[impl] = {"status": "n/a", "reason": reason}
            continue
        try:
            adapters[impl] = make_impl(impl, problem, threads)
        except Exception as e:            # a peer that cannot be built is reported, not fatal
            entries[impl] = {"status": "error", "reason": f"{type(e).__name__}: {e}"}
            _progress(f"  {impl}: could not be built: {e}")

    # one call each (also the first warm-up), then check against the reference
    results: Dict[str, Result] = {}
    estimates: Dict[str, float] = {}
    for impl, adapter in list(adapters.items()):
        try:
            adapter.step(mode)()
            results[impl] = adapter.result(mode)
            estimates[impl] = _estimate(adapter.step(mode))   # the second call, warm
        except Exception as e:
            entries[impl] = {"status": "error", "reason": f"{type(e).__name__}: {e}"}
            _progress(f"  {impl}: failed: {e}")
            del adapters[impl]
    reference = next((r for r in ("torch", "numpy", "c") if r in results), "")
    for impl in list(adapters):
        problem_text = None if impl == reference else compare(results[impl], results[reference])
        if problem_text:
            entries[impl] = {"status": "mismatch", "reason": f"vs {reference}: {problem_text}"}
            _progress(f"  {impl} disagrees with {reference}: {problem_text}")
            del adapters[impl]
    del results

    fns = {n: a.step(mode) for n, a in adapters.items()}
    if fns:
        fns[PROBE] = gemm_probe()
    timed = interleaved(fns, budget, rounds, max_rounds, estimates)
    probe = timed.pop(PROBE, None)
    for impl, stats in timed.items():
        entries[impl] = {"status": "ok", **stats}
    del adapters, fns
    gc.collect()
    return Row(spec, mode, flops(spec, mode), {i: entries[i] for i in impls}, reference, probe)


_probe: Dict[str, Callable[[], object]] = {}


def gemm_probe() -> Callable[[], object]:
    """A fixed float32 GEMM (PROBE_N square, SciPy's sgemm: the BLAS fastrnn calls),
    timed in every row's rounds like one more implementation: its rate shows how much
    of the machine the row's measurements had."""
    if "sgemm" not in _probe:
        from scipy.linalg import blas as scipy_blas
        rng = np.random.default_rng(SEED)
        a = np.asfortranarray(rng.standard_normal((PROBE_N, PROBE_N), dtype=np.float32))
        b = np.asfortranarray(rng.standard_normal((PROBE_N, PROBE_N), dtype=np.float32))
        _probe["sgemm"] = lambda: scipy_blas.sgemm(1.0, a, b)
    return _probe["sgemm"]


# ------------------------------------------------------------------ extras

CELL_SPEC = Spec("LSTMCell", 1, 1, 64, 64, "B=1 I=64 H=64")


def run_cell_step(rounds: Optional[int] = None, calls: int = 500,
                  max_rounds: int = MAX_ROUNDS) -> Row:
    """One LSTMCell step from Python, B=1, I=H=64, inference: fastrnn.LSTMCell against
    torch.nn.LSTMCell (same weights, checked), interleaved with the GEMM probe. A Row
    whose timings are seconds per step (blocks of `calls` steps)."""
    I, H = CELL_SPEC.I, CELL_SPEC.H
    cell = fastrnn.LSTMCell(I, H, seed=SEED)
    rng = np.random.default_rng(SEED + 1)
    x = rng.standard_normal((1, I)).astype(np.float32)
    h = rng.standard_normal((1, H)).astype(np.float32)
    c = rng.standard_normal((1, H)).astype(np.float32)
    fns: Dict[str, Callable[[], object]] = {}
    entries: Dict[str, Dict[str, Any]] = {}
    reason = unavailable("torch")
    if reason is None:
        import torch
        tcell = torch.nn.LSTMCell(I, H)
        cell.load_state_dict({k: v.detach().numpy() for k, v in tcell.state_dict().items()})
        tx, th, tc = (torch.from_numpy(a) for a in (x, h, c))

        def torch_step():
            with torch.inference_mode():
                return tcell(tx, (th, tc))
        got, want = cell(x, (h, c), training=False), torch_step()
        problem = compare({"output": np.concatenate(got)},
                          {"output": np.concatenate([w.numpy() for w in want])})
        if problem:
            entries["torch"] = {"status": "mismatch", "reason": problem}
        else:
            fns["torch"] = torch_step
    else:
        entries["torch"] = {"status": "n/a", "reason": reason}
    fns["c"] = lambda: cell(x, (h, c), training=False)

    def many(fn):
        def run():
            for _ in range(calls):
                fn()
        return run
    timed = interleaved({**{n: many(f) for n, f in fns.items()}, PROBE: gemm_probe()},
                        budget=1.0, rounds=rounds, max_rounds=max_rounds)
    probe = timed.pop(PROBE)
    for name, stats in timed.items():
        per_step = [v / calls for v in stats["rounds"]]
        entries[name] = {"status": "ok", "min": min(per_step),
                         "median": statistics.median(per_step), "rounds": per_step,
                         "steps_per_block": calls}
    return Row(CELL_SPEC, "infer", flops(CELL_SPEC, "infer"),
               {n: entries[n] for n in ("c", "torch")}, "torch", probe)


def cell_step_report(row: Row) -> Dict[str, Any]:
    us = {n: (1e6 * e[STAT] if e.get("status") == "ok" else None) for n, e in row.impls.items()}
    return {"row": f"{row.label} (one step)", "us": us, "impls": row.impls,
            "target_us": CELL_STEP_US, "probe_gflops": row.probe_gflops,
            "met": None if us["c"] is None else us["c"] <= CELL_STEP_US}


def run_float64(spec32: Spec, mode: str, budget: float, rounds: Optional[int] = None,
                max_rounds: int = MAX_ROUNDS) -> Row:
    """fastrnn c in float64 against float32 on the same problem, interleaved with the
    GEMM probe: a Row whose impls are "float32" and "float64" (the latter with
    "agreement": "ok" or how it differs from float32)."""
    spec64 = dataclasses.replace(spec32, dtype="float64")
    p32 = make_problem(spec32)
    p64 = Problem(spec64, {k: v.astype(np.float64) for k, v in p32.weights.items()},
                  p32.x.astype(np.float64), p32.d_output.astype(np.float64))
    a32, a64 = FastrnnImpl(p32, "c"), FastrnnImpl(p64, "c")
    est = {}
    for name, a in (("float32", a32), ("float64", a64)):
        a.step(mode)()
        est[name] = _estimate(a.step(mode))
    agreement = compare(a64.result(mode), a32.result(mode)) or "ok"
    timed = interleaved({"float32": a32.step(mode), "float64": a64.step(mode),
                         PROBE: gemm_probe()}, budget, rounds, max_rounds, est)
    probe = timed.pop(PROBE)
    impls = {name: {"status": "ok", **stats} for name, stats in timed.items()}
    impls["float64"]["agreement"] = agreement
    return Row(spec32, mode, flops(spec32, mode), impls, "float32", probe)


def float64_ratio(row: Row) -> float:
    """float64 time / float32 time of a run_float64 row."""
    return row.impls["float64"][STAT] / row.impls["float32"][STAT]


def float64_report(row: Row) -> Dict[str, Any]:
    ratio = float64_ratio(row)
    return {"row": row.label, "float32": row.impls["float32"], "float64": row.impls["float64"],
            "ratio": ratio, "target": FLOAT64_RATIO, "met": ratio <= FLOAT64_RATIO,
            "agreement": row.impls["float64"]["agreement"], "probe_gflops": row.probe_gflops}


# ------------------------------------------------------------------ report

def _ms(entry: Dict[str, Any]) -> str:
    status = entry.get("status", "n/a")
    if status != "ok":
        return status
    return f"{1e3 * entry[STAT]:.3f}"


def _num(value: Optional[float], fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _target_text(targets: List[Dict[str, Any]]) -> str:
    known = [t for t in targets if t["met"] is not None]
    if not known:
        return "n/a"
    failed = [t for t in known if not t["met"]]
    if not failed:
        return "yes"
    parts = []
    for t in failed:
        if "peak" in t["name"]:
            parts.append(f"{t['value']:.0%} < {t['goal']:.0%} peak")
        elif t["name"].startswith("faster"):
            parts.append(f"{t['value']:.2f}x best peer")
        else:
            parts.append(f"{t['value']:.2f}x < {t['name'][3:]}")
    return "no: " + "; ".join(parts)


COLUMNS = ["row", "fastrnn c (ms)", "fastrnn numpy (ms)", "torch (ms)", "onnxruntime (ms)",
           "c vs best peer", "GFLOP/s (c)", "% GEMM peak", "target met?"]


def markdown_table(rows: Sequence[Row], peak: float) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 2) + [":---"]) + "|"]
    for row in rows:
        peer, _ = row.best_peer()
        ratio = row.speedup()
        g = row.gflops()
        cells = [row.label] + [_ms(row.impls.get(i, {})) for i in IMPLS] + [
            "n/a" if ratio is None else f"{ratio:.2f}x ({peer})",
            _num(g, ".1f"),
            "n/a" if g is None else f"{100 * g / peak:.1f}%",
            _target_text(row.targets(peak))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _unsteady(row: Row) -> bool:
    return any(e.get("status") == "ok" and e["median"] > UNSTEADY * e["min"]
               for e in row.impls.values())


def _pool(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    pooled = a["rounds"] + b["rounds"]
    return {**a, "min": min(pooled), "median": statistics.median(pooled), "rounds": pooled,
            "passes": a.get("passes", 1) + 1}


def merge_rows(first: Row, second: Row) -> Row:
    """The rounds of two passes over the same row pooled per implementation (an
    implementation that did not run in both keeps the first pass's entry)."""
    impls = {}
    for name, a in first.impls.items():
        b = second.impls.get(name, {})
        both = a.get("status") == "ok" and b.get("status") == "ok"
        impls[name] = _pool(a, b) if both else a
    probe = _pool(first.probe, second.probe) if first.probe and second.probe else first.probe
    return dataclasses.replace(first, impls=impls, probe=probe)


def _loaded(row: Row, best_probe: float) -> bool:
    """Whether the row's GEMM probe ran below LOADED_FRACTION of its best in the run."""
    g = row.probe_gflops
    return g is not None and g < LOADED_FRACTION * best_probe


def unstable_rows(rows: Sequence[Row]) -> List[str]:
    """"label impl median/min" for every timing whose median over rounds exceeds
    UNSTEADY times its minimum (the table shows minima)."""
    out = []
    for row in rows:
        for impl, e in row.impls.items():
            if e.get("status") == "ok" and e["median"] > UNSTEADY * e["min"]:
                out.append(f"{row.label} {impl} {1e3 * e['median']:.3f} ms median "
                           f"({e['median'] / e['min']:.1f}x)")
    return out


def cell_step_table(row: Row) -> str:
    r = cell_step_report(row)
    c, t = r["us"]["c"], r["us"]["torch"]
    ratio = None if c is None or t is None else t / c
    cells = [r["row"]] + [_num(r["us"][n], ".2f") if r["us"][n] is not None
                          else row.impls[n].get("status", "n/a") for n in ("c", "torch")]
    cells += ["n/a" if ratio is None else f"{ratio:.2f}x",
              "n/a" if r["met"] is None else ("yes" if r["met"] else "no")]
    return "\n".join([
        "| row | fastrnn c (us) | torch (us) | c vs torch | target met? (<= 2 us) |",
        "|---|---:|---:|---:|:---|",
        "| " + " | ".join(cells) + " |"])


def float64_table(rows: Sequence[Row]) -> str:
    lines = ["| row | c float32 (ms) | c float64 (ms) | float64 / float32 | "
             "target met? (<= 2.2x) |", "|---|---:|---:|---:|:---|"]
    for row in rows:
        r = float64_report(row)
        note = "" if r["agreement"] == "ok" else f" (f64 vs f32: {r['agreement']})"
        lines.append(f"| {r['row']} | {1e3 * r['float32'][STAT]:.3f} | "
                     f"{1e3 * r['float64'][STAT]:.3f} | {r['ratio']:.2f}x | "
                     f"{'yes' if r['met'] else 'no'}{note} |")
    return "\n".join(lines)


def plot_speedups(rows: Sequence[Row], path: str) -> None:
    """Bars of fastrnn c's speed-up over each peer, per row, on a log scale with a
    line at 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("torch", "tab:red"), ("onnxruntime", "tab:blue")]
    labels = [r.label for r in rows]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(rows) + 2), 5.5))
    for k, (peer, colour) in enumerate(series):
        xs, ys = [], []
        for i, row in enumerate(rows):
            s = row.speedup(peer)
            if s is not None:
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                ys.append(s)
        if xs:
            ax.bar(xs, ys, width, color=colour, label=f"vs {peer}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=8)
    ax.set_ylabel("speed-up of fastrnn c (peer time / fastrnn time)")
    ax.set_title("fastrnn c against its peers (> 1: fastrnn faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _progress_text(row: Row) -> str:
    times = ", ".join(f"{i} {_ms(e)}" for i, e in row.impls.items())
    probe = "" if row.probe_gflops is None else f" (probe {row.probe_gflops:.0f} GFLOP/s)"
    return f"{row.label}: {times} ms{probe}"


def _second_pass(rows: List[Row], rerun: Callable[[Row], Row], best_probe: float,
                 started: float, until: float) -> List[str]:
    """Re-run, worst probe first, the rows measured on a busy machine or unsteady, while
    less than `until` seconds have passed since `started`; pool the rounds in place.
    Returns the labels re-run."""
    done = []
    for i in sorted(range(len(rows)), key=lambda i: rows[i].probe_gflops or best_probe):
        if time.perf_counter() - started > until:
            break
        row = rows[i]
        if _unsteady(row) or _loaded(row, best_probe):
            rows[i] = merge_rows(row, rerun(row))
            done.append(f"{row.label}{' (float64 row)' if row.reference == 'float32' else ''}")
            _progress(f"[again {time.perf_counter() - started:.0f}s] {_progress_text(rows[i])}")
    return done


def _load_average() -> Optional[float]:
    """The 1-minute load average (how busy the neighbours were), None if unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "fastrnn": fastrnn.__version__}
    for m in ("scipy", "torch", "onnxruntime", "onnx"):
        mod = _import(m)
        out[m] = getattr(mod, "__version__", "?") if mod is not None else "not installed"
    return out


def _grid(cells: Sequence[str], shapes: Sequence[str], explicit_cells: bool
          ) -> List[Spec]:
    specs = []
    for shape in shapes:
        for cell in cells:
            # bilstm is an S3 row by default; named in --cells it runs at every shape
            if cell == "bilstm" and not explicit_cells and shape != "S3":
                continue
            specs.append(Spec.make(cell, shape))
    return specs


def _csv(value: str, allowed: Optional[Sequence[str]], what: str) -> List[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{what}: unknown {bad}, expected some of "
                                             f"{list(allowed)}")
    return items


def _shapes_arg(value: str) -> List[str]:
    items = _csv(value, None, "--shapes")
    for s in items:
        try:
            parse_shape(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return items


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastrnn.bench",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=_positive, default=DEFAULT_THREADS,
                   help="threads for BLAS, torch and ORT (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="S1 and S2 only, fewer rounds (about a minute on an idle machine)")
    p.add_argument("--cells", type=lambda v: _csv(v, CELLS, "--cells"), default=None,
                   help=f"comma-separated, of {','.join(CELLS)} (default: "
                        f"{','.join(DEFAULT_CELLS)}, plus bilstm at S3)")
    p.add_argument("--shapes", type=_shapes_arg, default=None,
                   help="comma-separated grid names S1..S5 or custom TxBxIxH "
                        "(default: all of S1..S5; --quick: S1,S2)")
    p.add_argument("--modes", type=lambda v: _csv(v, MODES, "--modes"), default=list(MODES),
                   help="comma-separated, of infer,train (default both)")
    p.add_argument("--rounds", type=_positive, default=None,
                   help="a fixed number of interleaved rounds per row (default: adaptive)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the LSTMCell step and the float64/float32 rows")
    p.add_argument("--peak-sizes", default=None,
                   type=lambda v: [_positive(n) for n in _csv(v, None, "--peak-sizes")],
                   help="square GEMM sizes of the peak measurement "
                        "(default 1024,2048,3072; --quick 1024,2048)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the raw numbers")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="draw fastrnn c's speed-ups over the peers (matplotlib)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the report; returns what --json writes."""
    args = parse_args(argv)
    started = time.perf_counter()
    shapes = args.shapes or (["S1", "S2"] if args.quick else list(SHAPES))
    specs = _grid(args.cells or (DEFAULT_CELLS + ("bilstm",)), shapes, args.cells is not None)
    budget = QUICK_ROW_BUDGET if args.quick else ROW_BUDGET
    max_rounds = QUICK_MAX_ROUNDS if args.quick else MAX_ROUNDS
    peak_sizes = args.peak_sizes or ([1024, 2048] if args.quick else [1024, 2048, 3072])
    peak_repeats = 2 if args.quick else 3
    missing = {p: unavailable(p) for p in PEERS if unavailable(p)}
    load_start = _load_average()

    rows: List[Row] = []
    f64_rows: List[Row] = []
    cell_rows: List[Row] = []
    with thread_limits(args.threads) as thread_info:
        _progress(f"fastrnn.bench: {len(specs) * len(args.modes)} rows, "
                  f"{args.threads} threads; measuring the GEMM peak")
        peak_start = measure_gemm_peak(peak_sizes, peak_repeats)
        for spec in specs:
            for mode in args.modes:
                row = run_row(spec, mode, args.threads, budget, args.rounds, max_rounds)
                rows.append(row)
                _progress(f"[{len(rows)}/{len(specs) * len(args.modes)} "
                          f"{time.perf_counter() - started:.0f}s] {_progress_text(row)}")
        if not args.no_extras:
            cell_rows.append(run_cell_step(args.rounds, max_rounds=max_rounds))
            _progress(f"[cell {time.perf_counter() - started:.0f}s] "
                      f"{_progress_text(cell_rows[-1])}")
            for spec in specs:
                if spec.shape_name in FLOAT64_SHAPES and spec.cell != "bilstm":
                    for mode in args.modes:
                        f64_rows.append(run_float64(spec, mode, budget / 2, args.rounds,
                                                    max_rounds))
                        _progress(f"[float64 {time.perf_counter() - started:.0f}s] "
                                  f"{_progress_text(f64_rows[-1])}")
        best_probe = max([r.probe_gflops for r in rows + f64_rows + cell_rows if r.probe]
                         or [0.0])
        second_pass: List[str] = []
        if args.rounds is None:
            until = QUICK_SECOND_PASS_UNTIL if args.quick else SECOND_PASS_UNTIL
            second_pass += _second_pass(
                rows, lambda r: run_row(r.spec, r.mode, args.threads, budget, None,
                                        max_rounds), best_probe, started, until)
            second_pass += _second_pass(
                f64_rows, lambda r: run_float64(r.spec, r.mode, budget / 2, None,
                                                max_rounds), best_probe, started, until)
            second_pass += _second_pass(
                cell_rows, lambda r: run_cell_step(None, max_rounds=max_rounds), best_probe,
                started, until)
        peak_end = measure_gemm_peak(peak_sizes, peak_repeats)
    load_end = _load_average()
    by_library = {k: max(peak_start["by_library"].get(k, 0), peak_end["by_library"].get(k, 0))
                  for k in peak_start["by_library"]}
    best_probe = max([r.probe_gflops for r in rows + f64_rows + cell_rows if r.probe]
                     or [0.0])
    by_library["scipy sgemm"] = max(by_library.get("scipy sgemm", 0.0), best_probe)
    peak = max(by_library.values())
    elapsed = time.perf_counter() - started

    # ---- print
    print(f"## fastrnn {fastrnn.__version__} against its peers\n")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.platform()}; {args.threads} threads "
          f"({'; '.join(thread_info['pools'])})")
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    print(f"- GEMM peak (float32, best of square {','.join(map(str, peak_sizes))} at the start "
          f"and the end of the run and of the rows' {PROBE_N} probes): **{peak:.1f} GFLOP/s**; "
          "by library: "
          + ", ".join(f"{k} {v:.1f}" for k, v in by_library.items())
          + f" (start {peak_start['gflops']:.1f}, end {peak_end['gflops']:.1f})")
    print(f"- time: ms per call, {STAT} over interleaved rounds of each round's fastest call; "
          "ratio = best peer time / fastrnn c time (> 1: fastrnn faster; infer: faster of "
          "torch and onnxruntime, train: torch); GFLOP/s counts GEMM work only")
    shapes_used = sorted({s.name for s in specs}, key=lambda n: (n not in SHAPES, n))
    print("- shapes (T, B, I, H): " + ", ".join(
        f"{n} = {parse_shape(n) if n in SHAPES else n}" for n in shapes_used))
    if missing:
        print("- missing peers (n/a): " + ", ".join(f"{k} ({v})" for k, v in missing.items()))
    if any(r.impls.get("numpy", {}).get("status") == "skipped" for r in rows):
        print("- fastrnn numpy is skipped at S4 and S5 (seconds per call)")
    problems = [(r.label, i, e["reason"]) for r in rows for i, e in r.impls.items()
                if e.get("status") in ("mismatch", "error")]
    for label, impl, reason in problems:
        print(f"- **{label}: {impl} {reason}**")
    if second_pass:
        print(f"- measured again later in the run, rounds pooled (busy machine or unsteady "
              f"the first time): {', '.join(second_pass)}")
    print(f"- run time {elapsed:.0f} s; load average (1 min) {_num(load_start, '.2f')} at "
          f"the start, {_num(load_end, '.2f')} at the end, this run's own threads included "
          f"({os.cpu_count()} CPUs)\n")
    print(markdown_table(rows, peak))
    loaded = [f"{r.label}{' float64 row' if r in f64_rows else ''} ({r.probe_gflops:.0f})"
              for r in rows + f64_rows + cell_rows if _loaded(r, best_probe)]
    if loaded:
        print(f"\nMeasured while the machine was busy (GEMM probe below "
              f"{LOADED_FRACTION:.0%} of its best, {best_probe:.0f} GFLOP/s; probe GFLOP/s in "
              "brackets; treat these rows with care): " + "; ".join(loaded))
    unstable = unstable_rows(rows + f64_rows + cell_rows)
    if unstable:
        print(f"\nUnsteady (median over rounds > {UNSTEADY:g}x the minimum; sensitive to the "
              "load of the machine or to thread scheduling): " + "; ".join(unstable))
    if cell_rows:
        print("\nSingle step from Python (inference; fastrnn.LSTMCell vs torch.nn.LSTMCell):\n")
        print(cell_step_table(cell_rows[0]))
    if f64_rows:
        print("\nfastrnn c, float64 against float32:\n")
        print(float64_table(f64_rows))
    all_targets = [t for r in rows for t in r.targets(peak)]
    met = sum(1 for t in all_targets if t["met"])
    known = sum(1 for t in all_targets if t["met"] is not None)
    extra = ([cell_step_report(r)["met"] for r in cell_rows]
             + [float64_ratio(r) <= FLOAT64_RATIO for r in f64_rows])
    extra_known = [m for m in extra if m is not None]
    print(f"\nTargets met: {met}/{known} in the main table, "
          f"{sum(extra_known)}/{len(extra_known)} in the extra rows.")

    report = {
        "meta": {"threads": args.threads, "thread_pools": thread_info["pools"],
                 "versions": _versions(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "seconds": elapsed,
                 "timing": f"{STAT} over interleaved rounds of each round's fastest call",
                 "load_average": {"start": load_start, "end": load_end},
                 "gemm_peak_gflops": peak, "gemm_peak_by_library": by_library,
                 "gemm_peak_start": peak_start, "gemm_peak_end": peak_end,
                 "missing_peers": missing},
        "rows": [{"cell": r.spec.cell, "shape": r.spec.name,
                  "T": r.spec.T, "B": r.spec.B, "I": r.spec.I, "H": r.spec.H,
                  "mode": r.mode, "dtype": r.spec.dtype, "flops": r.flops,
                  "reference": r.reference, "impls": r.impls,
                  "best_peer": r.best_peer()[0], "speedup": r.speedup(),
                  "gflops": r.gflops(), "probe": r.probe, "probe_gflops": r.probe_gflops,
                  "pct_peak": None if r.gflops() is None else 100 * r.gflops() / peak,
                  "targets": r.targets(peak)} for r in rows],
        "cell_step": cell_step_report(cell_rows[0]) if cell_rows else None,
        "float64": [float64_report(r) for r in f64_rows],
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    if args.plot:
        try:
            plot_speedups(rows, args.plot)
        except ImportError as e:
            _progress(f"--plot: matplotlib not available ({e}); no plot written")
    return report


if __name__ == "__main__":
    main()
