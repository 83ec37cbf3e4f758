"""fastrnn against its peers, PyTorch and ONNX Runtime, in pytest-benchmark groups.

    pytest --benchmark bench/test_bench_peers.py   # time the whole grid (most of
                                                   # pytest --benchmark's 6 minutes)
    pytest bench/test_bench_peers.py               # S1 and S2 once each, as checks; a few
                                                   # seconds

One group per (cell, shape, mode), named as in test_bench_backends.py,
``{cell}-T{T}_B{B}_I{I}_H{H}-{inference|training}`` (``bilstm`` is the bidirectional
LSTM), holding fastrnn "c", fastrnn "numpy" (S1 and S2 only: seconds per call at S4
and S5), ``torch`` (torch.nn.RNN/LSTM/GRU) and ``onnxruntime`` (one ONNX node,
inference only). The implementations are the adapters of ``fastrnn.bench``, built
from the same weights.

Where the grid meets test_bench_backends.py (S1 = T100_B1_I64_H64 and
S3 = T100_B64_I256_H256) the peers join that file's groups and this file does not
time fastrnn's backends again (IN_BACKENDS_FILE), so ``pytest bench/ --benchmark-only``
gives every group of the grid all four implementations, each timed once.

S3, S4, S5 and the bidirectional LSTM are parametrized only when timing (--benchmark,
--benchmark-only), and --benchmark-quick keeps S1 and S2; the default run checks S1 and S2: every peer's result (output; after training dx and
every parameter gradient) must agree with fastrnn "c"'s, the check also made after
timing. Peers that are not installed skip (``pip install ".[bench]"`` and a CPU torch).

Threads: conftest.py's ``threads`` (2, or FASTRNN_BENCH_THREADS) for BLAS, fastrnn, torch
and ONNX Runtime. In the tables at the end each implementation is a column of its cell's
table. For the report with GFLOP/s and percent of the GEMM peak, timed in interleaved
rounds, use ``python -m fastrnn.bench``.
"""
from __future__ import annotations

from typing import Dict, Tuple

import pytest

from fastrnn import bench as fb

SMALL = ("S1", "S2")
BIG = ("S3", "S4", "S5")
NUMPY_SHAPES = ("S1", "S2")
# fastrnn's own backends at these shapes are timed by test_bench_backends.py, in
# the same pytest-benchmark groups
IN_BACKENDS_FILE = {(cell, shape) for cell in ("rnn_tanh", "lstm", "gru") for shape in ("S1", "S3")}
MODE_NAMES = {"infer": "inference", "train": "training"}   # test_bench_backends' words

# Calls at S3-S5 take 0.01-1.5 s: fixed rounds bound the run; the rest calibrate.
PEDANTIC = {
    "S3": {"infer": dict(rounds=20, warmup_rounds=2), "train": dict(rounds=12, warmup_rounds=1)},
    "S4": {"infer": dict(rounds=10, warmup_rounds=1), "train": dict(rounds=5, warmup_rounds=1)},
    "S5": {"infer": dict(rounds=5, warmup_rounds=1), "train": dict(rounds=3, warmup_rounds=1)},
}


def _cases(big: bool):
    for shape in SMALL + (BIG if big else ()):
        cells = fb.DEFAULT_CELLS + (("bilstm",) if shape == "S3" else ())
        for cell in cells:
            for mode in fb.MODES:
                for impl in fb.IMPLS:
                    if not fb.supports(impl, mode):
                        continue
                    if impl == "numpy" and shape not in NUMPY_SHAPES:
                        continue
                    if impl in ("c", "numpy") and (cell, shape) in IN_BACKENDS_FILE:
                        continue
                    yield pytest.param(cell, shape, mode, impl,
                                       id=f"{cell}-{shape}-{mode}-{impl}")


def pytest_generate_tests(metafunc):
    # the big shapes only when timing: in the default run they would cost a minute
    if {"cell", "shape", "mode", "impl"} <= set(metafunc.fixturenames):
        big = bool(metafunc.config.getoption("benchmark_only", False))
        metafunc.parametrize("cell,shape,mode,impl", list(_cases(big)))


def in_quick(params) -> bool:
    """The --benchmark-quick subset: S1 and S2."""
    return params.get("shape") in SMALL


_problems: Dict[Tuple[str, str], fb.Problem] = {}
_references: Dict[Tuple[str, str, str], fb.Result] = {}


def _problem(cell: str, shape: str) -> fb.Problem:
    key = (cell, shape)
    if key not in _problems:
        _problems.clear()                # one problem at a time: S5's arrays are large
        _problems[key] = fb.make_problem(fb.Spec.make(cell, shape))
    return _problems[key]


def _reference(cell: str, shape: str, mode: str, threads: int) -> fb.Result:
    """fastrnn "c"'s result of the configuration (computed once)."""
    key = (cell, shape, mode)
    if key not in _references:
        c = fb.make_impl("c", _problem(cell, shape), threads)
        c.step(mode)()
        _references[key] = c.result(mode)
    return _references[key]


def test_peer(benchmark, record_timing, threads, cell, shape, mode, impl):
    if impl == "torch":
        pytest.importorskip("torch")
    if impl == "onnxruntime":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    problem = _problem(cell, shape)
    spec = problem.spec
    group = f"{cell}-{spec.label}-{MODE_NAMES[mode]}"

    adapter = fb.make_impl(impl, problem, threads)
    step = adapter.step(mode)
    benchmark.group = group
    benchmark.extra_info.update(cell=cell, shape=(spec.T, spec.B, spec.I, spec.H), mode=mode,
                                impl=impl, dtype=spec.dtype, threads=threads,
                                gflop=fb.flops(spec, mode) / 1e9)
    pedantic = PEDANTIC.get(shape, {}).get(mode)
    if pedantic:
        benchmark.pedantic(step, iterations=1, **pedantic)
    else:
        benchmark(step)
    record_timing(cell, f"{shape} {mode}", impl, benchmark)

    got = adapter.result(mode)
    assert got["output"].shape == (spec.T, spec.B, spec.D * spec.H)
    if mode == "train":
        assert got["dx"].shape == (spec.T, spec.B, spec.I)
    if impl != "c":
        problem_text = fb.compare(got, _reference(cell, shape, mode, threads))
        assert problem_text is None, f"{group}: {impl} vs fastrnn c: {problem_text}"
