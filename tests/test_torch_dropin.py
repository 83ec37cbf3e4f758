"""fastrnn.torch against torch.nn: the drop-in modules give torch.nn's numbers.

Each test builds a torch.nn module and its fastrnn.torch twin from the same
seed (the twins' initialisation is torch's own, so their parameters are equal
without copying), runs both on the same tensors and compares, tensor by
tensor and by name: output, h_n (c_n), and the gradients of

    loss = sum(output * R) + sum(h_n * S) (+ sum(c_n * U))

with respect to the input, h0 (c0) and every parameter. Then: gradcheck in
float64, state_dicts in both directions, a model trained a few steps with
torch.optim, dropout (whose masks are torch's), autograd's rules (no_grad,
retain_graph, in-place changes), threads, and errors.
"""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch",
                            reason="fastrnn.torch needs PyTorch (pip install \".[torch]\")")
import fastrnn.torch as ft  # noqa: E402
from torch.func import functional_call  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with "
                                        "oneDNN:UserWarning")

KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
DTYPES = [torch.float32, torch.float64]
# the two differ by rounding (BLAS blocking, summation order, exp/tanh);
# gradients are sums over steps and rows
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
T, B, I, H = 5, 3, 3, 4
LENGTHS = [3, 5, 1]      # unsorted, with the extremes 1 and T


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's intra-op pool at one thread for this module: its oneDNN LSTM
    (float32) took 0.1-0.5 s per tiny call at 2 threads on a busy 2-core
    machine, 1-5 ms at one. The numbers compared do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pair(kind, dtype=torch.float64, seed=0, **kw):
    """(torch.nn module, fastrnn.torch module), equal parameters from one seed."""
    torch_cls, fast_cls = {"lstm": (torch.nn.LSTM, ft.LSTM), "gru": (torch.nn.GRU, ft.GRU)}.get(
        kind, (torch.nn.RNN, ft.RNN))
    if kind.startswith("rnn"):
        kw["nonlinearity"] = kind[4:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # torch's: dropout with one layer
        torch.manual_seed(seed)
        tm = torch_cls(I, H, dtype=dtype, **kw)
        torch.manual_seed(seed)
        fm = fast_cls(I, H, dtype=dtype, **kw)
    for (name, a), (_, b) in zip(tm.named_parameters(), fm.named_parameters()):
        assert torch.equal(a, b), f"{name}: the twins' initialisations differ"
    return tm, fm


def assert_close(name, got, expected, dtype):
    assert got is not None and expected is not None, f"{name}: got {got}, expected {expected}"
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)}, expected " \
                                        f"{tuple(expected.shape)}"
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, expected {expected.dtype}"
    err = (got - expected).abs().max().item() if got.numel() else 0.0
    assert torch.allclose(got, expected, **TOL[dtype]), f"{name}: max abs error {err:.3e}"


def run(module, x, state, lstm, packed=None, batch_first=False):
    """Forward, then the gradients of sum(out*R) + sum(h_n*S) (+ sum(c_n*U)) with
    fixed R, S, U: {name: tensor} of outputs and gradients. x and the states are
    leaves (fresh copies per call); packed is the lengths, or None."""
    x = x.detach().clone().requires_grad_()
    state = [None if s is None else s.detach().clone().requires_grad_() for s in state]
    inp = pack_padded_sequence(x, torch.tensor(packed), batch_first=batch_first,
                               enforce_sorted=False) if packed else x
    hx = None if state[0] is None else (tuple(state) if lstm else state[0])
    out, hidden = module(inp, hx)
    if packed:
        assert isinstance(out, PackedSequence)
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            assert torch.equal(getattr(out, field), getattr(inp, field)), field
        out = out.data
    hidden = list(hidden) if lstm else [hidden]
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for h in hidden:
        loss = loss + (h * torch.randn(h.shape, generator=g, dtype=h.dtype)).sum()
    leaves = {"dx": x, **{f"d{n}": s for n, s in zip(("h0", "c0"), state) if s is not None}}
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(loss, list(leaves.values()) + list(params.values()))
    result = {"output": out, "h_n": hidden[0]}
    if lstm:
        result["c_n"] = hidden[1]
    result.update(zip(list(leaves) + [f"grad[{n}]" for n in params], grads))
    return result


