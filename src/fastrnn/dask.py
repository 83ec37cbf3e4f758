"""Inference over Dask arrays: a layer or model applied chunk by chunk along the batch.

    import dask.array as da
    from dask.distributed import Client
    import fastrnn.dask

    client = Client(...)                                   # a cluster, or none: dask's threads
    x = da.from_zarr(...)                                  # (B, T, I), chunked along B
    output, h_n = fastrnn.dask.map_batches(gru, x)         # what gru(x) returns, as dask arrays
    scores = fastrnn.dask.map_batches(model, x, lengths)   # a fastrnn.nn model
    scores.to_zarr(...)                                    # or reduce, or .compute()

Sequences are independent along the batch, so every chunk of rows is one
task: the model runs on the chunk's rows as it would on the whole batch, and
the results are joined along their own batch axes (found by running the model
once on a batch of 1 and of 2 zero sequences, which also checks x against the
model before anything is computed). Each chunk then needs the model, and only
once per worker process: with a ``dask.distributed`` client the model is
scattered to every worker once (``client.scatter(..., broadcast=True)``), the
tasks refer to it by key, and no task carries its weights; without a client,
dask's local threads share one copy.

The model runs in inference mode (a copy of it in ``eval()`` mode, whatever
the mode of yours), each chunk from the zero initial state: a ``stateful``
layer's carried state is not used, so the result is ``model.reset_state();
model(x, lengths=lengths)`` computed in one process, up to rounding (the
kernels' results depend on the batch size at the level of rounding: the
chunks' rows agree with the whole batch's to a few units in the last place).

Threads: every worker process runs fastrnn's kernels on its own thread pool
(``fastrnn.set_num_threads``, by default all the CPUs it may use). On one
machine give each worker one dask thread and the kernels the cores it is
meant to use, ``client.run(fastrnn.set_num_threads, k)``.

Importing this module needs dask (``pip install 'fastrnn[dask]'``); importing
fastrnn does not import it.
"""
from __future__ import annotations

import copy
import numbers
import pickle
import uuid
from typing import Any, List, Optional, Tuple

import numpy as np

try:
    import cloudpickle
    import dask
    import dask.array as da
except ImportError as error:   # pragma: no cover - the tests run with dask or skip
    raise ImportError(f"fastrnn.dask needs dask's arrays ({error}): pip install "
                      f"'fastrnn[dask]' (or pip install 'dask[array,distributed]')") from error

from fastrnn.bidirectional import Bidirectional
from fastrnn.layers import _RNNBase
from fastrnn.nn import _is_part

__all__ = ["map_batches"]

# How many times this process has unpickled a shipped model: once per worker
# for each map_batches call, again only after spilling it to disk
# (tests/test_dask.py reads it on the workers).
_loads = 0


def _recurrent_layers(model: Any) -> List[_RNNBase]:
    """The RNN/LSTM/GRU stacks in model, depth first in the order of its parts."""
    if isinstance(model, _RNNBase):
        return [model]
    if isinstance(model, Bidirectional):
        return [model.layer]
    layers: List[_RNNBase] = []
    for part in getattr(model, "children", lambda: [])():
        layers += _recurrent_layers(part)
    return layers


class _Shipped:
    """The model as the tasks use it: a copy in inference mode whose stateful
    layers carry nothing from one chunk into the next. Unpickling it (on a
    worker) prepares it again and counts the load."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.token = uuid.uuid4().hex   # the tasks' name for it: its weights are never hashed

    @staticmethod
    def _prepare(model: Any) -> None:
        model.eval()
        for layer in _recurrent_layers(model):
            layer.stateful = False        # every chunk starts from the zero state
            layer.reset_state()

    # The model travels as one pickle of its own, its arrays inside it. Dask
    # pickles a NumPy array's data as a buffer of its own, and a worker near
    # its memory limit spills what it holds to disk: read back, such an array
    # is a view at any offset of what was read (the layers copy such
    # parameters when unpickled; other arrays of a model would stay views).
    # Unpickled from bytes, every array is fresh. cloudpickle
    # (dask's) pickles a class of __main__ (a script's, a notebook's) by
    # value, where pickle would name a module the workers do not have.
    def __getstate__(self) -> dict:
        return {"model": cloudpickle.dumps(self.model), "token": self.token}

    def __setstate__(self, state: dict) -> None:
        global _loads
        self.model = pickle.loads(state["model"])
        self.token = state["token"]
        self._prepare(self.model)
        _loads += 1

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, x: np.ndarray, lengths: Optional[np.ndarray]) -> Any:
        if lengths is None:
            return self.model(x)
        return self.model(x, lengths=lengths)


# -------------------------------------------------------- the model's outputs

def _leaves(out: Any) -> List[np.ndarray]:
    """The arrays of a model's result (an array, or nested tuples of arrays)."""
    if isinstance(out, tuple):
        return [leaf for part in out for leaf in _leaves(part)]
    if isinstance(out, np.ndarray):
        return [out]
    raise TypeError(f"model: expected it to return an array or tuples of arrays, got "
                    f"{type(out).__name__}")


