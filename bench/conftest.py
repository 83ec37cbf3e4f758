"""Shared set-up of the backend benchmarks (bench/test_bench_backends.py).

A ``Problem`` is one layer (cell kind, shape, backend) with a fixed input and a
fixed output gradient; ``Problem.run(mode)`` is what a benchmark times:

    "inference"  output = layer(x, training=False)
    "training"   zero_grad; output = layer(x); dx = layer.backward(d_output)

Both backends build their layer from the same seed, so they hold the same
parameters and must agree. Each benchmark, also in the default
``--benchmark-disable`` mode where it runs once as a plain test, checks its
result against the other backend's, kept in ``results`` (module scope) so that
each configuration runs at most once more than its benchmarks.

With ``--benchmark-only`` the summary ends with the speed-up of the C kernels
over the NumPy reference per group (the ratio of medians and of minima).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

import fastrnn
from fastrnn.bench import compare

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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    # pyproject's addopts has --benchmark-disable (benchmarks run once, as tests), and
    # pytest-benchmark refuses --benchmark-only together with it. Asking for
    # --benchmark-only means asking for timings, so let it imply --benchmark-enable.
    if config.getoption("benchmark_only", False):
        config.option.benchmark_enable = True


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


# --------------------------------------------------- C-over-NumPy summary

_TIMINGS = pytest.StashKey[Dict[str, Dict[str, object]]]()


@pytest.fixture
def record_timing(request) -> Callable[[str, str, object], None]:
    """record_timing(group, backend, benchmark): keep the stats for the summary."""
    timings = request.config.stash.setdefault(_TIMINGS, {})

    def record(group: str, backend: str, benchmark) -> None:
        if benchmark.stats is not None:         # None when benchmarks are disabled
            timings.setdefault(group, {})[backend] = benchmark.stats

    return record


@pytest.hookimpl(trylast=True)   # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    timings = config.stash.get(_TIMINGS, {})
    rows: List[Tuple[str, object, object]] = [
        (group, t["c"], t["numpy"]) for group, t in sorted(timings.items())
        if "c" in t and "numpy" in t]
    if not rows:
        return
    tr = terminalreporter
    tr.write_sep("-", "fastrnn: speed-up of backend 'c' over backend 'numpy' "
                      "(numpy time / c time; > 1: C is faster)")
    width = max(len(group) for group, _, _ in rows)
    tr.write_line(f"{'group':<{width}}  {'c median':>10}  {'numpy median':>12}  "
                  f"{'x (median)':>10}  {'x (min)':>8}")
    for group, c, npy in rows:
        tr.write_line(f"{group:<{width}}  {1e3 * c['median']:8.3f}ms  {1e3 * npy['median']:10.3f}ms  "
                      f"{npy['median'] / c['median']:10.2f}  {npy['min'] / c['min']:8.2f}")
