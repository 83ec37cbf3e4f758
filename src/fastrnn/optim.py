"""Optimizers, gradient clipping and learning-rate schedules (``torch.optim``'s).

An optimizer holds named parameters (the live arrays, updated in place) and
takes their gradients at each step, by the same names:

    opt = fastrnn.Adam(model.named_parameters(), lr=1e-3)
    ...
    model.zero_grad(); model.backward(d_out)
    fastrnn.clip_grad_norm_(model.grads, max_norm=1.0)
    opt.step(model.grads)
    scheduler.step()

Names, defaults and update formulas are PyTorch's (``torch.optim.SGD``,
``Adam``, ``AdamW``, ``torch.nn.utils.clip_grad_norm_``,
``torch.optim.lr_scheduler.StepLR``, ``CosineAnnealingLR``), computed in the
parameter's dtype in PyTorch's order of operations. Where fastrnn differs:

- ``step(grads)`` takes the gradients (a mapping by parameter name) instead
  of reading ``p.grad``; every parameter must have one.
- One parameter group: the hyperparameters are attributes (``opt.lr``), not
  ``opt.param_groups[0]["lr"]``.
- The clipping functions take the gradients (a mapping or a list of arrays)
  and raise ValueError, not RuntimeError, for a non-finite norm when asked to.
- Schedules compute the closed form of their formula (PyTorch's documented
  one), which equals PyTorch's recursive update up to rounding.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Iterable, List, Mapping, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from fastrnn._common import _check_names, _fill_docs
from fastrnn._validation import _check_flag, _check_positive_int, _numbers

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "clip_grad_value_",
           "LRScheduler", "StepLR", "CosineAnnealingLR"]

#: What an optimizer takes: (name, array) pairs (``model.named_parameters()``),
#: a mapping of names to arrays, or an object with ``named_parameters()``.
NamedParameters = Union[Iterable[Tuple[str, np.ndarray]], Mapping[str, np.ndarray], Any]
#: Gradients: a mapping by name (``model.grads``), or the arrays themselves.
Gradients = Union[Mapping[str, np.ndarray], Iterable[np.ndarray]]


def _number(name: str, value: Any, low: float = 0.0, high: float = math.inf,
            high_open: bool = False) -> float:
    """value as a float in [low, high] ([low, high) when high_open)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        low <= value and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name}: expected a number in {bounds}, got {value!r}")
    return float(value)


def _named(params: NamedParameters) -> Dict[str, np.ndarray]:
    """The named live parameter arrays, checked."""
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    items = list(params.items() if isinstance(params, Mapping) else params)
    named: Dict[str, np.ndarray] = {}
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"params: expected (name, array) pairs (model.named_parameters()) "
                            f"or a mapping of names to arrays, got an entry {item!r:.80}")
        name, p = item
        if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{name!r}]: expected a float32 or float64 numpy array "
                            f"(the live parameter, updated in place), got "
                            f"{getattr(p, 'dtype', type(p).__name__)}")
        if name in named:
            raise ValueError(f"params: the name {name!r} appears twice")
        named[name] = p
    if not named:
        raise ValueError("params: expected at least one parameter, got none")
    return named


# --------------------------------------------------------------- optimizers

# the texts the optimizers' docstrings share (filled in by _fill_docs)
_DOCS = {
    "params": """\
    params : named parameters
        ``model.named_parameters()``, a mapping of names to arrays, or the
        model itself: the live float arrays the steps update in place.""",
    "adam": """\
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        The decay rates of the moment estimates m and v.
    eps : float, default 1e-8
        Added to the denominator.""",
    "adam_flags": """\
    amsgrad : bool, default False
        Divide by the running maximum of v (AMSGrad).
    maximize : bool, default False
        Ascend instead.""",
    "raises": """\
    Raises
    ------
    ValueError, TypeError
        For a hyperparameter out of range, or parameters that are not named
        float arrays.""",
    "schedule": """\
    optimizer : Optimizer
        The optimizer whose ``lr`` the schedule sets (its lr now is base_lr).""",
    "schedule_raises": """\
    Raises
    ------
    ValueError, TypeError
        For an argument out of range, or an optimizer that is not fastrnn's.""",
}
_doc = _fill_docs(_DOCS)


