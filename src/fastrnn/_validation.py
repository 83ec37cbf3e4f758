"""Argument checks for the layers, the Bidirectional wrapper and the cells.

Python validates once, at the boundary (STYLE.md, practice 6), and every check
lives here: a bad argument raises ``ValueError`` or ``TypeError`` naming the
argument, what was expected and what was got (API.md, "Errors"). The helpers
return the checked value in the form the layers keep (an int, a float, a
C-contiguous array of the layer's dtype, a tuple of activations), so a caller
checks and converts in one line.
"""
from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Iterable
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

# ONNX's activations for the general cells, with ONNX's default alpha and beta
# (those of the ONNX operators of the same name; Affine and ScaledTanh, which
# have none, default to the identity and to tanh)
ACTIVATION_DEFAULTS: Dict[str, Tuple[float, float]] = {
    "sigmoid": (0.0, 0.0), "tanh": (0.0, 0.0), "relu": (0.0, 0.0), "affine": (1.0, 0.0),
    "leaky_relu": (0.01, 0.0), "thresholded_relu": (1.0, 0.0), "scaled_tanh": (1.0, 1.0),
    "hard_sigmoid": (0.2, 0.5), "elu": (1.0, 0.0), "softsign": (0.0, 0.0),
    "softplus": (0.0, 0.0),
}
# each cell's activations in ONNX's order and their PyTorch values
_DEFAULT_ACTIVATIONS = {"rnn_tanh": ("tanh",), "rnn_relu": ("relu",),
                        "lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh"),
                        "gru_reset_before": ("sigmoid", "tanh"),
                        "indrnn_tanh": ("tanh",), "indrnn_relu": ("relu",)}

#: One direction's activations: one entry per activation of the cell, each a
#: name, (name, alpha) or (name, alpha, beta); a single name when the cell has
#: one; None for the cell's defaults.
DirectionActivations = Optional[Union[str, Sequence[Union[str, Sequence[Any]]]]]
#: What the ``activations`` argument takes: one direction's list for every
#: direction, or (a bidirectional layer) {"forward": list, "reverse": list}.
Activations = Union[DirectionActivations, Mapping[str, DirectionActivations]]
#: One direction's checked activations: ((name, alpha, beta), ...).
CheckedActivations = Tuple[Tuple[str, float, float], ...]

_DIRECTIONS = ("forward", "reverse", "bidirectional")


def _snake(name: str) -> str:
    """ONNX's CamelCase activation names (LeakyRelu) as fastrnn's (leaky_relu)."""
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


def _activations(cell: str, activations: DirectionActivations, name: str = "activations"
                 ) -> CheckedActivations:
    """A checked activation list of one direction (``name`` in the messages):
    each entry a name, (name, alpha) or (name, alpha, beta);
    ``_activations(cell, None)`` is the cell's default (PyTorch's) list."""
    defaults = _DEFAULT_ACTIVATIONS[cell]
    if activations is None:
        activations = defaults
    if isinstance(activations, str):
        activations = [activations]
    if not isinstance(activations, Iterable) or isinstance(activations, Mapping):
        raise TypeError(f"{name}: expected a list of {len(defaults)} ({', '.join(defaults)}"
                        f" by default), each a name, (name, alpha) or (name, alpha, beta), "
                        f"got {activations!r}")
    activations = list(activations)
    if len(activations) != len(defaults):
        raise ValueError(f"{name}: expected {len(defaults)} for this cell "
                         f"({', '.join(defaults)} by default), got {len(activations)}")
    checked = []
    for spec in activations:
        parts = (spec,) if isinstance(spec, str) else \
            tuple(spec) if isinstance(spec, Iterable) else ()
        act, params = (parts[0], parts[1:]) if parts else (None, ())
        key = _snake(act) if isinstance(act, str) else act
        if key not in ACTIVATION_DEFAULTS or len(params) > 2:
            raise ValueError(f"{name}: expected names among {sorted(ACTIVATION_DEFAULTS)} "
                             f"optionally with (alpha, beta), got {spec!r}")
        if not all(isinstance(p, numbers.Real) and not isinstance(p, bool) for p in params):
            raise TypeError(f"{name}: expected alpha and beta to be real numbers, "
                            f"got {spec!r}")
        alpha, beta = (list(params) + list(ACTIVATION_DEFAULTS[key][len(params):]))[:2]
        checked.append((key, float(alpha), float(beta)))
    return tuple(checked)


