"""How fastrnn is installed and run: the tests and the demo import the installed
package, and building it wrote nothing into the sources.

The package lives in src/ (src layout), so the directory these tests run from (a
checkout, an unpacked sdist, or a copy of tests/ beside a wheel) holds no
importable fastrnn, and the README's commands, run there, use what pip installed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fastrnn

ROOT = Path(__file__).resolve().parents[1]        # the checkout (or sdist) root
SOURCES = ROOT / "src" / "fastrnn"
PACKAGE = Path(fastrnn.__file__).resolve().parent  # the fastrnn under test


def test_sources_hold_no_build_output():
    """A build leaves src/fastrnn/ as it is: no extension copied in, no Cython
    output (an in-place development build, `pip install -e .`, is imported from
    there and exempt)."""
    if not SOURCES.is_dir() or PACKAGE == SOURCES.resolve():
        return
    outputs = sorted(p.name for p in SOURCES.iterdir()
                     if p.suffix in (".so", ".pyd") or p.name == "_kernels.c")
    assert not outputs, f"build outputs in the sources {SOURCES}: {outputs}"


def test_demo_runs_from_the_root():
    """`python -m fastrnn` from the root (the README's first command) imports the
    fastrnn these tests import, not the sources beside it."""
    done = subprocess.run(
        [sys.executable, "-c", "import runpy, fastrnn; print(fastrnn.__file__); "
         "import sys; sys.argv = ['fastrnn', '--steps', '2', '--no-timing']; "
         "runpy.run_module('fastrnn', run_name='__main__')"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = Path(done.stdout.splitlines()[0]).resolve().parent
    assert imported == PACKAGE, f"from {ROOT}: imported {imported}, the tests use {PACKAGE}"
    assert "Mean squared error" in done.stdout


def test_one_version():
    """fastrnn.__version__ is the installed distribution's version (the wheel's
    metadata), and CHANGELOG.md's first section, where it is beside the tests."""
    from importlib.metadata import version
    assert fastrnn.__version__ == version("fastrnn")
    changelog = ROOT / "CHANGELOG.md"
    if not changelog.is_file():
        return
    first = next(line for line in changelog.read_text().splitlines() if line.startswith("## "))
    assert first.split()[1] == fastrnn.__version__, \
        f"CHANGELOG.md starts with {first!r}, fastrnn is {fastrnn.__version__}"
