"""Bidirectional: the Keras-style wrapper running one layer in both directions."""
from __future__ import annotations

import copy
from operator import attrgetter
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from fastrnn._archive import Saveable
from fastrnn._validation import _as_array, _check_choice
from fastrnn.layers import (GRU, LSTM, RNN, IndRNN, _ParameterAttributes, _RNNBase,
                            _per_thread, _stack_property, _StackWrapper)

_MERGE_MODES = ("concat", "sum", "mul", "ave")


class Bidirectional(_StackWrapper, _ParameterAttributes, Saveable):
    """Runs a layer in both directions and merges the two outputs (Keras style).

    ``Bidirectional(GRU(8, 16), merge_mode="concat")`` equals ``GRU(8, 16,
    bidirectional=True)``, whose forward direction starts from the wrapped
    layer's weights. merge_mode "sum", "mul" or "ave" combine the two halves
    elementwise instead (output width H, or proj_size). States are the inner
    layer's.

    The configuration (``input_size``, ``hidden_size``, ``dtype``, ...), the
    mode (``training``, ``backend``, settable), ``grads``, ``tape`` and the
    parameter methods are the inner layer's, as properties and methods of the
    wrapper; parameters are attributes under the inner layer's names
    (``weight_ih_l0``, ``weight_ih_l0_reverse``, ...): reading gives the live
    array, assigning copies into it.

    Parameters
    ----------
    layer : RNN, LSTM or GRU
        A single-layer, forward layer. It is not modified: the wrapper runs a
        bidirectional copy of it (same options and weights; its random
        generator is not consumed).
    merge_mode : {"concat", "sum", "mul", "ave"}, default "concat"
        How the two directions' outputs combine: side by side (forward half
        first), or their sum, product or mean.

    Attributes
    ----------
    layer : RNN, LSTM or GRU
        The bidirectional layer that runs.
    merge_mode : str
        As given.

    Raises
    ------
    TypeError
        When layer is not an RNN, LSTM or GRU.
    ValueError
        When layer has several layers or is not forward, or merge_mode is unknown.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> bi = fastrnn.Bidirectional(fastrnn.GRU(4, 8, seed=0), merge_mode="sum")
    >>> output, h_n = bi(np.zeros((5, 3, 4)))
    >>> output.shape, h_n.shape
    ((5, 3, 8), (2, 3, 8))
    >>> dx, dh0 = bi.backward(np.ones_like(output))
    >>> dx.shape
    (5, 3, 4)
    """

    # what the calling thread's last call kept for backward (per thread, as
    # the inner layer's record): the two halves for "mul", the merged shape
    _halves = _per_thread("halves")
    _merged_shape = _per_thread("merged_shape")

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
        # the regularizations (IndRNN has no recurrent dropout)
        kwargs.update(zoneout=layer.zoneout, input_dropout=layer.input_dropout,
                      weight_dropout=layer.weight_dropout)
        if not isinstance(layer, IndRNN):
            kwargs["recurrent_dropout"] = layer.recurrent_dropout
        if isinstance(layer, GRU):
            kwargs.update(reset_after=layer.reset_after, layer_norm=layer.layer_norm)
        if isinstance(layer, LSTM):
            kwargs.update(proj_size=layer.proj_size, peepholes=layer.peepholes,
                          input_forget=layer.input_forget, cell_zoneout=layer.cell_zoneout,
                          layer_norm=layer.layer_norm)
        if type(layer) is RNN:
            kwargs["nonlinearity"] = layer.nonlinearity
        if isinstance(layer, IndRNN):   # no ONNX options: its activation is nonlinearity
            del kwargs["activations"], kwargs["clip"]
            kwargs["nonlinearity"] = layer.nonlinearity
        self.layer = type(layer)(layer.input_size, layer.hidden_size, **kwargs)
        for name, value in layer.state_dict().items():
            self.layer._params[name][...] = value
        self._halves: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._merged_shape: Optional[Tuple[int, ...]] = None

    # -- the inner layer's configuration (read-only; its mode is _StackWrapper's)

    _stack = property(attrgetter("layer"))
    input_size = _stack_property("input_size", "I, the features of each input step.")
    hidden_size = _stack_property("hidden_size", "H, the features of the hidden state.")
    num_layers = _stack_property("num_layers", "1: the wrapper runs a single layer.")
    proj_size = _stack_property("proj_size", "The LSTM's projection size P (0: none).")
    batch_first = _stack_property("batch_first", "x and output are (B, T, .) when True, "
                                                 "else (T, B, .).")
    dropout = _stack_property("dropout", "The inner layer's dropout (unused by one layer).")
    direction = _stack_property("direction", '"bidirectional".')
    bidirectional = _stack_property("bidirectional", "True.")
    num_directions = _stack_property("num_directions", "D = 2.")
    stateful = _stack_property("stateful", "Whether each call's final state carries into "
                                           "the next.")
    activations = _stack_property("activations", "The cell's activations, ((name, alpha, "
                                                 "beta), ...).")
    clip = _stack_property("clip", "ONNX's clip of the gate pre-activations, or None.")
    peepholes = _stack_property("peepholes", "Whether the LSTM has ONNX's peephole weights.")
    input_forget = _stack_property("input_forget", "Whether the LSTM couples its input and "
                                                   "forget gates.")
    nonlinearity = _stack_property("nonlinearity", '"tanh" or "relu" (an RNN or IndRNN only).')
    reset_after = _stack_property("reset_after", "Where the GRU applies its reset gate (a "
                                                 "GRU only).")
    layer_norm = _stack_property("layer_norm", "Whether the LSTM or GRU is layer-normalized.")
    grads = _stack_property("grads", "Accumulated parameter gradients, under the state_dict "
                                     "names.")

    def reset_state(self) -> None:
        """Forget the state a stateful layer carries into its next call."""
        self.layer.reset_state()

    # -- parameters: the inner layer's, under its names

    def _parameter_arrays(self) -> Mapping[str, np.ndarray]:
        layer = self.__dict__.get("layer")
        return {} if layer is None else layer._parameter_arrays()

    def named_parameters(self) -> List[Tuple[str, np.ndarray]]:
        """(name, live array) of every parameter, in state_dict order."""
        return self.layer.named_parameters()

    def state_dict(self) -> Dict[str, np.ndarray]:
        """A copy of the parameters under PyTorch's names (see RNN.state_dict)."""
        return self.layer.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Load parameters by PyTorch name (see ``RNN.load_state_dict``).

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Every name of ``state_dict()`` (the inner layer's, ``..._reverse``
            for the backward direction), each with its shape.

        Raises
        ------
        ValueError, TypeError
            As ``RNN.load_state_dict``; nothing changes then.
        """
        self.layer.load_state_dict(state_dict)

    # -- forward and backward

    def __call__(self, x: ArrayLike, state: Any = None, lengths: Optional[ArrayLike] = None,
                 training: Optional[bool] = None) -> Tuple[np.ndarray, Any]:
        """Run both directions and merge their outputs.

        Parameters
        ----------
        x : array_like
            (T, B, I), or (B, T, I) when batch_first, or (T, I) unbatched.
        state : array_like or (h0, c0), optional
            The inner layer's initial state: h0 (2, B, H), or for an LSTM the
            pair (h0, c0); without B unbatched; None: zeros.
        lengths : array_like of int, optional
            (B,) valid steps of each sequence (see RNN.__call__).
        training : bool, optional
            Keep what backward needs; None: the layer's mode.

        Returns
        -------
        output : ndarray
            (T, B, 2*R) for "concat" (forward half first), else (T, B, R), R
            the inner layer's width (H, or proj_size); batch_first and
            unbatched layouts as x.
        state : ndarray or (h_n, c_n)
            The inner layer's final state, (2, B, .).

        Raises
        ------
        ValueError, TypeError
            For an argument of the wrong shape, type or range, naming it.
        """
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

    def backward(self, d_output: Optional[ArrayLike], d_state: Any = None,
                 retain_graph: bool = False) -> Tuple[np.ndarray, Any]:
        """Backpropagate through the last training call; gradients accumulate into ``grads``.

        The last training call is the calling thread's own (see RNN.backward).

        Parameters
        ----------
        d_output : array_like or None
            The gradient of the merged output, with its shape; None: zeros.
        d_state : array_like or (d_h_n, d_c_n), optional
            The gradient of the final state, shaped as it; None: zeros.
        retain_graph : bool, default False
            Keep what the call kept, so that it can be differentiated again;
            by default a call is differentiated once, as in PyTorch.

        Returns
        -------
        dx : ndarray
            The gradient of x, with x's shape.
        d_state0 : ndarray or (dh0, dc0)
            The gradient of the initial state, shaped as it.

        Raises
        ------
        ValueError
            When there is no training call to differentiate, it was
            differentiated already, or a gradient has the wrong shape.
        """
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
        return self.layer.backward(d_output, d_state, retain_graph=retain_graph)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_records", None)   # the threads' records, as the layer's
        return state

    def __repr__(self) -> str:
        return f"Bidirectional({self.layer!r}, merge_mode={self.merge_mode!r})"

    def _save_config(self) -> Tuple[Dict[str, Any], _RNNBase]:
        config, stack = self.layer._save_config()
        config["args"]["direction"] = "forward"   # the wrapped layer as it was given
        return {"class": "Bidirectional", "merge_mode": self.merge_mode, "layer": config}, stack
