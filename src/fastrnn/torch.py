"""fastrnn.torch: PyTorch's recurrent modules running fastrnn's C kernels.

``fastrnn.torch.RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell`` and
``GRUCell`` are subclasses of their ``torch.nn`` namesakes: the same
constructor, parameters (``torch.nn.Parameter`` under torch's names, shapes
and initialisation), ``state_dict``, call signature (``hx`` or ``(h0, c0)``,
``batch_first``, unbatched input, ``PackedSequence`` in and out), return
structure, ``train()``/``eval()`` and ``repr``; only ``forward`` differs. So a
trained torch model takes them in place of its layers and its state_dict
loads as is::

    model.gru = fastrnn.torch.GRU(128, 128, batch_first=True)
    model.load_state_dict(trained.state_dict())

Forward and backward run fastrnn's kernels through a ``torch.autograd.Function``
on NumPy views of the tensors (no copy when a tensor is C-contiguous, which
the parameters and a freshly made batch are); backward returns the gradients
of the input, the initial state and every parameter, so torch.optim, gradient
clipping, hooks and the rest of autograd work as with torch.nn's layers.
Without gradients (``torch.no_grad()``, or nothing requiring them) nothing
is kept for backward. Tensors must be on the CPU, in float32 or float64.

What differs from torch.nn (see docs/torch.rst):

- The kernels run on fastrnn's threads (``fastrnn.set_num_threads``), not
  torch's intra-op pool (``torch.set_num_threads``).
- Results equal torch.nn's within rounding (float32: about 1e-6 relative on
  outputs, 1e-5 on gradients; float64: 1e-12), not bitwise.
- Dropout between layers draws its masks from torch's generator exactly as
  torch.nn does on the CPU (``bernoulli_`` on a tensor of the layer output's
  shape, time-major, or the packed data's shape), so under
  ``torch.manual_seed`` the same masks come out; this follows torch's
  current CPU code and is checked by the tests, not promised by torch.
- Backward is differentiable once (``once_differentiable``): no double
  backward, no ``torch.func`` transforms, no TorchScript or ONNX export of
  these layers (export the torch.nn twin: the state_dicts are the same).
- Argument errors are torch.nn's (the same checks and messages, reused from
  torch's classes) plus fastrnn's own: a non-CPU device raises ValueError,
  a dtype other than float32/float64 TypeError.

Threads: a layer may be called from several Python threads at once (each
thread has its own kernel workspace); the kernels release the GIL.

Examples
--------
>>> import torch, fastrnn.torch
>>> _ = torch.manual_seed(0)
>>> gru = fastrnn.torch.GRU(4, 8, num_layers=2, batch_first=True)
>>> out, h_n = gru(torch.randn(3, 5, 4))
>>> out.shape, h_n.shape
(torch.Size([3, 5, 8]), torch.Size([2, 3, 8]))
>>> twin = torch.nn.GRU(4, 8, num_layers=2, batch_first=True)
>>> twin.load_state_dict(gru.state_dict())
<All keys matched successfully>
"""
from __future__ import annotations

import threading
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import torch   # absolute: the real PyTorch, whatever this module is called
except ModuleNotFoundError as e:
    if e.name != "torch":
        raise
    raise ImportError(
        "fastrnn.torch needs PyTorch, which is not installed: install its CPU build "
        "(pip install torch --index-url https://download.pytorch.org/whl/cpu), or pip "
        "install \"fastrnn[torch]\"; the rest of fastrnn works without it") from e
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from fastrnn._backend import CBackend

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_DTYPES = (torch.float32, torch.float64)
_Input = Union[Tensor, PackedSequence]
_LSTMState = Tuple[Tensor, Tensor]


# ------------------------------------------------------------ checks

def _check_device(device: Any) -> None:
    """ValueError unless device is None or a CPU device (checked before torch
    allocates anything on it)."""
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"device: fastrnn.torch runs on the CPU only, got {device!r}; use "
                         f"torch.nn's layers on other devices (the state_dicts are the same)")


def _check_dtype(dtype: Any) -> None:
    """TypeError unless dtype is None or float32/float64."""
    if dtype is not None and dtype not in _DTYPES:
        raise TypeError(f"dtype: fastrnn.torch supports torch.float32 and torch.float64, "
                        f"got {dtype}")


