"""Linear, Embedding, Dropout, Sequential and Module: the pieces around the layers.

PyTorch's ``torch.nn`` names, arguments and numbers, in fastrnn's shape of
object (API.md, "Everything that trains"): ``y = m(x)`` runs forward and keeps
what backward needs (in training mode), ``dx = m.backward(dy)`` differentiates
that forward and **accumulates** the parameter gradients into ``m.grads``
under the ``state_dict()`` names; ``zero_grad``, ``parameters``,
``named_parameters``, ``state_dict``, ``load_state_dict``, ``train``,
``eval``, ``save`` as on the recurrent layers.

A model is a ``Module`` whose parts are attributes (these pieces, fastrnn's
layers and cells, other modules), or a ``Sequential``. Its parameters are its
parts', named with the part's attribute name as a prefix
(``"encoder.weight_ih_l0"``), as in ``torch.nn``. There is no autograd: a
model's ``backward`` calls its parts' ``backward`` in reverse, explicitly.

What a training forward keeps for backward is the calling thread's own, as
for the layers (``fastrnn.layers._per_thread``).

No piece here needs a kernel of its own: Linear is one BLAS product per call
each way, Embedding's gather is one indexing and its scatter-add one
``np.add.at`` over flat indices (``_scatter_add``; ``_scatter_add_reference``
is the row-wise ``np.add.at`` it is tested against).
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastrnn._archive import PathOrFile, Saveable
from fastrnn._common import _check_names, _fill_docs
from fastrnn._validation import (ARRAY_OVERHEAD, _as_array, _check_flag, _check_memory,
                                 _check_positive_int, _check_seed, _dtype, _numbers)
from fastrnn.bidirectional import Bidirectional
from fastrnn.cells import _CellBase
from fastrnn.layers import _ParameterAttributes, _per_thread, _RNNBase

__all__ = ["Module", "Linear", "Embedding", "Dropout", "Sequential"]

_M = TypeVar("_M", bound="Module")

#: What a model may hold as a part (an attribute, or an entry of a Sequential).
PARTS = (_RNNBase, Bidirectional, _CellBase)


def _is_part(value: Any) -> bool:
    return isinstance(value, (Module,) + PARTS)


def _class_name(obj: Any) -> str:
    """The name ``save`` writes: fastrnn's classes by name, others qualified
    (so that a class of your own is never taken for one of fastrnn's)."""
    cls = type(obj)
    if cls.__module__.startswith("fastrnn."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


# the texts the pieces' docstrings share (filled in by _doc)
_DOCS = {
    "dtype": """\
    dtype : float32 or float64, default float32
        The dtype of the parameters and outputs; inputs are converted to it.""",
    "raises": """\
    Raises
    ------
    ValueError, TypeError
        For an argument of the wrong type or range, naming it.
    MemoryError
        When the parameters and their gradients would not fit in this
        process's memory.""",
    "backward": """\
        d_output : array_like or None
            The gradient of the output, with its shape; None: zeros.
        retain_graph : bool, default False
            Keep the forward for another backward (by default a forward is
            differentiated once, as in PyTorch).""",
    "backward_raises": """\
        Raises
        ------
        ValueError
            When there is no training forward to differentiate, or d_output
            has the wrong shape; nothing changes then.""",
}
_doc = _fill_docs(_DOCS)


# ------------------------------------------------------------------- Module

class Module(_ParameterAttributes, Saveable):
    """The base of fastrnn's pieces and of your models (``torch.nn.Module``'s role).

    Subclass it, assign the parts as attributes in ``__init__`` (after
    ``super().__init__()``), and write ``forward`` and ``backward``; calling
    the model runs ``forward``. The parameters, gradients, modes and saving
    then come from the parts, in the order they were assigned. Parts kept in
    a list or a dict are not found: use a Sequential, or an attribute each.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> class Tagger(fastrnn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.rnn = fastrnn.GRU(3, 8, seed=0)
    ...         self.head = fastrnn.Linear(8, 2, seed=0)
    ...     def forward(self, x):
    ...         out, _ = self.rnn(x)
    ...         return self.head(out)
    ...     def backward(self, d_logits):
    ...         dx, _ = self.rnn.backward(self.head.backward(d_logits))
    ...         return dx
    >>> model = Tagger()
    >>> logits = model(np.ones((5, 4, 3)))            # (T, B, 2)
    >>> dx = model.backward(np.ones_like(logits))
    >>> [name for name, _ in model.named_parameters()][:2]
    ['rnn.weight_ih_l0', 'rnn.weight_hh_l0']
    >>> model.grads["head.bias"]
    array([20., 20.], dtype=float32)
    """

    #: Training mode: a call keeps what backward needs (``train()``, ``eval()``).
    training = True

    def __init__(self) -> None:
        self.training = True
        self._params: Dict[str, np.ndarray] = {}
        self._grads: Dict[str, np.ndarray] = {}

    # -- what a subclass writes

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model's computation; ``model(...)`` calls it."""
        raise NotImplementedError(f"{type(self).__name__}.forward: define it in your subclass")

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """The gradient of forward's inputs from its outputs'; parameter
        gradients accumulate into ``grads``."""
        raise NotImplementedError(f"{type(self).__name__}.backward: define it in your subclass")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- parts and parameters

    def _own(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """This module's own parameters and gradients (empty when a subclass
        did not call ``Module.__init__``)."""
        return self.__dict__.get("_params", {}), self.__dict__.get("_grads", {})

    def _parameter_arrays(self) -> Mapping[str, np.ndarray]:
        return self._own()[0]

    def register_parameter(self, name: str, value: ArrayLike) -> np.ndarray:
        """Add a parameter of this module's own (its gradient starts at zeros).

        Parameters
        ----------
        name : str
            Its name in ``state_dict`` and ``grads``; also an attribute.
        value : array_like
            Its initial value (a float32 or float64 array is kept as is, other
            numbers become float64).

        Returns
        -------
        ndarray
            The live parameter array.

        Raises
        ------
        ValueError
            When the name is taken, or not an identifier.
        TypeError
            When value is not real numbers.
        """
        if "_params" not in self.__dict__:
            Module.__init__(self)
        if not isinstance(name, str) or not name.isidentifier() or name in self._params \
                or name in self.__dict__:
            raise ValueError(f"name: expected a new identifier, got {name!r}")
        arr = _numbers(name, value)
        arr = _as_array(name, arr, arr.dtype if arr.dtype in (np.float32, np.float64)
                        else np.float64).copy()
        self._params[name] = arr
        self._grads[name] = np.zeros_like(arr)
        return arr

    def named_children(self) -> List[Tuple[str, Any]]:
        """(attribute name, part) of every part, in the order they were assigned."""
        return [(name, value) for name, value in vars(self).items() if _is_part(value)]

    def children(self) -> List[Any]:
        """The parts, in the order of ``named_children``."""
        return [part for _, part in self.named_children()]

    def named_parameters(self) -> List[Tuple[str, np.ndarray]]:
        """(name, live array) of every parameter: this module's own, then each
        part's under ``"<part>.<name>"``. Update the arrays in place."""
        named = list(self._own()[0].items())
        for prefix, part in self.named_children():
            named += [(f"{prefix}.{name}", p) for name, p in part.named_parameters()]
        return named

    def parameters(self) -> List[np.ndarray]:
        """The live parameter arrays, in ``named_parameters`` order."""
        return [p for _, p in self.named_parameters()]

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        """The accumulated parameter gradients under the ``state_dict`` names:
        the live arrays backward adds to (clip them in place)."""
        grads = dict(self._own()[1])
        for prefix, part in self.named_children():
            grads.update((f"{prefix}.{name}", g) for name, g in part.grads.items())
        return grads

    def zero_grad(self) -> None:
        """Clear the accumulated gradients of this module and of every part."""
        for g in self._own()[1].values():
            g.fill(0)
        for part in self.children():
            part.zero_grad()

    def state_dict(self) -> Dict[str, np.ndarray]:
        """A copy of every parameter, under the ``named_parameters`` names."""
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Load every parameter by name; nothing changes unless all of them load.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Every name of ``state_dict()`` and nothing else, each with its
            shape; values are converted to the parameter's dtype.

        Raises
        ------
        ValueError
            When an entry is missing, unexpected or misshapen.
        TypeError
            When state_dict is not a mapping, or an entry is not real numbers.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        params = dict(self.named_parameters())
        _check_names("state_dict", state_dict, list(params))
        loaded = {}
        for name, p in params.items():
            arr = _as_array(f"state_dict[{name!r}]", state_dict[name], p.dtype)
            if arr.shape != p.shape:
                raise ValueError(f"state_dict[{name!r}]: expected shape {p.shape}, "
                                 f"got {arr.shape}")
            loaded[name] = arr
        # every entry is checked: the parts' own checks pass
        for name, p in self._own()[0].items():
            p[...] = loaded[name]
        for prefix, part in self.named_children():
            part.load_state_dict({name: loaded[f"{prefix}.{name}"]
                                  for name, _ in part.named_parameters()})

    # -- modes and state

    def train(self: _M, mode: bool = True) -> _M:
        """Set the mode of this module and of every part.

        Parameters
        ----------
        mode : bool, default True
            True: calls keep what backward needs (training); False: they keep
            nothing (``eval()``).

        Returns
        -------
        Module
            self, for chaining (``model = Model().eval()``).

        Raises
        ------
        TypeError
            When mode is not True or False; no mode changes then.
        """
        self.training = _check_flag("mode", mode)
        for part in self.children():
            part.train(mode)
        return self

    def eval(self: _M) -> _M:
        """Set inference mode here and in every part: calls keep nothing for
        backward. Returns the module."""
        return self.train(False)

    def reset_state(self) -> None:
        """Forget the state every stateful layer among the parts carries."""
        for part in self.children():
            if hasattr(part, "reset_state"):
                part.reset_state()

    # -- saving

    def _args(self) -> Optional[Dict[str, Any]]:
        """The constructor arguments ``save`` writes (fastrnn's pieces); None
        for a model, which is built by its own code."""
        return None

    def _config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"class": _class_name(self)}
        args = self._args()
        if args is not None:
            config["args"] = args
        config["training"] = bool(self.training)
        rng = self.__dict__.get("_rng")
        if rng is not None:
            config["rng"] = rng.bit_generator.state
        children = self.named_children()
        if children:
            config["modules"] = {name: part._config() for name, part in children}
        return config

    def save(self, path: PathOrFile) -> None:
        """Write the configuration and the weights to one .npz archive.

        The same file format as the layers' (fastrnn.serialize): the
        parameters under their ``state_dict`` names and a JSON configuration
        (classes, constructor arguments, training flags, random generator
        states). ``fastrnn.load(path)`` rebuilds fastrnn's own classes
        (Linear, Embedding, Dropout, Sequential of fastrnn's parts); a model
        of your own class is built by your code and loads with
        ``model.load(path)``. Gradients are not saved.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            Where to write; a file name is used exactly as given.

        Raises
        ------
        OSError
            When the file cannot be written.

        Examples
        --------
        >>> import io, fastrnn
        >>> model = fastrnn.Sequential(fastrnn.GRU(3, 8, seed=0), fastrnn.Linear(8, 2, seed=0))
        >>> buffer = io.BytesIO()
        >>> model.save(buffer)
        >>> _ = buffer.seek(0)
        >>> twin = fastrnn.load(buffer)
        >>> type(twin).__name__, [type(part).__name__ for part in twin]
        ('Sequential', ['GRU', 'Linear'])
        """
        super().save(path)

    def load(self: _M, path: PathOrFile) -> _M:
        """Load what ``save`` wrote into this model: weights, training flags,
        random generator states.

        The file's weights must have exactly this model's names and shapes;
        each entry's header is checked against them before its data is read
        (fastrnn.serialize). Nothing changes when anything is raised.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            A file written by ``save`` (of a model built the same way).

        Returns
        -------
        The module itself.

        Raises
        ------
        ValueError
            When path is not a fastrnn file, or its weights are not this
            model's names and shapes.
        TypeError, FileNotFoundError, IsADirectoryError, PermissionError
            As ``fastrnn.load``.
        """
        from fastrnn.serialize import load_into   # serialize imports this module
        load_into(self, path)
        return self

    # -- pickling and printing

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_records", None)   # the threads' records: a threading.local
        return state

    def extra_repr(self) -> str:
        """The arguments ``repr`` shows (a piece's constructor arguments)."""
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({name}): " + repr(part).replace("\n", "\n  ")
                 for name, part in self.named_children()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _gradient(d_output: ArrayLike, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """d_output as an array of dtype with the forward output's shape."""
    d = _as_array("d_output", d_output, dtype)
    if d.shape != shape:
        raise ValueError(f"d_output: expected the output's shape {shape}, got {d.shape}")
    return d


def _kept_copy(arr: np.ndarray, given: Any) -> np.ndarray:
    """arr, copied when it is the caller's data: backward must see this
    forward's input, whatever the caller does to it after."""
    return arr.copy() if isinstance(given, np.ndarray) and np.may_share_memory(arr, given) \
        else arr


class _Piece(Module):
    """A piece of one input and one output whose training forward keeps a
    record for backward (Linear, Embedding, Dropout): the record is the
    calling thread's own, and ``backward`` differentiates it once."""

    # what the calling thread's last training forward kept for backward
    _saved = _per_thread("module_saved")

    def _mode(self, training: Optional[bool]) -> bool:
        return self.training if training is None else _check_flag("training", training)

    def _keep(self, record: Any) -> None:
        """Keep what backward needs (None after an inference call); an
        inference call after another sets nothing (it costs microseconds)."""
        if record is not None or self._saved is not None:
            self._saved = record

    def _backward(self, saved: Any, d_output: Optional[ArrayLike]) -> Any:
        """The input's gradient from the record of the forward and d_output
        (None: zeros), adding the parameters' gradients; it checks d_output
        before changing anything."""
        raise NotImplementedError

    @_doc
    def backward(self, d_output: Optional[ArrayLike], retain_graph: bool = False) -> Any:
        """Backpropagate through the calling thread's last training forward.

        Parameter gradients accumulate into ``grads``.

        Parameters
        ----------
%(backward)s

        Returns
        -------
        ndarray or None
            The gradient of the input, with its shape (None for an Embedding:
            ids have no gradient).

%(backward_raises)s
        """
        retain_graph = _check_flag("retain_graph", retain_graph)
        saved = self._saved
        if saved is None:
            raise ValueError(f"backward: no training forward of this {type(self).__name__} "
                             f"to differentiate (none since the last backward; call it in "
                             f"training mode first, or pass retain_graph=True to the "
                             f"backward that should keep it)")
        d_input = self._backward(saved, d_output)
        if not retain_graph:
            self._saved = None     # a forward is differentiated once, as in PyTorch
        return d_input


# ------------------------------------------------------------------- Linear

@_doc
class Linear(_Piece):
    """y = x W^T + b over any leading dimensions (``torch.nn.Linear``).

    Parameters
    ----------
    in_features : int
        The size of x's last dimension.
    out_features : int
        The size of y's last dimension.
    bias : bool, default True
        Whether there is a bias b.
%(dtype)s
    seed : int, optional
        Seeds the initialisation, U(-1/sqrt(in_features), 1/sqrt(in_features))
        for W and b as PyTorch's.

    Attributes
    ----------
    weight : ndarray
        (out_features, in_features), the live parameter.
    bias : ndarray or None
        (out_features,), the live parameter; None when bias=False.

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> head = fastrnn.Linear(8, 3, seed=0)
    >>> y = head(np.ones((5, 2, 8)))                  # (T, B, 8) -> (T, B, 3)
    >>> dx = head.backward(np.ones_like(y))
    >>> y.shape, dx.shape, head.grads["weight"].shape
    ((5, 2, 3), (5, 2, 8), (3, 8))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: DTypeLike = np.float32, seed: Optional[int] = None) -> None:
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        has_bias = _check_flag("bias", bias)
        self.dtype = _dtype(dtype)
        n = self.out_features * (self.in_features + has_bias)
        # parameters and gradients, and the float64 draw of the weight
        _check_memory("in_features", 2 * n * self.dtype.itemsize + 8 * n + 4 * ARRAY_OVERHEAD,
                      f"Linear({self.in_features}, {self.out_features}, "
                      f"{self.dtype.name}): the parameters and their gradients")
        rng = _check_seed(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shapes = {"weight": (self.out_features, self.in_features)}
        if has_bias:
            shapes["bias"] = (self.out_features,)
        for name, shape in shapes.items():
            self._params[name] = rng.uniform(-bound, bound, shape).astype(self.dtype)
            self._grads[name] = np.zeros(shape, self.dtype)

    def __getattr__(self, name: str) -> Any:
        params = self._parameter_arrays()
        if name == "bias" and "weight" in params and "bias" not in params:
            return None   # bias=False, as torch.nn.Linear
        return super().__getattr__(name)

    def forward(self, x: ArrayLike, training: Optional[bool] = None) -> np.ndarray:
        """y = x W^T + b.

        Parameters
        ----------
        x : array_like
            (..., in_features), any number of leading dimensions (at least
            the feature one).
        training : bool, optional
            Keep x for backward; None: the module's mode.

        Returns
        -------
        ndarray
            (..., out_features).

        Raises
        ------
        ValueError, TypeError
            When x is not real numbers or its last dimension is not in_features.
        """
        training = self._mode(training)
        arr = _as_array("x", x, self.dtype)
        if arr.ndim == 0 or arr.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}) (..., in_features), "
                             f"got {arr.shape}")
        y = self._infer(arr)
        self._keep(_kept_copy(arr, x) if training else None)
        return y

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """y = x W^T + b for a checked x (the Stepper's lean path)."""
        # y = x @ W^T + b
        y = x @ self._params["weight"].T
        if "bias" in self._params:
            y += self._params["bias"]
        return y

    def _backward(self, x: np.ndarray, d_output: Optional[ArrayLike]) -> np.ndarray:
        if d_output is None:
            return np.zeros_like(x)
        dy = _gradient(d_output, x.shape[:-1] + (self.out_features,), self.dtype)
        rows_x = x.reshape(-1, self.in_features)              # (N, in)
        rows_dy = dy.reshape(-1, self.out_features)           # (N, out)
        # dW += dy^T x ; db += sum over rows of dy
        self._grads["weight"] += rows_dy.T @ rows_x
        if "bias" in self._grads:
            self._grads["bias"] += rows_dy.sum(axis=0)
        # dx = dy W
        return (rows_dy @ self._params["weight"]).reshape(x.shape)

    def _args(self) -> Dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": "bias" in self._params, "dtype": self.dtype.name}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={'bias' in self._params}, dtype={self.dtype.name}")


# ---------------------------------------------------------------- Embedding

def _scatter_add_reference(grad: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """grad[ids[n]] += rows[n] for every n: the plain NumPy statement."""
    np.add.at(grad, ids, rows)


def _scatter_add(grad: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """grad[ids[n]] += rows[n] for every n (grad (V, E) C-contiguous, ids (N,),
    rows (N, E)), as _scatter_add_reference and in the same order, 2-5x
    faster: np.add.at over the flat arrays takes NumPy's one-dimensional fast
    path, where the rows of a two-dimensional add.at are added one by one."""
    if not grad.flags.c_contiguous:          # no flat view to add into
        _scatter_add_reference(grad, ids, rows)
        return
    E = grad.shape[1]
    flat = (ids[:, None] * E + np.arange(E)).reshape(-1)      # (N*E,) into grad's elements
    np.add.at(grad.reshape(-1), flat, rows.reshape(-1))


def _ids(name: str, value: ArrayLike, num: int) -> np.ndarray:
    """value as an integer array of indices in [0, num)."""
    arr = _numbers(name, value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected integer indices, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= num)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected indices in [0, {num}), got {arr[where]} at "
                         f"{where}")
    return arr.astype(np.intp, copy=False)


@_doc
class Embedding(_Piece):
    """Rows of a table by index (``torch.nn.Embedding``): ids (...) -> (..., embedding_dim).

    The gradient of the table is a scatter-add of the output's gradient into
    the rows the forward read.

    Parameters
    ----------
    num_embeddings : int
        The rows of the table (the vocabulary).
    embedding_dim : int
        The size of each vector.
    padding_idx : int, optional
        A row that stays zero: initialised to zeros and given no gradient
        (negative counts from the end, as PyTorch's).
%(dtype)s
    seed : int, optional
        Seeds the initialisation, N(0, 1) as PyTorch's.

    Attributes
    ----------
    weight : ndarray
        (num_embeddings, embedding_dim), the live parameter.

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> embed = fastrnn.Embedding(10, 4, seed=0)
    >>> vectors = embed(np.array([[1, 2], [3, 1]]))    # ids (T, B) -> (T, B, 4)
    >>> embed.backward(np.ones_like(vectors))          # ids have no gradient: None
    >>> vectors.shape, embed.grads["weight"][1]
    ((2, 2, 4), array([2., 2., 2., 2.], dtype=float32))
    """

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 padding_idx: Optional[int] = None, dtype: DTypeLike = np.float32,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        self.num_embeddings = _check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = _check_positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            V = self.num_embeddings
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
                    or not -V <= padding_idx < V:
                raise ValueError(f"padding_idx: expected None or an integer in [{-V}, {V}), "
                                 f"got {padding_idx!r}")
            padding_idx = int(padding_idx) % V
        self.padding_idx = padding_idx
        self.dtype = _dtype(dtype)
        n = self.num_embeddings * self.embedding_dim
        _check_memory("num_embeddings", 2 * n * self.dtype.itemsize + 8 * n + 2 * ARRAY_OVERHEAD,
                      f"Embedding({self.num_embeddings}, {self.embedding_dim}, "
                      f"{self.dtype.name}): the table and its gradient")
        weight = _check_seed(seed).standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0
        self._params["weight"] = weight.astype(self.dtype)
        self._grads["weight"] = np.zeros_like(self._params["weight"])

    def forward(self, input: ArrayLike, training: Optional[bool] = None) -> np.ndarray:
        """The rows ``weight[input]``.

        Parameters
        ----------
        input : array_like of int
            Indices in [0, num_embeddings), any shape.
        training : bool, optional
            Keep the indices for backward; None: the module's mode.

        Returns
        -------
        ndarray
            input.shape + (embedding_dim,).

        Raises
        ------
        TypeError
            When input is not integers.
        ValueError
            When an index is out of range (the message names the first).
        """
        training = self._mode(training)
        ids = _ids("input", input, self.num_embeddings)
        self._keep(ids.copy() if training else None)
        return self._infer(ids)

    def _infer(self, ids: np.ndarray) -> np.ndarray:
        """The rows of checked ids (the Stepper's lean path)."""
        return self._params["weight"][ids]

    def _backward(self, ids: np.ndarray, d_output: Optional[ArrayLike]) -> None:
        if d_output is None:
            return None
        dy = _gradient(d_output, ids.shape + (self.embedding_dim,), self.dtype)
        ids, rows = ids.reshape(-1), dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = ids != self.padding_idx      # the padding row gets no gradient
            ids, rows = ids[keep], rows[keep]
        if ids.size:
            # dW[ids[n]] += dy[n]
            _scatter_add(self._grads["weight"], ids, rows)
        return None

    def _args(self) -> Dict[str, Any]:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "dtype": self.dtype.name}

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}, dtype={self.dtype.name}"


# ------------------------------------------------------------------ Dropout

class Dropout(_Piece):
    """Zero each element with probability p in training, scale the rest by 1/(1-p)
    (``torch.nn.Dropout``); the identity in inference.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
        The probability of zeroing an element.
    seed : int, optional
        Seeds the masks.

    Raises
    ------
    ValueError
        When p is not in [0, 1].

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> drop = fastrnn.Dropout(0.5, seed=0)
    >>> y = drop(np.ones(6))
    >>> sorted(set(y.tolist()))                       # zeros and 1/(1-p)
    [0.0, 2.0]
    >>> bool((drop.backward(np.ones(6)) == y).all())
    True
    """

    def __init__(self, p: float = 0.5, seed: Optional[int] = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) \
                or not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self._rng = _check_seed(seed)

    def forward(self, input: ArrayLike, training: Optional[bool] = None) -> np.ndarray:
        """input * mask / (1 - p) in training, input in inference.

        Parameters
        ----------
        input : array_like
            Any shape; float32 and float64 are kept, other numbers become float64.
        training : bool, optional
            None: the module's mode.

        Returns
        -------
        ndarray
            input's shape.

        Raises
        ------
        TypeError
            When input is not real numbers.
        """
        training = self._mode(training)
        x = _numbers("input", input)
        x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
        if not training:
            self._keep(None)
            return x
        if self.p == 0:
            mask = np.ones_like(x)
        else:
            keep = 1.0 - self.p
            # inverted dropout, so that inference needs no scaling
            mask = (self._rng.random(x.shape) < keep).astype(x.dtype)
            if keep:
                mask /= x.dtype.type(keep)
        self._keep(mask)
        return x * mask

    def _backward(self, mask: np.ndarray, d_output: Optional[ArrayLike]) -> np.ndarray:
        # d_input = d_output * mask / (1 - p), the forward's mask
        if d_output is None:
            return np.zeros_like(mask)
        return _gradient(d_output, mask.shape, mask.dtype) * mask

    def _args(self) -> Dict[str, Any]:
        return {"p": self.p}

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------- Sequential

def _first(value: Any) -> Any:
    """A recurrent layer's output without its state; anything else as it is."""
    return value[0] if isinstance(value, tuple) else value


class Sequential(Module):
    """Parts run one after the other (``torch.nn.Sequential``); backward in reverse.

    Each part gets the previous part's output. A recurrent layer
    (RNN/LSTM/GRU/Bidirectional) passes on its output and drops its final
    state (build it ``stateful=True`` to carry the state into the next
    call); its backward passes on dx. Parameters are named by position
    (``"1.weight_ih_l0"``). For explicit states, lengths or several inputs,
    write a ``Module``.

    Parameters
    ----------
    *modules
        Linear, Embedding, Dropout, RNN, LSTM, GRU, Bidirectional, a
        Sequential or a Module of your own (whose forward takes one input).

    Raises
    ------
    TypeError
        For a part that is none of these (a cell, which needs its state, is
        refused: step it in a Module of your own).

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> model = fastrnn.Sequential(
    ...     fastrnn.Embedding(10, 8, seed=0),
    ...     fastrnn.LSTM(8, 16, stateful=True, seed=0),
    ...     fastrnn.Linear(16, 10, seed=0))
    >>> logits = model(np.zeros((5, 2), dtype=int))    # ids (T, B) -> (T, B, 10)
    >>> model.backward(np.ones_like(logits))          # None: the ids have no gradient
    >>> logits.shape, len(model), model.grads["2.bias"].shape
    ((5, 2, 10), 3, (10,))
    """

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        for i, part in enumerate(modules):
            if isinstance(part, _CellBase) or not _is_part(part):
                raise TypeError(f"modules[{i}]: expected a fastrnn layer or module (a cell "
                                f"needs its state: step it in a Module of your own), got "
                                f"{type(part).__name__}")
        self._modules: Tuple[Any, ...] = tuple(modules)

    def named_children(self) -> List[Tuple[str, Any]]:
        """("0", first part), ("1", second part), ..."""
        return [(str(i), part) for i, part in enumerate(self._modules)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._modules)

    def __getitem__(self, index: int) -> Any:
        return self._modules[index]

    def forward(self, x: Any, training: Optional[bool] = None) -> Any:
        """Run every part in order.

        Parameters
        ----------
        x : array_like
            The first part's input.
        training : bool, optional
            Passed to every part; None: each part's mode.

        Returns
        -------
        The last part's output (a recurrent layer's without its state).

        Raises
        ------
        ValueError, TypeError
            What a part raises, for its input.
        """
        kwargs = {} if training is None else {"training": _check_flag("training", training)}
        for part in self._modules:
            x = _first(part(x, **kwargs))
        return x

    def backward(self, d_output: Any, retain_graph: bool = False) -> Any:
        """Backpropagate through every part's last training forward, in reverse.

        Parameters
        ----------
        d_output : array_like
            The gradient of the last part's output.
        retain_graph : bool, default False
            Keep every part's forward for another backward.

        Returns
        -------
        The gradient of the first part's input (None when it is an Embedding).

        Raises
        ------
        ValueError
            What a part raises: no training forward, a gradient's shape.
        """
        kwargs = {"retain_graph": True} if _check_flag("retain_graph", retain_graph) else {}
        d = d_output
        for part in reversed(self._modules):
            d = _first(part.backward(d, **kwargs))
        return d
