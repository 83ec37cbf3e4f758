"""A training loop on a busy machine: default threads against one thread.

    python bench/busy_machine.py            # LSTM and GRU at S1-S3, ~1 minute
    python bench/busy_machine.py --idle     # the same without the busy process

Starts a process that keeps one core busy (a pure-Python loop), then times
training steps (zero_grad, forward, backward) of each layer at
set_num_threads(1) and at the default, and prints the ratio default / one
thread. fastrnn's promise (README, Threads): the default is not slower than
one thread while another process holds a core. Ratios come from one run on a
shared machine: read them with their noise.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

import fastrnn
from fastrnn.bench.report import cpu_model, usable_cpus

SHAPES = {"S1": (100, 1, 64, 64), "S2": (50, 16, 128, 128), "S3": (100, 64, 256, 256)}
LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}


def seconds_per_step(cell: str, shape: str, threads: int, budget: float) -> float:
    fastrnn.set_num_threads(threads)
    T, B, I, H = SHAPES[shape]
    layer = LAYERS[cell](I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    dy = np.ones((T, B, H), np.float32)

    def step():
        layer.zero_grad()
        layer(x)
        layer.backward(dy)

    step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget or n < 3:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", action="store_true", help="no busy process")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    default = min(usable_cpus(), 8)
    print(f"{cpu_model()}, {usable_cpus()} CPUs; default threads {default}; "
          f"{'idle' if args.idle else 'one core kept busy by another process'}")
    busy = None if args.idle else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for cell in LAYERS:
            for shape in SHAPES:
                one = seconds_per_step(cell, shape, 1, args.seconds)
                dflt = seconds_per_step(cell, shape, default, args.seconds)
                print(f"{cell:5s} {shape}: 1 thread {one * 1e3:9.2f} ms/step, "
                      f"default {dflt * 1e3:9.2f} ms/step, default / 1 thread {dflt / one:5.2f}")
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


if __name__ == "__main__":
    main()
