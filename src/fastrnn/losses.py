"""Losses and their gradients: MSE, cross-entropy and binary cross-entropy from logits.

PyTorch's ``torch.nn`` losses: the same names, arguments, defaults and
numbers. Each comes twice, as ``torch.nn.functional`` and ``torch.nn`` have
it:

    value, d_input = fastrnn.cross_entropy(logits, target)    # the function
    loss = fastrnn.CrossEntropyLoss()                          # the object
    value = loss(logits, target); d_input = loss.backward()

where ``d_input`` is the gradient of ``value`` with respect to the input
(what goes into the model's ``backward``). With ``reduction="none"`` the
value is the array of per-element losses and ``d_input`` the gradient of
their sum; ``backward(grad)`` weighs them.

Where fastrnn differs from PyTorch (said again where it applies):

- cross_entropy takes the class axis **last**, ``(..., C)`` with targets
  ``(...)``: the layout of a Linear's output over ``(T, B)``. PyTorch takes
  ``(N, C, d1, ...)``; for ``(N, C)`` the two agree. Targets are class ids
  only (no class probabilities, no label smoothing).
- cross_entropy takes a ``mask`` (False: a padded step, left out like
  ``ignore_index``); ``sequence_mask`` makes one from lengths.
- A loss that is not finite (NaN or infinite) raises ValueError naming what
  in the input made it so, as do a mean over no element and class ids out of
  range; PyTorch returns NaN or fails in its kernel.

Everything is computed in the input's dtype (float32 or float64), with sums
in float64; the log-softmax and the logistic loss are the stable forms.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike

from fastrnn._common import _fill_docs
from fastrnn._validation import _as_array, _check_choice, _lengths, _numbers
from fastrnn.layers import _per_thread

__all__ = ["mse_loss", "cross_entropy", "binary_cross_entropy_with_logits", "sequence_mask",
           "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss"]

#: A reduced loss (a float), or the per-element losses of reduction="none".
LossValue = Union[float, np.ndarray]

_REDUCTIONS = ("mean", "sum", "none")

_F = TypeVar("_F", bound=Callable[..., Any])


def _quiet(fn: _F) -> _F:
    """fn without NumPy's overflow and invalid-value warnings: _finite reports
    a loss that is not finite, with what made it so."""
    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(*args, **kwargs)
    return quiet  # type: ignore[return-value]


# ------------------------------------------------------------------ helpers

def _floats(name: str, value: ArrayLike) -> np.ndarray:
    """value as float32 or float64 (other numbers become float64)."""
    arr = _numbers(name, value)
    return _as_array(name, arr, arr.dtype if arr.dtype in (np.float32, np.float64)
                     else np.float64)


def _same_shape(name: str, arr: np.ndarray, shape: Tuple[int, ...], what: str) -> None:
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), got {arr.shape}")


def _finite(loss: str, value: Any, **inputs: np.ndarray) -> None:
    """ValueError when the loss value is NaN or infinite, naming the inputs
    with non-finite elements (or saying they are all finite)."""
    if np.all(np.isfinite(value)):
        return
    bad = [f"{name} has {int(np.size(a) - np.isfinite(a).sum())} non-finite elements"
           for name, a in inputs.items() if a is not None and not np.all(np.isfinite(a))]
    why = "; ".join(bad) if bad else "every input is finite: the loss overflowed"
    n = int(np.size(value) - np.isfinite(value).sum())
    raise ValueError(f"{loss}: the loss is not finite ({n} of the {np.size(value)} elements' "
                     f"losses); {why}")


def _reduce(loss: str, losses: np.ndarray, d: np.ndarray, reduction: str,
            count: Any) -> Tuple[LossValue, np.ndarray]:
    """(value, d_input) for the reduction, from the per-element losses and the
    gradient of their sum; ``count`` is what "mean" divides by."""
    if reduction == "none":
        return losses, d
    total = float(np.sum(losses, dtype=np.float64))
    if reduction == "sum":
        return total, d
    count = float(count)
    if count == 0:
        raise ValueError(f"{loss}: the mean of no element (every target is ignored, masked or "
                         f"of weight 0); use reduction='sum' or leave such a batch out")
    d /= d.dtype.type(count)
    return total / count, d


# -------------------------------------------------------------------- MSE

@_quiet
def mse_loss(input: ArrayLike, target: ArrayLike, reduction: str = "mean"
             ) -> Tuple[LossValue, np.ndarray]:
    """Mean squared error (``torch.nn.functional.mse_loss``) and its gradient.

    loss_i = (input_i - target_i)^2.

    Parameters
    ----------
    input, target : array_like
        The same shape (no broadcasting).
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    value : float or ndarray
        The reduced loss, or the per-element losses ("none").
    d_input : ndarray
        The gradient of value (of the losses' sum for "none") w.r.t. input.

    Raises
    ------
    ValueError
        When the shapes differ, or the loss is not finite.

    Examples
    --------
    >>> import fastrnn
    >>> fastrnn.mse_loss([1.0, 2.0], [1.0, 4.0])
    (2.0, array([ 0., -2.]))
    """
    reduction = _check_choice("reduction", reduction, _REDUCTIONS)
    x = _floats("input", input)
    y = _as_array("target", _numbers("target", target), x.dtype)
    _same_shape("target", y, x.shape, "the input's")
    diff = x - y
    losses = diff * diff
    _finite("mse_loss", losses, input=x, target=y)
    return _reduce("mse_loss", losses, 2 * diff, reduction, x.size)


# ---------------------------------------------------------- cross-entropy

def sequence_mask(lengths: ArrayLike, T: int, batch_first: bool = False) -> np.ndarray:
    """The mask of the valid steps of padded sequences: True where t < lengths[b].

    Parameters
    ----------
    lengths : array_like of int
        (B,), each in [0, T] (the layers' ``lengths``).
    T : int
        The padded length.
    batch_first : bool, default False
        Return (B, T) instead of (T, B).

    Returns
    -------
    ndarray of bool
        (T, B), or (B, T) when batch_first.

    Raises
    ------
    ValueError, TypeError
        When lengths is not integers in [0, T] of shape (B,).

    Examples
    --------
    >>> import fastrnn
    >>> fastrnn.sequence_mask([2, 0, 3], 3).astype(int)
    array([[1, 0, 1],
           [1, 0, 1],
           [0, 0, 1]])
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T: expected a non-negative integer, got {T!r}")
    shape = np.shape(lengths)
    if len(shape) != 1:
        raise ValueError(f"lengths: expected shape (B,) (one length per sequence), got {shape}")
    checked = _lengths(lengths, shape[0], int(T))     # None: every length is T
    arr = np.full(shape[0], T) if checked is None else checked
    mask = np.arange(T)[:, None] < arr[None, :]
    return mask.T.copy() if batch_first else mask


def _keep_mask(target: np.ndarray, ignore_index: int, mask: Optional[ArrayLike]) -> np.ndarray:
    """Which targets count: not ignore_index, and True in mask."""
    keep = target != ignore_index
    if mask is not None:
        m = _numbers("mask", mask)
        _same_shape("mask", m, target.shape, "the target's")
        if m.dtype != np.bool_ and not np.isin(m, (0, 1)).all():
            raise ValueError("mask: expected booleans (or 0 and 1)")
        keep &= m.astype(bool)
    return keep


@_quiet
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  mask: Optional[ArrayLike] = None) -> Tuple[LossValue, np.ndarray]:
    """Cross-entropy of class ids from logits, and its gradient (``F.cross_entropy``).

    loss_i = -weight[y_i] * log_softmax(input_i)[y_i], computed stably (the
    largest logit subtracted first); "mean" divides the sum by the sum of
    the counted targets' weights, as PyTorch.

    Parameters
    ----------
    input : array_like
        Logits (..., C), the class axis **last** (PyTorch: (N, C, d1, ...);
        the same for (N, C)); (C,) for one target.
    target : array_like of int
        Class ids (...) = input.shape[:-1], each in [0, C) or ignore_index.
    weight : array_like, optional
        (C,), the weight of each class.
    ignore_index : int, default -100
        Targets equal to it count for nothing (loss 0, no gradient, not in
        the mean).
    reduction : {"mean", "sum", "none"}, default "mean"
    mask : array_like of bool, optional
        Shaped as target; False leaves that target out as ignore_index does
        (padded steps: ``sequence_mask``). Not in PyTorch.

    Returns
    -------
    value : float or ndarray
        The reduced loss, or the per-target losses (...) ("none", 0 where
        left out).
    d_input : ndarray
        The gradient of value (of the losses' sum for "none") w.r.t. input:
        weight[y] * (softmax(input) - onehot(y)), over the count for "mean".

    Raises
    ------
    ValueError
        When shapes disagree, a class id is out of range, every target is
        left out under "mean", or the loss is not finite.
    TypeError
        When target is not integers.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> logits = np.log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    >>> value, d = fastrnn.cross_entropy(logits, [0, 1])
    >>> round(value, 6), d.round(3).tolist()
    (0.458145, [[-0.25, 0.125, 0.125], [0.05, -0.1, 0.05]])
    """
    reduction = _check_choice("reduction", reduction, _REDUCTIONS)
    x = _floats("input", input)
    if x.ndim == 0:
        raise ValueError("input: expected logits (..., C) with the class axis last, got a "
                         "scalar")
    C = x.shape[-1]
    y = _numbers("target", target)
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"target: expected integer class ids, got dtype {y.dtype} (class "
                        f"probabilities are not supported)")
    _same_shape("target", y, x.shape[:-1], "input.shape[:-1]: the class axis of input is last")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index: expected an integer, got {ignore_index!r}")
    keep = _keep_mask(y, ignore_index, mask)
    bad = keep & ((y < 0) | (y >= C))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"target: expected class ids in [0, {C}) or ignore_index "
                         f"{ignore_index}, got {y[where]} at {where}")
    ids = np.where(keep, y, 0)[..., None]                     # (..., 1), safe where left out
    w = keep.astype(x.dtype)
    if weight is not None:
        wc = _as_array("weight", _numbers("weight", weight), x.dtype)
        _same_shape("weight", wc, (C,), "one weight per class")
        w *= wc[ids[..., 0]]
    # log_softmax(x) = z - log(sum(exp(z))), z = x - max(x)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    sum_e = e.sum(axis=-1, keepdims=True)
    log_p = np.take_along_axis(z, ids, axis=-1)[..., 0] - np.log(sum_e[..., 0])
    losses = -w * log_p
    _finite("cross_entropy", losses, input=x)
    # d loss / d x = w * (softmax(x) - onehot(y))
    d = e / sum_e
    np.put_along_axis(d, ids, np.take_along_axis(d, ids, axis=-1) - 1, axis=-1)
    d *= w[..., None]
    return _reduce("cross_entropy", losses, d, reduction, np.sum(w, dtype=np.float64))


