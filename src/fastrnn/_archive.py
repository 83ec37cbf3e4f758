"""What ``save`` writes: the .npz layout fastrnn.serialize documents and reads.

Every fastrnn object that saves (RNN, LSTM, GRU, Bidirectional, the cells)
inherits ``save`` from ``Saveable`` and says what it is in ``_save_config``:
its class, its constructor arguments and the stack whose training flag and
random generator travel with it. This module imports no layer class, so the
layer modules import it and ``fastrnn.serialize`` (``load``, which must know
the classes) imports them: no import cycle.
"""
from __future__ import annotations

import inspect
import json
import os
from typing import IO, Any, Dict, Sequence, Tuple, Union

import numpy as np

FORMAT = "fastrnn"
VERSION = 1
CONFIG_KEY = "__fastrnn__"

#: A file name (written exactly as given) or a binary file object.
PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def _jsonable(name: str, value: Any) -> Any:
    """A constructor argument as JSON (dtype by name, tuples as lists, dicts of
    str keys as objects: per-direction activations)."""
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(name, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(name, v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"layer: cannot save argument {name}={value!r} "
                    f"({type(value).__name__})")


def class_config(obj: Any, classes: Sequence[type], **overrides: Any) -> Dict[str, Any]:
    """``{"class": name, "args": {...}}`` for obj: the first of ``classes`` it is an
    instance of (a subclass saves as its fastrnn class), and every argument of
    that class's constructor read from obj's attribute of the same name;
    ``overrides`` replace some. seed is left out (the weights and the
    generator's state are saved), and bidirectional too (direction says it)."""
    for cls in classes:
        if isinstance(obj, cls):
            break
    else:
        raise TypeError(f"layer: expected a fastrnn layer, got {type(obj).__name__}")
    args = {}
    for name, p in inspect.signature(cls).parameters.items():
        if name in ("seed", "bidirectional") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        try:
            value = getattr(obj, name)
        except AttributeError:
            raise TypeError(f"layer: {cls.__name__} has no attribute for its constructor "
                            f"argument {name!r}; cannot save it") from None
        args[name] = _jsonable(name, value)
    args.update(overrides)
    return {"class": cls.__name__, "args": args}


class Saveable:
    """``save(path)`` for the fastrnn classes; each says what it is in
    ``_save_config`` (the layers and cells) or ``_config`` (fastrnn.nn's modules)."""

    def _save_config(self) -> Tuple[Dict[str, Any], Any]:
        """The configuration to write (class and constructor arguments) and the
        RNN/LSTM/GRU stack whose training flag and random generator are saved."""
        raise NotImplementedError

    def _config(self) -> Dict[str, Any]:
        """What ``save`` writes as the configuration: the class, its arguments,
        the training flag and the random generator's state (a model nests its
        parts' under ``"modules"``)."""
        config, stack = self._save_config()
        config.update(training=bool(stack.training), rng=stack._rng.bit_generator.state)
        return config

    def save(self, path: PathOrFile) -> None:
        """Write the configuration and the weights to one .npz archive.

        ``fastrnn.load(path)`` gives back the same class with the same
        constructor arguments, weights, training flag and random generator
        state (dropout masks continue as they would have). Gradients and what
        was kept for backward are not saved. The file format is described in
        fastrnn.serialize.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            Where to write. A file name is used exactly as given (no ``.npz``
            is appended).

        Raises
        ------
        TypeError
            When a constructor argument cannot be written as JSON.
        OSError
            When the file cannot be written.

        Examples
        --------
        >>> import io, fastrnn
        >>> gru = fastrnn.GRU(4, 8, seed=0)
        >>> buffer = io.BytesIO()
        >>> gru.save(buffer)
        >>> _ = buffer.seek(0)
        >>> twin = fastrnn.load(buffer)
        >>> type(twin).__name__, twin.hidden_size
        ('GRU', 8)
        """
        config = {"format": FORMAT, "version": VERSION, **self._config()}
        arrays = {CONFIG_KEY: np.array(json.dumps(config))}
        arrays.update(self.state_dict())
        if isinstance(path, (str, os.PathLike)):
            # np.savez would append ".npz" to a name without it; write the name given
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        else:
            np.savez(path, **arrays)
