"""Threads of fastrnn's kernels.

The kernels' own loops (the time loop, the fused elementwise passes and the
small per-step products) run in the calling thread, with the GIL released; the
large GEMMs (input projection, weight gradients, per-step products with many
rows) run in SciPy's BLAS, whose thread pool these functions govern through
threadpoolctl. On a machine shared with other work, or with several Python
threads each running a layer, ``set_num_threads(1)`` avoids oversubscription:
BLAS threads that wait for busy cores can make a small GEMM many times slower.
"""
from __future__ import annotations

from typing import List

import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)


def _blas_libraries(controller) -> List:
    """threadpoolctl's entries of SciPy's BLAS (the one fastrnn's GEMMs call),
    or of every BLAS when SciPy's cannot be told apart."""
    blas = controller.select(user_api="blas")
    scipy_libs = [lib for lib in blas.lib_controllers
                  if "scipy" in lib.filepath and "numpy" not in lib.filepath]
    return scipy_libs or list(blas.lib_controllers)


def set_num_threads(n: int) -> None:
    """Use at most n threads in the BLAS calls of fastrnn's kernels."""
    from threadpoolctl import ThreadpoolController
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    for lib in _blas_libraries(ThreadpoolController()):
        lib.set_num_threads(n)


def get_num_threads() -> int:
    """The threads fastrnn's BLAS calls may use."""
    from threadpoolctl import ThreadpoolController
    libs = _blas_libraries(ThreadpoolController())
    return max((lib.num_threads for lib in libs), default=1)
