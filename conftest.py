"""pytest's set-up for the whole checkout (and the sdist): how the benchmarks run.

    pytest                        the tests, and the benchmarks in bench/ once each as
                                  plain tests (their results checked, not timed)
    pytest --benchmark            the benchmarks timed, bench/ only, and one compact
                                  table per cell at the end (about 6 minutes on 2 idle
                                  cores; far longer on a busy machine)
    pytest --benchmark-quick      the same on a subset (S1 and S2, fewer rounds; about
                                  a minute)

pytest-benchmark's own switches (--benchmark-only, --benchmark-enable, --benchmark-json,
...) work as they document; --benchmark also prints pytest-benchmark's tables only
when asked for with --benchmark-verbose. Without pytest-benchmark installed the tests
run and the benchmarks skip, saying why.

The package lives in src/ and this directory holds no importable fastrnn, so the tests
import the installed one: `pip install .` first (the header names the fastrnn in use).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("fastrnn benchmarks")
    group.addoption("--benchmark", action="store_true", default=False,
                    help="time the benchmarks in bench/ (the tests are not collected) and "
                         "print one table per cell (about 6 minutes on 2 idle cores)")
    group.addoption("--benchmark-quick", action="store_true", default=False,
                    help="--benchmark on a subset: S1 and S2, fewer rounds (about a minute)")


def _have_pytest_benchmark(config) -> bool:
    return config.pluginmanager.hasplugin("benchmark")


@pytest.hookimpl(tryfirst=True)   # before pytest-benchmark reads its options
def pytest_configure(config) -> None:
    timing = config.getoption("benchmark") or config.getoption("benchmark_quick")
    if timing:
        if not _have_pytest_benchmark(config):
            raise pytest.UsageError("--benchmark needs pytest-benchmark: "
                                    "pip install pytest-benchmark (or \".[test]\")")
        config.option.benchmark = True
        if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
            # no paths given: bench/ alone, not testpaths' tests/ (a path that was
            # given is collected, but the tests in it skip)
            tests = config.rootpath / "tests"
            config.args[:] = [a for a in config.args if Path(a).resolve() != tests]
        config.option.benchmark_only = True
        config.option.benchmark_enable = True
        config.option.benchmark_disable = False
        # fastrnn's tables replace pytest-benchmark's (one 240-character table per group)
        if not config.getoption("benchmark_verbose"):
            config.option.benchmark_quiet = True
        if config.getoption("benchmark_quick"):
            config.option.benchmark_max_time = "0.25"
    elif _have_pytest_benchmark(config) and not (config.getoption("benchmark_enable")
                                                 or config.getoption("benchmark_only")):
        # plain `pytest`: each benchmark runs once, as a test
        config.option.benchmark_disable = True


def pytest_report_header(config):
    try:
        import fastrnn
        from fastrnn import _kernels
    except ImportError as e:
        return f"fastrnn: cannot be imported ({e})"
    return (f"fastrnn {fastrnn.__version__} from {os.path.dirname(fastrnn.__file__)}, "
            f"kernels {_kernels.isa()}")
