"""fastrnn.nn: Linear, Embedding, Dropout, Module and Sequential.

1. Each piece's backward against central differences (float64) and against
   PyTorch's autograd (torch.nn.Linear, torch.nn.Embedding), and its errors.
2. Models: parameters and gradients by prefixed name, zero_grad,
   state_dict / load_state_dict, train / eval, save / load, pickling; a whole
   Embedding -> LSTM -> Linear -> cross-entropy model against finite
   differences and against the same model in PyTorch.
"""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn.nn import _scatter_add, _scatter_add_reference

rng = np.random.default_rng(0)


def fd_check(assert_close, numeric_gradient, loss, arrays, analytic):
    """Every array's analytic gradient against central differences of loss()."""
    for name, value in arrays.items():
        assert_close(name, analytic[name], numeric_gradient(loss, value), np.float64, kind="fd")


# ===================================================================== Linear

@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_match_finite_differences(bias, assert_close, numeric_gradient):
    lin = fastrnn.Linear(4, 3, bias=bias, dtype=np.float64, seed=1)
    x = rng.standard_normal((2, 5, 4))                        # leading dims (2, 5)
    dy = rng.standard_normal((2, 5, 3))
    y = lin(x)
    dx = lin.backward(dy)
    arrays = {"x": x, "weight": lin.weight}
    if bias:
        arrays["bias"] = lin.bias
    analytic = {"x": dx, **lin.grads}
    fd_check(assert_close, numeric_gradient, lambda: float(np.sum(lin(x, training=False) * dy)),
             arrays, analytic)
    assert y.shape == (2, 5, 3) and dx.shape == x.shape
    assert (lin.bias is None) == (not bias)


def test_linear_initialisation_and_one_dimensional_input():
    lin = fastrnn.Linear(16, 4, seed=0)
    assert lin.weight.dtype == np.float32 and np.abs(lin.weight).max() <= 0.25
    assert lin(np.ones(16)).shape == (4,)
    assert repr(lin) == "Linear(in_features=16, out_features=4, bias=True, dtype=float32)"


def test_linear_errors_and_differentiated_once():
    lin = fastrnn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\)"):
        lin(np.ones((2, 5)))
    with pytest.raises(TypeError, match="x: expected an array of real numbers"):
        lin(np.array(["a"] * 4))
    with pytest.raises(ValueError, match="no training forward of this Linear"):
        lin.backward(np.ones(3))
    y = lin(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"d_output: expected the output's shape \(2, 3\)"):
        lin.backward(np.ones((3, 2)))
    lin.backward(np.ones_like(y), retain_graph=True)
    lin.backward(np.ones_like(y))
    with pytest.raises(ValueError, match="no training forward"):
        lin.backward(np.ones_like(y))
    np.testing.assert_allclose(lin.grads["bias"], 4.0)       # two backwards of 2 rows
    lin(np.ones((2, 4)), training=False)
    with pytest.raises(ValueError, match="no training forward"):
        lin.backward(np.ones_like(y))


def test_linear_backward_sees_the_forwards_input():
    lin = fastrnn.Linear(3, 2, dtype=np.float64, seed=0)
    x = np.ones((4, 3))
    lin(x)
    x[...] = 7.0                              # the caller reuses its buffer
    lin.backward(np.ones((4, 2)))
    np.testing.assert_allclose(lin.grads["weight"], 4.0)


# ================================================================== Embedding

def test_embedding_gradient_matches_finite_differences(assert_close, numeric_gradient):
    emb = fastrnn.Embedding(6, 3, dtype=np.float64, seed=2)
    ids = np.array([[1, 4, 1], [5, 1, 0]])                    # repeated ids add up
    dy = rng.standard_normal((2, 3, 3))
    emb(ids)
    assert emb.backward(dy) is None
    fd_check(assert_close, numeric_gradient, lambda: float(np.sum(emb(ids, training=False) * dy)),
             {"weight": emb.weight}, emb.grads)