def compare(tm, fm, x, state, lstm, dtype, **kw):
    expected, got = run(tm, x, state, lstm, **kw), run(fm, x, state, lstm, **kw)
    assert list(got) == list(expected)
    for name in expected:
        assert_close(name, got[name], expected[name], dtype)


def data(kind, dtype, num_layers=1, bidirectional=False, layout="tm", with_state=True,
         proj_size=0, seed=1):
    """x and [h0, c0] (None when not given) for a layout: "tm" (T, B, I), "bf"
    (B, T, I), "packed" (padded time-major, packed by run), "unbatched" and
    "unbatched_bf" (T, I)."""
    g = torch.Generator().manual_seed(seed)
    D = 2 if bidirectional else 1
    unbatched = layout.startswith("unbatched")
    xs = (T, I) if unbatched else (B, T, I) if layout == "bf" else (T, B, I)
    ss = (D * num_layers,) + (() if unbatched else (B,))
    x = torch.randn(xs, generator=g, dtype=dtype)
    if not with_state:
        return x, [None, None]
    h0 = 0.5 * torch.randn(ss + (proj_size or H,), generator=g, dtype=dtype)
    c0 = 0.5 * torch.randn(ss + (H,), generator=g, dtype=dtype) if kind == "lstm" else None
    return x, [h0, c0]


# ------------------------------------------------------------ parity

# (num_layers, bidirectional, layout, h0 given): every layout with one and two
# layers, one and two directions, with and without h0
CONFIGS = [(1, False, "tm", False), (2, True, "tm", True), (2, False, "bf", True),
           (1, True, "bf", False), (2, True, "packed", True), (1, False, "packed", False),
           (2, True, "unbatched", True), (1, False, "unbatched", False),
           (2, True, "unbatched_bf", False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers,bidirectional,layout,with_state", CONFIGS,
                         ids=[f"L{n}-{'bi' if b else 'uni'}-{lay}-{'h0' if s else 'no_h0'}"
                              for n, b, lay, s in CONFIGS])
def test_outputs_and_gradients_equal_torch(kind, dtype, num_layers, bidirectional, layout,
                                           with_state):
    batch_first = layout in ("bf", "unbatched_bf")
    tm, fm = make_pair(kind, dtype, num_layers=num_layers, bidirectional=bidirectional,
                       batch_first=batch_first)
    x, state = data(kind, dtype, num_layers, bidirectional, layout, with_state)
    compare(tm, fm, x, state, kind == "lstm", dtype,
            packed=LENGTHS if layout == "packed" else None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
def test_packed_batch_first_and_no_bias(kind, batch_first):
    tm, fm = make_pair(kind, num_layers=2, bidirectional=True, batch_first=batch_first,
                       bias=False)
    x, state = data(kind, torch.float64, 2, True, "bf" if batch_first else "tm")
    compare(tm, fm, x, state, kind == "lstm", torch.float64, packed=LENGTHS,
            batch_first=batch_first)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["tm", "packed", "unbatched"])
def test_lstm_projection(dtype, layout):
    tm, fm = make_pair("lstm", dtype, num_layers=2, bidirectional=True, proj_size=2)
    x, state = data("lstm", dtype, 2, True, layout, proj_size=2)
    compare(tm, fm, x, state, True, dtype, packed=LENGTHS if layout == "packed" else None)


def test_sorted_packed_sequence_without_indices():
    """enforce_sorted=True leaves sorted_indices None; the output does the same."""
    tm, fm = make_pair("gru", num_layers=2)
    x, _ = data("gru", torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 1]), enforce_sorted=True)
    (out_t, h_t), (out_f, h_f) = tm(packed), fm(packed)
    assert out_f.sorted_indices is None and out_f.unsorted_indices is None
    assert_close("output", out_f.data, out_t.data, torch.float64)
    assert_close("h_n", h_f, h_t, torch.float64)


