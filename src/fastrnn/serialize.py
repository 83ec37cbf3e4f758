"""Saving and loading layers and models: one .npz file, no pickle.

    save(layer, path)      RNN, LSTM, GRU, IndRNN, Bidirectional, their cells (RNNCell, ...),
                           and fastrnn.nn's Linear, Embedding, Dropout, Sequential, Module
    layer = load(path)     the same class, configuration and weights (fastrnn's classes)
    model.load(path)       the weights, training flags and generators into a model
                           built by your code (load_into: any Module, a class of your own)

The file is a plain NumPy .npz archive (readable with ``np.load(path,
allow_pickle=False)``): the parameters under their state_dict names, and
``__fastrnn__``, a JSON string with the format version, the class and every
constructor argument (dtype by name, backend, direction, proj_size,
reset_after, nonlinearity; merge_mode and the wrapped layer for
Bidirectional), the training flag and the state of the layer's random
generator (so dropout masks continue as they would have, as with pickle).
A model's configuration nests its parts' under ``"modules"`` (by attribute
name, or position in a Sequential); a model of your own class is named by its
module and qualified name. Gradients and the state kept for backward are not
saved.

Loading never unpickles and never calls anything the file names: the class
must be one of fastrnn's (the nine recurrent ones, Linear, Embedding,
Dropout, Sequential), and the configuration is checked by the constructors
as if typed by hand, sizes included, before anything is allocated (a layer
larger than the process can be given is a MemoryError; a Sequential's parts
are also checked together, after each part is built). A model of your own
class is built by your code and loads with ``model.load(path)``, which
takes the names and shapes of the weights from the model, not the file.
Each array's .npy header is checked against the shape the configuration
gives it before its data is read, so no entry's size comes from the file
alone; anything else wrong with the file (not a zip archive, truncated,
corrupt, unsupported compression, entries missing, unexpected or misshapen)
is a ValueError naming ``path``.

Every class writes itself (``layer.save(path)``, from fastrnn._archive, which
the layer modules import); this module reads, so it imports the classes.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from typing import IO, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from fastrnn._archive import CONFIG_KEY, FORMAT, VERSION, PathOrFile, Saveable
from fastrnn._validation import ARRAY_OVERHEAD, _check_memory
from fastrnn.bidirectional import Bidirectional
from fastrnn.cells import GRUCell, IndRNNCell, LSTMCell, RNNCell
from fastrnn.layers import GRU, LSTM, RNN, IndRNN
from fastrnn.nn import Dropout, Embedding, Linear, Module, Sequential

__all__ = ["save", "load", "load_into"]

_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU, "IndRNN": IndRNN}
# the classes a file may name (besides Bidirectional and Sequential, built from their parts)
_CLASSES = {**_LAYERS, "RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell,
            "IndRNNCell": IndRNNCell,
            "Linear": Linear, "Embedding": Embedding, "Dropout": Dropout}

Saved = Union[RNN, LSTM, GRU, IndRNN, Bidirectional, RNNCell, LSTMCell, GRUCell, IndRNNCell,
              Module]


def save(layer: Saved, path: PathOrFile) -> None:
    """Save a layer, Bidirectional wrapper, cell or model as one .npz archive.

    The same as ``layer.save(path)``.

    Parameters
    ----------
    layer : RNN, LSTM, GRU, Bidirectional, RNNCell, LSTMCell, GRUCell or Module
        What to save: its class, constructor arguments, weights, training flag
        and random generator state (a model: its parts' too).
    path : str, os.PathLike or binary file object
        Where to write; a file name is used exactly as given (no ``.npz`` is
        appended).

    Raises
    ------
    TypeError
        When layer is not one of fastrnn's, or a constructor argument cannot
        be written as JSON.

    Examples
    --------
    >>> import io, fastrnn
    >>> buffer = io.BytesIO()
    >>> fastrnn.save(fastrnn.LSTMCell(4, 8, seed=0), buffer)
    >>> _ = buffer.seek(0)
    >>> fastrnn.load(buffer)
    LSTMCell(4, 8, bias=True, dtype=float32, backend='c')
    """
    if not isinstance(layer, Saveable):
        raise TypeError(f"layer: expected a fastrnn RNN, LSTM, GRU, Bidirectional, cell or "
                        f"Module, got {type(layer).__name__}")
    layer.save(path)


def _corrupt(path: PathOrFile, why: str) -> ValueError:
    return ValueError(f"path: {path!r} is not a fastrnn file ({why})")


def _short(value: Any) -> str:
    """repr(value), cut to a length a message can quote."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# the JSON configuration is a few hundred bytes; a larger entry is refused unread
_MAX_CONFIG_BYTES = 1 << 20
# what reading a zip entry can raise besides OSError: a corrupt archive or
# entry (BadZipFile, zlib.error, EOFError, ValueError), an unsupported
# compression method (NotImplementedError), an encrypted entry (RuntimeError)
_ENTRY_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
                 RuntimeError, OSError)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: PathOrFile, key: str,
                shape: Tuple[int, ...], kinds: str, most: Optional[int] = None) -> np.ndarray:
    """The .npy entry ``key`` of archive, read only once its header says shape
    ``shape`` and a dtype of one of ``kinds`` (and at most ``most`` bytes):
    nothing is read or allocated on the file's word alone."""
    why = None
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                got, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                got, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                why = f".npy format version {version}"
            if why is None and (dtype.kind not in kinds or dtype.hasobject):
                why = f"dtype {dtype}"
            elif why is None and tuple(got) != tuple(shape):
                why = f"expected shape {tuple(shape)}, got {tuple(got)}"
            elif why is None:
                nbytes = math.prod(shape) * dtype.itemsize
                if most is not None and nbytes > most:
                    why = f"{nbytes} bytes, more than the {most} expected"
                else:
                    data = f.read(nbytes)
                    if len(data) != nbytes or f.read(1):   # the last read checks the CRC
                        why = f"expected {nbytes} bytes of data, got another amount"
    except _ENTRY_ERRORS as e:
        why = f"{type(e).__name__}: {e}"
    if why is not None:
        raise _corrupt(path, f"entry {key!r}: {why}")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _constructor(path: PathOrFile, config: Any, classes: Dict[str, type]) -> Tuple[type, dict]:
    """The class among ``classes`` and the keyword arguments ``config`` gives."""
    if not isinstance(config, dict):
        raise _corrupt(path, f"expected a class and its args, got {_short(config)}")
    kind = config.get("class")
    cls = classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        # Module._config names a class of your own by its module and name
        own = isinstance(kind, str) and "." in kind
        raise _corrupt(path, f"unknown layer class {_short(kind)}" +
                       ("; a model of your own class: build it, then model.load(path)"
                        if own else ""))
    if not isinstance(config.get("args"), dict):
        raise _corrupt(path, f"expected a class and its args, got {_short(config)}")
    return cls, config["args"]


