"""Threads of fastrnn's kernels.

Two kinds of threads, never running at once:
- the time loop: with a batch of 16 to 32 * n rows, n threads each run the
  whole loop (per-step products and elementwise passes) for their own slice of
  the batch rows, with no barrier per step; smaller batches, and the general
  (ONNX option) cells, run it in the calling thread;
- the large GEMMs (input projection, weight gradients, per-step products of
  more than 32 rows) run in SciPy's BLAS, governed through threadpoolctl.
``set_num_threads(n)`` sets both; by default the loop uses the CPUs this
process may run on (at most 8) and BLAS its own default. On a machine shared
with other work, or with several Python threads each running a layer,
``set_num_threads(1)`` avoids oversubscription: threads that wait for busy
cores can make a small GEMM many times slower.
"""
from __future__ import annotations

import os
from typing import List

import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)

from fastrnn import _kernels


def _blas_libraries(controller) -> List:
    """threadpoolctl's entries of SciPy's BLAS (the one fastrnn's GEMMs call),
    or of every BLAS when SciPy's cannot be told apart."""
    blas = controller.select(user_api="blas")
    scipy_libs = [lib for lib in blas.lib_controllers
                  if "scipy" in lib.filepath and "numpy" not in lib.filepath]
    return scipy_libs or list(blas.lib_controllers)


def set_num_threads(n: int) -> None:
    """Use at most n threads in fastrnn's time loops and in its BLAS calls."""
    from threadpoolctl import ThreadpoolController
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    for lib in _blas_libraries(ThreadpoolController()):
        lib.set_num_threads(n)
    _kernels.set_loop_threads(n)


def get_num_threads() -> int:
    """The threads fastrnn may use: the larger of its loops' and its BLAS's."""
    from threadpoolctl import ThreadpoolController
    libs = _blas_libraries(ThreadpoolController())
    blas = max((lib.num_threads for lib in libs), default=1)
    return max(blas, _kernels.get_loop_threads())


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


_kernels.set_loop_threads(min(_available_cpus(), 8))