def test_non_contiguous_inputs_and_gradients():
    """A transposed input and state, and the expanded gradient of .sum()."""
    tm, fm = make_pair("lstm", num_layers=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, I, generator=g, dtype=torch.float64).transpose(0, 1)
    h0 = torch.randn(B, 2, H, generator=g, dtype=torch.float64).transpose(0, 1)
    c0 = torch.randn(2, B, 2 * H, generator=g, dtype=torch.float64)[:, :, ::2]
    results = []
    for m in (tm, fm):
        xl = x.detach().clone().requires_grad_()
        out, (h_n, _) = m(xl, (h0, c0))
        (out.sum() + h_n[-1].sum()).backward()
        results.append((out, xl.grad, m.weight_ih_l0.grad))
    for name, got, expected in zip(("output", "dx", "grad[weight_ih_l0]"), *results[::-1]):
        assert_close(name, got, expected, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_cells_equal_torch(kind, dtype, bias):
    torch_cls, fast_cls = {"lstm": (torch.nn.LSTMCell, ft.LSTMCell),
                           "gru": (torch.nn.GRUCell, ft.GRUCell)}.get(
        kind, (torch.nn.RNNCell, ft.RNNCell))
    kw = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
    torch.manual_seed(0)
    tc = torch_cls(I, H, bias=bias, dtype=dtype, **kw)
    torch.manual_seed(0)
    fc = fast_cls(I, H, bias=bias, dtype=dtype, **kw)
    lstm = kind == "lstm"
    g = torch.Generator().manual_seed(2)
    for shape in ((B,), ()):                           # batched and unbatched
        x = torch.randn(shape + (I,), generator=g, dtype=dtype)
        state = [torch.randn(shape + (H,), generator=g, dtype=dtype) for _ in range(1 + lstm)]
        for given in (True, False):
            results = []
            for cell in (tc, fc):
                xl = x.clone().requires_grad_()
                sl = [s.clone().requires_grad_() for s in state]
                hx = (tuple(sl) if lstm else sl[0]) if given else None
                outs = cell(xl, hx)
                outs = list(outs) if lstm else [outs]
                loss = sum((k + 1) * (o * o).sum() for k, o in enumerate(outs))
                leaves = [xl] + (sl if given else []) + list(cell.parameters())
                results.append(outs + list(torch.autograd.grad(loss, leaves)))
            for k, (got, expected) in enumerate(zip(results[1], results[0])):
                assert_close(f"{kind} {shape} given={given} tensor {k}", got, expected, dtype)


def test_same_initialisation_and_repr_as_torch():
    for kind, kw in [("lstm", dict(num_layers=2, proj_size=2, bidirectional=True)),
                     ("gru", dict(batch_first=True, bias=False)),
                     ("rnn_relu", dict(dropout=0.5, num_layers=2))]:
        tm, fm = make_pair(kind, torch.float32, **kw)    # checks the parameters are equal
        assert repr(fm) == repr(tm)
        assert isinstance(fm, type(tm))
        assert [n for n, _ in fm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert repr(ft.RNNCell(3, 4, nonlinearity="relu")) == \
        repr(torch.nn.RNNCell(3, 4, nonlinearity="relu"))


# ------------------------------------------------------------ gradcheck

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["tm", "packed"])
def test_gradcheck(kind, layout):
    """torch.autograd.gradcheck in float64 over the input, the states and every
    parameter (torch.func.functional_call), two bidirectional layers; fast
    mode (random projections of the Jacobian: a few forwards per check instead
    of two per element) but for the GRU, whose full check takes a second."""
    kw = dict(num_layers=2, bidirectional=True)
    if kind == "lstm":
        kw["proj_size"] = 2
    _, fm = make_pair(kind, **kw)
    g = torch.Generator().manual_seed(4)
    Ts, Bs, lengths = 3, 2, [3, 1]
    R = 2 if kind == "lstm" else H
    x = torch.randn(Ts, Bs, I, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, Bs, R, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, Bs, H, generator=g, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in fm.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fm.parameters()]

    def f(x, h0, c0, *ps):
        inp = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False) \
            if layout == "packed" else x
        hx = (h0, c0) if kind == "lstm" else h0
        out, hidden = functional_call(fm, dict(zip(names, ps)), (inp, hx))
        out = out.data if layout == "packed" else out
        return (out, *hidden) if kind == "lstm" else (out, hidden)

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params),
                                    fast_mode=not (kind == "gru" and layout == "tm"))