# ----------------------------------------------------------------- binary

@_quiet
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike,
                                     weight: Optional[ArrayLike] = None,
                                     reduction: str = "mean",
                                     pos_weight: Optional[ArrayLike] = None
                                     ) -> Tuple[LossValue, np.ndarray]:
    """Binary cross-entropy from logits, and its gradient (``F.binary_cross_entropy_with_logits``).

    loss_i = -weight_i * (pos_weight * y_i * log sigmoid(x_i) + (1 - y_i) *
    log(1 - sigmoid(x_i))), computed as PyTorch does without exp overflow::

        (1 - y) x + (1 + (pos_weight - 1) y) (log(1 + exp(-|x|)) + max(-x, 0))

    Parameters
    ----------
    input : array_like
        Logits, any shape.
    target : array_like
        Targets in [0, 1], input's shape.
    weight : array_like, optional
        Broadcastable to input: the weight of each element.
    reduction : {"mean", "sum", "none"}, default "mean"
    pos_weight : array_like, optional
        Broadcastable to input (typically (C,), the last axis): the weight
        of the positive term of each class.

    Returns
    -------
    value : float or ndarray
        The reduced loss, or the per-element losses ("none").
    d_input : ndarray
        The gradient of value (of the losses' sum for "none") w.r.t. input:
        weight * ((1 - y) - (1 + (pos_weight - 1) y) sigmoid(-x)).

    Raises
    ------
    ValueError
        When shapes disagree or do not broadcast, or the loss is not finite.

    Examples
    --------
    >>> import fastrnn
    >>> value, d = fastrnn.binary_cross_entropy_with_logits([0.0, 0.0], [1.0, 0.0])
    >>> round(value, 6), d.tolist()
    (0.693147, [-0.25, 0.25])
    """
    reduction = _check_choice("reduction", reduction, _REDUCTIONS)
    x = _floats("input", input)
    y = _as_array("target", _numbers("target", target), x.dtype)
    _same_shape("target", y, x.shape, "the input's")

    def broadcast(name: str, value: Optional[ArrayLike]) -> Optional[np.ndarray]:
        if value is None:
            return None
        arr = _as_array(name, _numbers(name, value), x.dtype)
        try:
            return np.broadcast_to(arr, x.shape)
        except ValueError:
            raise ValueError(f"{name}: expected a shape that broadcasts to the input's "
                             f"{x.shape}, got {arr.shape}") from None

    w, pw = broadcast("weight", weight), broadcast("pos_weight", pos_weight)
    log_weight = 1 + (pw - 1) * y if pw is not None else 1
    # softplus(-x) = log(1 + exp(-x)), without overflow
    softplus = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)
    losses = (1 - y) * x + log_weight * softplus
    # d softplus(-x) / dx = -sigmoid(-x) = -exp(-softplus(x)), softplus(x) = softplus(-x) + x
    d = (1 - y) - log_weight * np.exp(-(softplus + x))
    if w is not None:
        losses = losses * w
        d = d * w
    _finite("binary_cross_entropy_with_logits", losses, input=x, target=y)
    return _reduce("binary_cross_entropy_with_logits", losses, np.asarray(d, x.dtype),
                   reduction, x.size)


