"""Every compiled instruction-set variant of the kernels (baseline x86-64, AVX2,
AVX-512: those this CPU runs) agrees with the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

T, B, I, H = 7, 3, 5, 9          # H not a multiple of any vector width
LENGTHS = np.array([7, 3, 0])


@pytest.fixture(params=_kernels.available_isas())
def isa(request):
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(None)


def test_best_variant_is_the_default():
    assert _kernels.isa() == _kernels.available_isas()[-1]
    with pytest.raises(ValueError, match="isa"):
        _kernels.set_isa("sse9")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", [
    ("rnn", {}), ("lstm", dict(proj_size=4)), ("gru", {}), ("gru", dict(reset_after=False)),
    ("lstm", dict(peepholes=True, activations=["hard_sigmoid", "softsign", "tanh"], clip=2.0)),
], ids=["rnn", "lstm-proj", "gru", "gru-rb", "lstm-general"])
@pytest.mark.parametrize("batch", [1, 3, 12], ids=["B1", "B3", "B12-blas"])
def test_variant_matches_reference(isa, kind, kw, dtype, batch):
    cls = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[kind]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, batch, I)).astype(dtype)
    lengths = rng.integers(0, T + 1, batch)
    results = {}
    for backend in ("c", "numpy"):
        layer = cls(I, H, bidirectional=True, dtype=dtype, backend=backend, seed=1, **kw)
        out, _ = layer(x, lengths=lengths)
        dx, _ = layer.backward(np.ones_like(out))
        infer, _ = layer(x, lengths=lengths, training=False)
        results[backend] = [out, dx, infer] + [g.copy() for g in layer.grads.values()]
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for got, want in zip(results["c"], results["numpy"]):
        np.testing.assert_allclose(got, want, err_msg=isa, **tol)
