"""python -m fastrnn, the main job: trains, beats naive predictors, times both backends."""
from __future__ import annotations

import pytest

from fastrnn import __main__ as demo


def test_demo_learns(capsys):
    results = demo.main(["--steps", "60", "--no-timing"])
    mse = results["mse"]
    model = mse["LSTM + Linear"]
    assert model == model and model > 0                      # finite, positive
    assert model < mse["last value (y[t] = x[t])"]
    assert model < mse["zero (the waves' mean)"]
    out = capsys.readouterr().out
    assert "step" in out and "Mean squared error" in out


def test_demo_times_both_backends():
    rows = demo.time_backends([(5, 2, 3, 4)])
    assert [r["mode"] for r in rows] == ["inference", "training"]
    for row in rows:
        assert row["c"] > 0 and row["numpy"] > 0
        assert row["speedup"] == pytest.approx(row["numpy"] / row["c"])


def test_demo_rejects_bad_steps():
    with pytest.raises(SystemExit) as e:
        demo.main(["--steps", "0"])
    assert e.value.code == 2