@_doc
class Optimizer:
    """The base of SGD, Adam and AdamW: named parameters, and ``step(grads)``.

    Parameters
    ----------
%(params)s
    lr : float
        The learning rate.

%(raises)s

    Attributes
    ----------
    params : dict of str to ndarray
        The parameters by name.
    state : dict of str to dict
        Per parameter, what the method keeps between steps (momentum
        buffers, moment estimates, step counts).
    lr : float
        The learning rate (schedules set it).

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> opt = fastrnn.SGD({"w": np.ones(2)}, lr=0.5)
    >>> isinstance(opt, fastrnn.Optimizer), list(opt.params), opt.lr
    (True, ['w'], 0.5)
    """

    def __init__(self, params: NamedParameters, lr: float) -> None:
        self.params = _named(params)
        self.lr = _number("lr", lr)
        self.state: Dict[str, Dict[str, Any]] = {name: {} for name in self.params}

    def _gradients(self, grads: Mapping[str, ArrayLike]) -> Dict[str, np.ndarray]:
        """Every parameter's gradient, checked, in the parameter's dtype."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: expected a mapping of parameter names to gradients "
                            f"(model.grads), got {type(grads).__name__}")
        _check_names("grads", grads, list(self.params))
        checked = {}
        for name, p in self.params.items():
            g = np.asarray(_numbers(f"grads[{name!r}]", grads[name]), dtype=p.dtype)
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}]: expected the parameter's shape {p.shape}, "
                                 f"got {g.shape}")
            checked[name] = g
        return checked

    def step(self, grads: Mapping[str, ArrayLike]) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : mapping of str to array_like
            A gradient for every parameter, by its name (``model.grads``);
            they are not changed.

        Raises
        ------
        ValueError
            When a name is missing or unexpected, or a gradient's shape is
            not its parameter's; nothing is updated then.
        TypeError
            When grads is not a mapping, or a gradient not real numbers.
        """
        for name, g in self._gradients(grads).items():
            self._update(self.params[name], g, self.state[name])

    def _update(self, p: np.ndarray, g: np.ndarray, state: Dict[str, Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                            if k not in ("params", "state"))
        return f"{type(self).__name__}({len(self.params)} parameters, {options})"


@_doc
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and weight decay (``torch.optim.SGD``).

    Per parameter p with gradient g:
    ``g = g + weight_decay * p``; with momentum ``b = momentum * b + (1 -
    dampening) * g`` (b = g at the first step) and ``g = g + momentum * b``
    (nesterov) or ``g = b``; then ``p -= lr * g`` (``+=`` when maximize).

    Parameters
    ----------
%(params)s
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0 and dampening 0).
    maximize : bool, default False
        Ascend instead.

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> w = np.ones(3)
    >>> opt = fastrnn.SGD({"w": w}, lr=0.1, momentum=0.9)
    >>> opt.step({"w": np.ones(3)}); opt.step({"w": np.ones(3)})
    >>> w                                              # 1 - 0.1 - 0.1 * 1.9
    array([0.71, 0.71, 0.71])
    """

    def __init__(self, params: NamedParameters, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr)
        self.momentum = _number("momentum", momentum)
        self.dampening = _number("dampening", dampening)
        self.weight_decay = _number("weight_decay", weight_decay)
        self.nesterov = _check_flag("nesterov", nesterov)
        self.maximize = _check_flag("maximize", maximize)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov: Nesterov momentum requires a momentum and zero "
                             "dampening")

    def _update(self, p: np.ndarray, g: np.ndarray, state: Dict[str, Any]) -> None:
        d_p = -g if self.maximize else g
        if self.weight_decay:
            d_p = d_p + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * d_p
            d_p = d_p + self.momentum * buf if self.nesterov else buf
        p -= self.lr * d_p


@_doc
class Adam(Optimizer):
    """Adam (``torch.optim.Adam``), with AMSGrad and L2 weight decay.

    Per parameter p with gradient g, at step t:
    ``g = g + weight_decay * p``; ``m = beta1 m + (1 - beta1) g``;
    ``v = beta2 v + (1 - beta2) g^2``; ``p -= lr / (1 - beta1^t) * m /
    (sqrt(v) / sqrt(1 - beta2^t) + eps)`` (AMSGrad: the running maximum of v).

    Parameters
    ----------
%(params)s
%(adam)s
    weight_decay : float, default 0
        L2 penalty, added to the gradient (AdamW decouples it).
