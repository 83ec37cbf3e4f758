"""One layer object shared by several Python threads: results equal the sequential ones.

What is promised (README, "Threads"): calls on one layer are serialized by its
lock; the record kept for backward is per thread, so a thread's ``backward()``
differentiates that thread's own last training forward, whatever other threads
ran in between; ``load_state_dict``, ``zero_grad`` and ``state_dict`` take the
lock, so a forward or backward sees the parameters and gradients either before
or after them, never half-updated.

The stress tests run 8 threads behind a barrier, with a short GIL switch
interval so that threads interleave between every call, and compare every
tensor with the same work run sequentially beforehand. They assert results,
never timings (timings are in bench/test_bench_concurrency.py).
"""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest

import fastrnn

THREADS = 8


@contextmanager
def switch_often(interval=1e-5):
    """Let the interpreter switch threads every `interval` s (default 5 ms), so
    that another thread gets in between one thread's forward and its backward."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def run_threads(targets, timeout=60):
    """Run each callable in its own thread, started together behind a barrier;
    re-raise the first error in the calling thread."""
    barrier = threading.Barrier(len(targets))
    errors = []

    def wrap(fn):
        def run():
            try:
                barrier.wait(timeout=timeout)
                fn()
            except BaseException as e:        # noqa: BLE001 - re-raised below
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=timeout)
    assert not any(th.is_alive() for th in threads), f"a thread did not finish within {timeout} s"
    if errors:
        raise errors[0]


def mismatches(got, expected, rtol, atol):
    """Names of the tensors of got that differ from expected."""
    return [name for name in expected
            if not np.allclose(got[name], expected[name], rtol=rtol, atol=atol)]


# ------------------------------------------------ (a) per-thread records

def layer_step(layer, x, state, dy, d_state):
    """Forward (training) then backward of a layer or Bidirectional wrapper."""
    output, state_n = layer(x, state)
    dx, d_state0 = layer.backward(dy, d_state)
    if isinstance(state_n, tuple):
        return {"output": output, "h_n": state_n[0], "c_n": state_n[1], "dx": dx,
                "dh0": d_state0[0], "dc0": d_state0[1]}
    return {"output": output, "h_n": state_n, "dx": dx, "dh0": d_state0}


def cell_step(cell, x, state, dy, d_state):
    """One training step of a cell then its backward."""
    if isinstance(cell, fastrnn.LSTMCell):
        h, c = cell(x, state)
        dx, (dh, dc) = cell.backward(d_state)
        return {"h": h, "c": c, "dx": dx, "dh": dh, "dc": dc}
    h = cell(x, state)
    dx, dh = cell.backward(d_state)
    return {"h": h, "dx": dx, "dh": dh}


def problems_for(obj, kind, n, seed=0):
    """n different problems {x, state, dy, d_state} for obj, in obj's layouts.

    Layers get (T, B, I) inputs of four shapes; cells
    get (B, I) or, for every other thread, unbatched (I,) inputs."""
    rng = np.random.default_rng(seed)
    inner = obj._layer if kind == "cell" else getattr(obj, "layer", obj)
    dtype, I, H, R = inner.dtype, inner.input_size, inner.hidden_size, inner._width
    lstm = isinstance(inner, fastrnn.LSTM)

    def u(*shape):
        return rng.uniform(-1, 1, shape).astype(dtype)

    out = []
    for k in range(n):
        if kind == "cell":
            lead = () if k % 2 else (3,)
            x, dy = u(*lead, I), None
            h, c, dh, dc = u(*lead, R), u(*lead, H), u(*lead, R), u(*lead, H)
        else:
            # threads k and k + 4 share a shape: another's record then gives
            # wrong numbers rather than a shape error
            T, B, DL = 7 + k % 2, 2 + k % 4, inner.num_directions * inner.num_layers
            width = R if getattr(obj, "merge_mode", "concat") != "concat" \
                else inner.num_directions * R
            x, dy = u(T, B, I), u(T, B, width)
            h, c, dh, dc = u(DL, B, R), u(DL, B, H), u(DL, B, R), u(DL, B, H)
        state, d_state = ((h, c), (dh, dc)) if lstm else (h, dh)
        out.append({"x": x, "state": state, "dy": dy, "d_state": d_state})
    return out


SHARED = {
    "gru-2x-bidirectional": ("layer", lambda: fastrnn.GRU(5, 12, num_layers=2,
                                                          bidirectional=True, seed=1,
                                                          dtype=np.float64)),
    "lstm-proj": ("layer", lambda: fastrnn.LSTM(5, 12, num_layers=2, proj_size=6, seed=2,
                                                dtype=np.float64)),
    "rnn-f32": ("layer", lambda: fastrnn.RNN(5, 12, seed=3)),
    "bidirectional-mul": ("layer", lambda: fastrnn.Bidirectional(
        fastrnn.GRU(5, 12, seed=4, dtype=np.float64), merge_mode="mul")),
    "lstm-cell": ("cell", lambda: fastrnn.LSTMCell(5, 12, seed=5, dtype=np.float64)),
    "gru-cell": ("cell", lambda: fastrnn.GRUCell(5, 12, seed=6, dtype=np.float64)),
}


def run_step(obj, kind, p):
    if kind == "cell":
        return cell_step(obj, p["x"], p["state"], None, p["d_state"])
    return layer_step(obj, p["x"], p["state"], p["dy"], p["d_state"])


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("name", list(SHARED))
def test_shared_object_backward_differentiates_the_threads_own_forward(name, backend):
    """8 threads each run forward + backward on one shared layer (or cell, or
    Bidirectional wrapper) with their own inputs, interleaved with inference
    calls; every result equals the sequential one, and the accumulated
    gradients are the sum of every thread's."""
    kind, make = SHARED[name]
    obj = make()
    obj.backend = backend
    dtype = obj.dtype
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    problems = problems_for(obj, kind, THREADS)
    expected, grads = [], []
    for p in problems:                              # sequential truth
        obj.zero_grad()
        expected.append(run_step(obj, kind, p))
        grads.append({k: g.copy() for k, g in obj.grads.items()})
    obj.zero_grad()

    iterations = 12 if backend == "c" else 3
    wrong = [[] for _ in range(THREADS)]

    def worker(k):
        def run():
            x = problems[k]["x"]
            for i in range(iterations):
                try:
                    got = run_step(obj, kind, problems[k])
                except ValueError as e:            # another thread's record, misshapen
                    wrong[k].append((i, str(e)))
                    continue
                bad = mismatches(got, expected[k], rtol, atol)
                if bad:
                    wrong[k].append((i, bad))
                obj(x, training=False)             # another thread's inference: no effect
        return run

    with switch_often():
        run_threads([worker(k) for k in range(THREADS)])
    n_wrong = sum(len(w) for w in wrong)
    assert n_wrong == 0, (
        f"{n_wrong} of {THREADS * iterations} forward+backward pairs differ from the "
        f"sequential result; first per thread: {[w[:1] for w in wrong]}")
    for key in grads[0]:
        want = iterations * sum(g[key] for g in grads)
        np.testing.assert_allclose(obj.grads[key], want, rtol=100 * rtol, atol=100 * atol,
                                   err_msg=f"grads[{key}] after {THREADS} x {iterations} "
                                           f"backwards")


