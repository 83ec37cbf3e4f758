"""Backend "c" against backend "numpy" for every cell kind, shape and mode.

    pytest bench/ --benchmark-only            # time them (about a minute)
    pytest bench/                             # each runs once as a check (pyproject
                                              # sets --benchmark-disable)

Each pytest-benchmark group ``{cell}-{shape}-{mode}`` holds the two backends of
one configuration, so its table compares them directly; the run ends with a
table of the speed-ups (conftest.py). Every benchmark also checks its own
result (shape, finiteness, agreement with the other backend, gradients
included after training), so a fast but wrong kernel cannot pass.
"""
from __future__ import annotations

import os

import pytest

from fastrnn._kernels import blas_enabled

# name -> (T, B, I, H), float32
SHAPES = {
    "T100_B1_I64_H64": (100, 1, 64, 64),         # streaming-like: latency of small GEMMs
    "T100_B64_I256_H256": (100, 64, 256, 256),   # a training batch: GEMM throughput
}
CELLS = ["rnn_tanh", "lstm", "gru"]
MODES = ["inference", "training"]

# Calls of the big shape take 0.02-0.4 s on either backend: a fixed number of rounds
# bounds the run (about a minute in all); small shapes use pytest-benchmark's own
# calibration. Compare medians: on a shared machine a few rounds can be far slower.
PEDANTIC = {
    "T100_B64_I256_H256": {"inference": dict(rounds=20, warmup_rounds=2),
                           "training": dict(rounds=12, warmup_rounds=1)},
}


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", CELLS)
def test_backend(benchmark, make_problem, results, check_agreement, record_timing,
                 cell, shape, mode, backend):
    group = f"{cell}-{shape}-{mode}"
    benchmark.group = group
    benchmark.extra_info.update(cell=cell, shape=SHAPES[shape], mode=mode, backend=backend,
                                dtype="float32", blas=blas_enabled(),
                                openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS"))
    problem = make_problem(cell, SHAPES[shape], backend)
    step = problem.step(mode)

    pedantic = PEDANTIC.get(shape, {}).get(mode)
    if pedantic:
        step_result = benchmark.pedantic(step, iterations=1, **pedantic)
    else:
        step_result = benchmark(step)
    record_timing(group, backend, benchmark)

    T, B, I, H = SHAPES[shape]
    got = problem.result(step_result)
    assert got["output"].shape == (T, B, H)
    if mode == "training":
        assert got["dx"].shape == (T, B, I)
    other = "numpy" if backend == "c" else "c"
    results.keep((cell, SHAPES[shape], mode, backend), got)
    check_agreement(got, results.get((cell, SHAPES[shape], mode, other)),
                    f"{group} {backend} vs {other}")
