"""RNN, LSTM and GRU: stacks of recurrent layers, as PyTorch's torch.nn.RNN/LSTM/GRU;
and IndRNN (Li et al. 2018), which PyTorch does not have, in the same conventions.

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
lock (it owns its workspace), and so are load_state_dict, state_dict and
zero_grad. The record a training call keeps for backward is the calling
thread's own (``_per_thread``): ``backward()`` differentiates the last
training forward of the thread that calls it, whatever other threads ran in
between, so threads may share one model, each running forward then backward.
In-place updates of the live parameter arrays (an optimizer's) are the
caller's to order with calls in other threads.

Results are bitwise reproducible at one ``fastrnn.set_num_threads`` count;
across counts every tensor (outputs, states, dx, dh0, grads; float32 and
float64) may differ by rounding, within 32 * eps * its largest magnitude
(tests/test_thread_count.py says why and checks it).

Parameters as attributes: ``layer.weight_ih_l0`` is the live array the kernels
read, and ``layer.weight_ih_l0 = w`` copies ``w`` into it (see
``_ParameterAttributes``).

The Bidirectional wrapper is in fastrnn.bidirectional, the one-step cells in
fastrnn.cells, the argument checks in fastrnn._validation.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastrnn._archive import Saveable, class_config
from fastrnn._backend import BACKENDS
from fastrnn._validation import (ARRAY_OVERHEAD, DIRECTION_KEYS, INT_MAX, Activations,
                                 CheckedActivations, _activations, _as_array, _c_array,
                                 _check_bias, _check_choice, _check_clip, _check_dropout,
                                 _check_flag, _check_lstm_options, _check_memory,
                                 _check_nonlinearity, _check_positive_int, _check_proj_size,
                                 _check_rate, _check_seed, _direction, _dtype, _layer_activations, _lengths,
                                 _numbers, _pair, _state_array)
from fastrnn.kinds import ELEMENTWISE, NUM_GATES

_T = TypeVar("_T")
_Stack = TypeVar("_Stack", bound="_RNNBase")

# the constructor arguments a repr shows for the kinds that are not the
# class's default (the cells' reprs say the same)
_KIND_ARGUMENTS = {"rnn_relu": ", nonlinearity='relu'", "gru_reset_before": ", reset_after=False",
                   "indrnn_tanh": ", nonlinearity='tanh'"}


# ------------------------------------------------------------ documentation

# Descriptions shared by the docstrings of the stacks and the cells, filled in
# by _doc: one text per argument, whatever class takes it.
_DOCS = {
    "sizes": """\
    input_size : int
        I, the features of each input step.
    hidden_size : int
        H, the features of the hidden state.""",
    "stack": """\
    num_layers : int, default 1
        Stacked layers; each layer after the first reads the output of the one
        before.""",
    "bias": """\
    bias : bool, default True
        Whether there are biases ``b_ih`` and ``b_hh``.""",
    "layout": """\
    batch_first : bool, default False
        ``x`` and ``output`` are (B, T, .) instead of (T, B, .); states are not
        affected.
    dropout : float in [0, 1), default 0.0
        Dropout on the output of every layer but the last, in training only.
    bidirectional : bool, default False
        Also run each layer right to left (D = 2); the same as
        ``direction="bidirectional"``.""",
    "zoneout": """\
    zoneout : float in [0, 1), default 0.0
        Zoneout on h (Krueger et al. 2016, as haste has it): in training each
        unit of h keeps its previous value with probability ``zoneout``, per
        unit, step and batch row (h_t = m * h_{t-1} + (1 - m) * h_new, m ~
        Bernoulli(zoneout)), the masks drawn from the layer's seeded
        generator; in inference, the expectation h_t = zoneout * h_{t-1} +
        (1 - zoneout) * h_new. Every layer and direction.""",
    "cell_zoneout": """\
    cell_zoneout : float in [0, 1), default 0.0
        Zoneout on the cell state c, with its own probability (the paper's
        LSTMs zone out c and h at different rates, e.g. 0.5 and 0.05): c_t =
        m_c * c_{t-1} + (1 - m_c) * c_new, the expectation in inference. The
        new h is computed from the new c before c's zoneout.""",
    "dropouts": """\
    input_dropout : float in [0, 1), default 0.0
        Keras' ``dropout`` (variational dropout, Gal & Ghahramani 2016): in
        training each layer's input is dropped with this rate, one mask per
        sequence (the same at every step) and per gate block, as Keras' LSTM,
        GRU and SimpleRNN do: gate block g's input product is (x * m_g) W_ih_g^T;
        inverted (kept units are scaled by 1 / (1 - p)); drawn from the layer's
        seeded generator. Inference is the plain layer.
    recurrent_dropout : float in [0, 1), default 0.0
        Keras' ``recurrent_dropout``: the same on h_{t-1} in the recurrent
        product of each gate block, (h_{t-1} * m_g) W_hh_g^T, one mask per
        sequence and gate block; h_{t-1} itself (in GRU's z * h_{t-1}, say) is
        not dropped. The GRU with ``reset_after=False`` drops it in its n
        block's (r * (h_{t-1} * m_n)) W_hn^T, as Keras does.""",
    "weight_dropout": """\
    weight_dropout : float in [0, 1), default 0.0
        DropConnect on the recurrent weights (Wan et al. 2013; AWD-LSTM's
        weight-dropped LSTM, Merity et al. 2017): in training each entry of
        every ``weight_hh`` is dropped with this rate, one mask per forward
        call (and layer and direction), the same at every step, inverted
        (kept entries scaled by 1 / (1 - p)); the gradient reaches the kept
        entries only. Inference uses the weights as they are.""",
    "layer_norm": """\
    layer_norm : bool, default False
        Layer normalization (Ba et al. 2016, in the form of haste's
        LayerNormLSTM and LayerNormGRU): each step's input product x W_ih^T and
        recurrent product h W_hh^T are normalized over all their G*H features
        (mean 0, variance 1, 1e-5 added to the variance), scaled by the gains
        ``ln_weight_ih`` and ``ln_weight_hh`` (G*H,) and shifted by the biases
        ``bias_ih`` and ``bias_hh``; the LSTM outputs h = o * tanh(LN(c) *
        ``ln_weight_c`` + ``ln_bias_c``) ((H,) each) and carries c itself. The
        gains start at 1, ``ln_bias_c`` at 0 (it is LN's own shift: there with
        ``bias=False`` too). Not with ``proj_size``, the ONNX options or
        ``reset_after=False``.""",
    "cell_weight_dropout": """\
    weight_dropout : float in [0, 1), default 0.0
        DropConnect on ``weight_hh`` (Wan et al. 2013; AWD-LSTM's weight drop,
        Merity et al. 2017), in training: one mask drawn at the first training
        call and kept, with the dropout masks, until ``reset_dropout_mask()``,
        so that a sequence stepped through the cell sees one mask (as the
        layers' one mask per call); inverted; the gradient reaches the kept
        entries only. Inference uses the weights as they are.""",
    "indrnn_dropouts": """\
    input_dropout : float in [0, 1), default 0.0
        Keras' ``dropout`` (variational dropout, Gal & Ghahramani 2016): in
        training each layer's input is dropped with this rate, one mask per
        sequence (the same at every step), inverted, drawn from the layer's
        seeded generator. Inference is the plain layer. (IndRNN takes no
        ``recurrent_dropout``: its recurrence has no product to drop into.)""",
    "nonlinearity": """\
    nonlinearity : {"tanh", "relu"}, default "tanh"
        The activation of the recurrence.""",
    "indrnn_nonlinearity": """\
    nonlinearity : {"relu", "tanh"}, default "relu"
        The activation of the recurrence (the paper's is relu).""",
    "indrnn_init": """\
    Initialisation: ``weight_ih`` and the biases U(-1/sqrt(H), 1/sqrt(H)) as
    PyTorch's RNN; the recurrent weights ``weight_hh`` (u, (H,)) U(0, 1): with
    ``0 <= u < 1`` no unit's state grows without bound at the start, and each
    unit keeps the sign of its memory (the paper regulates u's range to
    keep gradients over long sequences in bounds; set such values with
    ``load_state_dict``).""",
    "reset_after": """\
    reset_after : bool, default True
        Apply the reset gate after the recurrent product (PyTorch's, Keras'
        default and ONNX ``linear_before_reset=1``), or before it (the original
        GRU, Keras ``reset_after=False``, ONNX's default).""",
    "proj_size": """\
    proj_size : int, default 0
        P: when > 0, h is projected to P features by ``weight_hr`` (PyTorch's
        LSTM projection); h and the output are then P wide, c stays H wide.""",
    "creation": """\
    dtype : float32 or float64, default float32
        The dtype of the parameters and of every output; inputs are converted
        to it.
    seed : int, optional
        Seeds the initialisation, U(-1/sqrt(H), 1/sqrt(H)) as PyTorch's, and
        the dropout masks.
    backend : {"c", "numpy"}, default "c"
        The compiled kernels, or the NumPy reference (fastrnn.reference);
        may be changed at any time.""",
    "onnx": """\
    direction : {"forward", "reverse", "bidirectional"}, optional
        ONNX's direction; "reverse" runs every layer right to left with outputs
        aligned to the input's steps. None: what ``bidirectional`` says.
    stateful : bool, default False
        Carry each call's final state into the next call that is given no
        initial state (Keras' stateful); ``reset_state()`` forgets it.
    activations : list or dict, optional
        ONNX's activations of the cell, in ONNX's order: each a name among
        ``fastrnn.ACTIVATION_DEFAULTS`` (ONNX's CamelCase accepted), (name,
        alpha) or (name, alpha, beta); None: PyTorch's. One list runs in every
        direction; a bidirectional layer also takes ``{"forward": list,
        "reverse": list}``, one per direction (as an ONNX node may have). Kept
        as ``activations``: a tuple of (name, alpha, beta), or that dict of two
        tuples when the directions differ.
    clip : float, optional
        ONNX's clip: gate pre-activations are clipped to [-clip, clip].""",
    "lstm_onnx": """\
    peepholes : bool, default False
        ONNX's peephole weights ``weight_peephole`` (p_i, p_f, p_o, (3*H,)).
    input_forget : bool, default False
        ONNX's input_forget: the input gate is 1 - f (coupled gates).""",
    "raises": """\
    Raises
    ------
    ValueError, TypeError
        For an argument of the wrong type or out of range, naming it.""",
}


