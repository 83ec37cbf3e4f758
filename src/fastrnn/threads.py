"""Threads of fastrnn's kernels.

fastrnn's calls run their parallel work on a pool of its own: the workers
start on first use and stay; between pieces of work they spin for some tens
of microseconds and then sleep, so none holds a core between calls:
- the time loop: with a batch of 16 to 32 * n rows, n threads each run the
  whole loop (per-step products and elementwise passes) for their own slice of
  the batch rows; smaller batches, training and the general (ONNX option)
  cells run it in the calling thread;
- the large products (the input projection, the weight gradients, the
  per-step products of more than 32 rows) are split over n threads by rows or
  columns, each slice one serial BLAS call.
SciPy's BLAS (OpenBLAS) is set to one thread for the duration of each kernel
call and restored after: its own threads spin-wait after every product, and
on a machine whose other cores are busy that made training up to 20x slower
than one thread. ``set_num_threads(n)`` sets n, and SciPy's BLAS threads for
the rest of the process (fastrnn's calls do not use them). By default n is
the number of CPUs this process may run on (at most 8).
"""
from __future__ import annotations

import ctypes
import numbers
import os
from typing import List, Tuple

import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)

from fastrnn import _kernels

#: The most threads set_num_threads accepts (the kernels use at most 8 per call).
MAX_THREADS = 1024


def _blas_libraries(controller) -> List:
    """threadpoolctl's entries of SciPy's BLAS (the one fastrnn's GEMMs call),
    or of every BLAS when SciPy's cannot be told apart."""
    blas = controller.select(user_api="blas")
    scipy_libs = [lib for lib in blas.lib_controllers
                  if "scipy" in lib.filepath and "numpy" not in lib.filepath]
    return scipy_libs or list(blas.lib_controllers)


def set_num_threads(n: int) -> None:
    """Use at most n threads in fastrnn's kernel calls (and set SciPy's BLAS to n).

    Parameters
    ----------
    n : int
        Threads, 1 to 1024. The kernels use at most 8 in one call.

    Raises
    ------
    ValueError
        When n is not an integer in [1, 1024]; nothing is changed then.

    Examples
    --------
    >>> import fastrnn
    >>> fastrnn.set_num_threads(1)      # e.g. on a machine shared with other work
    >>> fastrnn.get_num_threads()
    1
    """
    from threadpoolctl import ThreadpoolController
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n: expected an integer in [1, {MAX_THREADS}], got {n!r}")
    n = int(n)
    for lib in _blas_libraries(ThreadpoolController()):
        lib.set_num_threads(n)
    _kernels.set_loop_threads(n)


def get_num_threads() -> int:
    """The threads fastrnn may use: the larger of its kernels' and SciPy's BLAS's.

    Returns
    -------
    int
        The larger of the kernels' threads (``set_num_threads``; by default
        the CPUs this process may run on, at most 8) and SciPy's BLAS's.

    Examples
    --------
    >>> import fastrnn
    >>> fastrnn.get_num_threads() >= 1
    True
    """
    from threadpoolctl import ThreadpoolController
    libs = _blas_libraries(ThreadpoolController())
    blas = max((lib.num_threads for lib in libs), default=1)
    return max(blas, _kernels.get_loop_threads())


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


def _openblas_thread_functions() -> Tuple[int, int]:
    """Addresses of SciPy's OpenBLAS get/set_num_threads (0, 0 when SciPy's
    BLAS is not an OpenBLAS on its own pthreads pool)."""
    try:
        from threadpoolctl import ThreadpoolController
        for lib in _blas_libraries(ThreadpoolController()):
            if lib.internal_api != "openblas" or getattr(lib, "threading_layer", "") == "openmp":
                continue   # with OpenMP each calling thread has its own pool
            dll = ctypes.CDLL(lib.filepath)   # already loaded: the same handle
            for prefix in ("", "scipy_"):
                for suffix in ("", "64_", "_64"):
                    get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
                    set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        return (ctypes.cast(get, ctypes.c_void_p).value,
                                ctypes.cast(set_, ctypes.c_void_p).value)
    except (ImportError, OSError):
        pass
    return 0, 0


_kernels.set_blas_threading(*_openblas_thread_functions())
_kernels.set_loop_threads(min(_available_cpus(), 8))
