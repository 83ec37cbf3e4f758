"""RNN, LSTM and GRU layers, the Bidirectional wrapper and one-step cells.

Conventions are PyTorch's (see API.md): gate order LSTM i,f,g,o and GRU r,z,n,
parameter names ``weight_ih_l{k}[_reverse]`` etc., states ``(D*num_layers, B, H)``
ordered layer-major, direction-minor, and a PyTorch ``state_dict`` loads as is.

Stack -> Layer -> Cell: a layer object loops over its layers and directions and
makes one backend call per layer-direction; the backend ("c" or "numpy") owns
the time loop.

Directions: ``direction="reverse"`` runs every layer right to left (ONNX's
direction="reverse"; Keras' go_backwards, except that outputs stay aligned with
the input's time steps, as in ONNX and PyTorch's reverse half). Its parameters
carry no suffix. Under lengths each sequence starts at its own last valid step.

Lengths may be 0 (as ONNX Runtime allows): the sequence outputs zeros and its
final state is its initial state.

Threads: the C backend releases the GIL, so different layer objects run in
parallel from Python threads. Calls on one layer object are serialized by a
lock (it owns its workspace and the state kept for backward).
"""
from __future__ import annotations

import copy
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from fastrnn import _kernels
from fastrnn._archive import Saveable, class_config
from fastrnn._backend import BACKENDS, CBackend
from fastrnn._validation import (_activations, _as_array, _c_array, _check_bias, _check_choice,
                                 _check_clip, _check_dropout, _check_lstm_options,
                                 _check_nonlinearity, _check_positive_int, _check_proj_size,
                                 _direction, _dtype, _lengths, _numbers, _pair)
from fastrnn.kinds import NUM_GATES as _GATES

_MERGE_MODES = ("concat", "sum", "mul", "ave")

# ------------------------------------------------------------------ stack