def _check_tensors(module: torch.nn.Module, weights: Sequence[Optional[Tensor]],
                   named: Sequence[Tuple[str, Optional[Tensor]]]) -> torch.dtype:
    """The parameters' dtype, after checking that the parameters and the
    tensors ``named`` (input, states) are CPU tensors of one dtype among
    float32 and float64."""
    dtype = weights[0].dtype
    if dtype not in _DTYPES:
        raise TypeError(f"{type(module).__name__}: fastrnn.torch runs float32 and float64 "
                        f"parameters, got {dtype}; convert the module (.float() or .double())")
    for name, t in list(zip(module._weight_names(), weights)) + list(named):
        if t is None:
            continue
        if t.device.type != "cpu":
            raise ValueError(f"{name}: fastrnn.torch runs on the CPU only, got a tensor on "
                             f"{t.device}")
        if t.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} (the parameters'), got {t.dtype}")
    return dtype


def _numpy(t: Optional[Tensor]) -> Optional[np.ndarray]:
    """A NumPy view of t's memory (t must be C-contiguous: the caller made it so)."""
    return None if t is None else t.detach().numpy()


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    """t itself when C-contiguous, else a contiguous copy (tracked by autograd)."""
    return None if t is None else t.contiguous()


# ------------------------------------------------------------ the stack

class _Spec(NamedTuple):
    """What one call of the stack needs besides its tensors."""

    cell: str                     # fastrnn's kind: rnn_tanh, rnn_relu, lstm, gru
    num_layers: int               # L
    directions: int               # D
    width: int                    # R: proj_size or H (h's width)
    per_direction: int            # parameters of one layer-direction, in torch's order
    bias: bool
    proj: bool
    batch_first: bool
    dropout: float                # applied between layers (0: none, e.g. in eval mode)
    lengths: Optional[np.ndarray]  # (B,) C ints, valid steps of each sequence (packed input)
    packed_rows: Optional[Tensor]  # (N,) the time-major padded row of each packed row


_local = threading.local()


def _backend() -> CBackend:
    """The calling thread's CBackend: its workspace is then never shared."""
    backend = getattr(_local, "backend", None)
    if backend is None:
        backend = _local.backend = CBackend()
    return backend


def _layer_weights(spec: _Spec, arrays: Sequence[Optional[np.ndarray]], layer: int,
                   direction: int) -> Tuple[Optional[np.ndarray], ...]:
    """(w_ih, w_hh, b_ih, b_hh, w_hr, peep, ln) of one layer-direction, the backend's
    order, from torch's flat order (w_ih, w_hh[, b_ih, b_hh][, w_hr]) of arrays
    (parameters or their gradients)."""
    start = (layer * spec.directions + direction) * spec.per_direction
    group = list(arrays[start:start + spec.per_direction])
    w_ih, w_hh = group[0], group[1]
    b_ih, b_hh = (group[2], group[3]) if spec.bias else (None, None)
    w_hr = group[-1] if spec.proj else None
    return w_ih, w_hh, b_ih, b_hh, w_hr, None, None


def _dropout_mask(spec: _Spec, y: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The inverted-dropout mask of one layer's output y, drawn as torch.nn draws
    it on the CPU (at::dropout: bernoulli_(1 - p) on a tensor of the layer
    output's shape, then / (1 - p)): time-major (T, B, D*R), or the packed
    data's (N, D*R) scattered to the padded rows. Returned in y's layout."""
    p = spec.dropout
    if spec.packed_rows is not None:
        shape = (spec.packed_rows.shape[0], y.shape[2])
    else:
        shape = (y.shape[1], y.shape[0], y.shape[2]) if spec.batch_first else y.shape
    if p >= 1:
        noise = torch.zeros(shape, dtype=dtype)   # torch multiplies by 0 (no draw)
    else:
        noise = torch.empty(shape, dtype=dtype).bernoulli_(1 - p).div_(1 - p)
    if spec.packed_rows is not None:
        T, B, W = y.shape
        padded = torch.zeros((T * B, W), dtype=dtype)
        padded.index_copy_(0, spec.packed_rows, noise)
        return padded.numpy().reshape(T, B, W)
    mask = noise.numpy()
    return mask.transpose(1, 0, 2) if spec.batch_first else mask


class _Record(NamedTuple):
    """What a training forward keeps for backward, as arrays (saved by the
    Function as tensors, so that torch frees them after backward)."""

    inputs: List[np.ndarray]       # each layer's input x (layer 0's is the caller's)
    caches: List[np.ndarray]       # each layer-direction's kernel cache
    masks: List[Optional[np.ndarray]]  # the dropout mask after each layer but the last


def _stack_forward(spec: _Spec, x: np.ndarray, h0: Optional[np.ndarray],
                   c0: Optional[np.ndarray], weights: Sequence[Optional[np.ndarray]],
                   keep: bool, dtype: torch.dtype
                   ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[_Record]]:
    """Run the stack: one kernel call per layer-direction (fastrnn.layers'
    loop, with torch's dropout). x (T, B, I) or (B, T, I); h0 (L*D, B, R) and
    c0 (L*D, B, H) or None for zeros. Returns output, h_n, c_n (None but for
    LSTM) and, when keep, the record backward needs."""
    backend = _backend()
    L, D, R = spec.num_layers, spec.directions, spec.width
    B = x.shape[0] if spec.batch_first else x.shape[1]
    H = weights[1].shape[0] // {"lstm": 4, "gru": 3}.get(spec.cell, 1)
    np_dtype = x.dtype
    lstm = spec.cell == "lstm"
    if h0 is None:
        h0 = np.zeros((L * D, B, R), np_dtype)
    if lstm and c0 is None:
        c0 = np.zeros((L * D, B, H), np_dtype)
    h_n = np.empty((L * D, B, R), np_dtype)
    c_n = np.empty((L * D, B, H), np_dtype) if lstm else None
    record = _Record([], [], []) if keep else None
    layer_in = x
    for layer in range(L):
        y = np.empty(layer_in.shape[:2] + (D * R,), np_dtype)
        for d in range(D):
            k = layer * D + d
            hn, cn, saved = backend.forward(
                spec.cell, layer_in, h0[k], c0[k] if lstm else None,
                _layer_weights(spec, weights, layer, d), spec.lengths, y, d * R,
                spec.batch_first, d == 1, keep)
            h_n[k] = hn
            if lstm:
                c_n[k] = cn
            if keep:
                record.caches.append(saved[1])   # CBackend's record: (cell, cache, ...)
        if keep:
            record.inputs.append(layer_in)
        mask = None
        if spec.dropout > 0 and layer < L - 1:
            mask = _dropout_mask(spec, y, dtype)
            y *= mask
        if keep and layer < L - 1:
            record.masks.append(mask)
        layer_in = y
    return layer_in, h_n, c_n, record


def _stack_backward(spec: _Spec, record: _Record, weights: Sequence[Optional[np.ndarray]],
                    dy: Optional[np.ndarray], dh_n: Optional[np.ndarray],
                    dc_n: Optional[np.ndarray]
                    ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                               List[Optional[np.ndarray]]]:
    """BPTT through the stack (fastrnn.layers' backward loop). dy like the
    output, dh_n, dc_n like h_n, c_n, each None for zeros. Returns dx, dh0,
    dc0 (None but for LSTM) and the gradients of the parameters in torch's
    flat order (None where a parameter is None)."""
    backend = _backend()
    L, D, R = spec.num_layers, spec.directions, spec.width
    x = record.inputs[0]
    B = x.shape[0] if spec.batch_first else x.shape[1]
    H = weights[1].shape[0] // {"lstm": 4, "gru": 3}.get(spec.cell, 1)
    lstm = spec.cell == "lstm"
    grads = [None if w is None else np.zeros_like(w) for w in weights]
    dh0 = np.empty((L * D, B, R), x.dtype)
    dc0 = np.empty((L * D, B, H), x.dtype) if lstm else None
    for layer in reversed(range(L)):
        layer_in = record.inputs[layer]
        dx = np.empty_like(layer_in)
        for d in range(D):
            k = layer * D + d
            w = _layer_weights(spec, weights, layer, d)
            # CBackend.forward's record of this layer-direction, rebuilt (no
            # options, no zoneout, no dropout)
            saved = (spec.cell, record.caches[k], layer_in, w, spec.lengths, spec.batch_first,
                     d == 1, None, None, None)
            g0, gc0 = backend.backward(saved, dy, d * R, None if dh_n is None else dh_n[k],
                                       None if dc_n is None else dc_n[k], dx, d > 0,
                                       _layer_weights(spec, grads, layer, d))
            dh0[k] = g0
            if lstm:
                dc0[k] = gc0
        if layer > 0 and record.masks[layer - 1] is not None:
            dx *= record.masks[layer - 1]   # backprop through the dropout between layers
        dy = dx
    return dy, dh0, dc0, grads


class _StackFunction(torch.autograd.Function):
    """output, h_n[, c_n] = the stack of ``spec`` over x from (h0, c0) with the
    parameters ``weights`` (torch's flat order), differentiable in x, h0, c0
    and every parameter; forward and backward in fastrnn's kernels."""

    @staticmethod
    def forward(ctx: Any, spec: _Spec, dtype: torch.dtype, x: Tensor, h0: Optional[Tensor],
                c0: Optional[Tensor], *weights: Optional[Tensor]) -> Tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)   # unused outputs give None, not zeros
        w = [_numpy(t) for t in weights]
        y, h_n, c_n, record = _stack_forward(spec, _numpy(x), _numpy(h0), _numpy(c0), w,
                                             True, dtype)
        # everything backward reads is saved as tensors: torch checks the
        # inputs' versions and frees the caches after backward
        arrays = record.inputs[1:] + record.caches + [m for m in record.masks if m is not None]
        ctx.spec = spec
        ctx.counts = (len(weights), len(record.inputs) - 1, len(record.caches),
                      [m is not None for m in record.masks])
        ctx.save_for_backward(x, h0, c0, *weights, *(torch.from_numpy(a) for a in arrays))
        outputs = (y, h_n) if c_n is None else (y, h_n, c_n)
        return tuple(torch.from_numpy(a) for a in outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Optional[Tensor], dh_n: Optional[Tensor],
                 dc_n: Optional[Tensor] = None) -> Tuple[Optional[Tensor], ...]:
        spec = ctx.spec
        n_weights, n_inputs, n_caches, has_mask = ctx.counts
        saved = [None if t is None else t.detach().numpy() for t in ctx.saved_tensors]
        x, h0, c0 = saved[:3]
        weights = saved[3:3 + n_weights]
        rest = saved[3 + n_weights:]
        inputs, caches, masks = [x] + rest[:n_inputs], rest[n_inputs:n_inputs + n_caches], \
            iter(rest[n_inputs + n_caches:])
        record = _Record(inputs, caches, [next(masks) if m else None for m in has_mask])
        # gradients arrive in any layout (an expanded ones of .sum(), a slice)
        grads_in = [None if g is None else g.detach().contiguous().numpy()
                    for g in (dy, dh_n, dc_n)]
        dx, dh0, dc0, dw = _stack_backward(spec, record, weights, *grads_in)
        need = ctx.needs_input_grad

        def out(a: Optional[np.ndarray], i: int) -> Optional[Tensor]:
            return torch.from_numpy(a) if a is not None and need[i] else None

        return (None, None, out(dx, 2), out(dh0, 3), out(dc0, 4),
                *(out(g, 5 + i) for i, g in enumerate(dw)))


def _run(spec: _Spec, x: Tensor, h0: Optional[Tensor], c0: Optional[Tensor],
         weights: Sequence[Optional[Tensor]], dtype: torch.dtype) -> Tuple[Tensor, ...]:
    """The stack through autograd when a gradient is wanted, else without
    keeping anything. x, h0, c0 C-contiguous (checked by the callers)."""
    weights = [_contiguous(w) for w in weights]
    tensors = [x, h0, c0, *weights]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _StackFunction.apply(spec, dtype, x, h0, c0, *weights)
    w = [_numpy(t) for t in weights]
    y, h_n, c_n, _ = _stack_forward(spec, _numpy(x), _numpy(h0), _numpy(c0), w, False, dtype)
    outputs = (y, h_n) if c_n is None else (y, h_n, c_n)
    return tuple(torch.from_numpy(a) for a in outputs)


def _packed_layout(batch_sizes: Tensor, sorted_indices: Optional[Tensor]
                   ) -> Tuple[int, int, np.ndarray, Tensor]:
    """T, B, the lengths (B,) in the caller's batch order, and the row of a
    time-major (T*B, .) padded array that each row of the packed data is."""
    batch_sizes = batch_sizes.to("cpu", torch.int64)
    T, B = batch_sizes.shape[0], int(batch_sizes[0])
    active = torch.arange(B)[None, :] < batch_sizes[:, None]        # (T, B) sorted slots
    steps, slots = active.nonzero(as_tuple=True)                     # in packed order
    batch = slots if sorted_indices is None else sorted_indices.to("cpu")[slots]
    lengths = np.empty(B, np.intc)
    order = np.arange(B) if sorted_indices is None else sorted_indices.to("cpu").numpy()
    lengths[order] = active.sum(0).numpy()
    return T, B, lengths, steps * B + batch


# ------------------------------------------------------------ the layers

class _FastRNNBase:
    """What RNN, LSTM and GRU add to their torch.nn base: the forward."""

    # set by torch.nn.RNNBase
    mode: str
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    dropout: float
    proj_size: int
    hidden_size: int
    training: bool
    _flat_weights_names: List[str]

    def _check_creation(self, device: Any, dtype: Any) -> None:
        _check_device(device)
        _check_dtype(dtype)

    def _weight_names(self) -> List[str]:
        return list(self._flat_weights_names)

    def _weights(self) -> List[Optional[Tensor]]:
        # read by name each call: torch.func.functional_call, .to() and
        # ``module.weight_ih_l0 = Parameter(...)`` replace them
        return [getattr(self, name) for name in self._flat_weights_names]

    def _forward(self, input: _Input, hx: Any) -> Tuple[_Input, Any]:
        lstm = self.mode == "LSTM"
        kind = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm",
                "GRU": "gru"}[self.mode]
        update = getattr(self, "_update_flat_weights", None)
        if update is not None:
            update()   # torch's checks read _flat_weights
        packed = isinstance(input, PackedSequence)
        if lstm and hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx: expected a pair (h0, c0) of tensors, got "
                            f"{type(hx).__name__}")
        if not packed and not isinstance(input, Tensor):
            raise TypeError(f"input: expected a Tensor or a PackedSequence, got "
                            f"{type(input).__name__}")
        data = input.data if packed else input
        batch_sizes = input.batch_sizes if packed else None
        states = list(hx) if lstm and hx is not None else [hx, None] if lstm else [hx]
        if hx is not None and not all(isinstance(s, Tensor) for s in states):
            raise TypeError(f"hx: expected {'a pair of tensors' if lstm else 'a Tensor'}, got "
                            f"{', '.join(type(s).__name__ for s in states)}")
        is_batched = True
        if not packed:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got "
                                 f"{input.dim()}D instead")
            is_batched = input.dim() == 3
            want = 3 if is_batched else 2
            if hx is not None and any(s.dim() != want for s in states):
                kind_of = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind_of} input, hx should also be {want}-D but got "
                                   f"{', '.join(str(s.dim()) + '-D' for s in states)} tensor")
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
                states = [None if s is None else s.unsqueeze(1) for s in states]
        # torch.nn's checks and messages first, then the CPU and the dtypes
        if hx is not None:
            self.check_forward_args(data if packed else input,
                                    tuple(states) if lstm else states[0], batch_sizes)
        else:
            self.check_input(data if packed else input, batch_sizes)
        weights = self._weights()
        dtype = _check_tensors(self, weights, [("input", data)] +
                               [(f"hx[{i}]" if lstm else "hx", s) for i, s in enumerate(states)])
        batch = int(batch_sizes[0]) if packed else input.shape[0 if self.batch_first else 1]
        if batch == 0 or (not packed and input.shape[1 if self.batch_first else 0] == 0):
            # an empty batch or sequence: torch's answer (empty outputs, or its error)
            return super().forward(input if packed or is_batched else data, hx)

        lengths, rows = None, None
        if packed:
            T, B, lengths, rows = _packed_layout(batch_sizes, input.sorted_indices)
            x = data.new_zeros((T * B, data.shape[1])).index_copy(0, rows, data)
            x = x.view(T, B, -1)
            batch_first = False
        else:
            x, batch_first = _contiguous(input), self.batch_first
        h0 = _contiguous(states[0])
        c0 = _contiguous(states[1]) if lstm else None
        spec = _Spec(kind, self.num_layers, 2 if self.bidirectional else 1,
                     self.proj_size or self.hidden_size, len(weights) // (
                         self.num_layers * (2 if self.bidirectional else 1)),
                     self.bias, self.proj_size > 0, batch_first,
                     self.dropout if self.training else 0.0, lengths, rows)
        outputs = _run(spec, x, h0, c0, weights, dtype)
        output, hidden = outputs[0], outputs[1:]
        if packed:
            output = output.reshape(-1, output.shape[2]).index_select(0, rows)
            output = PackedSequence(output, input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
        elif not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            hidden = tuple(h.squeeze(1) for h in hidden)
        return output, (hidden if lstm else hidden[0])


_STACK_DOC = """\
    Parameters
    ----------
    input_size : int
        I, the features of each input step.
    hidden_size : int
        H, the features of the hidden state.
    num_layers : int, default 1
        Stacked layers; each after the first reads the output of the one before.{extra}
    bias : bool, default True
        Whether there are biases ``bias_ih_l{{k}}`` and ``bias_hh_l{{k}}``.
    batch_first : bool, default False
        Input and output are (B, T, .) instead of (T, B, .); states are not.
    dropout : float in [0, 1], default 0.0
        Dropout on the output of every layer but the last, in training mode;
        masks drawn from torch's generator as torch.nn draws them.
    bidirectional : bool, default False
        Also run each layer right to left (D = 2).{proj}
    device : torch.device or str, optional
        The CPU (or None); any other device raises ValueError.
    dtype : torch.dtype, optional
        torch.float32 or torch.float64; None: ``torch.get_default_dtype()``.

    Raises
    ------
    ValueError
        For a device other than the CPU, and the values torch.nn refuses.
    TypeError
        For a dtype other than float32 and float64, and the types torch.nn refuses.

    Notes
    -----
    The forward's errors are torch.nn's (the same checks), plus TypeError for
    a tensor whose dtype is not the parameters' and ValueError for a tensor
    not on the CPU. An empty batch or sequence goes to torch.nn's own forward.
"""

_FORWARD_DOC = """\
        Run the stack over a sequence, as torch.nn.{name}.forward.

        Parameters
        ----------
        input : Tensor or PackedSequence
            (T, B, I), or (B, T, I) when ``batch_first``, or (T, I) unbatched;
            or a PackedSequence of sequences of I features (any batch order:
            ``enforce_sorted=False`` is fine).
        hx : {hx_type}, optional
            {hx_text}; None: zeros. With a PackedSequence the batch axis is in
            the order of the sequences as given to the packing function.

        Returns
        -------
        output : Tensor or PackedSequence
            (T, B, D*{R}) (batch-first, unbatched and packed as the input); the
            forward direction's half first. Packed: the same ``batch_sizes``
            and indices as the input.
        {h_n}
            Final states, layer-major, direction-minor (torch's order).

        Raises
        ------
        ValueError, RuntimeError, TypeError
            torch.nn's for a wrong rank, size or dtype of input or hx;
            ValueError for a tensor not on the CPU, TypeError for parameters
            that are not float32 or float64.
"""


class RNN(_FastRNNBase, torch.nn.RNN):
    __doc__ = ("""Elman RNN, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh): torch.nn.RNN
    running fastrnn's kernels.

    A subclass of torch.nn.RNN with its constructor, parameters, state_dict and
    forward signature; forward and backward run in fastrnn's C kernels.

""" + _STACK_DOC.format(extra="""
    nonlinearity : {"tanh", "relu"}, default "tanh"
        The activation.""", proj="") + """
    Examples
    --------
    >>> import torch, fastrnn.torch
    >>> rnn = fastrnn.torch.RNN(4, 8, num_layers=2, nonlinearity="relu")
    >>> x = torch.randn(5, 3, 4, requires_grad=True)         # (T, B, I)
    >>> output, h_n = rnn(x, torch.zeros(2, 3, 8))
    >>> output.sum().backward()
    >>> x.grad.shape, rnn.weight_hh_l1.grad.shape
    (torch.Size([5, 3, 4]), torch.Size([8, 8]))
    """)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: Any = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        self._check_creation(device, dtype)
        super().__init__(input_size, hidden_size, num_layers, nonlinearity=nonlinearity,
                         bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)

    def forward(self, input: _Input, hx: Optional[Tensor] = None) -> Tuple[_Input, Tensor]:
        return self._forward(input, hx)

    forward.__doc__ = _FORWARD_DOC.format(
        name="RNN", hx_type="Tensor", hx_text="h0, (D*num_layers, B, H), or (D*num_layers, H) "
        "unbatched", R="H", h_n="h_n : Tensor\n            (D*num_layers, B, H);") + """
        Examples
        --------
        >>> import torch, fastrnn.torch
        >>> rnn = fastrnn.torch.RNN(4, 8, bidirectional=True)
        >>> output, h_n = rnn(torch.randn(5, 4))                  # unbatched (T, I)
        >>> output.shape, h_n.shape
        (torch.Size([5, 16]), torch.Size([2, 8]))
        """


class GRU(_FastRNNBase, torch.nn.GRU):
    __doc__ = ("""GRU (gates r, z, n, the reset applied after the recurrent product):
    torch.nn.GRU running fastrnn's kernels.

    A subclass of torch.nn.GRU with its constructor, parameters, state_dict and
    forward signature; forward and backward run in fastrnn's C kernels.

""" + _STACK_DOC.format(extra="", proj="") + """
    Examples
    --------
    >>> import torch, fastrnn.torch
    >>> trained = torch.nn.GRU(4, 8, batch_first=True)
    >>> gru = fastrnn.torch.GRU(4, 8, batch_first=True)
    >>> gru.load_state_dict(trained.state_dict())
    <All keys matched successfully>
    >>> x = torch.randn(3, 5, 4)                              # (B, T, I)
    >>> torch.allclose(gru(x)[0], trained(x)[0], atol=1e-6)
    True
    """)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device: Any = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        self._check_creation(device, dtype)
        super().__init__(input_size, hidden_size, num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)

    def forward(self, input: _Input, hx: Optional[Tensor] = None) -> Tuple[_Input, Tensor]:
        return self._forward(input, hx)

    forward.__doc__ = _FORWARD_DOC.format(
        name="GRU", hx_type="Tensor", hx_text="h0, (D*num_layers, B, H), or (D*num_layers, H) "
        "unbatched", R="H", h_n="h_n : Tensor\n            (D*num_layers, B, H);") + """
        Examples
        --------
        >>> import torch, fastrnn.torch
        >>> from torch.nn.utils.rnn import pack_sequence
        >>> gru = fastrnn.torch.GRU(4, 8)
        >>> packed = pack_sequence([torch.randn(2, 4), torch.randn(5, 4)], enforce_sorted=False)
        >>> output, h_n = gru(packed)
        >>> type(output).__name__, output.data.shape, h_n.shape
        ('PackedSequence', torch.Size([7, 8]), torch.Size([1, 2, 8]))
        """


class LSTM(_FastRNNBase, torch.nn.LSTM):
    __doc__ = ("""LSTM (gates i, f, g, o; optional projection): torch.nn.LSTM running
    fastrnn's kernels.

    A subclass of torch.nn.LSTM with its constructor, parameters, state_dict and
    forward signature; forward and backward run in fastrnn's C kernels.

""" + _STACK_DOC.format(extra="", proj="""
    proj_size : int, default 0
        P > 0: h is projected to P features by ``weight_hr_l{k}`` (torch's
        projection); h and the output are then P wide, c stays H wide.""") + """
    Examples
    --------
    >>> import torch, fastrnn.torch
    >>> lstm = fastrnn.torch.LSTM(4, 8, proj_size=2, batch_first=True)
    >>> output, (h_n, c_n) = lstm(torch.randn(3, 5, 4))
    >>> output.shape, h_n.shape, c_n.shape
    (torch.Size([3, 5, 2]), torch.Size([1, 3, 2]), torch.Size([1, 3, 8]))
    """)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        self._check_creation(device, dtype)
        super().__init__(input_size, hidden_size, num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, proj_size=proj_size, device=device,
                         dtype=dtype)

    def forward(self, input: _Input, hx: Optional[_LSTMState] = None
                ) -> Tuple[_Input, _LSTMState]:
        return self._forward(input, hx)

    forward.__doc__ = _FORWARD_DOC.format(
        name="LSTM", hx_type="(Tensor, Tensor)", hx_text="(h0, c0): h0 (D*num_layers, B, R), "
        "c0 (D*num_layers, B, H), R = proj_size or H; without B unbatched", R="R",
        h_n="(h_n, c_n) : (Tensor, Tensor)\n            (D*num_layers, B, R) and "
        "(D*num_layers, B, H);") + """
        Examples
        --------
        >>> import torch, fastrnn.torch
        >>> lstm = fastrnn.torch.LSTM(4, 8, num_layers=2)
        >>> h0, c0 = torch.zeros(2, 3, 8), torch.zeros(2, 3, 8)
        >>> output, (h_n, c_n) = lstm(torch.randn(5, 3, 4), (h0, c0))
        >>> output.shape, c_n.shape
        (torch.Size([5, 3, 8]), torch.Size([2, 3, 8]))
        """


# ------------------------------------------------------------ the cells

class _FastCellBase:
    """What RNNCell, LSTMCell and GRUCell add to their torch.nn base: the
    forward, one step of the layers' kernels (T = 1)."""

    input_size: int
    hidden_size: int
    bias: bool
    _kind: str

    def _check_creation(self, device: Any, dtype: Any) -> None:
        _check_device(device)
        _check_dtype(dtype)

    def _weight_names(self) -> List[str]:
        return ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])

    def _step(self, input: Tensor, hx: Any) -> Any:
        name = type(self).__name__
        lstm = self._kind == "lstm"
        if not isinstance(input, Tensor):
            raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if lstm and hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"hx: expected a pair (h, c) of tensors, got {type(hx).__name__}")
        states = list(hx) if lstm and hx is not None else [hx, None] if lstm else [hx]
        if hx is not None and not all(isinstance(s, Tensor) for s in states):
            raise TypeError(f"hx: expected {'a pair of tensors' if lstm else 'a Tensor'}, got "
                            f"{', '.join(type(s).__name__ for s in states)}")
        for i, s in enumerate(states):
            if s is not None and s.dim() not in (1, 2):
                label = f"hx[{i}]" if lstm else "hidden"
                raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {s.dim()}D "
                                 f"instead")
        weights = [getattr(self, n) for n in self._weight_names()]
        dtype = _check_tensors(self, weights, [("input", input)] + [
            (f"hx[{i}]" if lstm else "hx", s) for i, s in enumerate(states)])
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
            states = [None if s is None else s.unsqueeze(0) for s in states]
        B = input.shape[0]
        if input.shape[1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[1]} "
                               f"expected {self.input_size}")
        for i, s in enumerate(states):
            if s is None:
                continue
            if s.dim() != 2 or s.shape[0] != B:
                raise RuntimeError(f"Input batch size {B} doesn't match hidden{i} batch size "
                                   f"{s.shape[0] if s.dim() == 2 else list(s.shape)}")
            if s.shape[1] != self.hidden_size:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got "
                                   f"{s.shape[1]}, expected {self.hidden_size}")
        if B == 0:
            return super().forward(input if is_batched else input[0], hx)
        x = _contiguous(input.unsqueeze(0))                             # (1, B, I)
        h0 = _contiguous(None if states[0] is None else states[0].unsqueeze(0))
        c0 = _contiguous(None if not lstm or states[1] is None else states[1].unsqueeze(0))
        spec = _Spec(self._kind, 1, 1, self.hidden_size, len(weights), self.bias, False,
                     False, 0.0, None, None)
        outputs = _run(spec, x, h0, c0, weights, dtype)
        hidden = tuple(h[0] if is_batched else h[0, 0] for h in outputs[1:])
        return hidden if lstm else hidden[0]


