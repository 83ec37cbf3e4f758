"""Two builds of fastrnn timed against each other in one run: is A as fast as B?

    python tools/compare_builds.py --a /tmp/v-wheel/bin/python --b .venv/bin/python
    python tools/compare_builds.py --a PY --a-path build-a/src --b PY --b-path build-b/src --quick

Each build is a Python interpreter that imports it (``--a``/``--b``; ``--a-path``
puts a directory first on its sys.path, for an in-place build). The two cannot
share a process (both are ``fastrnn._kernels``), so each round starts one
process per build, one after the other in alternating order, and each times
every row (fastrnn "c" on fastrnn.bench's grid: rnn_tanh, lstm and gru at S1, S2
and S3, inference and training; float32) as the fastest of up to 50 calls after
a warm-up call. By default (--clock cpu) fastrnn runs on one thread and a call's
time is the CPU time of that thread: the speed of the two builds' code, which
other tenants of a shared machine barely move (they take cores, not the
instructions a call runs). --clock wall times elapsed time at the default
threads, what a user sees on an idle machine. A round's ratio is A's time over B's, both measured seconds apart;
a row reports the median of its rounds' ratios and their interquartile range
(its noise). A row is "slower" when even the lower quartile of its ratios is
above 1 + --tolerance (default 5%): slower in three rounds of four, by more than
the noise of a shared machine. Both builds must agree on the instruction set
(``fastrnn._kernels.isa()``) or the run fails before timing.

Exit status 1 if a row is slower (or the ISAs differ), else 0. About 2.5 minutes
on 2 busy cores (7 rounds); --quick (S1 and S2, 5 rounds) under a minute.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

CELLS = ("rnn_tanh", "lstm", "gru")
SHAPES = ("S1", "S2", "S3")
QUICK_SHAPES = ("S1", "S2")
MODES = ("infer", "train")


# ---------------------------------------------------------------- worker

def best_call(fn: Callable[[], object], clock: Callable[[], float], budget: float = 0.1,
              calls: int = 50) -> float:
    """The fastest of up to `calls` calls (at least 3, at most `budget` seconds of
    the clock) after one untimed call, in seconds of `clock`."""
    fn()
    best, spent, n = math.inf, 0.0, 0
    while n < 3 or (n < calls and spent < budget):
        start = clock()
        fn()
        took = clock() - start
        best, spent, n = min(best, took), spent + took, n + 1
    return best


def worker(rows: Sequence[str], clock_name: str) -> Dict[str, object]:
    """Runs in the build's own interpreter: seconds per call of each row
    ("cell shape mode"), the build's ISA and where it was imported from."""
    import fastrnn
    from fastrnn import _kernels
    from fastrnn import bench as fb

    if clock_name == "cpu":
        # one thread, all work in the calling thread: its CPU time does not count
        # the time other processes hold the core
        fastrnn.set_num_threads(1)
    clock = time.thread_time if clock_name == "cpu" else time.perf_counter
    times = {}
    for row in rows:
        cell, shape, mode = row.split()
        impl = fb.make_impl("c", fb.make_problem(fb.Spec.make(cell, shape)))
        times[row] = best_call(impl.step(mode), clock)
    return {"isa": _kernels.isa(), "file": os.path.dirname(fastrnn.__file__),
            "version": fastrnn.__version__, "threads": fastrnn.get_num_threads(),
            "times": times}


def run_worker(python: str, path: Optional[str], rows: Sequence[str], clock: str
               ) -> Dict[str, object]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.path.abspath(path)
    else:
        env.pop("PYTHONPATH", None)
    # run from / so that no checkout on the current directory shadows the build
    out = subprocess.run([python, os.path.abspath(__file__), "--worker", clock,
                          json.dumps(list(rows))],
                         env=env, cwd="/", capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{python} (PYTHONPATH={path}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report

def quartiles(values: Sequence[float]) -> List[float]:
    """q1, median, q3 (inclusive method: defined from two values on)."""
    if len(values) == 1:
        return [values[0]] * 3
    return statistics.quantiles(values, n=4, method="inclusive")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        print(json.dumps(worker(json.loads(argv[2]), argv[1])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="Python of build A (timed over B)")
    parser.add_argument("--b", required=True, help="Python of build B (the reference)")
    parser.add_argument("--a-path", help="directory put first on A's sys.path")
    parser.add_argument("--b-path", help="directory put first on B's sys.path")
    parser.add_argument("--a-name", default="A")
    parser.add_argument("--b-name", default="B")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="S1 and S2 only, 5 rounds")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu (default): one thread, the calling thread's CPU time; "
                             "wall: the default threads, elapsed time")
    args = parser.parse_args(argv)

    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = args.rounds or (5 if args.quick else 7)
    rows = [f"{c} {s} {m}" for s in shapes for c in CELLS for m in MODES]
    builds = {"a": (args.a, args.a_path), "b": (args.b, args.b_path)}
    names = {"a": args.a_name, "b": args.b_name}
    ratios: Dict[str, List[float]] = {row: [] for row in rows}
    first: Dict[str, Dict[str, float]] = {}
    info = {}
    for r in range(rounds):
        got = {}
        for key in (("a", "b") if r % 2 == 0 else ("b", "a")):
            got[key] = run_worker(*builds[key], rows, args.clock)
            info.setdefault(key, got[key])
        if r == 0:
            for key in ("a", "b"):
                print(f"{names[key]}: fastrnn {got[key]['version']} from {got[key]['file']}, "
                      f"ISA {got[key]['isa']}, threads: {got[key]['threads']}", flush=True)
            if got["a"]["isa"] != got["b"]["isa"]:
                print(f"FAILED: the builds run different instruction sets "
                      f"({got['a']['isa']} against {got['b']['isa']})")
                return 1
        for row in rows:
            ratios[row].append(got["a"]["times"][row] / got["b"]["times"][row])
            first.setdefault(row, {})
            for key in ("a", "b"):
                first[row][key] = min(first[row].get(key, float("inf")), got[key]["times"][row])
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

    a, b = names["a"], names["b"]
    what = "CPU time of one thread" if args.clock == "cpu" else "elapsed time"
    print(f"\n{a} / {b}, {what} per call, {rounds} rounds (ratio > 1: {a} is slower; "
          f"'slower' if its lower quartile > {1 + args.tolerance:.2f})")
    print(f"{'row':<22} {a + ' ms':>10} {b + ' ms':>10}   {'ratio median [q1, q3]':<24} verdict")
    slower = []
    for row in rows:
        q1, med, q3 = quartiles(ratios[row])
        verdict = "slower" if q1 > 1 + args.tolerance else "same"
        if verdict == "slower":
            slower.append(row)
        print(f"{row:<22} {1e3 * first[row]['a']:>10.3f} {1e3 * first[row]['b']:>10.3f}   "
              f"{med:5.3f} [{q1:5.3f}, {q3:5.3f}]{'':8} {verdict}")
    all_ratios = [x for row in rows for x in ratios[row]]
    q1, med, q3 = quartiles(all_ratios)
    print(f"{'all rows':<22} {'':>10} {'':>10}   {med:5.3f} [{q1:5.3f}, {q3:5.3f}]")
    print("(ms: the fastest call over all rounds)")
    if slower:
        print(f"FAILED: {a} is slower than {b} in {len(slower)} rows: {', '.join(slower)}")
        return 1
    print(f"{a} is as fast as {b}: no row slower beyond noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
