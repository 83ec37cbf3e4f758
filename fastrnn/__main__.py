"""python -m fastrnn: train a small LSTM with fastrnn, then time C against NumPy.

Part 1 is a worked example of training with fastrnn. An LSTM(1, 32) reads noisy
sine waves of random frequency and phase, one value per step, and a linear
read-out (a few lines of NumPy) predicts the next value. The gradient of the
read-out's loss goes into ``lstm.backward`` (BPTT in the C kernels), which
accumulates the LSTM's parameter gradients into ``lstm.grads``; Adam, written
out below in NumPy, updates the parameters in place. At the end the model is
compared with two naive predictors on fresh waves.

Part 2 times the same layer with ``backend="c"`` and ``backend="numpy"`` (the
readable reference) for inference and for one training step at a few sizes,
and prints the speed-up of the C kernels.

    python -m fastrnn                 # both parts, well under a minute
    python -m fastrnn --steps 100     # a shorter training run
    python -m fastrnn --no-timing     # part 1 only
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastrnn

SEED = 0
NOISE = 0.1              # standard deviation of the noise added to every wave
T, B, H = 50, 32, 32     # steps per sequence, sequences per batch, LSTM width
WARMUP = 10              # steps the model sees before its predictions are scored


# ------------------------------------------------------------------- data

def sine_batch(rng: np.random.Generator, batch: int = B, steps: int = T
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Noisy sine waves of random frequency and phase: inputs x and targets y,
    both (steps, batch, 1), where y[t] is the value that follows x[t]."""
    omega = rng.uniform(0.1, 0.6, size=batch)            # radians per step
    phase = rng.uniform(0.0, 2 * np.pi, size=batch)
    t = np.arange(steps + 1)[:, None]                     # (steps + 1, 1)
    wave = np.sin(omega * t + phase) + NOISE * rng.standard_normal((steps + 1, batch))
    wave = wave.astype(np.float32)[:, :, None]            # (steps + 1, batch, 1)
    return wave[:-1], wave[1:]


# ------------------------------------------------------------------ model

