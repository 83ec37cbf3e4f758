"""Saving and loading (fastrnn.serialize): one .npz, no pickle, exact round trips.

Every class (RNN, LSTM, GRU, Bidirectional, the three cells) and option comes
back as the same class with the same constructor arguments, the same weights
bit for bit, the same outputs, the same training flag and the same dropout
masks from then on.
"""
from __future__ import annotations

import inspect
import io
import json

import numpy as np
import pytest

import fastrnn
from fastrnn.serialize import CONFIG_KEY, load, save

LAYERS = {
    "rnn": lambda: fastrnn.RNN(3, 5, seed=0),
    "rnn_relu_stack": lambda: fastrnn.RNN(3, 5, num_layers=2, nonlinearity="relu",
                                          bidirectional=True, dropout=0.2, seed=1),
    "rnn_reverse_nobias": lambda: fastrnn.RNN(3, 5, direction="reverse", bias=False, seed=2),
    "lstm": lambda: fastrnn.LSTM(3, 5, seed=3),
    "lstm_proj": lambda: fastrnn.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=True,
                                      batch_first=True, seed=4),
    "lstm_f64_numpy": lambda: fastrnn.LSTM(3, 5, dtype=np.float64, backend="numpy", seed=5),
    "gru": lambda: fastrnn.GRU(3, 5, seed=6),
    "gru_reset_before": lambda: fastrnn.GRU(3, 5, reset_after=False, num_layers=3,
                                            direction="reverse", dropout=0.5, seed=7),
    "gru_eval": lambda: fastrnn.GRU(3, 5, batch_first=True, seed=8).eval(),
    "bi_concat": lambda: fastrnn.Bidirectional(fastrnn.LSTM(3, 5, seed=9)),
    "bi_sum": lambda: fastrnn.Bidirectional(fastrnn.GRU(3, 5, reset_after=False, seed=10), "sum"),
    "bi_mul": lambda: fastrnn.Bidirectional(
        fastrnn.RNN(3, 5, nonlinearity="relu", batch_first=True, seed=11), "mul"),
    "bi_ave": lambda: fastrnn.Bidirectional(
        fastrnn.LSTM(3, 5, proj_size=3, dtype=np.float64, seed=12), "ave"),
    "rnn_cell": lambda: fastrnn.RNNCell(3, 5, nonlinearity="relu", seed=13),
    "rnn_cell_nobias": lambda: fastrnn.RNNCell(3, 5, bias=False, dtype=np.float64, seed=14),
    "lstm_cell": lambda: fastrnn.LSTMCell(3, 5, backend="numpy", seed=15),
    "gru_cell": lambda: fastrnn.GRUCell(3, 5, reset_after=False, seed=16),
}
CELLS = (fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell)


def inner(layer):
    if isinstance(layer, fastrnn.Bidirectional):
        return layer.layer
    return layer._layer if isinstance(layer, CELLS) else layer


def config(layer):
    """What must survive a round trip, besides the weights."""
    lay = inner(layer)
    view = {"type": type(layer).__name__, "repr": repr(lay), "training": lay.training,
            "dtype": lay.dtype, "backend": lay.backend}
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "direction", "proj_size", "reset_after", "nonlinearity", "merge_mode",
                 "stateful", "activations", "clip", "peepholes", "input_forget"):
        for src in (layer, lay):
            if hasattr(src, name):
                view[name] = getattr(src, name)
                break
    return view


def outputs(layer, seed=0):
    """The layer's outputs on a random input (training mode: dropout included)."""
    lay = inner(layer)
    x = np.random.default_rng(seed).standard_normal((4, 2, 3)).astype(lay.dtype)
    if isinstance(layer, CELLS):
        return layer(x[0])
    return layer(x)


def flatten(out):
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in flatten(o)]
    return [np.asarray(out)]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_round_trip(tmp_path, name):
    layer = LAYERS[name]()
    path = tmp_path / "model.fastrnn"        # no .npz suffix: written exactly there
    save(layer, path)
    assert path.exists() and not (tmp_path / "model.fastrnn.npz").exists()
    loaded = load(path)

    assert config(loaded) == config(layer)
    got, expected = loaded.state_dict(), layer.state_dict()
    assert list(got) == list(expected)
    for k in expected:
        assert got[k].dtype == expected[k].dtype and np.array_equal(got[k], expected[k]), k
    # same outputs, and (training layers) the same dropout masks from here on
    for g, e in zip(flatten(outputs(loaded)), flatten(outputs(layer))):
        assert np.array_equal(g, e)


