"""RNNCell, LSTMCell, GRUCell and IndRNNCell: one time step, for streaming (PyTorch's cells).

A cell holds a single-layer RNN/LSTM/GRU and runs it with T = 1, so the
parameters, kernels and gradients are the layers'; its parameter names are
PyTorch's cells' (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, the
layer's without ``_l0``). Weights move between a one-layer layer and a cell
by name: each one's load_state_dict takes the other's names as well as its own.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastrnn import _kernels
from fastrnn._archive import Saveable, class_config
from fastrnn._backend import CBackend
from fastrnn._validation import _numbers, _pair, _state_array
from fastrnn.layers import (GRU, LSTM, RNN, IndRNN, Tape, _KIND_ARGUMENTS, _RNNBase, _StackWrapper, _doc,
                            _per_thread, _stack_property)


def _parameter(name: str, shape: str) -> property:
    """The inner layer's parameter ``{name}_l0`` as the cell's ``name``: reading
    gives the live array, assigning copies into it (checked as load_state_dict
    checks); AttributeError for a bias of a cell without biases."""
    key = f"{name}_l0"

    def get(self) -> np.ndarray:
        params = self._layer._params
        if key not in params:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} "
                                 f"(bias=False)")
        return params[key]

    def set_(self, value: ArrayLike) -> None:
        get(self)
        # cell.weight_ih = w copies into the parameter the kernels read
        setattr(self._layer, key, value)

    return property(get, set_, doc=f"{shape}, the live parameter; assigning copies into it.")


class _CellBase(_StackWrapper, Saveable):
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
    # whether the calling thread's current (or last training) call is
    # unbatched: per thread, as the layer's record for backward is
    _unbatched = _per_thread("unbatched", False)

    def __init__(self, *, input_size: int, hidden_size: int, bias: bool, dtype: DTypeLike,
                 seed: Optional[int], backend: str, **options: Any) -> None:
        self._layer = self._stack_type(input_size, hidden_size, bias=bias, dtype=dtype,
                                       seed=seed, backend=backend, **options)
        self._layer._keeps_dropout = True
        self._unbatched = False
        self.input_size, self.hidden_size = self._layer.input_size, self._layer.hidden_size
        # the binding runs PyTorch's cells only (not the general ones)
        layer = self._layer
        default = (not any(layer._cell_options) and not layer.proj_size and layer.num_layers == 1
                   and layer.direction == "forward" and not layer.stateful
                   and not layer.zoneout and not layer.cell_zoneout and not layer.layer_norm)
        # (dropout acts in training only, which takes the layer path anyway)
        self._fast_kind = _kernels.CELLS[layer._cell] if default else None
        # the fast path's workspaces: a call takes one (list.pop and append are
        # atomic), so concurrent calls from threads never share one; grown on demand
        self._work_pool: List[np.ndarray] = []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_work_pool"] = []   # scratch, made anew on demand
        state.pop("_records", None)   # the threads' _unbatched
        return state

    # -- parameters under PyTorch's cell names (the mode is _StackWrapper's)

    _stack = property(attrgetter("_layer"))
    zoneout = _stack_property("zoneout", "Zoneout's probability on h (0: none).")
    input_dropout = _stack_property("input_dropout", "Dropout's rate on x (0: none).")
    recurrent_dropout = _stack_property("recurrent_dropout", "Dropout's rate on h in the "
                                                             "recurrent product (0: none).")
    weight_dropout = _stack_property("weight_dropout", "DropConnect's rate on weight_hh "
                                                       "(0: none).")
    layer_norm = _stack_property("layer_norm", "Whether the cell is layer-normalized.")

    def reset_dropout_mask(self) -> None:
        """Forget the dropout masks: the next training call draws new ones.

        With ``input_dropout`` or ``recurrent_dropout`` a cell draws its masks
        (Keras' one mask per gate block) at its first training call and keeps
        them for every later call of the same batch size, so that a sequence
        stepped through the cell sees one mask at every step (variational
        dropout), as Keras' cells do; call this between sequences. The masks are
        the calling thread's own. ``weight_dropout``'s mask is kept and
        forgotten with them."""
        self._layer._kept_dropout = None
        self._layer._kept_weight_mask = None
    weight_ih = _parameter("weight_ih", "(G*H, I)")
    weight_hh = _parameter("weight_hh", "(G*H, H)")
    bias_ih = _parameter("bias_ih", "(G*H,)")
    bias_hh = _parameter("bias_hh", "(G*H,)")

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """Accumulated parameter gradients, under the state_dict names."""
        return {k[:-3]: v for k, v in self._layer.grads.items()}

    def named_parameters(self) -> List[Tuple[str, np.ndarray]]:
        """(name, live array) of every parameter, in state_dict order."""
        return [(k[:-3], v) for k, v in self._layer.named_parameters()]

    def state_dict(self) -> Dict[str, np.ndarray]:
        """A copy of the parameters: weight_ih (G*H, I), weight_hh (G*H, H), and
        with bias bias_ih, bias_hh (G*H,); G is 1, 4 or 3 (RNN, LSTM, GRU). With
        layer_norm also ln_weight_ih, ln_weight_hh (G*H,), and for the LSTM
        ln_weight_c, ln_bias_c (H,)."""
        return {k[:-3]: v for k, v in self._layer.state_dict().items()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Load parameters by PyTorch's cell names, or a one-layer layer's.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            ``weight_ih``, ``weight_hh`` and with bias ``bias_ih``, ``bias_hh``
            (a PyTorch cell's state_dict loads as is), or the same under a
            one-layer, one-direction layer's names (``weight_ih_l0``, ...:
            that layer's ``state_dict()``); each with its shape, converted to
            the cell's dtype.

        Raises
        ------
        ValueError
            When an entry is missing, unexpected or misshapen (the message
            lists the names expected).
        TypeError
            When state_dict is not a mapping, or an entry is not real numbers.
            Nothing changes when anything is raised.

        Examples
        --------
        >>> import fastrnn
        >>> lstm = fastrnn.LSTM(4, 8, seed=0)               # trained as a layer ...
        >>> cell = fastrnn.LSTMCell(4, 8)
        >>> cell.load_state_dict(lstm.state_dict())         # ... run step by step
        >>> bool((cell.weight_hh == lstm.weight_hh_l0).all())
        True
        """
        self._layer._load_state_dict(state_dict, cell_first=True)

    def _save_config(self) -> Tuple[Dict[str, Any], _RNNBase]:
        return class_config(self, (RNNCell, LSTMCell, GRUCell, IndRNNCell)), self._layer

    def __repr__(self) -> str:
        layer = self._layer
        extra = "".join(f", {name}={getattr(layer, name)!r}"
                        for name in ("zoneout", "cell_zoneout", "input_dropout",
                                     "recurrent_dropout", "weight_dropout", "layer_norm")
                        if getattr(layer, name))
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
                f"{_KIND_ARGUMENTS.get(layer._cell, '')}, "
                f"bias={layer.bias}{extra}, dtype={layer.dtype.name}, "
                f"backend={layer.backend!r})")

    # -- the layer path's conversions and checks

    def _step_input(self, x: ArrayLike) -> Tuple[np.ndarray, bool]:
        """x (B, I) or unbatched (I,) as a one-step batch (1, B, I), and whether
        it was unbatched."""
        x = _numbers("x", x)
        if x.ndim not in (1, 2):
            raise ValueError(f"x: expected (B, I) or unbatched (I,), got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x: input has inconsistent input_size: got {x.shape[-1]} "
                             f"expected {self.input_size}")
        if x.size == 0:
            raise ValueError(f"x: expected a non-empty input, got shape {x.shape}")
        return x.reshape(1, -1, x.shape[-1]), x.ndim == 1

    def _step_state(self, name: str, value: ArrayLike, B: int, unbatched: bool
                    ) -> Optional[np.ndarray]:
        """A state (B, H), or (H,) when unbatched, as (1, B, H)."""
        if value is None:
            return None
        expect = (self.hidden_size,) if unbatched else (B, self.hidden_size)
        arr = _state_array(name, value, self._layer.dtype, expect, "",
                           self._layer._cell != "lstm")
        return arr.reshape(1, B, self.hidden_size)

    def _grad_state(self, name: str, value: ArrayLike, tape: Optional[Tape] = None
                    ) -> Optional[np.ndarray]:
        saved = self._layer._saved if tape is None else getattr(tape, "_saved", None)
        if saved is None:
            raise ValueError("backward: no training forward to differentiate; call the cell "
                             "with training=True (the default, or after .train()) first")
        return self._step_state(name, value, saved["B"], self._unbatched)

    def _squeeze(self, a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """(1, B, n) -> (B, n), or (n,) when unbatched."""
        if a is None:
            return None
        return a[0, 0] if self._unbatched else a[0]

    def _step_arrays(self, x: ArrayLike, h: ArrayLike, c: ArrayLike):
        """x, h, c converted and checked by the layer path's code (the same
        errors), as the binding takes them: (B, I) and (B, H), or (I,) and (H,)."""
        x3, unbatched = self._step_input(x)          # (B, I) or (I,)
        B = x3.shape[1]
        h3 = self._step_state("h", h, B, unbatched)
        c3 = self._step_state("c", c, B, unbatched)
        x3 = self._layer._input(x3)[0]                # dtype, input_size, non-empty
        one = (lambda a: None if a is None else a[0, 0]) if unbatched \
            else (lambda a: None if a is None else a[0])
        return one(x3), one(h3), one(c3)


def _infer(cell: _CellBase, layer: _RNNBase, x: ArrayLike, h: ArrayLike, c: ArrayLike):
    """The cells' fast path: one inference step, h' (or (h', c') for LSTM) shaped as h.

    The common case (C-contiguous arrays of the cell's dtype and shapes, and a
    workspace from an earlier call) is one binding call; anything else fails the
    binding's checks and is then converted and checked as the layer path does
    (the same errors), which also sizes the workspace. A function rather than a
    method: every attribute read counts at this scale.

    It takes no lock, so steps in several threads run in parallel; a step that
    overlapped a load_state_dict (layer._param_version odd or changed) runs
    again under the layer's lock, so none computes with half-loaded parameters."""
    params = layer._params
    version = layer._param_version
    records = layer._records      # the layer's _saved, this thread's, read without a property
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
    if version & 1 or layer._param_version != version:
        with layer._lock:         # load_state_dict copies under it
            out = _kernels.cell_forward(cell._fast_kind, x, h, c, params["weight_ih_l0"],
                                        params["weight_hh_l0"], params.get("bias_ih_l0"),
                                        params.get("bias_hh_l0"), work)
    pool.append(work)
    if records.saved is not None:
        records.saved = None      # as after the layer path's inference calls (a call
                                  # that raised above left the record as it was)
    return out


class _HiddenStateCell(_CellBase):
    """The call and backward of cells whose only state is h (RNNCell, GRUCell)."""

    def __call__(self, x: ArrayLike, h: Optional[ArrayLike] = None,
                 training: Optional[bool] = None) -> np.ndarray:
        """One step.

        Parameters
        ----------
        x : array_like
            (B, I), or (I,) unbatched.
        h : array_like, optional
            The state (B, H), or (H,) unbatched; None: zeros.
        training : bool, optional
            Keep what backward needs; None: the cell's mode. Inference steps
            on the "c" backend take the fast path.

        Returns
        -------
        ndarray
            The next state h', (B, H) or (H,).

        Raises
        ------
        ValueError, TypeError
            For an argument of the wrong shape or type, naming it.
        """
        layer = self._layer
        if (self._fast_kind is not None and type(layer._backend) is CBackend
                and not (layer.training if training is None else training)):
            return _infer(self, layer, x, h, None)
        x, unbatched = self._step_input(x)
        h = self._step_state("h", h, x.shape[1], unbatched)
        _, h_n = self._layer(x, h, training=training)
        self._unbatched = unbatched   # the call succeeded: backward's shapes
        return self._squeeze(h_n)

    def backward(self, d_h: ArrayLike, tape: Optional[Tape] = None,
                 retain_graph: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Backpropagate through the last training call (or the one ``tape`` recorded).

        Parameter gradients accumulate into ``grads``. The last training call
        is the calling thread's own: threads sharing the cell each
        differentiate their own call.

        A call is differentiated once, as in PyTorch: a second backward of it
        raises, unless the backward before passed ``retain_graph=True``.

        Parameters
        ----------
        d_h : array_like
            The gradient of the call's h', shaped as it.
        tape : Tape, optional
            A ``cell.tape`` taken after an earlier training call.
        retain_graph : bool, default False
            Keep what the call kept, so that it can be differentiated again.

        Returns
        -------
        dx, dh : ndarray
            The gradients of x and of h, shaped as they were.

        Raises
        ------
        ValueError
            When there is no training call to differentiate, it was
            differentiated already, or d_h has the wrong shape.

        Examples
        --------
        >>> import numpy as np, fastrnn
        >>> cell = fastrnn.GRUCell(4, 8, seed=0)
        >>> h = cell(np.ones((3, 4)))
        >>> dx, dh = cell.backward(np.ones_like(h))
        >>> dx.shape, dh.shape, sorted(cell.grads)
        ((3, 4), (3, 8), ['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih'])
        """
        dx, dh = self._layer.backward(None, self._grad_state("d_h", d_h, tape), tape=tape,
                                      retain_graph=retain_graph)
        return self._squeeze(dx), self._squeeze(dh)


@_doc
class RNNCell(_HiddenStateCell):
    """One Elman RNN step: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu.

    PyTorch's torch.nn.RNNCell: the same arguments, parameter names and results.

    Parameters
    ----------
%(sizes)s
%(bias)s
%(nonlinearity)s
%(creation)s
%(zoneout)s
%(dropouts)s
%(cell_weight_dropout)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> cell = fastrnn.RNNCell(4, 8, seed=0)
    >>> h = cell(np.ones((3, 4)))                 # x (B, I), h None: zeros
    >>> h = cell(np.ones((3, 4)), h)
    >>> h.shape, cell.weight_ih.shape
    ((3, 8), (8, 4))
    """

    _stack_type = RNN

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype: DTypeLike = np.float32,
                 seed: Optional[int] = None, backend: str = "c", zoneout: float = 0.0,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 weight_dropout: float = 0.0) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size, bias=bias,
                         dtype=dtype, seed=seed, backend=backend, nonlinearity=nonlinearity,
                         zoneout=zoneout, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, weight_dropout=weight_dropout)

    nonlinearity = _stack_property("nonlinearity", '"tanh" or "relu".')


@_doc
class GRUCell(_HiddenStateCell):
    """One GRU step (reset_after=True is PyTorch's GRUCell).

    PyTorch's torch.nn.GRUCell: the same arguments, parameter names and results;
    gates r, z, n.

    Parameters
    ----------
%(sizes)s
%(bias)s
%(reset_after)s
%(creation)s
%(zoneout)s
%(dropouts)s
%(cell_weight_dropout)s
%(layer_norm)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> cell = fastrnn.GRUCell(4, 8, seed=0).eval()   # inference: the fast path
    >>> h = cell(np.ones(4))                          # unbatched x (I,)
    >>> h.shape
    (8,)
    """

    _stack_type = GRU

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 reset_after: bool = True, dtype: DTypeLike = np.float32,
                 seed: Optional[int] = None, backend: str = "c", zoneout: float = 0.0,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 weight_dropout: float = 0.0, layer_norm: bool = False) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size, bias=bias,
                         dtype=dtype, seed=seed, backend=backend, reset_after=reset_after,
                         zoneout=zoneout, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, weight_dropout=weight_dropout,
                         layer_norm=layer_norm)

    reset_after = _stack_property("reset_after", "Whether the reset gate applies after "
                                                 "the recurrent product (PyTorch's form).")


@_doc
class IndRNNCell(_HiddenStateCell):
    """One IndRNN step: h' = act(x W_ih^T + b_ih + u * h + b_hh), act relu or tanh.

    Li et al. 2018 (see IndRNN): u (``weight_hh``, (H,)) multiplies h
    elementwise. The parameters and their initialisation are IndRNN's
    (``weight_hh`` U(0, 1), the rest U(-1/sqrt(H), 1/sqrt(H))), under the
    cell names ``weight_ih`` (H, I), ``weight_hh`` (H,), ``bias_ih``,
    ``bias_hh`` (H,).

    Parameters
    ----------
%(sizes)s
%(bias)s
%(indrnn_nonlinearity)s
    dtype : float32 or float64, default float32
        The dtype of the parameters and of every output; inputs are converted
        to it.
    seed : int, optional
        Seeds the initialisation and the dropout masks.
    backend : {"c", "numpy"}, default "c"
        The compiled kernels, or the NumPy reference (fastrnn.reference);
        may be changed at any time.
%(zoneout)s
%(indrnn_dropouts)s
%(cell_weight_dropout)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> cell = fastrnn.IndRNNCell(4, 8, seed=0)
    >>> h = cell(np.ones((3, 4)))                 # x (B, I), h None: zeros
    >>> h = cell(np.ones((3, 4)), h)
    >>> dx, dh = cell.backward(np.ones_like(h))
    >>> h.shape, dh.shape, cell.weight_hh.shape, cell.grads["weight_hh"].shape
    ((3, 8), (3, 8), (8,), (8,))
    """

    _stack_type = IndRNN

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "relu", dtype: DTypeLike = np.float32,
                 seed: Optional[int] = None, backend: str = "c", zoneout: float = 0.0,
                 input_dropout: float = 0.0, weight_dropout: float = 0.0) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size, bias=bias,
                         dtype=dtype, seed=seed, backend=backend, nonlinearity=nonlinearity,
                         zoneout=zoneout, input_dropout=input_dropout,
                         weight_dropout=weight_dropout)

    nonlinearity = _stack_property("nonlinearity", '"relu" or "tanh".')


@_doc
class LSTMCell(_CellBase):
    """One LSTM step: (h, c) -> (h', c'), gates i, f, g, o.

    PyTorch's torch.nn.LSTMCell: the same arguments, parameter names and results.

    Parameters
    ----------
%(sizes)s
%(bias)s
%(creation)s
%(zoneout)s
%(cell_zoneout)s
%(dropouts)s
%(cell_weight_dropout)s
%(layer_norm)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> cell = fastrnn.LSTMCell(4, 8, seed=0)
    >>> h, c = cell(np.ones((3, 4)))              # state None: zeros
    >>> h, c = cell(np.ones((3, 4)), (h, c))
    >>> dx, (dh, dc) = cell.backward((np.ones_like(h), None))
    >>> dx.shape, dh.shape, cell.grads["weight_hh"].shape
    ((3, 4), (3, 8), (32, 8))
    """

    _stack_type = LSTM
    cell_zoneout = _stack_property("cell_zoneout", "Zoneout's probability on c (0: none).")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None,
                 backend: str = "c", zoneout: float = 0.0, cell_zoneout: float = 0.0,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 weight_dropout: float = 0.0, layer_norm: bool = False) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size, bias=bias,
                         dtype=dtype, seed=seed, backend=backend, zoneout=zoneout,
                         cell_zoneout=cell_zoneout, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, weight_dropout=weight_dropout,
                         layer_norm=layer_norm)

    def __call__(self, x: ArrayLike,
                 state: Optional[Tuple[Optional[ArrayLike], Optional[ArrayLike]]] = None,
                 training: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
        """One step.

        Parameters
        ----------
        x : array_like
            (B, I), or (I,) unbatched.
        state : (h, c), optional
            Each (B, H), or (H,) unbatched; None, or None for either: zeros.
        training : bool, optional
            Keep what backward needs; None: the cell's mode. Inference steps
            on the "c" backend take the fast path.

        Returns
        -------
        (h', c') : tuple of ndarray
            The next state, each shaped as h.

        Raises
        ------
        ValueError, TypeError
            For an argument of the wrong shape or type, naming it.
        """
        layer = self._layer
        if (self._fast_kind is not None and type(layer._backend) is CBackend
                and not (layer.training if training is None else training)):
            if state is None:
                return _infer(self, layer, x, None, None)
            h, c = state if type(state) is tuple and len(state) == 2 else _pair("state", state)
            return _infer(self, layer, x, h, c)
        x, unbatched = self._step_input(x)
        h, c = _pair("state", state)
        B = x.shape[1]
        state3 = (self._step_state("h", h, B, unbatched), self._step_state("c", c, B, unbatched))
        _, (h_n, c_n) = self._layer(x, state3, training=training)
        self._unbatched = unbatched   # the call succeeded: backward's shapes
        return self._squeeze(h_n), self._squeeze(c_n)

    def backward(self, d_state: Tuple[Optional[ArrayLike], Optional[ArrayLike]],
                 tape: Optional[Tape] = None, retain_graph: bool = False
                 ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Backpropagate through the last training call (or the one ``tape`` recorded).

        Parameter gradients accumulate into ``grads``. The last training call
        is the calling thread's own: threads sharing the cell each
        differentiate their own call.

        A call is differentiated once, as in PyTorch: a second backward of it
        raises, unless the backward before passed ``retain_graph=True``.

        Parameters
        ----------
        d_state : (d_h, d_c)
            The gradients of the call's h' and c', shaped as they; None for
            either: zeros.
        tape : Tape, optional
            A ``cell.tape`` taken after an earlier training call.
        retain_graph : bool, default False
            Keep what the call kept, so that it can be differentiated again.

        Returns
        -------
        dx : ndarray
            The gradient of x, shaped as it.
        (dh, dc) : tuple of ndarray
            The gradients of h and c, shaped as they.

        Raises
        ------
        ValueError
            When there is no training call to differentiate, it was
            differentiated already, or a gradient has the wrong shape.
        TypeError
            When d_state is not a pair.
        """
        d_h, d_c = _pair("d_state", d_state)
        dx, (dh, dc) = self._layer.backward(
            None, (self._grad_state("d_h", d_h, tape), self._grad_state("d_c", d_c, tape)),
            tape=tape, retain_graph=retain_graph)
        return self._squeeze(dx), (self._squeeze(dh), self._squeeze(dc))
