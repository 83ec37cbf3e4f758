"""Truncated BPTT over a long sequence, and generation one step at a time.

    losses = fastrnn.truncated_bptt(model, loss, optimizer, inputs, targets, k1=50, k2=100)
    ids = fastrnn.generate(model, prompt_ids, steps=200, temperature=0.8, top_k=10, seed=0)

``truncated_bptt`` trains a model with stateful layers on a sequence too long
for one backward: every k1 steps, the loss of those k1 steps is
backpropagated through the last k2 steps (Williams and Peng's BPTT(k2, k1),
Sutskever's TBPTT(k1, k2)).

Generation runs the model one step at a time on the cells' lean inference
path (``Stepper``): a recurrent layer hands its weights to one cell per layer
(``to_cells``; ``from_cells`` hands them back), whose inference step is one
kernel call, against a whole layer call per step. Each output is fed back as
the next input: sampled token ids for a model of logits (greedy, with a
temperature, top-k), or the output itself for a model of values (one-to-many).
"""
from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from fastrnn._validation import _as_array, _check_flag, _check_positive_int, _check_seed, _numbers
from fastrnn.bidirectional import Bidirectional
from fastrnn.cells import GRUCell, IndRNNCell, LSTMCell, RNNCell, _CellBase
from fastrnn.layers import GRU, LSTM, RNN, IndRNN, _RNNBase
from fastrnn.nn import Dropout, Embedding, Linear, Module, Sequential, _first, _ids
from fastrnn.optim import clip_grad_norm_

__all__ = ["to_cells", "from_cells", "Stepper", "sample", "generate", "truncated_bptt"]

Cell = Union[RNNCell, LSTMCell, GRUCell, IndRNNCell]

# the cell class of each layer class
_CELLS = ((LSTM, LSTMCell), (GRU, GRUCell), (RNN, RNNCell), (IndRNN, IndRNNCell))


# ------------------------------------------------------------ layer <-> cells

def _cell_class(layer: Any) -> type:
    """The cell class of a layer that has a step-by-step form; else an error
    saying why not."""
    if not isinstance(layer, _RNNBase):
        hint = (" (unwrap it: a bidirectional layer has no step-by-step form)"
                if isinstance(layer, Bidirectional) else "")
        raise TypeError(f"layer: expected an RNN, LSTM or GRU, got {type(layer).__name__}{hint}")
    why = []
    if layer.direction != "forward":
        why.append(f"direction={layer.direction!r}")
    if layer.proj_size:
        why.append(f"proj_size={layer.proj_size}")
    if any(layer._cell_options):             # as the cells decide their fast path
        why.append("ONNX's activations, clip, peepholes or input_forget")
    if why:
        raise ValueError(f"layer: the cells step forward in time with PyTorch's cells; this "
                         f"layer has {', '.join(why)}")
    return next(cell for cls, cell in _CELLS if isinstance(layer, cls))


def to_cells(layer: Union[RNN, LSTM, GRU]) -> List[Cell]:
    """The layer's weights in cells: one cell per layer of the stack, in order.

    Stepping the cells (layer k's h feeding layer k+1's input) computes what
    the layer computes, one step per call; their inference steps take the
    cells' lean path. The weights are copied: ``from_cells`` copies them back.

    Parameters
    ----------
    layer : RNN, LSTM or GRU
        Running forward in time, with PyTorch's cells (no ``proj_size``, no
        ONNX options).

    Returns
    -------
    list of RNNCell, LSTMCell or GRUCell
        num_layers cells of the layer's kind, dtype, backend, bias and mode;
        cell k has layer k's ``weight_ih_l{k}``, ... as ``weight_ih``, ....

    Raises
    ------
    TypeError
        When layer is not an RNN, LSTM or GRU (a Bidirectional, a cell).
    ValueError
        When layer is bidirectional or reverse, projects, or has ONNX's options.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> lstm = fastrnn.LSTM(4, 8, num_layers=2, seed=0)
    >>> cells = fastrnn.to_cells(lstm)
    >>> [type(c).__name__ for c in cells], cells[1].input_size
    (['LSTMCell', 'LSTMCell'], 8)
    >>> bool((cells[1].weight_hh == lstm.weight_hh_l1).all())
    True
    """
    cell_class = _cell_class(layer)
    options = {"nonlinearity": layer.nonlinearity} if cell_class in (RNNCell, IndRNNCell) else \
        {"reset_after": layer.reset_after} if cell_class is GRUCell else {}
    weights = layer.state_dict()
    cells = []
    for k in range(layer.num_layers):
        cell = cell_class(layer.input_size if k == 0 else layer.hidden_size, layer.hidden_size,
                          bias=layer.bias, dtype=layer.dtype, backend=layer.backend, **options)
        suffix = f"_l{k}"
        cell.load_state_dict({name[:-len(suffix)]: value for name, value in weights.items()
                              if name.endswith(suffix)})
        cells.append(cell.train(layer.training))
    return cells