@pytest.mark.parametrize("cls", [ft.RNNCell, ft.LSTMCell, ft.GRUCell])
def test_gradcheck_cells(cls):
    cell = cls(I, H, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, I, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, H, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, H, generator=g, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def f(x, h, c, *ps):
        hx = (h, c) if cls is ft.LSTMCell else h
        return functional_call(cell, dict(zip(names, ps)), (x, hx))

    assert torch.autograd.gradcheck(f, (x, h, c, *params))


# ------------------------------------------------------------ state_dict and training

class Model(torch.nn.Module):
    """A recurrent layer and a linear head on its last output."""

    def __init__(self, kind, dtype):
        super().__init__()
        cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
        self.rnn = cls(I, H, num_layers=2, batch_first=True, dtype=dtype)
        self.head = torch.nn.Linear(H, 2, dtype=dtype)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_dict_both_ways(kind):
    torch.manual_seed(0)
    trained = Model(kind, torch.float32)
    model = copy.deepcopy(trained)
    cls = ft.LSTM if kind == "lstm" else ft.GRU
    model.rnn = cls(I, H, num_layers=2, batch_first=True)          # fresh weights
    model.load_state_dict(trained.state_dict())                    # torch -> fastrnn.torch
    x = torch.randn(B, T, I)
    assert_close("torch -> fastrnn", model(x), trained(x), torch.float32)
    back = Model(kind, torch.float32)
    back.load_state_dict(model.state_dict())                       # fastrnn.torch -> torch
    assert_close("fastrnn -> torch", back(x), model(x), torch.float32)
    assert list(model.state_dict()) == list(trained.state_dict())


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_training_with_torch_optim_matches_torch(kind, dtype):
    """The same model with torch.nn's and with fastrnn.torch's layer, five Adam
    steps on MSE: the losses and every parameter stay equal."""
    torch.manual_seed(0)
    reference = Model(kind, dtype)
    model = copy.deepcopy(reference)
    model.rnn = (ft.LSTM if kind == "lstm" else ft.GRU)(I, H, num_layers=2, batch_first=True,
                                                         dtype=dtype)
    model.load_state_dict(reference.state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (reference, model)]
    g = torch.Generator().manual_seed(1)
    tol = {torch.float32: dict(rtol=1e-3, atol=1e-4), torch.float64: TOL[torch.float64]}[dtype]
    for step in range(5):
        x = torch.randn(B, T, I, generator=g, dtype=dtype)
        y = torch.randn(B, 2, generator=g, dtype=dtype)
        losses = []
        for m, opt in zip((reference, model), optimizers):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        assert np.isclose(losses[1], losses[0], **tol), f"step {step}: loss {losses}"
    for (name, a), (_, b) in zip(reference.named_parameters(), model.named_parameters()):
        assert torch.allclose(b, a, **tol), f"{name}: max abs error {(a - b).abs().max():.3e}"


# ------------------------------------------------------------ dropout and modes

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["tm", "bf", "packed"])
def test_dropout_masks_are_torchs(kind, layout):
    """Masks drawn as torch.nn draws them (at::dropout's bernoulli_ on the layer
    output's time-major or packed shape): under one seed, the same numbers.
    This follows torch's CPU code, which torch does not promise to keep."""
    # torch's float32 LSTM runs oneDNN's code, whose draws are checked once
    dtype = torch.float32 if kind == "lstm" and layout == "tm" else torch.float64
    tm, fm = make_pair(kind, dtype, num_layers=3, bidirectional=True, dropout=0.5,
                       batch_first=layout == "bf")
    x, state = data(kind, dtype, 3, True, layout)
    results = []
    for m in (tm, fm):
        torch.manual_seed(11)
        results.append(run(m, x, state, kind == "lstm",
                           packed=LENGTHS if layout == "packed" else None))
        results[-1]["next draw"] = torch.rand(3)    # the generator advanced alike
    for name in results[0]:
        assert_close(name, results[1][name], results[0][name], dtype)


