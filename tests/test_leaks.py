"""No memory leaks on the C backend: 10,000 calls leave the process's RSS where it was.

The calls are split among the kinds of call (forward in inference, forward
and backward in training, tapes, cell steps on the fast path and in training,
save and load, calls that raise), about 10,000 in all. Each test warms up
(buffers, caches and allocator arenas reach their steady state), reads the
resident set size, makes its calls, and reads it again: growth must stay
under 2 MB. Every call allocates 8 KB or more (outputs, caches, copies), so a
leak of anything allocated per call, in C, in the binding or in Python, shows
as 4 MB or more in the smallest test. The module takes a few seconds.

Before each reading the heap is trimmed (glibc's malloc_trim): memory that
earlier tests freed stays resident in malloc's free lists, and a leak served
from it would not grow RSS at all (the negative control failed so after the
layer-norm tests, which sort just before this module).

RSS comes from /proc/self/statm (Linux); elsewhere the tests skip.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import io
import os

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

BOUND = 2 << 20        # bytes

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="reads the resident set size from /proc/self/statm")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a busy machine, BLAS threads that wait for a core make a
    small call a hundred times slower, and this module is about memory."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)
    yield
    fastrnn.set_num_threads(before)


def _malloc_trim():
    """glibc's malloc_trim, or None (another C library)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _malloc_trim()


def rss() -> int:
    """The resident set size of this process, in bytes, after a garbage
    collection and (glibc) giving malloc's free pages back to the OS, so that
    only memory in use counts."""
    gc.collect()
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def assert_no_growth(call, calls: int) -> None:
    """calls calls of call() (after calls // 5 to warm up) grow RSS by less than BOUND."""
    for _ in range(max(calls // 5, 20)):
        call()
    before = rss()
    for _ in range(calls):
        call()
    grown = rss() - before
    assert grown < BOUND, (f"RSS grew by {grown / 2**20:.2f} MB over {calls} calls "
                           f"({grown / calls:.0f} bytes a call); bound {BOUND / 2**20:.0f} MB")


def data(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


# T, B, I, H: an output of 8 KB (float32), an LSTM training cache of about 60 KB
T, B, I, H = 4, 8, 16, 64


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU])
def test_inference_forward(cls):                                      # 3 x 1000 calls
    layer = cls(I, H, seed=0).eval()
    x = data(T, B, I)
    assert_no_growth(lambda: layer(x), calls=1000)


@pytest.mark.parametrize("kwargs", [{"bidirectional": True, "dtype": np.float64},
                                    {"proj_size": 16, "batch_first": True, "peepholes": True,
                                     "clip": 2.0}],
                         ids=["bidirectional-f64", "proj-options"])
def test_training_forward_and_backward(kwargs):                      # 2 x 1600 calls
    layer = fastrnn.LSTM(I, H, seed=0, **kwargs)
    dtype = layer.dtype
    x = data(B, T, I, dtype=dtype) if layer.batch_first else data(T, B, I, dtype=dtype)
    lengths = np.array([T, 3, 0, 1, T, 2, 4, T])
    out, _ = layer(x, lengths=lengths)
    dy = data(*out.shape, dtype=dtype, seed=1)

    def step():
        layer(x, lengths=lengths)
        layer.backward(dy)

    assert_no_growth(step, calls=800)


def test_tapes_of_truncated_bptt():                                   # 800 calls
    """Tapes kept and released: each holds its forward's cache until dropped."""
    layer = fastrnn.GRU(I, H, stateful=True, seed=0)
    x = data(T, B, I)
    dy = data(T, B, H, seed=1)

    def chunk_pair():
        layer(x)
        first = layer.tape
        layer(x)
        _, dh = layer.backward(dy)
        layer.backward(dy, dh, tape=first)

    assert_no_growth(chunk_pair, calls=200)


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
def test_cell_steps(cls):                                             # 3 x 1000 calls
    """The inference fast path, and training steps with their backward."""
    cell = cls(I, H, seed=0)
    lstm = cls is fastrnn.LSTMCell
    x, h = data(B, I), data(B, H, seed=1)
    state = (h, h) if lstm else h

    def infer():
        cell(x, state, training=False)

    def train():
        cell(x, state)
        cell.backward((h, h) if lstm else h)

    assert_no_growth(infer, calls=500)
    assert_no_growth(train, calls=250)


def test_save_and_load():                                             # 240 calls
    layer = fastrnn.GRU(I, H, bidirectional=True, seed=0)

    def round_trip():
        buffer = io.BytesIO()
        fastrnn.save(layer, buffer)
        buffer.seek(0)
        fastrnn.load(buffer)

    assert_no_growth(round_trip, calls=120)


def test_rejected_calls():                                            # 600 calls
    """Calls that raise: a bad state, a bad gradient, and the binding refusing a
    workspace too small (it has acquired its other buffers by then)."""
    layer = fastrnn.LSTM(I, H, seed=0)
    x = data(T, B, I)
    bad_state = (data(2, B, H), data(2, B, H))
    layer(x)
    bad_dy = data(T, B, H + 1)
    args = dict(cell="lstm", x=x, h0=data(B, H), c0=data(B, H), w_ih=data(4 * H, I),
                w_hh=data(4 * H, H), b_ih=data(4 * H), b_hh=data(4 * H), w_hr=None,
                lengths=None, y=np.zeros((T, B, H), np.float32), y_offset=0,
                h_n=np.zeros((B, H), np.float32), c_n=np.zeros((B, H), np.float32),
                cache=None, work=np.zeros(1, np.float32), batch_first=False, reverse=False)

    def rejected():
        with pytest.raises(ValueError):
            layer(x, bad_state)
        with pytest.raises(ValueError):
            layer.backward(bad_dy)
        with pytest.raises(ValueError, match="work"):
            _kernels.forward(**args)

    assert_no_growth(rejected, calls=200)


def test_the_detector_sees_a_leak_of_8_kb_a_call():
    """Negative control: keeping 8 KB per call over 500 calls (4 MB) fails the check."""
    kept = []
    with pytest.raises(AssertionError, match="RSS grew"):
        assert_no_growth(lambda: kept.append(np.ones(1024)), calls=500)
