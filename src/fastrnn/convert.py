"""Lossless weight conversion between fastrnn and PyTorch, Keras and ONNX.

No framework is imported at ``import fastrnn`` time: torch and onnx are
imported inside the functions that need them, and the Keras functions work on
plain NumPy arrays (Keras itself is never imported here).

    from_torch(module)                 torch.nn.RNN/LSTM/GRU/RNNCell/LSTMCell/GRUCell -> fastrnn
    to_keras(layer)                    fastrnn -> the arrays of Keras' get_weights()
    from_keras(kind, weights, ...)     Keras' get_weights() arrays -> fastrnn
    to_onnx(layer)                     fastrnn -> (op_type, {"W","R","B"}, attributes)
    from_onnx(op_type, W, R, B, ...)   ONNX RNN/GRU/LSTM inputs and attributes -> fastrnn
    export_onnx(layer, path)           fastrnn -> an onnx.ModelProto (one node per layer)
    load_onnx(path_or_model)           an ONNX model's first (or named) RNN/GRU/LSTM node -> fastrnn
                                       (external data only from inside one directory)

Gate orders (G blocks of H rows in PyTorch's (G*H, in) weights; columns in Keras):

    fastrnn / PyTorch   LSTM i, f, g, o     GRU r, z, n
    Keras               LSTM i, f, c, o     GRU z, r, h
    ONNX                LSTM i, o, f, c     GRU z, r, h

Layouts: Keras' kernel is W_ih^T (I, G*H) and its recurrent_kernel W_hh^T
(H, G*H); ONNX stacks directions first: W (D, G*H, I), R (D, G*H, H) and
B (D, 2*G*H) = [input biases, recurrent biases] per direction.

Biases: PyTorch and ONNX keep two bias vectors (lossless). Keras keeps one,
except for GRU(reset_after=True) whose bias is (2, 3H) = [input, recurrent]
(lossless). Otherwise fastrnn -> Keras writes b_ih + b_hh (the same function;
the split is not recoverable) and Keras -> fastrnn puts Keras' bias in b_ih
and zeros in b_hh, so Keras -> fastrnn -> Keras returns the same arrays.

What converts: Keras layers are single-layer and have no projection, so
num_layers > 1 and proj_size raise ValueError naming the argument; ONNX nodes
are single-layer too (export_onnx chains one node per layer) and have no
projection. ONNX's cell options (activations with alpha/beta, clip, LSTM
peepholes P and input_forget) convert both ways (_onnx_options); the Keras
conversions handle the default activations only (_check_default_cells).
"""
from __future__ import annotations

import io
import ntpath
import os
import posixpath
import re
import stat
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastrnn._validation import _DEFAULT_ACTIVATIONS, ACTIVATION_DEFAULTS, _snake
from fastrnn.bidirectional import Bidirectional
from fastrnn.cells import GRUCell, LSTMCell, RNNCell, _CellBase
from fastrnn.kinds import ELEMENTWISE
from fastrnn.layers import GRU, LSTM, RNN, _RNNBase

__all__ = ["from_torch", "to_keras", "from_keras", "to_onnx", "from_onnx",
           "export_onnx", "load_onnx"]

# Block permutations: target block j is source block PERM[j].
_LSTM_TO_ONNX = (0, 3, 1, 2)      # fastrnn i,f,g,o -> ONNX i,o,f,c
_LSTM_FROM_ONNX = (0, 2, 3, 1)    # ONNX i,o,f,c -> fastrnn i,f,g,o
_GRU_SWAP = (1, 0, 2)             # r,z,n <-> z,r,h (its own inverse)

_ONNX_OPS = {RNN: "RNN", LSTM: "LSTM", GRU: "GRU"}
# fastrnn's activations spelled as ONNX names, per direction
# ONNX Runtime hands out activation_alpha (and _beta) in order, one value to
# each activation that takes one (checked against onnxruntime 1.31)
_TAKES_ALPHA = ("affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu")
_TAKES_BETA = ("affine", "scaled_tanh", "hard_sigmoid")
_KERAS_KINDS = {"simplernn": "rnn", "rnn": "rnn", "lstm": "lstm", "gru": "gru"}


def _blocks(a: np.ndarray, perm: Sequence[int], axis: int = 0) -> np.ndarray:
    """a with its len(perm) equal blocks along axis put in the order perm."""
    parts = np.split(a, len(perm), axis=axis)
    return np.concatenate([parts[p] for p in perm], axis=axis)


def _kind(layer: _RNNBase) -> str:
    """"rnn", "lstm" or "gru"."""
    return {RNN: "rnn", LSTM: "lstm", GRU: "gru"}[_layer_class(layer)]


def _layer_class(layer: _RNNBase) -> type:
    for cls in (LSTM, GRU, RNN):
        if isinstance(layer, cls):
            return cls
    raise TypeError(f"layer: expected an RNN, LSTM or GRU, got {type(layer).__name__}")


def _unwrap(layer, what: str, cells: bool = False) -> Tuple[_RNNBase, str]:
    """The RNN/LSTM/GRU stack behind a layer, Bidirectional wrapper or (if allowed)
    cell, and the merge mode ("concat" unless a wrapper says otherwise)."""
    if isinstance(layer, Bidirectional):
        stack, merge_mode = layer.layer, layer.merge_mode
    elif isinstance(layer, _RNNBase):
        stack, merge_mode = layer, "concat"
    elif isinstance(layer, _CellBase):
        if not cells:
            raise TypeError(f"{what}: cells are not supported; convert the equivalent "
                            f"single-layer {type(layer._layer).__name__} (same weights, "
                            f"names with the _l0 suffix)")
        stack, merge_mode = layer._layer, "concat"
    else:
        raise TypeError(f"layer: expected a fastrnn RNN, LSTM, GRU or Bidirectional, "
                        f"got {type(layer).__name__}")
    if stack._cell in ELEMENTWISE:
        raise TypeError(f"{what}: IndRNN has no ONNX or Keras counterpart (its recurrent "
                        f"weight is a vector); it cannot be converted")
    return stack, merge_mode


def _check_no_zoneout(stack: _RNNBase, what: str) -> None:
    """ValueError for a layer with zoneout or layer normalization: its inference
    (zoneout's expectation p * h_{t-1} + (1 - p) * h_new, the normalizations)
    is not the plain cell's, which is all a Keras layer or an ONNX node runs.
    (The dropouts are training-only: they convert.)"""
    for option in ("zoneout", "cell_zoneout"):
        if getattr(stack, option, 0.0):
            raise ValueError(f"{option}: {what} would drop zoneout, which changes this "
                             f"layer's inference ({option}={getattr(stack, option)!r}); "
                             f"set it to 0 first to export the plain cell")
    if getattr(stack, "layer_norm", False):
        raise ValueError(f"layer_norm: {what} has no layer-normalized cell to write (Keras' "
                         f"and ONNX's recurrent layers have none); a layer with "
                         f"layer_norm=True cannot be converted")


def _suffixes(stack: _RNNBase) -> Tuple[str, ...]:
    """Parameter-name suffixes of the directions, in state order."""
    return ("", "_reverse") if stack.bidirectional else ("",)


def _check_default_cells(stack: _RNNBase, target: str) -> None:
    """ValueError unless the layer runs PyTorch's cells (default activations, no
    clip, peepholes or input_forget), the only ones the Keras conversions write."""
    default = _DEFAULT_ACTIVATIONS[stack._cell]
    for acts in stack._direction_activations():
        names = tuple(name for name, _, _ in acts)
        if names != default:
            raise ValueError(f"activations: converting activations {names} to {target} is "
                             f"not supported yet (only {default})")
    for option in ("clip", "peepholes", "input_forget"):
        if getattr(stack, option, None):
            raise ValueError(f"{option}: converting a layer with {option}="
                             f"{getattr(stack, option)!r} to {target} is not supported yet")


def _single_layer(stack: _RNNBase, target: str) -> None:
    if stack.num_layers != 1:
        raise ValueError(f"num_layers: only single layers convert to {target}, got "
                         f"num_layers={stack.num_layers}")
    if getattr(stack, "proj_size", 0):
        raise ValueError(f"proj_size: {target} has no LSTM projection, got "
                         f"proj_size={stack.proj_size}")


# ------------------------------------------------------------------- PyTorch