def in_thread(fn):
    """fn() run in a new thread; its result, or its exception re-raised here."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:        # noqa: BLE001 - re-raised below
            box["error"] = e

    th = threading.Thread(target=run)
    th.start()
    th.join(timeout=30)
    if "error" in box:
        raise box["error"]
    return box.get("result")


def test_records_are_per_thread():
    """Sequenced by hand: another thread's training or inference call leaves
    this thread's record alone; a thread that ran no training forward has
    nothing to differentiate; tapes are per thread and usable anywhere."""
    layer = fastrnn.GRU(3, 6, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    xa, xb = rng.uniform(-1, 1, (4, 2, 3)), rng.uniform(-1, 1, (6, 5, 3))
    dya, dyb = rng.uniform(-1, 1, (4, 2, 6)), rng.uniform(-1, 1, (6, 5, 6))
    layer(xa)
    dxa, _ = layer.backward(dya)
    layer.zero_grad()

    layer(xa)
    tape_a = layer.tape                               # for another thread, below
    layer(xa)                                         # this thread's record
    in_thread(lambda: layer(xb))                      # a training forward elsewhere
    in_thread(lambda: layer(xb, training=False))      # and an inference one
    with pytest.raises(ValueError, match="no training forward"):
        in_thread(lambda: layer.backward(dyb))        # that thread's record is its own
    assert in_thread(lambda: layer.tape) is None
    dx, _ = layer.backward(dya)                       # this thread's forward, xa
    np.testing.assert_array_equal(dx, dxa)
    dx_there, _ = in_thread(lambda: layer.backward(dya, tape=tape_a))
    np.testing.assert_array_equal(dx_there, dxa)
    layer(xa, training=False)                         # this thread's inference
    assert layer.tape is None                         # clears this thread's record
    with pytest.raises(ValueError, match="no training forward"):
        layer.backward(dya)


@pytest.mark.parametrize("make", [lambda: fastrnn.GRUCell(3, 6, seed=0),
                                  lambda: fastrnn.LSTMCell(3, 6, seed=0)],
                         ids=["GRUCell", "LSTMCell"])
def test_cell_fast_path_clears_only_this_threads_record(make):
    cell = make()
    x = np.ones((2, 3), np.float32)
    cell(x)                                           # training: a record here
    in_thread(lambda: cell(x, training=False))        # fast path elsewhere
    assert cell.tape is not None
    cell(x, training=False)                           # fast path here
    assert cell.tape is None


def test_pickle_and_copy_drop_the_records():
    import copy
    import pickle
    for obj in (fastrnn.LSTM(3, 4, seed=0), fastrnn.GRUCell(3, 4, seed=0),
                fastrnn.Bidirectional(fastrnn.GRU(3, 4, seed=0), merge_mode="mul")):
        x = np.ones((2, 3), np.float32) if isinstance(obj, fastrnn.GRUCell) \
            else np.ones((5, 2, 3), np.float32)
        obj(x)
        for twin in (pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj)):
            assert twin.tape is None
            twin(x)                                   # records work in the copy
            assert twin.tape is not None
        assert obj.tape is not None


# ---------------------------------------- (b) parameters and grads, locked

@pytest.fixture
def one_thread():
    """fastrnn.set_num_threads(1) for the test: on a busy machine, BLAS's own
    threads can make a small backward 30x slower (bench/test_bench_concurrency.py)."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    yield
    fastrnn.set_num_threads(before)


