"""fastrnn.bench (python -m fastrnn.bench): the adapters agree, the FLOP formula is right,
the report prints its table (also without peers), and a wrong ONNX conversion is caught.

Everything runs on tiny shapes with one round; peers through pytest.importorskip."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fastrnn import bench as fb
from fastrnn.kinds import NUM_GATES

TINY = "6x3x5x7"            # T x B x I x H
CELLS = ("rnn_tanh", "lstm", "gru", "bilstm")
# the table's columns, written out here so that a renamed column fails this test
COLUMNS = ["row", "fastrnn c (ms)", "fastrnn numpy (ms)", "torch (ms)", "onnxruntime (ms)",
           "c vs best peer", "GFLOP/s (c)", "% GEMM peak", "target met?"]


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    """The report sleeps 150 ms before each timed block (fairness between thread pools);
    these tests check what it computes and prints, not the timings, so they skip it."""
    monkeypatch.setattr(fb.timing, "PAUSE", 0.0)


def _need(impl: str) -> None:
    if impl == "torch":
        pytest.importorskip("torch")
    if impl == "onnxruntime":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("impl,mode", [(impl, mode) for impl in fb.IMPLS for mode in fb.MODES
                                       if fb.supports(impl, mode)])  # onnxruntime: infer only
@pytest.mark.parametrize("cell", CELLS)
def test_adapters_agree(cell, mode, impl):
    """Every adapter, built from the problem's weights, agrees with fastrnn's NumPy
    reference tensor by tensor (output; after training dx and every gradient)."""
    _need(impl)
    problem = fb.make_problem(fb.Spec.make(cell, TINY))
    adapter = fb.make_impl(impl, problem, threads=1)
    adapter.step(mode)()
    got = adapter.result(mode)
    reference = fb.make_impl("numpy", problem, threads=1)
    reference.step(mode)()
    expected = reference.result(mode)
    spec = problem.spec
    assert got["output"].shape == (spec.T, spec.B, spec.D * spec.H)
    if mode == "train":
        assert got["dx"].shape == (spec.T, spec.B, spec.I)
        assert len([k for k in got if k.startswith("grads[")]) == 4 * spec.D
    assert fb.compare(got, expected) is None, fb.compare(got, expected)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_wrong_onnx_gate_order_is_caught(cell):
    """The check before timing can fail: an ONNX model whose gates are out of order
    (the gate blocks of its weights reversed) disagrees with fastrnn c."""
    _need("onnxruntime")
    problem = fb.make_problem(fb.Spec.make(cell, TINY))
    G = NUM_GATES[cell]
    wrong = dataclasses.replace(problem, weights={
        name: w.reshape((G, -1) + w.shape[1:])[::-1].reshape(w.shape)
        for name, w in problem.weights.items()})
    ort = fb.make_impl("onnxruntime", wrong, threads=1)
    ort.infer()
    c = fb.make_impl("c", problem, threads=1)
    c.infer()
    assert fb.compare(ort.result("infer"), c.result("infer")) is not None


def test_compare_reports_names_and_errors():
    a = {"output": np.zeros((2, 3), np.float32)}
    assert fb.compare(a, {"output": np.zeros((2, 3))}) is None
    assert "output" in fb.compare({"output": np.full((2, 3), 1e-2, np.float32)}, a)
    assert "shape" in fb.compare({"output": np.zeros((3, 2), np.float32)}, a)
    assert "non-finite" in fb.compare({"output": np.full((2, 3), np.nan, np.float32)}, a)
    assert "tensors" in fb.compare({**a, "dx": a["output"]}, a)


def test_flops_hand_computed():
    # LSTM at S1 (T=100, B=1, I=H=64, G*H=256), GEMMs as 2*M*N*K:
    projection = 2 * (100 * 1) * 64 * 256          # X W_ih^T: (T*B x I) by (I x G*H)
    recurrent = 100 * (2 * 1 * 64 * 256)            # h W_hh^T each step: (B x H) by (H x G*H)
    assert fb.flops(fb.Spec.make("lstm", "S1"), "infer") == projection + recurrent == 6_553_600
    backward = (100 * (2 * 1 * 256 * 64)            # dh_{t-1} = dP_t W_hh each step
                + 2 * 256 * (100 * 1) * 64          # dW_ih += dP^T X
                + 2 * 256 * (100 * 1) * 64          # dW_hh += dP^T H_prev
                + 2 * (100 * 1) * 256 * 64)         # dX = dP W_ih
    assert fb.flops(fb.Spec.make("lstm", "S1"), "train") == 6_553_600 + backward == 19_660_800
    # GRU at S2: 2*50*16*384*(128+128); the bidirectional LSTM counts both directions
    assert fb.flops(fb.Spec.make("gru", "S2"), "infer") == 157_286_400
    assert fb.flops(fb.Spec.make("bilstm", "S3"), "infer") == \
        2 * fb.flops(fb.Spec.make("lstm", "S3"), "infer") == 13_421_772_800


def test_shapes_parse():
    assert fb.parse_shape("S5") == (25, 128, 1024, 1024)
    assert fb.parse_shape("6x3x5x7") == (6, 3, 5, 7)
    spec = fb.Spec.make("lstm", "S1")
    assert (spec.label, spec.name) == ("T100_B1_I64_H64", "S1")
    for bad in ("S9", "1x2x3", "0x1x1x1", "ax1x1x1"):
        with pytest.raises(ValueError, match="shape"):
            fb.parse_shape(bad)


def test_interleaved_rounds():
    calls = {"a": 0, "b": 0}

    def fn(name):
        def run():
            calls[name] += 1
        return run
    timed = fb.interleaved({"a": fn("a"), "b": fn("b")}, budget=0.0, rounds=4)
    for name in "ab":
        stats = timed[name]
        assert len(stats["rounds"]) == 4
        assert 0 <= stats["min"] <= stats["median"]
        # estimate + 4 blocks of (warm-up + calls)
        assert calls[name] == 1 + 4 * (stats["warmup"] + stats["calls"])


def _table_lines(out: str):
    return [line for line in out.splitlines() if line.startswith("| ")]


def _cells(line: str):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_prints_the_table(capsys, tmp_path):
    path = tmp_path / "report.json"
    report = fb.main(["--cells", "lstm,gru", "--shapes", "4x2x3x5", "--rounds", "1",
                      "--no-extras", "--peak-sizes", "64", "--threads", "1",
                      "--json", str(path)])
    out = capsys.readouterr().out
    lines = _table_lines(out)
    assert _cells(lines[0]) == COLUMNS
    rows = {(_cells(line)[0]): _cells(line) for line in lines[1:]}
    assert sorted(rows) == sorted(f"{c} T4_B2_I3_H5 {m}" for c in ("lstm", "gru")
                                  for m in ("infer", "train"))
    saved = json.loads(path.read_text())
    by_label = {f"{r['cell']} {r['shape']} {r['mode']}": r for r in saved["rows"]}
    for label, cells in rows.items():
        c_ms, numpy_ms = float(cells[1]), float(cells[2])
        assert c_ms > 0 and numpy_ms > 0
        if label.endswith("train"):
            assert cells[4] == "n/a"             # onnxruntime: inference only
        # from the JSON: these tiny rows print "0.0" GFLOP/s when the machine is busy
        gflops = by_label[label]["gflops"]
        assert gflops > 0 and cells[6] == f"{gflops:.1f}" and cells[7].endswith("%")
    assert "GEMM peak" in out and "Targets met" in out
    assert len(saved["rows"]) == len(report["rows"]) == 4
    row = saved["rows"][0]
    assert row["flops"] == fb.flops(fb.Spec.make(row["cell"], "4x2x3x5"), row["mode"])
    assert row["impls"]["c"]["status"] == "ok" and len(row["impls"]["c"]["rounds"]) == 1
    assert saved["meta"]["gemm_peak_gflops"] > 0
    assert saved["meta"]["fma_peak_gflops"] > 0 and "FMA peak" in out


def test_fma_probe_counts_its_work():
    from fastrnn import _kernels
    lanes = {"baseline": 4, "avx2": 8, "avx512": 16}   # float32 lanes of each variant
    try:
        for isa in _kernels.available_isas():
            _kernels.set_isa(isa)
            assert _kernels.fma_probe(1000) == 1000 * 12 * lanes[isa] * 2
            assert _kernels.fma_probe(0) == 0
    finally:
        _kernels.set_isa(None)
    with pytest.raises(ValueError, match="iterations"):
        _kernels.fma_probe(-1)
    # the report's measurement: the probe on two threads at once
    assert fb.timing.measure_fma_peak(2, seconds=0.02, repeats=2) > 0


def test_report_without_peers_shows_na(capsys, monkeypatch):
    """Missing peers give "n/a" columns, never a crash."""
    # every part of the report asks fastrnn.bench.peers.unavailable
    monkeypatch.setattr(fb.peers, "unavailable",
                        lambda impl: "not installed: test" if impl in fb.PEERS else None)
    fb.main(["--cells", "rnn_tanh", "--shapes", "3x2x2x3", "--modes", "infer", "--rounds", "1",
             "--no-extras", "--peak-sizes", "32", "--threads", "1"])
    out = capsys.readouterr().out
    cells = _cells(_table_lines(out)[1])
    assert cells[0] == "rnn_tanh T3_B2_I2_H3 infer"
    assert cells[3:6] == ["n/a", "n/a", "n/a"]    # torch, onnxruntime, ratio
    assert cells[8] == "n/a"                      # no peer: no target to judge
    assert "missing peers" in out


def test_numpy_skipped_at_the_big_shapes():
    row = fb.Row(fb.Spec.make("lstm", "S5"), "infer", 1,
                 {"c": {"status": "ok", "min": 1.0, "median": 1.0},
                  "numpy": {"status": "skipped"}, "torch": {"status": "ok", "min": 2.0},
                  "onnxruntime": {"status": "ok", "min": 0.5}})
    line = fb.markdown_table([row], peak=1.0).splitlines()[2]
    assert "skipped" in line and "0.50x (onnxruntime)" in line
    assert [t["name"] for t in row.targets(1.0)] == ["faster than best peer",
                                                     ">= 90% of GEMM peak"]


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    row = fb.Row(fb.Spec.make("gru", "S2"), "train", 10,
                 {"c": {"status": "ok", "min": 1.0}, "numpy": {"status": "ok", "min": 9.0},
                  "torch": {"status": "ok", "min": 2.0}, "onnxruntime": {"status": "n/a"}})
    path = tmp_path / "speedups.png"
    fb.plot_speedups([row], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_extra_rows():
    step = fb.run_cell_step(rounds=1, calls=5)
    report = fb.cell_step_report(step)
    assert report["us"]["c"] > 0 and report["met"] in (True, False)
    assert fb.cell_step_table(step).splitlines()[2].startswith("| LSTMCell B=1 I=64 H=64 infer")
    row = fb.run_float64(fb.Spec.make("lstm", TINY), "train", budget=0.0, rounds=1)
    report = fb.float64_report(row)
    assert report["ratio"] == fb.float64_ratio(row) > 0
    assert report["agreement"] == "ok" and row.probe_gflops > 0
    assert "| lstm T6_B3_I5_H7 train |" in fb.float64_table([row])


def test_second_pass_pools_rounds():
    spec = fb.Spec.make("lstm", "S1")
    first = fb.Row(spec, "infer", 1, {"c": {"status": "ok", "min": 1.0, "median": 5.0,
                                            "rounds": [1.0, 5.0, 9.0]},
                                      "torch": {"status": "n/a"}})
    second = fb.Row(spec, "infer", 1, {"c": {"status": "ok", "min": 0.5, "median": 0.6,
                                             "rounds": [0.5, 0.6, 0.7]},
                                       "torch": {"status": "n/a"}})
    assert fb.rows._unsteady(first) and not fb.rows._unsteady(second)
    merged = fb.merge_rows(first, second)
    assert merged.impls["c"]["rounds"] == [1.0, 5.0, 9.0, 0.5, 0.6, 0.7]
    assert (merged.impls["c"]["min"], merged.impls["c"]["median"]) == (0.5, 0.85)
    assert merged.impls["torch"] == {"status": "n/a"}


# ------------------------------------------------- pytest --benchmark's tables

def test_summary_table():
    """One compact table: ms everywhere, median ± half the IQR, the ratios of medians
    against numpy and the fastest peer, columns no row has left out."""
    from fastrnn.bench.summary import CELL, format_tables, median_spread
    rows = {"S1 infer": {"c": [1e-4, 1.1e-4, 1.2e-4, 1.3e-4, 1.4e-4],
                         "numpy": [2e-3] * 5, "onnxruntime": [5e-5] * 3, "torch": [3e-4] * 3},
            "S1 train": {"c": [4e-3] * 3, "numpy": [0.1] * 3, "torch": [8e-3] * 3}}
    # quartiles 1.1e-4 and 1.3e-4: half the IQR is 0.1e-4, 8% of the median
    assert median_spread(rows["S1 infer"]["c"]) == pytest.approx((1.2e-4, 0.1 / 1.2))
    lines = format_tables({"lstm": (CELL, rows), "gru": (CELL, {"S2 infer": {"c": [1.0]}})})
    assert lines[0] == "lstm"
    assert lines[1].split() == ["c", "numpy", "torch", "onnxruntime", "numpy/c", "best", "peer/c"]
    infer = lines[2].split()
    assert infer[:3] == ["S1", "infer", "0.120"] and infer[4] == "2.000"
    assert infer[-3:] == ["0.42x", "±8%", "ort"]             # 0.05 ms / 0.12 ms
    train = lines[3].split()
    assert train[-3:] == ["2.00x", "±0%", "torch"] and "-" in train   # no onnxruntime in training
    assert "25.00x" in lines[3]                               # numpy/c
    assert lines[4] == "" and lines[5] == "gru"
    assert lines[6].split() == ["c", "numpy/c", "best", "peer/c"]   # the columns it has
    assert lines[7].split() == ["S2", "infer", "1000", "±0%", "-", "-"]
    assert max(len(line) for line in lines) < 100


def test_pytest_benchmark_option(tmp_path):
    """`pytest --benchmark-quick` (the root conftest.py) times the benchmarks and ends
    with fastrnn's table instead of pytest-benchmark's wide ones."""
    import pathlib
    import subprocess
    import sys
    pytest.importorskip("pytest_benchmark")
    root = pathlib.Path(__file__).resolve().parents[1]
    if not (root / "bench" / "test_bench_denormals.py").is_file():
        pytest.skip("bench/ is not beside the tests")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--benchmark-quick", "-p", "no:cacheprovider",
         "-k", "inference", "bench/test_bench_denormals.py"],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = done.stdout
    assert "fastrnn benchmarks" in out and "decaying/normal" in out, out[-3000:]
    assert "inference" in out.split("decaying/normal", 1)[1]
    assert "Name (time in" not in out              # pytest-benchmark's own table
    assert "2 benchmarks in" in out