def from_torch(module, *, dtype=None, backend: str = "c"):
    """The fastrnn twin of a torch.nn.RNN/LSTM/GRU or RNNCell/LSTMCell/GRUCell.

    Every option carries over (num_layers, nonlinearity, bias, batch_first,
    dropout, bidirectional, proj_size) with the weights, exactly. dtype defaults
    to the module's: float64 stays float64, anything else becomes float32
    (float16/bfloat16 upcast exactly). The layer's training mode is the
    module's, so dropout between layers applies when the module would apply it.

    Parameters
    ----------
    module : torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell
        On any device, of any float dtype; its weights are copied.
    dtype : float32 or float64, optional
        The layer's dtype; None: the module's (float64 stays float64, other
        floats become float32).
    backend : {"c", "numpy"}, default "c"
        As the layers'.

    Returns
    -------
    RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell
        The same kind, options, weights and mode.

    Raises
    ------
    TypeError
        When module is none of these.
    ValueError
        When dtype or backend is not one of the layers'.
    ImportError
        When PyTorch is not installed.

    Examples
    --------
    >>> import numpy as np, torch, fastrnn
    >>> module = torch.nn.GRU(4, 8, num_layers=2, batch_first=True)
    >>> layer = fastrnn.from_torch(module)
    >>> x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    >>> out, h_n = layer(x, training=False)
    >>> expected, _ = module(torch.from_numpy(x))
    >>> np.allclose(out, expected.detach().numpy(), atol=1e-5)
    True
    """
    import torch

    nn = torch.nn
    kinds = ((nn.LSTM, LSTM), (nn.GRU, GRU), (nn.RNN, RNN),
             (nn.LSTMCell, LSTMCell), (nn.GRUCell, GRUCell), (nn.RNNCell, RNNCell))
    target = next((f for t, f in kinds if isinstance(module, t)), None)
    if target is None:
        raise TypeError(f"module: expected a torch.nn RNN, LSTM, GRU, RNNCell, LSTMCell or "
                        f"GRUCell, got {type(module).__name__}")
    tensors = module.state_dict()
    if dtype is None:
        float64 = any(v.dtype == torch.float64 for v in tensors.values())
        dtype = np.float64 if float64 else np.float32
    # through float64 on the CPU: exact for every torch float dtype
    weights = {k: v.detach().to("cpu", torch.float64).numpy() for k, v in tensors.items()}

    if issubclass(target, _CellBase):
        kwargs: Dict[str, Any] = {}
        if target is RNNCell:
            kwargs["nonlinearity"] = module.nonlinearity
        layer = target(module.input_size, module.hidden_size, bias=bool(module.bias),
                       dtype=dtype, backend=backend, **kwargs)
    else:
        kwargs = dict(num_layers=module.num_layers, bias=bool(module.bias),
                      batch_first=bool(module.batch_first), dropout=float(module.dropout),
                      bidirectional=bool(module.bidirectional), dtype=dtype, backend=backend)
        if target is RNN:
            kwargs["nonlinearity"] = module.nonlinearity
        if target is LSTM:
            kwargs["proj_size"] = int(module.proj_size)
        layer = target(module.input_size, module.hidden_size, **kwargs)
    layer.load_state_dict(weights)
    layer.train(bool(module.training))
    return layer


# --------------------------------------------------------------------- Keras

def _keras_direction(stack: _RNNBase, suffix: str) -> List[np.ndarray]:
    """get_weights() of the Keras layer for one direction of a single-layer stack."""
    sd = stack.state_dict()
    w_ih, w_hh = sd[f"weight_ih_l0{suffix}"], sd[f"weight_hh_l0{suffix}"]
    b_ih, b_hh = sd.get(f"bias_ih_l0{suffix}"), sd.get(f"bias_hh_l0{suffix}")
    gru = _kind(stack) == "gru"
    if gru:   # r,z,n -> z,r,h
        w_ih, w_hh = _blocks(w_ih, _GRU_SWAP), _blocks(w_hh, _GRU_SWAP)
        if b_ih is not None:
            b_ih, b_hh = _blocks(b_ih, _GRU_SWAP), _blocks(b_hh, _GRU_SWAP)
    arrays = [w_ih.T.copy(), w_hh.T.copy()]
    if b_ih is not None:
        if gru and stack.reset_after:
            arrays.append(np.stack([b_ih, b_hh]))    # (2, 3H): lossless
        else:
            arrays.append(b_ih + b_hh)               # Keras has one bias
    return arrays


def to_keras(layer) -> List[np.ndarray]:
    """The list of arrays Keras' get_weights() returns for the equivalent layer.

    RNN -> SimpleRNN (activation = nonlinearity), LSTM -> LSTM, GRU -> GRU with
    the same reset_after; cells -> SimpleRNNCell/LSTMCell/GRUCell. Arrays:
    [kernel (I, G*H), recurrent_kernel (H, G*H), bias], the bias absent when the
    layer has none (Keras use_bias=False). A bidirectional layer or a
    fastrnn.Bidirectional gives the keras Bidirectional wrapper's list: the
    forward layer's arrays then the backward layer's. A direction="reverse"
    layer gives the arrays of a Keras layer with go_backwards=True (see
    from_keras for how their outputs differ). The bias is b_ih + b_hh except for
    GRU(reset_after=True), whose Keras bias (2, 3H) keeps both.

    Parameters
    ----------
    layer : RNN, LSTM, GRU, Bidirectional, RNNCell, LSTMCell or GRUCell
        One layer (num_layers=1, no proj_size) with PyTorch's cells (no ONNX
        activations, clip, peepholes or input_forget).

    Returns
    -------
    list of ndarray
        kernel (I, G*H), recurrent_kernel (H, G*H) and bias per direction,
        forward first, in Keras' gate order (LSTM i, f, c, o; GRU z, r, h):
        ``keras_layer.set_weights(arrays)`` loads them.

    Raises
    ------
    TypeError
        When layer is none of these.
    ValueError
        For a stack of layers, a projection, or options Keras' layers do not
        have.

    Examples
    --------
    >>> import fastrnn
    >>> arrays = fastrnn.to_keras(fastrnn.LSTM(4, 8, seed=0))
    >>> [a.shape for a in arrays]                     # kernel, recurrent_kernel, bias
    [(4, 32), (8, 32), (32,)]
    """
    stack, _ = _unwrap(layer, "to_keras", cells=True)
    _check_no_zoneout(stack, "to_keras")
    _single_layer(stack, "Keras")
    _check_default_cells(stack, "Keras")
    arrays = []
    for suffix in _suffixes(stack):
        arrays += _keras_direction(stack, suffix)
    return arrays


def _check_keras_options(kind: str, activation: str, recurrent_activation: str) -> str:
    """The fastrnn nonlinearity for the Keras activations, or ValueError."""
    if kind == "rnn":
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation: fastrnn's SimpleRNN supports 'tanh' or 'relu', "
                             f"got {activation!r}")
        return activation
    if activation != "tanh":
        raise ValueError(f"activation: fastrnn's {kind.upper()} supports only 'tanh' "
                         f"(Keras' default), got {activation!r}")
    if recurrent_activation != "sigmoid":
        raise ValueError(f"recurrent_activation: fastrnn's {kind.upper()} supports only "
                         f"'sigmoid' (Keras 3's default), got {recurrent_activation!r}")
    return "tanh"