def stack():
    """24 parameter arrays, one forward of about a millisecond."""
    return fastrnn.GRU(16, 48, num_layers=3, bidirectional=True, seed=7)


def test_load_state_dict_is_atomic_for_a_concurrent_forward():
    """Thread A runs forwards while thread B loads one of two state dicts; every
    output is one of the two parameter sets' outputs, never a mix."""
    layer = stack()
    rng = np.random.default_rng(7)
    sds = [{k: rng.uniform(-0.2, 0.2, v.shape).astype(v.dtype)
            for k, v in layer.state_dict().items()} for _ in range(2)]
    x = rng.uniform(-1, 1, (10, 4, 16)).astype(np.float32)
    outs = []
    for sd in sds:
        layer.load_state_dict(sd)
        outs.append(layer(x, training=False)[0])
    assert not np.allclose(outs[0], outs[1])
    rounds, torn, done = 200, [], threading.Event()

    def forwards():
        try:
            for i in range(rounds):
                out = layer(x, training=False)[0]
                if not any(np.array_equal(out, o) for o in outs):
                    torn.append(i)
        finally:
            done.set()

    def loads():
        i = 0
        while not done.is_set():
            layer.load_state_dict(sds[i % 2])
            i += 1

    with switch_often():
        run_threads([forwards, loads])
    assert not torn, f"{len(torn)} of {rounds} outputs came from half-loaded parameters"


