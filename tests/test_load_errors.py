"""fastrnn.load on files that save did not write (issue 8, items 2 and 4).

Whatever the bytes, load raises ValueError naming ``path`` (MemoryError for a
configuration too large: tests/test_limits.py), TypeError for a path of the
wrong type, FileNotFoundError/IsADirectoryError for a name that cannot be
opened; never BadZipFile, EOFError, AttributeError, NotImplementedError,
RuntimeError or RecursionError from the layers beneath.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import _validation
from fastrnn._archive import CONFIG_KEY


def saved(layer=None, compressed=False):
    """The bytes save writes for layer (a GRU(3, 4) by default)."""
    buffer = io.BytesIO()
    fastrnn.save(layer if layer is not None else fastrnn.GRU(3, 4, seed=0), buffer)
    if not compressed:
        return buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def entries(data):
    """{name: array} of a saved file's bytes."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def with_config(config, **weights):
    """A file of this configuration (any JSON) and these weights."""
    return npz(**{CONFIG_KEY: np.array(json.dumps(config))}, **weights)


def rewritten(layer=None, /, **changes):
    """A saved layer (a GRU(3, 4) by default) whose configuration is updated
    with changes."""
    arrays = entries(saved(layer))
    config = json.loads(str(arrays.pop(CONFIG_KEY)[()]))
    config.update(changes)
    return with_config(config, **arrays)


def patched_headers(data, method=None, flags=None):
    """data with every zip header's compression method and/or flags replaced."""
    b = bytearray(data)
    for signature, at_flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(signature)
        while i >= 0:
            if flags is not None:
                struct.pack_into("<H", b, i + at_flags, flags)
            if method is not None:
                struct.pack_into("<H", b, i + at_flags + 2, method)
            i = b.find(signature, i + 4)
    return bytes(b)


def flipped(data, entry, offset=100):
    b = bytearray(data)
    b[data.find(entry.encode()) + offset] ^= 0xFF
    return bytes(b)


GOOD = saved()
WEIGHTS = {k: v for k, v in entries(GOOD).items() if k != CONFIG_KEY}
BASE = {"format": "fastrnn", "version": 1}