def from_keras(kind: str, weights: Sequence[Any], *, reset_after: bool = True,
               activation: str = "tanh", recurrent_activation: str = "sigmoid",
               go_backwards: bool = False, bidirectional: bool = False,
               merge_mode: str = "concat", batch_first: bool = True,
               dtype=np.float32, backend: str = "c", dropout: float = 0.0,
               recurrent_dropout: float = 0.0):
    """A single-layer fastrnn layer from the arrays of a Keras layer's get_weights().

    kind: "SimpleRNN" (or "RNN"), "LSTM" or "GRU" (any case). weights:
    [kernel (I, G*H), recurrent_kernel (H, G*H)(, bias)]; without a bias the
    layer gets bias=False. For bidirectional=True, the keras Bidirectional
    wrapper's list (forward layer's arrays then backward's); merge_mode other
    than "concat" returns a fastrnn.Bidirectional with that merge mode. The
    other keyword arguments are the Keras layer's: reset_after (GRU; True is
    Keras' default, lossless with its (2, 3H) bias), activation ("tanh", or
    "relu" for SimpleRNN), recurrent_activation ("sigmoid"), go_backwards,
    dropout and recurrent_dropout (the layer's ``input_dropout`` and
    ``recurrent_dropout``: the same per-gate variational dropout).

    batch_first defaults to True because Keras inputs are (B, T, I).

    go_backwards=True gives direction="reverse", with one difference: Keras'
    go_backwards layer returns its output sequence in processing order, i.e.
    reversed in time (its output[:, 0] belongs to the last input step), while
    fastrnn's reverse direction keeps outputs aligned with the input's steps
    (output[:, t] belongs to x[:, t]). So keras_output == fastrnn_output[:, ::-1];
    the final states are the same. (Keras' Bidirectional flips its backward
    layer's output back, which is exactly fastrnn's bidirectional output.)

    The Keras bias goes into bias_ih and zeros into bias_hh, except for
    GRU(reset_after=True) whose two rows are bias_ih and bias_hh.

    Parameters
    ----------
    kind : {"SimpleRNN", "LSTM", "GRU"}
        The Keras layer, in any case ("RNN" is SimpleRNN).
    weights : sequence of array_like
        The layer's ``get_weights()``: kernel (I, G*H), recurrent_kernel
        (H, G*H) and, when it has one, bias; a Bidirectional wrapper's
        forward layer's arrays, then its backward layer's.
    reset_after : bool, default True
        GRU: Keras' reset_after.
    activation : str, default "tanh"
        "relu" too for SimpleRNN.
    recurrent_activation : str, default "sigmoid"
        LSTM and GRU.
    go_backwards : bool, default False
        Gives ``direction="reverse"`` (outputs aligned with the inputs, above).
    bidirectional : bool, default False
        weights are a Keras Bidirectional wrapper's.
    merge_mode : {"concat", "sum", "mul", "ave"}, default "concat"
        The wrapper's; other than "concat" gives a fastrnn.Bidirectional.
    batch_first : bool, default True
        Keras' inputs are (B, T, I).
    dtype : float32 or float64, default float32
    backend : {"c", "numpy"}, default "c"
        As the layers'.
    dropout : float in [0, 1), default 0.0
        Keras' ``dropout`` (its ``get_config()["dropout"]``): the layer's
        ``input_dropout``.
    recurrent_dropout : float in [0, 1), default 0.0
        Keras' ``recurrent_dropout``: the layer's ``recurrent_dropout``.

    Returns
    -------
    RNN, LSTM, GRU or Bidirectional
        One layer holding the weights.

    Raises
    ------
    ValueError
        For a kind or activation fastrnn does not run, arrays of the wrong
        number or shapes, or options that contradict each other.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> gru = fastrnn.GRU(4, 8, batch_first=True, seed=0)
    >>> twin = fastrnn.from_keras("GRU", fastrnn.to_keras(gru))   # lossless: reset_after
    >>> x = np.ones((2, 5, 4), np.float32)                        # (B, T, I)
    >>> np.allclose(twin(x)[0], gru(x)[0], atol=1e-6)
    True
    """
    if not isinstance(kind, str) or kind.lower() not in _KERAS_KINDS:
        raise ValueError(f"kind: expected 'SimpleRNN', 'LSTM' or 'GRU', got {kind!r}")
    kind = _KERAS_KINDS[kind.lower()]
    nonlinearity = _check_keras_options(kind, activation, recurrent_activation)
    if go_backwards and bidirectional:
        raise ValueError("go_backwards: a bidirectional layer's directions are fixed; "
                         "got go_backwards=True with bidirectional=True")
    if merge_mode != "concat" and not bidirectional:
        raise ValueError(f"merge_mode: only for bidirectional=True, got {merge_mode!r}")
    weights = list(weights)
    D = 2 if bidirectional else 1
    if len(weights) not in (2 * D, 3 * D):
        raise ValueError(f"weights: expected {2 * D} or {3 * D} arrays (kernel, "
                         f"recurrent_kernel[, bias]{' per direction' if D == 2 else ''}), "
                         f"got {len(weights)}")
    n = len(weights) // D
    bias = n == 3
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]

    arrays = [np.asarray(w) for w in weights]
    kernel, recurrent = arrays[0], arrays[1]
    if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[1] % G \
            or recurrent.shape[1] != G * recurrent.shape[0]:
        raise ValueError(f"weights: expected kernel (I, {G}*H) and recurrent_kernel "
                         f"(H, {G}*H), got shapes {kernel.shape} and {recurrent.shape}")
    I, H = kernel.shape[0], recurrent.shape[0]
    gru_two_biases = kind == "gru" and reset_after
    bias_shape = (2, G * H) if gru_two_biases else (G * H,)
    expect = [(I, G * H), (H, G * H)] + ([bias_shape] if bias else [])

    direction = "bidirectional" if bidirectional else ("reverse" if go_backwards else "forward")
    kwargs: Dict[str, Any] = dict(bias=bias, batch_first=batch_first, direction=direction,
                                  dtype=dtype, backend=backend, input_dropout=dropout,
                                  recurrent_dropout=recurrent_dropout)
    if kind == "rnn":
        layer = RNN(I, H, nonlinearity=nonlinearity, **kwargs)
    elif kind == "lstm":
        layer = LSTM(I, H, **kwargs)
    else:
        layer = GRU(I, H, reset_after=reset_after, **kwargs)

    sd = {}
    for d, suffix in enumerate(_suffixes(layer)):
        part = arrays[d * n:(d + 1) * n]
        for j, (a, shape) in enumerate(zip(part, expect)):
            if a.shape != shape:
                name = ("kernel", "recurrent_kernel", "bias")[j]
                raise ValueError(f"weights: {name} of direction {d} expected shape {shape}, "
                                 f"got {a.shape}")
        w_ih, w_hh = part[0].T, part[1].T
        if bias:
            b_ih, b_hh = (part[2][0], part[2][1]) if gru_two_biases else \
                (part[2], np.zeros_like(part[2]))
        if kind == "gru":   # z,r,h -> r,z,n
            w_ih, w_hh = _blocks(w_ih, _GRU_SWAP), _blocks(w_hh, _GRU_SWAP)
            if bias:
                b_ih, b_hh = _blocks(b_ih, _GRU_SWAP), _blocks(b_hh, _GRU_SWAP)
        sd[f"weight_ih_l0{suffix}"], sd[f"weight_hh_l0{suffix}"] = w_ih, w_hh
        if bias:
            sd[f"bias_ih_l0{suffix}"], sd[f"bias_hh_l0{suffix}"] = b_ih, b_hh
    layer.load_state_dict(sd)
    if merge_mode != "concat":
        wrapper = Bidirectional(_forward_twin(layer), merge_mode=merge_mode)
        wrapper.layer.load_state_dict(sd)
        return wrapper
    return layer


def _forward_twin(layer: _RNNBase) -> _RNNBase:
    """A forward single-layer layer with layer's configuration (for Bidirectional)."""
    kwargs: Dict[str, Any] = dict(bias=layer.bias, batch_first=layer.batch_first,
                                  dtype=layer.dtype, backend=layer.backend)
    if isinstance(layer, GRU):
        kwargs["reset_after"] = layer.reset_after
    if isinstance(layer, LSTM):
        kwargs["proj_size"] = layer.proj_size
    if type(layer) is RNN:
        kwargs["nonlinearity"] = layer.nonlinearity
    return type(layer)(layer.input_size, layer.hidden_size, **kwargs)


# ---------------------------------------------------------------------- ONNX