def _doc(obj: _T) -> _T:
    """obj with the %(name)s fields of its docstring filled from _DOCS."""
    if obj.__doc__:   # None under python -OO
        obj.__doc__ = obj.__doc__ % _DOCS
    return obj


# ------------------------------------------------------- parameter attributes

class _ParameterAttributes:
    """Parameters as attributes, as torch.nn.Module has them.

    ``m.weight_ih_l0`` is the live array the kernels read (updating it in place
    updates the layer); ``m.weight_ih_l0 = w`` copies ``w`` into it with
    ``load_state_dict``'s checks (the shape; converted to the layer's dtype),
    and a bad value changes nothing.

    Which names exist depends on the instance (num_layers, direction, bias,
    proj_size, peepholes), so they cannot be class properties; instead
    ``__getattr__`` serves these names and nothing else, ``__setattr__``
    intercepts only them, and ``dir()`` lists them. A class using this defines
    ``_parameter_arrays`` and ``load_state_dict``.
    """

    def _parameter_arrays(self) -> Mapping[str, np.ndarray]:
        """The live parameters by name; empty while the object is being built or
        unpickled (so read from __dict__: __getattr__ must not recurse)."""
        raise NotImplementedError

    def __getattr__(self, name: str) -> np.ndarray:
        params = self._parameter_arrays()
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        params = self._parameter_arrays()
        if name in params:
            # layer.weight_hh_l0 = w copies into the parameter the kernels read
            self.load_state_dict({**params, name: value})
        else:
            object.__setattr__(self, name, value)

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._parameter_arrays()))


def _stack_property(name: str, doc: str, settable: bool = False) -> property:
    """A property of a _StackWrapper that is the attribute ``name`` of the stack
    it wraps; settable ones set it there."""

    def get(self) -> Any:
        return getattr(self._stack, name)

    def set_(self, value: Any) -> None:
        setattr(self._stack, name, value)

    return property(get, set_ if settable else None, doc=doc)


class _Records(threading.local):
    """An object's ``_per_thread`` values as the calling thread sees them. A
    name the thread has not set reads its default, a class attribute: reading
    then costs an attribute lookup, not a caught AttributeError (1 us)."""


def _per_thread(name: str, default: Any = None, doc: Optional[str] = None) -> property:
    """An attribute whose value is the calling thread's own (threading.local):
    what one thread sets, other threads do not see; a thread that has set
    nothing reads ``default``. The values live in the object's ``_records``
    (a _Records), made on first use; replacing or deleting ``_records``
    forgets every thread's value, and pickling must drop it (a threading.local
    does not pickle). Used for what a call keeps for backward, so that threads
    sharing an object each differentiate their own call."""
    assert getattr(_Records, name, default) is default, f"{name}: two defaults"
    setattr(_Records, name, default)

    def get(self) -> Any:
        records = self.__dict__.get("_records")
        return default if records is None else getattr(records, name)

    def set_(self, value: Any) -> None:
        # dict.setdefault is atomic: two threads' first uses make one _records
        setattr(self.__dict__.setdefault("_records", _Records()), name, value)

    return property(get, set_, doc=doc)


class _StackWrapper:
    """What a wrapper of one RNN/LSTM/GRU stack (Bidirectional, the cells) passes
    through to the stack, as properties and methods of its own: the dtype, the
    biases, the mode (``training`` and ``backend``, settable), the tape, and
    train, eval, zero_grad and parameters. A subclass defines ``_stack``."""

    _stack: "_RNNBase"

    dtype = _stack_property("dtype", "float32 or float64: the dtype of the parameters and "
                                     "outputs.")
    bias = _stack_property("bias", "Whether there are biases b_ih and b_hh.")
    training = _stack_property("training", "Training mode: a call keeps what backward needs.",
                               settable=True)
    backend = _stack_property("backend", '"c" (compiled kernels) or "numpy" (the reference); '
                                         'may be changed any time.', settable=True)
    tape = _stack_property("tape", "What the last training call kept for backward (see "
                                   "RNN.tape), or None.")

    def train(self: _T, mode: bool = True) -> _T:
        """Set the wrapped layer's mode (``RNN.train``): training, the default,
        keeps what backward needs.

        Parameters
        ----------
        mode : bool, default True
            True or False (``eval()``); anything else raises TypeError.

        Returns
        -------
        The wrapper itself.
        """
        self._stack.train(mode)
        return self

    def eval(self: _T) -> _T:
        """Set inference mode: calls keep nothing and are faster. Returns the wrapper."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Clear the accumulated parameter gradients."""
        self._stack.zero_grad()

    def parameters(self) -> List[np.ndarray]:
        """The live parameter arrays (update them in place), in state_dict order."""
        return self._stack.parameters()