_CELL_DOC = """\
    Parameters
    ----------
    input_size : int
        I, the features of the input.
    hidden_size : int
        H, the features of the hidden state.
    bias : bool, default True
        Whether there are biases ``bias_ih`` and ``bias_hh``.{extra}
    device : torch.device or str, optional
        The CPU (or None); any other device raises ValueError.
    dtype : torch.dtype, optional
        torch.float32 or torch.float64; None: ``torch.get_default_dtype()``.

    Raises
    ------
    ValueError
        For a device other than the CPU, and the values torch.nn refuses.
    TypeError
        For a dtype other than float32 and float64.

    Notes
    -----
    The forward's errors are torch.nn's (the same messages: ValueError for a
    wrong rank, RuntimeError for a wrong size), plus TypeError for a tensor
    whose dtype is not the parameters' and ValueError for a tensor not on the
    CPU.
"""

_CELL_FORWARD_DOC = """\
        One step, as torch.nn.{name}.forward.

        Parameters
        ----------
        input : Tensor
            (B, I), or (I,) unbatched.
        hx : {hx_type}, optional
            {hx_text}; None: zeros.

        Returns
        -------
        {returns}

        Raises
        ------
        ValueError, RuntimeError, TypeError
            As torch.nn.{name} for a wrong rank, size or dtype; ValueError for
            a tensor not on the CPU.
"""