def _onnx_arrays(stack: _RNNBase, k: int) -> Tuple[str, Dict[str, np.ndarray], Dict[str, Any]]:
    """ONNX op_type, inputs W/R(/B) and attributes of layer k of a stack."""
    op = _ONNX_OPS[_layer_class(stack)]
    perm = {"LSTM": _LSTM_TO_ONNX, "GRU": _GRU_SWAP, "RNN": (0,)}[op]
    sd = stack.state_dict()
    W, R, B, P = [], [], [], []
    for suffix in _suffixes(stack):
        w_ih, w_hh = sd[f"weight_ih_l{k}{suffix}"], sd[f"weight_hh_l{k}{suffix}"]
        b_ih, b_hh = sd.get(f"bias_ih_l{k}{suffix}"), sd.get(f"bias_hh_l{k}{suffix}")
        W.append(_blocks(w_ih, perm))
        R.append(_blocks(w_hh, perm))
        if b_ih is not None:
            B.append(np.concatenate([_blocks(b_ih, perm), _blocks(b_hh, perm)]))
        if f"weight_peephole_l{k}{suffix}" in sd:   # fastrnn p_i, p_f, p_o -> ONNX i, o, f
            P.append(_blocks(sd[f"weight_peephole_l{k}{suffix}"], (0, 2, 1)))
    inputs = {"W": np.stack(W), "R": np.stack(R)}
    if B:
        inputs["B"] = np.stack(B)
    if P:
        inputs["P"] = np.stack(P)
    attributes: Dict[str, Any] = {"hidden_size": stack.hidden_size,
                                  "direction": stack.direction}
    if op == "GRU":
        attributes["linear_before_reset"] = int(stack.reset_after)
    attributes["layout"] = int(stack.batch_first)
    # each direction's activations in turn, alpha/beta only where taken
    acts = [spec for direction in stack._direction_activations() for spec in direction]
    attributes["activations"] = [_camel(name) for name, _, _ in acts]
    alphas = [a for name, a, _ in acts if name in _TAKES_ALPHA]
    betas = [b for name, _, b in acts if name in _TAKES_BETA]
    if alphas:
        attributes["activation_alpha"] = alphas
    if betas:
        attributes["activation_beta"] = betas
    if stack.clip is not None:
        attributes["clip"] = stack.clip
    if getattr(stack, "input_forget", False):
        attributes["input_forget"] = 1
    return op, inputs, attributes


def _camel(name: str) -> str:
    """fastrnn's activation names as ONNX's (leaky_relu -> LeakyRelu)."""
    return "".join(part.capitalize() for part in name.split("_"))


def to_onnx(layer) -> Tuple[str, Dict[str, np.ndarray], Dict[str, Any]]:
    """(op_type, inputs, attributes) of the ONNX RNN/GRU/LSTM node equal to a layer.

    inputs: {"W": (D, G*H, I), "R": (D, G*H, H), "B": (D, 2*G*H)} in ONNX's gate
    order (LSTM i,o,f,c; GRU z,r,h), B = [input biases, recurrent biases]; "B"
    is absent when the layer has no bias (ONNX's default is zeros). attributes:
    hidden_size, direction, linear_before_reset (GRU: 1 for reset_after=True),
    layout (1 when batch_first) and activations (fastrnn's, ONNX-spelled, per
    direction). Single layers only (export_onnx chains a stack); a
    fastrnn.Bidirectional gives its inner layer's node (the merge is not part of
    it; export_onnx adds it).

    Parameters
    ----------
    layer : RNN, LSTM, GRU or Bidirectional
        One layer (num_layers=1, no proj_size).

    Returns
    -------
    op_type : {"RNN", "GRU", "LSTM"}
    inputs : dict of str to ndarray
        "W", "R" and (with a bias) "B"; "P" for LSTM peepholes.
    attributes : dict of str to object
        The node's attributes.

    Raises
    ------
    TypeError
        When layer is none of these (a cell: convert the one-layer layer).
    ValueError
        For a stack of layers or a projection.

    Examples
    --------
    >>> import fastrnn
    >>> op, inputs, attributes = fastrnn.to_onnx(fastrnn.GRU(4, 8, seed=0))
    >>> op, {name: w.shape for name, w in inputs.items()}
    ('GRU', {'W': (1, 24, 4), 'R': (1, 24, 8), 'B': (1, 48)})
    >>> attributes["linear_before_reset"]                # reset_after=True
    1
    """
    stack, _ = _unwrap(layer, "to_onnx")
    _check_no_zoneout(stack, "to_onnx")
    _single_layer(stack, "one ONNX node (export_onnx chains a stack)")
    return _onnx_arrays(stack, 0)


def _onnx_text(value, name: str):
    """value, with bytes decoded as UTF-8 (ValueError naming name if they are not)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}: expected UTF-8 text, got {bytes(value)!r}") from e
    return value


def _onnx_flag(value, name: str) -> int:
    """0 or 1 from an ONNX integer attribute (bools and NumPy integers too)."""
    if isinstance(value, (bool, np.bool_, int, np.integer)) and value in (0, 1):
        return int(value)
    raise ValueError(f"{name}: expected 0 or 1, got {value!r}")


def _onnx_floats(values, name: str) -> List[float]:
    """A list of floats from an ONNX FLOATS attribute, or TypeError naming name."""
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list of numbers, got {type(values).__name__}")
    floats = []
    for v in values:
        try:
            floats.append(float(v))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected numbers, got {v!r}") from e
    return floats


def _onnx_weights(value, name: str) -> np.ndarray:
    """An ONNX weight input as an array of real numbers, or an error naming it."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as e:   # ragged nesting, failing __array__
        raise ValueError(f"{name}: expected an array of real numbers, got "
                         f"{type(value).__name__} ({e})") from e
    if a.dtype.kind not in "biuf":
        if a.dtype.kind in "OSUcmM":
            raise TypeError(f"{name}: expected an array of real numbers, got dtype {a.dtype}")
        try:   # ml_dtypes' bfloat16 and float8 types: exact in float64
            a = a.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected an array of real numbers, got dtype "
                            f"{a.dtype}") from e
    return a


def _onnx_options(op_type: str, D: int, activations=None, clip=None, input_forget=0,
                  P=None, activation_alpha=None, activation_beta=None) -> Dict[str, Any]:
    """The fastrnn layer arguments of an ONNX node's options (activations with
    their alpha/beta, clip, input_forget, peepholes P). A bidirectional node
    whose directions' activations differ gives them per direction."""
    kwargs: Dict[str, Any] = {}
    n = {"RNN": 1, "GRU": 2, "LSTM": 3}[op_type]
    alphas = _onnx_floats(activation_alpha, "activation_alpha")
    betas = _onnx_floats(activation_beta, "activation_beta")
    if isinstance(activations, (str, bytes)):
        activations = [activations]
    if activations is not None and not hasattr(activations, "__iter__"):
        raise TypeError(f"activations: expected a list of activation names, got "
                        f"{type(activations).__name__}")
    activations = None if activations is None else list(activations)
    if activations:
        for a in activations:
            if not isinstance(a, (str, bytes)):
                raise TypeError(f"activations: expected activation names, got {a!r}")
        names = [_snake(_onnx_text(a, "activations")) for a in activations]
        if len(names) != n * D:
            raise ValueError(f"activations: expected {n} per direction ({n * D}), got "
                             f"{len(names)}")
        unknown = sorted(set(names) - set(ACTIVATION_DEFAULTS))
        if unknown:
            raise ValueError(f"activations: {unknown} not supported; fastrnn runs "
                             f"{sorted(ACTIVATION_DEFAULTS)}")
        specs = []
        for name in names:   # each activation takes the next alpha/beta it uses
            alpha, beta = ACTIVATION_DEFAULTS[name]
            if name in _TAKES_ALPHA and alphas:
                alpha = float(alphas.pop(0))
            if name in _TAKES_BETA and betas:
                beta = float(betas.pop(0))
            specs.append((name, alpha, beta))
        if specs[:n] != specs[-n:]:   # a bidirectional node's directions differ
            kwargs["activations"] = {"forward": specs[:n], "reverse": specs[n:]}
        elif op_type == "RNN" and specs[0][0] in ("tanh", "relu"):
            kwargs["nonlinearity"] = specs[0][0]     # PyTorch's cells, the fast path
        else:
            kwargs["activations"] = specs[:n]
    if clip is not None:
        try:
            kwargs["clip"] = float(clip)
        except (TypeError, ValueError) as e:
            raise TypeError(f"clip: expected a number, got {clip!r}") from e
    if _onnx_flag(input_forget, "input_forget"):
        if op_type != "LSTM":
            raise ValueError(f"input_forget: an LSTM attribute, got it for {op_type}")
        kwargs["input_forget"] = True
    if P is not None:
        if op_type != "LSTM":
            raise ValueError(f"P: peepholes are an LSTM input, got them for {op_type}")
        kwargs["peepholes"] = True
    return kwargs