class _RNNBase(Saveable):
    """Shared machinery of RNN, LSTM and GRU (a stack of layer-directions)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, dtype=np.float32, seed: Optional[int] = None,
                 backend: str = "c", direction: Optional[str] = None,
                 proj_size: int = 0, stateful: bool = False, activations=None,
                 clip: Optional[float] = None, peepholes: bool = False,
                 input_forget: bool = False) -> None:
        self.input_size = _check_positive_int("input_size", input_size)
        self.hidden_size = _check_positive_int("hidden_size", hidden_size)
        self.proj_size = _check_proj_size(proj_size, self.hidden_size)
        self.num_layers = _check_positive_int("num_layers", num_layers)
        self.dropout = _check_dropout(dropout)
        self.bias = _check_bias(bias)
        self._cell = cell
        self.batch_first = bool(batch_first)
        self.direction = _direction(direction, bidirectional)
        self.bidirectional = self.direction == "bidirectional"
        self.dtype = _dtype(dtype)
        self.training = True
        self.stateful = bool(stateful)
        self.activations = _activations(cell, activations)
        self.clip = _check_clip(clip)
        self.peepholes, self.input_forget = bool(peepholes), bool(input_forget)
        _check_lstm_options(cell, self.peepholes, self.input_forget)
        general = (self.activations != _activations(cell, None) or self.clip is not None
                   or self.peepholes or self.input_forget)
        # the kernels' general cells (ONNX's options), None for PyTorch's
        self._options = (self.activations, self.clip, self.input_forget) if general else None
        self._kept_state: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None
        self.backend = backend
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._saved: Optional[dict] = None

        G, H, R = _GATES[cell], self.hidden_size, self._width
        bound = 1.0 / np.sqrt(H)
        self._params: Dict[str, np.ndarray] = {}
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.num_directions * R
            for suffix, _ in self._directions():
                shapes = {"weight_ih": (G * H, layer_input), "weight_hh": (G * H, R)}
                if self.bias:
                    shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
                if self.proj_size:
                    shapes.update(weight_hr=(R, H))
                if self.peepholes:
                    shapes.update(weight_peephole=(3 * H,))   # p_i, p_f, p_o
                for stem, shape in shapes.items():
                    self._params[f"{stem}_l{layer}{suffix}"] = self._rng.uniform(
                        -bound, bound, shape).astype(self.dtype)
        self.grads: Dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self._params.items()}

    # -- configuration

    @property
    def _width(self) -> int:
        """Width of h: proj_size when the LSTM projects, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def backend(self) -> str:
        """"c" (compiled kernels) or "numpy" (the reference); may be changed any time."""
        return self._backend.name

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = BACKENDS[_check_choice("backend", name, sorted(BACKENDS))]()
        self._saved = None

    def _directions(self) -> Tuple[Tuple[str, bool], ...]:
        """(parameter-name suffix, runs reversed) of each direction, in state order."""
        if self.bidirectional:
            return (("", False), ("_reverse", True))
        return (("", self.direction == "reverse"),)

    def train(self, mode: bool = True):
        """Training mode: forward keeps what backward needs (the default)."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: forward keeps nothing and is faster."""
        return self.train(False)

    @property
    def tape(self) -> Optional["Tape"]:
        """What the last training forward kept for backward, as an object of its own
        (None after an inference forward). ``backward(..., tape=t)`` differentiates
        that forward, so truncated BPTT over several calls keeps one tape per call
        and runs backward in reverse, passing each call's dh0 as the d_h_n of the
        call before. A tape holds the forward's cache until dropped."""
        return None if self._saved is None else Tape(self, self._saved)

    def reset_state(self) -> None:
        """Forget the state a stateful layer carries into its next call."""
        self._kept_state = None

    def __repr__(self) -> str:
        extra = {"rnn_relu": ", nonlinearity='relu'",
                 "gru_reset_before": ", reset_after=False"}.get(self._cell, "")
        if self.proj_size:
            extra += f", proj_size={self.proj_size}"
        if self._options is not None:
            extra += f", activations={list(self.activations)}"
            for name in ("clip", "peepholes", "input_forget"):
                if getattr(self, name):
                    extra += f", {name}={getattr(self, name)!r}"
        if self.stateful:
            extra += ", stateful=True"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, "
                f"direction={self.direction!r}, dtype={self.dtype.name}, "
                f"backend={self.backend!r})")

    def _save_config(self) -> Tuple[Dict[str, Any], "_RNNBase"]:
        return class_config(self, (RNN, LSTM, GRU)), self

    # -- copying and pickling: the lock, the workspace and the state kept for
    # backward belong to one object and are made anew

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for transient in ("_lock", "_saved", "_backend"):
            state.pop(transient, None)
        state["_backend_name"] = self._backend.name
        return state

    def __setstate__(self, state: dict) -> None:
        backend = state.pop("_backend_name")
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.backend = backend            # also clears _saved

    # -- parameters

    def __setattr__(self, name: str, value) -> None:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            # layer.weight_hh_l0 = w copies into the parameter the kernels read
            self.load_state_dict({**params, name: value})
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> np.ndarray:
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def parameters(self) -> List[np.ndarray]:
        """The live parameter arrays (update them in place), in state_dict order."""
        return list(self._params.values())

    def named_parameters(self) -> List[Tuple[str, np.ndarray]]:
        return list(self._params.items())

    def state_dict(self) -> Dict[str, np.ndarray]:
        """A copy of the parameters under PyTorch's names and shapes."""
        return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict: Dict[str, ArrayLike]) -> None:
        """Load parameters by PyTorch name; every entry must be present with its shape.
        Nothing changes when an entry is missing, unexpected or misshapen."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        loaded = {}
        for k, v in state_dict.items():
            arr = _as_array(f"state_dict[{k!r}]", v, self.dtype)
            if arr.shape != self._params[k].shape:
                raise ValueError(f"load_state_dict: {k!r} expected shape "
                                 f"{self._params[k].shape}, got {arr.shape}")
            loaded[k] = arr
        for k, arr in loaded.items():
            self._params[k][...] = arr

    def zero_grad(self) -> None:
        """Clear the accumulated parameter gradients."""
        for g in self.grads.values():
            g.fill(0)

    def _weights(self, layer: int, suffix: str, store: Dict[str, np.ndarray]):
        key = f"l{layer}{suffix}"
        return (store[f"weight_ih_{key}"], store[f"weight_hh_{key}"],
                store.get(f"bias_ih_{key}"), store.get(f"bias_hh_{key}"),
                store.get(f"weight_hr_{key}"), store.get(f"weight_peephole_{key}"))

    # -- forward

    def _input(self, x: ArrayLike) -> Tuple[np.ndarray, bool, bool]:
        """x as a 3-D array in the layer's layout, whether it was unbatched, and
        whether it shares memory with the caller's data."""
        if (type(x) is np.ndarray and x.dtype == self.dtype and x.flags.c_contiguous
                and x.flags.aligned):
            callers = x   # the common case, ready as it is (no conversion, no copy)
        else:
            callers = _numbers("x", x)
            x = _c_array(callers, self.dtype)
        if x.ndim == 2:
            x, unbatched = x[:, None, :], True   # (T, I) -> (T, 1, I)
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        elif x.ndim == 3:
            unbatched = False
        else:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x: expected a 3-D input {layout} or a 2-D unbatched input "
                             f"(T, I), got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x: input has inconsistent input_size: got {x.shape[2]} "
                             f"expected {self.input_size}")
        if 0 in x.shape:
            raise ValueError(f"x: expected a non-empty input, got shape {x.shape}")
        if not x.flags.c_contiguous:   # an unbatched batch-first input, transposed
            x = _c_array(x)
        return x, unbatched, x is callers or np.may_share_memory(x, callers)

    def _state(self, name: str, value: ArrayLike, B: int, unbatched: bool,
               width: Optional[int] = None) -> np.ndarray:
        """A state (D*num_layers, B, width) (width: h's by default; c's is H)."""
        shape = (self.num_layers * self.num_directions, B, width or self._width)
        if value is None:
            return np.zeros(shape, self.dtype)
        arr = _as_array(name, value, self.dtype)
        if unbatched:
            if arr.shape != (shape[0], shape[2]):
                raise ValueError(f"{name}: expected shape {(shape[0], shape[2])} for "
                                 f"unbatched input, got {arr.shape}")
            return np.ascontiguousarray(arr[:, None, :])
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} (D*num_layers, B, "
                             f"{'H' if shape[2] == self.hidden_size else 'proj_size'}), "
                             f"got {arr.shape}")
        return arr

    def _forward(self, x, h0, c0, lengths, training):
        x, unbatched, shares = self._input(x)
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else x.shape[:2]
        if unbatched and lengths is not None:
            if np.size(lengths) != 1:
                raise ValueError(f"lengths: expected one length for unbatched input, "
                                 f"got shape {np.shape(lengths)}")
            lengths = np.reshape(lengths, (1,))
        lengths = _lengths(lengths, B, T)
        if self.stateful and h0 is None and c0 is None and self._kept_state is not None:
            h0, c0 = self._kept_state
            if h0.shape[1] != B:
                raise ValueError(f"x: this stateful layer keeps the state of a batch of "
                                 f"{h0.shape[1]}, got a batch of {B}; call reset_state() first")
            unbatched_state = False
        else:
            unbatched_state = unbatched
        h0 = self._state("h0", h0, B, unbatched_state)
        c0 = (self._state("c0", c0, B, unbatched_state, self.hidden_size)
              if self._cell == "lstm" else None)
        training = self.training if training is None else bool(training)

        D, R = self.num_directions, self._width
        h_n, c_n = np.empty_like(h0), (np.empty_like(c0) if c0 is not None else None)
        saved = {"layers": [], "unbatched": unbatched, "B": B}
        layer_in = x
        if training and lengths is not None:
            # padding takes part in the weight-gradient GEMMs (with zero
            # gradients): zero it, so that NaN or inf there cannot leak in
            steps = np.arange(T)[:, None] < lengths[None, :]          # (T, B)
            layer_in = np.where((steps.T if self.batch_first else steps)[..., None], x, 0)
            layer_in = layer_in.astype(self.dtype, copy=False)
        elif training and shares:
            layer_in = x.copy()   # backward must see this forward's x, whatever the caller does
        for layer in range(self.num_layers):
            y = np.empty(x.shape[:2] + (D * R,), self.dtype)
            dirs = []
            for d, (suffix, reverse) in enumerate(self._directions()):
                k = layer * D + d
                hn, cn, s = self._backend.forward(
                    self._cell, layer_in, h0[k], None if c0 is None else c0[k],
                    self._weights(layer, suffix, self._params), lengths, y, d * R,
                    self.batch_first, reverse, training, self._options)
                h_n[k] = hn
                if c_n is not None:
                    c_n[k] = cn
                dirs.append(s)
            mask = None
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                # dropout between layers only, inverted so inference needs no scaling
                keep = 1.0 - self.dropout
                mask = (self._rng.random(y.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                y *= mask
            saved["layers"].append((dirs, mask, layer_in.shape))
            layer_in = y
        output = layer_in
        self._saved = saved if training else None
        if self.stateful:
            self._kept_state = (h_n.copy(), None if c_n is None else c_n.copy())
        if unbatched:
            output = output[:, 0] if not self.batch_first else output[0]
            h_n = h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        return output, h_n, c_n

    # -- backward

    def _backward(self, d_output, d_h_n, d_c_n, tape: Optional["Tape"] = None):
        if tape is None:
            saved = self._saved
        elif not isinstance(tape, Tape) or tape._owner() is not self:
            raise ValueError("tape: expected a Tape taken from this layer's .tape")
        else:
            saved = tape._saved
        if saved is None:
            raise ValueError("backward: no training forward to differentiate; call the layer "
                             "with training=True (the default, or after .train()) first")
        unbatched, B = saved["unbatched"], saved["B"]
        D, H, R, L = self.num_directions, self.hidden_size, self._width, self.num_layers
        x_shape = saved["layers"][0][2]
        T = x_shape[1] if self.batch_first else x_shape[0]
        out_shape = (B, T, D * R) if self.batch_first else (T, B, D * R)

        dy = None
        if d_output is not None:
            dy = _as_array("d_output", d_output, self.dtype)
            if unbatched:
                expect = (T, D * R)
                if dy.shape != expect:
                    raise ValueError(f"d_output: expected the output's shape {expect}, got {dy.shape}")
                dy = dy[:, None, :] if not self.batch_first else dy[None]
            elif dy.shape != out_shape:
                raise ValueError(f"d_output: expected the output's shape {out_shape}, got {dy.shape}")
            dy = _c_array(dy)
        dh_n = None if d_h_n is None else self._state("d_h_n", d_h_n, B, unbatched)
        dc_n = None if d_c_n is None else self._state("d_c_n", d_c_n, B, unbatched, H)

        dh0 = np.zeros((L * D, B, R), self.dtype)
        dc0 = np.zeros((L * D, B, H), self.dtype) if self._cell == "lstm" else None
        for layer in reversed(range(L)):
            dirs, _, in_shape = saved["layers"][layer]
            dx = np.empty(in_shape, self.dtype)
            for d, (suffix, _) in enumerate(self._directions()):
                k = layer * D + d
                g0, gc0 = self._backend.backward(
                    dirs[d], dy, d * R, None if dh_n is None else dh_n[k],
                    None if dc_n is None else dc_n[k], dx, d > 0,
                    self._weights(layer, suffix, self.grads))
                dh0[k] = g0
                if dc0 is not None:
                    dc0[k] = gc0
            if layer > 0:
                mask = saved["layers"][layer - 1][1]
                if mask is not None:
                    dx *= mask   # backprop through the dropout between layers
            dy = dx
        dx = dy
        if unbatched:
            dx = dx[:, 0] if not self.batch_first else dx[0]
            dh0 = dh0[:, 0]
            dc0 = None if dc0 is None else dc0[:, 0]
        return dx, dh0, dc0


class _HiddenStateStack(_RNNBase):
    """The call and backward of layers whose only state is h (RNN, GRU)."""

    def __call__(self, x: ArrayLike, h0: ArrayLike = None, lengths: ArrayLike = None,
                 training: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
        """output (T, B, D*H), h_n (D*num_layers, B, H)."""
        with self._lock:
            output, h_n, _ = self._forward(x, h0, None, lengths, training)
        return output, h_n

    def backward(self, d_output: ArrayLike, d_h_n: ArrayLike = None,
                 tape: Optional["Tape"] = None) -> Tuple[np.ndarray, np.ndarray]:
        """dx, dh0 of the last training forward (or of ``tape``); parameter
        gradients accumulate into .grads."""
        with self._lock:
            dx, dh0, _ = self._backward(d_output, d_h_n, None, tape)
        return dx, dh0


class RNN(_HiddenStateStack):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype=np.float32,
                 seed: Optional[int] = None, backend: str = "c",
                 direction: Optional[str] = None, stateful: bool = False, activations=None,
                 clip: Optional[float] = None) -> None:
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed, backend, direction,
                         stateful=stateful, activations=activations, clip=clip)


class GRU(_HiddenStateStack):
    """GRU, gates r, z, n; reset_after=True is PyTorch's (and Keras' default) form."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, reset_after: bool = True, dtype=np.float32,
                 seed: Optional[int] = None, backend: str = "c",
                 direction: Optional[str] = None, stateful: bool = False, activations=None,
                 clip: Optional[float] = None) -> None:
        self.reset_after = bool(reset_after)
        super().__init__("gru" if reset_after else "gru_reset_before", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, backend, direction, stateful=stateful,
                         activations=activations, clip=clip)


class LSTM(_RNNBase):
    """LSTM, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, dtype=np.float32,
                 seed: Optional[int] = None, backend: str = "c",
                 direction: Optional[str] = None, stateful: bool = False, activations=None,
                 clip: Optional[float] = None, peepholes: bool = False,
                 input_forget: bool = False) -> None:
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, dtype, seed, backend, direction, proj_size,
                         stateful, activations, clip, peepholes, input_forget)

    def __call__(self, x: ArrayLike, state: Optional[Tuple[ArrayLike, ArrayLike]] = None,
                 lengths: ArrayLike = None, training: Optional[bool] = None):
        """output (T, B, D*R), (h_n (D*num_layers, B, R), c_n (D*num_layers, B, H)),
        with R = proj_size when projecting, else H."""
        h0, c0 = _pair("state", state)
        with self._lock:
            output, h_n, c_n = self._forward(x, h0, c0, lengths, training)
        return output, (h_n, c_n)

    def backward(self, d_output: ArrayLike, d_state: Optional[Tuple[ArrayLike, ArrayLike]] = None,
                 tape: Optional["Tape"] = None):
        """dx, (dh0, dc0) of the last training forward (or of ``tape``); parameter
        gradients accumulate into .grads."""
        d_h_n, d_c_n = _pair("d_state", d_state)
        with self._lock:
            dx, dh0, dc0 = self._backward(d_output, d_h_n, d_c_n, tape)
        return dx, (dh0, dc0)


