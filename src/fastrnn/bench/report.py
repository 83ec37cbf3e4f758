"""The report: the tables, the plot, the JSON and the command line (``main``), over the
rows of fastrnn.bench.rows."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import fastrnn
from fastrnn import _kernels
from fastrnn.bench import peers
from fastrnn.bench.grid import (CELLS, DEFAULT_CELLS, DEFAULT_THREADS, FLOAT64_SHAPES, MODES,
                                SHAPES, Spec, parse_shape)
from fastrnn.bench.peers import IMPLS, PEERS
from fastrnn.bench.rows import (FLOAT64_RATIO, LOADED_FRACTION, STAT, UNSTEADY, Row, _loaded,
                                _progress, _unsteady, cell_step_report, float64_ratio,
                                float64_report, merge_rows, run_cell_step, run_float64,
                                run_row, unstable_rows)
from fastrnn.bench.timing import (MAX_ROUNDS, PROBE_N, measure_fma_peak, measure_gemm_peak,
                                  thread_limits)

ROW_BUDGET = 5.0             # seconds of timed rounds per row (full grid)
QUICK_ROW_BUDGET, QUICK_MAX_ROUNDS = 1.0, 5
SECOND_PASS_UNTIL = 480.0    # s into a run: busy or unsteady rows are re-run until then
QUICK_SECOND_PASS_UNTIL = 40.0


# ------------------------------------------------------------------ tables


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), so that figures from
    different machines can be told apart."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.platform()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

def _ms(entry: Dict[str, Any]) -> str:
    status = entry.get("status", "n/a")
    if status != "ok":
        return status
    return f"{1e3 * entry[STAT]:.3f}"


def _num(value: Optional[float], fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _target_text(targets: List[Dict[str, Any]]) -> str:
    known = [t for t in targets if t["met"] is not None]
    if not known:
        return "n/a"
    failed = [t for t in known if not t["met"]]
    if not failed:
        return "yes"
    parts = []
    for t in failed:
        if "peak" in t["name"]:
            parts.append(f"{t['value']:.0%} < {t['goal']:.0%} peak")
        elif t["name"].startswith("faster"):
            parts.append(f"{t['value']:.2f}x best peer")
        else:
            parts.append(f"{t['value']:.2f}x < {t['name'][3:]}")
    return "no: " + "; ".join(parts)


COLUMNS = ["row", "fastrnn c (ms)", "fastrnn numpy (ms)", "torch (ms)", "onnxruntime (ms)",
           "c vs best peer", "GFLOP/s (c)", "% GEMM peak", "target met?"]


def markdown_table(rows: Sequence[Row], peak: float) -> str:
    """The main table: one line per row, COLUMNS; `peak` is the GEMM peak in GFLOP/s."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 2) + [":---"]) + "|"]
    for row in rows:
        peer, _ = row.best_peer()
        ratio = row.speedup()
        g = row.gflops()
        cells = [row.label] + [_ms(row.impls.get(i, {})) for i in IMPLS] + [
            "n/a" if ratio is None else f"{ratio:.2f}x ({peer})",
            _num(g, ".1f"),
            "n/a" if g is None else f"{100 * g / peak:.1f}%",
            _target_text(row.targets(peak))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell_step_table(row: Row) -> str:
    """The table of the LSTMCell row (run_cell_step)."""
    r = cell_step_report(row)
    c, t = r["us"]["c"], r["us"]["torch"]
    ratio = None if c is None or t is None else t / c
    cells = [r["row"]] + [_num(r["us"][n], ".2f") if r["us"][n] is not None
                          else row.impls[n].get("status", "n/a") for n in ("c", "torch")]
    cells += ["n/a" if ratio is None else f"{ratio:.2f}x",
              "n/a" if r["met"] is None else ("yes" if r["met"] else "no")]
    return "\n".join([
        "| row | fastrnn c (us) | torch (us) | c vs torch | target met? (<= 2 us) |",
        "|---|---:|---:|---:|:---|",
        "| " + " | ".join(cells) + " |"])


def float64_table(rows: Sequence[Row]) -> str:
    """The table of the float64 rows (run_float64)."""
    lines = ["| row | c float32 (ms) | c float64 (ms) | float64 / float32 | "
             "target met? (<= 2.2x) |", "|---|---:|---:|---:|:---|"]
    for row in rows:
        r = float64_report(row)
        note = "" if r["agreement"] == "ok" else f" (f64 vs f32: {r['agreement']})"
        lines.append(f"| {r['row']} | {1e3 * r['float32'][STAT]:.3f} | "
                     f"{1e3 * r['float64'][STAT]:.3f} | {r['ratio']:.2f}x | "
                     f"{'yes' if r['met'] else 'no'}{note} |")
    return "\n".join(lines)


def plot_speedups(rows: Sequence[Row], path: str) -> None:
    """Bars of fastrnn c's speed-up over each peer, per row, on a log scale with a
    line at 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("torch", "tab:red"), ("onnxruntime", "tab:blue")]
    labels = [r.label for r in rows]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(rows) + 2), 5.5))
    for k, (peer, colour) in enumerate(series):
        xs, ys = [], []
        for i, row in enumerate(rows):
            s = row.speedup(peer)
            if s is not None:
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                ys.append(s)
        if xs:
            ax.bar(xs, ys, width, color=colour, label=f"vs {peer}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=8)
    ax.set_ylabel("speed-up of fastrnn c (peer time / fastrnn time)")
    ax.set_title("fastrnn c against its peers (> 1: fastrnn faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ the run

def _progress_text(row: Row) -> str:
    times = ", ".join(f"{i} {_ms(e)}" for i, e in row.impls.items())
    probe = "" if row.probe_gflops is None else f" (probe {row.probe_gflops:.0f} GFLOP/s)"
    return f"{row.label}: {times} ms{probe}"


def _second_pass(rows: List[Row], rerun: Callable[[Row], Row], best_probe: float,
                 started: float, until: float) -> List[str]:
    """Re-run, worst probe first, the rows measured on a busy machine or unsteady, while
    less than `until` seconds have passed since `started`; pool the rounds in place.
    Returns the labels re-run."""
    done = []
    for i in sorted(range(len(rows)), key=lambda i: rows[i].probe_gflops or best_probe):
        if time.perf_counter() - started > until:
            break
        row = rows[i]
        if _unsteady(row) or _loaded(row, best_probe):
            rows[i] = merge_rows(row, rerun(row))
            done.append(f"{row.label}{' (float64 row)' if row.reference == 'float32' else ''}")
            _progress(f"[again {time.perf_counter() - started:.0f}s] {_progress_text(rows[i])}")
    return done


def _load_average() -> Optional[float]:
    """The 1-minute load average (how busy the neighbours were), None if unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "fastrnn": fastrnn.__version__}
    for m in ("scipy", "torch", "onnxruntime", "onnx"):
        mod = peers.optional_module(m)
        out[m] = getattr(mod, "__version__", "?") if mod is not None else "not installed"
    return out