@pytest.mark.parametrize("name", ["lstm_proj", "bi_sum", "gru_cell"])
def test_file_is_plain_npz(tmp_path, name):
    layer = LAYERS[name]()
    buffer = io.BytesIO()
    save(layer, buffer)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        cfg = json.loads(str(archive[CONFIG_KEY][()]))
        weights = {k: archive[k] for k in archive.files if k != CONFIG_KEY}
    assert cfg["format"] == "fastrnn" and cfg["version"] == 1
    assert sorted(weights) == sorted(layer.state_dict())
    buffer.seek(0)
    assert config(load(buffer)) == config(layer)


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU, *CELLS])
def test_every_constructor_argument_is_saved(cls):
    """The saved args are the constructor's parameters (seed aside: weights and
    the generator's state are saved; bidirectional is in direction)."""
    buffer = io.BytesIO()
    save(cls(3, 4), buffer)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        args = json.loads(str(archive[CONFIG_KEY][()]))["args"]
    params = [n for n, p in inspect.signature(cls).parameters.items()
              if n not in ("seed", "bidirectional") and p.kind is not p.VAR_KEYWORD]
    assert sorted(args) == sorted(params)


def test_bidirectional_saves_merge_mode_and_forward_layer(tmp_path):
    bi = LAYERS["bi_mul"]()
    save(bi, tmp_path / "bi.npz")
    with np.load(tmp_path / "bi.npz", allow_pickle=False) as archive:
        cfg = json.loads(str(archive[CONFIG_KEY][()]))
    assert cfg["class"] == "Bidirectional" and cfg["merge_mode"] == "mul"
    assert cfg["layer"]["class"] == "RNN" and cfg["layer"]["args"]["direction"] == "forward"


def test_load_errors(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastrnn file"):
        load(tmp_path / "plain.npz")

    def rewrite(path, **changes):
        buffer = io.BytesIO()
        save(fastrnn.GRU(3, 4), buffer)
        buffer.seek(0)
        with np.load(buffer, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        cfg = json.loads(str(arrays[CONFIG_KEY][()]))
        cfg.update(changes)
        arrays[CONFIG_KEY] = np.array(json.dumps(cfg))
        np.savez(path, **arrays)
        return path

    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        load(rewrite(tmp_path / "evil.npz", **{"class": "os.system"}))
    with pytest.raises(ValueError, match="version"):
        load(rewrite(tmp_path / "future.npz", version=99))
    with pytest.raises(ValueError, match="bad configuration"):
        load(rewrite(tmp_path / "bad.npz", args={"input_size": 3, "hidden_size": 4,
                                                  "colour": "red"}))
    # an object array would need unpickling: refused by allow_pickle=False
    np.savez(tmp_path / "pickled.npz", **{CONFIG_KEY: np.array([{"class": "GRU"}], object)})
    with pytest.raises(ValueError):
        load(tmp_path / "pickled.npz")


def test_save_errors(tmp_path):
    with pytest.raises(TypeError, match="layer"):
        save(object(), tmp_path / "x.npz")


@pytest.mark.parametrize("make", [lambda: fastrnn.LSTM(3, 5, num_layers=2, seed=0),
                                  lambda: fastrnn.GRUCell(3, 5, seed=0)])
def test_unpickled_from_unaligned_read_only_buffers(make):
    """Pickle protocol 5 sends arrays as buffers of their own (dask does, and reads
    them back from disk at any offset): parameters rebuilt on read-only memory one
    byte off alignment still run the kernels, give the same result and train."""
    import pickle
    layer = make()
    x = np.random.default_rng(0).standard_normal((4, 2, 3) if "Cell" not in
                                                   type(layer).__name__ else (2, 3))
    buffers = []
    data = pickle.dumps(layer, protocol=5, buffer_callback=buffers.append)
    assert buffers   # the parameters went out of band
    shifted = []
    for b in buffers:
        raw = bytearray(b.raw().nbytes + 1)
        raw[1:] = b.raw()
        shifted.append(memoryview(bytes(raw))[1:])   # read-only, one byte off
    copy = pickle.loads(data, buffers=shifted)
    for name, p in copy.named_parameters():
        assert p.flags.aligned and p.flags.writeable and p.flags.c_contiguous, name
    want, got = layer(x), copy(x)
    want, got = (want[0], got[0]) if isinstance(want, tuple) else (want, got)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
