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
"""
from __future__ import annotations

import inspect
import json
import os
from typing import Any, Dict

import numpy as np

from fastrnn.layers import (GRU, LSTM, RNN, Bidirectional, GRUCell, LSTMCell, RNNCell,
                            _CellBase, _RNNBase)

__all__ = ["save", "load"]

FORMAT = "fastrnn"
VERSION = 1
CONFIG_KEY = "__fastrnn__"

_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}


def _jsonable(name: str, value):
    """A constructor argument as JSON (dtype by name, tuples as lists)."""
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(name, v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"layer: cannot save argument {name}={value!r} "
                    f"({type(value).__name__})")


def _arguments(cls: type, *sources) -> Dict[str, Any]:
    """Every constructor argument of cls, read from the first source that has an
    attribute of that name; seed is left out (the weights and the generator's
    state are saved), and bidirectional too (direction says it)."""
    args = {}
    for name, p in inspect.signature(cls).parameters.items():
        if name in ("seed", "bidirectional") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        for src in sources:
            try:
                value = getattr(src, name)
            except AttributeError:
                continue
            args[name] = _jsonable(name, value)
            break
        else:
            raise TypeError(f"layer: {cls.__name__} has no attribute for its constructor "
                            f"argument {name!r}; cannot save it")
    return args


def _layer_config(layer: _RNNBase, **overrides) -> Dict[str, Any]:
    name = _class_name(layer, _LAYERS)
    args = _arguments(_LAYERS[name], layer)
    args.update(overrides)
    return {"class": name, "args": args}


def _class_name(obj, table: Dict[str, type]) -> str:
    for name, cls in table.items():
        if type(obj) is cls:
            return name
    for name, cls in table.items():   # a subclass saves as its fastrnn base
        if isinstance(obj, cls):
            return name
    raise TypeError(f"layer: expected a fastrnn layer, got {type(obj).__name__}")


def _rng_state(layer: _RNNBase) -> Dict[str, Any]:
    return layer._rng.bit_generator.state


def save(layer, path) -> None:
    """Save a layer, Bidirectional wrapper or cell to path (a file name, written
    exactly as given, or a binary file object) as one .npz archive."""
    if isinstance(layer, Bidirectional):
        inner = layer.layer
        # the wrapped layer as it was given: forward
        config = {"class": "Bidirectional", "merge_mode": layer.merge_mode,
                  "layer": _layer_config(inner, direction="forward")}
    elif isinstance(layer, _RNNBase):
        inner = layer
        config = _layer_config(layer)
    elif isinstance(layer, _CellBase):
        inner = layer._layer
        name = _class_name(layer, _CELLS)
        config = {"class": name, "args": _arguments(_CELLS[name], layer, inner)}
    else:
        raise TypeError(f"layer: expected a fastrnn RNN, LSTM, GRU, Bidirectional or cell, "
                        f"got {type(layer).__name__}")
    config.update(format=FORMAT, version=VERSION, training=bool(inner.training),
                  rng=_rng_state(inner))
    weights = layer.state_dict()
    arrays = {CONFIG_KEY: np.array(json.dumps(config))}
    arrays.update(weights)
    if isinstance(path, (str, os.PathLike)):
        # np.savez would append ".npz" to a name without it; write the name given
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    else:
        np.savez(path, **arrays)


def _corrupt(path, why: str) -> ValueError:
    return ValueError(f"path: {path!r} is not a fastrnn file ({why})")


def _build_layer(path, config: Dict[str, Any]) -> _RNNBase:
    cls = _LAYERS.get(config.get("class"))
    if cls is None:
        raise _corrupt(path, f"unknown layer class {config.get('class')!r}")
    return cls(**config["args"])


def load(path):
    """The layer, Bidirectional wrapper or cell saved by save(layer, path)."""
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