#: The keys of per-direction activations, in state order.
DIRECTION_KEYS = ("forward", "reverse")


def _layer_activations(cell: str, activations: Activations, direction: str
                       ) -> Union[CheckedActivations, Dict[str, CheckedActivations]]:
    """The activations a layer keeps: one checked list (``_activations``) for
    every direction, or, for a bidirectional layer given {"forward": list,
    "reverse": list} whose lists differ, the dict of the two checked lists."""
    if not isinstance(activations, Mapping):
        return _activations(cell, activations)
    if direction != "bidirectional":
        raise ValueError(f"activations: a dict of per-direction activations is for a "
                         f"bidirectional layer, got direction={direction!r}; give one list")
    if set(activations) != set(DIRECTION_KEYS):
        raise ValueError(f"activations: expected the keys {list(DIRECTION_KEYS)}, got "
                         f"{list(activations)}")
    forward, reverse = (_activations(cell, activations[key], f"activations[{key!r}]")
                        for key in DIRECTION_KEYS)
    return forward if forward == reverse else {"forward": forward, "reverse": reverse}


# ------------------------------------------------------- constructor arguments

def _check_positive_int(name: str, value: Any, most: Optional[int] = None,
                        why: str = "") -> int:
    """value as an int >= 1 (and <= most, the reason for which is ``why``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{name}: expected at most {most} ({why}), got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> np.random.Generator:
    """The random generator of ``seed`` (None, a non-negative integer, or what
    numpy.random.default_rng takes)."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as e:
        raise type(e)(f"seed: expected None or a non-negative integer, got {seed!r} "
                      f"({e})") from None


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def _check_proj_size(proj_size: Any, hidden_size: int) -> int:
    if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral) \
            or not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size: expected an integer in [0, hidden_size="
                         f"{hidden_size}), got {proj_size!r}")
    return int(proj_size)


def _check_dropout(dropout: Any) -> float:
    if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
    return float(dropout)