def test_embedding_padding_idx_stays_zero_without_gradient():
    emb = fastrnn.Embedding(5, 2, padding_idx=-1, seed=0)
    assert emb.padding_idx == 4 and not emb.weight[4].any()
    emb(np.array([4, 4, 1]))
    emb.backward(np.ones((3, 2)))
    assert not emb.grads["weight"][4].any() and (emb.grads["weight"][1] == 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_matches_its_reference(dtype):
    ids = rng.integers(0, 7, size=200)
    rows = rng.standard_normal((200, 5)).astype(dtype)
    fast, reference = np.ones((7, 5), dtype), np.ones((7, 5), dtype)
    _scatter_add(fast, ids, rows)
    _scatter_add_reference(reference, ids, rows)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(fast, reference, **tol)


def test_embedding_errors():
    emb = fastrnn.Embedding(5, 2)
    with pytest.raises(ValueError, match=r"input: expected indices in \[0, 5\), got 7 at "
                                         r"\(1, 0\)"):
        emb(np.array([[0, 1], [7, 2]]))
    with pytest.raises(ValueError, match="got -1"):
        emb([-1])
    with pytest.raises(TypeError, match="input: expected integer indices, got dtype float64"):
        emb(np.array([1.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        fastrnn.Embedding(5, 2, padding_idx=5)
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"d_output: expected the output's shape \(2, 2\)"):
        emb.backward(np.ones((2, 3)))


# ==================================================================== Dropout

def test_dropout_gradient_matches_finite_differences(assert_close, numeric_gradient):
    x, dy = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    drop = fastrnn.Dropout(0.3, seed=5)
    y = drop(x)
    dx = drop.backward(dy)
    # the same seed draws the same mask at every evaluation
    loss = lambda: float(np.sum(fastrnn.Dropout(0.3, seed=5)(x) * dy))   # noqa: E731
    assert_close("dx", dx, numeric_gradient(loss, x), np.float64, kind="fd")
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    assert 0 < kept.sum() < kept.size


def test_dropout_modes_and_extremes():
    x = np.ones((3, 4), np.float32)
    drop = fastrnn.Dropout(0.5, seed=0).eval()
    assert drop(x) is x or np.array_equal(drop(x), x)
    assert not fastrnn.Dropout(1.0)(x).any()
    np.testing.assert_array_equal(fastrnn.Dropout(0.0)(x), x)
    with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\], got 1.5"):
        fastrnn.Dropout(1.5)


# ===================================================================== models

class Tagger(fastrnn.Module):
    """A model of one's own: embedding, a GRU, a read-out."""

    def __init__(self, dtype=np.float32):
        super().__init__()
        self.embed = fastrnn.Embedding(7, 4, dtype=dtype, seed=0)
        self.rnn = fastrnn.GRU(4, 6, dtype=dtype, seed=1)
        self.drop = fastrnn.Dropout(0.2, seed=2)
        self.head = fastrnn.Linear(6, 3, dtype=dtype, seed=3)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(self.drop(out))

    def backward(self, d_logits):
        dx, _ = self.rnn.backward(self.drop.backward(self.head.backward(d_logits)))
        self.embed.backward(dx)


def test_module_collects_its_parts_by_name():
    model = Tagger()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["embed.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                     "rnn.bias_hh_l0", "head.weight", "head.bias"]
    assert list(model.grads) == names and list(model.state_dict()) == names
    assert model.parameters()[0] is model.embed.weight
    logits = model(np.array([[1, 2], [3, 4]]))
    model.backward(np.ones_like(logits))
    grads = model.grads
    assert grads["rnn.weight_hh_l0"] is model.rnn.grads["weight_hh_l0"]   # live arrays
    fastrnn.clip_grad_norm_(grads, 1e-3)
    assert np.abs(model.rnn.grads["weight_hh_l0"]).max() <= 1e-3
    model.zero_grad()
    assert not any(g.any() for g in model.grads.values())
    assert model.eval() is model and not model.rnn.training and not model.head.training
    model.train()
    assert model.drop.training and model.embed.training
    with pytest.raises(TypeError, match="mode: expected True or False"):
        model.train(1)


def test_load_state_dict_checks_everything_before_changing_anything():
    model, other = Tagger(), Tagger()
    for p in other.parameters():
        p += 1
    model.load_state_dict(other.state_dict())
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p, other.state_dict()[name], err_msg=name)
    before = model.state_dict()
    bad = {**other.state_dict(), "head.bias": np.zeros(4)}
    bad["embed.weight"] = bad["embed.weight"] + 5
    with pytest.raises(ValueError, match=r"state_dict\['head.bias'\]: expected shape \(3,\)"):
        model.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"missing \['head.bias'\] and unexpected \['x'\]"):
        model.load_state_dict({**{k: v for k, v in before.items() if k != "head.bias"},
                               "x": np.zeros(1)})
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        model.load_state_dict([1, 2])
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p, before[name], err_msg=name)


