"""Saving and loading layers: one .npz file, no pickle.

    save(layer, path)      RNN, LSTM, GRU, Bidirectional, RNNCell, LSTMCell, GRUCell
    layer = load(path)     the same class, configuration and weights

The file is a plain NumPy .npz archive (readable with ``np.load(path,
allow_pickle=False)``): the parameters under their state_dict names, and
``__fastrnn__``, a JSON string with the format version, the class and every
constructor argument (dtype by name, backend, direction, proj_size,
reset_after, nonlinearity; merge_mode and the wrapped layer for
Bidirectional), the training flag and the state of the layer's random
generator (so dropout masks continue as they would have, as with pickle).
Gradients and the state kept for backward are not saved.

Loading never unpickles and never calls anything the file names: the class
must be one of fastrnn's seven, and the configuration is checked by the
constructors as if typed by hand.

Every class writes itself (``layer.save(path)``, from fastrnn._archive, which
the layer modules import); this module reads, so it imports the classes.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Union

import numpy as np

from fastrnn._archive import CONFIG_KEY, FORMAT, VERSION, PathOrFile, Saveable
from fastrnn.bidirectional import Bidirectional
from fastrnn.cells import GRUCell, LSTMCell, RNNCell
from fastrnn.layers import GRU, LSTM, RNN, _RNNBase

__all__ = ["save", "load"]

_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}

Saved = Union[RNN, LSTM, GRU, Bidirectional, RNNCell, LSTMCell, GRUCell]


def save(layer: Saved, path: PathOrFile) -> None:
    """Save a layer, Bidirectional wrapper or cell as one .npz archive.

    The same as ``layer.save(path)``.

    Parameters
    ----------
    layer : RNN, LSTM, GRU, Bidirectional, RNNCell, LSTMCell or GRUCell
        What to save: its class, constructor arguments, weights, training flag
        and random generator state.
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
        raise TypeError(f"layer: expected a fastrnn RNN, LSTM, GRU, Bidirectional or cell, "
                        f"got {type(layer).__name__}")
    layer.save(path)


def _corrupt(path: PathOrFile, why: str) -> ValueError:
    return ValueError(f"path: {path!r} is not a fastrnn file ({why})")


def _build_layer(path: PathOrFile, config: Dict[str, Any]) -> _RNNBase:
    cls = _LAYERS.get(config.get("class"))
    if cls is None:
        raise _corrupt(path, f"unknown layer class {config.get('class')!r}")
    return cls(**config["args"])


def load(path: PathOrFile) -> Saved:
    """The layer, Bidirectional wrapper or cell saved by ``save(layer, path)``.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        A file written by ``save``.

    Returns
    -------
    RNN, LSTM, GRU, Bidirectional, RNNCell, LSTMCell or GRUCell
        The saved class with the saved constructor arguments, weights,
        training flag and random generator state.

    Raises
    ------
    ValueError
        When path is not a fastrnn file (no or an unreadable configuration, an
        unknown class, bad arguments) or has another format version.
    OSError
        When path cannot be read.

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
    with np.load(path, allow_pickle=False) as archive:
        if CONFIG_KEY not in archive.files:
            raise _corrupt(path, f"no {CONFIG_KEY!r} entry")
        try:
            config = json.loads(str(archive[CONFIG_KEY][()]))
        except (ValueError, TypeError) as e:
            raise _corrupt(path, f"unreadable configuration: {e}") from None
        weights = {k: archive[k] for k in archive.files if k != CONFIG_KEY}
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise _corrupt(path, "no fastrnn configuration")
    if config.get("version") != VERSION:
        raise ValueError(f"path: {path!r} has fastrnn file version {config.get('version')!r}; "
                         f"this fastrnn reads version {VERSION}")
    kind = config.get("class")
    try:
        if kind == "Bidirectional":
            layer = Bidirectional(_build_layer(path, config["layer"]),
                                  merge_mode=config["merge_mode"])
            inner = layer.layer
        elif kind in _CELLS:
            layer = _CELLS[kind](**config["args"])
            inner = layer._layer
        else:
            layer = inner = _build_layer(path, config)
    except (KeyError, TypeError) as e:
        raise _corrupt(path, f"bad configuration for {kind!r}: {e!r}") from None
    layer.load_state_dict(weights)
    inner.train(bool(config.get("training", True)))
    state = config.get("rng")
    if state is not None:
        try:
            inner._rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError):
            pass   # another bit generator: dropout masks start afresh
    return layer
