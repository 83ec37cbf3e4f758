"""Many-to-many: forecast next year's sunspots, at every step of the series.

The yearly sunspot numbers 1700-2008 as statsmodels ships them (309 values;
nothing is downloaded). The last 60 years are held out. A GRU reads the
series one year per step and, at every step, a Linear read-out of its hidden
state predicts the next year's value; it trains on random 40-year windows of
the training years (mean squared error, Adam, cosine schedule), then runs
over the whole series, its state carried through the training years into
the held-out ones.

Its RMSE on the held-out years is printed against two baselines: the naive
forecast (next year = this year) and a linear autoregressive model on the
last 10 years fitted by least squares on the training years.

    python examples/forecast.py
    python examples/forecast.py --quick
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

import fastrnn
from _shared import fit, parse_args, plot_losses, plt, report, rmse, save_figure

HELD_OUT = 60       # years held out for the test
WINDOW = 40         # years per training sequence
BATCH = 16          # windows per step
LAGS = 10           # years the autoregressive baseline looks back


def load_sunspots() -> tuple:
    """(years, values): 1700-2008, the yearly mean sunspot number."""
    from statsmodels.datasets import sunspots
    data = sunspots.load_pandas().data
    return data["YEAR"].to_numpy(int), data["SUNACTIVITY"].to_numpy(float)


def autoregressive(series: np.ndarray, n_train: int, lags: int) -> np.ndarray:
    """One-step forecasts of series[lags:] by a linear model of the last
    ``lags`` values (and a constant), fitted on the first n_train values."""
    # row t holds series[t], ..., series[t + lags - 1]: it predicts series[t + lags]
    past = np.lib.stride_tricks.sliding_window_view(series[:-1], lags)
    features = np.column_stack([past, np.ones(len(past))])
    fit = n_train - lags
    coef, *_ = np.linalg.lstsq(features[:fit], series[lags:n_train], rcond=None)
    return features @ coef


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(__doc__, argv, plot="forecast.png")
    years, sunspots = load_sunspots()
    n_train = len(sunspots) - HELD_OUT
    mean, std = sunspots[:n_train].mean(), sunspots[:n_train].std()
    series = ((sunspots - mean) / std).astype(np.float32)     # standardised on the training years
    print(f"sunspots {years[0]}-{years[-1]}: training on {years[0]}-{years[n_train - 1]}, "
          f"testing on {years[n_train]}-{years[-1]}")

    hidden, steps = 16, 100 if args.quick else 300
    model = fastrnn.Sequential(fastrnn.GRU(1, hidden, seed=args.seed),
                               fastrnn.Linear(hidden, 1, seed=args.seed))
    loss_fn = fastrnn.MSELoss()
    opt = fastrnn.Adam(model.named_parameters(), lr=1e-2)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=steps)
    rng = np.random.default_rng(args.seed)

    def windows():
        """Each step (an epoch of the schedule): BATCH random windows of the training
        years, inputs x and targets y (WINDOW, BATCH, 1) with y[t] = x[t + 1]."""
        for step in range(steps):
            starts = rng.integers(0, n_train - WINDOW, size=BATCH)
            w = np.stack([series[s:s + WINDOW + 1] for s in starts], axis=1)[..., None]
            yield step, (w[:-1],), w[1:]

    losses = fit(model, loss_fn, opt, schedule, windows(), steps, f"GRU(1, {hidden}) on sunspots")

    # one pass over the whole series: pred[t] forecasts sunspots[t + 1]
    pred = model(series[:-1, None], training=False)[:, 0] * std + mean
    test = sunspots[n_train:]
    forecasts = {"GRU": pred[n_train - 1:],
                 "naive (last value)": sunspots[n_train - 1:-1],
                 f"AR({LAGS}) least squares": autoregressive(sunspots, n_train, LAGS)[-HELD_OUT:]}
    errors = {name: rmse(f, test) for name, f in forecasts.items()}
    report("GRU test RMSE", errors["GRU"],
           {f"baseline: {name}": e for name, e in errors.items() if name != "GRU"}, fmt="{:.2f}")

    fig, (ax_loss, ax_series) = plt.subplots(1, 2, figsize=(12, 4),
                                             gridspec_kw={"width_ratios": [1, 2]})
    plot_losses(ax_loss, losses, "mean squared error (standardised)")
    ax_loss.set_yscale("log")
    shown = years >= years[n_train] - 60
    ax_series.plot(years[shown], sunspots[shown], "k", lw=1.5, label="sunspots")
    for name, f in forecasts.items():
        ax_series.plot(years[n_train:], f, lw=1, label=f"{name}: RMSE {errors[name]:.1f}")
    ax_series.axvline(years[n_train] - 0.5, color="gray", ls=":")
    ax_series.set_xlabel("year")
    ax_series.set_title("one-year-ahead forecasts of the held-out years")
    ax_series.legend(fontsize=8)
    save_figure(fig, args.plot)
    return {"rmse": errors["GRU"], "naive": errors["naive (last value)"],
            "autoregressive": errors[f"AR({LAGS}) least squares"]}


if __name__ == "__main__":
    main()