def test_dropout_modes():
    """Training mode drops also under no_grad (as torch.nn), eval mode never;
    both equal torch.nn's under one seed."""
    tm, fm = make_pair("rnn_tanh", torch.float32, num_layers=2, dropout=0.3)
    x, _ = data("rnn_tanh", torch.float32)
    outputs = {}
    for name, m in (("torch", tm), ("fastrnn", fm)):
        with torch.no_grad():
            torch.manual_seed(2)
            trained, _ = m.train()(x)
            evaluated, _ = m.eval()(x)
        outputs[name] = trained, evaluated
    assert_close("train mode under no_grad", *outputs["fastrnn"][:1], *outputs["torch"][:1],
                 torch.float32)
    assert_close("eval mode", outputs["fastrnn"][1], outputs["torch"][1], torch.float32)
    assert not torch.allclose(*outputs["fastrnn"])


def test_dropout_fraction():
    """About p of the units between the layers are dropped: with an identity
    second layer (w_ih = I, w_hh = 0, relu) the output is the first layer's
    relu output times the mask."""
    torch.manual_seed(0)
    m = ft.RNN(4, 200, num_layers=2, nonlinearity="relu", dropout=0.25, bias=False)
    with torch.no_grad():
        m.weight_ih_l1.copy_(torch.eye(200))
        m.weight_hh_l1.zero_()
        m.weight_hh_l0.zero_()
    x = torch.randn(10, 8, 4)
    with torch.no_grad():
        out, _ = m(x)
        m.eval()
        plain, _ = m(x)
    alive = plain > 0
    kept = out[alive] / plain[alive]
    scale = 1 / 0.75
    assert torch.all(torch.isclose(kept, torch.zeros(()))
                     | torch.isclose(kept, torch.tensor(scale)))
    fraction = (kept == 0).float().mean().item()
    assert 0.2 < fraction < 0.3, fraction


def test_dropout_one_zeroes_the_next_layer():
    tm, fm = make_pair("gru", num_layers=2, dropout=1.0)
    x, _ = data("gru", torch.float64)
    assert_close("output", fm(x)[0], tm(x)[0], torch.float64)


def test_no_grad_keeps_nothing():
    tm, fm = make_pair("lstm", num_layers=2)
    x, _ = data("lstm", torch.float64)
    with torch.no_grad():
        out, (h_n, c_n) = fm(x.requires_grad_())
    assert out.grad_fn is None and not out.requires_grad
    fm.requires_grad_(False)
    out2, _ = fm(x.detach())
    assert out2.grad_fn is None
    assert_close("no_grad output", out, tm(x)[0].detach(), torch.float64)
    with torch.inference_mode():
        out3, _ = fm(x.detach())
    assert_close("inference_mode output", out3, out, torch.float64)


def test_retain_graph_and_second_backward():
    _, fm = make_pair("gru")
    x, _ = data("gru", torch.float64)
    out, _ = fm(x)
    out.sum().backward(retain_graph=True)
    once = fm.weight_hh_l0.grad.clone()
    out.sum().backward()
    assert_close("twice", fm.weight_hh_l0.grad, 2 * once, torch.float64)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()


def test_input_modified_in_place_is_caught():
    """The input and weights are saved through save_for_backward: changing them
    before backward raises torch's error instead of giving wrong gradients."""
    _, fm = make_pair("lstm")
    x, _ = data("lstm", torch.float64)
    x = x.requires_grad_()
    y = x * 1.0
    out, _ = fm(y)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_unused_outputs_and_partial_gradients():
    """Gradients only through h_n, and only to what requires them."""
    tm, fm = make_pair("lstm", num_layers=2, bidirectional=True)
    x, _ = data("lstm", torch.float64)
    results = []
    for m in (tm, fm):
        m.weight_ih_l0.requires_grad_(False)
        _, (h_n, _) = m(x)
        h_n.sum().backward()
        assert m.weight_ih_l0.grad is None
        results.append(m.weight_hh_l1_reverse.grad)
    assert_close("grad[weight_hh_l1_reverse]", results[1], results[0], torch.float64)


def test_backward_releases_the_caches():
    """What backward reads goes through save_for_backward, so torch frees it
    after backward although the output lives on: the next forward reuses the
    same kernel caches instead of allocating new ones. Run in a new thread,
    whose kernel backend (and its spare caches) is its own."""
    _, fm = make_pair("gru", num_layers=2)
    x, _ = data("gru", torch.float64)
    found = {}

    def body():
        kept = []
        for _ in range(4):
            out, _ = fm(x.clone().requires_grad_())
            out.sum().backward()
            kept.append(out)                    # graphs alive, saved tensors freed
        found["after backward"] = {id(c) for c in ft._backend()._caches}
        held = [fm(x.clone().requires_grad_()) for _ in range(2)]   # not differentiated
        found["held"] = {id(c) for c in ft._backend()._caches}
        del held

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert len(found["after backward"]) == 2, "one cache per layer, reused"
    # the first undifferentiated forward reuses the two, the second needs two more
    assert len(found["held"] - found["after backward"]) == 2


