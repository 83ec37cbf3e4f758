"""States that decay toward zero (issue 13, item 6): the same RNN call with a
state that stays normal and with one that decays through the denormal range.

    pytest --benchmark bench/test_bench_denormals.py     # timed (about 5 seconds)

W_hh = 0.99 I, zero input and bias: h_t = tanh(0.99 h_{t-1}). From h0 = 1e-36
the state spends most of the 2000 steps below float32's smallest normal number
(1.2e-38), where many CPUs take a slow microcoded path unless denormals are
flushed; fastrnn flushes them for the duration of each kernel call, so the two
rows of a group should take the same time (decaying/normal about 1 in the table at
the end of ``pytest --benchmark``). Each run also checks that the
decaying state really reached the denormal range (computed in NumPy, whose
arithmetic keeps denormals) and that fastrnn's outputs hold none.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn.bench.summary import Layout

T, B, H = 2000, 16, 64
STATES = {"normal": 1e-3, "decaying": 1e-36}
TABLE = Layout(columns=tuple(STATES), ratios=(("decaying/normal", ("decaying",), "normal"),))


def decaying_layer():
    layer = fastrnn.RNN(H, H, bias=False, seed=0)
    sd = {k: np.zeros_like(v) for k, v in layer.state_dict().items()}
    sd["weight_hh_l0"][...] = 0.99 * np.eye(H, dtype=np.float32)
    layer.load_state_dict(sd)
    return layer


@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("state", list(STATES))
def test_decaying_state(benchmark, record_timing, state, mode):
    benchmark.group = f"denormals-rnn_tanh-T{T}_B{B}_H{H}-{mode}"
    benchmark.extra_info.update(state=state, mode=mode)
    layer = decaying_layer()
    x = np.zeros((T, B, H), np.float32)
    h0 = np.full((1, B, H), STATES[state], np.float32)
    dy = np.full((T, B, H), 1e-30, np.float32)

    def step():
        out, h_n = layer(x, h0, training=mode == "training")
        if mode == "training":
            layer.zero_grad()
            layer.backward(dy)
        return out

    out = benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)
    record_timing(f"denormals: rnn_tanh T{T} B{B} H{H}, a state that stays normal or decays",
                  mode, state, benchmark, layout=TABLE)
    tiny = np.finfo(np.float32).tiny
    assert not np.any((out != 0) & (np.abs(out) < tiny)), "a denormal reached the output"
    if state == "decaying":
        # the same recurrence in NumPy (denormals kept): most steps are denormal
        h, denormal_steps = np.float32(STATES[state]), 0
        for _ in range(T):
            h = np.tanh(np.float32(0.99) * h)
            denormal_steps += bool(0 < abs(h) < tiny)
        assert denormal_steps > T // 2, denormal_steps
