"""Data-parallel training over MPI processes: one model per process, one batch split between them.

    from mpi4py import MPI
    import fastrnn, fastrnn.mpi

    comm = MPI.COMM_WORLD
    model = Model(...)                                    # built the same way in every process
    fastrnn.mpi.broadcast_parameters(model, comm)         # every process starts from rank 0's
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-3)
    for batch in batches:
        rows = batch[comm.rank::comm.size]                # this process's share of the batch
        loss = loss_fn(model(x[rows]), y[rows])
        model.zero_grad(); model.backward(loss_fn.backward())
        fastrnn.mpi.allreduce_gradients(model, comm, weight=len(rows))   # the batch's gradient
        opt.step(model.grads)                             # the same step in every process

    mpiexec -n 4 python train.py                          # or srun, across machines

Every process keeps a whole copy of the model and its optimizer; per step
they exchange only the gradients, in place: ``allreduce_gradients`` sums
every process's gradients in one ``MPI_Allreduce`` of one flat buffer (one per
dtype, when a model mixes float32 and float64) and divides by the number of
processes, or, with ``weight``, by the sum of the weights of what each process
averaged over. After it every process holds the same gradients, so identical
optimizer steps keep identical parameters: N processes on N shares of a batch
compute what one process computes on the whole batch, up to rounding.

Both functions take any of fastrnn's layers, cells or models (anything with
``named_parameters()`` and ``grads``), and any mpi4py communicator; they are
collective: every process of ``comm`` calls them, in the same order, with
models of the same parameters (``broadcast_parameters`` checks that).

Importing this module needs mpi4py (``pip install 'fastrnn[mpi]'``, which
also installs MPICH); importing fastrnn does not import it, and this module
initializes MPI only when a function is first called without a communicator.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

try:
    import mpi4py  # noqa: F401  (mpi4py.MPI, which initializes MPI, is imported when used)
except ImportError as error:   # pragma: no cover - the tests run with mpi4py or skip
    raise ImportError(f"fastrnn.mpi needs mpi4py ({error}): pip install 'fastrnn[mpi]' (or "
                      f"pip install mpi4py mpich)") from error

__all__ = ["broadcast_parameters", "allreduce_gradients"]


def _comm(comm: Any) -> Tuple[Any, Any]:
    """(the MPI module, the communicator): COMM_WORLD for None."""
    from mpi4py import MPI
    if comm is None:
        return MPI, MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm: expected an mpi4py communicator (MPI.COMM_WORLD), got "
                        f"{type(comm).__name__}")
    return MPI, comm


def _named(model: Any, what: str) -> List[Tuple[str, np.ndarray]]:
    """model's live (name, array) pairs: its parameters, or (what="grads")
    their gradients in the same order."""
    if not (hasattr(model, "named_parameters") and hasattr(model, "grads")):
        raise TypeError(f"model: expected a fastrnn layer, cell or model (with "
                        f"named_parameters() and grads), got {type(model).__name__}")
    params = model.named_parameters()
    if what == "params":
        return params
    grads = model.grads
    return [(name, grads[name]) for name, _ in params]


def _by_dtype(named: List[Tuple[str, np.ndarray]]) -> Dict[np.dtype, List[np.ndarray]]:
    """The arrays grouped by dtype (float32, float64), each group in model order."""
    groups: Dict[np.dtype, List[np.ndarray]] = {}
    for _, arr in named:
        groups.setdefault(arr.dtype, []).append(arr)
    return dict(sorted(groups.items(), key=lambda item: item[0].itemsize))


def _mismatch(signatures: List[Any], root: int) -> Optional[str]:
    """Where the processes' (name, shape, dtype) lists first differ from root's."""
    for rank, signature in enumerate(signatures):
        if signature != signatures[root]:
            theirs, roots = dict(signature), dict(signatures[root])
            for name in list(roots) + list(theirs):
                if theirs.get(name) != roots.get(name):
                    return (f"rank {rank} has {name!r} as {theirs.get(name, 'missing')}, rank "
                            f"{root} as {roots.get(name, 'missing')}")
            return f"rank {rank} has its parameters in another order than rank {root}"
    return None


def broadcast_parameters(model: Any, comm: Any = None, root: int = 0) -> None:
    """Give every process root's parameters, in place (call it before training).

    Collective: every process of ``comm`` calls it with its own copy of the
    model. It first checks that the copies have the same parameter names,
    shapes and dtypes (every process raises if not), then broadcasts root's
    values in one ``MPI_Bcast`` of one flat buffer per dtype and writes them
    into the live arrays, as an optimizer's update does.

    Parameters
    ----------
    model : fastrnn layer, cell or model
        Anything with ``named_parameters()`` and ``grads`` (RNN, LSTM, GRU,
        Bidirectional, the cells, Linear, Embedding, Sequential, a Module).
    comm : mpi4py.MPI.Comm, optional
        The processes; None: ``MPI.COMM_WORLD``.
    root : int, default 0
        The rank whose parameters every process gets.

    Raises
    ------
    TypeError
        When model is not one of fastrnn's, or comm not a communicator.
    ValueError
        When root is not a rank of comm, or the processes' models differ in
        their parameters' names, shapes or dtypes (on every process).

    Examples
    --------
    >>> from mpi4py import MPI
    >>> import numpy as np, fastrnn, fastrnn.mpi
    >>> comm = MPI.COMM_WORLD                 # mpiexec -n 2 python ...: two processes
    >>> model = fastrnn.GRU(3, 8, seed=comm.rank)
    >>> fastrnn.mpi.broadcast_parameters(model, comm)
    >>> np.array_equal(model.weight_hh_l0, fastrnn.GRU(3, 8, seed=0).weight_hh_l0)
    True
    """
    MPI, comm = _comm(comm)
    if isinstance(root, bool) or not isinstance(root, numbers.Integral) \
            or not 0 <= root < comm.size:
        raise ValueError(f"root: expected a rank of comm, in [0, {comm.size}), got {root!r}")
    named = _named(model, "params")
    signature = [(name, (tuple(p.shape), p.dtype.name)) for name, p in named]
    problem = _mismatch(comm.allgather(signature), root)
    if problem:
        raise ValueError(f"model: expected the same parameters in every process, but {problem}")
    for dtype, arrays in _by_dtype(named).items():
        buffer = np.concatenate([p.reshape(-1) for p in arrays]) if comm.rank == root else \
            np.empty(sum(p.size for p in arrays), dtype)
        comm.Bcast(buffer, root=root)
        if comm.rank != root:
            _scatter_back(buffer, arrays)


def _scatter_back(buffer: np.ndarray, arrays: List[np.ndarray]) -> None:
    """arrays[k][...] = their slice of the flat buffer, in order."""
    offset = 0
    for arr in arrays:
        arr[...] = buffer[offset:offset + arr.size].reshape(arr.shape)
        offset += arr.size


def allreduce_gradients(model: Any, comm: Any = None, weight: Optional[float] = None) -> None:
    """Average the gradients over the processes, in place: one call per step, after backward.

    Every process's ``model.grads`` becomes the mean of all the processes'
    (with ``weight``: their weighted mean), so that the optimizer steps that
    follow are the same everywhere. One ``MPI_Allreduce`` of one flat buffer
    per dtype: the gradients times the weight, and the weight itself as the
    last element.

    Parameters
    ----------
    model : fastrnn layer, cell or model
        Anything with ``named_parameters()`` and ``grads``; the gradients are
        the live arrays backward accumulated into.
    comm : mpi4py.MPI.Comm, optional
        The processes; None: ``MPI.COMM_WORLD``.
    weight : float, optional
        This process's share: with a loss averaged over the process's rows,
        the number of rows, so that the result is the gradient of the loss
        averaged over the whole batch however the rows were split (a share
        may be empty: weight 0 and zero gradients). None: 1 for every process,
        the plain mean (shares of equal size).

    Raises
    ------
    TypeError
        When model is not one of fastrnn's, or comm not a communicator.
    ValueError
        When weight is negative or not finite, or the weights sum to 0 (then
        on every process, with the gradients unchanged).

    Examples
    --------
    >>> from mpi4py import MPI
    >>> import numpy as np, fastrnn, fastrnn.mpi
    >>> comm = MPI.COMM_WORLD
    >>> head = fastrnn.Linear(4, 2, seed=0)
    >>> rows = np.ones((6, 4))[comm.rank::comm.size]     # this process's rows of the batch
    >>> logits = head(rows)
    >>> _ = head.backward(np.ones_like(logits) / len(rows))   # d mean(logits) / d logits
    >>> fastrnn.mpi.allreduce_gradients(head, comm, weight=len(rows))
    >>> head.grads["bias"]                                # the whole batch's, in every process
    array([1., 1.], dtype=float32)
    """
    MPI, comm = _comm(comm)
    w = 1.0 if weight is None else weight
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= w < np.inf:
        raise ValueError(f"weight: expected a finite number >= 0, got {weight!r}")
    for dtype, arrays in _by_dtype(_named(model, "grads")).items():
        # buffer = [w * g for every gradient g, flattened] + [w]
        buffer = np.empty(sum(g.size for g in arrays) + 1, dtype)
        offset = 0
        for g in arrays:
            np.multiply(g.reshape(-1), w, out=buffer[offset:offset + g.size])
            offset += g.size
        buffer[-1] = w
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        total = buffer[-1]
        if total <= 0:
            raise ValueError(f"weight: expected weights that sum to more than 0 over the "
                             f"processes, got {float(total)} (this process's: {weight!r})")
        # the weighted mean: sum_p w_p g_p / sum_p w_p
        buffer /= total
        _scatter_back(buffer[:-1], arrays)
