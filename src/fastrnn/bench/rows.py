"""One row of the report: built, checked and timed; its targets; the extra rows; the
pooling of a second pass over the rows measured on a busy machine.

Targets (reported in "target met?", not asserted):
    every row    fastrnn c faster than the best peer (infer: the faster of torch and
                 onnxruntime; train: torch)
    S4, S5       fastrnn c at >= 90% of the measured GEMM peak
    S1 infer     >= 2x faster than onnxruntime;  S1 train  >= 5x faster than torch
    LSTMCell     one step from Python (B=1, I=H=64, inference) in <= 2 us
    float64      fastrnn c float64 time <= 2.2x its float32 time (S2, S3)

Second pass (run by fastrnn.bench.report): rows measured on a busy machine (their GEMM
probe below 60% of its best in the run) or unsteady ones (some implementation's median
over twice its minimum) are run again after the grid and the extra rows, worst first,
while the run is under 8 minutes (40 s with --quick); the rounds of both passes are
pooled. They are named in the header; rows still busy or unsteady are listed under the
table.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastrnn
from fastrnn.bench import peers
from fastrnn.bench.grid import NUMPY_SKIPPED, SEED, Spec, flops
from fastrnn.bench.peers import (IMPLS, PEERS, FastrnnImpl, Impl, Problem, Result, compare,
                                 make_impl, make_problem, supports)
from fastrnn.bench.timing import (MAX_ROUNDS, PROBE, PROBE_FLOPS, _estimate, gemm_probe,
                                  interleaved)

# targets
PEAK_FRACTION = 0.90
PEAK_SHAPES = ("S4", "S5")
S1_INFER_VS_ORT = 2.0
S1_TRAIN_VS_TORCH = 5.0
CELL_STEP_US = 2.0
FLOAT64_RATIO = 2.2

STAT = "min"                 # the reported statistic over rounds ("median" also kept)
UNSTEADY = 2.0               # median/min over rounds above this is listed under the table
LOADED_FRACTION = 0.6        # a row whose probe ran below this share of its best is re-run


@dataclasses.dataclass
class Row:
    """One row of the report: a Spec and mode, the GEMM flops of one call, and each
    implementation's status and timings (seconds; "min", "median", "rounds", ...)."""

    spec: Spec
    mode: str
    flops: int
    impls: Dict[str, Dict[str, Any]]     # name -> {"status", "min", "median", ...}
    reference: str = ""
    probe: Optional[Dict[str, Any]] = None   # the GEMM probe's timings in the same rounds

    @property
    def probe_gflops(self) -> Optional[float]:
        """The GEMM probe's best rate in this row's rounds: the machine's state then."""
        return None if not self.probe else PROBE_FLOPS / self.probe["min"] / 1e9

    def time(self, impl: str) -> Optional[float]:
        """impl's reported seconds per call (STAT over rounds), None unless it ran."""
        entry = self.impls.get(impl, {})
        return entry.get(STAT) if entry.get("status") == "ok" else None

    @property
    def label(self) -> str:
        return f"{self.spec.cell} {self.spec.name} {self.mode}"

    def best_peer(self) -> Tuple[Optional[str], Optional[float]]:
        """(name, seconds) of the fastest peer that ran: torch or onnxruntime (infer),
        torch (train); (None, None) if none."""
        times = {p: self.time(p) for p in PEERS if supports(p, self.mode)}
        times = {p: t for p, t in times.items() if t is not None}
        if not times:
            return None, None
        name = min(times, key=times.get)
        return name, times[name]

    def speedup(self, peer: Optional[str] = None) -> Optional[float]:
        """peer time / fastrnn c time (> 1: fastrnn faster); the best peer by default."""
        c = self.time("c")
        t = self.best_peer()[1] if peer is None else self.time(peer)
        return None if c is None or t is None else t / c

    def gflops(self) -> Optional[float]:
        """fastrnn c's GEMM GFLOP/s, None unless it ran."""
        c = self.time("c")
        return None if c is None else self.flops / c / 1e9

    def targets(self, peak: float) -> List[Dict[str, Any]]:
        """[{"name", "goal", "value", "met" (None: not measurable here)}]."""
        out = []
        ratio = self.speedup()
        out.append({"name": "faster than best peer", "goal": 1.0, "value": ratio,
                    "met": None if ratio is None else ratio > 1.0})
        shape = self.spec.shape_name
        if shape in PEAK_SHAPES and self.spec.dtype == "float32":
            g = self.gflops()
            pct = None if g is None else g / peak
            out.append({"name": f">= {PEAK_FRACTION:.0%} of GEMM peak", "goal": PEAK_FRACTION,
                        "value": pct, "met": None if pct is None else pct >= PEAK_FRACTION})
        if shape == "S1" and self.mode == "infer":
            r = self.speedup("onnxruntime")
            out.append({"name": f">= {S1_INFER_VS_ORT:g}x onnxruntime", "goal": S1_INFER_VS_ORT,
                        "value": r, "met": None if r is None else r >= S1_INFER_VS_ORT})
        if shape == "S1" and self.mode == "train":
            r = self.speedup("torch")
            out.append({"name": f">= {S1_TRAIN_VS_TORCH:g}x torch", "goal": S1_TRAIN_VS_TORCH,
                        "value": r, "met": None if r is None else r >= S1_TRAIN_VS_TORCH})
        return out


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_row(spec: Spec, mode: str, threads: int, budget: float, rounds: Optional[int],
            max_rounds: int, impls: Sequence[str] = IMPLS) -> Row:
    """Build, check and time every implementation of one (spec, mode)."""
    problem = make_problem(spec)
    entries: Dict[str, Dict[str, Any]] = {}
    adapters: Dict[str, Impl] = {}
    for impl in impls:
        if not supports(impl, mode):
            entries[impl] = {"status": "n/a", "reason": f"{impl} runs inference only"}
            continue
        if impl == "numpy" and spec.shape_name in NUMPY_SKIPPED:
            entries[impl] = {"status": "skipped", "reason": "seconds per call at S4/S5"}
            continue
        reason = peers.unavailable(impl)
        if reason:
            entries[impl] = {"status": "n/a", "reason": reason}
            continue
        try:
            adapters[impl] = make_impl(impl, problem, threads)
        except Exception as e:            # a peer that cannot be built is reported, not fatal
            entries[impl] = {"status": "error", "reason": f"{type(e).__name__}: {e}"}
            _progress(f"  {impl}: could not be built: {e}")

    # one call each (also the first warm-up), then check against the reference
    results: Dict[str, Result] = {}
    estimates: Dict[str, float] = {}
    for impl, adapter in list(adapters.items()):
        try:
            adapter.step(mode)()
            results[impl] = adapter.result(mode)
            estimates[impl] = _estimate(adapter.step(mode))   # the second call, warm
        except Exception as e:
            entries[impl] = {"status": "error", "reason": f"{type(e).__name__}: {e}"}
            _progress(f"  {impl}: failed: {e}")
            del adapters[impl]
    reference = next((r for r in ("torch", "numpy", "c") if r in results), "")
    for impl in list(adapters):
        problem_text = None if impl == reference else compare(results[impl], results[reference])
        if problem_text:
            entries[impl] = {"status": "mismatch", "reason": f"vs {reference}: {problem_text}"}
            _progress(f"  {impl} disagrees with {reference}: {problem_text}")
            del adapters[impl]
    del results

    fns = {n: a.step(mode) for n, a in adapters.items()}
    if fns:
        fns[PROBE] = gemm_probe()
    timed = interleaved(fns, budget, rounds, max_rounds, estimates)
    probe = timed.pop(PROBE, None)
    for impl, stats in timed.items():
        entries[impl] = {"status": "ok", **stats}
    del adapters, fns
    gc.collect()
    return Row(spec, mode, flops(spec, mode), {i: entries[i] for i in impls}, reference, probe)