def test_threads_share_one_module():
    """Two threads calling one module at once get what each gets alone."""
    _, fm = make_pair("gru", torch.float32, num_layers=2)
    xs = [torch.randn(20, 8, I, generator=torch.Generator().manual_seed(s)) for s in range(4)]

    def step(x):
        xl = x.clone().requires_grad_()
        out, _ = fm(xl)
        (dx,) = torch.autograd.grad(out.square().sum(), [xl])
        return out, dx

    alone = [step(x) for x in xs]
    together = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def worker(k):
        barrier.wait()
        for _ in range(3):
            together[k] = step(xs[k])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (o1, d1), (o2, d2) in zip(alone, together):
        assert torch.equal(o1, o2) and torch.equal(d1, d2)


def test_pickle_deepcopy_and_dtype_conversion():
    _, fm = make_pair("lstm", torch.float32, num_layers=2)
    x, _ = data("lstm", torch.float32)
    expected = fm(x)[0]
    for clone in (pickle.loads(pickle.dumps(fm)), copy.deepcopy(fm)):
        assert type(clone) is ft.LSTM
        assert torch.equal(clone(x)[0], expected)
    fm.double()
    assert_close("after .double()", fm(x.double())[0], expected.double(), torch.float32)


def test_empty_batch_and_sequence_as_torch():
    tm, fm = make_pair("gru")
    out, h_n = fm(torch.zeros(T, 0, I, dtype=torch.float64))
    assert out.shape == (T, 0, H) and h_n.shape == (1, 0, H)
    with pytest.raises(RuntimeError) as torch_error:
        tm(torch.zeros(0, B, I, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=str(torch_error.value)):
        fm(torch.zeros(0, B, I, dtype=torch.float64))


# ------------------------------------------------------------ errors

def _error(fn):
    try:
        fn()
    except Exception as e:   # noqa: BLE001 - the type is what is compared
        return e
    return None


def bad_calls():
    """(label, kind, module kwargs, call(module)) that torch.nn refuses."""
    f32 = dict(dtype=torch.float32)
    x = torch.zeros(T, B, I)
    return [
        ("input dtype", "gru", f32, lambda m: m(x.double())),
        ("input size", "gru", f32, lambda m: m(torch.zeros(T, B, I + 1))),
        ("input rank 4", "rnn_tanh", f32, lambda m: m(torch.zeros(1, T, B, I))),
        ("input rank 1", "lstm", f32, lambda m: m(torch.zeros(I))),
        ("h0 shape", "gru", f32, lambda m: m(x, torch.zeros(2, B, H))),
        ("h0 batch", "rnn_tanh", f32, lambda m: m(x, torch.zeros(1, B + 1, H))),
        ("h0 rank", "gru", f32, lambda m: m(x, torch.zeros(B, H))),
        ("c0 shape", "lstm", f32, lambda m: m(x, (torch.zeros(1, B, H), torch.zeros(1, B, 1)))),
        ("unbatched h0 rank", "gru", f32, lambda m: m(torch.zeros(T, I), torch.zeros(1, 1, H))),
        ("packed h0 batch", "gru", f32, lambda m: m(
            pack_padded_sequence(x, torch.tensor([5, 2, 1])), torch.zeros(1, 2, H))),
    ]


@pytest.mark.parametrize("label,kind,kw,call", bad_calls(), ids=[c[0] for c in bad_calls()])
def test_errors_are_torchs(label, kind, kw, call):
    """The same bad call raises the same exception type as torch.nn's, with a message."""
    tm, fm = make_pair(kind, **kw)
    expected, got = _error(lambda: call(tm)), _error(lambda: call(fm))
    assert expected is not None, f"{label}: torch.nn accepts it"
    assert type(got) is type(expected), f"{label}: {type(got).__name__}: {got}, torch.nn " \
                                        f"raises {type(expected).__name__}: {expected}"
    assert str(got)


@pytest.mark.parametrize("call,error,match", [
    (lambda: ft.GRU(I, H, device="cuda"), ValueError, "CPU only"),
    (lambda: ft.LSTM(I, H, device=torch.device("meta")), ValueError, "CPU only"),
    (lambda: ft.RNNCell(I, H, device="cuda:0"), ValueError, "CPU only"),
    (lambda: ft.GRU(I, H, dtype=torch.float16), TypeError, "float32 and torch.float64"),
    (lambda: ft.LSTMCell(I, H, dtype=torch.bfloat16), TypeError, "float32 and torch.float64"),
    (lambda: ft.RNNCell(I, H, nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (lambda: ft.RNN(I, H, nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (lambda: ft.GRU(I, H, proj_size=2), TypeError, "proj_size"),   # torch: ValueError
    (lambda: ft.LSTM(I, H, proj_size=H), ValueError, "proj_size"),
    (lambda: ft.GRU(I, H, dropout=1.5), ValueError, "dropout"),
    (lambda: ft.GRU(I, 0), ValueError, "hidden_size"),
])
def test_construction_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call,error,match", [
    (lambda m: m(torch.zeros(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H).double())),
     TypeError, r"hx\[1\]: expected dtype torch.float32"),
    (lambda m: m(torch.zeros(T, B, I), (torch.zeros(1, B, H),)), TypeError, "pair"),
    (lambda m: m(np.zeros((T, B, I), np.float32)), TypeError, "Tensor or a PackedSequence"),
    (lambda m: m.half()(torch.zeros(T, B, I, dtype=torch.float16)), TypeError, "float32"),
    (lambda m: ft.GRUCell(I, H)(torch.zeros(B, I), (torch.zeros(B, H),)), TypeError, "a Tensor"),
    (lambda m: ft.LSTMCell(I, H)(torch.zeros(B, I), torch.zeros(B, H)), TypeError, "pair"),
    (lambda m: m(torch.zeros(T, B, I, device="meta")), ValueError, "CPU only"),
])
def test_forward_errors_of_fastrnn(call, error, match):
    """What torch.nn does not check the same way (it fails later in its kernels,
    or runs on other devices and dtypes)."""
    m = ft.LSTM(I, H)
    with pytest.raises(error, match=match):
        call(m)


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("label,call", [
    ("input size", lambda c, lstm: c(torch.zeros(B, I + 1))),
    ("input rank", lambda c, lstm: c(torch.zeros(1, B, I))),
    ("hidden batch", lambda c, lstm: c(torch.zeros(B, I), (torch.zeros(B + 1, H),) * 2 if lstm
                                       else torch.zeros(B + 1, H))),
    ("hidden size", lambda c, lstm: c(torch.zeros(B, I), (torch.zeros(B, H + 1),) * 2 if lstm
                                      else torch.zeros(B, H + 1))),
    ("hidden rank", lambda c, lstm: c(torch.zeros(B, I), (torch.zeros(1, B, H),) * 2 if lstm
                                      else torch.zeros(1, B, H))),
])
def test_cell_errors_are_torchs(cls, label, call):
    tc, fc = getattr(torch.nn, cls)(I, H), getattr(ft, cls)(I, H)
    lstm = cls == "LSTMCell"
    expected, got = _error(lambda: call(tc, lstm)), _error(lambda: call(fc, lstm))
    assert expected is not None, f"{label}: torch.nn accepts it"
    assert type(got) is type(expected), f"{label}: {type(got).__name__}: {got}, torch.nn " \
                                        f"raises {type(expected).__name__}: {expected}"
    assert str(got) == str(expected)


# ------------------------------------------------------------ the optional import

def test_optional_import():
    """``import fastrnn`` leaves torch alone; without torch, importing
    fastrnn.torch says what to install."""
    code = ("import sys, fastrnn; print('torch' in sys.modules)\n"
            "sys.modules['torch'] = None\n"
            "try:\n    import fastrnn.torch\n"
            "except ImportError as e:\n    print(type(e).__name__, e)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    imported, error = result.stdout.strip().split("\n")
    assert imported == "False"
    assert error.startswith("ImportError fastrnn.torch needs PyTorch") and "pip install" in error
