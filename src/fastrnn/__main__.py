"""python -m fastrnn: train a small LSTM with fastrnn, then time C against NumPy.

Part 1 is a worked example of training with fastrnn's pieces. A model,
``Sequential(LSTM(1, 32), Linear(32, 1))``, reads noisy sine waves of random
frequency and phase, one value per step, and predicts the next value. Each
step: the model's forward, ``MSELoss``, the model's backward (BPTT in the C
kernels for the LSTM), which accumulates every parameter's gradient into
``model.grads``, ``clip_grad_norm_``, then ``Adam`` updates the parameters
in place under a ``CosineAnnealingLR`` schedule. At the end the model is
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


def mse(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error over the scored steps (those after the warm-up)."""
    value, _ = fastrnn.mse_loss(pred[WARMUP:], y[WARMUP:])
    return value


# --------------------------------------------------------------- training

def train(steps: int, rng: np.random.Generator, lr: float = 1e-2) -> fastrnn.Sequential:
    # an LSTM (backend="c", the default) and a linear read-out of its outputs
    model = fastrnn.Sequential(fastrnn.LSTM(1, H, seed=SEED), fastrnn.Linear(H, 1, seed=SEED))
    loss_fn = fastrnn.MSELoss()
    # the optimizer updates the live parameter arrays, named as in model.grads
    opt = fastrnn.Adam(model.named_parameters(), lr=lr)
    schedule = fastrnn.CosineAnnealingLR(opt, T_max=steps)   # cosine decay over the run
    report_every = max(1, steps // 10)

    print(f"Training LSTM(1, {H}) + Linear({H}, 1) to predict the next value of noisy "
          f"sine waves\n({steps} Adam steps, batches of {B} waves x {T} steps, noise std {NOISE})")
    running = None
    for step in range(1, steps + 1):
        x, y = sine_batch(rng)
        pred = model(x)                            # (T, B, 1); keeps what backward needs
        loss = loss_fn(pred, y)
        model.zero_grad()                          # backward accumulates into model.grads
        model.backward(loss_fn.backward())         # the read-out, then BPTT through the LSTM
        fastrnn.clip_grad_norm_(model.grads, 1.0)
        opt.step(model.grads)
        schedule.step()

        running = loss if running is None else 0.9 * running + 0.1 * loss
        if step % report_every == 0 or step == 1:
            print(f"  step {step:4d}   loss {loss:.4f}   (running mean {running:.4f})")
    return model


def evaluate(model: fastrnn.Sequential, rng: np.random.Generator) -> Dict[str, float]:
    """MSE on fresh waves of the model and of naive predictors."""
    x, y = sine_batch(rng, batch=512)
    results = {
        "LSTM + Linear": mse(model(x, training=False), y),
        "last value (y[t] = x[t])": mse(x, y),
        "zero (the waves' mean)": mse(np.zeros_like(y), y),
        "noise floor (NOISE**2)": NOISE ** 2,
    }
    print(f"\nMean squared error on 512 fresh waves (steps {WARMUP}..{T - 1}):")
    for name, value in results.items():
        print(f"  {name:28s} {value:.4f}")
    ratio = results["last value (y[t] = x[t])"] / results["LSTM + Linear"]
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
    model = train(args.steps, rng)
    print(f"(trained in {time.perf_counter() - start:.1f} s)")
    results = {"mse": evaluate(model, rng)}
    if not args.no_timing:
        results["timings"] = time_backends([(T, B, 1, H), (100, 1, 64, 64), (100, 64, 256, 256)])
    return results


if __name__ == "__main__":
    main()
