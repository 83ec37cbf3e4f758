"""IndRNN inference: fastrnn's kernels against the same network written in torch.

    pytest --benchmark bench/test_bench_indrnn.py   # time them (about half a minute)
    pytest bench/test_bench_indrnn.py               # the first shape once, as a check

PyTorch has no IndRNN layer, so the peer is the natural torch implementation at
its best: the input projection of every step as one GEMM (``addmm``), then per
step two in-place elementwise kernels, ``P_t += u * h; relu_`` (or ``tanh_``),
on the projection's own memory, which becomes the output. That is fastrnn's
algorithm too; the difference is a fused C loop against a Python loop of torch
calls. One group per shape, ``indrnn-{shape}-inference``, with the columns c and
torch of the ``indrnn`` table at the end; the torch result must agree with
fastrnn's (fastrnn.bench.compare).

The shapes: S3 of the grid (T100_B64_I256_H256, where the projection GEMM is
most of the time) and a long, wide one with few input features
(T500_B64_I16_H1024), where the time loop dominates and runs at the speed of
memory: its output alone is 131 MB (docs/performance.rst, "IndRNN", gives the
bandwidth it reaches).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn.bench import compare

SHAPES = {"T100_B64_I256_H256": (100, 64, 256, 256), "T500_B64_I16_H1024": (500, 64, 16, 1024)}
PEDANTIC = {"T100_B64_I256_H256": dict(rounds=20, warmup_rounds=2),
            "T500_B64_I16_H1024": dict(rounds=8, warmup_rounds=1)}

_problem: dict = {}


def _setup(shape: str):
    """The layer (float32, relu, seeded) and its input, built once per shape."""
    if shape not in _problem:
        _problem.clear()                  # one at a time: the long shape's arrays are large
        T, B, I, H = SHAPES[shape]
        layer = fastrnn.IndRNN(I, H, seed=0).eval()
        x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
        _problem[shape] = (layer, x)
    return _problem[shape]


def torch_indrnn(torch, layer):
    """The torch implementation of the layer's inference (one layer, relu or
    tanh): a function of x (T, B, I) returning output (T, B, H)."""
    p = {k: torch.from_numpy(v) for k, v in layer.state_dict().items()}
    w_ih_t, u = p["weight_ih_l0"].T.contiguous(), p["weight_hh_l0"]
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    act_ = torch.Tensor.relu_ if layer.nonlinearity == "relu" else torch.Tensor.tanh_

    def run(x):
        T, B, I = x.shape
        with torch.no_grad():
            out = torch.addmm(b, x.reshape(T * B, I), w_ih_t).view(T, B, -1)   # P = X W^T + b
            h = torch.zeros_like(out[0])
            for t in range(T):
                h = act_(out[t].addcmul_(u, h))                              # h = act(P_t + u*h)
        return out

    return run


def pytest_generate_tests(metafunc):
    # the long shape only when timing: as a check it would cost seconds
    if "shape" in metafunc.fixturenames:
        timing = bool(metafunc.config.getoption("benchmark_only", False))
        metafunc.parametrize("shape", list(SHAPES) if timing else list(SHAPES)[:1])


def in_quick(params) -> bool:
    """The --benchmark-quick subset: the grid's shape."""
    return params.get("shape") == "T100_B64_I256_H256"


@pytest.mark.parametrize("impl", ["c", "torch"])
def test_indrnn_inference(benchmark, threads, record_timing, shape, impl):
    layer, x = _setup(shape)
    if impl == "torch":
        torch = pytest.importorskip("torch")
        xt, run = torch.from_numpy(x), torch_indrnn(torch, layer)
        step = lambda: run(xt).numpy()   # noqa: E731
    else:
        step = lambda: layer(x)[0]   # noqa: E731
    benchmark.group = f"indrnn-{shape}-inference"
    benchmark.extra_info.update(shape=SHAPES[shape], impl=impl, dtype="float32", threads=threads)
    benchmark.pedantic(step, iterations=1, **PEDANTIC[shape])
    record_timing("indrnn", f"{shape} infer", impl, benchmark)

    got = step()
    assert got.shape == x.shape[:2] + (layer.hidden_size,)
    if impl != "c":
        problem = compare({"output": got}, {"output": layer(x)[0]})
        assert problem is None, f"{shape}: torch vs fastrnn c: {problem}"