def from_cells(cells: Sequence[Cell], layer: Union[RNN, LSTM, GRU]
               ) -> Union[RNN, LSTM, GRU]:
    """Copy the cells' weights into the layer: ``to_cells`` the other way.

    Parameters
    ----------
    cells : sequence of RNNCell, LSTMCell or GRUCell
        One per layer of the stack, of the layer's kind (and nonlinearity or
        reset_after), in order.
    layer : RNN, LSTM or GRU
        The layer to load (as ``to_cells`` takes).

    Returns
    -------
    The layer.

    Raises
    ------
    TypeError
        When a cell or the layer is of another kind.
    ValueError
        When the number of cells is not num_layers, a cell's sizes or options
        differ, or the layer has no step-by-step form. The layer is unchanged
        then.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> gru = fastrnn.GRU(4, 8, num_layers=2, seed=0)
    >>> cells = fastrnn.to_cells(gru)
    >>> cells[0].weight_hh[...] = 0               # ... changed step by step ...
    >>> _ = fastrnn.from_cells(cells, gru)
    >>> float(abs(gru.weight_hh_l0).max())
    0.0
    """
    cell_class = _cell_class(layer)
    cells = list(cells)
    if len(cells) != layer.num_layers:
        raise ValueError(f"cells: expected {layer.num_layers} (the layer's num_layers), "
                         f"got {len(cells)}")
    for k, cell in enumerate(cells):
        if not isinstance(cell, cell_class):
            raise TypeError(f"cells[{k}]: expected a {cell_class.__name__}, got "
                            f"{type(cell).__name__}")
        for option in ("nonlinearity", "reset_after"):
            if hasattr(layer, option) and getattr(cell, option) != getattr(layer, option):
                raise ValueError(f"cells[{k}]: {option}={getattr(cell, option)!r}, the layer "
                                 f"has {option}={getattr(layer, option)!r}")
    layer.load_state_dict({f"{name}_l{k}": value for k, cell in enumerate(cells)
                           for name, value in cell.state_dict().items()})
    return layer


# ------------------------------------------------------------------ Stepper

def _flatten(model: Any) -> List[Any]:
    """The parts of a Sequential (nested ones flattened), or [model]."""
    if isinstance(model, Sequential):
        return [part for child in model for part in _flatten(child)]
    return [model]