class Tape:
    """The record of one training forward of one layer (see ``layer.tape``)."""

    __slots__ = ("_owner", "_saved")

    def __init__(self, owner: _RNNBase, saved: dict) -> None:
        self._owner = weakref.ref(owner)
        self._saved = saved

    def __repr__(self) -> str:
        owner = self._owner()
        return f"<fastrnn.Tape of {type(owner).__name__ if owner else 'a deleted layer'}>"


# ------------------------------------------------------- Keras-style wrapper

class Bidirectional(Saveable):
    """Runs a layer in both directions and merges the two outputs (Keras style).

    ``Bidirectional(GRU(8, 16), merge_mode="concat")`` equals ``GRU(8, 16,
    bidirectional=True)``, whose forward direction starts from the wrapped
    layer's weights. merge_mode "sum", "mul" or "ave" combine the two halves
    elementwise instead (output width H). States are the inner layer's.
    """

    def __init__(self, layer: _RNNBase, merge_mode: str = "concat") -> None:
        if not isinstance(layer, _RNNBase):
            raise TypeError(f"layer: expected an RNN, LSTM or GRU, got {type(layer).__name__}")
        if layer.direction != "forward":
            raise ValueError(f"layer: expected a forward layer, got direction={layer.direction!r}")
        if layer.num_layers != 1:
            raise ValueError(f"layer: expected a single-layer RNN/LSTM/GRU (Keras semantics), "
                             f"got num_layers={layer.num_layers}; for a bidirectional stack "
                             f"use bidirectional=True")
        self.merge_mode = _check_choice("merge_mode", merge_mode, _MERGE_MODES)
        kwargs = dict(bias=layer.bias, batch_first=layer.batch_first, dropout=layer.dropout,
                      bidirectional=True, dtype=layer.dtype, backend=layer.backend,
                      stateful=layer.stateful, activations=layer.activations, clip=layer.clip,
                      # a copy of the wrapped layer's generator: wrapping must
                      # not change that layer's later dropout masks
                      seed=int(copy.deepcopy(layer._rng).integers(2**31)))
        if isinstance(layer, GRU):
            kwargs["reset_after"] = layer.reset_after
        if isinstance(layer, LSTM):
            kwargs.update(proj_size=layer.proj_size, peepholes=layer.peepholes,
                          input_forget=layer.input_forget)
        if type(layer) is RNN:
            kwargs["nonlinearity"] = layer.nonlinearity
        self.layer = type(layer)(layer.input_size, layer.hidden_size, **kwargs)
        for name, value in layer.state_dict().items():
            self.layer._params[name][...] = value
        self._halves: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._merged_shape: Optional[Tuple[int, ...]] = None

    def __getattr__(self, name: str):
        # parameters, grads, state_dict, train/eval, backend, ... are the inner layer's
        if name == "layer":
            raise AttributeError(name)
        return getattr(self.layer, name)

    def __setattr__(self, name: str, value) -> None:
        if name in ("backend", "training"):
            setattr(self.layer, name, value)
        else:
            object.__setattr__(self, name, value)

    def __call__(self, x: ArrayLike, state=None, lengths: ArrayLike = None,
                 training: Optional[bool] = None):
        output, state = self.layer(x, state, lengths=lengths, training=training)
        if self.merge_mode == "concat":
            return output, state
        R = self.layer._width
        fwd, bwd = output[..., :R], output[..., R:]
        self._halves = (fwd, bwd) if self.merge_mode == "mul" else None
        self._merged_shape = fwd.shape
        if self.merge_mode == "sum":
            return fwd + bwd, state
        if self.merge_mode == "mul":
            return fwd * bwd, state
        return (fwd + bwd) / 2, state

    def backward(self, d_output: ArrayLike, d_state=None):
        if self.merge_mode != "concat" and d_output is not None:
            d = _as_array("d_output", d_output, self.layer.dtype)
            if self._merged_shape is None:
                raise ValueError("backward: no forward to differentiate")
            if d.shape != self._merged_shape:
                raise ValueError(f"d_output: expected the output's shape {self._merged_shape}, "
                                 f"got {d.shape}")
            if self.merge_mode == "sum":
                d_output = np.concatenate([d, d], axis=-1)
            elif self.merge_mode == "ave":
                d_output = np.concatenate([d / 2, d / 2], axis=-1)
            else:
                fwd, bwd = self._halves
                d_output = np.concatenate([d * bwd, d * fwd], axis=-1)
        return self.layer.backward(d_output, d_state)

    def __repr__(self) -> str:
        return f"Bidirectional({self.layer!r}, merge_mode={self.merge_mode!r})"

    def _save_config(self) -> Tuple[Dict[str, Any], _RNNBase]:
        config, stack = self.layer._save_config()
        config["args"]["direction"] = "forward"   # the wrapped layer as it was given
        return {"class": "Bidirectional", "merge_mode": self.merge_mode, "layer": config}, stack