class RNNCell(_FastCellBase, torch.nn.RNNCell):
    __doc__ = ("""One step of an Elman RNN: torch.nn.RNNCell running fastrnn's kernels.

""" + _CELL_DOC.format(extra="""
    nonlinearity : {"tanh", "relu"}, default "tanh"
        The activation.""") + """
    Examples
    --------
    >>> import torch, fastrnn.torch
    >>> cell = fastrnn.torch.RNNCell(4, 8)
    >>> h = torch.zeros(3, 8)
    >>> for x_t in torch.randn(5, 3, 4):
    ...     h = cell(x_t, h)
    >>> h.shape
    torch.Size([3, 8])
    """)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        self._check_creation(device, dtype)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device,
                         dtype=dtype)

    @property
    def _kind(self) -> str:
        return f"rnn_{self.nonlinearity}"

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx)

    forward.__doc__ = _CELL_FORWARD_DOC.format(
        name="RNNCell", hx_type="Tensor", hx_text="h, (B, H) or (H,)",
        returns="h' : Tensor\n            (B, H) or (H,).") + """
        Examples
        --------
        >>> import torch, fastrnn.torch
        >>> fastrnn.torch.RNNCell(4, 8)(torch.randn(4)).shape      # unbatched
        torch.Size([8])
        """


