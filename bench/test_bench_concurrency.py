"""N Python threads each running its own layer, against the same work run sequentially.

    pytest --benchmark bench/test_bench_concurrency.py         # timed
    python bench/test_bench_concurrency.py [--rounds R] [--n 2,4] [--shapes S1,S2]
                                           [--settings one,default] [--json FILE]
                                                                 # the table of ratios
    pytest bench/                                                # each runs once as a test

In the tables at the end of ``pytest --benchmark`` the rows are (shape, mode, N,
setting), the columns sequential and concurrent, and seq/conc their ratio.
--benchmark-quick: S1 with N = 2.

A workload is N layers (one per thread), each with its own input, each called
``calls`` times: "sequential" runs the layers one after another in the calling
thread, "concurrent" runs them in N threads released together by a barrier
(timed from the release to the last thread's end). The ratio sequential /
concurrent is the speed-up of concurrency: > 1 faster, < 1 slower than
running the same work one after another. The script also reports the
process's CPU time for the same work, concurrent over sequential (> 1: threads
waiting or switching cost CPU), which depends less on other tenants.

Thread settings: "one" is ``fastrnn.set_num_threads(1)``; "default" is what
fastrnn sets at import (its calls on the process's CPUs, at most 8).

Timing in the script follows fastrnn.bench.timing: interleaved rounds (the
sequential and the concurrent block of a row alternate, in rotating order),
150 ms of sleep before each block (against the spin-wait of any BLAS pool
that ran before), minimum and median over rounds; the load average before
and after and the CPU model are printed with the table. Every run checks that
each layer's results in the concurrent run equal its results run alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels
from fastrnn.bench.report import cpu_model, usable_cpus as available_cpus
from fastrnn.bench.summary import Layout

# name -> (T, B, I, H): README's S1 and S2 (latency-bound), a batch the loop
# splits between threads only up to 64 rows (B48), README's S3 (GEMM-bound)
SHAPES = {
    "S1": (100, 1, 64, 64),
    "S2": (50, 16, 128, 128),
    "B48": (50, 48, 128, 128),
    "S3": (100, 64, 256, 256),
}
MODES = ("inference", "training")
CELL = "lstm"
# calls of each layer per timed block: about 20-60 ms of work per layer on an
# idle core; run as plain tests (benchmarks disabled), 1 call of TEST_STEPS
# steps per layer (B48 training at the default threads took 1.4 s per call
# of 50 steps on a busy 2-core machine)
CALLS = {"S1": {"inference": 40, "training": 15}, "S2": {"inference": 20, "training": 6},
         "B48": {"inference": 8, "training": 3}, "S3": {"inference": 1, "training": 1}}
PAUSE = 0.15
TEST_STEPS = 5

_DEFAULT_THREADS = fastrnn.get_num_threads()      # as set at import
_DEFAULT_LOOP = _kernels.get_loop_threads()


def apply_setting(setting: str) -> None:
    """Set fastrnn's threads to a named setting (see the module docstring)."""
    if setting == "one":
        fastrnn.set_num_threads(1)
    elif setting == "default":
        fastrnn.set_num_threads(_DEFAULT_THREADS)
        _kernels.set_loop_threads(_DEFAULT_LOOP)
    else:
        raise ValueError(f"setting: expected one or default, got {setting!r}")


@contextmanager
def threads_setting(setting: str) -> Iterator[None]:
    before_blas, before_loop = fastrnn.get_num_threads(), _kernels.get_loop_threads()
    apply_setting(setting)
    try:
        yield
    finally:
        fastrnn.set_num_threads(before_blas)
        _kernels.set_loop_threads(before_loop)


class Workload:
    """N layers, each with its own input and output gradient."""

    def __init__(self, shape: str, mode: str, n: int, calls: int, steps: int = 0) -> None:
        T, B, I, H = SHAPES[shape]
        T = steps or T
        self.mode, self.calls = mode, calls
        self.layers, self.inputs = [], []
        for k in range(n):
            rng = np.random.default_rng(k)
            self.layers.append(fastrnn.LSTM(I, H, seed=k))
            self.inputs.append((rng.standard_normal((T, B, I)).astype(np.float32),
                                rng.standard_normal((T, B, H)).astype(np.float32)))

    def run_one(self, k: int) -> Dict[str, np.ndarray]:
        """Layer k's calls; the results of its last call."""
        layer, (x, dy) = self.layers[k], self.inputs[k]
        for _ in range(self.calls):
            if self.mode == "inference":
                out, _ = layer(x, training=False)
                result = {"output": out}
            else:
                layer.zero_grad()
                out, _ = layer(x)
                dx, _ = layer.backward(dy)
                result = {"output": out, "dx": dx,
                          **{f"grads[{n}]": g.copy() for n, g in layer.grads.items()}}
        return result

    def sequential(self) -> Tuple[float, List[Dict[str, np.ndarray]]]:
        start = time.perf_counter()
        results = [self.run_one(k) for k in range(len(self.layers))]
        return time.perf_counter() - start, results

    def concurrent(self) -> Tuple[float, List[Dict[str, np.ndarray]]]:
        n = len(self.layers)
        barrier = threading.Barrier(n + 1)
        results: List = [None] * n
        errors: List[BaseException] = []

        def worker(k: int) -> None:
            try:
                barrier.wait(timeout=60)
                results[k] = self.run_one(k)
            except BaseException as e:          # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
        for th in threads:
            th.start()
        barrier.wait(timeout=60)
        start = time.perf_counter()
        for th in threads:
            th.join(timeout=600)
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        return elapsed, results


