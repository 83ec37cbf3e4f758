"""Layer normalization in inference: what ``layer_norm=True`` costs over the plain layer.

    pytest --benchmark bench/test_bench_layer_norm.py   # time them (about a minute)
    pytest bench/test_bench_layer_norm.py               # each once, as checks

LSTM and GRU with layer_norm=True (Ba et al. 2016 in haste's form) differ from the
plain layer only by their normalizations: the input product x W_ih^T of every row
(all steps at once, before the time loop) and the recurrent product h W_hh^T of
every step, each normalized over its G*H columns (a mean and a variance, then one
scaling pass), and for the LSTM c_t over its H columns. Per step and batch row
that is two reductions per product, plus one more over c for the LSTM: O(B*G*H)
work beside the step's 2*B*G*H*H of GEMM, so ``ln/plain`` should stay near 1 and
what it exceeds 1 by is that arithmetic (with 2 threads the plain layer may also
split its recurrent GEMM by units, which the normalization's row statistics
rule out).

One pytest-benchmark group per (cell, shape), ``{cell}-layer_norm-T.._B.._I.._H..-
inference``, holding fastrnn "c" plain, fastrnn "c" with layer_norm, and the same
layer-normalized recurrence in PyTorch (no torch layer has it): the input product
of all steps as one GEMM and one ``F.layer_norm`` before a Python time loop of
``F.layer_norm(h @ W_hh^T)`` and the gates, under ``torch.no_grad()`` at the same
thread count. They end in the ``{cell} layer_norm`` tables of the summary, where
ln/plain is what layer normalization costs fastrnn (1.0: nothing) and torch/ln > 1
means fastrnn's layer is faster than the torch implementation.

The gains and the LSTM's shift of c are drawn away from their initial 1 and 0 (the
arithmetic is the same), and every run of the torch implementation checks that it
computed what fastrnn did: the two outputs agree within fastrnn.bench's TOLERANCE
(fastrnn.bench.compare), or where the recurrence amplifies float32 rounding beyond
it, within 5 times the torch output's own distance from the same torch code run in
float64. The LN-LSTM at S3 is such a case (at the initial gains too): its rounding
errors grow about e-fold every 15 to 20 steps, and any float32 run of it (fastrnn's, torch's, fastrnn's NumPy
reference) ends some 1e-3 from the float64 result, while a different computation
(a gain, the shift or a normalization left out) is off by 1e-1 and more.

Shapes: S3 (T100, B64, I256, H256) and S1 (T100, B1, I64, H64) of the grid,
float32, at conftest.py's ``threads``.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import pytest

import fastrnn
from fastrnn.bench import SHAPES as GRID
from fastrnn.bench import compare
from fastrnn.bench.summary import Layout

SHAPES = {name: GRID[name] for name in ("S3", "S1")}
LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
IMPLS = ("plain", "fastrnn", "torch")
# ln/plain: what layer normalization costs fastrnn (1.0: nothing); torch/ln > 1:
# fastrnn with layer_norm is faster than torch with it
TABLE = Layout(columns=IMPLS, ratios=(("ln/plain", ("fastrnn",), "plain"),
                                      ("torch/ln", ("torch",), "fastrnn")))

AMPLIFIED = 5      # the allowance over float32 rounding where the recurrence amplifies it

_problems: Dict[Tuple[str, str], dict] = {}


def in_quick(params) -> bool:
    return True


def _problem(cell: str, shape: str) -> dict:
    """The plain and the layer-normalized layer (seed 0: the same weights and biases;
    gains and c's shift drawn) and the input, built once per (cell, shape)."""
    key = (cell, shape)
    if key not in _problems:
        T, B, I, H = SHAPES[shape]
        plain = LAYERS[cell](I, H, seed=0).eval()
        ln = LAYERS[cell](I, H, seed=0, layer_norm=True).eval()
        rng = np.random.default_rng(2)
        state = ln.state_dict()
        for name in state:
            if name.startswith("ln_weight"):
                state[name] = 1 + 0.2 * rng.standard_normal(state[name].shape)
            elif name.startswith("ln_bias"):
                state[name] = 0.1 * rng.standard_normal(state[name].shape)
        ln.load_state_dict(state)
        x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
        _problems[key] = {"plain": plain, "fastrnn": ln, "x": x}
    return _problems[key]


def torch_layer_norm(torch, cell: str, layer, dtype=None):
    """The torch implementation of the layer-normalized LSTM's or GRU's inference
    (one layer, zero initial state): a function of x (T, B, I) returning output
    (T, B, H); the parameters in dtype (default: the layer's)."""
    F = torch.nn.functional
    p = {k[:-3]: torch.from_numpy(v) for k, v in layer.state_dict().items()}   # no _l0
    if dtype is not None:
        p = {k: v.to(dtype) for k, v in p.items()}
    w_ih_t, w_hh_t = p["weight_ih"].T.contiguous(), p["weight_hh"].T.contiguous()
    H = layer.hidden_size
    GH = w_hh_t.shape[1]

    def run(x):
        T, B, I = x.shape
        with torch.no_grad():
            # LN(X W_ih^T) * g_ih + b_ih, every step at once
            gi = F.layer_norm(torch.mm(x.reshape(T * B, I), w_ih_t), (GH,),
                              p["ln_weight_ih"], p["bias_ih"]).view(T, B, GH)
            h = x.new_zeros(B, H)
            c = x.new_zeros(B, H)
            out = x.new_empty(T, B, H)
            for t in range(T):
                # LN(h W_hh^T) * g_hh + b_hh
                gh = F.layer_norm(torch.mm(h, w_hh_t), (GH,), p["ln_weight_hh"], p["bias_hh"])
                if cell == "lstm":
                    a = gi[t] + gh
                    s = torch.sigmoid(a)                                   # i, f, (g), o
                    g = torch.tanh(a[:, 2 * H:3 * H])
                    c = torch.addcmul(s[:, H:2 * H] * c, s[:, :H], g)      # f*c + i*g
                    cn = F.layer_norm(c, (H,), p["ln_weight_c"], p["ln_bias_c"])
                    h = s[:, 3 * H:] * torch.tanh(cn)                      # o * tanh(LN(c))
                else:
                    rz = torch.sigmoid(gi[t, :, :2 * H] + gh[:, :2 * H])
                    n = torch.tanh(torch.addcmul(gi[t, :, 2 * H:], rz[:, :H], gh[:, 2 * H:]))
                    h = torch.lerp(n, h, rz[:, H:])                        # (1-z)*n + z*h
                out[t] = h
        return out

    return run


def assert_same_recurrence(got: np.ndarray, expected: np.ndarray, exact: np.ndarray,
                           label: str) -> None:
    """got (float32) agrees with expected within fastrnn.bench's TOLERANCE, or else
    within AMPLIFIED times got's distance from exact, the same code run in float64:
    the float32 rounding the recurrence amplified (module docstring)."""
    problem = compare({"output": got}, {"output": expected})
    if problem is None:
        return
    rounding = float(np.max(np.abs(got - exact)))
    err = float(np.max(np.abs(got.astype(np.float64) - expected)))
    assert np.all(np.isfinite(expected)) and err <= AMPLIFIED * rounding, (
        f"{label}: {problem}, beyond {AMPLIFIED} x the {rounding:.1e} that float32 "
        f"rounding alone accounts for (float32 against float64)")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", list(LAYERS))
def test_layer_norm_inference(benchmark, record_timing, threads, cell, shape, impl):
    problem = _problem(cell, shape)
    layer, x = problem["fastrnn"], problem["x"]
    if impl == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(threads)
        step, xt = torch_layer_norm(torch, cell, layer), torch.from_numpy(x)
        run = lambda: step(xt).numpy()   # noqa: E731
    else:
        target = problem[impl]
        run = lambda: target(x)[0]   # noqa: E731
    T, B, I, H = SHAPES[shape]
    benchmark.group = f"{cell}-layer_norm-T{T}_B{B}_I{I}_H{H}-inference"
    benchmark.extra_info.update(cell=cell, shape=SHAPES[shape], impl=impl, dtype="float32",
                                threads=threads)
    out = benchmark(run)
    record_timing(f"{cell} layer_norm", f"{shape} infer", impl, benchmark, layout=TABLE)

    assert out.shape == (T, B, H)
    if impl == "torch":
        exact = torch_layer_norm(torch, cell, layer, torch.float64)(xt.double()).numpy()
        assert_same_recurrence(out, layer(x)[0], exact,
                               f"{cell} {shape}: torch vs fastrnn c layer_norm")