class GRUCell(_FastCellBase, torch.nn.GRUCell):
    __doc__ = ("""One GRU step: torch.nn.GRUCell running fastrnn's kernels.

""" + _CELL_DOC.format(extra="") + """
    Examples
    --------
    >>> import torch, fastrnn.torch
    >>> cell = fastrnn.torch.GRUCell(4, 8)
    >>> cell(torch.randn(3, 4), torch.zeros(3, 8)).shape
    torch.Size([3, 8])
    """)

    _kind = "gru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Optional[torch.dtype] = None) -> None:
        self._check_creation(device, dtype)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx)

    forward.__doc__ = _CELL_FORWARD_DOC.format(
        name="GRUCell", hx_type="Tensor", hx_text="h, (B, H) or (H,)",
        returns="h' : Tensor\n            (B, H) or (H,).") + """
        Examples
        --------
        >>> import torch, fastrnn.torch
        >>> fastrnn.torch.GRUCell(4, 8)(torch.randn(2, 4)).shape
        torch.Size([2, 8])
        """


class LSTMCell(_FastCellBase, torch.nn.LSTMCell):
    __doc__ = ("""One LSTM step: torch.nn.LSTMCell running fastrnn's kernels.

""" + _CELL_DOC.format(extra="") + """
    Examples
    --------
    >>> import torch, fastrnn.torch
    >>> cell = fastrnn.torch.LSTMCell(4, 8)
    >>> h, c = cell(torch.randn(3, 4))
    >>> h, c = cell(torch.randn(3, 4), (h, c))
    >>> h.shape, c.shape
    (torch.Size([3, 8]), torch.Size([3, 8]))
    """)

    _kind = "lstm"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Optional[torch.dtype] = None) -> None:
        self._check_creation(device, dtype)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[_LSTMState] = None) -> _LSTMState:
        return self._step(input, hx)

    forward.__doc__ = _CELL_FORWARD_DOC.format(
        name="LSTMCell", hx_type="(Tensor, Tensor)", hx_text="(h, c), each (B, H) or (H,)",
        returns="(h', c') : (Tensor, Tensor)\n            Each (B, H) or (H,).") + """
        Examples
        --------
        >>> import torch, fastrnn.torch
        >>> h, c = fastrnn.torch.LSTMCell(4, 8)(torch.randn(4))
        >>> h.shape
        torch.Size([8])
        """