# ------------------------------------------------------------------- cells

class _CellBase(Saveable):
    """One time step; the same kernels as the layers with T = 1.

    Inference steps on the "c" backend (training=False, or the cell in eval
    mode) take a fast path: one call of the lean binding _kernels.cell_forward
    on the layer's current parameters, with a workspace kept by the cell.
    Arrays that are not ready for it (another dtype, not C-contiguous, lists,
    wrong shapes) go through the layer path's conversions and checks first,
    with the same messages. Training steps run the layer, which keeps what
    backward needs.
    """

    _stack_type: type
    # the _kernels.CELLS code when the fast path applies (the class default is
    # also the value of cells pickled before it existed: the layer path)
    _fast_kind: Optional[int] = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype=np.float32, seed: Optional[int] = None, backend: str = "c",
                 **kwargs) -> None:
        self._layer = self._stack_type(input_size, hidden_size, bias=bias, dtype=dtype,
                                       seed=seed, backend=backend, **kwargs)
        self._unbatched = False
        self.input_size, self.hidden_size = self._layer.input_size, self._layer.hidden_size
        # the binding runs PyTorch's cells only (not the general ones)
        layer = self._layer
        default = (layer._options is None and not layer.proj_size and layer.num_layers == 1
                   and layer.direction == "forward" and not layer.stateful)
        self._fast_kind = _kernels.CELLS[layer._cell] if default else None
        # the fast path's workspaces: a call takes one (list.pop and append are
        # atomic), so concurrent calls from threads never share one; grown on demand
        self._work_pool: List[np.ndarray] = []

    def __getattr__(self, name: str):
        if name == "_layer":
            raise AttributeError(name)
        layer = self._layer
        if name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            return layer._params[f"{name}_l0"]
        if name in ("dtype", "bias", "training", "backend", "train", "eval", "zero_grad",
                    "parameters", "tape", "nonlinearity", "reset_after"):
            return getattr(layer, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in ("backend", "training"):
            setattr(self._layer, name, value)
        elif name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") \
                and f"{name}_l0" in self._layer._params:
            # cell.weight_ih = w copies into the parameter the kernels read
            setattr(self._layer, f"{name}_l0", value)
        else:
            object.__setattr__(self, name, value)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_work_pool"] = []   # scratch, made anew on demand
        return state

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        return {k[:-3]: v for k, v in self._layer.grads.items()}

    def state_dict(self) -> Dict[str, np.ndarray]:
        return {k[:-3]: v for k, v in self._layer.state_dict().items()}

    def load_state_dict(self, state_dict: Dict[str, ArrayLike]) -> None:
        """Load PyTorch cell names (weight_ih, weight_hh, bias_ih, bias_hh)."""
        self._layer.load_state_dict({f"{k}_l0": v for k, v in state_dict.items()})

    def _save_config(self) -> Tuple[Dict[str, Any], _RNNBase]:
        return class_config(self, (RNNCell, LSTMCell, GRUCell)), self._layer

    def __repr__(self) -> str:
        layer = self._layer
        extra = {"rnn_relu": ", nonlinearity='relu'",
                 "gru_reset_before": ", reset_after=False"}.get(layer._cell, "")
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"bias={layer.bias}, dtype={layer.dtype.name}, backend={layer.backend!r})")

    def _step_input(self, x: ArrayLike) -> np.ndarray:
        """x (B, I) or unbatched (I,) as a one-step batch (1, B, I)."""
        x = _as_array("x", x, self._layer.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"x: expected (B, I) or unbatched (I,), got shape {x.shape}")
        self._unbatched = x.ndim == 1
        return x.reshape(1, -1, x.shape[-1])

    def _step_state(self, name: str, value: ArrayLike, B: int) -> Optional[np.ndarray]:
        """A state (B, H), or (H,) when unbatched, as (1, B, H)."""
        if value is None:
            return None
        arr = _as_array(name, value, self._layer.dtype)
        expect = (self.hidden_size,) if self._unbatched else (B, self.hidden_size)
        if arr.shape != expect:
            raise ValueError(f"{name}: expected shape {expect}, got {arr.shape}")
        return arr.reshape(1, B, self.hidden_size)

    def _grad_state(self, name: str, value: ArrayLike, tape=None) -> Optional[np.ndarray]:
        saved = self._layer._saved if tape is None else getattr(tape, "_saved", None)
        if saved is None:
            raise ValueError("backward: no training forward to differentiate; call the cell "
                             "with training=True (the default, or after .train()) first")
        return self._step_state(name, value, saved["B"])

    def _squeeze(self, a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """(1, B, n) -> (B, n), or (n,) when unbatched."""
        if a is None:
            return None
        return a[0, 0] if self._unbatched else a[0]

    def _step_arrays(self, x: ArrayLike, h: ArrayLike, c: ArrayLike):
        """x, h, c converted and checked by the layer path's code (the same
        errors), as the binding takes them: (B, I) and (B, H), or (I,) and (H,)."""
        unbatched = self._unbatched   # kept: it describes the last training call
        try:
            x3 = self._step_input(x)                 # dtype, (B, I) or (I,)
            B = x3.shape[1]
            h3 = self._step_state("h", h, B)
            c3 = self._step_state("c", c, B)
            x3 = self._layer._input(x3)[0]           # input_size, non-empty
            one = (lambda a: None if a is None else a[0, 0]) if self._unbatched \
                else (lambda a: None if a is None else a[0])
            return one(x3), one(h3), one(c3)
        finally:
            self._unbatched = unbatched


def _infer(cell: _CellBase, layer: _RNNBase, x: ArrayLike, h: ArrayLike, c: ArrayLike):
    """The cells' fast path: one inference step, h' (or (h', c') for LSTM) shaped as h.

    The common case (C-contiguous arrays of the cell's dtype and shapes, and a
    workspace from an earlier call) is one binding call; anything else fails the
    binding's checks and is then converted and checked as the layer path does
    (the same errors), which also sizes the workspace. A function rather than a
    method: every attribute read counts at this scale."""
    params = layer._params
    if layer._saved is not None:
        layer._saved = None       # as after the layer path's inference calls
    pool = cell._work_pool
    try:
        work = pool.pop()         # atomic: concurrent calls never share a workspace
    except IndexError:
        work = None               # the first call, or other threads hold them all
    try:
        out = _kernels.cell_forward(cell._fast_kind, x, h, c, params["weight_ih_l0"],
                                    params["weight_hh_l0"], params.get("bias_ih_l0"),
                                    params.get("bias_hh_l0"), work)
    except (TypeError, ValueError):
        x, h, c = cell._step_arrays(x, h, c)
        need = _kernels.cell_work_size(cell._fast_kind, 1 if x.ndim == 1 else x.shape[0],
                                       cell.input_size, cell.hidden_size)
        if work is None or work.shape[0] < need or work.dtype != layer.dtype:
            work = np.empty(need, layer.dtype)
        out = _kernels.cell_forward(cell._fast_kind, x, h, c, params["weight_ih_l0"],
                                    params["weight_hh_l0"], params.get("bias_ih_l0"),
                                    params.get("bias_hh_l0"), work)
    pool.append(work)
    return out


class _HiddenStateCell(_CellBase):
    """The call and backward of cells whose only state is h (RNNCell, GRUCell)."""

    def __call__(self, x: ArrayLike, h: ArrayLike = None,
                 training: Optional[bool] = None) -> np.ndarray:
        """x (B, I) or (I,); h (B, H) or (H,) (None: zeros) -> the next h."""
        layer = self._layer
        if (self._fast_kind is not None and type(layer._backend) is CBackend
                and not (layer.training if training is None else training)):
            return _infer(self, layer, x, h, None)
        x = self._step_input(x)
        h = self._step_state("h", h, x.shape[1])
        _, h_n = self._layer(x, h, training=training)
        return self._squeeze(h_n)

    def backward(self, d_h: ArrayLike, tape=None) -> Tuple[np.ndarray, np.ndarray]:
        """dx, dh of the last training call (or of ``tape``) given the gradient of
        its output; parameter gradients accumulate into .grads."""
        dx, dh = self._layer.backward(None, self._grad_state("d_h", d_h, tape), tape=tape)
        return self._squeeze(dx), self._squeeze(dh)


class RNNCell(_HiddenStateCell):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), one step."""

    _stack_type = RNN

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype=np.float32, seed: Optional[int] = None,
                 backend: str = "c") -> None:
        super().__init__(input_size, hidden_size, bias, dtype, seed, backend,
                         nonlinearity=nonlinearity)


class GRUCell(_HiddenStateCell):
    """One GRU step (reset_after=True is PyTorch's GRUCell)."""

    _stack_type = GRU

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 reset_after: bool = True, dtype=np.float32, seed: Optional[int] = None,
                 backend: str = "c") -> None:
        super().__init__(input_size, hidden_size, bias, dtype, seed, backend,
                         reset_after=reset_after)


