"""Backend "c" against backend "numpy" for every cell kind, shape and mode.

    pytest --benchmark bench/test_bench_backends.py   # time them
    pytest bench/test_bench_backends.py               # each runs once as a check

Each pytest-benchmark group ``{cell}-{shape}-{mode}`` holds the two backends of
one configuration; in the tables at the end (conftest.py) they are the c and
numpy columns of the cell's rows S1 and S3, which test_bench_peers.py completes
with the peers. Every benchmark also checks its own result (shape, finiteness,
agreement with the other backend, gradients included after training), so a fast
but wrong kernel cannot pass. --benchmark-quick: S1 only.
"""
from __future__ import annotations

import os

import pytest

from fastrnn._kernels import blas_enabled
from fastrnn.bench import grid_name

# name -> (T, B, I, H), float32
SHAPES = {
    "T100_B1_I64_H64": (100, 1, 64, 64),         # streaming-like: latency of small GEMMs
    "T100_B64_I256_H256": (100, 64, 256, 256),   # a training batch: GEMM throughput
}
CELLS = ["rnn_tanh", "lstm", "gru"]
MODES = ["inference", "training"]
MODE_NAMES = {"inference": "infer", "training": "train"}   # the tables' (fastrnn.bench's)

# Calls of the big shape take 0.02-0.4 s on either backend: a fixed number of rounds
# bounds the run; small shapes use pytest-benchmark's own
# calibration. Compare medians: on a shared machine a few rounds can be far slower.
PEDANTIC = {
    "T100_B64_I256_H256": {"inference": dict(rounds=20, warmup_rounds=2),
                           "training": dict(rounds=12, warmup_rounds=1)},
}


def in_quick(params) -> bool:
    """The --benchmark-quick subset: the small shape."""
    return params.get("shape") == "T100_B1_I64_H64"


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", CELLS)
def test_backend(benchmark, threads, make_problem, results, check_agreement, record_timing,
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
    record_timing(cell, f"{grid_name(SHAPES[shape])} {MODE_NAMES[mode]}", backend, benchmark)

    T, B, I, H = SHAPES[shape]
    got = problem.result(step_result)
    assert got["output"].shape == (T, B, H)
    if mode == "training":
        assert got["dx"].shape == (T, B, I)
    other = "numpy" if backend == "c" else "c"
    results.keep((cell, SHAPES[shape], mode, backend), got)
    check_agreement(got, results.get((cell, SHAPES[shape], mode, other)),
                    f"{group} {backend} vs {other}")
