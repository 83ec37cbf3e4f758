"""Generate the golden files tests/data/golden_<cell>.npz with PyTorch.

    python3 tests/data/make_golden.py          (from anywhere)

For each cell kind (rnn_tanh, rnn_relu, lstm, gru) a 2-layer bidirectional
float64 torch module with tiny sizes runs one packed batch of unsorted
lengths (pack_padded_sequence(enforce_sorted=False), padded back to T with
pad_packed_sequence(total_length=T)) from random initial states, and the scalar

    loss = sum(output * R) + sum(h_n * S) (+ sum(c_n * U))

is backpropagated. Seeds are fixed. The inputs (parameters, x, states, R, S,
U) are rounded to multiples of 1/64, exact in binary, so they compress to
almost nothing and the files stay a few KB; torch's results are stored at
full float64 precision.

File layout (np.load(..., allow_pickle=False) reads it):

    config   int64 [T, B, I, H, num_layers, bidirectional]
    lengths  int64 (B,)
    names    str (n,)       the tensor names, see below
    shapes   int64 (n, 3)   each tensor's shape, padded with 0 (no axis)
    values   float64        the tensors, flattened and concatenated in order

Tensor names: param.<name> for every state_dict entry (PyTorch names and
shapes), x (T, B, I), h0 (and c0) (D*L, B, H), R, S (and U) the upstream
gradients of output, h_n (and c_n); torch's results output (T, B, D*H),
h_n (and c_n); torch's gradients dx, dh0 (and dc0) and grad.<name> for every
parameter. tests/test_golden.py checks both fastrnn backends against these
files without torch.
"""
from __future__ import annotations

import pathlib

import numpy as np
import torch

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
T, B, I, H, NUM_LAYERS, BIDIRECTIONAL = 4, 3, 2, 3, 2, True
LENGTHS = [2, 4, 1]   # unsorted, with the extremes 1 and T
HERE = pathlib.Path(__file__).resolve().parent


def quantize(a):
    """a rounded to a multiple of 1/64: exact in binary, compresses well."""
    return np.round(np.asarray(a, dtype=np.float64) * 64) / 64


def make_module(cell: str) -> torch.nn.Module:
    kw = dict(num_layers=NUM_LAYERS, bidirectional=BIDIRECTIONAL)
    if cell.startswith("rnn"):
        return torch.nn.RNN(I, H, nonlinearity=cell[4:], **kw)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, **kw)
    return torch.nn.GRU(I, H, **kw)


def golden(cell: str, seed: int) -> dict:
    """{name: float64 array} of one cell kind."""
    torch.manual_seed(seed)
    module = make_module(cell).double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(quantize(p.numpy())))
    rng = np.random.default_rng(seed)
    D = 2 if BIDIRECTIONAL else 1
    lstm = cell == "lstm"
    state = (D * NUM_LAYERS, B, H)
    t = {"x": rng.standard_normal((T, B, I)), "h0": 0.5 * rng.standard_normal(state)}
    if lstm:
        t["c0"] = 0.5 * rng.standard_normal(state)
    t.update(R=rng.standard_normal((T, B, D * H)), S=rng.standard_normal(state))
    if lstm:
        t["U"] = rng.standard_normal(state)
    t = {k: quantize(v) for k, v in t.items()}

    x = torch.tensor(t["x"], requires_grad=True)
    h0 = torch.tensor(t["h0"], requires_grad=True)
    c0 = torch.tensor(t["c0"], requires_grad=True) if lstm else None
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(LENGTHS), enforce_sorted=False)
    out, st = module(packed, (h0, c0) if lstm else h0)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    h_n, c_n = st if lstm else (st, None)
    loss = (out * torch.tensor(t["R"])).sum() + (h_n * torch.tensor(t["S"])).sum()
    if lstm:
        loss = loss + (c_n * torch.tensor(t["U"])).sum()
    loss.backward()

    result = {f"param.{k}": v.numpy() for k, v in module.state_dict().items()}
    result.update(t)
    result.update(output=out.detach().numpy(), h_n=h_n.detach().numpy())
    if lstm:
        result["c_n"] = c_n.detach().numpy()
    result.update(dx=x.grad.numpy(), dh0=h0.grad.numpy())
    if lstm:
        result["dc0"] = c0.grad.numpy()
    result.update({f"grad.{k}": p.grad.numpy() for k, p in module.named_parameters()})
    return result


def pack(tensors: dict) -> dict:
    """The file's arrays (see the module docstring) from {name: array}."""
    shapes = np.zeros((len(tensors), 3), dtype=np.int64)
    for i, v in enumerate(tensors.values()):
        shapes[i, :v.ndim] = v.shape
    return {"config": np.array([T, B, I, H, NUM_LAYERS, BIDIRECTIONAL], dtype=np.int64),
            "lengths": np.array(LENGTHS, dtype=np.int64),
            "names": np.array(list(tensors)),
            "shapes": shapes,
            "values": np.concatenate([np.ravel(v).astype(np.float64) for v in tensors.values()])}


def main() -> None:
    for seed, cell in enumerate(CELLS):
        path = HERE / f"golden_{cell}.npz"
        np.savez_compressed(path, **pack(golden(cell, seed)))
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