# ------------------------------------------------------------------ extras

CELL_SPEC = Spec("LSTMCell", 1, 1, 64, 64, "B=1 I=64 H=64")


def run_cell_step(rounds: Optional[int] = None, calls: int = 500,
                  max_rounds: int = MAX_ROUNDS) -> Row:
    """One LSTMCell step from Python, B=1, I=H=64, inference: fastrnn.LSTMCell against
    torch.nn.LSTMCell (same weights, checked), interleaved with the GEMM probe. A Row
    whose timings are seconds per step (blocks of `calls` steps)."""
    I, H = CELL_SPEC.I, CELL_SPEC.H
    cell = fastrnn.LSTMCell(I, H, seed=SEED)
    rng = np.random.default_rng(SEED + 1)
    x = rng.standard_normal((1, I)).astype(np.float32)
    h = rng.standard_normal((1, H)).astype(np.float32)
    c = rng.standard_normal((1, H)).astype(np.float32)
    fns: Dict[str, Callable[[], object]] = {}
    entries: Dict[str, Dict[str, Any]] = {}
    reason = peers.unavailable("torch")
    if reason is None:
        import torch
        tcell = torch.nn.LSTMCell(I, H)
        cell.load_state_dict({k: v.detach().numpy() for k, v in tcell.state_dict().items()})
        tx, th, tc = (torch.from_numpy(a) for a in (x, h, c))

        def torch_step():
            with torch.inference_mode():
                return tcell(tx, (th, tc))
        got, want = cell(x, (h, c), training=False), torch_step()
        problem = compare({"output": np.concatenate(got)},
                          {"output": np.concatenate([w.numpy() for w in want])})
        if problem:
            entries["torch"] = {"status": "mismatch", "reason": problem}
        else:
            fns["torch"] = torch_step
    else:
        entries["torch"] = {"status": "n/a", "reason": reason}
    fns["c"] = lambda: cell(x, (h, c), training=False)

    def many(fn):
        def run():
            for _ in range(calls):
                fn()
        return run
    timed = interleaved({**{n: many(f) for n, f in fns.items()}, PROBE: gemm_probe()},
                        budget=1.0, rounds=rounds, max_rounds=max_rounds)
    probe = timed.pop(PROBE)
    for name, stats in timed.items():
        per_step = [v / calls for v in stats["rounds"]]
        entries[name] = {"status": "ok", "min": min(per_step),
                         "median": statistics.median(per_step), "rounds": per_step,
                         "steps_per_block": calls}
    return Row(CELL_SPEC, "infer", flops(CELL_SPEC, "infer"),
               {n: entries[n] for n in ("c", "torch")}, "torch", probe)