def test_zero_grad_is_atomic_for_a_concurrent_backward(one_thread):
    """Rounds of one backward in thread A against one zero_grad in thread B:
    afterwards the gradients are either one backward's (zero_grad first) or
    zeros (backward first), for every parameter alike, never a mix."""
    layer = stack()
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, (10, 4, 16)).astype(np.float32)
    dy = rng.uniform(-1, 1, (10, 4, 96)).astype(np.float32)
    layer.zero_grad()
    layer(x)
    layer.backward(dy)
    one = {k: g.copy() for k, g in layer.grads.items()}
    torn = []
    with switch_often():
        for i in range(100):
            layer.zero_grad()
            layer.grads["weight_ih_l0"] += 1      # not yet zero: zero_grad must clear it
            in_backward = threading.Event()

            def train():
                layer(x)
                in_backward.set()
                layer.backward(dy)

            def clear():
                in_backward.wait(timeout=30)
                layer.zero_grad()

            run_threads([train, clear])
            state = {k: ("zero" if not g.any() else "one" if np.array_equal(g, one[k])
                         else "other") for k, g in layer.grads.items()}
            if len(set(state.values())) != 1 or "other" in state.values():
                torn.append((i, sorted(set(state.values()))))
    assert not torn, f"{len(torn)} of 100 rounds left gradients half-cleared: {torn[:3]}"


def test_state_dict_is_a_consistent_snapshot():
    """state_dict() during load_state_dict in another thread gives one whole
    parameter set, never names from both."""
    layer = stack()
    rng = np.random.default_rng(9)
    sds = [{k: np.full(v.shape, float(j), v.dtype) for k, v in layer.state_dict().items()}
           for j in (1, 2)]
    torn = []

    def reads():
        for i in range(200):
            values = {float(v.flat[0]) for v in layer.state_dict().values()}
            if len(values) != 1:
                torn.append(i)

    def loads():
        for i in range(200):
            layer.load_state_dict(sds[i % 2])

    layer.load_state_dict(sds[0])
    with switch_often():
        run_threads([reads, loads])
    assert not torn, f"{len(torn)} of 200 state_dict() calls mixed two parameter sets"
    del rng


@pytest.mark.parametrize("make", [lambda: fastrnn.GRUCell(32, 64, seed=0),
                                  lambda: fastrnn.LSTMCell(32, 64, seed=0)],
                         ids=["GRUCell", "LSTMCell"])
def test_load_state_dict_is_atomic_for_the_cells_fast_path(make):
    """The cells' inference fast path takes no lock (concurrent steps run in
    parallel), yet never computes with half-loaded parameters."""
    cell = make().eval()
    rng = np.random.default_rng(10)
    sds = [{k: rng.uniform(-0.3, 0.3, v.shape).astype(v.dtype)
            for k, v in cell.state_dict().items()} for _ in range(2)]
    x = rng.uniform(-1, 1, (4, 32)).astype(np.float32)
    outs = []
    for sd in sds:
        cell.load_state_dict(sd)
        out = cell(x)
        outs.append(out[0] if isinstance(out, tuple) else out)
    steps, torn, done = 3000, [], threading.Event()

    def step():
        try:
            for i in range(steps):
                out = cell(x)
                out = out[0] if isinstance(out, tuple) else out
                if not any(np.array_equal(out, o) for o in outs):
                    torn.append(i)
        finally:
            done.set()

    def loads():
        i = 0
        while not done.is_set():
            cell.load_state_dict(sds[i % 2])
            i += 1

    with switch_often():
        run_threads([step, loads])
    assert not torn, f"{len(torn)} of {steps} steps used half-loaded parameters"
