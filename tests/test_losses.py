"""fastrnn.losses: MSE, cross-entropy and binary cross-entropy from logits.

Each loss's gradient against central differences (float64) for every
reduction and option, its value and gradient against PyTorch's
(torch.nn.MSELoss, CrossEntropyLoss, BCEWithLogitsLoss), its stability at
large logits, and its errors.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastrnn

rng = np.random.default_rng(0)
REDUCTIONS = ["mean", "sum", "none"]


def check_gradient(fn, x, assert_close, numeric_gradient, **kwargs):
    """fn(x, ...) -> (value, d_input): d_input against central differences of
    the value (of the per-element losses weighed by a fixed random array for
    reduction "none", and d_input weighed likewise through backward)."""
    value, d = fn(x, **kwargs)
    if kwargs.get("reduction") == "none":
        w = rng.standard_normal(np.shape(value))
        d = d * (w[..., None] if d.ndim > np.ndim(value) else w)
        loss = lambda: float(np.sum(fn(x, **kwargs)[0] * w))    # noqa: E731
    else:
        loss = lambda: fn(x, **kwargs)[0]                        # noqa: E731
    assert_close("d_input", d, numeric_gradient(loss, x), np.float64, kind="fd")


# ======================================================= finite differences

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_gradient(reduction, assert_close, numeric_gradient):
    target = rng.standard_normal((3, 2, 4))
    check_gradient(lambda x, **k: fastrnn.mse_loss(x, target, **k),
                   rng.standard_normal(target.shape), assert_close, numeric_gradient,
                   reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", ["plain", "weight", "ignore", "mask"])
def test_cross_entropy_gradient(reduction, options, assert_close, numeric_gradient):
    target = rng.integers(0, 5, size=(4, 3))
    kwargs = {"reduction": reduction}
    if options == "weight":
        kwargs["weight"] = rng.uniform(0.5, 2.0, 5)
    if options == "ignore":
        target[0, :2] = kwargs["ignore_index"] = 7
    if options == "mask":
        kwargs["mask"] = rng.random((4, 3)) < 0.7
    check_gradient(lambda x, **k: fastrnn.cross_entropy(x, target, **k),
                   rng.standard_normal((4, 3, 5)), assert_close, numeric_gradient, **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", ["plain", "weight", "pos_weight"])
def test_bce_with_logits_gradient(reduction, options, assert_close, numeric_gradient):
    target = rng.random((3, 4))
    kwargs = {"reduction": reduction}
    if options == "weight":
        kwargs["weight"] = rng.uniform(0.5, 2.0, (3, 1))       # broadcast over the last axis
    if options == "pos_weight":
        kwargs["pos_weight"] = rng.uniform(0.5, 3.0, 4)
    check_gradient(lambda x, **k: fastrnn.binary_cross_entropy_with_logits(x, target, **k),
                   3 * rng.standard_normal((3, 4)), assert_close, numeric_gradient, **kwargs)


# ================================================================= behaviour

def test_large_logits_are_stable():
    logits = np.array([[1e4, 0.0, -1e4], [-5e3, 5e3, 0.0]], np.float32)
    value, d = fastrnn.cross_entropy(logits, [1, 1])
    assert value == pytest.approx(1e4 / 2)
    np.testing.assert_allclose(d, [[0.5, -0.5, 0], [0, 0, 0]], atol=1e-6)
    value, d = fastrnn.binary_cross_entropy_with_logits(np.array([1e4, -1e4]), [0.0, 1.0])
    assert value == pytest.approx(1e4) and np.allclose(d, [0.5, -0.5])


def test_the_class_axis_is_last_and_unbatched_works():
    logits = rng.standard_normal((5, 3, 4))                     # (T, B, C)
    target = rng.integers(0, 4, size=(5, 3))
    whole, _ = fastrnn.cross_entropy(logits, target, reduction="sum")
    one, _ = fastrnn.cross_entropy(logits[2, 1], target[2, 1])  # (C,) and a scalar id
    parts, _ = fastrnn.cross_entropy(logits.reshape(-1, 4), target.reshape(-1), reduction="none")
    assert whole == pytest.approx(parts.sum()) and one == pytest.approx(parts[2 * 3 + 1])


def test_mask_equals_ignore_index_and_sequence_mask():
    logits = rng.standard_normal((4, 3, 5))
    target = rng.integers(0, 5, size=(4, 3))
    mask = fastrnn.sequence_mask([4, 1, 2], 4)
    np.testing.assert_array_equal(mask.T, fastrnn.sequence_mask([4, 1, 2], 4, batch_first=True))
    assert mask.sum() == 7 and mask[:, 0].all() and not mask[1:, 1].any()
    a = fastrnn.cross_entropy(logits, target, mask=mask)
    b = fastrnn.cross_entropy(logits, np.where(mask, target, -100))
    assert a[0] == pytest.approx(b[0])
    np.testing.assert_allclose(a[1], b[1])
    assert not a[1][~mask].any()


def test_loss_objects_and_backward_weights():
    loss = fastrnn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match="no loss to differentiate"):
        loss.backward()
    logits = rng.standard_normal((2, 3, 4))
    target = rng.integers(0, 4, size=(2, 3))
    values = loss(logits, target)
    w = rng.random((2, 3))
    np.testing.assert_allclose(loss.backward(w), loss.backward() * w[..., None])
    with pytest.raises(ValueError, match=r"grad: expected shape \(2, 3\)"):
        loss.backward(1.0)
    mse = fastrnn.MSELoss(reduction="sum")
    assert mse(np.ones(3), np.zeros(3)) == 3.0
    np.testing.assert_allclose(mse.backward(0.5), np.ones(3))
    assert values.shape == (2, 3)
    assert "reduction='none'" in repr(pickle.loads(pickle.dumps(loss)))


# ==================================================================== errors

def test_errors_are_clear():
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"target: expected class ids in \[0, 3\) or "
                                         r"ignore_index -100, got 3 at \(2,\)"):
        fastrnn.cross_entropy(logits, [0, 1, 3, 2])
    with pytest.raises(ValueError, match=r"got -2 at \(0,\)"):
        fastrnn.cross_entropy(logits, [-2, 1, 1, 2])
    with pytest.raises(TypeError, match="target: expected integer class ids, got dtype float64"):
        fastrnn.cross_entropy(logits, [0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"target: expected shape \(2, 3\) \(input.shape\[:-1\]: "
                                         r"the class axis of input is last\)"):
        fastrnn.cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="the mean of no element"):
        fastrnn.cross_entropy(logits, [-100] * 4)
    with pytest.raises(ValueError, match=r"weight: expected shape \(3,\)"):
        fastrnn.cross_entropy(logits, [0] * 4, weight=np.ones(4))
    with pytest.raises(ValueError, match="mask: expected booleans"):
        fastrnn.cross_entropy(logits, [0] * 4, mask=[0, 1, 2, 1])
    bad = logits.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"cross_entropy: the loss is not finite \(1 of the 4 "
                                         r"elements' losses\); input has 1 non-finite elements"):
        fastrnn.cross_entropy(bad, [0] * 4)
    with pytest.raises(ValueError, match="mse_loss: the loss is not finite.*target has 1"):
        fastrnn.mse_loss(np.zeros(2), [np.inf, 0])
    with pytest.raises(ValueError, match="the loss overflowed"):
        fastrnn.mse_loss(np.array([3e38], np.float32), np.array([-3e38], np.float32))
    with pytest.raises(ValueError, match=r"target: expected shape \(2,\)"):
        fastrnn.mse_loss(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="pos_weight: expected a shape that broadcasts"):
        fastrnn.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)),
                                                 pos_weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction: expected one of"):
        fastrnn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 3\]"):
        fastrnn.sequence_mask([4], 3)


# =================================================================== PyTorch

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_match_pytorch(dtype, reduction):
    torch = pytest.importorskip("torch")
    tol = {"rtol": 2e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}

    def compare(ours, loss, theirs, x, *args):
        tx = torch.tensor(x, requires_grad=True)
        t_value = theirs(tx, *args)
        upstream = rng.standard_normal(t_value.shape).astype(dtype)
        t_value.backward(torch.tensor(upstream))
        value = ours(x, *[a.numpy() for a in args])
        np.testing.assert_allclose(value, t_value.detach().numpy(), **tol)
        np.testing.assert_allclose(loss.backward(upstream), tx.grad.numpy(), **tol)

    N, C = 12, 5
    x = (3 * rng.standard_normal((N, C))).astype(dtype)
    weight = rng.uniform(0.5, 2, C).astype(dtype)
    target = rng.integers(0, C, N)
    target[[1, 5]] = 2                                          # ignored below
    ours = fastrnn.CrossEntropyLoss(weight, ignore_index=2, reduction=reduction)
    theirs = torch.nn.CrossEntropyLoss(torch.tensor(weight), ignore_index=2, reduction=reduction)
    compare(ours, ours, theirs, x, torch.tensor(target))

    ours = fastrnn.MSELoss(reduction)
    compare(ours, ours, torch.nn.MSELoss(reduction=reduction), x,
            torch.tensor(rng.standard_normal((N, C)).astype(dtype)))

    w, pw = rng.uniform(0.5, 2, (N, 1)).astype(dtype), rng.uniform(0.5, 3, C).astype(dtype)
    ours = fastrnn.BCEWithLogitsLoss(w, reduction, pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(torch.tensor(w), reduction=reduction,
                                        pos_weight=torch.tensor(pw))
    compare(ours, ours, theirs, x, torch.tensor(rng.random((N, C)).astype(dtype)))