class Readout:
    """pred = h @ w.T + b, from the LSTM's outputs (T, B, H) to (T, B, 1)."""

    def __init__(self, rng: np.random.Generator, hidden: int) -> None:
        bound = 1.0 / np.sqrt(hidden)
        self.params = {"w": rng.uniform(-bound, bound, (1, hidden)).astype(np.float32),
                       "b": np.zeros(1, np.float32)}

    def forward(self, h: np.ndarray) -> np.ndarray:
        self.h = h
        return h @ self.params["w"].T + self.params["b"]

    def backward(self, d_pred: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """d_h (T, B, H) and the read-out's gradients, from d_pred (T, B, 1)."""
        rows_h, rows_d = self.h.reshape(-1, self.h.shape[-1]), d_pred.reshape(-1, 1)
        grads = {"w": rows_d.T @ rows_h, "b": rows_d.sum(0)}
        return d_pred @ self.params["w"], grads


def mse(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error over the scored steps (those after the warm-up)."""
    return float(np.mean((pred[WARMUP:] - y[WARMUP:]) ** 2))


class Adam:
    """Adam (Kingma & Ba) over named arrays, updated in place."""

    def __init__(self, params: Dict[str, np.ndarray], lr: float = 1e-2,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads: Dict[str, np.ndarray], lr: Optional[float] = None) -> None:
        lr = self.lr if lr is None else lr
        (b1, b2), self.t = self.betas, self.t + 1
        for k, p in self.params.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * grads[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grads[k] ** 2
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            p -= (lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype)


def clip_by_global_norm(grads: Dict[str, np.ndarray], max_norm: float = 1.0) -> float:
    """Scale all gradients together so their joint norm is at most max_norm
    (the usual guard against exploding gradients in RNNs); returns the norm."""
    norm = float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values())))
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm


# --------------------------------------------------------------- training

def train(steps: int, rng: np.random.Generator, lr: float = 1e-2
          ) -> Tuple[fastrnn.LSTM, Readout]:
    lstm = fastrnn.LSTM(1, H, seed=SEED)        # backend="c" is the default
    readout = Readout(rng, H)
    # one dict of live arrays: the LSTM's parameters by their PyTorch names, then the read-out's
    params = {**dict(lstm.named_parameters()), **{f"readout.{k}": v for k, v in readout.params.items()}}
    opt = Adam(params, lr=lr)
    report_every = max(1, steps // 10)

    print(f"Training LSTM(1, {H}) + linear read-out to predict the next value of noisy "
          f"sine waves\n({steps} Adam steps, batches of {B} waves x {T} steps, noise std {NOISE})")
    running = None
    for step in range(1, steps + 1):
        x, y = sine_batch(rng)
        # forward: LSTM (keeps what backward needs), then the read-out
        out, _ = lstm(x)                           # out (T, B, H)
        pred = readout.forward(out)                # pred (T, B, 1)
        loss = float(np.mean((pred - y) ** 2))
        # backward: the loss, the read-out, then BPTT through the LSTM
        d_pred = 2 * (pred - y) / pred.size
        d_out, readout_grads = readout.backward(d_pred)
        lstm.zero_grad()                           # backward accumulates into lstm.grads
        lstm.backward(d_out)
        grads = {**lstm.grads, **{f"readout.{k}": g for k, g in readout_grads.items()}}
        clip_by_global_norm(grads, 1.0)
        # cosine decay of the learning rate over the run
        opt.step(grads, lr=lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / steps)))

        running = loss if running is None else 0.9 * running + 0.1 * loss
        if step % report_every == 0 or step == 1:
            print(f"  step {step:4d}   loss {loss:.4f}   (running mean {running:.4f})")
    return lstm, readout


def evaluate(lstm: fastrnn.LSTM, readout: Readout, rng: np.random.Generator) -> Dict[str, float]:
    """MSE on fresh waves of the model and of naive predictors."""
    x, y = sine_batch(rng, batch=512)
    out, _ = lstm(x, training=False)
    results = {
        "LSTM + read-out": mse(readout.forward(out), y),
        "last value (y[t] = x[t])": mse(x, y),
        "zero (the waves' mean)": mse(np.zeros_like(y), y),
        "noise floor (NOISE**2)": NOISE ** 2,
    }
    print(f"\nMean squared error on 512 fresh waves (steps {WARMUP}..{T - 1}):")
    for name, value in results.items():
        print(f"  {name:28s} {value:.4f}")
    ratio = results["last value (y[t] = x[t])"] / results["LSTM + read-out"]
    if ratio > 1:
        print(f"The LSTM's error is {ratio:.1f}x smaller than repeating the last value.")
    else:
        print("The LSTM does not beat repeating the last value yet: train longer (--steps).")
    return results


# ----------------------------------------------------------------- timing

def best_time(fn: Callable[[], object], budget: float = 0.4, min_repeats: int = 3,
              max_repeats: int = 200) -> float:
    """Fastest of several runs, in seconds (the minimum is the least noisy
    estimate on a shared machine); one untimed run first to warm up."""
    fn()
    times: List[float] = []
    while len(times) < min_repeats or (sum(times) < budget and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_backends(sizes: Sequence[Tuple[int, int, int, int]]) -> List[dict]:
    """Time one LSTM per size on both backends (the same layer, its backend switched)."""
    print("\nC kernels against the NumPy reference (same LSTM layer, float32, best of "
          "several runs):")
    print(f"  {'T':>4} {'B':>4} {'I':>4} {'H':>4}  {'mode':<10} {'C (ms)':>9} "
          f"{'NumPy (ms)':>11} {'speed-up':>9}")
    rows = []
    rng = np.random.default_rng(SEED)
    for (t, b, i, h) in sizes:
        layer = fastrnn.LSTM(i, h, seed=SEED)
        x = rng.standard_normal((t, b, i)).astype(np.float32)
        d_out = rng.standard_normal((t, b, h)).astype(np.float32)

        def infer():
            layer(x, training=False)

        def train_step():
            layer.zero_grad()
            layer(x)
            layer.backward(d_out)

        for mode, fn in (("inference", infer), ("training", train_step)):
            seconds = {}
            for backend in ("c", "numpy"):
                layer.backend = backend
                seconds[backend] = best_time(fn)
            layer.backend = "c"
            speedup = seconds["numpy"] / seconds["c"]
            rows.append({"size": (t, b, i, h), "mode": mode, **seconds, "speedup": speedup})
            print(f"  {t:4d} {b:4d} {i:4d} {h:4d}  {mode:<10} {1e3 * seconds['c']:9.2f} "
                  f"{1e3 * seconds['numpy']:11.2f} {speedup:8.1f}x")
    return rows


# -------------------------------------------------------------------- main

def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300,
                        help="training steps (default: %(default)s)")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip the C-against-NumPy timings")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps: expected a positive integer, got {args.steps}")

    print(f"fastrnn {fastrnn.__version__}\n")
    rng = np.random.default_rng(SEED)
    start = time.perf_counter()
    lstm, readout = train(args.steps, rng)
    print(f"(trained in {time.perf_counter() - start:.1f} s)")
    results = {"mse": evaluate(lstm, readout, rng)}
    if not args.no_timing:
        results["timings"] = time_backends([(T, B, 1, H), (100, 1, 64, 64), (100, 64, 256, 256)])
    return results


if __name__ == "__main__":
    main()