class Stepper:
    """A model run one step at a time, carrying its state, on the cells' lean path.

    Built from a Sequential of Embedding, Linear, Dropout, RNN/LSTM/GRU
    layers and cells (or one of these): each recurrent layer becomes its
    cells (``to_cells``, a copy of the weights taken now: build the stepper
    after training), Dropout is the identity, Embedding and Linear run
    without keeping anything. A step computes what the model computes for
    one time step in inference, with the state of the steps before.

    Parameters
    ----------
    model : Sequential, layer, cell, Embedding or Linear

    Raises
    ------
    TypeError
        When a part is none of these (write the step of a model of your own
        with these pieces).
    ValueError
        When a layer has no step-by-step form (see ``to_cells``), or a part's
        input width is not the previous part's output width.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> model = fastrnn.Sequential(fastrnn.Embedding(10, 8, seed=0),
    ...                            fastrnn.GRU(8, 16, num_layers=2, seed=0),
    ...                            fastrnn.Linear(16, 10, seed=0))
    >>> step = fastrnn.Stepper(model)
    >>> logits = step(np.array([3, 1]))                # ids (B,) -> (B, 10)
    >>> logits = step(logits.argmax(-1))               # the state carries on
    >>> whole = model(np.array([[3, 1], [7, 2]]), training=False)
    >>> step.reset_state()
    >>> _ = step(np.array([3, 1]))
    >>> np.allclose(step(np.array([7, 2])), whole[1], atol=1e-6)
    True
    """

    def __init__(self, model: Any) -> None:
        # per part: the lean step of an Embedding or Linear, or a layer's cells
        self._parts: List[Any] = []
        width = None                     # the previous part's output width
        for i, part in enumerate(_flatten(model)):
            if isinstance(part, Dropout):
                continue
            if isinstance(part, _RNNBase):
                step, needs, gives = to_cells(part), part.input_size, part.hidden_size
            elif isinstance(part, _CellBase):
                step, needs, gives = [part], part.input_size, part.hidden_size
            elif isinstance(part, Linear):
                step, needs, gives = part._infer, part.in_features, part.out_features
            elif isinstance(part, Embedding):
                step, needs, gives = part._infer, None, part.embedding_dim
            else:
                raise TypeError(f"model: a Stepper steps Embedding, Linear, Dropout, "
                                f"RNN/LSTM/GRU layers and cells (in a Sequential); part {i} "
                                f"is a {type(part).__name__}")
            if self._parts and needs != width:
                raise ValueError(f"model: part {i} ({type(part).__name__}) takes "
                                 f"{'ids' if needs is None else f'{needs} features'}, the "
                                 f"part before gives {width}")
            if not self._parts:
                self._first = part       # checks the input of a step
            width = gives
            self._parts.append(step)
        if not self._parts:
            raise ValueError("model: nothing to step (only Dropout)")
        self.reset_state()

    def reset_state(self) -> None:
        """Start again from zero states."""
        self._states: List[List[Any]] = [[None] * len(part) if isinstance(part, list) else []
                                         for part in self._parts]

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """One step: the model's output for x, the state carried to the next call.

        Parameters
        ----------
        x : array_like
            One step's input: ids (B,) or one id for an Embedding first,
            else (B, I) or (I,).

        Returns
        -------
        ndarray
            The last part's output for this step: (B, O) or (O,).

        Raises
        ------
        ValueError, TypeError
            For an input of the wrong shape or type, naming it.
        """
        first = self._first
        if isinstance(first, Embedding):
            x = _ids("x", x, first.num_embeddings)
        elif isinstance(first, Linear):
            x = _as_array("x", x, first.dtype)
            if x.ndim not in (1, 2) or x.shape[-1] != first.in_features:
                raise ValueError(f"x: expected (B, {first.in_features}) or "
                                 f"({first.in_features},), got {x.shape}")
        return self._step(x)                # a cell checks its own input

    def _step(self, x: np.ndarray) -> np.ndarray:
        """A step of a checked x (or of the stepper's own output, fed back)."""
        for part, states in zip(self._parts, self._states):
            if type(part) is not list:
                x = part(x)
                continue
            for k, cell in enumerate(part):
                states[k] = cell(x, states[k], training=False)
                x = _first(states[k])       # an LSTM cell's h of (h, c)
        return x


# ----------------------------------------------------------------- sampling