# ------------------------------------------------------------------ stack

class _RNNBase(_ParameterAttributes, Saveable):
    """Shared machinery of RNN, LSTM and GRU (a stack of layer-directions).

    ``cell`` is a kind of fastrnn.kinds.CELLS; the other arguments are the
    public constructors', passed by keyword.
    """

    # what the calling thread's last training forward kept for backward (None
    # after its inference calls); per thread, so that threads sharing the
    # layer each differentiate their own forward
    _saved = _per_thread("saved")
    # odd while load_state_dict copies (under the lock), +2 per load: the cells'
    # lock-free fast path checks it did not overlap a load (cells._infer)
    _param_version = 0
    # zoneout's probabilities (class defaults: layers pickled before they existed)
    zoneout = 0.0
    cell_zoneout = 0.0
    input_dropout = 0.0
    recurrent_dropout = 0.0
    weight_dropout = 0.0
    layer_norm = False
    # a cell's layer keeps its dropout masks from call to call (one step each)
    # until the cell's reset_dropout_mask(), as Keras' cells do: per thread
    _keeps_dropout = False
    _kept_dropout = _per_thread("kept_dropout")
    _kept_weight_mask = _per_thread("kept_weight_mask")

    def __init__(self, cell: str, *, input_size: int, hidden_size: int, num_layers: int,
                 bias: bool, batch_first: bool, dropout: float, bidirectional: bool,
                 dtype: DTypeLike, seed: Optional[int], backend: str,
                 direction: Optional[str], stateful: bool, activations: Activations,
                 clip: Optional[float], proj_size: int = 0, peepholes: bool = False,
                 input_forget: bool = False, zoneout: float = 0.0,
                 cell_zoneout: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_dropout: float = 0.0,
                 layer_norm: bool = False) -> None:
        G = NUM_GATES[cell]
        self.input_size = _check_positive_int("input_size", input_size, INT_MAX,
                                              "the kernels' sizes are 32-bit C ints")
        # the gate rows G*H and both directions' outputs 2*H are C ints too
        self.hidden_size = _check_positive_int("hidden_size", hidden_size, INT_MAX // max(G, 2),
                                               f"{max(G, 2)}*hidden_size must fit the kernels' "
                                               f"32-bit C ints")
        self.proj_size = _check_proj_size(proj_size, self.hidden_size)
        self.num_layers = _check_positive_int("num_layers", num_layers)
        self.dropout = _check_dropout(dropout)
        self.zoneout = _check_rate("zoneout", zoneout)
        self.cell_zoneout = _check_rate("cell_zoneout", cell_zoneout)
        if self.cell_zoneout and cell != "lstm":
            raise ValueError(f"cell_zoneout: the cell state is LSTM's, got cell {cell!r}")
        self.input_dropout = _check_rate("input_dropout", input_dropout)
        self.recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        self.weight_dropout = _check_rate("weight_dropout", weight_dropout)
        self.bias = _check_bias(bias)
        self._cell = cell
        self.batch_first = bool(batch_first)
        self.direction = _direction(direction, bidirectional)
        self.bidirectional = self.direction == "bidirectional"
        self.dtype = _dtype(dtype)
        self.training = True
        self.stateful = bool(stateful)
        self.activations = _layer_activations(cell, activations, self.direction)
        self.clip = _check_clip(clip)
        self.peepholes, self.input_forget = bool(peepholes), bool(input_forget)
        _check_lstm_options(cell, self.peepholes, self.input_forget)
        # each direction's options of the kernels' general cells (ONNX's), in
        # state order; None for PyTorch's cells
        shared = self.clip is not None or self.peepholes or self.input_forget
        self._cell_options = tuple(
            (acts, self.clip, self.input_forget)
            if shared or acts != _activations(cell, None) else None
            for acts in self._direction_activations())
        self.layer_norm = _check_flag("layer_norm", layer_norm)
        if self.layer_norm and (cell not in ("lstm", "gru") or self.proj_size
                                or any(self._cell_options)):
            what = ("reset_after=False" if cell == "gru_reset_before" else
                    "proj_size" if self.proj_size else
                    "the ONNX options" if any(self._cell_options) else f"cell {cell!r}")
            raise ValueError(f"layer_norm: layer normalization is for the LSTM and the GRU "
                             f"(reset_after=True), without proj_size or the ONNX options; "
                             f"got {what}")
        self._kept_state: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None
        self.backend = backend
        self._rng = _check_seed(seed)
        self._lock = threading.Lock()
        self._saved: Optional[dict] = None
        self._check_parameter_memory()   # before the first parameter is allocated

        H, R = self.hidden_size, self._width
        bound = 1.0 / np.sqrt(H)
        self._params: Dict[str, np.ndarray] = {}
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.num_directions * R
            for suffix, _ in self._directions():
                shapes = {"weight_ih": (G * H, layer_input),
                          "weight_hh": (H,) if cell in ELEMENTWISE else (G * H, R)}
                if self.bias:
                    shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
                if self.proj_size:
                    shapes.update(weight_hr=(R, H))
                if self.peepholes:
                    shapes.update(weight_peephole=(3 * H,))   # p_i, p_f, p_o
                for stem, shape in shapes.items():
                    # IndRNN's u: U(0, 1) (see IndRNN); everything else as PyTorch's
                    low, high = (0.0, 1.0) if stem == "weight_hh" and cell in ELEMENTWISE \
                        else (-bound, bound)
                    self._params[f"{stem}_l{layer}{suffix}"] = self._rng.uniform(
                        low, high, shape).astype(self.dtype)
                if self.layer_norm:   # gains 1 and shift 0: no draw
                    key = f"l{layer}{suffix}"
                    self._params[f"ln_weight_ih_{key}"] = np.ones(G * H, self.dtype)
                    self._params[f"ln_weight_hh_{key}"] = np.ones(G * H, self.dtype)
                    if cell == "lstm":
                        self._params[f"ln_weight_c_{key}"] = np.ones(H, self.dtype)
                        self._params[f"ln_bias_c_{key}"] = np.zeros(H, self.dtype)
        self.grads: Dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self._params.items()}

    # -- configuration

    def _parameter_bytes(self, input_size: int, hidden_size: int, num_layers: int) -> int:
        """Bytes the parameters and their gradients of this configuration with
        these sizes take, with the arrays' overhead and the float64 draw of the
        largest one at initialisation (Python ints: no overflow)."""
        G, I, H, L, D = NUM_GATES[self._cell], input_size, hidden_size, num_layers, \
            self.num_directions
        P = min(self.proj_size, H - 1)
        R = P or H
        recurrent = H if self._cell in ELEMENTWISE else G * H * R
        lstm = self._cell == "lstm"
        per_direction = recurrent + 2 * G * H * self.bias + P * H + 3 * H * self.peepholes \
            + (2 * G * H + 2 * H * lstm) * self.layer_norm
        elements = D * (L * per_direction + G * H * (I + (L - 1) * D * R))
        arrays = D * L * (2 + 2 * self.bias + bool(P) + self.peepholes
                          + (2 + 2 * lstm) * self.layer_norm)
        largest = G * H * max(I, D * R if L > 1 else 0, R)
        return 2 * (elements * self.dtype.itemsize + arrays * ARRAY_OVERHEAD) + 8 * largest

    def _check_parameter_memory(self) -> None:
        """MemoryError when the parameters and their gradients would need more
        than this process can be given (see fastrnn._validation._memory_limit),
        naming the size argument whose reduction to 1 would save the most."""
        sizes = {"input_size": self.input_size, "hidden_size": self.hidden_size,
                 "num_layers": self.num_layers}
        nbytes = self._parameter_bytes(**sizes)
        culprit = min(sizes, key=lambda name: self._parameter_bytes(**{**sizes, name: 1}))
        config = ", ".join(f"{k}={v}" for k, v in sizes.items())
        if self.num_directions > 1:
            config += ", bidirectional"
        if self.proj_size:
            config += f", proj_size={self.proj_size}"
        _check_memory(culprit, nbytes, f"{culprit}={sizes[culprit]} ({config}, "
                                       f"{self.dtype.name}): the parameters and their gradients")

    def _check_call_size(self, T: int, B: int, training: bool, converts: bool) -> None:
        """ValueError when x makes a matrix beyond the C kernels' 32-bit sizes;
        MemoryError when the call would allocate more than this process can be
        given. A training call counts its backward too, so that a backward never
        runs out of memory after its forward was accepted. Both name x."""
        G, H, R, D, L, I = (NUM_GATES[self._cell], self.hidden_size, self._width,
                            self.num_directions, self.num_layers, self.input_size)
        rows, W, GH = T * B, D * R, G * H
        widest = max(I, W, GH)
        if self._backend.name == "c" and rows * widest > INT_MAX:
            raise ValueError(f"x: T*B = {T}*{B} rows of up to {widest} columns make matrices "
                             f"of {rows * widest} elements, beyond the C kernels' 32-bit "
                             f"sizes ({INT_MAX}); split the sequence into chunks (truncated "
                             f"BPTT, see Tape) or the batch")
        n = rows * I * converts + D * GH * (I + R)         # x as the layer's dtype, packed weights
        if training:
            n += rows * I                                    # the x backward reads
            n += L * rows * W * (2 if self.dropout and L > 1 else 1)   # outputs (and masks)
            n += L * D * rows * (GH + R + 2 * H)             # the caches: gates, states, c or n
            n += rows * (GH + H + self.proj_size + 2 * max(I, W) + W)  # backward: dP, dx, dy
            if self.layer_norm:   # the normalized products and c, their rstd; backward's dPh
                n += L * D * rows * (2 * GH + H + 3) + rows * GH
        else:
            n += 2 * rows * W + B * GH * min(T, 64)          # two layers' outputs, the workspace
        _check_memory("x", n * self.dtype.itemsize,
                      f"a {'training' if training else 'inference'} call on x of T={T}, B={B} "
                      f"(outputs{', training caches of T*B*G*H and more' if training else ''})")

    @property
    def _width(self) -> int:
        """Width of h: proj_size when the LSTM projects, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def num_directions(self) -> int:
        """D: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def backend(self) -> str:
        """"c" (compiled kernels) or "numpy" (the reference); may be changed any time."""
        return self._backend.name

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = BACKENDS[_check_choice("backend", name, sorted(BACKENDS))]()
        self._records = _Records()   # forgets every thread's record (the old backend's)

    def _direction_activations(self) -> Tuple[CheckedActivations, ...]:
        """Each direction's activations ((name, alpha, beta), ...), in state order."""
        if isinstance(self.activations, dict):
            return tuple(self.activations[key] for key in DIRECTION_KEYS)
        return (self.activations,) * self.num_directions

    def _directions(self) -> Tuple[Tuple[str, bool], ...]:
        """(parameter-name suffix, runs reversed) of each direction, in state order."""
        if self.bidirectional:
            return (("", False), ("_reverse", True))
        return (("", self.direction == "reverse"),)

    def train(self: _Stack, mode: bool = True) -> _Stack:
        """Set training mode (the default): forward keeps what backward needs.

        Parameters
        ----------
        mode : bool, default True
            False is ``eval()``.

        Returns
        -------
        The layer itself.

        Raises
        ------
        TypeError
            When mode is not True or False (as PyTorch's Module.train).
        """
        self.training = _check_flag("mode", mode)
        return self

    def eval(self: _Stack) -> _Stack:
        """Set inference mode: forward keeps nothing and is faster. Returns the layer."""
        return self.train(False)

    @property
    def tape(self) -> Optional["Tape"]:
        """What the calling thread's last training forward kept for backward, as an
        object of its own (None after an inference forward; each thread has its
        own). ``backward(..., tape=t)`` differentiates that forward, in any
        thread, so truncated BPTT over several calls keeps one tape per call
        and runs backward in reverse, passing each call's dh0 as the d_h_n of the
        call before. A tape holds the forward's cache until dropped, or until
        its backward (a forward is differentiated once, unless that backward
        passes ``retain_graph=True``)."""
        return None if self._saved is None else Tape(self, self._saved)

    def reset_state(self) -> None:
        """Forget the state a stateful layer carries into its next call."""
        self._kept_state = None

    def __repr__(self) -> str:
        extra = _KIND_ARGUMENTS.get(self._cell, "")
        if self.proj_size:
            extra += f", proj_size={self.proj_size}"
        if any(self._cell_options):
            acts = self.activations
            extra += f", activations={list(acts) if isinstance(acts, tuple) else acts}"
            for name in ("clip", "peepholes", "input_forget"):
                if getattr(self, name):
                    extra += f", {name}={getattr(self, name)!r}"
        if self.stateful:
            extra += ", stateful=True"
        for name in ("zoneout", "cell_zoneout", "input_dropout", "recurrent_dropout",
                     "weight_dropout", "layer_norm"):
            if getattr(self, name):
                extra += f", {name}={getattr(self, name)!r}"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, "
                f"direction={self.direction!r}, dtype={self.dtype.name}, "
                f"backend={self.backend!r})")

    def _save_config(self) -> Tuple[Dict[str, Any], "_RNNBase"]:
        return class_config(self, (RNN, LSTM, GRU, IndRNN)), self

    # -- copying and pickling: the lock, the workspace and the state kept for
    # backward belong to one object and are made anew

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for transient in ("_lock", "_records", "_backend"):
            state.pop(transient, None)
        state["_backend_name"] = self._backend.name
        return state

    def __setstate__(self, state: dict) -> None:
        backend = state.pop("_backend_name")
        if "_options" in state:   # pickled before options were per direction
            state["_cell_options"] = (state.pop("_options"),) * (1 + state["bidirectional"])
        # Pickled with out-of-band buffers (protocol 5: dask, multiprocessing),
        # arrays come back as views of the caller's memory, which may be
        # read-only or at any offset: the kernels need aligned, contiguous,
        # writable parameters and gradients, so such arrays are copied once here.
        for store in ("_params", "grads"):
            if store in state:
                state[store] = {k: np.require(v, requirements="CAW")
                                for k, v in state[store].items()}
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.backend = backend            # also forgets the records (_saved)

    # -- parameters

    def _parameter_arrays(self) -> Mapping[str, np.ndarray]:
        return self.__dict__.get("_params", {})

    def parameters(self) -> List[np.ndarray]:
        """The live parameter arrays (update them in place), in state_dict order."""
        return list(self._params.values())

    def named_parameters(self) -> List[Tuple[str, np.ndarray]]:
        """(name, live array) of every parameter, in state_dict order."""
        return list(self._params.items())

    def state_dict(self) -> Dict[str, np.ndarray]:
        """A copy of the parameters under PyTorch's names and shapes.

        Taken under the layer's lock: one whole parameter set, also while
        another thread runs load_state_dict.

        Returns
        -------
        dict of str to ndarray
            ``weight_ih_l{k}`` (G*H, I or D*R), ``weight_hh_l{k}`` (G*H, R)
            (IndRNN: (H,)),
            ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (G*H,) with bias,
            ``weight_hr_l{k}`` (P, H) with proj_size, ``weight_peephole_l{k}``
            (3*H,) with peepholes, ``ln_weight_ih_l{k}`` and ``ln_weight_hh_l{k}``
            (G*H,), and for the LSTM ``ln_weight_c_l{k}`` and ``ln_bias_c_l{k}``
            (H,), with layer_norm; ``_reverse`` names for the reverse
            direction of a bidirectional layer. G is 1, 4 or 3 (RNN, LSTM,
            GRU), R is proj_size or H.
        """
        with self._lock:
            return {k: v.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Load parameters by PyTorch name; every entry must be present with its shape.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Every name of ``state_dict()``, nothing else, each with its shape;
            values are converted to the layer's dtype. A PyTorch module's
            ``{k: v.detach().numpy() for k, v in module.state_dict().items()}``
            loads as is. A one-layer layer that is not bidirectional also
            takes its cell's names (``weight_ih``, ``weight_hh``, ``bias_ih``,
            ``bias_hh``): a cell's ``state_dict()``, or a PyTorch cell's.

        Raises
        ------
        ValueError
            When an entry is missing, unexpected or misshapen (the message
            lists the names expected).
        TypeError
            When state_dict is not a mapping, or an entry is not real numbers.
            Nothing changes when anything is raised.

        Notes
        -----
        The copy is made under the layer's lock: a call running in another
        thread sees all of the old parameters or all of the new ones.
        """
        self._load_state_dict(state_dict, cell_first=False)

    def _cell_names(self) -> Optional[Dict[str, str]]:
        """{cell name: parameter key} (``weight_ih`` -> ``weight_ih_l0``) of a
        one-layer layer that is not bidirectional: the names its cell uses; None
        for other layers."""
        if self.num_layers != 1 or self.bidirectional:
            return None
        return {key[:-len("_l0")]: key for key in self._params}

    def _load_state_dict(self, state_dict: Mapping[str, ArrayLike], cell_first: bool) -> None:
        """load_state_dict under the layer's names or its cell's (see _cell_names),
        whichever state_dict uses; when it uses neither, the messages speak of
        the cell's names if cell_first (a cell's load_state_dict), else the layer's."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        own = {key: key for key in self._params}
        cell = self._cell_names()
        choices = [own] if cell is None else [cell, own] if cell_first else [own, cell]
        names = next((c for c in choices if any(k in c for k in state_dict)), choices[0])
        missing = [k for k in names if k not in state_dict]
        unexpected = [k for k in state_dict if k not in names]
        if missing or unexpected:
            other = [list(c) for c in choices if c is not names]
            also = f" (or the names {other[0]})" if other else ""
            got = [f"missing {missing}"] * bool(missing) + [f"unexpected {unexpected}"] * \
                bool(unexpected)
            raise ValueError(f"state_dict: expected the names {list(names)}{also}, got "
                             f"{' and '.join(got)}")
        loaded = {}
        for name, k in names.items():
            arr = _as_array(f"state_dict[{name!r}]", state_dict[name], self.dtype)
            if arr.shape != self._params[k].shape:
                raise ValueError(f"state_dict[{name!r}]: expected shape "
                                 f"{self._params[k].shape}, got {arr.shape}")
            loaded[k] = arr
        with self._lock:
            self._param_version += 1
            try:
                for k, arr in loaded.items():
                    self._params[k][...] = arr
            finally:
                self._param_version += 1

    def zero_grad(self) -> None:
        """Clear the accumulated parameter gradients (``grads``), under the layer's
        lock: a backward running in another thread adds its gradients wholly
        before or wholly after."""
        with self._lock:
            for g in self.grads.values():
                g.fill(0)

    def _weights(self, layer: int, suffix: str, store: Dict[str, np.ndarray]):
        """(w_ih, w_hh, b_ih, b_hh, w_hr, peep, ln) of one layer-direction from
        store (the parameters or their gradients), as the backends take them."""
        key = f"l{layer}{suffix}"
        ln = None
        if self.layer_norm:
            ln = (store[f"ln_weight_ih_{key}"], store[f"ln_weight_hh_{key}"],
                  store.get(f"ln_weight_c_{key}"), store.get(f"ln_bias_c_{key}"))
        return (store[f"weight_ih_{key}"], store[f"weight_hh_{key}"],
                store.get(f"bias_ih_{key}"), store.get(f"bias_hh_{key}"),
                store.get(f"weight_hr_{key}"), store.get(f"weight_peephole_{key}"), ln)

    # -- forward

    def _input(self, x: ArrayLike, training: bool = False) -> Tuple[np.ndarray, bool, bool]:
        """x as a 3-D array in the layer's layout, whether it was unbatched, and
        whether it shares memory with the caller's data. Its shape and the size
        of the call (see _check_call_size) are checked before x is converted."""
        ready = (type(x) is np.ndarray and x.dtype == self.dtype and x.flags.c_contiguous
                 and x.flags.aligned)
        # the common case is ready as it is (no conversion, no copy)
        callers = x if ready else _numbers("x", x)
        shape = callers.shape
        if len(shape) not in (2, 3):
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x: expected a 3-D input {layout} or a 2-D unbatched input "
                             f"(T, I), got shape {shape}")
        if shape[-1] != self.input_size:
            raise ValueError(f"x: input has inconsistent input_size: got {shape[-1]} "
                             f"expected {self.input_size}")
        if 0 in shape:
            raise ValueError(f"x: expected a non-empty input, got shape {shape}")
        T, B = (shape[0], 1) if len(shape) == 2 else \
            (shape[1], shape[0]) if self.batch_first else shape[:2]
        self._check_call_size(T, B, training, not ready)
        x = callers if ready else _c_array(callers, self.dtype)
        if x.ndim == 2:
            x, unbatched = x[:, None, :], True   # (T, I) -> (T, 1, I)
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            unbatched = False
        if not x.flags.c_contiguous:   # an unbatched batch-first input, transposed
            x = _c_array(x)
        return x, unbatched, x is callers or np.may_share_memory(x, callers)

    def _state(self, name: str, value: ArrayLike, B: int, unbatched: bool,
               width: Optional[int] = None) -> np.ndarray:
        """A state (D*num_layers, B, width) (width: h's by default; c's is H)."""
        shape = (self.num_layers * self.num_directions, B, width or self._width)
        if value is None:
            return np.zeros(shape, self.dtype)
        pair_hint = self._cell != "lstm"
        if unbatched:
            arr = _state_array(name, value, self.dtype, (shape[0], shape[2]),
                               " for unbatched input", pair_hint)
            return np.ascontiguousarray(arr[:, None, :])
        return _state_array(name, value, self.dtype, shape,
                            f" (D*num_layers, B, "
                            f"{'H' if shape[2] == self.hidden_size else 'proj_size'})", pair_hint)

    def _forward(self, x, h0, c0, lengths, training):
        training = self.training if training is None else _check_flag("training", training)
        x, unbatched, shares = self._input(x, training)
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

        D, R = self.num_directions, self._width
        h_n, c_n = np.empty_like(h0), (np.empty_like(c0) if c0 is not None else None)
        saved = {"layers": [], "unbatched": unbatched, "B": B, "backend": self._backend.name,
                 "differentiated": False}
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
            dirs, dropped = [], []
            for d, (suffix, reverse) in enumerate(self._directions()):
                k = layer * D + d
                weights = self._weights(layer, suffix, self._params)
                keep = self._weight_mask(weights[1]) if training else None
                if keep is not None:
                    # DropConnect: this call's W_hh, masked (the kernels read it)
                    weights = (weights[0], weights[1] * keep) + weights[2:]
                dropped.append(keep)
                hn, cn, s = self._backend.forward(
                    self._cell, layer_in, h0[k], None if c0 is None else c0[k],
                    weights, lengths, y, d * R,
                    self.batch_first, reverse, training, self._cell_options[d],
                    self._zoneout(x.shape[:2], training),
                    self._dropout_masks(B, layer_in.shape[2], training))
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
            saved["layers"].append((dirs, mask, layer_in.shape, dropped))
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

    def _zoneout(self, rows: Tuple[int, int], training: bool) -> Optional[tuple]:
        """The zoneout of one layer-direction call, as the backends take it: None,
        or (mask_h, mask_c, p_h, p_c), the masks (rows + (R,)) and (rows + (H,))
        uint8, 1 where a unit keeps its previous value, drawn in training from
        the layer's generator; None in inference (the expectation)."""
        p_h, p_c = self.zoneout, self.cell_zoneout
        if not (p_h or p_c):
            return None
        if not training:
            return None, None, p_h, p_c
        mask_h = (self._rng.random(rows + (self._width,)) < p_h).view(np.uint8) if p_h else None
        mask_c = (self._rng.random(rows + (self.hidden_size,)) < p_c).view(np.uint8) \
            if p_c else None
        return mask_h, mask_c, p_h, p_c

    def _dropout_masks(self, B: int, I: int, training: bool) -> Optional[tuple]:
        """Keras' dropout of one layer-direction call, as the backends take it: None,
        or in training (mask_x, mask_h, p_x, p_h), the keep-masks (G, B, I) and
        (G, B, R) uint8 (1: kept), one per sequence and gate block, drawn from the
        layer's generator."""
        p_x, p_h = self.input_dropout, self.recurrent_dropout
        if not training or not (p_x or p_h):
            return None
        kept = self._kept_dropout
        if kept is not None and kept[0] == (B, I):
            return kept[1]       # a cell's masks, kept until reset_dropout_mask()
        G = NUM_GATES[self._cell]
        mask_x = (self._rng.random((G, B, I)) >= p_x).view(np.uint8) if p_x else None
        mask_h = (self._rng.random((G, B, self._width)) >= p_h).view(np.uint8) if p_h else None
        if self._keeps_dropout:
            self._kept_dropout = ((B, I), (mask_x, mask_h, p_x, p_h))
        return mask_x, mask_h, p_x, p_h

    def _weight_mask(self, w_hh: np.ndarray) -> Optional[np.ndarray]:
        """DropConnect's mask of one layer-direction's W_hh for one training call:
        0 or 1 / (1 - p) per entry in the layer's dtype, drawn from the layer's
        generator; None without weight_dropout."""
        p = self.weight_dropout
        if not p:
            return None
        kept = self._kept_weight_mask
        if kept is not None:
            return kept          # a cell's mask, kept until reset_dropout_mask()
        keep = self._rng.random(w_hh.shape) >= p
        keep = keep.astype(self.dtype) * self.dtype.type(1 / (1 - p))
        if self._keeps_dropout:
            self._kept_weight_mask = keep
        return keep

    # -- backward

    def _backward(self, d_output, d_h_n, d_c_n, tape: Optional["Tape"] = None,
                  retain_graph: bool = False):
        retain_graph = _check_flag("retain_graph", retain_graph)
        if tape is None:
            saved = self._saved
        elif not isinstance(tape, Tape):
            raise ValueError(f"tape: expected a Tape taken from this layer's .tape, "
                             f"got {type(tape).__name__}")
        elif tape._owner() is not self:
            raise ValueError("tape: expected a Tape taken from this layer's .tape, got one "
                             "of another layer")
        else:
            saved = tape._saved
        if saved is None:
            raise ValueError("backward: no training forward to differentiate; call the layer "
                             "with training=True (the default, or after .train()) first")
        if saved["backend"] != self.backend:
            raise ValueError(f"tape: expected a record of backend {self.backend!r}, got one of "
                             f"{saved['backend']!r} (recorded before the backend changed); run "
                             f"the forward again")
        if saved["differentiated"]:
            # as PyTorch: "Trying to backward through the graph a second time"
            raise ValueError("backward: this forward was differentiated already (its parameter "
                             "gradients are in grads); run the forward again, or pass "
                             "retain_graph=True to a backward that should keep it")
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
            dirs, _, in_shape, dropped = saved["layers"][layer]
            dx = np.empty(in_shape, self.dtype)
            for d, (suffix, _) in enumerate(self._directions()):
                k = layer * D + d
                grads = self._weights(layer, suffix, self.grads)
                keep = dropped[d]
                if keep is not None:   # the gradient of the masked W_hh, apart
                    grads = (grads[0], np.zeros_like(grads[1])) + grads[2:]
                g0, gc0 = self._backend.backward(
                    dirs[d], dy, d * R, None if dh_n is None else dh_n[k],
                    None if dc_n is None else dc_n[k], dx, d > 0, grads)
                if keep is not None:
                    # backprop through W_hh * keep: the kept entries, scaled
                    self.grads[f"weight_hh_l{layer}{suffix}"] += grads[1] * keep
                dh0[k] = g0
                if dc0 is not None:
                    dc0[k] = gc0
            if layer > 0:
                mask = saved["layers"][layer - 1][1]
                if mask is not None:
                    dx *= mask   # backprop through the dropout between layers
            dy = dx
        if not retain_graph:
            # a forward is differentiated once; its caches go back to the backend
            saved["differentiated"], saved["layers"] = True, None
        dx = dy
        if unbatched:
            dx = dx[:, 0] if not self.batch_first else dx[0]
            dh0 = dh0[:, 0]
            dc0 = None if dc0 is None else dc0[:, 0]
        return dx, dh0, dc0


