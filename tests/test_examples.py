"""Every script in examples/ runs in --quick mode and beats its baseline.

Each runs in a child process, as a user runs it but through its main(argv)
so that the test gets its metrics, with its seed fixed; it writes its plot
and must beat its baseline by the margin stated in the test. (A child
process: the examples load data sets and pandas, whose freed memory would
otherwise stay in the test process and blind tests/test_leaks.py.) The data
ship inside packages of the examples extra (scikit-learn, statsmodels,
sktime; pydoc_data is part of Python): a test skips, naming the package,
when it is absent.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import fastrnn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# the child: import the example from examples/, run its main, print its metrics
CHILD = "import json, sys; sys.path.insert(0, sys.argv[1]); import {0}; print(json.dumps({0}.main(sys.argv[2:])))"


def needs(*packages):
    for package in ("tqdm", "matplotlib") + packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (the examples extra: "
                        f"pip install '.[examples]')")


def run(name, tmp_path, *args):
    """examples/<name>.py --quick --plot <tmp>.png *args: its returned metrics."""
    plot = tmp_path / f"{name}.png"
    # the child imports the fastrnn under test, wherever this process found it
    path = [os.path.dirname(os.path.dirname(fastrnn.__file__)), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    child = subprocess.run([sys.executable, "-c", CHILD.format(name), EXAMPLES, "--quick",
                            "--plot", str(plot), *args],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    print(child.stdout)
    assert plot.stat().st_size > 10_000
    return json.loads(child.stdout.splitlines()[-1])


def test_classify_digits(tmp_path):
    needs("sklearn")
    r = run("classify", tmp_path, "--data", "digits")
    assert r["accuracy"] >= 0.90 > r["majority"] + 0.5


def test_classify_gunpoint(tmp_path):
    needs("sktime")
    r = run("classify", tmp_path, "--data", "gunpoint")
    # above 1-nearest-neighbour (the UCR archive's reference, 91.3%) by 2 points
    assert r["accuracy"] >= r["nearest_neighbour"] + 0.02


def test_forecast(tmp_path):
    needs("statsmodels")
    r = run("forecast", tmp_path)
    assert r["rmse"] < 0.8 * r["naive"]


def test_char_model(tmp_path):
    needs()
    r = run("char_model", tmp_path)
    assert r["bits_per_char"] < r["bigram"] - 0.3 < r["unigram"] - 1.5


def test_draw_digits(tmp_path):
    needs("sklearn")
    r = run("draw_digits", tmp_path)
    assert r["rmse"] < 0.9 * r["average_digit"]
    assert r["recognised"] >= 9
