"""Thread stress: layers of their own in concurrent Python threads give the sequential bits.

Six Python threads, each with its OWN layer or cell, run forward and backward
at the same time (the kernels release the GIL, so the C code really runs
concurrently, with the time loop's threads and BLAS's under it). The problems
cover every loop path: dot products (1-2 rows), the packed kernel, batch
slices on several threads (inference, 16+ rows), BLAS per step (above 32
rows), the ONNX-option cells, projection, lengths, both dtypes, and the cells'
inference fast path. Every result (outputs, states, dx, state gradients, every
parameter gradient) must equal, bit for bit, what the same calls gave run one
after another in one thread at the same fastrnn.set_num_threads setting: the
work each thread does depends on the setting, never on what runs beside it.

(One layer object shared by several threads is tests/test_threads.py's.)
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List

import numpy as np
import pytest

import fastrnn

ROUNDS = 6          # each thread repeats its calls; every round must give the same bits


def data(shape, dtype, seed):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


def layer_problem(make: Callable[[], object], T: int, B: int, seed: int,
                  lengths: bool = False) -> Callable[[], Dict[str, np.ndarray]]:
    """A layer of its own and a function that runs, on it, a training forward,
    its backward (gradients zeroed first) and an inference forward."""
    layer = make()
    dtype, lstm = layer.dtype, isinstance(layer, fastrnn.LSTM)
    x = data((B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size),
             dtype, seed)
    lens = np.random.default_rng(seed).integers(0, T + 1, B) if lengths else None
    out, _ = layer(x, lengths=lens, training=False)
    dy = data(out.shape, dtype, seed + 1)

    def run() -> Dict[str, np.ndarray]:
        layer.zero_grad()
        out, state = layer(x, lengths=lens)
        dx, d_state = layer.backward(dy)
        inference, _ = layer(x, lengths=lens, training=False)
        result = {"output": out, "dx": dx, "inference output": inference}
        for name, s in (("h_n", state), ("dh0", d_state)):
            if lstm:
                result[name], result[name.replace("h", "c", 1)] = s
            else:
                result[name] = s
        result.update({f"grads[{k}]": g.copy() for k, g in layer.grads.items()})
        return result

    return run


def cell_problem(cls, B: int, H: int, steps: int, training: bool, seed: int,
                 dtype=np.float32) -> Callable[[], Dict[str, np.ndarray]]:
    """A cell of its own stepping through a sequence (inference on the C fast
    path), or one training step and its backward."""
    cell = cls(8, H, seed=seed, dtype=dtype)
    lstm = cls is fastrnn.LSTMCell
    xs = data((steps, B, 8), dtype, seed)
    dh = data((B, H), dtype, seed + 1)

    def run() -> Dict[str, np.ndarray]:
        state = None
        result = {}
        if training:
            cell.zero_grad()
            state = cell(xs[0])
            dx, d_state = cell.backward((dh, dh) if lstm else dh)
            result = {"dx": dx, **{f"grads[{k}]": g.copy() for k, g in cell.grads.items()}}
            result["dh"] = d_state[0] if lstm else d_state
        else:
            for t in range(steps):
                state = cell(xs[t], state, training=False)
        result["h"] = state[0] if lstm else state
        return result

    return run


def problems() -> Dict[str, Callable[[], Dict[str, np.ndarray]]]:
    return {
        "lstm B=70 lengths (BLAS per step)": layer_problem(
            lambda: fastrnn.LSTM(16, 32, seed=1), T=12, B=70, seed=1, lengths=True),
        "gru 2 layers bidirectional B=40 (batch slices)": layer_problem(
            lambda: fastrnn.GRU(8, 24, num_layers=2, bidirectional=True, seed=2),
            T=10, B=40, seed=2),
        "rnn relu f64 batch_first B=16": layer_problem(
            lambda: fastrnn.RNN(12, 48, nonlinearity="relu", batch_first=True,
                                dtype=np.float64, seed=3), T=15, B=16, seed=3),
        "lstm proj peepholes clip f64 B=2 (dot products)": layer_problem(
            lambda: fastrnn.LSTM(6, 20, proj_size=8, peepholes=True, clip=3.0,
                                 dtype=np.float64, seed=4), T=20, B=2, seed=4, lengths=True),
        "gru reset-before reverse B=5 (packed)": layer_problem(
            lambda: fastrnn.GRU(10, 16, reset_after=False, direction="reverse", seed=5),
            T=25, B=5, seed=5),
        "gru cell fast path B=1": cell_problem(fastrnn.GRUCell, B=1, H=64, steps=40,
                                               training=False, seed=6),
        "lstm cell training B=33": cell_problem(fastrnn.LSTMCell, B=33, H=32, steps=1,
                                                training=True, seed=7, dtype=np.float64),
    }


def assert_same_bits(context: str, got: Dict[str, np.ndarray],
                     want: Dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys(), f"{context}: {sorted(got)} vs {sorted(want)}"
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, \
            f"{context}: {name} is {g.dtype}{g.shape}, expected {w.dtype}{w.shape}"
        if not np.array_equal(g, w):
            diff = np.abs(g.astype(np.float64) - w)
            raise AssertionError(f"{context}: {name} differs from the sequential run in "
                                 f"{int((g != w).sum())} of {g.size} elements (max "
                                 f"{diff.max():.3e})")


def run_concurrently(runs: List[Callable[[], Dict[str, np.ndarray]]], rounds: int):
    """Each run in a thread of its own, started together, rounds times over;
    returns every thread's results. Errors in a thread are re-raised here."""
    barrier = threading.Barrier(len(runs))
    results: List[List[Dict[str, np.ndarray]]] = [[] for _ in runs]
    errors: List[BaseException] = []

    def worker(k):
        try:
            barrier.wait(timeout=60)
            for _ in range(rounds):
                results[k].append(runs[k]())
        except BaseException as e:           # noqa: BLE001 - re-raised below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(runs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread did not finish within 300 s"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def num_threads(request):
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(request.param)
    yield request.param
    fastrnn.set_num_threads(before)


@pytest.mark.parametrize("num_threads", [1, 2, 3], indirect=True, ids=lambda n: f"threads{n}")
def test_own_layers_in_concurrent_threads_match_sequential_bits(num_threads):
    named = problems()
    expected = {name: run() for name, run in named.items()}       # one after another
    for name, run in named.items():                                # and again: deterministic
        assert_same_bits(f"{name}, sequential rerun", run(), expected[name])
    results = run_concurrently(list(named.values()), ROUNDS)
    for (name, _), rounds in zip(named.items(), results):
        assert len(rounds) == ROUNDS
        for i, got in enumerate(rounds):
            assert_same_bits(f"{name}, threads={num_threads}, concurrent round {i}", got,
                             expected[name])


# ------------------------------------------------------ bugs this file found

@pytest.mark.parametrize("n", [2**31, 2**63])
def test_set_num_threads_of_a_huge_count(n):
    before = fastrnn.get_num_threads()
    try:
        with pytest.raises(ValueError, match="n"):
            fastrnn.set_num_threads(n)
        assert fastrnn.get_num_threads() == before    # nothing changed (BLAS included)
    finally:
        fastrnn.set_num_threads(before)
