"""load_onnx and from_onnx on untrusted input (issue 8, items 3 and 4).

- External data: a model given as bytes, a file object or an onnx.ModelProto
  reads no file unless base_dir names a directory; a model given as a path reads
  only files inside its own directory (or inside base_dir). References by
  absolute path, with "..", through symlinks (to a file or a directory) leading
  out, to directories or past the file's end raise ValueError naming the tensor
  and the location; no foreign byte ever reaches the weights.
- Malformed models (garbage or truncated bytes, wrong tensor sizes, unknown
  element types, missing initializers or inputs, non-UTF-8 strings, bad
  attribute values) raise ValueError/TypeError naming what was wrong;
  FileNotFoundError/IsADirectoryError for a missing path or a directory.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

I, H = 3, 4
EXACT = (ValueError, TypeError, FileNotFoundError, IsADirectoryError)
SECRET = 42.0   # what a foreign file holds: weights full of it mean it was read


@contextlib.contextmanager
def refused(expected, match=None):
    """pytest.raises, and the exception is exactly one of EXACT (a subclass
    such as UnicodeDecodeError or onnx's ValidationError does not count)."""
    with pytest.raises(expected, match=match) as info:
        yield info
    assert type(info.value) in EXACT, f"{type(info.value).__name__}: {info.value}"


@pytest.fixture
def layer():
    return fastrnn.GRU(I, H, seed=3)


@pytest.fixture
def model(layer):
    return fastrnn.export_onnx(layer)


def initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def external(model, name, location, offset=None, length=None):
    """A copy of model whose initializer name points at external data."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    tensor = initializer(copy, name)
    tensor.ClearField("raw_data")
    del tensor.float_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return copy


def nbytes(model, name):
    return numpy_helper.to_array(initializer(model, name)).nbytes


def write_secret(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.full(size // 4, SECRET, np.float32).tobytes())
    return path


def assert_no_secret(loaded):
    for name, value in loaded.state_dict().items():
        assert not np.any(value == SECRET), f"{name} holds the foreign file's bytes"


@pytest.fixture
def world(tmp_path, model, monkeypatch):
    """A model directory with a secret in the cwd, one outside, and links out."""
    size = nbytes(model, "W_l0")
    models = tmp_path / "models"
    models.mkdir()
    outside = tmp_path / "outside"
    write_secret(outside / "secret.bin", size)
    write_secret(tmp_path / "cwd" / "secret.bin", size)
    os.symlink(outside / "secret.bin", models / "link.bin")
    os.symlink(outside, models / "linkdir")
    (models / "adir").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return dict(tmp=tmp_path, models=models, outside=outside, size=size)


def foreign_locations(world):
    """Locations of external data that lead out of world["models"] (or name a
    directory), each with what the error says about it."""
    return [("secret.bin", None),                         # only in the cwd
            (str(world["outside"] / "secret.bin"), "absolute"),
            ("../outside/secret.bin", ".."),
            ("adir/../../outside/secret.bin", ".."),
            ("link.bin", "outside"),
            ("linkdir/secret.bin", "outside"),
            ("adir", "regular file")]


def sources(m):
    return {"bytes": m.SerializeToString(), "bytearray": bytearray(m.SerializeToString()),
            "ModelProto": m, "file object": io.BytesIO(m.SerializeToString())}


# ------------------------------------------------------------- external data

def test_bytes_and_modelproto_read_no_files(world, model):
    """Without base_dir, bytes/ModelProto/file objects refuse every external
    reference, even a plain relative one that exists in the cwd."""
    for location, _ in foreign_locations(world):
        m = external(model, "W_l0", location)
        for kind, source in sources(m).items():
            with refused(ValueError, match="W_l0") as info:
                fastrnn.load_onnx(source)
            assert location in str(info.value), (kind, location, str(info.value))
            assert "base_dir" in str(info.value), (kind, str(info.value))


def test_modelproto_left_as_it_was(world, model):
    m = external(model, "W_l0", "secret.bin")
    before = m.SerializeToString()
    with refused(ValueError):
        fastrnn.load_onnx(m)
    for base in (world["models"], world["tmp"] / "cwd"):
        try:
            fastrnn.load_onnx(m, base_dir=base)
        except ValueError:
            pass
    assert m.SerializeToString() == before


@pytest.mark.parametrize("kind", ["bytes", "ModelProto", "file object"])
def test_base_dir_confines_bytes_and_modelproto(world, model, layer, kind):
    """With base_dir, external data loads from inside it, and only from there."""
    models = world["models"]
    weights = numpy_helper.to_array(initializer(model, "W_l0"))
    (models / "sub").mkdir()
    (models / "sub" / "w.bin").write_bytes(b"\0" * 8 + weights.tobytes())
    os.symlink(models / "sub" / "w.bin", models / "inner_link.bin")
    for location, offset in (("sub/w.bin", 8), ("inner_link.bin", 8), ("./sub/w.bin", 8)):
        m = external(model, "W_l0", location, offset=offset, length=weights.nbytes)
        for base in (models, str(models)):
            loaded = fastrnn.load_onnx(sources(m)[kind], base_dir=base)
            for name, value in layer.state_dict().items():
                np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    for location, says in foreign_locations(world):
        m = external(model, "W_l0", location)
        with refused(ValueError, match="W_l0") as info:
            loaded = fastrnn.load_onnx(sources(m)[kind], base_dir=models)
        assert location in str(info.value), str(info.value)
        if says:
            assert says in str(info.value), str(info.value)


def test_path_reads_only_its_directory(world, model, layer):
    """A model file's external data: inside its own directory only."""
    models = world["models"]
    legit = onnx.ModelProto()
    legit.CopyFrom(model)
    onnx.save_model(legit, models / "legit.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="legit.data", size_threshold=0)
    loaded = fastrnn.load_onnx(models / "legit.onnx")
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)

    for location, says in foreign_locations(world):
        if location == "secret.bin":   # a file of the cwd, absent from the model's directory
            says = "no such file"
        path = models / "m.onnx"
        onnx.save_model(external(model, "W_l0", location), path)
        for source in (path, str(path)):
            with refused(ValueError, match="W_l0") as info:
                fastrnn.load_onnx(source)
            assert location in str(info.value), str(info.value)
            assert says in str(info.value), str(info.value)


def test_symlinked_model_file_reads_its_own_directory(world, model, layer):
    """A path that is a symlink reads next to the link, as onnx.load does, and
    only there."""
    models = world["models"]
    weights = numpy_helper.to_array(initializer(model, "W_l0"))
    (models / "w.bin").write_bytes(weights.tobytes())
    onnx.save_model(external(model, "W_l0", "w.bin"), world["outside"] / "real.onnx")
    os.symlink(world["outside"] / "real.onnx", models / "m.onnx")
    loaded = fastrnn.load_onnx(models / "m.onnx")
    np.testing.assert_array_equal(loaded.state_dict()["weight_ih_l0"],
                                  layer.state_dict()["weight_ih_l0"])
    onnx.save_model(external(model, "W_l0", "secret.bin"), world["outside"] / "real.onnx")
    with refused(ValueError, match="secret.bin"):
        fastrnn.load_onnx(models / "m.onnx")


def test_external_offsets_and_lengths(world, model):
    models = world["models"]
    size = world["size"]
    (models / "w.bin").write_bytes(b"\1" * (size + 16))
    cases = [(dict(offset=size + 17), "offset"),
             (dict(offset=8, length=size + 9), "length"),
             (dict(length=size - 4), "bytes"),          # too short for the tensor's shape
             (dict(), "bytes"),                         # the whole file: too long
             (dict(offset=-1), "offset"),
             (dict(offset="x"), "offset"),
             (dict(length="1e3"), "length")]
    for kwargs, says in cases:
        m = external(model, "W_l0", "w.bin", **kwargs)
        with refused(ValueError, match="W_l0") as info:
            fastrnn.load_onnx(m, base_dir=models)
        assert says in str(info.value), (kwargs, str(info.value))
    for location in ("", "w.bin\0x"):
        with refused(ValueError, match="W_l0"):
            fastrnn.load_onnx(external(model, "W_l0", location), base_dir=models)


def test_constant_node_with_external_data_is_refused(world, model):
    """A Constant node's tensor attribute is guarded like an initializer."""
    m = external(model, "W_l0", "secret.bin")
    tensor = initializer(m, "W_l0")
    constant = helper.make_node("Constant", [], ["W_l0"], value=tensor)
    m.graph.initializer.remove(tensor)
    m.graph.node.insert(0, constant)
    for source in (m, m.SerializeToString()):
        with refused(ValueError, match="W_l0"):
            fastrnn.load_onnx(source)


def test_base_dir_argument(world, model, tmp_path):
    with refused(TypeError, match="base_dir"):
        fastrnn.load_onnx(model, base_dir=3)
    with refused(FileNotFoundError, match="base_dir"):
        fastrnn.load_onnx(model, base_dir=tmp_path / "nowhere")
    with refused(ValueError, match="base_dir"):
        fastrnn.load_onnx(model, base_dir=world["outside"] / "secret.bin")
    with refused(ValueError, match="base_dir"):
        fastrnn.load_onnx(model, base_dir="")
    fastrnn.load_onnx(model, base_dir=tmp_path)   # no external data: nothing read


# ----------------------------------------------------------- malformed models

def test_garbage_and_truncated_bytes(model):
    data = model.SerializeToString()
    cases = [b"\xff\xfe\x00garbage" * 10, b"\x0a\xff\xff\xff\xff\x0f", data[:10],
             data[:len(data) // 2], data[:-5], b"not an onnx model at all"]
    for source in cases:
        for given in (source, bytearray(source), io.BytesIO(source)):
            with refused(ValueError, match="path_or_model"):
                fastrnn.load_onnx(given)


def test_truncated_file(tmp_path, model):
    path = tmp_path / "cut.onnx"
    path.write_bytes(model.SerializeToString()[:100])
    with refused(ValueError, match="path_or_model") as info:
        fastrnn.load_onnx(path)
    assert "cut.onnx" in str(info.value)


def test_paths(tmp_path):
    with refused(FileNotFoundError, match="path_or_model"):
        fastrnn.load_onnx(tmp_path / "missing.onnx")
    with refused(IsADirectoryError, match="path_or_model"):
        fastrnn.load_onnx(tmp_path)
    with refused(IsADirectoryError, match="path_or_model"):
        fastrnn.load_onnx(str(tmp_path))
    with refused(TypeError, match="path_or_model"):
        fastrnn.load_onnx(io.StringIO("text"))
    with refused(TypeError, match="path_or_model"):
        fastrnn.load_onnx(3.5)


def edited(model, edit):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    edit(copy)
    return copy


def gru_node(m):
    return next(n for n in m.graph.node if n.op_type == "GRU")


def test_wrong_tensor_sizes_name_the_tensor(model):
    def short_raw(m):
        t = initializer(m, "W_l0")
        t.raw_data = t.raw_data[:-4]

    def wrong_dims(m):
        initializer(m, "R_l0").dims[1] = 99

    def short_floats(m):
        t = initializer(m, "B_l0")
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * 5)

    def huge_dims(m):
        initializer(m, "W_l0").dims[0] = 10 ** 12

    def negative_dims(m):
        initializer(m, "W_l0").dims[0] = -1

    for edit, name in ((short_raw, "W_l0"), (wrong_dims, "R_l0"), (short_floats, "B_l0"),
                       (huge_dims, "W_l0"), (negative_dims, "W_l0")):
        with refused(ValueError, match=name) as info:
            fastrnn.load_onnx(edited(model, edit))
        assert "reshape" not in str(info.value) or name in str(info.value)


def test_bad_element_types_name_the_tensor(model):
    for data_type in (999, TensorProto.UNDEFINED, TensorProto.STRING):
        def edit(m, data_type=data_type):
            initializer(m, "W_l0").data_type = data_type
        with refused((ValueError, TypeError), match="W_l0"):
            fastrnn.load_onnx(edited(model, edit))

    def strings(m):
        initializer(m, "W_l0").CopyFrom(helper.make_tensor(
            "W_l0", TensorProto.STRING, [1, 3 * H, I], [b"a"] * (3 * H * I)))
    with refused((ValueError, TypeError), match="W"):
        fastrnn.load_onnx(edited(model, strings))

    def segment(m):
        initializer(m, "W_l0").segment.begin = 0
    with refused(ValueError, match="W_l0"):
        fastrnn.load_onnx(edited(model, segment))


def test_missing_initializers_and_inputs(model):
    def no_w(m):
        m.graph.initializer.remove(initializer(m, "W_l0"))

    def no_inputs(m):
        del gru_node(m).input[:]

    def x_only(m):
        del gru_node(m).input[1:]

    for edit, says in ((no_w, "W"), (no_inputs, "X"), (x_only, "W")):
        with refused(ValueError, match=says):
            fastrnn.load_onnx(edited(model, edit))


def test_non_utf8_strings(model):
    data = model.SerializeToString()
    # an input name (and the initializer's) that is not UTF-8
    with refused(ValueError, match="UTF-8"):
        fastrnn.load_onnx(data.replace(b"W_l0", b"W\xffl0"))

    def attribute(m):
        a = next(a for a in gru_node(m).attribute if a.name == "direction")
        a.s = b"\xff\xfe"
    with refused(ValueError, match="direction"):
        fastrnn.load_onnx(edited(model, attribute))

    def activations(m):
        a = next(a for a in gru_node(m).attribute if a.name == "activations")
        a.strings[0] = b"Sigm\xffoid"
    with refused(ValueError, match="activations"):
        fastrnn.load_onnx(edited(model, activations))

    def attribute_name(m):
        gru_node(m).attribute.append(helper.make_attribute("clip", 1.0))
    bad_name = edited(model, attribute_name).SerializeToString().replace(b"clip", b"cl\xffp")
    with refused(ValueError, match="UTF-8"):
        fastrnn.load_onnx(bad_name)


def test_non_utf8_strings_pure_python_protobuf(model, tmp_path):
    """protobuf's pure-Python parser raises UnicodeDecodeError on such strings
    (upb hands out bytes): either way the caller gets ValueError."""
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString().replace(b"W_l0", b"W\xffl0"))
    code = ("import fastrnn, sys\n"
            "try:\n"
            f"    fastrnn.load_onnx({str(path)!r})\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ValueError") \
        and "path_or_model" in done.stdout, \
        done.stdout + done.stderr


def test_bad_attribute_values(model):
    cases = {"clip": helper.make_attribute("clip", "abc"),
             "activation_alpha": helper.make_attribute("activation_alpha", ["x"]),
             "input_forget": helper.make_attribute("input_forget", "yes"),
             "hidden_size": helper.make_attribute("hidden_size", "four"),
             "layout": helper.make_attribute("layout", 1.5)}
    for name, attribute in cases.items():
        def edit(m, attribute=attribute):
            node = gru_node(m)
            for a in list(node.attribute):
                if a.name == attribute.name:
                    node.attribute.remove(a)
            node.attribute.append(attribute)
        with refused((ValueError, TypeError), match=name):
            fastrnn.load_onnx(edited(model, edit))

    def undefined(m):
        a = gru_node(m).attribute.add()
        a.name = "clip"
    with refused(ValueError, match="clip"):
        fastrnn.load_onnx(edited(model, undefined))


def test_from_onnx_bad_arguments(layer):
    op, arrays, attrs = fastrnn.to_onnx(layer)
    W, R, B = arrays["W"], arrays["R"], arrays["B"]
    for kwargs, name in ((dict(clip="abc"), "clip"), (dict(clip=[1, 2]), "clip"),
                         (dict(activations=5), "activations"),
                         (dict(activations=["Sigmoid", 5]), "activations"),
                         (dict(activations=["Sigmoid", "Tanh"], activation_alpha=["x"]),
                          "activation_alpha"),
                         (dict(activations=["Sigmoid", "Tanh"], activation_beta=3),
                          "activation_beta"),
                         (dict(hidden_size="4"), "hidden_size"),
                         (dict(layout=np.array([0, 1])), "layout"),
                         (dict(direction=b"\xff"), "direction")):
        with refused((ValueError, TypeError), match=name):
            fastrnn.from_onnx(op, W, R, B, **kwargs)
    with refused((ValueError, TypeError), match="W"):
        fastrnn.from_onnx(op, np.full(W.shape, "a"), R, B)
    with refused((ValueError, TypeError), match="input_forget"):
        fastrnn.from_onnx("LSTM", *[fastrnn.to_onnx(fastrnn.LSTM(I, H))[1][k]
                                    for k in "WRB"], input_forget="yes")