%(adam_flags)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> w = np.zeros(2)
    >>> opt = fastrnn.Adam({"w": w}, lr=0.1)
    >>> opt.step({"w": np.array([1.0, -2.0])})
    >>> w.round(6)                                     # each moves by about lr
    array([-0.1,  0.1])
    """

    _decoupled = False

    def __init__(self, params: NamedParameters, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (_number("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                      _number("betas[1]", betas[1], 0.0, 1.0, high_open=True))
        self.eps = _number("eps", eps)
        self.weight_decay = _number("weight_decay", weight_decay)
        self.amsgrad = _check_flag("amsgrad", amsgrad)
        self.maximize = _check_flag("maximize", maximize)

    def _update(self, p: np.ndarray, g: np.ndarray, state: Dict[str, Any]) -> None:
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        if self.maximize:
            g = -g
        if self.weight_decay:
            if self._decoupled:
                p *= 1 - self.lr * self.weight_decay      # AdamW: decay the weights
            else:
                g = g + self.weight_decay * p             # Adam: L2 in the gradient
        m, v = state["exp_avg"], state["exp_avg_sq"]
        # m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2
        m += (g - m) * (1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        step_size = self.lr / (1 - beta1 ** t)
        bias_correction2_sqrt = (1 - beta2 ** t) ** 0.5
        if self.amsgrad:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        denom = np.sqrt(v) / bias_correction2_sqrt + self.eps
        p -= step_size * m / denom          # PyTorch's addcdiv: (value * m) / denom


@_doc
class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): ``p *= 1 - lr *
    weight_decay`` before the Adam step, instead of L2 in the gradient.

    Parameters
    ----------
%(params)s
%(adam)s
    weight_decay : float, default 1e-2
        The decay of the weights per step, times lr.
%(adam_flags)s

%(raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> w = np.ones(2)
    >>> fastrnn.AdamW({"w": w}, lr=0.1, weight_decay=0.5).step({"w": np.zeros(2)})
    >>> w                                              # decayed by lr * weight_decay
    array([0.95, 0.95])
    """

    _decoupled = True

    def __init__(self, params: NamedParameters, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


# ----------------------------------------------------------------- clipping

def _arrays(grads: Gradients) -> List[np.ndarray]:
    """The gradient arrays of a mapping or a list, checked to be float arrays
    (they are changed in place)."""
    arrays = list(grads.values() if isinstance(grads, Mapping) else grads)
    for i, g in enumerate(arrays):
        if not isinstance(g, np.ndarray) or g.dtype not in (np.float32, np.float64):
            raise TypeError(f"grads[{i}]: expected a float32 or float64 numpy array (clipped "
                            f"in place), got {getattr(g, 'dtype', type(g).__name__)}")
    return arrays


def clip_grad_norm_(grads: Gradients, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients in place so that their joint norm is at most max_norm
    (``torch.nn.utils.clip_grad_norm_``).

    The norm is that of all the gradients as one vector (the norm of their
    norms); every gradient is multiplied by min(1, max_norm / (norm + 1e-6)).

    Parameters
    ----------
    grads : mapping or list of ndarray
        ``model.grads``, or the arrays; changed in place.
    max_norm : float
        The largest norm allowed.
    norm_type : float, default 2.0
        p of the p-norm; ``float("inf")`` for the largest magnitude.
    error_if_nonfinite : bool, default False
        Raise instead of clipping when the norm is NaN or infinite.

    Returns
    -------
    float
        The norm before clipping.

    Raises
    ------
    ValueError
        When max_norm is negative or norm_type not positive, or the norm is
        not finite and error_if_nonfinite (PyTorch raises RuntimeError).
    TypeError
        When a gradient is not a float array.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    >>> fastrnn.clip_grad_norm_(grads, max_norm=1.0)
    5.0
    >>> grads["a"].round(6), grads["b"].round(6)
    (array([0.6]), array([0.8]))
    """
    max_norm = _number("max_norm", max_norm)
    norm_type = _number("norm_type", norm_type)
    if norm_type == 0:
        raise ValueError("norm_type: expected a positive number or inf, got 0")
    error_if_nonfinite = _check_flag("error_if_nonfinite", error_if_nonfinite)
    arrays = _arrays(grads)
    if not arrays:
        return 0.0
    if norm_type == math.inf:
        norms = [float(np.max(np.abs(g), initial=0.0)) for g in arrays]
        total = max(norms)
    else:
        norms = [float(np.sum(np.abs(g, dtype=np.float64) ** norm_type)) for g in arrays]
        total = math.fsum(norms) ** (1.0 / norm_type)
    if not math.isfinite(total) and error_if_nonfinite:
        raise ValueError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                         f"gradients is {total}, so they cannot be clipped")
    clip_coef = max_norm / (total + 1e-6)
    if not clip_coef >= 1.0:          # also when NaN: the gradients become NaN, as PyTorch's
        with np.errstate(invalid="ignore"):          # inf * 0, as PyTorch: NaN
            for g in arrays:
                g *= g.dtype.type(clip_coef)
    return total


def clip_grad_value_(grads: Gradients, clip_value: float) -> None:
    """Clip every gradient element to [-clip_value, clip_value] in place
    (``torch.nn.utils.clip_grad_value_``).

    Parameters
    ----------
    grads : mapping or list of ndarray
        ``model.grads``, or the arrays; changed in place.
    clip_value : float
        The largest magnitude allowed.

    Raises
    ------
    ValueError
        When clip_value is negative.
    TypeError
        When a gradient is not a float array.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> g = np.array([-3.0, 0.5, 2.0])
    >>> fastrnn.clip_grad_value_([g], 1.0)
    >>> g
    array([-1. ,  0.5,  1. ])
    """
    clip_value = _number("clip_value", clip_value)
    for g in _arrays(grads):
        np.clip(g, -clip_value, clip_value, out=g)


# ---------------------------------------------------------------- schedules

@_doc
class LRScheduler:
    """The base of the schedules: sets ``optimizer.lr`` from the epoch count.

    As in PyTorch, making a schedule sets the learning rate of epoch 0, and
    each ``step()`` (once per epoch, after ``optimizer.step``) moves to the
    next epoch. The schedule starts from the optimizer's lr when made
    (``base_lr``).

    Parameters
    ----------
%(schedule)s

%(schedule_raises)s

    Attributes
    ----------
    optimizer : Optimizer
    base_lr : float
    last_epoch : int
        The current epoch (0 after construction).

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> opt = fastrnn.SGD({"w": np.ones(2)}, lr=0.5)
    >>> schedule = fastrnn.StepLR(opt, step_size=1)
    >>> isinstance(schedule, fastrnn.LRScheduler), schedule.base_lr, schedule.last_epoch
    (True, 0.5, 0)
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(getattr(optimizer, "lr", None), float):
            raise TypeError(f"optimizer: expected a fastrnn optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = -1
        self.step()

    def _lr(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Move to the next epoch and set the optimizer's learning rate for it."""
        self.last_epoch += 1
        self.optimizer.lr = float(self._lr(self.last_epoch))

    def get_last_lr(self) -> List[float]:
        """[the learning rate the last step set] (a list, as PyTorch's)."""
        return [self.optimizer.lr]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} epoch {self.last_epoch}, lr {self.optimizer.lr:g}>"


@_doc
class StepLR(LRScheduler):
    """Decay the learning rate by gamma every step_size epochs (``lr_scheduler.StepLR``).

    ``lr = base_lr * gamma ** (epoch // step_size)``.

    Parameters
    ----------
%(schedule)s
    step_size : int
        Epochs between decays.
    gamma : float, default 0.1
        The factor of each decay.

%(schedule_raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> opt = fastrnn.SGD({"w": np.zeros(1)}, lr=1.0)
    >>> schedule = fastrnn.StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for epoch in range(5):
    ...     lrs.append(opt.lr)      # ... train an epoch with opt ...
    ...     schedule.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _check_positive_int("step_size", step_size)
        self.gamma = _number("gamma", gamma)
        super().__init__(optimizer)

    def _lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


@_doc
class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from base_lr to eta_min over T_max epochs (``CosineAnnealingLR``).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``
    (past T_max it rises again, as PyTorch's).

    Parameters
    ----------
%(schedule)s
    T_max : int
        The epochs of the half cosine.
    eta_min : float, default 0
        The smallest learning rate.

%(schedule_raises)s

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> opt = fastrnn.Adam({"w": np.zeros(1)}, lr=1.0)
    >>> schedule = fastrnn.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    >>> schedule.step(); schedule.step()               # after 2 of the 4 epochs: half way
    >>> schedule.get_last_lr(), schedule.last_epoch
    ([0.55], 2)
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = _check_positive_int("T_max", T_max)
        self.eta_min = _number("eta_min", eta_min)
        super().__init__(optimizer)

    def _lr(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * \
            (1 + math.cos(math.pi * epoch / self.T_max)) / 2
