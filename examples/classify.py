"""Many-to-one: a GRU reads a sequence and its last state names the class.

Two real data sets that ship inside packages (nothing is downloaded):

  digits    scikit-learn's 1,797 handwritten digits, 8x8 pixels, each read
            row by row: 8 steps of 8 pixels, 10 classes; a random quarter
            (stratified) is held out.
  gunpoint  the UCR archive's GunPoint, as sktime ships it: the hand's
            x-coordinate over 150 frames while an actor draws a gun or
            points a finger (2 classes; the archive's 50 training and 150
            test series), read as 30 steps of 5 frames.

The model is GRU -> Linear on the final hidden state h_n, trained with
cross-entropy and Adam under a cosine schedule. Its test accuracy is printed
against the most frequent class and against 1-nearest-neighbour on the whole
sequence (Euclidean distance: the UCR archive's reference classifier).

    python examples/classify.py                   # digits
    python examples/classify.py --data gunpoint   # needs sktime
    python examples/classify.py --quick           # a few seconds
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

import fastrnn
from _shared import (Data, fit, load_digits, nearest_neighbour, parse_args, plot_losses, plt,
                     report, save_figure, shuffled_batches)


def load_gunpoint(seed: int) -> Data:
    """The archive's own split (seed is not used)."""
    try:
        from sktime.datasets import load_gunpoint as load
    except ImportError:
        raise SystemExit("--data gunpoint needs sktime: pip install sktime "
                         "(or pip install '.[examples]')") from None
    parts = {}
    for split in ("train", "test"):
        x, labels = load(split=split, return_X_y=True, return_type="numpy3D")   # (N, 1, 150)
        parts[split] = x[:, 0].reshape(len(x), 30, 5).astype(np.float32), labels
    _, y = np.unique(np.concatenate([parts["train"][1], parts["test"][1]]),
                     return_inverse=True)                # labels "1", "2" -> 0, 1
    n = len(parts["train"][1])
    return Data(parts["train"][0], y[:n], parts["test"][0], y[n:], ["gun", "point"])


DATA = {"digits": load_digits, "gunpoint": load_gunpoint}
# per data set: hidden units, epochs (full, quick), batch size
SETTINGS = {"digits": (64, (20, 6), 32), "gunpoint": (32, (100, 40), 10)}


class Classifier(fastrnn.Module):
    """GRU over the steps, then a Linear read-out of the last hidden state."""

    def __init__(self, input_size: int, hidden_size: int, classes: int, seed: int) -> None:
        super().__init__()
        self.gru = fastrnn.GRU(input_size, hidden_size, batch_first=True, seed=seed)
        self.head = fastrnn.Linear(hidden_size, classes, seed=seed)

    def forward(self, x: np.ndarray, training: Optional[bool] = None) -> np.ndarray:
        _, h_n = self.gru(x, training=training)                 # h_n (1, B, H)
        return self.head(h_n[0], training=training)             # logits (B, classes)

    def backward(self, d_logits: np.ndarray) -> None:
        d_h = self.head.backward(d_logits)                      # (B, H)
        self.gru.backward(None, d_h[None])                      # enters through h_n only


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(__doc__, argv, plot="classify.png", extra={
        "--data": {"choices": sorted(DATA), "default": "digits",
                   "help": "the data set (default: %(default)s)"}})
    data = DATA[args.data](args.seed)
    hidden, (epochs, quick_epochs), batch = SETTINGS[args.data]
    epochs = quick_epochs if args.quick else epochs
    n, T, I = data.x_train.shape
    print(f"{args.data}: {n} training and {len(data.y_test)} test sequences of {T} steps "
          f"x {I} values, {len(data.classes)} classes")

    model = Classifier(I, hidden, len(data.classes), seed=args.seed)
    loss_fn = fastrnn.CrossEntropyLoss()
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-2)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=epochs)
    rng = np.random.default_rng(args.seed)
    batches = ((epoch, (data.x_train[rows],), data.y_train[rows])
               for epoch, rows in shuffled_batches(n, batch, epochs, rng))
    losses = fit(model, loss_fn, opt, schedule, batches, epochs * -(-n // batch),
                 f"GRU({I}, {hidden}) on {args.data}")

    predicted = model(data.x_test, training=False).argmax(axis=-1)
    accuracy = float((predicted == data.y_test).mean())
    majority = float((data.y_test == np.bincount(data.y_train).argmax()).mean())
    neighbour = float((nearest_neighbour(data.x_train, data.y_train, data.x_test)
                       == data.y_test).mean())
    report("GRU test accuracy", accuracy, {"baseline: most frequent class": majority,
                                           "reference: 1-nearest neighbour": neighbour},
           fmt="{:.1%}")

    fig, (ax_loss, ax_conf) = plt.subplots(1, 2, figsize=(10, 4))
    plot_losses(ax_loss, losses, "cross-entropy")
    confusion = np.zeros((len(data.classes),) * 2, int)
    np.add.at(confusion, (data.y_test, predicted), 1)
    ax_conf.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            ax_conf.text(j, i, count, ha="center", va="center", fontsize=8,
                         color="white" if count > confusion.max() / 2 else "black")
    ticks = np.arange(len(data.classes))
    ax_conf.set_xticks(ticks, data.classes)
    ax_conf.set_yticks(ticks, data.classes)
    ax_conf.set_xlabel("predicted")
    ax_conf.set_ylabel("true")
    ax_conf.set_title(f"{args.data} test set: {accuracy:.1%} correct")
    save_figure(fig, args.plot)
    return {"accuracy": accuracy, "majority": majority, "nearest_neighbour": neighbour}


if __name__ == "__main__":
    main()
