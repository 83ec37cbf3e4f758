"""The training of tests/test_mpi.py, run both ways.

As a script under ``mpiexec -n 2``, each process trains on its share of every
batch, with ``fastrnn.mpi`` between backward and the optimizer step, and saves
its parameters (and what the broadcast tests saw) to ``<out>.<rank>.npz``.
Imported by the test, one process trains on the whole batches; the test
compares. Everything in float64, fastrnn's kernels on one thread.

Two models, two splits:
- a Module of a stacked bidirectional LSTM (lengths, h_n) and a Linear head,
  cross-entropy, clipped gradients, Adam; the batch split in halves, the
  plain mean over the processes (weight=None);
- a Sequential of a GRU and a Linear on every step, mean squared error, SGD
  with momentum; the batch split 5 rows / 3 rows, each process's gradient
  weighted by its rows (weight=len(rows)).
"""
from __future__ import annotations

import sys
from typing import Callable, Dict

import numpy as np

import fastrnn
import fastrnn.mpi

STEPS = 4          # optimizer steps
B, T, I = 8, 7, 3  # rows of a batch, steps, input features
CLASSES = 4


class Classifier(fastrnn.Module):
    """Stacked bidirectional LSTM over (T, B, I) with lengths; the last layer's
    two final states -> class logits (B, CLASSES)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.lstm = fastrnn.LSTM(I, 6, num_layers=2, bidirectional=True, dtype=np.float64,
                                 seed=seed)
        self.head = fastrnn.Linear(12, CLASSES, dtype=np.float64, seed=seed + 1)

    def forward(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        _, (h_n, _) = self.lstm(x, lengths=lengths)            # (4, B, 6)
        return self.head(np.concatenate([h_n[2], h_n[3]], axis=-1))

    def backward(self, d_logits: np.ndarray) -> None:
        d_h = self.head.backward(d_logits)                     # (B, 12)
        d_h_n = np.zeros((4,) + d_h.shape[:1] + (6,))
        d_h_n[2], d_h_n[3] = d_h[:, :6], d_h[:, 6:]
        self.lstm.backward(None, (d_h_n, None))


def tagger(seed: int) -> fastrnn.Sequential:
    return fastrnn.Sequential(fastrnn.GRU(I, 5, dtype=np.float64, seed=seed),
                              fastrnn.Linear(5, 2, dtype=np.float64, seed=seed + 1))


def data(step: int) -> Dict[str, np.ndarray]:
    """Batch number ``step``, the same in every process."""
    rng = np.random.default_rng(100 + step)
    return {"x": rng.standard_normal((T, B, I)), "lengths": rng.integers(1, T + 1, B),
            "classes": rng.integers(0, CLASSES, B), "targets": rng.standard_normal((T, B, 2))}


# each case: the model, its optimizer, one step's loss and backward on some rows,
# and the rows of each of two processes (None: the whole batch)
def classifier_case(seed: int):
    model = Classifier(seed)
    opt = fastrnn.Adam(model.named_parameters(), lr=0.05)
    loss = fastrnn.CrossEntropyLoss()

    def step(batch: Dict[str, np.ndarray], rows: np.ndarray) -> None:
        loss(model(batch["x"][:, rows], batch["lengths"][rows]), batch["classes"][rows])
        model.zero_grad()
        model.backward(loss.backward())

    return model, opt, step, (np.arange(0, 4), np.arange(4, 8)), "mean"


def tagger_case(seed: int):
    model = tagger(seed)
    opt = fastrnn.SGD(model.named_parameters(), lr=0.3, momentum=0.9)
    loss = fastrnn.MSELoss()

    def step(batch: Dict[str, np.ndarray], rows: np.ndarray) -> None:
        loss(model(batch["x"][:, rows]), batch["targets"][:, rows])
        model.zero_grad()
        model.backward(loss.backward())

    return model, opt, step, (np.arange(0, 5), np.arange(5, 8)), "rows"


CASES: Dict[str, Callable] = {"classifier": classifier_case, "tagger": tagger_case}


def train(case: str, comm=None, seed: int = 0) -> Dict[str, np.ndarray]:
    """The case's parameters after STEPS steps: over the processes of comm
    (each on its rows), or in this process on the whole batches (comm None)."""
    model, opt, step, shares, weighting = CASES[case](seed)
    if comm is not None:
        fastrnn.mpi.broadcast_parameters(model, comm)          # rank 0's initial parameters
    for k in range(STEPS):
        batch = data(k)
        if comm is None:
            step(batch, np.arange(B))
        else:
            rows = shares[comm.rank]
            step(batch, rows)
            fastrnn.mpi.allreduce_gradients(model, comm,
                                            weight=len(rows) if weighting == "rows" else None)
        if case == "classifier":
            fastrnn.clip_grad_norm_(model.grads, max_norm=0.5)
        opt.step(model.grads)
    return model.state_dict()


def broadcasts(comm) -> Dict[str, np.ndarray]:
    """What the broadcast tests look at, in this process: parameters after a
    broadcast from root 0 and from root 1 of models seeded by rank, the error
    of models that differ, a weighted allreduce where rank 1 has no rows."""
    seen: Dict[str, np.ndarray] = {}
    for root in (0, 1):
        model = tagger(seed=10 * comm.rank)
        fastrnn.mpi.broadcast_parameters(model, comm, root=root)
        seen.update({f"root{root}.{k}": v for k, v in model.state_dict().items()})
    try:
        fastrnn.mpi.broadcast_parameters(fastrnn.GRU(3, 4 + comm.rank), comm)
        seen["mismatch"] = np.array("no error")
    except ValueError as error:
        seen["mismatch"] = np.array(str(error))
    head = fastrnn.Linear(2, 2, dtype=np.float64, seed=0)
    head.grads["weight"][...] = 3.0 if comm.rank == 0 else 0.0
    fastrnn.mpi.allreduce_gradients(head, comm, weight=4 if comm.rank == 0 else 0)
    seen["empty_share_weight"] = head.grads["weight"].copy()
    return seen


def main(out: str) -> None:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    fastrnn.set_num_threads(1)
    results: Dict[str, np.ndarray] = {}
    for case in CASES:
        # each process starts from its own initial parameters: the broadcast evens them
        results.update({f"{case}.{k}": v for k, v in train(case, comm, seed=comm.rank).items()})
    results.update(broadcasts(comm))
    np.savez(f"{out}.{comm.rank}.npz", **results)


if __name__ == "__main__":
    main(sys.argv[1])