def check_same(concurrent: List[Dict], sequential: List[Dict], label: str) -> None:
    """Each layer's results in the concurrent run equal its results run alone
    (the same thread setting: bitwise, up to BLAS, which may split its work
    differently when called from several threads at once)."""
    for k, (got, want) in enumerate(zip(concurrent, sequential)):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{label}: layer {k} {name}")


# ------------------------------------------------------------------ pytest

# the shapes and thread counts the pytest run covers (S3 takes seconds per
# training call on a busy machine: the script measures it)
PYTEST_SHAPES = ("S1", "S2", "B48")


TABLE = Layout(columns=("sequential", "concurrent"),
               ratios=(("seq/conc", ("sequential",), "concurrent"),))


def in_quick(params) -> bool:
    """The --benchmark-quick subset: S1, two threads."""
    return params.get("shape") == "S1" and params.get("n") == 2


@pytest.mark.parametrize("how", ["sequential", "concurrent"])
@pytest.mark.parametrize("setting", ["one", "default"])
@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", PYTEST_SHAPES)
def test_concurrency(benchmark, record_timing, shape, mode, n, setting, how):
    group = f"{CELL}-{shape}-{mode}-N{n}-{setting}"
    benchmark.group = group
    benchmark.extra_info.update(shape=SHAPES[shape], mode=mode, threads=n, setting=setting,
                                how=how, cpu=cpu_model(), cores=available_cpus())
    if benchmark.disabled:
        work = Workload(shape, mode, n, 1, steps=TEST_STEPS)
    else:
        work = Workload(shape, mode, n, CALLS[shape][mode])
    with threads_setting(setting):
        _, alone = work.sequential()                 # warm-up, and the reference
        run = work.sequential if how == "sequential" else work.concurrent
        _, results = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    record_timing(f"concurrency: {CELL}, N threads each running its own layer "
                  f"({'one call' if benchmark.disabled else 'calls'} per layer per round)",
                  f"{shape} {mode[:5]} N{n} {setting}", how, benchmark, layout=TABLE)
    check_same(results, alone, group)


# ------------------------------------------------------------------ script

def measure(shape: str, mode: str, n: int, setting: str, rounds: int) -> Dict:
    """Interleaved rounds of the sequential and the concurrent block of one row."""
    work = Workload(shape, mode, n, CALLS[shape][mode])
    times: Dict[str, List[float]] = {"sequential": [], "concurrent": []}
    cpu: Dict[str, List[float]] = {"sequential": [], "concurrent": []}
    with threads_setting(setting):
        _, alone = work.sequential()
        for r in range(rounds):
            order = ("sequential", "concurrent") if r % 2 == 0 else ("concurrent", "sequential")
            for how in order:
                time.sleep(PAUSE)
                cpu0 = time.process_time()
                elapsed, results = getattr(work, how)()
                cpu[how].append(time.process_time() - cpu0)
                times[how].append(elapsed)
                if how == "concurrent":
                    check_same(results, alone, f"{shape} {mode} N={n} {setting}")
    seq, con = times["sequential"], times["concurrent"]
    return {"shape": shape, "mode": mode, "threads": n, "setting": setting,
            "calls": CALLS[shape][mode], "sequential_s": seq, "concurrent_s": con,
            "ratio_min": min(seq) / min(con),
            "ratio_median": statistics.median(seq) / statistics.median(con),
            "sequential_cpu_s": cpu["sequential"], "concurrent_cpu_s": cpu["concurrent"],
            # the CPU time the same work takes, concurrent over sequential
            "cpu_ratio_median": statistics.median(cpu["concurrent"])
            / statistics.median(cpu["sequential"])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", default="2,4", help="Python threads, comma-separated")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--settings", default="one,default")
    parser.add_argument("--json", help="write every round's times here")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}, {available_cpus()} CPUs available; "
          f"fastrnn default threads {_DEFAULT_THREADS} (loop {_DEFAULT_LOOP}); "
          f"load average before {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'shape':<5} {'mode':<9} {'N':>2} {'setting':<10} {'calls':>5} "
          f"{'seq min ms':>10} {'conc min ms':>11} {'seq/conc (min)':>14} "
          f"{'seq/conc (median)':>17} {'CPU conc/seq':>12}", flush=True)
    rows = []
    for setting in args.settings.split(","):
        for shape in args.shapes.split(","):
            for mode in args.modes.split(","):
                for n in (int(v) for v in args.n.split(",")):
                    row = measure(shape, mode, n, setting, args.rounds)
                    rows.append(row)
                    print(f"{shape:<5} {mode:<9} {n:>2} {setting:<10} {row['calls']:>5} "
                          f"{1e3 * min(row['sequential_s']):>10.1f} "
                          f"{1e3 * min(row['concurrent_s']):>11.1f} "
                          f"{row['ratio_min']:>14.2f} {row['ratio_median']:>17.2f} "
                          f"{row['cpu_ratio_median']:>12.2f}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "cpus": available_cpus(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