def from_onnx(op_type: str, W, R, B=None, *, hidden_size: Optional[int] = None,
              direction: str = "forward", linear_before_reset: int = 0, layout: int = 0,
              activations=None, clip=None, input_forget: int = 0, P=None,
              activation_alpha=None, activation_beta=None,
              dtype=np.float32, backend: str = "c"):
    """A single-layer fastrnn layer equal to an ONNX RNN, GRU or LSTM node.

    Parameters
    ----------
    op_type : {"RNN", "GRU", "LSTM"}
        The node's operator.
    W, R, B : array_like
        The node's inputs in ONNX's gate order (LSTM i, o, f, c; GRU z, r, h):
        W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) = [input biases, recurrent
        biases], or B None (no bias: ``bias=False``). Real numbers.
    hidden_size : int, optional
        Checked against R's shape when given.
    direction : {"forward", "reverse", "bidirectional"}
        fastrnn's direction (D = 2 for "bidirectional"); bytes are decoded as UTF-8.
    linear_before_reset : {0, 1}
        GRU only: 1 gives ``reset_after=True`` (ONNX's default 0 is the
        original GRU).
    layout : {0, 1}
        1 gives ``batch_first=True``.
    activations, activation_alpha, activation_beta, clip, input_forget, P
        The node's cell options with ONNX's defaults: the activation names of
        each direction in turn (forward first; when a bidirectional node's
        two directions differ, the layer gets ``activations={"forward": ...,
        "reverse": ...}``), their alpha/beta values (each activation that
        takes one takes the next, across both directions), the gate-input
        clip, LSTM input_forget (0 or 1) and LSTM peepholes P (D, 3*H) in ONNX's
        order i, o, f. Options fastrnn does not run yet raise ValueError.
    dtype, backend
        As the layers'.

    Returns
    -------
    RNN, GRU or LSTM
        A single-layer layer holding the node's weights.

    Raises
    ------
    ValueError
        A value out of range or inconsistent (op_type, direction, flags, array
        shapes, unsupported activations, text that is not UTF-8); the message
        names the argument.
    TypeError
        An argument of the wrong type (hidden_size not an integer, clip or
        activation_alpha/beta not numbers, activations not a list of names,
        weights that are not real numbers).

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> lstm = fastrnn.LSTM(4, 8, seed=0)
    >>> op, inputs, _ = fastrnn.to_onnx(lstm)
    >>> twin = fastrnn.from_onnx(op, inputs["W"], inputs["R"], inputs["B"])
    >>> x = np.ones((5, 2, 4), np.float32)
    >>> np.allclose(twin(x)[0], lstm(x)[0])
    True
    """
    if not isinstance(op_type, str) or op_type not in ("RNN", "GRU", "LSTM"):
        raise ValueError(f"op_type: expected 'RNN', 'GRU' or 'LSTM', got {op_type!r}")
    direction = _onnx_text(direction, "direction")
    if not isinstance(direction, str) or direction not in ("forward", "reverse",
                                                            "bidirectional"):
        raise ValueError(f"direction: expected 'forward', 'reverse' or 'bidirectional', "
                         f"got {direction!r}")
    layout = _onnx_flag(layout, "layout")
    linear_before_reset = _onnx_flag(linear_before_reset, "linear_before_reset")
    if hidden_size is not None and (isinstance(hidden_size, bool)
                                    or not isinstance(hidden_size, (int, np.integer))):
        raise TypeError(f"hidden_size: expected an integer, got {hidden_size!r}")
    if linear_before_reset and op_type != "GRU":
        raise ValueError(f"linear_before_reset: a GRU attribute, got {linear_before_reset} "
                         f"for {op_type}")
    D = 2 if direction == "bidirectional" else 1
    options = _onnx_options(op_type, D, activations, clip, input_forget, P,
                            activation_alpha, activation_beta)
    G = {"RNN": 1, "GRU": 3, "LSTM": 4}[op_type]
    W, R = _onnx_weights(W, "W"), _onnx_weights(R, "R")
    if R.ndim != 3:
        raise ValueError(f"R: expected shape (D, {G}*H, H), got {R.shape}")
    H = R.shape[2]
    if hidden_size is not None and hidden_size != H:
        raise ValueError(f"hidden_size: {hidden_size} disagrees with R's shape {R.shape} "
                         f"(H = {H})")
    if R.shape != (D, G * H, H):
        raise ValueError(f"R: expected shape ({D}, {G * H}, {H}) for direction={direction!r}, "
                         f"got {R.shape}")
    if W.ndim != 3 or W.shape[:2] != (D, G * H):
        raise ValueError(f"W: expected shape ({D}, {G * H}, I), got {W.shape}")
    if B is not None:
        B = _onnx_weights(B, "B")
        if B.shape != (D, 2 * G * H):
            raise ValueError(f"B: expected shape ({D}, {2 * G * H}), got {B.shape}")
    I = W.shape[2]

    if P is not None:
        P = _onnx_weights(P, "P")
        if P.shape != (D, 3 * H):
            raise ValueError(f"P: expected shape ({D}, {3 * H}), got {P.shape}")
    kwargs: Dict[str, Any] = dict(bias=B is not None, batch_first=bool(layout),
                                  direction=direction, dtype=dtype, backend=backend, **options)
    if op_type == "RNN":
        layer = RNN(I, H, **kwargs)
    elif op_type == "LSTM":
        layer = LSTM(I, H, **kwargs)
    else:
        layer = GRU(I, H, reset_after=bool(linear_before_reset), **kwargs)
    perm = {"LSTM": _LSTM_FROM_ONNX, "GRU": _GRU_SWAP, "RNN": (0,)}[op_type]
    sd = {}
    for d, suffix in enumerate(_suffixes(layer)):
        sd[f"weight_ih_l0{suffix}"] = _blocks(W[d], perm)
        sd[f"weight_hh_l0{suffix}"] = _blocks(R[d], perm)
        if B is not None:
            sd[f"bias_ih_l0{suffix}"] = _blocks(B[d, :G * H], perm)
            sd[f"bias_hh_l0{suffix}"] = _blocks(B[d, G * H:], perm)
        if P is not None:   # ONNX i, o, f -> fastrnn p_i, p_f, p_o
            sd[f"weight_peephole_l0{suffix}"] = _blocks(P[d], (0, 2, 1))
    layer.load_state_dict(sd)
    return layer


# ---------------------------------------------------------------- ONNX files

