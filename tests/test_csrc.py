"""csrc/ builds and runs as plain C99 (no Python): tests/c/test_csrc.c checks the
vectorizable float and double activations against libm and runs every cell kind
through the C API with the naive GEMM, under the address and undefined-behaviour
sanitizers when the compiler has them."""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CC = shutil.which("cc") or shutil.which("gcc")


def _build(tmp_path: pathlib.Path, extra: list) -> pathlib.Path:
    exe = tmp_path / "test_csrc"
    sources = [ROOT / "tests" / "c" / "test_csrc.c"] + sorted((ROOT / "csrc").glob("*.c"))
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror",
           "-fno-trapping-math", f"-I{ROOT / 'csrc'}", *map(str, sources), "-o", str(exe),
           *extra, "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


@pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
def test_csrc_in_plain_c(tmp_path):
    if not (ROOT / "csrc").is_dir():
        pytest.skip("csrc/ is not beside the tests (installed package)")
    try:
        exe = _build(tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    except subprocess.CalledProcessError:
        exe = _build(tmp_path, [])   # a compiler without sanitizer runtimes
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout, result.stdout


@pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
def test_thread_pool_under_thread_sanitizer(tmp_path):
    """The pool, the teams and their barrier (csrc/common.c) under ThreadSanitizer:
    no data race, no member past a barrier early, no slice lost."""
    if not (ROOT / "csrc").is_dir():
        pytest.skip("csrc/ is not beside the tests (installed package)")
    exe = tmp_path / "test_threads"
    cmd = [CC, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
           "-fsanitize=thread", f"-I{ROOT / 'csrc'}", str(ROOT / "tests" / "c" / "test_threads.c"),
           str(ROOT / "csrc" / "common.c"), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode != 0 and "tsan" in built.stderr.lower():
        pytest.skip("the compiler has no ThreadSanitizer runtime")
    assert built.returncode == 0, built.stderr
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 early reads" in result.stdout and "WARNING" not in result.stderr, \
        result.stdout + result.stderr