def test_register_parameter_and_attributes():
    model = fastrnn.Module()
    w = model.register_parameter("scale", np.ones(3))
    assert model.scale is w and model.grads["scale"].shape == (3,)
    model.scale = [2, 2, 2]                                     # copies, checked
    assert w[0] == 2 and model.scale is w
    with pytest.raises(ValueError, match="name: expected a new identifier"):
        model.register_parameter("scale", np.ones(1))
    with pytest.raises(NotImplementedError, match="Module.forward: define it"):
        model(1)


def test_sequential_composes_and_refuses_cells():
    model = fastrnn.Sequential(fastrnn.Linear(3, 5, seed=0), fastrnn.LSTM(5, 4, seed=0),
                               fastrnn.Dropout(0.1), fastrnn.Linear(4, 2, seed=0))
    y = model(np.ones((6, 2, 3)))
    dx = model.backward(np.ones_like(y))
    assert y.shape == (6, 2, 2) and dx.shape == (6, 2, 3)
    assert "1.weight_hh_l0" in model.grads and len(model) == 4 and model[3].out_features == 2
    assert model(np.ones((6, 2, 3)), training=False).shape == (6, 2, 2)
    with pytest.raises(TypeError, match=r"modules\[1\]: expected a fastrnn layer or module "
                                        r"\(a cell needs its state"):
        fastrnn.Sequential(fastrnn.Linear(3, 3), fastrnn.GRUCell(3, 3))
    with pytest.raises(TypeError, match=r"modules\[0\]"):
        fastrnn.Sequential(np.tanh)


def char_model(dtype, V=5, stateful=False):
    return fastrnn.Sequential(fastrnn.Embedding(V, 3, dtype=dtype, seed=0),
                              fastrnn.LSTM(3, 4, num_layers=2, dtype=dtype, seed=1,
                                           stateful=stateful),
                              fastrnn.Linear(4, V, dtype=dtype, seed=2))


def test_a_whole_model_matches_finite_differences(numeric_gradient):
    model = char_model(np.float64)
    ids = rng.integers(0, 5, size=(6, 2))
    target = rng.integers(0, 5, size=(6, 2))
    loss = fastrnn.CrossEntropyLoss()
    loss(model(ids), target)
    model.zero_grad()
    model.backward(loss.backward())
    for name, p in model.named_parameters():
        numeric = numeric_gradient(lambda: loss(model(ids, training=False), target), p)
        np.testing.assert_allclose(model.grads[name], numeric, rtol=1e-6, atol=1e-9,
                                   err_msg=name)


# ===================================================================== saving