def sample(logits: ArrayLike, temperature: float = 1.0, top_k: Optional[int] = None,
           greedy: bool = False, rng: Any = None) -> np.ndarray:
    """Draw token ids from logits: softmax(logits / temperature), restricted to the
    top_k largest; or the largest (greedy).

    Parameters
    ----------
    logits : array_like
        (..., V), the class axis last.
    temperature : float, default 1.0
        Positive: below 1 sharpens the distribution, above 1 flattens it.
    top_k : int, optional
        Draw only among the k largest logits (ties with the k-th included).
    greedy : bool, default False
        Take the largest logit (the first of equal ones); no draw.
    rng : numpy.random.Generator or int, optional
        The generator of the draw, or a seed for one.

    Returns
    -------
    ndarray of int64
        logits.shape[:-1].

    Raises
    ------
    ValueError
        When temperature is not positive, top_k not a positive integer, or
        a logit is NaN.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> logits = np.log([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    >>> fastrnn.sample(logits, greedy=True)
    array([1, 0])
    >>> fastrnn.sample(logits, top_k=1, rng=0)         # top-1 is greedy
    array([1, 0])
    """
    temperature, top_k, greedy = _sampling(temperature, top_k, greedy)
    z = _numbers("logits", logits)
    if z.ndim == 0:
        raise ValueError("logits: expected (..., V), the class axis last, got a scalar")
    if np.isnan(z).any():
        raise ValueError("logits: expected numbers, got NaN")
    return _draw(z, temperature, top_k, greedy, _check_seed(rng))


