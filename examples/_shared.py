"""What the examples share: the command line, the training loop under a
progress bar, the report of a metric against baselines, the plot, and the
digits data two of them read.

Not part of fastrnn: the examples import it from their own folder.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import fastrnn
import matplotlib

matplotlib.use("Agg")              # write PNG files; no window
import matplotlib.pyplot as plt    # noqa: E402
from tqdm import tqdm              # noqa: E402


def parse_args(doc: str, argv: Optional[Sequence[str]], plot: str,
               extra: Optional[Dict[str, dict]] = None) -> argparse.Namespace:
    """The options every example takes (--quick, --seed, --plot) and its own
    (``extra``: option name -> add_argument keywords)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc.split("\n\n", 1)[-1])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds of training, for a first look and the tests")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the weights and the batches (default: %(default)s)")
    parser.add_argument("--plot", default=plot, help="the PNG to write (default: %(default)s)")
    for name, kwargs in (extra or {}).items():
        parser.add_argument(name, **kwargs)
    return parser.parse_args(argv)


def progress(iterable: Iterable, desc: str, total: Optional[int] = None) -> tqdm:
    """A progress bar over the training loop; ``bar.set_postfix(loss=...)``
    shows the loss as it goes."""
    return tqdm(iterable, desc=desc, total=total, unit="step", dynamic_ncols=True)


def shuffled_batches(n: int, batch: int, epochs: int, rng: np.random.Generator
                     ) -> Iterator[Tuple[int, np.ndarray]]:
    """(epoch, indices of a batch): each epoch, 0..n-1 shuffled and cut into batches."""
    for epoch in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            yield epoch, order[start:start + batch]


def fit(model: fastrnn.Module, loss_fn, opt: fastrnn.Optimizer,
        schedule: fastrnn.LRScheduler, batches: Iterable, total: int, desc: str) -> List[float]:
    """The training loop, under a progress bar; returns the loss of every step.

    ``batches`` gives (epoch, inputs, target): a step runs ``model(*inputs)``,
    the loss against target, the model's backward (BPTT through its
    recurrent layers) into ``model.grads``, clips their norm to 1 and
    updates the parameters; the schedule steps as each epoch ends.
    """
    losses: List[float] = []
    current = 0
    bar = progress(batches, desc, total)
    for epoch, inputs, target in bar:
        if epoch != current:
            schedule.step()
            current = epoch
        losses.append(loss_fn(model(*inputs), target))
        model.zero_grad()                           # backward accumulates: clear first
        model.backward(loss_fn.backward())
        fastrnn.clip_grad_norm_(model.grads, max_norm=1.0)
        opt.step(model.grads)
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
    bar.close()
    return losses


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """The root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - target) ** 2)))


def report(metric: str, value: float, baselines: Dict[str, float], fmt: str = "{:.4f}") -> None:
    """Print the model's metric under the baselines'."""
    width = max(len(name) for name in [metric, *baselines])
    print(f"\n{metric:<{width}}  " + fmt.format(value))
    for name, base in baselines.items():
        print(f"{name:<{width}}  " + fmt.format(base))


def save_figure(fig: plt.Figure, path: str) -> None:
    """Write the figure as a PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.abspath(path)}")


def plot_losses(ax: plt.Axes, losses: Sequence[float], ylabel: str = "training loss") -> None:
    """The loss curve, per step."""
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title("training")


# ------------------------------------------------------------- data

class Data(NamedTuple):
    x_train: np.ndarray    # (N, T, I) float32: batch first
    y_train: np.ndarray    # (N,) class ids
    x_test: np.ndarray
    y_test: np.ndarray
    classes: Sequence[str]


def load_digits(seed: int) -> Data:
    """scikit-learn's 1,797 handwritten digits as 8 steps (rows) of 8 pixels in [0, 1];
    a random quarter of each class held out."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)        # (1797, 8, 8): 8 rows of 8 pixels
    y = digits.target
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)                        # a quarter of each class
    for c in range(10):
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[: len(members) // 4]] = True
    return Data(x[~test], y[~test], x[test], y[test], [str(c) for c in range(10)])


def nearest_neighbour(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The class of each test sequence's closest training sequence (Euclidean)."""
    a, b = x_test.reshape(len(x_test), -1), x_train.reshape(len(x_train), -1)
    distances = (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None]
    return y_train[distances.argmin(axis=1)]