def test_sequential_saves_and_loads_with_its_generators(tmp_path):
    model = fastrnn.Sequential(fastrnn.Embedding(5, 3, padding_idx=0, seed=0),
                               fastrnn.GRU(3, 4, dropout=0.5, num_layers=2, seed=1),
                               fastrnn.Dropout(0.5, seed=2),
                               fastrnn.Sequential(fastrnn.Linear(4, 2, bias=False, seed=3)))
    model[1].eval()
    path = tmp_path / "model.npz"
    model.save(path)
    twin = fastrnn.load(path)
    assert repr(twin) == repr(model)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(twin.state_dict()[name], p, err_msg=name)
    assert twin.training and not twin[1].training and twin[2].training
    ids = rng.integers(0, 5, size=(4, 3))
    np.testing.assert_array_equal(twin(ids), model(ids))      # the same dropout masks next
    fastrnn.save(model, io.BytesIO())


def test_a_model_of_your_own_loads_into_an_instance(tmp_path):
    model = Tagger()
    for p in model.parameters():
        p *= 2
    model.eval()
    path = tmp_path / "tagger.npz"
    model.save(path)
    with pytest.raises(ValueError, match="a model of your own class: build it, then "
                                         r"model.load\(path\)"):
        fastrnn.load(path)
    twin = Tagger().load(path)
    assert not twin.training and not twin.rnn.training
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(twin.state_dict()[name], p, err_msg=name)
    other = fastrnn.Sequential(fastrnn.Linear(2, 2))
    before = other.state_dict()
    with pytest.raises(ValueError, match="is not a fastrnn file .*expected the weights"):
        other.load(path)
    np.testing.assert_array_equal(other[0].weight, before["0.weight"])


def test_models_pickle():
    model = Tagger()
    model(np.array([[1, 2]]))
    twin = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(twin.head.weight, model.head.weight)
    with pytest.raises(ValueError, match="no training forward"):
        twin.head.backward(np.ones((1, 2, 3)))


# ===================================================================== PyTorch

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_and_embedding_match_pytorch(dtype):
    torch = pytest.importorskip("torch")
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    tl = torch.nn.Linear(4, 3, dtype=tdtype)
    lin = fastrnn.Linear(4, 3, dtype=dtype)
    lin.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    x = rng.standard_normal((5, 2, 4)).astype(dtype)
    dy = rng.standard_normal((5, 2, 3)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = tl(tx)
    ty.backward(torch.tensor(dy))
    y = lin(x)
    dx = lin.backward(dy)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    for name, p in tl.named_parameters():
        np.testing.assert_allclose(lin.grads[name], p.grad.numpy(), **tol, err_msg=name)

    te = torch.nn.Embedding(6, 3, padding_idx=2, dtype=tdtype)
    emb = fastrnn.Embedding(6, 3, padding_idx=2, dtype=dtype)
    emb.load_state_dict({"weight": te.weight.detach().numpy()})
    ids = rng.integers(0, 6, size=(4, 5))
    dv = rng.standard_normal((4, 5, 3)).astype(dtype)
    tv = te(torch.tensor(ids))
    tv.backward(torch.tensor(dv))
    np.testing.assert_array_equal(emb(ids), tv.detach().numpy())
    emb.backward(dv)
    np.testing.assert_allclose(emb.grads["weight"], te.weight.grad.numpy(), **tol)


def test_a_whole_model_matches_pytorch():
    torch = pytest.importorskip("torch")
    model = char_model(np.float64)
    tm = torch.nn.ModuleDict({"0": torch.nn.Embedding(5, 3), "1": torch.nn.LSTM(3, 4, 2),
                              "2": torch.nn.Linear(4, 5)}).double()
    tm.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    ids = rng.integers(0, 5, size=(7, 3))
    target = rng.integers(0, 5, size=(7, 3))
    target[0, 0] = -100                                        # ignored
    loss = fastrnn.CrossEntropyLoss()
    value = loss(model(ids), target)
    model.backward(loss.backward())
    out, _ = tm["1"](tm["0"](torch.tensor(ids)))
    logits = tm["2"](out)
    t_value = torch.nn.CrossEntropyLoss()(logits.reshape(-1, 5), torch.tensor(target).reshape(-1))
    t_value.backward()
    assert value == pytest.approx(t_value.item(), rel=1e-12)
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