# ----------------------------------------------------------------- objects

# the texts the loss objects' docstrings share (filled in by _doc)
_doc = _fill_docs({
    "reduction": """\
    reduction : {"mean", "sum", "none"}, default "mean"
        The mean or the sum of the elements' losses, or the losses themselves.""",
    "raises": """\
    Raises
    ------
    ValueError
        For another reduction. What a call raises: see the function.""",
})


class _Loss:
    """A loss object: ``value = loss(input, target)``, then ``loss.backward()``.

    The gradient of the last call is the calling thread's own (as the
    layers' records)."""

    # the calling thread's last call: (d_input of the losses' sum or reduced value, shape)
    _last = _per_thread("loss_last")

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = _check_choice("reduction", reduction, _REDUCTIONS)

    def _keep(self, value: LossValue, d: np.ndarray) -> LossValue:
        self._last = d
        return value

    def backward(self, grad: Optional[ArrayLike] = None) -> np.ndarray:
        """The gradient of the last call's value with respect to its input.

        Parameters
        ----------
        grad : float or array_like, optional
            The gradient of whatever the loss feeds (the chain rule's
            upstream factor): a number for "mean" and "sum" (default 1), the
            per-element losses' shape for "none" (default ones).

        Returns
        -------
        ndarray
            d_input, the input's shape.

        Raises
        ------
        ValueError
            When the loss was not called yet, or grad has the wrong shape.
        """
        d = self._last
        if d is None:
            raise ValueError("backward: no loss to differentiate; call the loss first")
        if grad is None:
            return d.copy()
        g = _as_array("grad", _numbers("grad", grad), d.dtype)
        if self.reduction != "none":
            _same_shape("grad", g, (), "the loss value's")
            return d * g
        per_target = isinstance(self, CrossEntropyLoss)    # d has the class axis besides
        _same_shape("grad", g, d.shape[:-1] if per_target else d.shape, "the losses'")
        return d * (g[..., None] if per_target else g)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_records", None)   # the threads' last calls: a threading.local
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


