"""Results across fastrnn.set_num_threads: reproducible at one count, within a
documented bound across counts (README, "Threads").

Why they differ at all (csrc/ is not changed to avoid it; each is a choice
made for speed):

- fastrnn's time loop in inference splits the batch rows between its threads.
  The packed per-step kernel sums over k in one chain for rows in whole
  register blocks (4 rows on AVX2, 8 on AVX-512) and in 2 or 4 interleaved
  partial sums for the rows left over (csrc/gemm.h, packed_tile), so a row
  that is left over in its thread's slice but not in the whole batch (or the
  other way round) rounds differently: B = 17, 20, 25 differ, B = 16, 24, 32
  on two threads do not.
- Kernels are chosen by the rows each thread gets: one thread runs a batch of
  33 to 64 rows through BLAS per step, two threads run their slices of at
  most 32 rows through the packed kernel; one thread projects the input 256
  rows at a time (BLAS above 2M multiply-adds), a threaded loop projects each
  slice step by step with the packed kernel.
- Products of at least 4M multiply-adds (training's projection, the weight
  gradients, dx; per-step products above 32 rows) are split over the threads
  by rows or columns, each slice one serial BLAS call, and SciPy's OpenBLAS
  sgemm rounds an element differently depending on the shape of the call it
  is in (halving M or N changes bits; dgemm did not in our measurements), so
  float32 training results differ, dx and grads included.

The differences are rounding differences, propagated through the recurrence
like any other; at initialisation-scale weights they stay within
BOUND_EPS * eps * max|tensor| for every tensor (measured at most 10.4 eps over
every cell kind, both dtypes, B 1-128, T 20-100, H 64-1024). At one thread
count results are bitwise reproducible.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

# every tensor a of a run at n threads, against the same run at 1 thread:
# max|a_n - a_1| <= BOUND_EPS * eps(dtype) * max|a_1|   (README, "Threads")
BOUND_EPS = 32

THREAD_COUNTS = (1, 2, 3)
# B: below the threaded loop (1), even slices (16, 48), slices with left-over
# rows (17, 20, 25; 25 and 64 in three slices), one thread's batch through
# BLAS per step (48, 64)
BATCHES = (1, 16, 17, 20, 25, 48, 64)
T, I, H = 8, 48, 64        # LSTM/GRU project 256-row chunks through BLAS (> 2M MACs)


@pytest.fixture
def restore_threads():
    before = fastrnn.get_num_threads()
    yield
    fastrnn.set_num_threads(before)


def run(layer, x, dy, training):
    """Every tensor of a forward (and, training, its backward): {name: array}."""
    if not training:
        out, state = layer(x, training=False)
        return {"output": out, **_states("h_n", state)}
    layer.zero_grad()
    out, state = layer(x)
    is_lstm = isinstance(layer, fastrnn.LSTM)
    dx, d_state = layer.backward(dy, (state[0], state[1]) if is_lstm else state)
    return {"output": out, **_states("h_n", state), "dx": dx, **_states("dh0", d_state),
            **{f"grads[{k}]": g.copy() for k, g in layer.grads.items()}}


def _states(name, state):
    if isinstance(state, tuple):
        return {name: state[0], name.replace("h", "c", 1): state[1]}
    return {name: state}


def excess(got, want, dtype):
    """{name: max|got - want| / (eps * max|want|)} of the tensors over BOUND_EPS."""
    eps = np.finfo(dtype).eps
    over = {}
    for name, w in want.items():
        scale = eps * max(float(np.max(np.abs(w))), np.finfo(dtype).tiny)
        ratio = float(np.max(np.abs(got[name].astype(np.float64) - w))) / scale
        if not ratio <= BOUND_EPS:          # NaN fails too
            over[name] = ratio
    return over


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_results_across_thread_counts_stay_within_the_bound(cell, dtype, make_layer,
                                                            restore_threads):
    rng = np.random.default_rng(0)
    failures = []
    for B in BATCHES:
        layer = make_layer(cell, I, H, seed=B, dtype=dtype)
        x = rng.standard_normal((T, B, I)).astype(dtype)
        dy = rng.standard_normal((T, B, H)).astype(dtype)
        for training in (False, True):
            results = {}
            for n in THREAD_COUNTS + (THREAD_COUNTS[-1],):   # the last one twice
                fastrnn.set_num_threads(n)
                got = run(layer, x, dy, training)
                if n in results:             # the same count again: bitwise the same
                    same = [k for k in got if not np.array_equal(got[k], results[n][k])]
                    assert not same, f"B={B} training={training} n={n}: {same} changed " \
                                     f"between two runs at the same thread count"
                results[n] = got
            for n in THREAD_COUNTS[1:]:
                over = excess(results[n], results[1], dtype)
                if over:
                    failures.append(f"B={B} training={training} {n} vs 1 threads: "
                                    + ", ".join(f"{k} {v:.1f} eps" for k, v in over.items()))
    assert not failures, f"over {BOUND_EPS} eps * max|tensor|: " + "; ".join(failures)


@pytest.mark.parametrize("make", [
    lambda: fastrnn.GRU(I, H, num_layers=2, bidirectional=True, seed=1),
    lambda: fastrnn.LSTM(I, H, num_layers=2, proj_size=32, seed=2),
    lambda: fastrnn.RNN(I, 256, seed=3, batch_first=True),
], ids=["gru-2x-bidirectional", "lstm-proj", "rnn-H256-batch-first"])
def test_stacks_across_thread_counts_stay_within_the_bound(make, restore_threads):
    layer = make()
    rng = np.random.default_rng(1)
    width = layer.num_directions * (layer.proj_size or layer.hidden_size)
    for B in (17, 48):
        shape = (B, T) if layer.batch_first else (T, B)
        x = rng.standard_normal(shape + (I,)).astype(np.float32)
        dy = rng.standard_normal(shape + (width,)).astype(np.float32)
        for training in (False, True):
            results = {}
            for n in THREAD_COUNTS:
                fastrnn.set_num_threads(n)
                results[n] = run(layer, x, dy, training)
            for n in THREAD_COUNTS[1:]:
                over = excess(results[n], results[1], np.float32)
                assert not over, f"B={B} training={training} {n} vs 1 threads: {over}"

