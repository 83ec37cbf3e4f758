"""Data-parallel training with MPI: classify.py's digit classifier, each process on its share.

scikit-learn's handwritten digits (8x8 pixels read row by row: 8 steps of 8;
a random quarter held out; nothing is downloaded), classify.py's model (a
GRU, a Linear read-out of its last state), trained with cross-entropy,
clipping and Adam under a cosine schedule, as classify.py trains it, but by
every process started by mpiexec:

- every process builds the model, and fastrnn.mpi.broadcast_parameters gives
  them all rank 0's initial parameters;
- every process draws the same shuffled batches (one seed) and takes its
  share of each, rows[rank::size]; forward and backward on them;
- fastrnn.mpi.allreduce_gradients(model, weight=len(share)) leaves in every
  process the gradient of the whole batch's mean loss (one MPI_Allreduce);
- clipping and Adam then take the same step in every process.

So N processes train the model one process trains on the whole batches, up
to rounding. Printed by rank 0: the test accuracy against the most frequent
class and 1-nearest-neighbour, the time per epoch; every process checks that
all of them end with the same parameters.

    mpiexec -n 2 python examples/train_mpi.py
    mpiexec -n 2 python examples/train_mpi.py --quick
    python examples/train_mpi.py --quick          # one process, the same training
"""
from __future__ import annotations

import hashlib
import time
from typing import Dict, Optional, Sequence

import numpy as np

import fastrnn
import fastrnn.mpi
from _shared import (load_digits, nearest_neighbour, plot_losses, parse_args, plt, progress,
                     report, save_figure, shuffled_batches)
from classify import Classifier

from mpi4py import MPI   # noqa: E402 (initializes MPI)

HIDDEN, BATCH = 64, 32


def fingerprint(model: fastrnn.Module) -> str:
    """A hash of every parameter's bytes."""
    return hashlib.sha256(b"".join(p.tobytes() for p in model.parameters())).hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(__doc__, argv, plot="train_mpi.png")
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    fastrnn.set_num_threads(1)        # a core per process: start as many as there are cores
    data = load_digits(args.seed)
    epochs = 6 if args.quick else 20
    n = len(data.y_train)

    model = Classifier(8, HIDDEN, 10, seed=args.seed + rank)   # each its own initial weights...
    fastrnn.mpi.broadcast_parameters(model, comm)               # ...then all rank 0's
    loss_fn = fastrnn.CrossEntropyLoss()
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-2)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=epochs)

    rng = np.random.default_rng(args.seed)                      # the same batches everywhere
    batches = list(shuffled_batches(n, BATCH, epochs, rng))
    if rank == 0:
        print(f"digits: {n} training sequences, batches of {BATCH} split over {size} "
              f"process{'es' * (size > 1)}")
    # the progress bar in rank 0's terminal only
    steps = progress(batches, f"GRU(8, {HIDDEN}), {size} processes", len(batches)) \
        if rank == 0 else batches
    losses, current, start = [], 0, time.perf_counter()
    for epoch, rows in steps:
        if epoch != current:
            schedule.step()
            current = epoch
        share = rows[rank::size]                                # this process's rows
        model.zero_grad()
        loss = 0.0
        if len(share):
            loss = loss_fn(model(data.x_train[share]), data.y_train[share])
            model.backward(loss_fn.backward())
        # every process now holds the gradient of the whole batch's mean loss
        fastrnn.mpi.allreduce_gradients(model, comm, weight=len(share))
        fastrnn.clip_grad_norm_(model.grads, max_norm=1.0)
        opt.step(model.grads)
        losses.append(comm.allreduce(loss * len(share)) / len(rows))   # for the plot
        if rank == 0:
            steps.set_postfix(loss=f"{losses[-1]:.4g}")
    if rank == 0:
        steps.close()
    seconds = time.perf_counter() - start

    same = len(set(comm.allgather(fingerprint(model)))) == 1
    predicted = model(data.x_test, training=False).argmax(axis=-1)
    accuracy = float((predicted == data.y_test).mean())
    majority = float((data.y_test == np.bincount(data.y_train).argmax()).mean())
    neighbour = float((nearest_neighbour(data.x_train, data.y_train, data.x_test)
                       == data.y_test).mean())
    if rank == 0:
        print(f"{seconds / epochs:.2f} s per epoch" + (
            f"; the {size} processes' parameters are {'identical' if same else 'DIFFERENT'}"
            if size > 1 else ""))
        report("GRU test accuracy", accuracy, {"baseline: most frequent class": majority,
                                               "reference: 1-nearest neighbour": neighbour},
               fmt="{:.1%}")
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_losses(ax, losses, "cross-entropy of the whole batch")
        ax.set_title(f"digits, {size} processes: {accuracy:.1%} test accuracy")
        save_figure(fig, args.plot)
    return {"accuracy": accuracy, "majority": majority, "nearest_neighbour": neighbour,
            "processes": size, "same_parameters": same}


if __name__ == "__main__":
    main()