CASES = {
    "empty": b"",
    "text": b"hello, world",
    "zip-signature-then-junk": b"PK\x03\x04junk",
    "npy-file": (lambda f: (np.save(f, np.zeros(3)), f.getvalue())[1])(io.BytesIO()),
    "truncated": GOOD[:len(GOOD) // 2],
    "truncated-end": GOOD[:-30],
    "corrupt-data-crc": flipped(GOOD, "weight_hh_l0.npy"),
    "corrupt-deflate": flipped(saved(compressed=True), "weight_hh_l0.npy", 60),
    "unsupported-compression": patched_headers(GOOD, method=99),
    "encrypted": patched_headers(GOOD, flags=1),
    "plain-npz": npz(w=np.zeros(3)),
    "config-not-a-string": npz(**{CONFIG_KEY: np.zeros(3)}),
    "config-object-array": npz(**{CONFIG_KEY: np.array([{"class": "GRU"}], object)}),
    "config-huge-string": npz(**{CONFIG_KEY: np.array("x" * 2_000_000)}),
    "config-not-json": npz(**{CONFIG_KEY: np.array("{not json")}),
    "config-deeply-nested": npz(**{CONFIG_KEY: np.array("[" * 100_000 + "]" * 100_000)}),
    "config-a-list": with_config([1, 2, 3]),
    "config-null": with_config(None),
    "no-format": with_config({"class": "GRU", "args": {"input_size": 3, "hidden_size": 4}}),
    "class-os.system": rewritten(**{"class": "os.system"}),
    "class-a-list": rewritten(**{"class": ["GRU"]}),
    "args-a-list": rewritten(args=[3, 4]),
    "args-null": rewritten(args=None),
    "args-unknown": rewritten(args={"input_size": 3, "hidden_size": 4, "colour": "red"}),
    "args-non-string-keys": rewritten(args={"input_size": 3, "hidden_size": 4, "": 1}),
    "args-bad-value": rewritten(args={"input_size": 3, "hidden_size": "4"}),
    "args-bad-activations": rewritten(args={"input_size": 3, "hidden_size": 4,
                                            "activations": 5}),
    "args-bad-dtype": rewritten(args={"input_size": 3, "hidden_size": 4, "dtype": "object"}),
    "bidirectional-layer-a-list": rewritten(**{"class": "Bidirectional", "layer": [1],
                                               "merge_mode": "sum"}),
    "bidirectional-no-merge-mode": rewritten(**{"class": "Bidirectional",
                                                "layer": {"class": "GRU", "args": {
                                                    "input_size": 3, "hidden_size": 4}}}),
    "bidirectional-of-a-cell": rewritten(**{"class": "Bidirectional", "merge_mode": "sum",
                                            "layer": {"class": "GRUCell", "args": {
                                                "input_size": 3, "hidden_size": 4}}}),
    "training-not-a-bool": rewritten(training="yes"),
    "weights-missing": with_config({**BASE, "class": "GRU",
                                    "args": {"input_size": 3, "hidden_size": 4}}),
    "weights-unexpected": with_config(
        {**BASE, "class": "GRU", "args": {"input_size": 3, "hidden_size": 4}},
        **WEIGHTS, weight_ih_l9=np.zeros(3)),
    "weights-misshapen": with_config(
        {**BASE, "class": "GRU", "args": {"input_size": 3, "hidden_size": 4}},
        **{**WEIGHTS, "weight_hh_l0": np.zeros((4, 12))}),
    "weights-strings": with_config(
        {**BASE, "class": "GRU", "args": {"input_size": 3, "hidden_size": 4}},
        **{**WEIGHTS, "bias_hh_l0": np.full(12, "a")}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_file_raises_value_error_naming_path(case):
    with pytest.raises(ValueError, match=r"^path: .* is not a fastrnn file \(.+\)"):
        fastrnn.load(io.BytesIO(CASES[case]))


@pytest.mark.parametrize("case", ["empty", "npy-file", "corrupt-data-crc", "config-a-list",
                                  "bidirectional-layer-a-list"])
def test_a_bad_file_by_name_names_the_file(case, tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(CASES[case])
    with pytest.raises(ValueError, match=r"^path: .*model\.npz.* is not a fastrnn file"):
        fastrnn.load(path)
    with pytest.raises(ValueError, match=r"^path: .*model\.npz.* is not a fastrnn file"):
        fastrnn.load(str(path))


def test_another_version_says_so(tmp_path):
    with pytest.raises(ValueError, match=r"^path: .*version 99.*reads version 1"):
        fastrnn.load(io.BytesIO(rewritten(version=99)))


def test_paths_that_cannot_be_opened(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastrnn.load(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        fastrnn.load(tmp_path)


@pytest.mark.parametrize("path", [None, 3, 2.5, ["model.npz"], io.StringIO("text")],
                         ids=["None", "int", "float", "list", "text-file"])
def test_paths_of_the_wrong_type(path):
    with pytest.raises(TypeError, match="^path: expected a file name or a binary file object"):
        fastrnn.load(path)


@pytest.mark.parametrize("layer", [
    fastrnn.GRU(3, 4, seed=1), fastrnn.LSTM(3, 5, num_layers=2, proj_size=2, seed=1),
    fastrnn.RNN(3, 4, bidirectional=True, seed=1), fastrnn.LSTMCell(3, 4, seed=1),
    fastrnn.Bidirectional(fastrnn.GRU(3, 4, seed=1), merge_mode="mul"),
    fastrnn.Sequential(fastrnn.Embedding(5, 3, seed=1), fastrnn.GRU(3, 4, seed=1),
                       fastrnn.Dropout(0.5), fastrnn.Linear(4, 2, seed=1))],
    ids=["GRU", "LSTM-projected", "RNN-bidirectional", "LSTMCell", "Bidirectional",
         "Sequential"])
@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_good_files_still_load(layer, compressed):
    twin = fastrnn.load(io.BytesIO(saved(layer, compressed)))
    assert type(twin) is type(layer)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[k], v, err_msg=k)


def test_files_from_earlier_numpy_headers_load():
    # a .npy version 2.0 header (what NumPy writes for very long headers)
    arrays = entries(GOOD)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for k, v in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, v, version=(2, 0), allow_pickle=False)
            z.writestr(k + ".npy", entry.getvalue())
    twin = fastrnn.load(io.BytesIO(out.getvalue()))
    np.testing.assert_array_equal(twin.weight_hh_l0, arrays["weight_hh_l0"])


def test_a_sequential_is_checked_part_by_part(monkeypatch):
    model = fastrnn.Sequential(*[fastrnn.Linear(20, 40, seed=0) for _ in range(3)])
    nested = {}
    for _ in range(40):
        nested = {"0": {"class": "Sequential", "training": True, "modules": nested}}
    for modules in (nested, [1, 2]):
        with pytest.raises(ValueError, match="nested at most 32 deep"):
            fastrnn.load(io.BytesIO(rewritten(model, modules=modules)))
    with pytest.raises(ValueError, match="bad configuration for 'Linear'"):
        fastrnn.load(io.BytesIO(rewritten(model, modules={"0": {"class": "Linear",
                                                                "args": {"x": 1}}})))
    cell = json.loads(str(entries(saved(fastrnn.GRUCell(3, 4)))[CONFIG_KEY][()]))
    with pytest.raises(ValueError, match=r"bad configuration for 'Sequential': modules\[0\]"):
        fastrnn.load(io.BytesIO(rewritten(model, modules={"0": cell})))
    with pytest.raises(ValueError, match="unknown layer class 'mymodule.Net'; a model of your "
                                         r"own class: build it, then model.load\(path\)"):
        fastrnn.load(io.BytesIO(rewritten(model, **{"class": "mymodule.Net"})))
    # each part fits the bound alone (14464 bytes with the float64 draw), the three
    # together do not (3 * 7744)
    monkeypatch.setattr(_validation, "_memory_limit", lambda: (16_000, "a test bound"))
    with pytest.raises(MemoryError, match="configures a Sequential whose parts would need"):
        fastrnn.load(io.BytesIO(saved(model)))
