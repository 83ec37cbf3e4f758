"""fastrnn against its peers: PyTorch and ONNX Runtime on one grid, in one process.

    python -m fastrnn.bench                       # the full grid, 2 threads (5-9 minutes)
    python -m fastrnn.bench --quick               # S1 and S2, fewer rounds (about a minute)
    python -m fastrnn.bench --cells lstm,gru --shapes S2,S3 --modes infer
    python -m fastrnn.bench --shapes 20x4x32x32 --rounds 3    # a custom shape T x B x I x H
    python -m fastrnn.bench --threads 1 --json out.json --plot speedups.png

Prints Markdown: one row per (cell, shape, mode) with the milliseconds per call of
every implementation, fastrnn "c"'s speed-up over the best peer, its GFLOP/s and
percent of the machine's GEMM peak, and whether the row meets its targets; then a
single LSTMCell step from Python and the float64/float32 time ratio. Nothing is
asserted: the targets are reported.

The parts, each described in its module's docstring, each using only those above it:

    grid      the cells, shapes and modes of the rows (Spec) and their GEMM FLOPs
    peers     the implementations, adapters with one interface (Impl) built from the
              same weights: fastrnn "c" and "numpy" and its peers torch and
              onnxruntime; the agreement check before timing (TOLERANCE, compare),
              which bench/conftest.py uses too
    timing    thread limits, interleaved rounds, the GEMM and FMA peaks, the GEMM probe
    rows      one row built, checked and timed (Row, run_row), its targets, the extra
              rows (LSTMCell step, float64), the second pass over busy rows
    report    the tables, the plot, the JSON and the command line (main)
    summary   the compact tables of `pytest --benchmark` (bench/conftest.py)

The pytest-benchmark tests in the repository's bench/ directory time the same
adapters in pytest-benchmark groups; this package is the one-process report.
"""
from fastrnn.bench.grid import (CELLS, DEFAULT_CELLS, DEFAULT_THREADS, MODES, SHAPES, Spec,
                                flops, grid_name, parse_shape)
from fastrnn.bench.peers import (IMPLS, PEERS, TOLERANCE, Impl, Problem, Result, compare,
                                 make_impl, make_problem, supports, unavailable)
from fastrnn.bench.timing import interleaved, measure_gemm_peak, thread_limits
from fastrnn.bench.rows import (Row, cell_step_report, float64_ratio, float64_report,
                                merge_rows, run_cell_step, run_float64, run_row)
from fastrnn.bench.report import (cell_step_table, float64_table, main, markdown_table,
                                  parse_args, plot_speedups)

__all__ = ["CELLS", "DEFAULT_CELLS", "DEFAULT_THREADS", "MODES", "SHAPES", "Spec", "flops",
           "parse_shape", "grid_name", "IMPLS", "PEERS", "TOLERANCE", "Impl", "Problem", "Result",
           "compare", "make_impl", "make_problem", "supports", "unavailable", "interleaved",
           "measure_gemm_peak", "thread_limits", "Row", "cell_step_report", "float64_ratio",
           "float64_report", "merge_rows", "run_cell_step", "run_float64", "run_row",
           "cell_step_table", "float64_table", "main", "markdown_table", "parse_args",
           "plot_speedups"]
