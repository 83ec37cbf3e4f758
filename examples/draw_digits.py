"""One-to-many: from one input, a digit's class, a GRU draws the digit row by row.

scikit-learn's handwritten digits (8x8 pixels; nothing is downloaded), a
quarter held out. The class is the one input: an Embedding turns it into the
GRU's initial state h0. The GRU then writes 8 rows of 8 pixels, each row a
Linear read-out of its state, each fed back as the next step's input. It
trains with the true previous row as input (teacher forcing); the gradient
of h0, which the GRU's backward returns, trains the Embedding. To draw, the
GRU's weights go into a GRUCell (``fastrnn.to_cells``) that takes one step
per row, fed its own output.

Printed: the RMSE of the drawn digit against each held-out digit of its class,
against the baseline of one average digit drawn whatever the class (what a
model that ignored its input would do best), with the class averages of the
training digits as the reference the model can at best reach; and how many
of the 10 drawn digits a nearest-neighbour reader of the training digits
recognises as their class.

    python examples/draw_digits.py
    python examples/draw_digits.py --quick
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

import fastrnn
from _shared import (fit, load_digits, nearest_neighbour, parse_args, plot_losses, plt, report,
                     rmse, save_figure, shuffled_batches)


class DigitWriter(fastrnn.Module):
    """class -> h0 (Embedding); rows -> next rows (GRU, Linear)."""

    def __init__(self, hidden_size: int, seed: int) -> None:
        super().__init__()
        self.start = fastrnn.Embedding(10, hidden_size, seed=seed)
        self.gru = fastrnn.GRU(8, hidden_size, batch_first=True, seed=seed)
        self.head = fastrnn.Linear(hidden_size, 8, seed=seed)

    def forward(self, classes: np.ndarray, rows_before: np.ndarray) -> np.ndarray:
        h0 = self.start(classes)[None]                       # (1, B, H): the one input
        out, _ = self.gru(rows_before, h0)                   # (B, 8, H)
        return self.head(out)                                # (B, 8, 8): each next row

    def backward(self, d_rows: np.ndarray) -> None:
        d_out = self.head.backward(d_rows)
        _, dh0 = self.gru.backward(d_out)                    # dh0: the gradient of h0
        self.start.backward(dh0[0])

    def draw(self, classes: np.ndarray) -> np.ndarray:
        """Digits (B, 8, 8) drawn from nothing but their classes (B,)."""
        cell, = fastrnn.to_cells(self.gru)                   # one GRUCell: one step per call
        h = self.start(classes, training=False)              # (B, H)
        row = np.zeros((len(classes), 8), np.float32)        # nothing drawn yet
        rows = []
        for _ in range(8):
            h = cell(row, h, training=False)
            row = np.clip(self.head(h, training=False), 0, 1)   # fed back as the next input
            rows.append(row)
        return np.stack(rows, axis=1)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(__doc__, argv, plot="draw_digits.png")
    data = load_digits(args.seed)
    x, y = data.x_train, data.y_train
    # inputs: the row before each row (zeros before the first)
    rows_before = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)

    hidden, epochs, batch = 64, 5 if args.quick else 15, 32
    model = DigitWriter(hidden, seed=args.seed)
    loss_fn = fastrnn.MSELoss()
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-2)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=epochs)
    rng = np.random.default_rng(args.seed)
    # teacher forcing: the true row before each row is the input
    batches = ((epoch, (y[rows], rows_before[rows]), x[rows])
               for epoch, rows in shuffled_batches(len(y), batch, epochs, rng))
    losses = fit(model, loss_fn, opt, schedule, batches, epochs * -(-len(y) // batch),
                 f"GRU(8, {hidden}) drawing digits")

    drawn = model.draw(np.arange(10))                        # one digit per class
    class_means = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    error = rmse(drawn[data.y_test], data.x_test)
    baselines = {"baseline: the average digit, any class": rmse(x.mean(axis=0), data.x_test),
                 "reference: the class's average digit": rmse(class_means[data.y_test],
                                                              data.x_test)}
    report("GRU drawing: RMSE per pixel (held out)", error, baselines)
    recognised = int((nearest_neighbour(x, y, drawn) == np.arange(10)).sum())
    print(f"drawn digits a 1-nearest-neighbour reader recognises: {recognised} of 10")

    fig = plt.figure(figsize=(13, 3.5))
    grid = fig.add_gridspec(2, 14)
    plot_losses(fig.add_subplot(grid[:, :4]), losses, "mean squared error per pixel")
    for c in range(10):
        for r, (image, label) in enumerate(((drawn[c], "drawn"), (class_means[c], "class mean"))):
            ax = fig.add_subplot(grid[r, 4 + c])
            ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(c) if r == 0 else "", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    save_figure(fig, args.plot)
    return {"rmse": error, "average_digit": baselines["baseline: the average digit, any class"],
            "class_average": baselines["reference: the class's average digit"],
            "recognised": recognised}


if __name__ == "__main__":
    main()
