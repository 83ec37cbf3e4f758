"""Threads: the C kernels release the GIL; one layer object is safe from two threads.

(The stress tests of one object shared by 8 threads, and of load_state_dict /
zero_grad against concurrent calls, are in test_thread_safety.py.)

The timing tests run the kernels on the naive C GEMM (fixture naive_gemm) so that
a call's duration is its own thread's work, not OpenBLAS's thread pool, and they
assert orderings of timestamps, never speed-up ratios.

Why two kinds of timing test: start/end timestamps of two threads' calls overlap
whenever the threads interleave at all, which CPython also does when an extension
holds the GIL (the waiting thread gets the GIL right after the other's C call
returns, before that thread records its end). The heartbeat test is the one that
tells the two apart: while a kernel call runs in one thread, a pure-Python loop in
another thread must keep running, and a negative control shows that the same
detector does see a C call that holds the GIL.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastrnn

# one forward + backward of this LSTM takes ~50-150 ms on the naive GEMM
T, B, I, H = 50, 16, 64, 96


def lstm_problem(seed):
    layer = fastrnn.LSTM(I, H, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (T, B, I)).astype(np.float32)
    dy = rng.uniform(-1, 1, (T, B, H)).astype(np.float32)
    return layer, x, dy


def forward_backward(layer, x, dy):
    layer.zero_grad()
    out, _ = layer(x)
    dx, _ = layer.backward(dy)
    return {"output": out, "dx": dx,
            **{f"grads[{k}]": g.copy() for k, g in layer.grads.items()}}


def run_threads(targets):
    """Start one thread per callable behind a barrier; re-raise the first error."""
    barrier = threading.Barrier(len(targets))
    errors = []

    def wrap(fn):
        def run():
            try:
                barrier.wait(timeout=30)
                fn()
            except BaseException as e:        # noqa: BLE001 - re-raised in the main thread
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a thread did not finish within 120 s"
    if errors:
        raise errors[0]


# ------------------------------------------------------ two layers, two threads

def test_two_layers_in_two_threads_overlap_in_time(naive_gemm, assert_tensors_close):
    problems = [lstm_problem(seed) for seed in (1, 2)]
    expected = [forward_backward(*p) for p in problems]        # single-threaded
    calls = 3
    spans = [[], []]
    results = [[], []]

    def worker(k):
        def run():
            for _ in range(calls):
                start = time.perf_counter()
                r = forward_backward(*problems[k])
                spans[k].append((start, time.perf_counter()))
                results[k].append(r)
        return run

    run_threads([worker(0), worker(1)])
    shortest = min(end - start for s in spans for start, end in s)
    overlaps = [min(e0, e1) - max(s0, s1) for s0, e0 in spans[0] for s1, e1 in spans[1]]
    assert max(overlaps) > 0, (
        f"no call of thread 0 overlaps a call of thread 1: {spans}")
    assert max(overlaps) > 0.25 * shortest, (
        f"calls overlap by at most {max(overlaps) * 1e3:.1f} ms, a quarter of the shortest "
        f"call is {0.25 * shortest * 1e3:.1f} ms")
    for k in range(2):
        for i, r in enumerate(results[k]):
            assert_tensors_close(r, expected[k], np.float32, context=f"thread {k} call {i}")


def heartbeat_gap(work):
    """Run work() in a thread while this thread spins a pure-Python heartbeat.

    Returns (duration of work, longest stretch of it without a heartbeat). If
    work holds the GIL, that stretch is about its whole duration."""
    span = []
    done = threading.Event()

    def worker():
        start = time.perf_counter()
        work()
        span.extend((start, time.perf_counter()))
        done.set()

    beats = []
    th = threading.Thread(target=worker)
    th.start()
    while not done.is_set():
        beats.append(time.perf_counter())
    th.join()
    start, end = span
    points = [start] + [b for b in beats if start < b < end] + [end]
    return end - start, float(np.max(np.diff(points)))


def test_gil_is_released_during_a_kernel_call(naive_gemm):
    layer = fastrnn.LSTM(I, 2 * H, seed=3)       # one C call of ~50-200 ms
    x = np.random.default_rng(3).uniform(-1, 1, (T, B, I)).astype(np.float32)
    ratios = []
    for _ in range(3):                           # best of three against scheduling hiccups
        duration, gap = heartbeat_gap(lambda: layer(x, training=False))
        ratios.append(gap / duration)
        if gap < 0.5 * duration:
            break
    assert min(ratios) < 0.5, (
        f"while the kernel ran, another Python thread stalled for {min(ratios):.0%} of the "
        f"call (ratios {ratios}): the GIL seems to be held")


def test_heartbeat_detects_a_call_that_holds_the_gil():
    """Negative control for the test above: sum() over a range runs in C without
    ever releasing the GIL, and the heartbeat must stall for most of it."""
    n = 200_000
    while True:                                  # calibrate to ~50 ms
        t0 = time.perf_counter()
        sum(range(n))
        if time.perf_counter() - t0 > 0.05 or n > 10**9:
            break
        n *= 2
    duration, gap = heartbeat_gap(lambda: sum(range(n)))
    assert gap > 0.5 * duration, (
        f"the heartbeat ran during a GIL-holding call (gap {gap * 1e3:.1f} ms of "
        f"{duration * 1e3:.1f} ms): the detector cannot tell released from held")


# -------------------------------------------------- one layer, two threads

@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_one_layer_shared_by_two_threads(backend, assert_close):
    """Calls on one layer are serialized by its lock: every forward gives its own
    input's output; the record kept for backward is per thread, so every
    backward differentiates its own thread's last training forward (another
    thread's training or inference call in between changes nothing), and the
    accumulated gradients are the sum of those."""
    layer = fastrnn.GRU(8, 24, num_layers=2, bidirectional=True, seed=4, backend=backend,
                        dtype=np.float64)
    rng = np.random.default_rng(4)
    xs = [rng.uniform(-1, 1, (20, 6, 8)) for _ in range(2)]
    dy = rng.uniform(-1, 1, (20, 6, 48))
    expected = []
    for x in xs:                                 # single-threaded truth
        layer.zero_grad()
        out, h_n = layer(x)
        dx, dh0 = layer.backward(dy)
        expected.append({"output": out, "h_n": h_n, "dx": dx,
                         "grads": {k: g.copy() for k, g in layer.grads.items()}})
    layer.zero_grad()

    iterations = 15 if backend == "c" else 5

    def worker(k):
        def run():
            for _ in range(iterations):
                out, h_n = layer(xs[k])
                assert_close(f"thread {k}: output", out, expected[k]["output"], np.float64)
                assert_close(f"thread {k}: h_n", h_n, expected[k]["h_n"], np.float64)
                out, h_n = layer(xs[k], training=False)
                assert_close(f"thread {k}: inference output", out, expected[k]["output"],
                             np.float64)
                out, h_n = layer(xs[k])
                dx, _ = layer.backward(dy)              # this thread's forward, xs[k]
                assert_close(f"thread {k}: dx", dx, expected[k]["dx"], np.float64)
        return run

    run_threads([worker(0), worker(1)])
    for name, g in layer.grads.items():
        want = iterations * (expected[0]["grads"][name] + expected[1]["grads"][name])
        assert_close(f"grads[{name}] after 2 x {iterations} backwards", g, want, np.float64)



def test_set_num_threads_governs_the_kernels_blas():
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        assert fastrnn.get_num_threads() == 1
        layer = fastrnn.LSTM(8, 16, seed=0)
        out, _ = layer(np.ones((20, 64, 8), np.float32))   # large enough to use BLAS
        assert np.all(np.isfinite(out))
    finally:
        fastrnn.set_num_threads(before)
    assert fastrnn.get_num_threads() == before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n"):
            fastrnn.set_num_threads(bad)


def _threaded_inference_in_child(queue):
    import numpy as np
    import fastrnn
    fastrnn.set_num_threads(2)
    layer = fastrnn.LSTM(16, 32, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 64, 16)).astype(np.float32)
    out, _ = layer(x, training=False)
    layer.backend = "numpy"
    ref, _ = layer(x, training=False)
    queue.put(float(np.abs(out - ref).max()))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forked_child_runs_threaded_calls():
    """The workers of fastrnn's pool do not survive a fork: a child forked after the
    parent used them must start its own (it hung, or lost slices, if it waited on
    the parent's)."""
    import multiprocessing as mp
    fastrnn.set_num_threads(2)
    layer, x, _ = lstm_problem(0)
    x64 = np.repeat(x, 4, axis=1)   # B = 64: two loop threads on the pool
    layer(x64, training=False)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_threaded_inference_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung in a threaded call"
    assert child.exitcode == 0
    assert queue.get(timeout=5) < 1e-5