def _rebuild(structure: Any, leaves: List[Any]) -> Any:
    """structure (a result like the model's) with its arrays replaced, in order, by leaves."""
    if isinstance(structure, tuple):
        return tuple(_rebuild(part, leaves) for part in structure)
    return leaves.pop(0)


def _batch_axis_of(one: np.ndarray, two: np.ndarray, index: int) -> int:
    """The axis in which the model's results for 1 and 2 sequences differ."""
    differ = [axis for axis, (a, b) in enumerate(zip(one.shape, two.shape)) if a != b]
    if one.ndim != two.ndim or len(differ) != 1 or (one.shape[differ[0]], two.shape[differ[0]]) \
            != (1, 2):
        raise ValueError(f"model: its output {index} has no batch axis (shape {one.shape} for "
                         f"one sequence, {two.shape} for two): map_batches joins the chunks' "
                         f"results along it")
    return differ[0]


def _apply(shipped: _Shipped, x: np.ndarray, lengths: Optional[np.ndarray],
           batch_axis: int, empty: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, ...]:
    """One chunk: the model's result's arrays (the task's result)."""
    if x.shape[batch_axis] == 0:   # the layers refuse empty batches
        return empty
    return tuple(_leaves(shipped(x, lengths)))


# ---------------------------------------------------------------- arguments

def _default_batch_axis(model: Any, x_ndim: int) -> int:
    layers = _recurrent_layers(model)
    if not layers:
        raise ValueError("batch_axis: expected it for a model without RNN/LSTM/GRU layers "
                         "(the batch axis of x cannot be told from their batch_first)")
    return 0 if layers[0].batch_first or x_ndim < 2 else 1


def _check_axis(batch_axis: Any, ndim: int) -> int:
    if isinstance(batch_axis, bool) or not isinstance(batch_axis, numbers.Integral) \
            or not -ndim <= batch_axis < ndim:
        raise ValueError(f"batch_axis: expected an axis of x (an integer in [{-ndim}, "
                         f"{ndim})), got {batch_axis!r}")
    return int(batch_axis) % ndim


def _check_lengths(lengths: Any, batch_chunks: Tuple[int, ...]) -> Optional[da.Array]:
    """lengths as a dask array (B,) chunked as x's batch axis."""
    if lengths is None:
        return None
    if not isinstance(lengths, da.Array):
        lengths = np.asarray(lengths)
        if lengths.ndim == 1 and lengths.shape[0] == sum(batch_chunks):
            lengths = da.from_array(lengths, chunks=(batch_chunks,))
    B = sum(batch_chunks)
    if lengths.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (B,), got {lengths.shape}")
    if lengths.dtype == np.bool_ or not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"lengths: expected integers, got dtype {lengths.dtype}")
    if any(np.isnan(c) for c in lengths.chunks[0]):
        raise ValueError("lengths: its chunk sizes are unknown (lengths.compute_chunk_sizes() "
                         "finds them)")
    return lengths.rechunk((batch_chunks,))


def _client(client: Any) -> Any:
    """The distributed client to scatter the model with, or None (dask's local
    scheduler shares the model's one copy)."""
    if client is not None:
        if not hasattr(client, "scatter"):
            raise TypeError(f"client: expected a dask.distributed Client, got "
                            f"{type(client).__name__}")
        return client
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):   # no distributed, or no client
        return None


# ---------------------------------------------------------------- map_batches

