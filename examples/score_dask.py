"""Scoring on Dask: a trained classifier over a data set no worker could hold.

classify.py's classifier (a GRU reads a digit row by row, a Linear read-out
of its last state names the class) trains here, in this process, on
scikit-learn's handwritten digits (8x8 pixels: 8 steps of 8; a random
quarter held out; nothing is downloaded). Then it scores a data set made
from the held-out digits: N noisy copies, each a random held-out digit with
its contrast scaled by a random factor in [0.7, 1.3] and Gaussian noise (sd
0.15) on every pixel, clipped to [0, 1]. The copies are made lazily, chunk by
chunk, by dask.array.random on the workers: 6.4 million digits by default
(1.5 GiB of float32), 1.1 million with --quick (269 MiB), on a LocalCluster
of two worker processes whose memory limit is 256 MiB each. (The GRU has 32
hidden units, 16 with --quick.)

fastrnn.dask.map_batches runs the model on every chunk of 2**14 digits,
after scattering it once to each worker; the logits are reduced on the
workers to a confusion matrix (da.bincount), the one result that comes back.

Printed: the accuracy on the noisy copies against the most frequent class's
share and the model's accuracy on the clean held-out digits; the data's size
against the workers' memory limit and their peak memory; whether the first
chunk's predictions are those of the model in this process.

    python examples/score_dask.py
    python examples/score_dask.py --quick
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import numpy as np

import fastrnn
import fastrnn.dask
from _shared import (fit, load_digits, parse_args, plot_losses, plt, report, save_figure,
                     shuffled_batches)
from classify import Classifier

import dask.array as da                                    # noqa: E402 (after _shared's Agg)
from dask.distributed import Client, LocalCluster, progress  # noqa: E402

CHUNK = 2 ** 14                     # digits per task
MEMORY_LIMIT = 256 * 2 ** 20        # bytes, each worker


def noisy_copies(images: np.ndarray, labels: np.ndarray, n: int, seed: int):
    """(x (n, 8, 8) float32, y (n,)) as dask arrays chunked by CHUNK digits:
    random digits of images, contrast x U(0.7, 1.3), + N(0, 0.15) noise."""
    rng = da.random.default_rng(seed)
    which = rng.integers(0, len(images), size=n, chunks=CHUNK)
    contrast = rng.uniform(0.7, 1.3, size=(n, 1, 1), chunks=(CHUNK, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(size=(n, 8, 8), chunks=(CHUNK, 8, 8), dtype=np.float32)
    x = da.from_array(images, chunks=-1)[which] * contrast + np.float32(0.15) * noise
    return da.clip(x, 0, 1), da.from_array(labels, chunks=-1)[which]


def peak_memory() -> int:
    """This process's peak resident memory since it started, in bytes (run on
    each worker): Linux's VmHWM; elsewhere its resident memory now. (Not
    getrusage's maxrss, which a spawned process inherits from its parent.)"""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil
    return psutil.Process().memory_info().rss


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(__doc__, argv, plot="score_dask.png")
    data = load_digits(args.seed)
    n = 1_100_000 if args.quick else 6_400_000
    hidden, epochs = (16, 6) if args.quick else (32, 20)

    # --- train, in this process, as classify.py does
    model = Classifier(8, hidden, 10, seed=args.seed)
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-2)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=epochs)
    rng = np.random.default_rng(args.seed)
    N = len(data.y_train)
    batches = ((epoch, (data.x_train[rows],), data.y_train[rows])
               for epoch, rows in shuffled_batches(N, 32, epochs, rng))
    losses = fit(model, fastrnn.CrossEntropyLoss(), opt, schedule, batches, epochs * -(-N // 32),
                 f"GRU(8, {hidden}) on digits")
    model.eval()
    clean = float((model(data.x_test).argmax(axis=1) == data.y_test).mean())

    # --- score N noisy copies of the held-out digits on two worker processes
    x, y = noisy_copies(data.x_test, data.y_test, n, args.seed)
    print(f"\nscoring {n:,} digits ({x.nbytes / 2**20:,.0f} MiB in {x.numblocks[0]} chunks) "
          f"on 2 workers of {MEMORY_LIMIT / 2**20:.0f} MiB")
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=MEMORY_LIMIT,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(fastrnn.set_num_threads, 1)         # one core each
        start = time.perf_counter()
        logits = fastrnn.dask.map_batches(model, x)     # (n, 10); the model now on each worker
        predicted = logits.argmax(axis=1)
        confusion = client.compute(da.bincount(y * 10 + predicted, minlength=100))
        progress(confusion)
        confusion = confusion.result().reshape(10, 10)
        seconds = time.perf_counter() - start
        peak = max(client.run(peak_memory).values())
        first = x.blocks[0].compute()
        agrees = bool((predicted.blocks[0].compute()
                       == model(first).argmax(axis=1)).all())
    print(f"\n{n / seconds:,.0f} digits/s; peak worker memory {peak / 2**20:.0f} MiB; "
          f"first chunk {'agrees' if agrees else 'DIFFERS'} with this process's scores")

    accuracy = float(np.trace(confusion) / n)
    majority = float(confusion.sum(axis=1).max() / n)
    report("GRU accuracy on the noisy copies", accuracy,
           {"baseline: most frequent class": majority,
            "the same GRU on the clean held-out digits": clean}, fmt="{:.1%}")

    fig, (ax_loss, ax_conf) = plt.subplots(1, 2, figsize=(10, 4))
    plot_losses(ax_loss, losses, "cross-entropy")
    ax_conf.imshow(confusion, cmap="Blues")
    ax_conf.set_xticks(range(10))
    ax_conf.set_yticks(range(10))
    ax_conf.set_xlabel("predicted")
    ax_conf.set_ylabel("true")
    ax_conf.set_title(f"{n:,} noisy digits: {accuracy:.1%} correct")
    save_figure(fig, args.plot)
    return {"accuracy": accuracy, "majority": majority, "clean_accuracy": clean,
            "data_bytes": int(x.nbytes), "memory_limit": MEMORY_LIMIT,
            "peak_worker_memory": int(peak), "first_chunk_agrees": agrees}


if __name__ == "__main__":
    main()
