"""Shared set-up of the benchmarks: the problems of bench/test_bench_backends.py, the
thread limits, the --benchmark-quick subset, and the tables printed at the end.

A ``Problem`` is one layer (cell kind, shape, backend) with a fixed input and a
fixed output gradient; ``Problem.run(mode)`` is what a benchmark times:

    "inference"  output = layer(x, training=False)
    "training"   zero_grad; output = layer(x); dx = layer.backward(d_output)

Both backends build their layer from the same seed, so they hold the same
parameters and must agree. Each benchmark, also in the default
``--benchmark-disable`` mode where it runs once as a plain test, checks its
result against the other backend's, kept in ``results`` (module scope) so that
each configuration runs at most once more than its benchmarks.

Timed (``pytest --benchmark``, the root conftest.py), every benchmark records its
rounds with ``record_timing(table, row, column, benchmark)`` and the run ends with
fastrnn.bench.summary's tables: one per cell (rows shapes and modes, columns fastrnn
c, fastrnn numpy, torch, onnxruntime, then numpy/c and best peer/c), then the
concurrency and denormal tables. ``--benchmark-quick`` keeps the benchmarks each
module's ``in_quick(params)`` accepts.

Threads: the ``threads`` fixture runs a module at FASTRNN_BENCH_THREADS (default 2,
fastrnn.bench.DEFAULT_THREADS) for BLAS, fastrnn, torch and ONNX Runtime
(fastrnn.bench.thread_limits), restored after it.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

import fastrnn
from fastrnn.bench import DEFAULT_THREADS, SHAPES, compare, thread_limits
from fastrnn.bench.summary import CELL, Layout, format_tables

BENCH_CELLS = ("rnn_tanh", "lstm", "gru", "bilstm")
THREADS = int(os.environ.get("FASTRNN_BENCH_THREADS", DEFAULT_THREADS))

try:
    import pytest_benchmark  # noqa: F401
except ImportError:
    @pytest.fixture
    def benchmark():
        """Stands in for pytest-benchmark's fixture when it is not installed."""
        pytest.skip("pytest-benchmark is not installed (pip install pytest-benchmark, "
                    "or \".[test]\")")

