"""The regularized recurrences in inference: what an option costs over the plain layer.

    pytest --benchmark bench/test_bench_regularize.py   # time them (about a minute)
    pytest bench/test_bench_regularize.py               # each once, as checks

Zoneout in inference is the expectation h_t = p * h_{t-1} + (1 - p) * h_new (and
c's for LSTM): one blend of B*H values per step on top of the plain layer, inside
the C time loop. Keras' dropout (input_dropout, recurrent_dropout) and
DropConnect (weight_dropout) are training only: their inference is the plain
layer, and their groups show it costs nothing. One pytest-benchmark group per (cell, option), holding fastrnn
"c" plain, fastrnn "c" with the option, and the same option in PyTorch (its own
cell stepped in Python with the blend: torch.nn.LSTM's fused kernel has no
zoneout). Every run checks that fastrnn's output equals the torch implementation's.

Shape: T=100, B=32, I=H=128, float32, at conftest.py's ``threads``.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn.bench.summary import Layout

T, B, I, H = 100, 32, 128, 128
LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn_tanh": fastrnn.RNN}
OPTIONS = {"zoneout": {"zoneout": 0.1}, "zoneout_c": {"zoneout": 0.1, "cell_zoneout": 0.5},
           "dropout": {"input_dropout": 0.2, "recurrent_dropout": 0.2},
           "weight_dropout": {"weight_dropout": 0.3}}
CASES = [(cell, opt) for cell in LAYERS for opt in OPTIONS if opt != "zoneout_c" or cell == "lstm"]
IMPLS = ("plain", "fastrnn", "torch")
# option/plain: what the option costs fastrnn (1.0: nothing); torch/option > 1:
# fastrnn with the option is faster than torch with it
TABLE = Layout(columns=IMPLS, ratios=(("option/plain", ("fastrnn",), "plain"),
                                      ("torch/option", ("torch",), "fastrnn")))


def in_quick(params) -> bool:
    return True


def _layer(cell: str, option: str, impl: str):
    kw = {} if impl == "plain" else OPTIONS[option]
    return LAYERS[cell](I, H, seed=0, **kw).eval()


def _torch_step(cell: str, option: str, layer):
    """A torch implementation of the option's inference: the expectation blend per step."""
    torch = pytest.importorskip("torch")
    w = {k[:-3]: torch.from_numpy(v) for k, v in layer.state_dict().items()}
    p_h = OPTIONS[option].get("zoneout", 0.0)
    p_c = OPTIONS[option].get("cell_zoneout", 0.0)
    args = (w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"])

    def run(x):
        with torch.no_grad():
            h = x.new_zeros(B, H)
            c = x.new_zeros(B, H)
            out = torch.empty(T, B, H)
            for t in range(T):
                if cell == "lstm":
                    h_new, c_new = torch.lstm_cell(x[t], (h, c), *args)
                    c = torch.lerp(c_new, c, p_c) if p_c else c_new
                elif cell == "gru":
                    h_new = torch.gru_cell(x[t], h, *args)
                else:
                    h_new = torch.rnn_tanh_cell(x[t], h, *args)
                h = torch.lerp(h_new, h, p_h) if p_h else h_new   # p*h + (1-p)*h_new
                out[t] = h
            return out.numpy()
    return run


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell,option", CASES)
def test_inference(benchmark, record_timing, threads, cell, option, impl):
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    layer = _layer(cell, option, "fastrnn")
    if impl == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(threads)
        step = _torch_step(cell, option, layer)
        xt = torch.from_numpy(x)
        run = lambda: step(xt)   # noqa: E731
    else:
        target = layer if impl == "fastrnn" else _layer(cell, option, "plain")
        run = lambda: target(x)[0]   # noqa: E731
    benchmark.group = f"{cell}-{option}-T{T}_B{B}_I{I}_H{H}-inference"
    benchmark.extra_info.update(cell=cell, option=option, impl=impl, threads=threads)
    out = benchmark(run)
    record_timing(f"{cell} {option}", "inference", impl, benchmark, layout=TABLE)
    if impl == "torch":
        np.testing.assert_allclose(out, layer(x)[0], rtol=1e-4, atol=1e-5)