def cell_step_report(row: Row) -> Dict[str, Any]:
    """The LSTMCell row as the JSON has it: microseconds per step and the target."""
    us = {n: (1e6 * e[STAT] if e.get("status") == "ok" else None) for n, e in row.impls.items()}
    return {"row": f"{row.label} (one step)", "us": us, "impls": row.impls,
            "target_us": CELL_STEP_US, "probe_gflops": row.probe_gflops,
            "met": None if us["c"] is None else us["c"] <= CELL_STEP_US}


def run_float64(spec32: Spec, mode: str, budget: float, rounds: Optional[int] = None,
                max_rounds: int = MAX_ROUNDS) -> Row:
    """fastrnn c in float64 against float32 on the same problem, interleaved with the
    GEMM probe: a Row whose impls are "float32" and "float64" (the latter with
    "agreement": "ok" or how it differs from float32)."""
    spec64 = dataclasses.replace(spec32, dtype="float64")
    p32 = make_problem(spec32)
    p64 = Problem(spec64, {k: v.astype(np.float64) for k, v in p32.weights.items()},
                  p32.x.astype(np.float64), p32.d_output.astype(np.float64))
    a32, a64 = FastrnnImpl(p32, "c"), FastrnnImpl(p64, "c")
    est = {}
    for name, a in (("float32", a32), ("float64", a64)):
        a.step(mode)()
        est[name] = _estimate(a.step(mode))
    agreement = compare(a64.result(mode), a32.result(mode)) or "ok"
    timed = interleaved({"float32": a32.step(mode), "float64": a64.step(mode),
                         PROBE: gemm_probe()}, budget, rounds, max_rounds, est)
    probe = timed.pop(PROBE)
    impls = {name: {"status": "ok", **stats} for name, stats in timed.items()}
    impls["float64"]["agreement"] = agreement
    return Row(spec32, mode, flops(spec32, mode), impls, "float32", probe)


def float64_ratio(row: Row) -> float:
    """float64 time / float32 time of a run_float64 row."""
    return row.impls["float64"][STAT] / row.impls["float32"][STAT]


def float64_report(row: Row) -> Dict[str, Any]:
    """A run_float64 row as the JSON has it: both timings, the ratio and the target."""
    ratio = float64_ratio(row)
    return {"row": row.label, "float32": row.impls["float32"], "float64": row.impls["float64"],
            "ratio": ratio, "target": FLOAT64_RATIO, "met": ratio <= FLOAT64_RATIO,
            "agreement": row.impls["float64"]["agreement"], "probe_gflops": row.probe_gflops}


# ------------------------------------------------------------------ second pass

def _unsteady(row: Row) -> bool:
    return any(e.get("status") == "ok" and e["median"] > UNSTEADY * e["min"]
               for e in row.impls.values())


def _pool(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    pooled = a["rounds"] + b["rounds"]
    return {**a, "min": min(pooled), "median": statistics.median(pooled), "rounds": pooled,
            "passes": a.get("passes", 1) + 1}


def merge_rows(first: Row, second: Row) -> Row:
    """The rounds of two passes over the same row pooled per implementation (an
    implementation that did not run in both keeps the first pass's entry)."""
    impls = {}
    for name, a in first.impls.items():
        b = second.impls.get(name, {})
        both = a.get("status") == "ok" and b.get("status") == "ok"
        impls[name] = _pool(a, b) if both else a
    probe = _pool(first.probe, second.probe) if first.probe and second.probe else first.probe
    return dataclasses.replace(first, impls=impls, probe=probe)


def _loaded(row: Row, best_probe: float) -> bool:
    """Whether the row's GEMM probe ran below LOADED_FRACTION of its best in the run."""
    g = row.probe_gflops
    return g is not None and g < LOADED_FRACTION * best_probe


def unstable_rows(rows: Sequence[Row]) -> List[str]:
    """"label impl median/min" for every timing whose median over rounds exceeds
    UNSTEADY times its minimum (the table shows minima)."""
    out = []
    for row in rows:
        for impl, e in row.impls.items():
            if e.get("status") == "ok" and e["median"] > UNSTEADY * e["min"]:
                out.append(f"{row.label} {impl} {1e3 * e['median']:.3f} ms median "
                           f"({e['median'] / e['min']:.1f}x)")
    return out