def _check_rate(name: str, value: Any) -> float:
    """A probability of a regularizer (zoneout, dropout): a real number in [0, 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
    return float(value)


def _check_bias(bias: Any) -> bool:
    return _check_flag("bias", bias)


def _check_flag(name: str, value: Any) -> bool:
    """value as a bool: True or False (NumPy's too), nothing merely truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _check_nonlinearity(nonlinearity: Any) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity


def _direction(direction: Optional[str], bidirectional: bool) -> str:
    """The direction a stack runs: ``direction``, or (None) what ``bidirectional`` says."""
    if direction is None:
        direction = "bidirectional" if bidirectional else "forward"
    _check_choice("direction", direction, _DIRECTIONS)
    if bidirectional and direction != "bidirectional":
        raise ValueError(f"direction: {direction!r} contradicts bidirectional=True")
    return direction


def _check_clip(clip: Any) -> Optional[float]:
    if clip is not None and (not isinstance(clip, numbers.Real) or not clip > 0):
        raise ValueError(f"clip: expected a positive number or None, got {clip!r}")
    return None if clip is None else float(clip)


def _check_lstm_options(cell: str, peepholes: bool, input_forget: bool) -> None:
    if (peepholes or input_forget) and cell != "lstm":
        raise ValueError("peepholes and input_forget: LSTM options")


def _dtype(dtype: DTypeLike) -> np.dtype:
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


# ------------------------------------------------------------- call arguments

def _as_array(name: str, value: ArrayLike, dtype: np.dtype) -> np.ndarray:
    """value as a C-contiguous array of dtype; numbers only."""
    return _c_array(_numbers(name, value), dtype)


def _c_array(arr: np.ndarray, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """arr as a C-contiguous, aligned array (a copy only when it is not one):
    the kernels read whole, aligned elements."""
    return np.require(arr, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED"])


def _numbers(name: str, value: ArrayLike) -> np.ndarray:
    """value as an array of real numbers (a view of the caller's data when possible)."""
    try:
        arr = np.asarray(value)
    except ValueError as e:   # ragged nested sequences
        raise ValueError(f"{name}: could not be converted to an array ({e})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{name}: expected an array of real numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: expected real numbers, got complex dtype {arr.dtype}")
    return arr


def _lengths(lengths: Optional[ArrayLike], B: int, T: int) -> Optional[np.ndarray]:
    """Checked lengths (B,) as C ints; None when every sequence is full length."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) \
                and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per batch row), "
                         f"got {arr.shape}")
    if B and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths: expected values in [0, {T}] (T = {T}), "
                         f"got min {arr.min()} max {arr.max()}")
    if np.all(arr == T):
        return None
    return np.array(arr, dtype=np.intc)   # a copy: backward must see these lengths


def _pair(name: str, value: Any) -> Tuple[Any, Any]:
    """An LSTM state (h, c) as its two parts; (None, None) for None."""
    if value is None:
        return None, None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = (f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list))
               else type(value).__name__)
        raise TypeError(f"{name}: expected a tuple (h, c) or None, got {got}")
    return value[0], value[1]


def _state_array(name: str, value: ArrayLike, dtype: np.dtype, expect: Tuple[int, ...],
                 layout: str, pair_hint: bool) -> np.ndarray:
    """A state converted to dtype and checked to have the shape ``expect``
    (described by ``layout``). With pair_hint (an RNN's or GRU's h), an (h, c)
    tuple that fails the checks is named as what it is: an LSTM's state."""
    try:
        arr = _as_array(name, value, dtype)
        if arr.shape != expect:
            raise ValueError(f"{name}: expected shape {expect}{layout}, got {arr.shape}")
    except (TypeError, ValueError):
        if pair_hint and isinstance(value, tuple) and len(value) == 2:
            raise TypeError(f"{name}: expected one array of shape {expect}{layout}, got a "
                            f"tuple of 2 (an (h, c) pair is an LSTM's state; an RNN's and a "
                            f"GRU's is h alone)") from None
        raise
    return arr


# ---------------------------------------------------------------- size bounds

#: The kernels' sizes are C ints: every dimension, and the element count of
#: every (T*B, columns) matrix of a call, must fit in 32 bits.
INT_MAX = 2**31 - 1

# The bound where the machine's memory cannot be read (an x86-64 process's
# address space).
_FALLBACK_LIMIT = 2**47

# What NumPy and Python spend on one parameter array besides its data (the
# array object and its entries in the parameter and gradient dicts), counted
# so that a stack of very many tiny layers is bounded too.
ARRAY_OVERHEAD = 256


def _cgroup_limit() -> Optional[Tuple[int, str]]:
    """The memory limit of this process's cgroup (v2, or v1), if it has one."""
    paths = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hierarchy, controllers, group = line.rstrip("\n").split(":", 2)
                if hierarchy == "0":
                    paths.append(f"/sys/fs/cgroup{group.rstrip('/')}/memory.max")
                elif "memory" in controllers.split(","):
                    paths.append(f"/sys/fs/cgroup/memory{group.rstrip('/')}"
                                 f"/memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    paths += ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    for path in paths:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text), f"the memory limit of this process's cgroup, {path}"
    return None


@functools.lru_cache(maxsize=None)
def _memory_limit() -> Tuple[int, str]:
    """The most bytes one request may need, and what sets that bound: the least
    of the machine's physical memory, this process's cgroup memory limit and
    its address-space limit (RLIMIT_AS); 2**47 where none can be read. Read
    once per process."""
    limits = []
    try:
        limits.append((os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                       "the machine's physical memory"))
    except (AttributeError, ValueError, OSError):
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append(cgroup)
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append((soft, "this process's address-space limit, RLIMIT_AS"))
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    limits = [(n, why) for n, why in limits if n > 0]
    return min(limits) if limits else (_FALLBACK_LIMIT, "2**47 bytes, the address space of "
                                                        "an x86-64 process")


def _bytes(n: int) -> str:
    """n bytes, with a readable size: '17179869184 bytes (16.0 GiB)'."""
    size, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{n} bytes" if unit == "bytes" else f"{n} bytes ({size:.1f} {unit})"


def _check_memory(name: str, nbytes: int, what: str) -> None:
    """MemoryError naming ``name`` when ``what`` would need more than ``nbytes``
    the machine can give (see _memory_limit), before anything is allocated."""
    limit, source = _memory_limit()
    if nbytes > limit:
        raise MemoryError(f"{name}: {what} would need {_bytes(nbytes)}, more than this "
                          f"process can be given: {_bytes(limit)}, {source}")