class _HiddenStateStack(_RNNBase):
    """The call and backward of layers whose only state is h (RNN, GRU)."""

    def __call__(self, x: ArrayLike, h0: Optional[ArrayLike] = None,
                 lengths: Optional[ArrayLike] = None,
                 training: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Run the stack over a sequence.

        Parameters
        ----------
        x : array_like
            (T, B, I), or (B, T, I) when batch_first, or (T, I) unbatched.
        h0 : array_like, optional
            Initial state (D*num_layers, B, H), or (D*num_layers, H) unbatched;
            None: zeros (or, stateful, the state the last call left).
        lengths : array_like of int, optional
            (B,): sequence b has lengths[b] valid steps, 0 <= lengths[b] <= T;
            later steps output zeros and leave its state alone (PyTorch's
            packed-sequence result, without packing).
        training : bool, optional
            Keep what backward needs; None: the layer's mode (``train()``,
            ``eval()``).

        Returns
        -------
        output : ndarray
            (T, B, D*H), or (B, T, D*H) when batch_first, or (T, D*H)
            unbatched; the forward direction's half first.
        h_n : ndarray
            Final states (D*num_layers, B, H), layer-major, direction-minor;
            (D*num_layers, H) unbatched.

        Raises
        ------
        ValueError, TypeError
            For an argument of the wrong shape, type or range, naming it.
        """
        with self._lock:
            output, h_n, _ = self._forward(x, h0, None, lengths, training)
        return output, h_n

    def backward(self, d_output: Optional[ArrayLike], d_h_n: Optional[ArrayLike] = None,
                 tape: Optional["Tape"] = None, retain_graph: bool = False
                 ) -> Tuple[np.ndarray, np.ndarray]:
        """Backpropagate through the last training forward (or the one ``tape`` recorded).

        Parameter gradients accumulate into ``grads``. The last training
        forward is the calling thread's own: threads sharing the layer each
        differentiate their own forward, whatever the others ran in between.

        A forward is differentiated once, as in PyTorch: a second backward of
        it raises, unless the backward before passed ``retain_graph=True``.

        Parameters
        ----------
        d_output : array_like or None
            The gradient of the output, with its shape; None: zeros.
        d_h_n : array_like, optional
            The gradient of h_n, with its shape; None: zeros.
        tape : Tape, optional
            A ``layer.tape`` taken after an earlier forward of this layer.
        retain_graph : bool, default False
            Keep what the forward kept, so that it can be differentiated
            again (PyTorch's ``retain_graph``); by default it is released.

        Returns
        -------
        dx : ndarray
            The gradient of x, with x's shape.
        dh0 : ndarray
            The gradient of the initial state (D*num_layers, B, H), also when
            it was the implicit zeros.

        Raises
        ------
        ValueError
            When there is no training forward to differentiate, it was
            differentiated already, ``tape`` is not this layer's or was
            recorded under another backend, or a gradient has the wrong shape.
        TypeError
            When a gradient is not real numbers.

        Examples
        --------
        >>> import numpy as np, fastrnn
        >>> gru = fastrnn.GRU(4, 8, seed=0)
        >>> out, h_n = gru(np.ones((5, 2, 4)))
        >>> dx, dh0 = gru.backward(np.ones_like(out), retain_graph=True)
        >>> dx, dh0 = gru.backward(None, np.ones_like(h_n))   # the same forward, once more
        >>> gru.backward(np.ones_like(out))
        Traceback (most recent call last):
        ...
        ValueError: backward: this forward was differentiated already (its parameter gradients are in grads); run the forward again, or pass retain_graph=True to a backward that should keep it
        """
        with self._lock:
            dx, dh0, _ = self._backward(d_output, d_h_n, None, tape, retain_graph)
        return dx, dh0


@_doc
class RNN(_HiddenStateStack):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu.

    PyTorch's torch.nn.RNN: the same arguments, parameter names and results.

    Parameters
    ----------
%(sizes)s
%(stack)s
%(nonlinearity)s
%(bias)s
%(layout)s
%(creation)s
%(onnx)s
%(zoneout)s
%(dropouts)s
%(weight_dropout)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> rnn = fastrnn.RNN(4, 8, num_layers=2, seed=0)
    >>> output, h_n = rnn(np.zeros((5, 3, 4)))            # x (T, B, I)
    >>> output.shape, h_n.shape
    ((5, 3, 8), (2, 3, 8))
    >>> dx, dh0 = rnn.backward(np.ones_like(output))      # grads accumulate in rnn.grads
    >>> dx.shape, rnn.grads["weight_hh_l1"].shape
    ((5, 3, 4), (8, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None,
                 backend: str = "c", direction: Optional[str] = None, stateful: bool = False,
                 activations: Activations = None, clip: Optional[float] = None,
                 zoneout: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_dropout: float = 0.0) -> None:
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(f"rnn_{nonlinearity}", input_size=input_size, hidden_size=hidden_size,
                         num_layers=num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, dtype=dtype, seed=seed,
                         backend=backend, direction=direction, stateful=stateful,
                         activations=activations, clip=clip, zoneout=zoneout,
                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                         weight_dropout=weight_dropout)


@_doc
class GRU(_HiddenStateStack):
    """GRU, gates r, z, n; reset_after=True is PyTorch's (and Keras' default) form.

    r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr), z likewise,
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)), h' = (1 - z) * n + z * h.
    PyTorch's torch.nn.GRU: the same arguments, parameter names and results.

    Parameters
    ----------