def map_batches(model: Any, x: da.Array, lengths: Any = None, *,
                batch_axis: Optional[int] = None, client: Any = None) -> Any:
    """Apply a layer or model to a Dask array chunk by chunk along the batch axis.

    Returns what ``model(x)`` (or ``model(x, lengths=lengths)``) returns, each
    array a Dask array: for an LSTM ``(output, (h_n, c_n))``, for a model its
    output. Nothing is computed until you compute them (``.compute()``,
    ``dask.compute``, ``.to_zarr``, a reduction); every chunk of x's rows is
    one task, and each result is chunked along its own batch axis as x is.

    The model is copied in inference mode (yours is not changed), and sent to
    each worker once: with a ``dask.distributed`` client (``client``, or the
    current one) it is scattered to every worker now, and the tasks refer to
    it; without one, dask's local threads share the copy. Each chunk starts
    from the zero initial state.

    Parameters
    ----------
    model : RNN, LSTM, GRU, Bidirectional, a cell, or fastrnn.nn.Module
        A layer, or a model (Sequential, or a Module of your own) whose
        ``model(x)`` returns an array or tuples of arrays, each with a batch
        axis, and that takes ``lengths=`` when lengths are given (their
        values are checked by the model as each chunk runs).
    x : dask.array.Array
        The input, as the model takes it, with known chunk sizes. Chunks
        along the other axes are joined first (``x.rechunk``): a task holds
        whole sequences.
    lengths : dask.array.Array or array_like of int, optional
        (B,): the valid steps of each sequence (see ``RNN.__call__``), chunked
        as x's batch axis (it is rechunked to match); None: every step.
    batch_axis : int, optional
        The batch axis of x; None: 0 when the model's first recurrent layer is
        ``batch_first``, else 1 (x (T, B, ...)).
    client : dask.distributed.Client, optional
        The client whose workers run the tasks; None: the current client, if
        any, else dask's local scheduler.

    Returns
    -------
    dask.array.Array, or tuples of them
        As ``model(x)``'s result, each array joined along its batch axis.

    Raises
    ------
    TypeError
        When model is not one of fastrnn's, x is not a Dask array, or
        lengths are not integers.
    ValueError
        When x's shape or batch_axis does not fit the model (the model's own
        message, from a trial run on zeros), lengths are not (B,), or a chunk
        size is unknown.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastrnn, fastrnn.dask
    >>> gru = fastrnn.GRU(3, 8, batch_first=True, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((10, 5, 3)).astype(np.float32)
    >>> X = da.from_array(x, chunks=(4, 5, 3))               # (B, T, I), 4 sequences a chunk
    >>> output, h_n = fastrnn.dask.map_batches(gru, X, lengths=[5, 3] * 5)
    >>> output.chunks[0], h_n.chunks[1]                      # h_n is (D*L, B, H)
    ((4, 4, 2), (4, 4, 2))
    >>> expected, _ = gru(x, lengths=[5, 3] * 5)
    >>> bool(np.allclose(output.compute(), expected, atol=1e-6))
    True
    """
    if not _is_part(model):
        raise TypeError(f"model: expected a fastrnn layer, cell or model (RNN, LSTM, GRU, "
                        f"Bidirectional, a cell, a Module), got {type(model).__name__}")
    if not isinstance(x, da.Array):
        raise TypeError(f"x: expected a dask array (dask.array.from_array(x, chunks=...)), "
                        f"got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError("x: expected an input with a batch axis, got a 0-d array")
    batch_axis = _check_axis(_default_batch_axis(model, x.ndim) if batch_axis is None
                             else batch_axis, x.ndim)
    batch_chunks = x.chunks[batch_axis]
    if any(np.isnan(c) for c in batch_chunks):
        raise ValueError("x: its chunk sizes along the batch axis are unknown "
                         "(x.compute_chunk_sizes() finds them)")
    lengths = _check_lengths(lengths, batch_chunks)
    x = x.rechunk({axis: -1 for axis in range(x.ndim) if axis != batch_axis})
    client = _client(client)

    # the copy the tasks use (made as a worker makes it: by unpickling)
    shipped = copy.deepcopy(_Shipped(model))

    # a trial on 1 and 2 zero sequences: the structure, shapes and batch axes of the result
    # (lengths: every step of the time axis, x's first axis other than the batch's)
    steps = x.shape[1 if batch_axis == 0 and x.ndim > 1 else 0]

    def trial(B: int) -> Tuple[Any, List[np.ndarray]]:
        shape = list(x.shape)
        shape[batch_axis] = B
        out = shipped(np.zeros(shape, x.dtype), None if lengths is None else np.full(B, steps))
        return out, _leaves(out)

    structure, ones = trial(1)
    _, twos = trial(2)
    out_axes = [_batch_axis_of(one, two, i) for i, (one, two) in enumerate(zip(ones, twos))]
    empty = tuple(np.empty(one.shape[:a] + (0,) + one.shape[a + 1:], one.dtype)
                  for one, a in zip(ones, out_axes))

    # the model once per worker: scattered to all of them, or shared by local threads
    ref = shipped if client is None else client.scatter(shipped, broadcast=True, hash=False)

    x_blocks = x.to_delayed().reshape(-1)        # one block per batch chunk, in order
    l_blocks = [None] * len(x_blocks) if lengths is None else list(lengths.to_delayed())
    apply = dask.delayed(_apply, pure=True, nout=len(ones))
    pieces: List[List[da.Array]] = [[] for _ in ones]
    for xb, lb, rows in zip(x_blocks, l_blocks, batch_chunks):
        results = apply(ref, xb, lb, batch_axis, empty)
        for i, (one, axis) in enumerate(zip(ones, out_axes)):
            shape = one.shape[:axis] + (rows,) + one.shape[axis + 1:]
            pieces[i].append(da.from_delayed(results[i], shape, meta=one[:0]))
    joined = [da.concatenate(p, axis=axis) if len(p) > 1 else p[0]
              for p, axis in zip(pieces, out_axes)]
    # (concatenate leaves out empty chunks: put them back, so that chunk k is x's chunk k)
    joined = [a if a.chunks[axis] == batch_chunks else a.rechunk({axis: batch_chunks})
              for a, axis in zip(joined, out_axes)]
    return _rebuild(structure, joined)
