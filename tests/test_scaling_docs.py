"""The README says which to use when, threads, Dask or MPI, with commands that work.

Its section names the three, the calls of each, and commands whose scripts
exist and whose extras pyproject.toml defines (tests/test_dask.py and
tests/test_mpi.py run those scripts, in quick mode, as the commands do);
docs/scaling.rst is in the user guide and its functions in the API
reference. Skipped where the checkout is not beside the tests (a copy of
tests/ run against a wheel).
"""
from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TITLE = "Threads, Dask or MPI: which to use when"
FUNCTIONS = {"dask": ["map_batches"], "mpi": ["broadcast_parameters", "allreduce_gradients"]}


def read(*path: str) -> str:
    name = os.path.join(ROOT, *path)
    if not os.path.exists(name):
        pytest.skip(f"{os.path.join(*path)} is not beside the tests (not a checkout)")
    with open(name, encoding="utf-8") as f:
        return f.read()


def readme_section() -> str:
    text = read("README.md")
    assert f"\n## {TITLE}\n" in text, f"README.md: no section {TITLE!r}"
    return text.split(f"\n## {TITLE}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_says_which_to_use_when():
    section = readme_section()
    for said in ("One machine: threads", "fastrnn.set_num_threads(n)",
                 "Inference over more data than a machine holds: Dask",
                 "fastrnn.dask.map_batches(model, x, lengths)",
                 "Training across processes or machines: MPI",
                 "fastrnn.mpi.broadcast_parameters(model)",
                 "fastrnn.mpi.allreduce_gradients(model, weight=len(rows))",
                 "docs/scaling.rst"):
        assert said in section, f"README.md, {TITLE!r}: {said!r} is not said"


def test_readme_commands_name_scripts_and_extras_that_exist():
    block = readme_section().split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    extras = re.findall(r"^(\w+) = \[", read("pyproject.toml").split(
        "[project.optional-dependencies]", 1)[1].split("\n[", 1)[0], re.MULTILINE)
    launched = set()
    for command in commands:
        match = re.fullmatch(r'(?:pip install "\.\[(\w+)\]" && )?(mpiexec -n 2 )?'
                             r'python (examples/\w+\.py)', command)
        assert match, f"README.md: a command of another form: {command!r}"
        extra, mpiexec, script = match.groups()
        assert extra is None or extra in extras, f"{command!r}: no extra {extra!r}"
        assert os.path.exists(os.path.join(ROOT, script)), f"{command!r}: no {script}"
        launched.add((script, bool(mpiexec)))
    assert {("examples/score_dask.py", False), ("examples/train_mpi.py", True)} <= launched


def test_scaling_page_in_the_guide_and_its_functions_in_the_reference():
    page = read("docs", "scaling.rst")
    assert re.search(r"^   scaling$", read("docs", "index.rst"), re.MULTILINE), \
        "docs/index.rst: scaling is not in a toctree"
    api = read("docs", "api.rst")
    for module, names in FUNCTIONS.items():
        source = read("src", "fastrnn", f"{module}.py")
        for name in names:
            assert f"\ndef {name}(" in source, f"fastrnn.{module}: no function {name}"
            assert f".. autofunction:: fastrnn.{module}.{name}" in api, name
            assert f":func:`fastrnn.{module}.{name}`" in page, name
