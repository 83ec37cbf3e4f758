"""How the report times: thread limits, interleaved rounds, the GEMM peak and probe.

Timing: interleaved rounds. In each round every implementation of the row runs a short
block, in an order that rotates from round to round: a 150 ms sleep (OpenBLAS's idle
threads spin for about 0.1 s after a call and slow down whatever runs next on 2 cores:
a torch call right after fastrnn's or SciPy's BLAS measured 35% slower without it), one
untimed call when a call is shorter than 100 ms, then enough timed calls to fill about
20 ms (at least one; no more once the
block has run 100 ms, when the machine's load has slowed calls down). A round's value is
the fastest call of its block; the reported time is the **minimum over rounds** (the
median over rounds and every round's value are in the JSON). Rounds are chosen per row to
fit a time budget (3 to 15 rounds; ``--rounds`` fixes the number). Interleaving spreads
every implementation's samples over the same stretch of time, so drift and the other
tenants of a shared machine hit all alike; the minimum is what each gets from the
machine at its quietest, the least noisy estimate when others load the cores (with 2
threads on 2 busy cores one descheduled thread stalls every parallel region, and medians
then measure the neighbours). The load average before and after is in the header.
Every row's rounds also time a fixed GEMM probe (1024 square, SciPy's sgemm), so each row
carries the machine's state while it was measured (fastrnn.bench.rows re-runs the rows
measured on a busy machine).

GEMM peak: the best float32 GEMM rate over square matmuls of a few sizes (1024, 2048,
3072 by default) through SciPy's sgemm (the OpenBLAS fastrnn calls), NumPy's matmul
(NumPy's OpenBLAS) and torch.mm (MKL), with the same thread limits, measured at the start
and at the end of the run, and the rows' GEMM probes; the peak is the best of
all of them (the machine's, not one library's). Per-library numbers are in the header
and the JSON.

FMA peak: fastrnn's FMA probe (independent float32 vector FMAs on registers, in the
kernel variant in use) run on as many threads as the run uses, all at once, best of a
few repeats: the arithmetic ceiling of those cores, which the GEMM peak approaches from
below (its ratio to the FMA peak says how far the machine's best GEMM gets).

Threads: threadpoolctl limits every BLAS and OpenMP pool in the process (NumPy's and
SciPy's OpenBLAS, torch's OpenMP), fastrnn.set_num_threads (where it exists) sets
fastrnn's, torch.set_num_threads torch's intra-op pool, and ONNX Runtime sessions get
intra_op_num_threads (inter-op 1). Limits are restored on return.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

import fastrnn
from fastrnn.bench import peers
from fastrnn.bench.grid import SEED

BLOCK_SECONDS = 0.02         # timed calls per block fill about this much
PAUSE = 0.15                 # s of sleep before each block: the last one's threads go idle
BLOCK_LIMIT = 0.1            # a block stops adding calls after this many seconds
WARMUP_BELOW = 0.1           # an untimed call opens a block when a call is shorter
MIN_ROUNDS, MAX_ROUNDS = 3, 15
PROBE, PROBE_N = "gemm probe", 1024
PROBE_FLOPS = 2 * PROBE_N ** 3


# ------------------------------------------------------------------ threads

def _preload() -> None:
    """Load every library whose thread pool threadpoolctl should limit (it only
    sees libraries already loaded)."""
    import scipy.linalg.blas  # noqa: F401  (fastrnn._kernels loads the same OpenBLAS)
    for impl in peers.PEERS:
        if peers.unavailable(impl) is None:
            peers.optional_module("onnxruntime" if impl == "onnxruntime" else "torch")


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[Dict[str, Any]]:
    """Every BLAS/OpenMP pool (threadpoolctl) and torch's intra-op pool at `threads`
    for the duration; yields a description. ORT takes its count per session."""
    _preload()
    info: Dict[str, Any] = {"threads": threads}
    with contextlib.ExitStack() as stack:
        threadpoolctl = peers.optional_module("threadpoolctl")
        if threadpoolctl is not None:
            stack.enter_context(threadpoolctl.threadpool_limits(limits=threads))
            info["pools"] = [f"{p['internal_api']} {os.path.basename(p['filepath'])}: "
                             f"{p['num_threads']}" for p in threadpoolctl.threadpool_info()]
        else:
            info["pools"] = ["threadpoolctl not installed: BLAS threads not limited "
                             "(set OPENBLAS_NUM_THREADS)"]
        if hasattr(fastrnn, "set_num_threads"):      # fastrnn's own say, when it has one
            stack.callback(fastrnn.set_num_threads, fastrnn.get_num_threads())
            fastrnn.set_num_threads(threads)
            info["fastrnn"] = fastrnn.get_num_threads()
        torch = peers.torch_or_none()
        if torch is not None:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, previous)
            info["torch"] = torch.get_num_threads()
        yield info


# ------------------------------------------------------------------ rounds

def _block(fn: Callable[[], object], calls: int, warmup: int,
           limit: float = math.inf, pause: float = 0.0) -> float:
    """The fastest of `calls` timed calls after `warmup` untimed ones, in seconds;
    fewer (at least one) once the block has run `limit` seconds, so that a call
    slowed down 100-fold by the machine's load cannot stretch the block with it.
    `pause` seconds of sleep first let the thread pools of whatever ran before go idle."""
    if pause:
        time.sleep(pause)
    opened = time.perf_counter()
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        best = min(best, end - start)
        if end - opened > limit:
            break
    return best


def _estimate(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: Dict[str, Callable[[], object]], budget: float,
                rounds: Optional[int] = None, max_rounds: int = MAX_ROUNDS,
                estimates: Optional[Dict[str, float]] = None) -> Dict[str, Dict[str, Any]]:
    """Time every fn in interleaved rounds (this module's docstring).

    Returns {name: {"min": s, "median": s, "rounds": [s, ...], "calls": k, "warmup": w}}:
    the minimum and the median over rounds of each round's fastest call.
    The number of rounds fits `budget` seconds, within [MIN_ROUNDS, max_rounds], unless
    `rounds` is given; rounds also stop once `budget` has passed (after MIN_ROUNDS), in
    case the machine slowed down. `estimates` are seconds per call (measured here when
    missing)."""
    if not fns:
        return {}
    est = dict(estimates or {})
    for name, fn in fns.items():
        if name not in est:
            est[name] = _estimate(fn)
    plan = {}
    for name, t in est.items():
        t = max(t, 1e-7)
        plan[name] = (max(1, min(200, int(BLOCK_SECONDS / t))), 1 if t < WARMUP_BELOW else 0)
    round_cost = sum(PAUSE + (calls + warm) * est[n] for n, (calls, warm) in plan.items())
    fixed = rounds is not None
    if not fixed:
        rounds = int(budget / max(round_cost, 1e-9))
        rounds = max(MIN_ROUNDS, min(max_rounds, rounds))
    names = list(fns)
    values: Dict[str, List[float]] = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(rounds):
        if not fixed and r >= MIN_ROUNDS and time.perf_counter() - started > budget:
            break
        for i in range(len(names)):
            name = names[(r + i) % len(names)]   # rotate: nobody always follows the same peer
            calls, warm = plan[name]
            values[name].append(_block(fns[name], calls, warm, limit=BLOCK_LIMIT,
                                       pause=PAUSE))
    return {n: {"min": min(v), "median": statistics.median(v), "rounds": v,
                "calls": plan[n][0], "warmup": plan[n][1]} for n, v in values.items()}


# ------------------------------------------------------------------ GEMM peak and probe

def measure_gemm_peak(sizes: Sequence[int] = (1024, 2048, 3072), repeats: int = 3
                      ) -> Dict[str, Any]:
    """Best float32 GEMM GFLOP/s of square N x N matmuls per library (SciPy sgemm,
    NumPy matmul, torch.mm when installed), interleaved; call inside thread_limits."""
    from scipy.linalg import blas as scipy_blas
    torch = peers.torch_or_none()
    best: Dict[str, float] = {}
    rng = np.random.default_rng(SEED)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        fa, fb = np.asfortranarray(a), np.asfortranarray(b)
        fns: Dict[str, Callable[[], object]] = {
            "scipy sgemm": lambda: scipy_blas.sgemm(1.0, fa, fb),
            "numpy matmul": lambda: a @ b,
        }
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch.mm"] = lambda: torch.mm(ta, tb)
        for fn in fns.values():
            fn()                                   # warm-up: thread pools, packing buffers
        for r in range(repeats):
            for name, fn in fns.items():
                t = _block(fn, 1, 0, pause=PAUSE)
                best[name] = max(best.get(name, 0.0), 2.0 * n ** 3 / t / 1e9)
    return {"gflops": max(best.values()), "by_library": best, "sizes": list(sizes)}


def measure_fma_peak(threads: int, seconds: float = 0.1, repeats: int = 5) -> float:
    """Float32 GFLOP/s of fastrnn's FMA probe run by `threads` threads at once (about
    `seconds` each), best of `repeats`: the FMA peak of that many cores."""
    import threading
    from fastrnn import _kernels
    iterations = 1 << 16
    t = time.perf_counter()
    _kernels.fma_probe(iterations)               # calibrate: iterations for `seconds`
    per_iteration = max(time.perf_counter() - t, 1e-6) / iterations
    iterations = max(1, int(seconds / per_iteration))
    best = 0.0
    for _ in range(repeats):
        flops = [0] * threads
        start = threading.Barrier(threads + 1)

        def work(k: int) -> None:
            start.wait()
            flops[k] = _kernels.fma_probe(iterations)

        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for th in pool:
            th.start()
        start.wait()
        t = time.perf_counter()
        for th in pool:
            th.join()
        best = max(best, sum(flops) / (time.perf_counter() - t) / 1e9)
    return best


_probe: Dict[str, Callable[[], object]] = {}


def gemm_probe() -> Callable[[], object]:
    """A fixed float32 GEMM (PROBE_N square, SciPy's sgemm: the BLAS fastrnn calls),
    timed in every row's rounds like one more implementation: its rate shows how much
    of the machine the row's measurements had."""
    if "sgemm" not in _probe:
        from scipy.linalg import blas as scipy_blas
        rng = np.random.default_rng(SEED)
        a = np.asfortranarray(rng.standard_normal((PROBE_N, PROBE_N), dtype=np.float32))
        b = np.asfortranarray(rng.standard_normal((PROBE_N, PROBE_N), dtype=np.float32))
        _probe["sgemm"] = lambda: scipy_blas.sgemm(1.0, a, b)
    return _probe["sgemm"]