SEED = 0
LAYERS = {"rnn_tanh": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
Result = Dict[str, np.ndarray]


class Problem:
    """One layer on one backend with its input (T, B, I) and d_output (T, B, H)."""

    def __init__(self, cell: str, shape: Tuple[int, int, int, int], backend: str,
                 dtype=np.float32) -> None:
        T, B, I, H = shape
        self.layer = LAYERS[cell](I, H, seed=SEED, dtype=dtype, backend=backend)
        rng = np.random.default_rng(SEED + 1)
        self.x = rng.standard_normal((T, B, I)).astype(dtype)
        self.d_output = rng.standard_normal((T, B, H)).astype(dtype)

    def infer(self) -> Result:
        output, _ = self.layer(self.x, training=False)
        return {"output": output}

    def train_step(self) -> Result:
        # zero_grad first: each step's gradients are then those of one step,
        # however many rounds the benchmark runs
        self.layer.zero_grad()
        output, _ = self.layer(self.x)
        dx, _ = self.layer.backward(self.d_output)
        return {"output": output, "dx": dx}

    def step(self, mode: str) -> Callable[[], Result]:
        return {"inference": self.infer, "training": self.train_step}[mode]

    def result(self, step_result: Result) -> Result:
        """A step's result plus, after training, the layer's parameter gradients."""
        if "dx" not in step_result:
            return dict(step_result)
        return {**step_result, **{f"grads[{k}]": g.copy() for k, g in self.layer.grads.items()}}

    def run(self, mode: str) -> Result:
        return self.result(self.step(mode)())


@pytest.fixture(scope="module")
def threads():
    """fastrnn.bench.thread_limits(THREADS) for the module; yields THREADS."""
    with thread_limits(THREADS):
        yield THREADS


@pytest.fixture
def make_problem() -> Callable[..., Problem]:
    """Problem(cell, shape, backend, dtype=float32), as a fixture so that test files
    need not import conftest (a module name every test directory may use)."""
    return Problem


class Results:
    """Results per (cell, shape, mode, backend); each configuration runs at most once."""

    def __init__(self) -> None:
        self._results: Dict[tuple, Result] = {}

    def keep(self, key: tuple, result: Result) -> None:
        """Store a result a benchmark computed anyway (the first one stays)."""
        self._results.setdefault(key, result)

    def get(self, key: tuple) -> Result:
        """The stored result, or a fresh Problem's run of that configuration."""
        if key not in self._results:
            cell, shape, mode, backend = key
            self._results[key] = Problem(cell, shape, backend).run(mode)
        return self._results[key]


@pytest.fixture(scope="module")
def results() -> Results:
    """Results of the module so far: a benchmark keeps its own and compares with the
    other backend's, which is computed only when that benchmark has not run yet."""
    return Results()


def assert_results_agree(got: Result, expected: Result, label: str) -> None:
    """Same keys, shapes, finite values, and agreement within fastrnn.bench's
    TOLERANCE, tensor by tensor (fastrnn.bench.compare, the check the report
    makes before timing)."""
    problem = compare(got, expected)
    assert problem is None, f"{label}: {problem}"


@pytest.fixture
def check_agreement() -> Callable[[Result, Result, str], None]:
    """assert_results_agree(got, expected, label)."""
    return assert_results_agree


# ------------------------------------------------------- quick subset

def pytest_collection_modifyitems(config, items) -> None:
    """--benchmark-quick keeps the benchmarks each module's in_quick(params) accepts."""
    if not config.getoption("benchmark_quick", False):
        return
    keep, drop = [], []
    for item in items:
        in_quick = getattr(getattr(item, "module", None), "in_quick", None)
        params = getattr(getattr(item, "callspec", None), "params", {})
        (keep if in_quick is None or in_quick(params) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ------------------------------------------------------- the tables

_TABLES = pytest.StashKey[Dict[str, Tuple[Layout, Dict[str, Dict[str, List[float]]]]]]()
_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session) -> None:
    session.config.stash[_STARTED] = time.perf_counter()


@pytest.fixture
def record_timing(request) -> Callable[..., None]:
    """record_timing(table, row, column, benchmark, layout=CELL): keep the round times
    of a benchmark for the tables printed at the end (not when benchmarks are disabled)."""
    tables = request.config.stash.setdefault(_TABLES, {})

    def record(table: str, row: str, column: str, benchmark, layout: Layout = CELL) -> None:
        if benchmark.stats is None:          # benchmarks disabled: run once as a test
            return
        rows = tables.setdefault(table, (layout, {}))[1]
        rows.setdefault(row, {})[column] = list(benchmark.stats.stats.data)

    return record


def _table_order(title: str):
    cell = title.split()[0]
    return (0, BENCH_CELLS.index(cell), title) if cell in BENCH_CELLS else (1, 0, title)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    tables = config.stash.get(_TABLES, {})
    if not tables:
        return
    from fastrnn import _kernels
    from fastrnn.bench.report import cpu_model, usable_cpus

    ordered = {title: (layout, dict(sorted(rows.items())))
               for title, (layout, rows) in sorted(tables.items(),
                                                   key=lambda kv: _table_order(kv[0]))}
    elapsed = time.perf_counter() - config.stash.get(_STARTED, time.perf_counter())
    tr = terminalreporter
    tr.write_sep("-", "fastrnn benchmarks")
    tr.write_line(f"{cpu_model()}, {usable_cpus()} CPUs, kernels {_kernels.isa()}")
    tr.write_line("ms per call: the median over rounds ± half their interquartile range")
    used = sorted({row.split()[0] for _, rows in ordered.values() for row in rows} & set(SHAPES))
    if any(layout is CELL for layout, _ in ordered.values()):
        tr.write_line(f"cells: {THREADS} threads; numpy/c, best peer/c > 1: fastrnn c is faster "
                      f"(ort: onnxruntime)")
    if used:
        tr.write_line("shapes (T, B, I, H): " + ", ".join(f"{n} {SHAPES[n]}" for n in used))
    tr.write_line("")
    for line in format_tables(ordered):
        tr.write_line(line)
    tr.write_line("")
    count = sum(len(cells) for _, rows in ordered.values() for cells in rows.values())
    tr.write_line(f"{count} benchmarks in {elapsed:.0f} s")