def export_onnx(layer, path=None, *, opset: int = 17, sequence_lens: bool = True,
                initial_state: bool = True, layout_attribute: bool = False):
    """An onnx.ModelProto computing the layer (saved to path when given).

    One ONNX RNN/GRU/LSTM node per fastrnn layer; a stack is a chain whose
    nodes pass (T, B, D*H) to the next (Transpose + Reshape of the node's
    (T, D, B, H) Y). Graph inputs, in fastrnn's layouts:

        X               (T, B, I), or (B, T, I) when batch_first
        sequence_lens   (B,) int32: the lengths (values 0..T)   [sequence_lens=True]
        initial_h       (D*num_layers, B, H)                     [initial_state=True]
        initial_c       (D*num_layers, B, H), LSTM               [initial_state=True]

    outputs Y (T, B, D*H) (or (B, T, D*H); merged to H columns for a
    fastrnn.Bidirectional with merge_mode sum/mul/ave), Y_h and Y_c
    (D*num_layers, B, H), ordered as fastrnn's h_n/c_n. With sequence_lens=False
    or initial_state=False those inputs are left out (full lengths, zero
    states). T and B are free dimensions. Inference only (no dropout);
    proj_size cannot be exported (ONNX's LSTM has no projection).

    Batch-first layers: the nodes run time-major between Transposes, because
    ONNX Runtime's CPU kernels reject layout=1; layout_attribute=True uses the
    nodes' layout=1 instead (for runtimes that implement it).

    Lengths of 0: ONNX Runtime returns zeros as such a sequence's final state,
    fastrnn its initial state; when the graph has both sequence_lens and
    initial states, a Where per state restores fastrnn's result, so the model
    computes exactly what the layer does.

    Needs opset >= 14 (the layout attribute). ONNX Runtime's CPU kernels run
    float32 only; a float64 layer exports float64 tensors.

    Parameters
    ----------
    layer : RNN, LSTM, GRU or Bidirectional
        Any number of layers and directions; no proj_size.
    path : str or os.PathLike, optional
        Where to save the model too.
    opset : int, default 17
        The ONNX opset, at least 14.
    sequence_lens : bool, default True
        Whether the graph has the lengths input.
    initial_state : bool, default True
        Whether the graph has the initial state inputs.
    layout_attribute : bool, default False
        Batch-first layers as nodes with layout=1 instead of Transposes.

    Returns
    -------
    onnx.ModelProto
        The model (also saved to path when given).

    Raises
    ------
    TypeError
        When layer is none of these.
    ValueError
        For a projection, or an opset below 14.
    ImportError
        When onnx is not installed.

    Examples
    --------
    >>> import numpy as np, onnx, fastrnn
    >>> lstm = fastrnn.LSTM(4, 8, num_layers=2, seed=0)
    >>> model = fastrnn.export_onnx(lstm)                # or export_onnx(lstm, "lstm.onnx")
    >>> [i.name for i in model.graph.input]
    ['X', 'sequence_lens', 'initial_h', 'initial_c']
    >>> [node.op_type for node in model.graph.node].count("LSTM")
    2
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    stack, merge_mode = _unwrap(layer, "export_onnx")
    _check_no_zoneout(stack, "export_onnx")
    if getattr(stack, "proj_size", 0):
        raise ValueError(f"proj_size: ONNX's LSTM has no projection, got "
                         f"proj_size={stack.proj_size}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 14:
        raise ValueError(f"opset: expected an integer >= 14 (the RNN layout attribute), "
                         f"got {opset!r}")
    elem = TensorProto.DOUBLE if stack.dtype == np.float64 else TensorProto.FLOAT
    op = _ONNX_OPS[_layer_class(stack)]
    L, D, H, I = stack.num_layers, stack.num_directions, stack.hidden_size, stack.input_size
    batch_first = stack.batch_first
    node_layout = int(batch_first and layout_attribute)
    lead = ["B", "T"] if batch_first else ["T", "B"]
    lstm = op == "LSTM"

    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("X", elem, lead + [I])]
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    states = (["initial_h", "initial_c"] if lstm else ["initial_h"]) if initial_state else []
    for s in states:
        inputs.append(helper.make_tensor_value_info(s, elem, [D * L, "B", H]))

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op_type: str, ins: List[str], outs: List[str], **attrs) -> str:
        nodes.append(helper.make_node(op_type, ins, outs, name=f"{outs[0]}_{op_type}", **attrs))
        return outs[0]

    flatten = const("flat_shape", np.array([0, 0, -1], np.int64))
    empty = None
    if sequence_lens and states:
        # (1, B, 1): the rows of length 0, whose final state is the initial one
        node("Equal", ["sequence_lens", const("zero_length", np.array(0, np.int32))],
             ["empty_rows"])
        empty = node("Unsqueeze", ["empty_rows", const("axes_0_2", np.array([0, 2], np.int64))],
                     ["empty_rows_1b1"])

    x = "X"
    if batch_first and not node_layout:
        x = node("Transpose", [x], ["X_tbi"], perm=[1, 0, 2])
    finals: Dict[str, List[str]] = {"Y_h": [], "Y_c": []}
    for k in range(L):
        _, arrays, attrs = _onnx_arrays(stack, k)
        attrs["layout"] = node_layout
        ins = [x, const(f"W_l{k}", arrays["W"]), const(f"R_l{k}", arrays["R"]),
               const(f"B_l{k}", arrays["B"]) if "B" in arrays else "",
               "sequence_lens" if sequence_lens else ""]
        layer_states = {}
        for s in states:   # this layer's (D, B, H) slice, as (B, D, H) for layout 1
            name = s
            if L > 1:
                name = node("Slice", [s, const(f"{s}_l{k}_start", np.array([k * D], np.int64)),
                                      const(f"{s}_l{k}_end", np.array([(k + 1) * D], np.int64)),
                                      const(f"{s}_l{k}_axis", np.array([0], np.int64))],
                            [f"{s}_l{k}"])
            layer_states[s] = name
            if node_layout:
                name = node("Transpose", [name], [f"{name}_bdh"], perm=[1, 0, 2])
            ins.append(name)
        if "P" in arrays:   # peepholes: input 7, after the (maybe absent) states
            ins += [""] * (7 - len(ins)) + [const(f"P_l{k}", arrays["P"])]
        y, yh, yc = f"Y_l{k}", f"Y_h_l{k}", f"Y_c_l{k}"
        nodes.append(helper.make_node(op, ins, [y, yh] + ([yc] if lstm else []),
                                      name=f"{op.lower()}_l{k}", **attrs))
        for stem, out, s in (("Y_h", yh, "initial_h"), ("Y_c", yc, "initial_c")):
            if stem == "Y_c" and not lstm:
                continue
            if node_layout:   # (B, D, H) -> (D, B, H)
                out = node("Transpose", [out], [f"{out}_dbh"], perm=[1, 0, 2])
            if empty is not None:
                out = node("Where", [empty, layer_states[s], out], [f"{out}_kept"])
            finals[stem].append(out)
        last = k == L - 1
        # Y (T, D, B, H), or (B, T, D, H) for layout 1
        if last and merge_mode != "concat":
            # the two directions merged elementwise
            axis = 2 if node_layout else 1
            halves = [node("Gather", [y, const(f"direction{d}", np.array(d, np.int64))],
                           [f"Y_half{d}"], axis=axis) for d in range(2)]
            merged = "Y" if node_layout or not batch_first else "Y_tbh"
            if merge_mode == "sum":
                node("Add", halves, [merged])
            elif merge_mode == "mul":
                node("Mul", halves, [merged])
            else:
                node("Add", halves, ["Y_sum"])
                node("Mul", ["Y_sum", const("half", np.array(0.5, stack.dtype))], [merged])
            if merged != "Y":
                node("Transpose", [merged], ["Y"], perm=[1, 0, 2])
            break
        if not node_layout:   # (T, D, B, H) -> (T, B, D, H)
            y = node("Transpose", [y], [f"{y}_tbdh"], perm=[0, 2, 1, 3])
        if last and batch_first and not node_layout:
            x = node("Reshape", [y, flatten], ["Y_tbo"])
            node("Transpose", [x], ["Y"], perm=[1, 0, 2])
        else:   # -> (T, B, D*H), or (B, T, D*H) for layout 1
            x = node("Reshape", [y, flatten], ["Y" if last else f"X_l{k + 1}"])

    outputs = [helper.make_tensor_value_info(
        "Y", elem, lead + [H if merge_mode != "concat" else D * H])]
    for stem in ("Y_h", "Y_c") if lstm else ("Y_h",):
        parts = finals[stem]
        if len(parts) == 1:
            node("Identity", parts, [stem])
        else:
            node("Concat", parts, [stem], axis=0)
        outputs.append(helper.make_tensor_value_info(stem, elem, [D * L, "B", H]))

    graph = helper.make_graph(nodes, f"fastrnn_{op.lower()}", inputs, outputs, inits,
                              doc_string=repr(layer))
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that carries this opset, so that runtimes older than
    # the installed onnx package still load the model
    model = helper.make_model(graph, producer_name="fastrnn", opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


# ------------------------------------------------- ONNX models from untrusted sources
#
# An ONNX tensor may keep its bytes in another file ("external data": a location
# relative to the model's directory, an offset and a length). onnx follows such a
# reference wherever it points: numpy_helper.to_array reads it relative to the
# current working directory when the model came as bytes (its base_dir=""), so a
# model received from elsewhere could copy a local file into its weights. So
# fastrnn never lets onnx read external data: models are parsed without it
# (load_external_data is never used), and the few tensors the chosen node needs
# are read here, from files inside one directory only. The "basepath" key a
# model may carry is ignored: the directory is the caller's, never the model's.

# element types whose bytes are packed below one byte (no exact size check here)
_PACKED_TYPES = ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))


def _onnx_base_dir(base_dir) -> str:
    """The real path of the caller's base_dir, or the error naming it."""
    if not isinstance(base_dir, (str, bytes, os.PathLike)):
        raise TypeError(f"base_dir: expected a directory path, got {type(base_dir).__name__}")
    path = os.fsdecode(os.fspath(base_dir))
    if not path or "\0" in path:
        raise ValueError(f"base_dir: expected a directory, got {path!r} (pass '.' for the "
                         f"current directory)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"base_dir: expected a directory, got {path!r}, which "
                                f"does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"base_dir: expected a directory, got the file {path!r}")
    return os.path.realpath(path)


def _onnx_format(name) -> Optional[str]:
    """onnx's serialization format for a file name's extension (None: protobuf)."""
    if not isinstance(name, str):
        return None
    try:
        from onnx.serialization import registry   # onnx >= 1.15
        return registry.get_format_from_file_extension(os.path.splitext(name)[1])
    except (ImportError, AttributeError):
        return None


def _read_onnx_model(source, base_dir) -> Tuple[Any, Optional[str]]:
    """(the onnx.ModelProto of load_onnx's path_or_model, the real path of the one
    directory its external data may be read from, or None: no file at all)."""
    import onnx

    base = None if base_dir is None else _onnx_base_dir(base_dir)
    if isinstance(source, onnx.ModelProto):
        return source, base
    fmt = None
    if isinstance(source, (bytes, bytearray)):
        data, what = bytes(source), f"the {len(source)} bytes given"
    elif isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fsdecode(os.fspath(source)))
        what = f"the file {path!r}"
        if "\0" in path:
            raise ValueError(f"path_or_model: expected a file path, got {path!r}")
        if os.path.isdir(path):
            raise IsADirectoryError(f"path_or_model: expected an ONNX model file, got the "
                                    f"directory {path!r}")
        try:   # non-blocking: a FIFO is refused below rather than waited on
            fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"path_or_model: expected an ONNX model file, no file "
                                    f"at {path!r}") from e
        except IsADirectoryError as e:
            raise IsADirectoryError(f"path_or_model: expected an ONNX model file, got the "
                                    f"directory {path!r}") from e
        except OSError as e:   # permissions, a symbolic-link loop, a name too long
            raise ValueError(f"path_or_model: cannot open {path!r} "
                             f"({e.strerror or e})") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"path_or_model: expected a regular file, got {path!r} "
                             f"(a device, FIFO or socket)")
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"path_or_model: cannot read {path!r} ({e.strerror or e})") from e
        fmt = _onnx_format(path)
        if base is None:   # the directory the path names, as onnx.load's
            base = os.path.realpath(os.path.dirname(path))
    elif isinstance(source, io.IOBase):
        if isinstance(source, io.TextIOBase):
            raise TypeError("path_or_model: expected a file opened in binary mode ('rb'), "
                            "got a text file")
        try:
            data = source.read()
        except (OSError, ValueError) as e:   # closed, write-only
            raise ValueError(f"path_or_model: the file object cannot be read ({e})") from e
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"path_or_model: expected a binary file, its read() returned "
                            f"{type(data).__name__}")
        what = f"the {len(data)} bytes read from the file object"
        fmt = _onnx_format(getattr(source, "name", None))
    else:
        raise TypeError(f"path_or_model: expected a path, bytes, a file or an "
                        f"onnx.ModelProto, got {type(source).__name__}")
    try:
        if fmt in (None, "protobuf"):
            model = onnx.ModelProto()
            model.ParseFromString(bytes(data))
        else:   # a text format chosen by the file's extension
            model = onnx.load_model_from_string(bytes(data), format=fmt)
    except MemoryError:
        raise
    except Exception as e:   # DecodeError, UnicodeDecodeError (pure-Python protobuf), ...
        raise ValueError(f"path_or_model: expected a serialized ONNX model, {what} do not "
                         f"parse as one ({type(e).__name__}: {e})") from e
    return model, base


