"""Generation one step at a time: the stateful-layer path against the Stepper.

    python bench/generation.py              # ~10 s
    python bench/generation.py --hidden 256

A character model, Embedding(65, 64) -> LSTM(64, H) -> Linear(H, 65), run one
step per call, batch 1, float32, inference:

- layer path: the Sequential, its LSTM stateful, called on ids (1, 1) per step
  (one whole layer call per step);
- Stepper: the same model on its cells' lean step (fastrnn.Stepper);

each for the model step alone and for generation (a step and a top-k draw fed
back); and, for scale, the stateful LSTM layer and its cell alone. Prints
microseconds per step: the fastest of interleaved rounds (the least noisy
estimate on a shared machine).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict

import numpy as np

import fastrnn

V, E = 65, 64


def per_step(fn: Callable[[int], object], steps: int) -> float:
    """Microseconds per step of fn(steps)."""
    start = time.perf_counter()
    fn(steps)
    return 1e6 * (time.perf_counter() - start) / steps


def main() -> Dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=64, help="H (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    model = fastrnn.Sequential(fastrnn.Embedding(V, E, seed=0),
                               fastrnn.LSTM(E, args.hidden, stateful=True, seed=0),
                               fastrnn.Linear(args.hidden, V, seed=0)).eval()
    stepper = fastrnn.Stepper(model)
    rng = np.random.default_rng(0)

    def layer_step(n: int) -> None:
        model.reset_state()
        ids = np.array([[1]])
        for _ in range(n):
            model(ids)

    def layer_generate(n: int) -> None:
        model.reset_state()
        ids = np.array([[1]])
        for _ in range(n):
            ids = fastrnn.sample(model(ids)[0], top_k=5, rng=rng)[None]

    def stepper_step(n: int) -> None:
        stepper.reset_state()
        x = np.array([1])
        for _ in range(n):
            stepper(x)

    def stepper_generate(n: int) -> None:
        fastrnn.generate(stepper, np.array([1]), n, top_k=5, seed=0)

    lstm, cell = model[1], stepper._parts[1][0]
    x = np.zeros((1, 1, E), np.float32)

    def lstm_alone(n: int) -> None:
        lstm.reset_state()
        for _ in range(n):
            lstm(x)

    def cell_alone(n: int) -> None:
        state = None
        for _ in range(n):
            state = cell(x[0], state, training=False)

    cases = {"layer path, step": layer_step, "layer path, generate (top-k)": layer_generate,
             "Stepper, step": stepper_step, "Stepper, generate (top-k)": stepper_generate,
             "(the stateful LSTM alone)": lstm_alone, "(its LSTMCell alone)": cell_alone}
    best = {name: float("inf") for name in cases}
    for _ in range(args.rounds):        # interleaved: each round runs every case once
        for name, fn in cases.items():
            best[name] = min(best[name], per_step(fn, args.steps))
    print(f"Embedding({V}, {E}) -> LSTM({E}, {args.hidden}) -> Linear({args.hidden}, {V}), "
          f"batch 1, float32 (us per step, fastest of {args.rounds} rounds)")
    for name, us in best.items():
        print(f"  {name:30s} {us:7.1f}")
    step = best["layer path, step"] / best["Stepper, step"]
    generating = best["layer path, generate (top-k)"] / best["Stepper, generate (top-k)"]
    print(f"  Stepper against the layer path: {step:.1f}x per step, {generating:.1f}x generating")
    return best


if __name__ == "__main__":
    main()
