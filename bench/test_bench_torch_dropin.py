"""One training step of a small PyTorch model: torch.nn's GRU/LSTM against fastrnn.torch's.

    pytest --benchmark bench/test_bench_torch_dropin.py   # timed: one table per kind
    pytest bench/test_bench_torch_dropin.py               # S2 once each, as checks (1 thread)
    python bench/test_bench_torch_dropin.py [--threads 1,2] [--shapes S1,S2,S3]
                                            [--kinds gru,lstm] [--rounds R] [--json FILE]
                                                          # the Markdown table of ratios

The model is the same in every column: a one-layer recurrent layer (GRU or
LSTM, batch-first, I inputs, H units) and a ``torch.nn.Linear(H, 8)`` head on
every step, trained on a fixed batch (x (B, T, I), a target (B, T, 8)) with
MSE and ``torch.optim.Adam``. A step is everything a training loop runs:
``zero_grad``, forward, loss, ``backward``, ``optimizer.step()``. Only the
recurrent layer changes:

    torch.nn                 torch.nn.GRU / LSTM, as PyTorch runs them by default
                             (on the CPU, float32 LSTM goes through oneDNN's kernels)
    torch.nn, no oneDNN      LSTM only: the same with torch.backends.mkldnn.enabled =
                             False, torch's own ATen cells (GRU never uses oneDNN)
    fastrnn.torch            fastrnn.torch.GRU / LSTM: fastrnn's kernels through autograd

torch/fastrnn > 1: the model trains that many times faster with fastrnn.torch.
Every model starts from the same weights (one seed: fastrnn.torch's
initialisation is torch's), and each benchmark first checks that one step of
its model gives torch.nn's loss and parameters.

Threads: each row runs under fastrnn.bench.thread_limits(n), which sets torch's
intra-op pool (``torch.set_num_threads``), fastrnn's (``fastrnn.set_num_threads``)
and every BLAS pool to n; rows at 1 and 2 threads. Shapes (T, B, I, H) are
fastrnn.bench's: S1 (100, 1, 64, 64), S2 (50, 16, 128, 128), S3 (100, 64, 256, 256);
plain pytest checks S2 at one thread only and --benchmark-quick times S2 only.

The script times the columns of a row in interleaved rounds (fastrnn.bench.timing:
a pause before each block, rotating order) and reports the minimum over rounds
(and the median), with the CPU and the load average before and after: on a
shared machine the minimum is the least noisy estimate.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Callable, Dict, List, Tuple

import pytest

from fastrnn.bench import SHAPES, thread_limits
from fastrnn.bench.report import cpu_model, usable_cpus
from fastrnn.bench.summary import Layout

torch = pytest.importorskip("torch", reason="the torch drop-in needs PyTorch (pip install "
                                           "\".[torch]\")")
import fastrnn  # noqa: E402
import fastrnn.torch as ft  # noqa: E402
from fastrnn import _kernels  # noqa: E402

KINDS = ("gru", "lstm")
OUTPUTS = 8                       # the head's features per step
IMPLS = ("torch.nn", "torch.nn, no oneDNN", "fastrnn.torch")
THREADS = (1, 2)
TIMED_SHAPES = ("S1", "S2", "S3")
CHECKED_SHAPES = ("S2",)          # plain pytest: one step each, checked, at one thread
CHECKED_THREADS = (1,)
# rounds of pytest-benchmark per shape (a step takes 5-40 ms at S1/S2, 0.1-1 s at S3)
ROUNDS = {"S1": 20, "S2": 20, "S3": 6}
TOL = dict(rtol=2e-3, atol=2e-5)  # float32, one Adam step from equal weights


class Model(torch.nn.Module):
    """A recurrent layer and a linear head on every step."""

    def __init__(self, rnn: torch.nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = torch.nn.Linear(hidden_size, OUTPUTS)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        out, _ = self.rnn(x)
        return self.head(out)


@contextlib.contextmanager
def onednn(enabled: bool):
    """torch's oneDNN (mkldnn) kernels on or off for the duration (the flag that
    torch.backends.mkldnn.flags sets, without its TF32 side effects)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


class Trainer:
    """One implementation's model, optimizer and data, all from fixed seeds."""

    def __init__(self, kind: str, impl: str, shape: Tuple[int, int, int, int]) -> None:
        T, B, I, H = shape
        module = ft if impl == "fastrnn.torch" else torch.nn
        layer = {"gru": module.GRU, "lstm": module.LSTM}[kind]
        torch.manual_seed(0)                   # the same weights in every implementation
        self.model = Model(layer(I, H, batch_first=True), H)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(B, T, I, generator=g)
        self.target = torch.randn(B, T, OUTPUTS, generator=g)
        self.onednn = impl != "torch.nn, no oneDNN"

    def step(self) -> float:
        with onednn(self.onednn):
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(self.model(self.x), self.target)
            loss.backward()
            self.optimizer.step()
        return loss.item()


def impls(kind: str) -> Tuple[str, ...]:
    """The columns of a kind: without oneDNN only for LSTM (GRU never uses it)."""
    return IMPLS if kind == "lstm" else tuple(i for i in IMPLS if "oneDNN" not in i)


def check_one_step(kind: str, impl: str, shape: Tuple[int, int, int, int]) -> None:
    """One step of impl's model gives torch.nn's loss and parameters."""
    reference, trainer = Trainer(kind, "torch.nn", shape), Trainer(kind, impl, shape)
    losses = reference.step(), trainer.step()
    assert abs(losses[1] - losses[0]) <= TOL["atol"] + TOL["rtol"] * abs(losses[0]), \
        f"{kind} {impl}: loss {losses[1]}, torch.nn {losses[0]}"
    for (name, a), (_, b) in zip(reference.model.named_parameters(),
                                 trainer.model.named_parameters()):
        assert torch.allclose(b, a, **TOL), f"{kind} {impl} {name}: max abs error " \
                                            f"{(a - b).abs().max():.3e}"


