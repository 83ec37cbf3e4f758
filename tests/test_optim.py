"""fastrnn.optim: SGD, Adam, AdamW, gradient clipping and learning-rate schedules.

The same parameters and gradients give the same numbers as torch.optim.SGD,
Adam, AdamW, torch.nn.utils.clip_grad_norm_ / clip_grad_value_ and
torch.optim.lr_scheduler.StepLR / CosineAnnealingLR, step by step; bad
arguments raise clear errors and update nothing.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastrnn

rng = np.random.default_rng(0)
SHAPES = {"w": (4, 3), "b": (3,)}
STEPS = 6


def run_both(torch, ours_class, theirs_class, dtype, **options):
    """Parameters after each of STEPS steps of ours and of PyTorch's optimizer,
    from the same start and the same gradients."""
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
             for _ in range(STEPS)]
    params = {k: v.copy() for k, v in start.items()}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in start.items()}
    ours = ours_class(params, **options)
    theirs = theirs_class(list(tparams.values()), **options)
    for g in grads:
        ours.step(g)
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        theirs.step()
        yield params, {k: p.detach().numpy() for k, p in tparams.items()}


OPTIMIZERS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "maximize": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", OPTIMIZERS, ids=lambda v: v if isinstance(v, str)
                         else "-".join(f"{k}={w}" for k, w in v.items()))
def test_optimizers_match_pytorch(name, options, dtype):
    torch = pytest.importorskip("torch")
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-14}
    for step, (ours, theirs) in enumerate(run_both(torch, getattr(fastrnn, name),
                                                   getattr(torch.optim, name), dtype, **options)):
        for k in SHAPES:
            np.testing.assert_allclose(ours[k], theirs[k], **tol, err_msg=f"step {step} {k}")
            assert ours[k].dtype == dtype


def test_optimizers_take_a_model_pairs_or_a_mapping():
    model = fastrnn.GRU(2, 2, seed=0)
    for params in (model, model.named_parameters(), dict(model.named_parameters())):
        opt = fastrnn.SGD(params, lr=1.0)
        before = model.weight_hh_l0.copy()
        opt.step({name: np.ones_like(g) for name, g in model.grads.items()})
        np.testing.assert_allclose(model.weight_hh_l0, before - 1)


def test_bad_steps_update_nothing():
    w = np.ones(3)
    opt = fastrnn.Adam({"w": w, "v": np.zeros(2)}, lr=0.1)
    with pytest.raises(ValueError, match=r"grads: expected the names \['w', 'v'\], got "
                                         r"missing \['v'\] and unexpected \['x'\]"):
        opt.step({"w": np.ones(3), "x": np.ones(3)})
    with pytest.raises(ValueError, match=r"grads\['v'\]: expected the parameter's shape \(2,\)"):
        opt.step({"w": np.ones(3), "v": np.ones(3)})
    with pytest.raises(TypeError, match="grads: expected a mapping"):
        opt.step([np.ones(3), np.ones(2)])
    np.testing.assert_array_equal(w, 1.0)
    assert not opt.state["w"]


def test_bad_hyperparameters():
    params = {"w": np.ones(2)}
    with pytest.raises(ValueError, match=r"lr: expected a number in \[0.0, inf\], got -1"):
        fastrnn.SGD(params, lr=-1)
    with pytest.raises(ValueError, match="nesterov: Nesterov momentum requires a momentum"):
        fastrnn.SGD(params, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a number in \[0.0, 1.0\)"):
        fastrnn.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match=r"params\['w'\]: expected a float32 or float64 numpy "
                                        r"array"):
        fastrnn.Adam({"w": [1.0, 2.0]})
    with pytest.raises(TypeError, match=r"params: expected \(name, array\) pairs"):
        fastrnn.Adam([np.ones(2)])
    with pytest.raises(ValueError, match="params: expected at least one parameter"):
        fastrnn.SGD({}, lr=0.1)


# ================================================================= clipping

@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_pytorch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    grads = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    tensors = [torch.zeros(s, requires_grad=True) for s in SHAPES.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    norm = fastrnn.clip_grad_norm_(grads, max_norm, norm_type)
    t_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type)
    assert isinstance(norm, float) and norm == pytest.approx(t_norm.item(), rel=1e-6)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_grad_value_matches_pytorch():
    torch = pytest.importorskip("torch")
    g = rng.standard_normal((5, 4)).astype(np.float32)
    t = torch.zeros(5, 4, requires_grad=True)
    t.grad = torch.tensor(g.copy())
    fastrnn.clip_grad_value_({"g": g}, 0.5)
    torch.nn.utils.clip_grad_value_([t], 0.5)
    np.testing.assert_array_equal(g, t.grad.numpy())


def test_clip_grad_norm_non_finite():
    grads = [np.array([np.inf, 1.0]), np.ones(2)]
    with pytest.raises(ValueError, match="clip_grad_norm_: the total norm of order 2.0 of the "
                                         "gradients is inf"):
        fastrnn.clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    assert grads[1][0] == 1.0                                   # unchanged
    assert fastrnn.clip_grad_norm_(grads, 1.0) == math.inf
    with pytest.raises(TypeError, match=r"grads\[0\]: expected a float32 or float64 numpy array"):
        fastrnn.clip_grad_norm_([[1.0]], 1.0)
    assert fastrnn.clip_grad_norm_({}, 1.0) == 0.0


# ================================================================ schedules

@pytest.mark.parametrize("name, options", [("StepLR", {"step_size": 3, "gamma": 0.5}),
                                           ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01}),
                                           ("CosineAnnealingLR", {"T_max": 10})])
def test_schedules_match_pytorch(name, options):
    torch = pytest.importorskip("torch")
    ours_opt = fastrnn.SGD({"w": np.zeros(1)}, lr=0.2)
    theirs_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    ours = getattr(fastrnn, name)(ours_opt, **options)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **options)
    for epoch in range(25):                                     # past T_max: up again
        assert ours_opt.lr == pytest.approx(theirs_opt.param_groups[0]["lr"], rel=1e-9,
                                            abs=1e-15), f"epoch {epoch}"
        assert ours.get_last_lr() == [ours_opt.lr]
        theirs_opt.step()
        theirs.step()
        ours.step()
    with pytest.raises(TypeError, match="optimizer: expected a fastrnn optimizer"):
        fastrnn.StepLR(theirs_opt, 2)
    with pytest.raises(ValueError, match="step_size: expected a positive integer"):
        fastrnn.StepLR(ours_opt, 0)
