"""A bounded fuzz smoke run: no call sequence may crash the process.

tools/fuzz_smoke.py generates short random call sequences on the C backend
(construct; forward, backward, load_state_dict, save/load, set_num_threads,
eval/train) with valid and invalid arguments and runs them in child
processes, so that a segfault or an abort fails this test instead of killing
pytest; the script names the case and the command that reruns it. Its cases
are a function of the seed, so every run sees the same ones.

Two negative controls show that the runner does see a child killed by a
signal and a child that raised an exception other than ValueError, TypeError
or MemoryError.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastrnn

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "fuzz_smoke.py"
# under the sanitizer build (.ci/sanitize) ASan reserves terabytes of address
# space: no address-space limit for the children there
ASAN = "asan" in os.environ.get("LD_PRELOAD", "")
MEMORY = ["--memory-mb", "0"] if ASAN else []


# the children run the fastrnn these tests imported (the installed one under
# plain `pytest`, the checkout's under `python -m pytest`)
PATH = ["--path", str(Path(fastrnn.__file__).resolve().parent.parent)]


def fuzz(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *PATH, *MEMORY, *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def summary(done: subprocess.CompletedProcess) -> str:
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"(no output; stderr: {done.stderr[-2000:]})"


def test_fuzz_smoke_run_never_crashes():
    """300 cases (about 10-20 s on 2 cores); no new child after 40 s, and at
    least the first 100 cases must have run."""
    done = fuzz("--seed", "0", "--cases", "300", "--per-child", "50", "--jobs", "2",
                "--budget", "40", "--timeout", "60", "--min-cases", "100", timeout=180)
    assert done.returncode == 0, f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert summary(done).startswith("fuzz smoke: seed 0, "), summary(done)
    assert " 0 failed" in summary(done), summary(done)


@pytest.mark.parametrize("how", [
    "abort",
    # ASan turns a segfault into a report (a failure of .ci/sanitize) and an abort
    pytest.param("segfault", marks=pytest.mark.skipif(ASAN, reason="under ASan"))])
def test_fuzz_runner_reports_a_crashed_child(how):
    done = fuzz("--cases", "4", "--per-child", "2", "--fail-at", "2", how, timeout=120)
    signal = {"abort": "SIGABRT", "segfault": "SIGSEGV"}[how]
    assert done.returncode == 1, done.stdout
    assert f"FAIL case 2: child of cases 2..3 killed by {signal}" in done.stdout, done.stdout
    assert "--case 2" in done.stdout and "1 failed (cases [2])" in summary(done), done.stdout


def test_fuzz_runner_reports_an_exception_not_allowed():
    done = fuzz("--cases", "2", "--per-child", "2", "--fail-at", "1", "raise", timeout=120)
    assert done.returncode == 1, done.stdout
    assert "FAIL case 1: child of cases 0..1 exit status 1" in done.stdout, done.stdout
    assert "RuntimeError: a deliberate failure" in done.stdout, done.stdout


# ------------------------------------------------------- bugs the fuzz found

@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
@pytest.mark.parametrize("value", [None, [("weight_ih", 1)]], ids=["None", "list"])
def test_cell_load_state_dict_of_a_non_mapping(cls, value):
    cell = cls(3, 4, seed=0)
    with pytest.raises(TypeError, match="state_dict"):
        cell.load_state_dict(value)
