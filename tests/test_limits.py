"""Sizes are checked before anything is allocated (issue 8, item 2).

A constructor, a call or ``fastrnn.load`` whose memory would exceed what the
process can be given (the least of physical memory, the cgroup limit and
RLIMIT_AS: fastrnn._validation._memory_limit) raises MemoryError naming the
argument and the bytes, and sizes beyond the C kernels' 32-bit ints raise
ValueError naming the argument, before the first allocation. The tests that
need a small bound replace _memory_limit, so they do not depend on the
machine; the ones with absurd sizes would exhaust any machine if the check
came after the allocation.
"""
from __future__ import annotations

import io
import json
import re
import tracemalloc

import numpy as np
import pytest

import fastrnn
from fastrnn import _validation
from fastrnn._archive import CONFIG_KEY

LAYERS = [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU]
CELLS = [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell]


def name(arg):
    """A regex matching the argument's name as a word at the start of the message."""
    return rf"^{re.escape(arg)}(?!\w)"


@pytest.fixture
def small_bound(monkeypatch):
    """The process may be given 1 MB: what the size checks compare with."""
    monkeypatch.setattr(_validation, "_memory_limit", lambda: (10**6, "a test bound"))


def allocated_peak(fn):
    """fn(), expected to raise; the peak bytes NumPy and Python allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises((MemoryError, ValueError)) as e:
            fn()
        return tracemalloc.get_traced_memory()[1], e.value
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------- constructors

@pytest.mark.parametrize("cls", LAYERS)
def test_absurd_num_layers_is_refused_before_allocating(cls):
    peak, error = allocated_peak(lambda: cls(3, 4, num_layers=2**31))
    assert isinstance(error, MemoryError), error
    assert re.search(name("num_layers"), str(error)) and "bytes" in str(error), str(error)
    assert peak < 10**6, f"{peak} bytes allocated before the refusal"


@pytest.mark.parametrize("cls", LAYERS + CELLS)
@pytest.mark.parametrize("arg, value", [("hidden_size", 2**64), ("hidden_size", 2**30 + 1),
                                        ("input_size", 2**31), ("input_size", 2**40)])
def test_sizes_beyond_the_kernels_c_ints(cls, arg, value):
    sizes = {"input_size": 3, "hidden_size": 4, arg: value}
    with pytest.raises(ValueError, match=name(arg)) as e:
        cls(**sizes)
    assert "32-bit" in str(e.value) and str(value) in str(e.value)


@pytest.mark.parametrize("cls", LAYERS + CELLS)
def test_parameters_beyond_any_memory(cls):
    # within the C ints, but (2**28)**2 parameters are exbibytes
    with pytest.raises(MemoryError, match=name("hidden_size")) as e:
        cls(3, 2**28)
    assert re.search(r"\d+ bytes", str(e.value))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("arg", ["input_size", "hidden_size", "num_layers"])
def test_the_argument_that_makes_the_size_is_named(cls, arg, small_bound):
    sizes = {"input_size": 3, "hidden_size": 4, "num_layers": 1}
    sizes[arg] = {"input_size": 20000, "hidden_size": 400, "num_layers": 3000}[arg]
    with pytest.raises(MemoryError, match=name(arg)) as e:
        cls(**sizes)
    assert "a test bound" in str(e.value) and "1000000 bytes" in str(e.value)


def test_sizes_within_the_bound_are_built(small_bound):
    assert fastrnn.GRU(3, 40, num_layers=2).hidden_size == 40
    assert fastrnn.LSTMCell(3, 40).hidden_size == 40


# ------------------------------------------------------------- calls

def huge(T, B, I, dtype=np.float32):
    """A (T, B, I) input that takes no memory (every element is the same one)."""
    return np.broadcast_to(dtype(1), (T, B, I))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("training", [True, False])
def test_call_beyond_the_kernels_c_ints(cls, training):
    layer = cls(3, 4)
    peak, error = allocated_peak(lambda: layer(huge(2**31, 1, 3), training=training))
    assert isinstance(error, ValueError) and re.search(name("x"), str(error)), error
    assert "32-bit" in str(error)
    assert peak < 10**6, f"{peak} bytes allocated before the refusal"


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_call_beyond_the_memory_bound(cls, backend, small_bound):
    layer = cls(3, 4, backend=backend)                 # a few hundred bytes of parameters
    x = huge(100_000, 2, 3)                            # 2.4 MB as float32, not yet allocated
    peak, error = allocated_peak(lambda: layer(x))
    assert isinstance(error, MemoryError) and re.search(name("x"), str(error)), error
    assert "training" in str(error) and "bytes" in str(error)
    assert peak < 10**6, f"{peak} bytes allocated before the refusal"


def test_training_calls_count_what_backward_needs(small_bound):
    # inference keeps two outputs; training also the caches and backward's buffers
    layer = fastrnn.LSTM(3, 4)
    x = np.ones((2000, 2, 3), np.float32)
    out, _ = layer(x, training=False)
    assert out.shape == (2000, 2, 4)
    with pytest.raises(MemoryError, match=name("x")):
        layer(x, training=True)


def test_cell_calls_are_bounded(small_bound):
    cell = fastrnn.GRUCell(3, 4).eval()
    with pytest.raises(MemoryError, match=name("x")):
        cell(huge(1, 200_000, 3)[0])
    with pytest.raises(MemoryError, match=name("x")):
        cell.train()(huge(1, 200_000, 3)[0])


def test_a_refused_call_changes_nothing(small_bound):
    layer = fastrnn.GRU(3, 4, seed=0)
    out, _ = layer(np.ones((5, 2, 3)))
    with pytest.raises(MemoryError):
        layer(huge(100_000, 2, 3))
    dx, _ = layer.backward(np.ones_like(out))      # the first forward is still there
    assert dx.shape == (5, 2, 3)


# ------------------------------------------------------------- load

def crafted(args, cls="GRU", **extra):
    """A fastrnn file of a few hundred bytes: a configuration and no weights."""
    buffer = io.BytesIO()
    config = {"format": "fastrnn", "version": 1, "class": cls, "args": args, **extra}
    np.savez(buffer, **{CONFIG_KEY: np.array(json.dumps(config))})
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU", "RNNCell", "GRUCell", "LSTMCell"])
def test_load_refuses_a_huge_configuration_before_building(cls):
    args = {"input_size": 3, "hidden_size": 2**28}
    if cls in ("RNN", "LSTM", "GRU"):
        args = {"input_size": 3, "hidden_size": 4, "num_layers": 2**31}
    file = crafted(args, cls)
    assert len(file.getvalue()) < 1000
    peak, error = allocated_peak(lambda: fastrnn.load(file))
    assert isinstance(error, MemoryError), error
    message = str(error)
    assert message.startswith("path:") and ("num_layers" in message or "hidden_size" in message)
    assert "bytes" in message and peak < 10**6, (peak, message)


def test_load_refuses_a_huge_bidirectional_configuration():
    file = crafted(None, "Bidirectional", merge_mode="sum",
                   layer={"class": "LSTM", "args": {"input_size": 2**20, "hidden_size": 2**25}})
    with pytest.raises(MemoryError, match="^path:.*hidden_size"):
        fastrnn.load(file)


def test_load_refuses_sizes_beyond_the_c_ints():
    with pytest.raises(ValueError, match="^path:.*hidden_size.*32-bit"):
        fastrnn.load(crafted({"input_size": 3, "hidden_size": 2**64}))


def test_load_reads_no_entry_larger_than_its_configuration_says():
    # a valid configuration, and an entry whose header claims 2**40 floats (4 TiB)
    good = io.BytesIO()
    fastrnn.save(fastrnn.GRU(3, 4), good)
    good.seek(0)
    with np.load(good, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (2**20, 2**20)})
    import zipfile
    file = io.BytesIO()
    with zipfile.ZipFile(file, "w") as z:
        for k, v in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, v, allow_pickle=False)
            z.writestr(k + ".npy", header.getvalue() + b"\0" * 64 if k == "weight_hh_l0"
                       else entry.getvalue())
    file.seek(0)
    peak, error = allocated_peak(lambda: fastrnn.load(file))
    assert isinstance(error, ValueError), error
    assert re.search(r"^path:.*'weight_hh_l0'.*\(12, 4\).*\(1048576, 1048576\)", str(error)), \
        str(error)
    assert peak < 10**6, f"{peak} bytes allocated before the refusal"