@_doc
class MSELoss(_Loss):
    """Mean squared error (``torch.nn.MSELoss``); see ``mse_loss``.

    Parameters
    ----------
%(reduction)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> loss = fastrnn.MSELoss()
    >>> loss(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    2.0
    >>> loss.backward()
    array([ 0., -2.])
    """

    def __call__(self, input: ArrayLike, target: ArrayLike) -> LossValue:
        """The loss value (see ``mse_loss``); ``backward()`` gives d_input.

        Parameters
        ----------
        input, target : array_like
            The same shape.

        Returns
        -------
        float or ndarray
            The loss (per element with ``reduction="none"``).
        """
        return self._keep(*mse_loss(input, target, self.reduction))


@_doc
class CrossEntropyLoss(_Loss):
    """Cross-entropy of class ids from logits (``torch.nn.CrossEntropyLoss``).

    See ``cross_entropy``; the class axis is last.

    Parameters
    ----------
    weight : array_like, optional
        (C,), the weight of each class.
    ignore_index : int, default -100
        Targets equal to it count for nothing.
%(reduction)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> loss = fastrnn.CrossEntropyLoss(ignore_index=0)
    >>> logits = np.zeros((3, 2, 5))                  # (T, B, C)
    >>> value = loss(logits, [[1, 2], [3, 0], [0, 0]])  # id 0 is padding
    >>> round(value, 6), loss.backward().shape
    (1.609438, (3, 2, 5))
    """

    def __init__(self, weight: Optional[ArrayLike] = None, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else _floats("weight", weight).copy()
        self.ignore_index = ignore_index

    def __call__(self, input: ArrayLike, target: ArrayLike,
                 mask: Optional[ArrayLike] = None) -> LossValue:
        """The loss value (see ``cross_entropy``); ``backward()`` gives d_input.

        Parameters
        ----------
        input : array_like
            Logits (..., C), the class axis last.
        target : array_like of int
            Class ids (...).
        mask : array_like of bool, optional
            (...): False leaves a target out (a padded step; ``sequence_mask``).

        Returns
        -------
        float or ndarray
            The loss (per target with ``reduction="none"``).
        """
        return self._keep(*cross_entropy(input, target, self.weight, self.ignore_index,
                                         self.reduction, mask))

    def __repr__(self) -> str:
        return (f"CrossEntropyLoss(ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r})")


@_doc
class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy from logits (``torch.nn.BCEWithLogitsLoss``).

    See ``binary_cross_entropy_with_logits``.

    Parameters
    ----------
    weight : array_like, optional
        Broadcastable to the input: the weight of each element.
%(reduction)s
    pos_weight : array_like, optional
        Broadcastable to the input: the weight of the positive term.

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> loss = fastrnn.BCEWithLogitsLoss(pos_weight=np.array([2.0]))
    >>> round(loss(np.zeros((4, 1)), np.ones((4, 1))), 6)
    1.386294
    """

    def __init__(self, weight: Optional[ArrayLike] = None, reduction: str = "mean",
                 pos_weight: Optional[ArrayLike] = None) -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else _floats("weight", weight).copy()
        self.pos_weight = None if pos_weight is None else _floats("pos_weight", pos_weight).copy()

    def __call__(self, input: ArrayLike, target: ArrayLike) -> LossValue:
        """The loss value (see ``binary_cross_entropy_with_logits``);
        ``backward()`` gives d_input.

        Parameters
        ----------
        input, target : array_like
            Logits and targets in [0, 1], the same shape.

        Returns
        -------
        float or ndarray
            The loss (per element with ``reduction="none"``).
        """
        return self._keep(*binary_cross_entropy_with_logits(input, target, self.weight,
                                                            self.reduction, self.pos_weight))