def _sampling(temperature: Any, top_k: Any, greedy: Any) -> Tuple[float, Optional[int], bool]:
    """The sampling options, checked."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not temperature > 0:
        raise ValueError(f"temperature: expected a positive number (greedy=True for the "
                         f"largest logit), got {temperature!r}")
    top_k = None if top_k is None else _check_positive_int("top_k", top_k)
    return float(temperature), top_k, _check_flag("greedy", greedy)


def _draw(z: np.ndarray, temperature: float, top_k: Optional[int], greedy: bool,
          rng: np.random.Generator) -> np.ndarray:
    """sample for checked logits z (..., V) and options."""
    if greedy:
        return z.argmax(axis=-1)
    z = np.asarray(z, np.float64)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k, None]
        z = np.where(z < kth, -np.inf, z)
    # softmax(z / temperature), unnormalised
    p = np.exp((z - z.max(axis=-1, keepdims=True)) * (1.0 / temperature))
    cdf = p.cumsum(axis=-1)
    # the first index whose cumulative weight reaches u, u uniform in (0, total]
    u = (1.0 - rng.random(cdf.shape[:-1] + (1,))) * cdf[..., -1:]
    return (cdf >= u).argmax(axis=-1)


def generate(model: Any, prompt: ArrayLike, steps: int, *, temperature: float = 1.0,
             top_k: Optional[int] = None, greedy: bool = False, seed: Any = None
             ) -> np.ndarray:
    """Run a model on a prompt, then feed each output back as the next input.

    An integer prompt is token ids and the model's outputs are logits: each
    next id is drawn from them (``sample``: greedy, temperature, top-k). A
    float prompt is values and each output is fed back as it is (one-to-many:
    continue a signal from one or a few inputs). The model runs one step at a
    time on the cells' lean path (``Stepper``), from zero states.

    Parameters
    ----------
    model : Sequential, layer, Stepper, ...
        What ``Stepper`` takes, or a Stepper.
    prompt : array_like
        Ids (P,) or (P, B), or values (P, I) or (P, B, I); P >= 1 steps.
    steps : int
        How many outputs to generate after the prompt.
    temperature, top_k, greedy
        How ids are drawn (see ``sample``); for id prompts only.
    seed : int or numpy.random.Generator, optional
        The draws' generator.

    Returns
    -------
    ndarray
        The generated ids (steps,) or (steps, B), or values (steps, O) or
        (steps, B, O).

    Raises
    ------
    ValueError, TypeError
        For a prompt of the wrong shape, a model whose output cannot be fed
        back, sampling options given with a value prompt, or what Stepper
        and sample raise.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> model = fastrnn.Sequential(fastrnn.Embedding(5, 8, seed=0),
    ...                            fastrnn.LSTM(8, 16, seed=0), fastrnn.Linear(16, 5, seed=0))
    >>> ids = fastrnn.generate(model, np.array([0, 1]), steps=6, top_k=3, seed=0)
    >>> ids.shape, bool(((0 <= ids) & (ids < 5)).all())
    ((6,), True)
    """
    stepper = model if isinstance(model, Stepper) else Stepper(model)
    steps = _check_positive_int("steps", steps)
    x = _numbers("prompt", prompt)
    tokens = np.issubdtype(x.dtype, np.integer)
    if x.ndim not in ((1, 2) if tokens else (2, 3)) or x.shape[0] == 0:
        raise ValueError(f"prompt: expected ids (P,) or (P, B), or values (P, I) or "
                         f"(P, B, I), with P >= 1 steps; got dtype {x.dtype} shape {x.shape}")
    if not tokens and (top_k is not None or greedy or temperature != 1.0):
        raise ValueError("temperature, top_k, greedy: they choose among logits, for a prompt "
                         "of ids; a prompt of values feeds the outputs back as they are")
    temperature, top_k, greedy = _sampling(temperature, top_k, greedy)
    rng = _check_seed(seed)
    stepper.reset_state()
    for x_t in x:
        y = stepper(x_t)
    if not tokens and y.shape != x_t.shape:
        raise ValueError(f"model: its output {y.shape} cannot be fed back as its input "
                         f"{x_t.shape}: one-to-many generation needs outputs as wide as "
                         f"inputs")
    generated = []
    for i in range(steps):
        # the next input: ids drawn from the logits, or the values themselves
        nxt = _draw(y, temperature, top_k, greedy, rng) if tokens else y
        generated.append(nxt)
        if i + 1 < steps:
            y = stepper._step(nxt)          # checked already: the stepper's own output
    return np.stack(generated)


# ------------------------------------------------------- truncated BPTT

def _recurrent_layers(model: Any) -> List[_RNNBase]:
    """The RNN/LSTM/GRU stacks in a model (a Bidirectional's inner one)."""
    if isinstance(model, _RNNBase):
        return [model]
    if isinstance(model, Bidirectional):
        return [model.layer]
    if isinstance(model, Module):
        return [layer for part in model.children() for layer in _recurrent_layers(part)]
    return []


def _steps(arr: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    return arr[start:stop] if axis == 0 else arr[:, start:stop]


def truncated_bptt(model: Any, loss_fn: Any, optimizer: Any, inputs: ArrayLike,
                   targets: ArrayLike, k1: int, k2: Optional[int] = None, *,
                   batch_first: bool = False, max_norm: Optional[float] = None,
                   reset_state: bool = True) -> List[float]:
    """Train a stateful model on a long sequence by truncated backpropagation through time.

    The sequence is taken in chunks of k1 steps. For each chunk, the model
    runs over the last k2 steps (the chunk and the k2 - k1 steps before it)
    from the state it had there, the loss of the chunk's k1 steps is
    backpropagated through all k2 of them, the gradients are clipped and the
    optimizer steps. With k2 = k1 (the default) this is the usual chunked
    training: each chunk starts from the state the previous one left. With
    k2 > k1 the state at each window's start is carried by running the steps
    between two windows again in inference (k1 inference steps per chunk).

    Parameters
    ----------
    model : Module, Sequential or layer
        ``model(x)`` returns the outputs of every step (a layer's output of
        its ``(output, state)``), ``model.backward(d)`` backpropagates; its
        recurrent layers carry their state (``stateful=True``).
    loss_fn : loss object
        ``loss_fn(output, target)`` returns the loss, ``loss_fn.backward()``
        its gradient (``CrossEntropyLoss``, ``MSELoss``, ...).
    optimizer : Optimizer
        ``optimizer.step(model.grads)``.
    inputs, targets : array_like
        The whole sequence: (T, B, ...) (or (B, T, ...) when batch_first),
        time on the same axis in both.
    k1 : int
        Steps per chunk: the optimizer steps once per chunk.
    k2 : int, optional
        Steps backpropagated, >= k1; None: k1.
    batch_first : bool, default False
        Time is axis 1 of inputs and targets.
    max_norm : float, optional
        Clip the gradients' global norm to it before each step
        (``clip_grad_norm_``).
    reset_state : bool, default True
        Start from zero states (``model.reset_state()``); False continues
        from the state the model carries.

    Returns
    -------
    list of float
        The loss of each chunk.

    Raises
    ------
    ValueError
        When the model carries no state (no ``stateful=True`` layer), k1 or
        k2 is out of range, or inputs and targets differ in length; what the
        model, loss or optimizer raise.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> text = np.random.default_rng(0).integers(0, 5, size=(200, 4))   # ids (T, B)
    >>> model = fastrnn.Sequential(fastrnn.Embedding(5, 8, seed=0),
    ...                            fastrnn.LSTM(8, 16, stateful=True, seed=0),
    ...                            fastrnn.Linear(16, 5, seed=0))
    >>> opt = fastrnn.Adam(model.named_parameters(), lr=1e-2)
    >>> losses = fastrnn.truncated_bptt(model, fastrnn.CrossEntropyLoss(), opt,
    ...                                 text[:-1], text[1:], k1=25, k2=50, max_norm=1.0)
    >>> len(losses)                                    # 199 steps in chunks of 25
    8
    """
    k1 = _check_positive_int("k1", k1)
    k2 = k1 if k2 is None else _check_positive_int("k2", k2)
    if k2 < k1:
        raise ValueError(f"k2: expected at least k1 = {k1} (the loss of each k1 steps is "
                         f"backpropagated through k2 steps), got {k2}")
    axis = 1 if _check_flag("batch_first", batch_first) else 0
    x, y = np.asarray(inputs), np.asarray(targets)
    if x.ndim <= axis or y.ndim <= axis or x.shape[axis] != y.shape[axis]:
        raise ValueError(f"targets: expected as many steps as inputs on axis {axis}, got "
                         f"inputs {x.shape} and targets {y.shape}")
    layers = [layer for layer in _recurrent_layers(model) if layer.stateful]
    if not layers:
        raise ValueError("model: no stateful layer to carry the state from chunk to chunk; "
                         "build its recurrent layers with stateful=True")
    if _check_flag("reset_state", reset_state):
        model.reset_state()
    model.train()
    T = x.shape[axis]
    # the state at the current window's start (a layer replaces its carried
    # state at every call, never changes it in place: references suffice)
    snapshot = [layer._kept_state for layer in layers]
    losses = []
    for s in range(0, T, k1):
        e = min(s + k1, T)
        start = max(0, e - k2)                  # the window backpropagated: [start, e)
        if start != s:
            for layer, state in zip(layers, snapshot):
                layer._kept_state = state
        out = _first(model(_steps(x, start, e, axis)))
        losses.append(loss_fn(_steps(out, s - start, None, axis), _steps(y, s, e, axis)))
        d_chunk = loss_fn.backward()
        if start == s:
            d_out = d_chunk
        else:                                   # no loss on the steps before the chunk
            d_out = np.zeros_like(out)
            _steps(d_out, s - start, None, axis)[...] = d_chunk
        model.zero_grad()
        model.backward(d_out)
        grads = model.grads
        if max_norm is not None:
            clip_grad_norm_(grads, max_norm)
        optimizer.step(grads)
        following = max(0, min(e + k1, T) - k2)   # the next window's start
        if e < T and following != e:
            # from the state at this window's start, run up to the next one's
            for layer, state in zip(layers, snapshot):
                layer._kept_state = state
            if following > start:
                model.eval()
                model(_steps(x, start, following, axis))
                model.train()
            snapshot = [layer._kept_state for layer in layers]
    return losses