def _open_inside(base: str, real: str) -> int:
    """A read-only descriptor of real, a path inside the directory base with no
    symbolic link in it. Where the OS allows it, each component is opened from
    its parent without following links, so a link swapped in after the check
    fails (ELOOP) instead of leading out."""
    parts = [] if real == base else os.path.relpath(real, base).split(os.sep)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    directory = getattr(os, "O_DIRECTORY", 0)
    flags = _OPEN_FLAGS | getattr(os, "O_NONBLOCK", 0)   # a FIFO opens, then is refused
    if not (nofollow and directory and os.open in os.supports_dir_fd):
        return os.open(real, flags)
    dir_fd = os.open(base, _OPEN_FLAGS | directory)
    try:
        for part in parts[:-1]:
            fd = os.open(part, _OPEN_FLAGS | directory | nofollow, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = fd
        return os.open(parts[-1] if parts else ".", flags | nofollow, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _onnx_external_bytes(tensor, label: str, base: Optional[str],
                         expected: Optional[int], shape: str) -> bytes:
    """The bytes of a tensor kept in external data, read from inside base only."""
    info: Dict[str, str] = {}
    for entry in tensor.external_data:
        key = _onnx_text(entry.key, f"path_or_model: {label}: an external_data key")
        info[key] = _onnx_text(entry.value, f"path_or_model: {label}: external_data {key!r}")
    location = info.get("location", "")
    where = f"path_or_model: {label}: external data at {location!r}"
    if base is None:
        raise ValueError(f"{where} refused: a model given as bytes, a file object or an "
                         f"onnx.ModelProto reads no file unless base_dir names the "
                         f"directory that holds its external data")
    if not location:
        raise ValueError(f"path_or_model: {label}: external data without a location")
    if "\0" in location:
        raise ValueError(f"{where} refused: a NUL character in the location")
    if posixpath.isabs(location) or ntpath.isabs(location) or ntpath.splitdrive(location)[0]:
        raise ValueError(f"{where} refused: an absolute path (external data must be a "
                         f"relative path inside {base!r})")
    if ".." in re.split(r"[\\/]", location):
        raise ValueError(f"{where} refused: '..' leads out of {base!r}")
    real = os.path.realpath(os.path.join(base, location))
    try:
        inside = real == base or os.path.commonpath([real, base]) == base
    except ValueError:   # Windows: another drive
        inside = False
    if not inside:
        raise ValueError(f"{where} refused: it resolves to {real!r}, outside {base!r} "
                         f"(a symbolic link leads out)")
    numbers = {}
    for key in ("offset", "length"):
        value = info.get(key)
        if value is not None and not re.fullmatch(r"[0-9]+", value):
            raise ValueError(f"{where}: {key}: expected a non-negative integer, got {value!r}")
        numbers[key] = None if value is None else int(value)
    offset, length = numbers["offset"] or 0, numbers["length"]
    try:
        fd = _open_inside(base, real)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ValueError(f"{where}: no such file inside {base!r}") from e
    except OSError as e:   # ELOOP: a link swapped in since the check; permissions
        raise ValueError(f"{where} refused: the file cannot be opened inside {base!r} "
                         f"without following a link or at all ({e.strerror})") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):   # before fdopen, which refuses directories itself
        os.close(fd)
        raise ValueError(f"{where} refused: not a regular file (a directory, device, "
                         f"FIFO or socket)")
    with os.fdopen(fd, "rb") as f:
        size = st.st_size
        if offset > size:
            raise ValueError(f"{where}: offset {offset} is past the end of the "
                             f"{size}-byte file")
        if length is None:
            length = size - offset
        elif length > size - offset:
            raise ValueError(f"{where}: length {length} at offset {offset} runs past the "
                             f"end of the {size}-byte file")
        if expected is not None and length != expected:
            raise ValueError(f"{where}: expected {expected} bytes for {shape}, got "
                             f"{length} bytes")
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise ValueError(f"{where}: the file ended after {len(data)} of {length} bytes "
                         f"(it changed while being read)")
    return data


def _onnx_tensor_array(tensor, label: str, base: Optional[str]) -> np.ndarray:
    """A TensorProto's array, or ValueError naming the tensor (label). External
    data comes from inside base only (none when base is None); the TensorProto is
    left as it was."""
    from onnx import TensorProto, helper, numpy_helper

    where = f"path_or_model: {label}"
    if tensor.HasField("segment"):
        raise ValueError(f"{where}: a segment of a tensor (not supported)")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise ValueError(f"{where}: expected dimensions >= 0, got {dims}")
    data_type = tensor.data_type
    try:
        type_name = TensorProto.DataType.Name(data_type)
    except ValueError:
        type_name = str(data_type)
    if data_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        raise ValueError(f"{where}: expected a tensor of numbers, got element type {type_name}")
    try:
        np_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: unknown element type {type_name}") from e
    shape = f"shape {tuple(dims)} {type_name}"
    if tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL:
        packed = {getattr(TensorProto, n, None) for n in _PACKED_TYPES} - {None}
        count = 1
        for d in dims:
            count *= d
        expected = None if data_type in packed else count * np_dtype.itemsize
        inline = TensorProto()
        inline.CopyFrom(tensor)
        inline.raw_data = _onnx_external_bytes(tensor, label, base, expected, shape)
        inline.data_location = TensorProto.DEFAULT
        del inline.external_data[:]
        tensor = inline
    try:
        array = numpy_helper.to_array(tensor)   # no file: the data are inline now
    except MemoryError:
        raise
    except Exception as e:   # reshape errors of data of the wrong size, ...
        raise ValueError(f"{where}: its data do not fit {shape} ({type(e).__name__}: "
                         f"{e})") from e
    if array.shape != tuple(dims):
        raise ValueError(f"{where}: expected {shape}, got data of shape {array.shape}")
    return array


# the attributes load_onnx reads, with their ONNX attribute types
_ONNX_ATTRIBUTE_TYPES = {"hidden_size": "INT", "direction": "STRING",
                         "linear_before_reset": "INT", "layout": "INT",
                         "activations": "STRINGS", "clip": "FLOAT", "input_forget": "INT",
                         "activation_alpha": "FLOATS", "activation_beta": "FLOATS"}


def load_onnx(path_or_model, node=None, *, base_dir=None, batch_first: Optional[bool] = None,
              dtype=None, backend: str = "c"):
    """The fastrnn layer of one ONNX RNN/GRU/LSTM node and its initializers.

    Models may come from untrusted sources: a model reads external data (tensors
    kept in other files) only from files inside one directory (see base_dir),
    and a malformed model raises ValueError naming what is wrong.

    Parameters
    ----------
    path_or_model : str, os.PathLike, bytes, bytearray, binary file or onnx.ModelProto
        The model: a file path, its serialized bytes, a file opened with "rb"
        or an onnx.ModelProto (left as it was).
    node : None, str or int
        None for the first RNN/GRU/LSTM node of the graph, a node name, or an
        index among those nodes. Its W, R and B (and P) must be initializers or
        Constant nodes.
    base_dir : str or os.PathLike, optional
        The directory external data may be read from (its files and
        subdirectories only). By default a path reads only files inside the
        model file's own directory (the directory of the path as given, as
        onnx.load), and bytes, file objects and ModelProtos read no file at all;
        base_dir, given, replaces that directory. Either way a location that
        is absolute, contains "..", resolves (through symbolic links) out of the
        directory or is not a regular file is refused.
    batch_first : bool, optional
        Defaults to True when the node has layout=1 or its X is a
        Transpose(perm=[1, 0, 2]) of another tensor (as export_onnx and torch's
        exporter write batch-first layers), else False.
    dtype : optional
        Defaults to W's (float64 stays float64, else float32).
    backend : str
        As the layers'.

    Returns
    -------
    RNN, GRU or LSTM
        A single-layer layer. A chain exported from a stack gives its first
        layer only; load each node by index to rebuild the stack (batch_first
        is then detected for the first node only: pass it for the others).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        path_or_model names no file or a directory; base_dir does not exist.
    ValueError
        The bytes do not parse as an ONNX model; the graph has no such node;
        a weight is missing, not an initializer or Constant, of the wrong size
        or element type; an attribute has the wrong type or value or is not
        UTF-8; an external-data reference is refused or does not fit its file
        (the message names the tensor and the location); base_dir is not a
        directory.
    TypeError
        path_or_model, node or base_dir of the wrong type; a file in text mode.

    Examples
    --------
    >>> import numpy as np, onnx, fastrnn
    >>> gru = fastrnn.GRU(4, 8, seed=0)
    >>> twin = fastrnn.load_onnx(fastrnn.export_onnx(gru))   # or load_onnx("gru.onnx")
    >>> x = np.ones((5, 2, 4), np.float32)
    >>> np.allclose(twin(x)[0], gru(x)[0])
    True
    """
    import onnx
    from google.protobuf.message import DecodeError

    model, base = _read_onnx_model(path_or_model, base_dir)
    try:
        return _load_onnx_node(model, base, node, batch_first, dtype, backend)
    except (KeyError, IndexError, UnicodeError, DecodeError, onnx.checker.ValidationError) as e:
        # what the checks above did not foresee, still named as the model's fault
        raise ValueError(f"path_or_model: a malformed model ({type(e).__name__}: {e})") from e


def _load_onnx_node(model, base: Optional[str], node, batch_first: Optional[bool], dtype,
                    backend: str):
    """load_onnx after parsing: base is the one directory external data may come from."""
    from onnx import AttributeProto, helper

    graph = model.graph
    # the tensors of initializers and Constant nodes, converted only if used
    tensors = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            value = next((a for a in n.attribute if a.name == "value"), None)
            if value is not None and value.type == AttributeProto.TENSOR:
                tensors[n.output[0]] = value.t
    recurrent = [n for n in graph.node if n.op_type in ("RNN", "GRU", "LSTM")
                 and n.domain in ("", "ai.onnx")]
    if not recurrent:
        raise ValueError("path_or_model: the graph has no RNN, GRU or LSTM node")
    if node is None:
        chosen = recurrent[0]
    elif isinstance(node, str):
        named = [n for n in recurrent if n.name == node]
        if not named:
            raise ValueError(f"node: no RNN/GRU/LSTM node named {node!r}; the graph has "
                             f"{[n.name for n in recurrent]}")
        chosen = named[0]
    elif isinstance(node, int) and not isinstance(node, bool):
        if not -len(recurrent) <= node < len(recurrent):
            raise ValueError(f"node: index {node} out of range for {len(recurrent)} "
                             f"RNN/GRU/LSTM nodes")
        chosen = recurrent[node]
    else:
        raise TypeError(f"node: expected None, a name or an index, got {type(node).__name__}")
    of_node = f"of node {chosen.name!r} ({chosen.op_type})"
    if not chosen.input or not chosen.input[0]:
        raise ValueError(f"path_or_model: no X input {of_node}")

    def operand(i: int, name: str, required: bool = False):
        if len(chosen.input) <= i or not chosen.input[i]:
            if required:
                raise ValueError(f"{name}: node {chosen.name!r} has no {name} input")
            return None
        input_name = _onnx_text(chosen.input[i], f"path_or_model: the name of input {name} "
                                                 f"{of_node}")
        if input_name not in tensors:
            raise ValueError(f"{name}: input {input_name!r} of node {chosen.name!r} is "
                             f"not an initializer or Constant; fastrnn needs the weights")
        return _onnx_tensor_array(tensors[input_name],
                                  f"tensor {input_name!r} (input {name} {of_node})", base)

    attrs, unknown = {}, []
    for a in chosen.attribute:
        name = _onnx_text(a.name, f"path_or_model: an attribute name {of_node}")
        if name not in _ONNX_ATTRIBUTE_TYPES:
            unknown.append(name)
            continue
        want = _ONNX_ATTRIBUTE_TYPES[name]
        if a.type != getattr(AttributeProto, want):
            try:
                got = AttributeProto.AttributeType.Name(a.type)
            except ValueError:
                got = str(a.type)
            raise ValueError(f"{name}: attribute {of_node} expected type {want}, got {got}")
        value = helper.get_attribute_value(a)
        if want == "STRING":
            value = _onnx_text(value, f"{name}: attribute {of_node}")
        elif want == "STRINGS":
            value = [_onnx_text(v, f"{name}: attribute {of_node}") for v in value]
        attrs[name] = value
    if unknown:
        raise ValueError(f"node: attributes {sorted(unknown)} of node {chosen.name!r} are not "
                         f"supported yet")
    if batch_first is None:
        producer = [n for n in graph.node if chosen.input[0] in n.output]
        transposed = bool(producer) and producer[0].op_type == "Transpose" and any(
            a.name == "perm" and list(a.ints) == [1, 0, 2] for a in producer[0].attribute)
        batch_first = attrs.get("layout", 0) == 1 or transposed
    W = operand(1, "W", required=True)
    if dtype is None:
        dtype = np.float64 if W.dtype == np.float64 else np.float32
    # layout: the layout of the layer's input, which may differ from the node's
    attrs["layout"] = int(bool(batch_first))
    return from_onnx(chosen.op_type, W, operand(2, "R", required=True), operand(3, "B"),
                     P=operand(7, "P") if chosen.op_type == "LSTM" else None,
                     dtype=dtype, backend=backend, **attrs)
