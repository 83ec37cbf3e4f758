"""A comparison shared by test modules whose helper functions (not only their
tests) compare arrays with explicit tolerances, so a fixture does not reach
them (test_golden.py, test_torch.py). Imported as a plain module: pytest puts
tests/ on sys.path for the modules in it."""
from __future__ import annotations

import numpy as np


def assert_close(name, got, expected, tol):
    """got ~ expected by np.allclose(**tol); the message names the tensor and
    the max abs error."""
    assert got is not None, f"{name}: got None"
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    err = np.max(np.abs(got - expected), initial=0.0)
    assert np.allclose(got, expected, **tol), f"{name}: max abs error {err:.3e}"