class LSTMCell(_CellBase):
    """One LSTM step: (h, c) -> (h', c')."""

    _stack_type = LSTM

    def __call__(self, x: ArrayLike, state: Optional[Tuple[ArrayLike, ArrayLike]] = None,
                 training: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
        """x (B, I) or (I,); state (h, c) each (B, H) or (H,), or None for zeros."""
        layer = self._layer
        if (self._fast_kind is not None and type(layer._backend) is CBackend
                and not (layer.training if training is None else training)):
            if state is None:
                return _infer(self, layer, x, None, None)
            h, c = state if type(state) is tuple and len(state) == 2 else _pair("state", state)
            return _infer(self, layer, x, h, c)
        x = self._step_input(x)
        h, c = _pair("state", state)
        state3 = (self._step_state("h", h, x.shape[1]), self._step_state("c", c, x.shape[1]))
        _, (h_n, c_n) = self._layer(x, state3, training=training)
        return self._squeeze(h_n), self._squeeze(c_n)

    def backward(self, d_state: Tuple[ArrayLike, ArrayLike], tape=None):
        """dx, (dh, dc) of the last training call (or of ``tape``) given the
        gradients of its (h', c'); parameter gradients accumulate into .grads."""
        d_h, d_c = _pair("d_state", d_state)
        dx, (dh, dc) = self._layer.backward(
            None, (self._grad_state("d_h", d_h, tape), self._grad_state("d_c", d_c, tape)),
            tape=tape)
        return self._squeeze(dx), (self._squeeze(dh), self._squeeze(dc))