# ------------------------------------------------------------------ pytest

TABLE = Layout(columns=IMPLS, ratios=(("torch/fastrnn", ("torch.nn",), "fastrnn.torch"),
                                      ("no oneDNN/fastrnn", ("torch.nn, no oneDNN",),
                                       "fastrnn.torch")))


def in_quick(params) -> bool:
    """The --benchmark-quick subset: S2."""
    return params.get("shape") == "S2"


def _cases(timing: bool):
    for kind in KINDS:
        for shape in (TIMED_SHAPES if timing else CHECKED_SHAPES):
            for threads in (THREADS if timing else CHECKED_THREADS):
                for impl in impls(kind):
                    yield kind, shape, threads, impl


def pytest_generate_tests(metafunc) -> None:
    if "impl" in metafunc.fixturenames:
        # S1 and S3 only when timing (--benchmark sets benchmark_only)
        cases = list(_cases(bool(metafunc.config.getoption("benchmark_only", False))))
        metafunc.parametrize("kind,shape,threads,impl", cases,
                             ids=[f"{k}-{s}-{t}threads-{i.replace(', ', '-').replace(' ', '_')}"
                                  for k, s, t, i in cases])


def test_training_step(benchmark, record_timing, kind, shape, threads, impl):
    benchmark.group = f"torch-dropin-{kind}-{shape}-{threads}threads"
    benchmark.extra_info.update(kind=kind, shape=SHAPES[shape], threads=threads, impl=impl,
                                cpu=cpu_model(), cpus=usable_cpus())
    with thread_limits(threads):
        check_one_step(kind, impl, SHAPES[shape])
        trainer = Trainer(kind, impl, SHAPES[shape])
        loss = benchmark.pedantic(trainer.step, rounds=ROUNDS[shape], warmup_rounds=2,
                                  iterations=1)
    assert loss == loss and loss > 0
    record_timing(f"torch drop-in: one training step of {kind.upper()} + Linear, MSE, Adam "
                  f"(ms; > 1: fastrnn.torch faster)", f"{shape} {threads} thr", impl,
                  benchmark, layout=TABLE)


# ------------------------------------------------------------------ script

def measure(kind: str, shape: str, threads: int, rounds: int, budget: float) -> Dict:
    """Interleaved rounds of one row's implementations (checked first)."""
    from fastrnn.bench.timing import interleaved

    with thread_limits(threads):
        names = impls(kind)
        for impl in names:
            check_one_step(kind, impl, SHAPES[shape])
        trainers = {impl: Trainer(kind, impl, SHAPES[shape]) for impl in names}
        for trainer in trainers.values():
            trainer.step()                     # warm-up: oneDNN primitives, thread pools
        fns: Dict[str, Callable[[], object]] = {n: t.step for n, t in trainers.items()}
        times = interleaved(fns, budget, rounds=rounds or None)
    row = {"kind": kind, "shape": shape, "threads": threads,
           "ms": {n: {"min": 1e3 * t["min"], "median": 1e3 * t["median"],
                      "rounds": [1e3 * v for v in t["rounds"]]} for n, t in times.items()}}
    fast = times["fastrnn.torch"]
    for impl in names[:-1]:
        row[f"{impl} / fastrnn.torch"] = {
            "min": times[impl]["min"] / fast["min"],
            "median": times[impl]["median"] / fast["median"]}
    return row


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default=",".join(map(str, THREADS)))
    parser.add_argument("--shapes", default=",".join(TIMED_SHAPES))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds per row (default: as many as fit --budget, 3 to 15)")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per row")
    parser.add_argument("--json", help="write every round's times here")
    args = parser.parse_args(argv)
    load_before = _loadavg()
    print(f"CPU: {cpu_model()}, {usable_cpus()} CPUs; fastrnn {fastrnn.__version__} "
          f"(kernels {_kernels.isa()}), torch {torch.__version__}; load average before: "
          f"{load_before}", flush=True)
    print("ms per training step, minimum over interleaved rounds (median in brackets); "
          "ratio > 1: fastrnn.torch faster\n")
    print("| kind | shape (T, B, I, H) | threads | torch.nn | torch.nn, no oneDNN | "
          "fastrnn.torch | torch.nn / fastrnn.torch | no oneDNN / fastrnn.torch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for kind in args.kinds.split(","):
        for shape in args.shapes.split(","):
            for threads in (int(v) for v in args.threads.split(",")):
                row = measure(kind, shape, threads, args.rounds, args.budget)
                rows.append(row)

                def cell(impl: str) -> str:
                    t = row["ms"].get(impl)
                    return "-" if t is None else f"{t['min']:.1f} ({t['median']:.1f})"

                def ratio(impl: str) -> str:
                    r = row.get(f"{impl} / fastrnn.torch")
                    return "-" if r is None else f"{r['min']:.2f} ({r['median']:.2f})"

                print(f"| {kind.upper()} | {shape} {SHAPES[shape]} | {threads} | "
                      f"{cell('torch.nn')} | {cell('torch.nn, no oneDNN')} | "
                      f"{cell('fastrnn.torch')} | {ratio('torch.nn')} | "
                      f"{ratio('torch.nn, no oneDNN')} |", flush=True)
    load_after = _loadavg()
    print(f"\nload average after: {load_after}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "cpus": usable_cpus(), "torch": torch.__version__,
                       "fastrnn": fastrnn.__version__, "load_before": load_before,
                       "load_after": load_after, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