# a Sequential may nest others, this deep at most (JSON nests deeper)
_MAX_DEPTH = 32


def _build(path: PathOrFile, config: Dict[str, Any], depth: int = 0) -> Saved:
    """The object the configuration describes; its constructor checks every
    argument (sizes before allocating) as if typed by hand, and what it raises
    is said to come from path. A Sequential's parts are built one by one, the
    memory of those built so far checked after each."""
    kind = config.get("class") if isinstance(config, dict) else None
    if kind == "Sequential":
        modules = config.get("modules", {})
        if not isinstance(modules, dict) or depth >= _MAX_DEPTH:
            raise _corrupt(path, f"expected the parts of a Sequential as a mapping, nested at "
                                 f"most {_MAX_DEPTH} deep, got {_short(modules)}")
        parts, nbytes = [], 0
        for child in modules.values():
            parts.append(_build(path, child, depth + 1))
            nbytes += sum(2 * p.nbytes + 2 * ARRAY_OVERHEAD for p in parts[-1].parameters())
            _check_memory("path", nbytes, f"{path!r} configures a Sequential whose parts")
        try:
            return Sequential(*parts)
        except TypeError as e:      # a part a Sequential does not take (a cell)
            raise _corrupt(path, f"bad configuration for 'Sequential': {e}") from None
    if kind == "Bidirectional":
        cls, args = _constructor(path, config.get("layer"), _LAYERS)
    else:
        cls, args = _constructor(path, config, _CLASSES)
    try:
        layer = cls(**args)
        if kind == "Bidirectional":
            layer = Bidirectional(layer, merge_mode=config["merge_mode"])
    except MemoryError as e:
        raise MemoryError(f"path: {path!r} configures a {kind} larger than this process can "
                          f"be given ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(path, f"bad configuration for {kind!r}: {e}") from None
    return layer


def _modes(path: PathOrFile, obj: Saved, config: Dict[str, Any]
           ) -> List[Tuple[Any, bool, Any, Any]]:
    """(object, training flag, its random generator, the generator's saved
    state) for obj and, when the configuration has theirs, its parts': what
    loading sets, checked before anything is set."""
    training = config.get("training", True)
    if not isinstance(training, bool):
        raise _corrupt(path, f"training: expected true or false, got {training!r}")
    if isinstance(obj, Module):
        rng = obj.__dict__.get("_rng")
    else:   # the stack inside a layer, Bidirectional wrapper or cell
        rng = getattr(obj, "layer", getattr(obj, "_layer", obj))._rng
    modes = [(obj, training, rng, config.get("rng"))]
    parts = config.get("modules")
    if isinstance(obj, Module) and isinstance(parts, dict):
        for name, part in obj.named_children():
            if isinstance(parts.get(name), dict):
                modes += _modes(path, part, parts[name])
    return modes


def load(path: PathOrFile) -> Saved:
    """The layer, Bidirectional wrapper, cell or model saved by ``save(layer, path)``.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        A file written by ``save``.

    Returns
    -------
    RNN, LSTM, GRU, Bidirectional, cell, Linear, Embedding, Dropout or Sequential
        The saved class with the saved constructor arguments, weights,
        training flag and random generator state. A model of your own class
        is not built here (the file names a class fastrnn does not know):
        build it, then ``model.load(path)``.

    Raises
    ------
    ValueError
        When path is not a fastrnn file: not a zip archive, truncated or
        corrupt, no or an unreadable configuration, an unknown class, bad
        arguments, weights missing, unexpected or misshapen, or another format
        version. Each array's header is checked before its data is read.
    MemoryError
        When the configuration asks for a layer larger than this process can
        be given; refused before anything is allocated.
    TypeError
        When path is neither a file name nor a binary file object.
    FileNotFoundError, IsADirectoryError, PermissionError
        When the file named cannot be opened.

    Examples
    --------
    >>> import io, numpy as np, fastrnn
    >>> gru = fastrnn.GRU(4, 8, seed=0)
    >>> buffer = io.BytesIO()
    >>> fastrnn.save(gru, buffer)
    >>> _ = buffer.seek(0)
    >>> twin = fastrnn.load(buffer)
    >>> all(np.array_equal(twin.state_dict()[k], v) for k, v in gru.state_dict().items())
    True
    """
    return _with_file(path, None)


def load_into(model: "Module", path: PathOrFile) -> "Module":
    """Load what ``model.save(path)`` wrote into model (``Module.load``).

    The file's weights must have exactly model's names and shapes (checked
    against each entry's header before its data is read); the training flags
    and random generator states of model and of its parts are set to the
    saved ones. Nothing changes when anything is raised.

    Raises
    ------
    ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError
        As ``load``.
    """
    return _with_file(path, model)


def _with_file(path: PathOrFile, target: Optional["Module"]) -> Saved:
    """_load from the file named, or the binary file object, path."""
    if isinstance(path, (str, bytes, os.PathLike)):
        with open(path, "rb") as f:
            return _load(f, path, target)
    if isinstance(path, io.TextIOBase):
        raise TypeError("path: expected a file name or a binary file object, got a text "
                        "file (open it with 'rb')")
    if not all(hasattr(path, name) for name in ("read", "seek", "tell")):
        raise TypeError(f"path: expected a file name or a binary file object, "
                        f"got {type(path).__name__}")
    return _load(path, path, target)


def _load(f: IO[bytes], path: PathOrFile, target: Optional["Module"]) -> Saved:
    """load from the open binary file f (into target, if not None: load_into);
    path says where it came from."""
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise _corrupt(path, f"not a .npz (zip) archive: {e}") from None
    with archive:
        entries: Dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            key = info.filename[:-len(".npy")]
            if not info.filename.endswith(".npy") or key in entries:
                raise _corrupt(path, f"unexpected entry {info.filename!r}")
            entries[key] = info
        if CONFIG_KEY not in entries:
            raise _corrupt(path, f"no {CONFIG_KEY!r} entry")
        text = _read_entry(archive, entries.pop(CONFIG_KEY), path, CONFIG_KEY, (), "U",
                           _MAX_CONFIG_BYTES)
        try:
            config = json.loads(str(text[()]))
        except (ValueError, TypeError, RecursionError) as e:
            raise _corrupt(path, f"unreadable configuration: {e}") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise _corrupt(path, "no fastrnn configuration")
        if config.get("version") != VERSION:
            raise ValueError(f"path: {path!r} has fastrnn file version "
                             f"{config.get('version')!r}; this fastrnn reads version {VERSION}")
        if not isinstance(config.get("training", True), bool):
            raise _corrupt(path, f"training: expected true or false, got "
                                 f"{config['training']!r}")
        layer = _build(path, config) if target is None else target
        modes = _modes(path, layer, config)
        # the weights: the names and shapes the configuration gives, headers first
        expected = {name: array.shape for name, array in layer.named_parameters()}
        missing = [k for k in expected if k not in entries]
        unexpected = [k for k in entries if k not in expected]
        if missing or unexpected:
            raise _corrupt(path, f"expected the weights {list(expected)}, got missing "
                                 f"{missing}, unexpected {unexpected}")
        weights = {k: _read_entry(archive, entries[k], path, k, shape, "fiub")
                   for k, shape in expected.items()}
    layer.load_state_dict(weights)
    for obj, training, rng, state in modes:
        obj.train(training)
        if state is not None and rng is not None:
            try:
                rng.bit_generator.state = state
            except (TypeError, ValueError, KeyError, IndexError, OverflowError,
                    AttributeError):
                pass   # another bit generator, or no state: dropout masks start afresh
    return layer