%(sizes)s
%(stack)s
%(bias)s
%(layout)s
%(reset_after)s
%(creation)s
%(onnx)s
%(zoneout)s
%(dropouts)s
%(weight_dropout)s
%(layer_norm)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> gru = fastrnn.GRU(4, 8, batch_first=True, bidirectional=True, seed=0)
    >>> output, h_n = gru(np.zeros((3, 5, 4)))            # x (B, T, I)
    >>> output.shape, h_n.shape
    ((3, 5, 16), (2, 3, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, reset_after: bool = True,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None,
                 backend: str = "c", direction: Optional[str] = None, stateful: bool = False,
                 activations: Activations = None, clip: Optional[float] = None,
                 zoneout: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_dropout: float = 0.0,
                 layer_norm: bool = False) -> None:
        self.reset_after = bool(reset_after)
        super().__init__("gru" if reset_after else "gru_reset_before", input_size=input_size,
                         hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed, backend=backend, direction=direction,
                         stateful=stateful, activations=activations, clip=clip,
                         zoneout=zoneout, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, weight_dropout=weight_dropout,
                         layer_norm=layer_norm)


@_doc
class IndRNN(_HiddenStateStack):
    """Independently recurrent neural network: h_t = act(x_t W_ih^T + b_ih + u * h_{t-1} + b_hh).

    Li, Li, Cook, Zhu and Gao, "Independently Recurrent Neural Network
    (IndRNN): Building A Longer and Deeper RNN", CVPR 2018. The recurrent
    weight u is a vector (H,), one weight per unit, applied elementwise: each
    unit sees only its own past, and units mix through the next layer's
    ``W_ih``. So a step has no matrix product; the input projection of every
    step is one GEMM, and the time loop is a pass over memory.

    The layout and conventions are those of RNN (PyTorch's); the parameters
    are ``weight_ih_l{k}`` (H, I), ``weight_hh_l{k}`` = u (H,) and, with bias,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H,).

%(indrnn_init)s

    Parameters
    ----------
%(sizes)s
%(stack)s
%(indrnn_nonlinearity)s
%(bias)s
%(layout)s
    dtype : float32 or float64, default float32
        The dtype of the parameters and of every output; inputs are converted
        to it.
    seed : int, optional
        Seeds the initialisation and the dropout masks.
    backend : {"c", "numpy"}, default "c"
        The compiled kernels, or the NumPy reference (fastrnn.reference);
        may be changed at any time.
    direction : {"forward", "reverse", "bidirectional"}, optional
        "reverse" runs every layer right to left with outputs aligned to the
        input's steps. None: what ``bidirectional`` says.
    stateful : bool, default False
        Carry each call's final state into the next call that is given no
        initial state; ``reset_state()`` forgets it.
%(zoneout)s
%(indrnn_dropouts)s
%(weight_dropout)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> rnn = fastrnn.IndRNN(4, 8, num_layers=2, seed=0)
    >>> output, h_n = rnn(np.ones((5, 3, 4)))             # x (T, B, I)
    >>> output.shape, h_n.shape, rnn.weight_hh_l0.shape
    ((5, 3, 8), (2, 3, 8), (8,))
    >>> dx, dh0 = rnn.backward(np.ones_like(output))      # grads accumulate in rnn.grads
    >>> dx.shape, rnn.grads["weight_hh_l1"].shape
    ((5, 3, 4), (8,))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "relu", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None,
                 backend: str = "c", direction: Optional[str] = None,
                 stateful: bool = False, zoneout: float = 0.0, input_dropout: float = 0.0,
                 weight_dropout: float = 0.0) -> None:
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(f"indrnn_{nonlinearity}", input_size=input_size,
                         hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed, backend=backend, direction=direction,
                         stateful=stateful, activations=None, clip=None, zoneout=zoneout,
                         input_dropout=input_dropout, weight_dropout=weight_dropout)


@_doc
class LSTM(_RNNBase):
    """LSTM, gates i, f, g, o: c_t = f*c_{t-1} + i*g, h_t = o*tanh(c_t).

    PyTorch's torch.nn.LSTM: the same arguments, parameter names and results;
    the state is the pair (h, c).

    Parameters
    ----------
%(sizes)s
%(stack)s
%(bias)s
%(layout)s
%(proj_size)s
%(creation)s
%(onnx)s
%(lstm_onnx)s
%(zoneout)s
%(cell_zoneout)s
%(dropouts)s
%(weight_dropout)s
%(layer_norm)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> lstm = fastrnn.LSTM(4, 8, proj_size=2, seed=0)
    >>> output, (h_n, c_n) = lstm(np.zeros((5, 3, 4)))
    >>> output.shape, h_n.shape, c_n.shape
    ((5, 3, 2), (1, 3, 2), (1, 3, 8))
    >>> ln = fastrnn.LSTM(4, 8, layer_norm=True, seed=0)   # Ba et al. 2016
    >>> sorted(k for k in ln.state_dict() if k.startswith("ln_"))
    ['ln_bias_c_l0', 'ln_weight_c_l0', 'ln_weight_hh_l0', 'ln_weight_ih_l0']
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None,
                 backend: str = "c", direction: Optional[str] = None, stateful: bool = False,
                 activations: Activations = None, clip: Optional[float] = None,
                 peepholes: bool = False, input_forget: bool = False, zoneout: float = 0.0,
                 cell_zoneout: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, weight_dropout: float = 0.0,
                 layer_norm: bool = False) -> None:
        super().__init__("lstm", input_size=input_size, hidden_size=hidden_size,
                         num_layers=num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, dtype=dtype, seed=seed,
                         backend=backend, direction=direction, stateful=stateful,
                         activations=activations, clip=clip, proj_size=proj_size,
                         peepholes=peepholes, input_forget=input_forget, zoneout=zoneout,
                         cell_zoneout=cell_zoneout, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, weight_dropout=weight_dropout,
                         layer_norm=layer_norm)

    def __call__(self, x: ArrayLike,
                 state: Optional[Tuple[Optional[ArrayLike], Optional[ArrayLike]]] = None,
                 lengths: Optional[ArrayLike] = None, training: Optional[bool] = None
                 ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Run the stack over a sequence.

        Parameters
        ----------
        x : array_like
            (T, B, I), or (B, T, I) when batch_first, or (T, I) unbatched.
        state : (h0, c0), optional
            h0 (D*num_layers, B, R) and c0 (D*num_layers, B, H), without B
            unbatched, R = proj_size or H; None, or None for either: zeros (or,
            stateful, the state the last call left).
        lengths : array_like of int, optional
            (B,): sequence b has lengths[b] valid steps, 0 <= lengths[b] <= T;
            later steps output zeros and leave its state alone.
        training : bool, optional
            Keep what backward needs; None: the layer's mode.

        Returns
        -------
        output : ndarray
            (T, B, D*R), or (B, T, D*R) when batch_first, or (T, D*R)
            unbatched; the forward direction's half first.
        (h_n, c_n) : tuple of ndarray
            Final states (D*num_layers, B, R) and (D*num_layers, B, H),
            layer-major, direction-minor; without B unbatched.

        Raises
        ------
        ValueError, TypeError
            For an argument of the wrong shape, type or range, naming it.
        """
        h0, c0 = _pair("state", state)
        with self._lock:
            output, h_n, c_n = self._forward(x, h0, c0, lengths, training)
        return output, (h_n, c_n)

    def backward(self, d_output: Optional[ArrayLike],
                 d_state: Optional[Tuple[Optional[ArrayLike], Optional[ArrayLike]]] = None,
                 tape: Optional["Tape"] = None, retain_graph: bool = False
                 ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Backpropagate through the last training forward (or the one ``tape`` recorded).

        Parameter gradients accumulate into ``grads``. The last training
        forward is the calling thread's own: threads sharing the layer each
        differentiate their own forward, whatever the others ran in between.

        A forward is differentiated once, as in PyTorch: a second backward of
        it raises, unless the backward before passed ``retain_graph=True``.

        Parameters
        ----------
        d_output : array_like or None
            The gradient of the output, with its shape; None: zeros.
        d_state : (d_h_n, d_c_n), optional
            The gradients of h_n and c_n, with their shapes; None: zeros.
        tape : Tape, optional
            A ``layer.tape`` taken after an earlier forward of this layer.
        retain_graph : bool, default False
            Keep what the forward kept, so that it can be differentiated
            again (PyTorch's ``retain_graph``); by default it is released.

        Returns
        -------
        dx : ndarray
            The gradient of x, with x's shape.
        (dh0, dc0) : tuple of ndarray
            The gradients of the initial states, shaped as h_n and c_n, also
            when they were the implicit zeros.

        Raises
        ------
        ValueError
            When there is no training forward to differentiate, it was
            differentiated already, ``tape`` is not this layer's or was
            recorded under another backend, or a gradient has the wrong shape.
        TypeError
            When d_state is not a pair, or a gradient is not real numbers.

        Examples
        --------
        >>> import numpy as np, fastrnn
        >>> lstm = fastrnn.LSTM(4, 8, seed=0)
        >>> out, (h_n, c_n) = lstm(np.ones((5, 2, 4)))
        >>> dx, (dh0, dc0) = lstm.backward(np.ones_like(out))
        >>> dx.shape, dc0.shape
        ((5, 2, 4), (1, 2, 8))
        """
        d_h_n, d_c_n = _pair("d_state", d_state)
        with self._lock:
            dx, dh0, dc0 = self._backward(d_output, d_h_n, d_c_n, tape, retain_graph)
        return dx, (dh0, dc0)


class Tape:
    """The record of one training forward of one layer (see ``layer.tape``).

    ``layer.backward(..., tape=t)`` differentiates the forward ``t`` recorded,
    whatever ran since: truncated BPTT keeps one tape per chunk and runs
    backward from the last chunk to the first, passing each chunk's dh0 as the
    d_h_n of the chunk before. A tape holds that forward's cache until dropped.
    ``layer.tape`` is the calling thread's last training forward; a tape may
    be passed to backward in any thread.

    A tape is differentiated once: its backward releases the cache, unless
    that backward passes ``retain_graph=True``.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> gru = fastrnn.GRU(4, 8, seed=0)
    >>> _, h = gru(np.ones((5, 2, 4)))
    >>> first = gru.tape
    >>> out, _ = gru(np.ones((5, 2, 4)), h)
    >>> second = gru.tape
    >>> _, dh = gru.backward(np.ones_like(out), tape=second)
    >>> dx, _ = gru.backward(np.ones_like(out), dh, tape=first)
    >>> first
    <fastrnn.Tape of GRU>
    """

    __slots__ = ("_owner", "_saved")

    def __init__(self, owner: _RNNBase, saved: dict) -> None:
        self._owner = weakref.ref(owner)
        self._saved = saved

    def __repr__(self) -> str:
        owner = self._owner()
        return f"<fastrnn.Tape of {type(owner).__name__ if owner else 'a deleted layer'}>"