def _grid(cells: Sequence[str], shapes: Sequence[str], explicit_cells: bool
          ) -> List[Spec]:
    specs = []
    for shape in shapes:
        for cell in cells:
            # bilstm is an S3 row by default; named in --cells it runs at every shape
            if cell == "bilstm" and not explicit_cells and shape != "S3":
                continue
            specs.append(Spec.make(cell, shape))
    return specs


def _csv(value: str, allowed: Optional[Sequence[str]], what: str) -> List[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{what}: unknown {bad}, expected some of "
                                             f"{list(allowed)}")
    return items


def _shapes_arg(value: str) -> List[str]:
    items = _csv(value, None, "--shapes")
    for s in items:
        try:
            parse_shape(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return items


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line's options (python -m fastrnn.bench --help)."""
    p = argparse.ArgumentParser(prog="python -m fastrnn.bench",
                                # the first line of fastrnn.bench's docstring
                                description=importlib.import_module(__package__)
                                .__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=_positive, default=DEFAULT_THREADS,
                   help="threads for BLAS, torch and ORT (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="S1 and S2 only, fewer rounds (about a minute on an idle machine)")
    p.add_argument("--cells", type=lambda v: _csv(v, CELLS, "--cells"), default=None,
                   help=f"comma-separated, of {','.join(CELLS)} (default: "
                        f"{','.join(DEFAULT_CELLS)}, plus bilstm at S3)")
    p.add_argument("--shapes", type=_shapes_arg, default=None,
                   help="comma-separated grid names S1..S5 or custom TxBxIxH "
                        "(default: all of S1..S5; --quick: S1,S2)")
    p.add_argument("--modes", type=lambda v: _csv(v, MODES, "--modes"), default=list(MODES),
                   help="comma-separated, of infer,train (default both)")
    p.add_argument("--rounds", type=_positive, default=None,
                   help="a fixed number of interleaved rounds per row (default: adaptive)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the LSTMCell step and the float64/float32 rows")
    p.add_argument("--peak-sizes", default=None,
                   type=lambda v: [_positive(n) for n in _csv(v, None, "--peak-sizes")],
                   help="square GEMM sizes of the peak measurement "
                        "(default 1024,2048,3072; --quick 1024,2048)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the raw numbers")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="draw fastrnn c's speed-ups over the peers (matplotlib)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the report; returns what --json writes."""
    args = parse_args(argv)
    started = time.perf_counter()
    shapes = args.shapes or (["S1", "S2"] if args.quick else list(SHAPES))
    specs = _grid(args.cells or (DEFAULT_CELLS + ("bilstm",)), shapes, args.cells is not None)
    budget = QUICK_ROW_BUDGET if args.quick else ROW_BUDGET
    max_rounds = QUICK_MAX_ROUNDS if args.quick else MAX_ROUNDS
    peak_sizes = args.peak_sizes or ([1024, 2048] if args.quick else [1024, 2048, 3072])
    peak_repeats = 2 if args.quick else 3
    missing = {p: peers.unavailable(p) for p in PEERS if peers.unavailable(p)}
    load_start = _load_average()

    rows: List[Row] = []
    f64_rows: List[Row] = []
    cell_rows: List[Row] = []
    with thread_limits(args.threads) as thread_info:
        _progress(f"fastrnn.bench: {len(specs) * len(args.modes)} rows, "
                  f"{args.threads} threads; measuring the GEMM peak")
        peak_start = measure_gemm_peak(peak_sizes, peak_repeats)
        fma_peak = measure_fma_peak(args.threads)
        for spec in specs:
            for mode in args.modes:
                row = run_row(spec, mode, args.threads, budget, args.rounds, max_rounds)
                rows.append(row)
                _progress(f"[{len(rows)}/{len(specs) * len(args.modes)} "
                          f"{time.perf_counter() - started:.0f}s] {_progress_text(row)}")
        if not args.no_extras:
            cell_rows.append(run_cell_step(args.rounds, max_rounds=max_rounds))
            _progress(f"[cell {time.perf_counter() - started:.0f}s] "
                      f"{_progress_text(cell_rows[-1])}")
            for spec in specs:
                if spec.shape_name in FLOAT64_SHAPES and spec.cell != "bilstm":
                    for mode in args.modes:
                        f64_rows.append(run_float64(spec, mode, budget / 2, args.rounds,
                                                    max_rounds))
                        _progress(f"[float64 {time.perf_counter() - started:.0f}s] "
                                  f"{_progress_text(f64_rows[-1])}")
        best_probe = max([r.probe_gflops for r in rows + f64_rows + cell_rows if r.probe]
                         or [0.0])
        second_pass: List[str] = []
        if args.rounds is None:
            until = QUICK_SECOND_PASS_UNTIL if args.quick else SECOND_PASS_UNTIL
            second_pass += _second_pass(
                rows, lambda r: run_row(r.spec, r.mode, args.threads, budget, None,
                                        max_rounds), best_probe, started, until)
            second_pass += _second_pass(
                f64_rows, lambda r: run_float64(r.spec, r.mode, budget / 2, None,
                                                max_rounds), best_probe, started, until)
            second_pass += _second_pass(
                cell_rows, lambda r: run_cell_step(None, max_rounds=max_rounds), best_probe,
                started, until)
        peak_end = measure_gemm_peak(peak_sizes, peak_repeats)
    load_end = _load_average()
    by_library = {k: max(peak_start["by_library"].get(k, 0), peak_end["by_library"].get(k, 0))
                  for k in peak_start["by_library"]}
    best_probe = max([r.probe_gflops for r in rows + f64_rows + cell_rows if r.probe]
                     or [0.0])
    by_library["scipy sgemm"] = max(by_library.get("scipy sgemm", 0.0), best_probe)
    peak = max(by_library.values())
    elapsed = time.perf_counter() - started

    # ---- print
    print(f"## fastrnn {fastrnn.__version__} against its peers\n")
    print(f"- machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, "
          f"{usable_cpus()} usable by this process; {args.threads} threads "
          f"({'; '.join(thread_info['pools'])})")
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    print(f"- GEMM peak (float32, best of square {','.join(map(str, peak_sizes))} at the start "
          f"and the end of the run and of the rows' {PROBE_N} probes): **{peak:.1f} GFLOP/s**; "
          "by library: "
          + ", ".join(f"{k} {v:.1f}" for k, v in by_library.items())
          + f" (start {peak_start['gflops']:.1f}, end {peak_end['gflops']:.1f})")
    print(f"- FMA peak (float32, fastrnn's {_kernels.isa()} FMA probe on "
          f"{args.threads} threads at once): {fma_peak:.1f} GFLOP/s; the GEMM peak is "
          f"{100 * peak / fma_peak:.0f}% of it")
    print(f"- time: ms per call, {STAT} over interleaved rounds of each round's fastest call; "
          "ratio = best peer time / fastrnn c time (> 1: fastrnn faster; infer: faster of "
          "torch and onnxruntime, train: torch); GFLOP/s counts GEMM work only")
    shapes_used = sorted({s.name for s in specs}, key=lambda n: (n not in SHAPES, n))
    print("- shapes (T, B, I, H): " + ", ".join(
        f"{n} = {parse_shape(n) if n in SHAPES else n}" for n in shapes_used))
    if missing:
        print("- missing peers (n/a): " + ", ".join(f"{k} ({v})" for k, v in missing.items()))
    if any(r.impls.get("numpy", {}).get("status") == "skipped" for r in rows):
        print("- fastrnn numpy is skipped at S4 and S5 (seconds per call)")
    problems = [(r.label, i, e["reason"]) for r in rows for i, e in r.impls.items()
                if e.get("status") in ("mismatch", "error")]
    for label, impl, reason in problems:
        print(f"- **{label}: {impl} {reason}**")
    if second_pass:
        print(f"- measured again later in the run, rounds pooled (busy machine or unsteady "
              f"the first time): {', '.join(second_pass)}")
    print(f"- run time {elapsed:.0f} s; load average (1 min) {_num(load_start, '.2f')} at "
          f"the start, {_num(load_end, '.2f')} at the end, this run's own threads included "
          f"({os.cpu_count()} CPUs)\n")
    print(markdown_table(rows, peak))
    loaded = [f"{r.label}{' float64 row' if r in f64_rows else ''} ({r.probe_gflops:.0f})"
              for r in rows + f64_rows + cell_rows if _loaded(r, best_probe)]
    if loaded:
        print(f"\nMeasured while the machine was busy (GEMM probe below "
              f"{LOADED_FRACTION:.0%} of its best, {best_probe:.0f} GFLOP/s; probe GFLOP/s in "
              "brackets; treat these rows with care): " + "; ".join(loaded))
    unstable = unstable_rows(rows + f64_rows + cell_rows)
    if unstable:
        print(f"\nUnsteady (median over rounds > {UNSTEADY:g}x the minimum; sensitive to the "
              "load of the machine or to thread scheduling): " + "; ".join(unstable))
    if cell_rows:
        print("\nSingle step from Python (inference; fastrnn.LSTMCell vs torch.nn.LSTMCell):\n")
        print(cell_step_table(cell_rows[0]))
    if f64_rows:
        print("\nfastrnn c, float64 against float32:\n")
        print(float64_table(f64_rows))
    all_targets = [t for r in rows for t in r.targets(peak)]
    met = sum(1 for t in all_targets if t["met"])
    known = sum(1 for t in all_targets if t["met"] is not None)
    extra = ([cell_step_report(r)["met"] for r in cell_rows]
             + [float64_ratio(r) <= FLOAT64_RATIO for r in f64_rows])
    extra_known = [m for m in extra if m is not None]
    print(f"\nTargets met: {met}/{known} in the main table, "
          f"{sum(extra_known)}/{len(extra_known)} in the extra rows.")

    report = {
        "meta": {"threads": args.threads, "thread_pools": thread_info["pools"],
                 "fma_peak_gflops": fma_peak,
                 "versions": _versions(), "machine": platform.machine(),
                 "cpu_model": cpu_model(), "cpus": os.cpu_count(),
                 "usable_cpus": usable_cpus(), "seconds": elapsed,
                 "timing": f"{STAT} over interleaved rounds of each round's fastest call",
                 "load_average": {"start": load_start, "end": load_end},
                 "gemm_peak_gflops": peak, "gemm_peak_by_library": by_library,
                 "gemm_peak_start": peak_start, "gemm_peak_end": peak_end,
                 "missing_peers": missing},
        "rows": [{"cell": r.spec.cell, "shape": r.spec.name,
                  "T": r.spec.T, "B": r.spec.B, "I": r.spec.I, "H": r.spec.H,
                  "mode": r.mode, "dtype": r.spec.dtype, "flops": r.flops,
                  "reference": r.reference, "impls": r.impls,
                  "best_peer": r.best_peer()[0], "speedup": r.speedup(),
                  "gflops": r.gflops(), "probe": r.probe, "probe_gflops": r.probe_gflops,
                  "pct_peak": None if r.gflops() is None else 100 * r.gflops() / peak,
                  "targets": r.targets(peak)} for r in rows],
        "cell_step": cell_step_report(cell_rows[0]) if cell_rows else None,
        "float64": [float64_report(r) for r in f64_rows],
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    if args.plot:
        try:
            plot_speedups(rows, args.plot)
        except ImportError as e:
            _progress(f"--plot: matplotlib not available ({e}); no plot written")
    return report
