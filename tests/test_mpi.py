"""fastrnn.mpi: data-parallel training over MPI processes.

``mpiexec -n 2`` runs tests/_mpi_training.py: two processes, each starting
from its own initial parameters, broadcast rank 0's, then train on their
shares of every batch with allreduce_gradients between backward and the
optimizer step. Both must end with the parameters one process reaches on
the whole batches (float64, to 1e-12), for a stacked bidirectional LSTM
classifier (halves, Adam, clipping) and a Sequential (5 and 3 rows weighted
by their count, SGD with momentum); and the two processes exactly equal.
The same run checks broadcasts from either root, the error of models that
differ, and an empty share. In this process (one MPI process): the argument
errors. Then examples/train_mpi.py, under mpiexec -n 2 in quick mode.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

if importlib.util.find_spec("mpi4py") is None:
    pytest.skip("mpi4py is not installed (the mpi extra: pip install '.[mpi]')",
                allow_module_level=True)

import fastrnn.mpi   # noqa: E402

import _mpi_training   # noqa: E402  (tests/ is on sys.path)

TESTS = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(TESTS), "examples")


def mpiexec(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 python *args`` (the mpiexec beside this Python first, as
    the mpich wheel installs it), with this process's fastrnn on the path."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    launcher = shutil.which("mpiexec", path=path)
    if launcher is None:
        pytest.skip("no mpiexec (the mpi extra installs MPICH's: pip install '.[mpi]')")
    python_path = [os.path.dirname(os.path.dirname(fastrnn.__file__)),
                   os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in python_path if p))
    # (stdin from /dev/null: mpiexec forwards its stdin to rank 0, and CI has none)
    child = subprocess.run([launcher, "-n", "2", sys.executable, *args], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    assert child.returncode == 0, (child.stdout[-2000:], child.stderr[-3000:])
    return child


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two processes of tests/_mpi_training.py saved."""
    out = str(tmp_path_factory.mktemp("mpi") / "result")
    mpiexec(os.path.join(TESTS, "_mpi_training.py"), out)
    return [dict(np.load(f"{out}.{rank}.npz")) for rank in (0, 1)]


@pytest.mark.parametrize("case", list(_mpi_training.CASES))
def test_two_processes_on_halves_match_one_on_the_whole_batch(case, ranks):
    threads = fastrnn.get_num_threads()
    fastrnn.set_num_threads(1)            # as the processes ran
    try:
        whole = _mpi_training.train(case, seed=0)
    finally:
        fastrnn.set_num_threads(threads)
    initial = _mpi_training.CASES[case](0)[0].state_dict()
    for name, expected in whole.items():
        got = [r[f"{case}.{name}"] for r in ranks]
        assert np.array_equal(got[0], got[1]), f"{name}: the two processes differ"
        error = np.abs(got[0] - expected).max()
        print(f"{case} {name}: max abs error {error:.1e}")
        assert error <= 1e-12, f"{name}: max abs error {error:.3e} against one process"
        assert not np.allclose(expected, initial[name]), f"{name}: not trained"


def test_broadcast_from_either_root(ranks):
    for root in (0, 1):
        expected = _mpi_training.tagger(seed=10 * root).state_dict()
        for rank, saved in enumerate(ranks):
            for name, value in expected.items():
                assert np.array_equal(saved[f"root{root}.{name}"], value), (root, rank, name)


def test_broadcast_refuses_models_that_differ_in_every_process(ranks):
    for saved in ranks:
        assert str(saved["mismatch"]) == (
            "model: expected the same parameters in every process, but rank 1 has "
            "'weight_ih_l0' as ((15, 3), 'float32'), rank 0 as ((12, 3), 'float32')")


def test_weighted_mean_with_an_empty_share(ranks):
    for saved in ranks:                   # (4 * 3 + 0 * 0) / (4 + 0)
        assert np.array_equal(saved["empty_share_weight"], np.full((2, 2), 3.0))


# ------------------------------------------------------- one process, errors

def test_one_process_and_argument_errors():
    from mpi4py import MPI
    comm = MPI.COMM_SELF
    gru = fastrnn.GRU(2, 3, dtype=np.float64, seed=0)
    before = gru.state_dict()
    fastrnn.mpi.broadcast_parameters(gru, comm)
    gru.grads["bias_hh_l0"][...] = 2.0
    fastrnn.mpi.allreduce_gradients(gru, comm, weight=5)
    assert np.array_equal(gru.grads["bias_hh_l0"], np.full(9, 2.0))
    assert all(np.array_equal(v, before[k]) for k, v in gru.state_dict().items())
    with pytest.raises(TypeError, match="model: expected a fastrnn layer, cell or model"):
        fastrnn.mpi.allreduce_gradients({"w": np.ones(2)}, comm)
    with pytest.raises(TypeError, match="comm: expected an mpi4py communicator"):
        fastrnn.mpi.broadcast_parameters(gru, comm="world")
    with pytest.raises(ValueError, match=r"root: expected a rank of comm, in \[0, 1\), got 1"):
        fastrnn.mpi.broadcast_parameters(gru, comm, root=1)
    for weight in (-1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="weight: expected a finite number >= 0"):
            fastrnn.mpi.allreduce_gradients(gru, comm, weight=weight)
    with pytest.raises(ValueError, match="weight: expected weights that sum to more than 0"):
        fastrnn.mpi.allreduce_gradients(gru, comm, weight=0)
    assert np.array_equal(gru.grads["bias_hh_l0"], np.full(9, 2.0))    # unchanged


def test_mixed_dtypes_one_buffer_each():
    from mpi4py import MPI

    class Mixed(fastrnn.Module):
        def __init__(self):
            super().__init__()
            self.a = fastrnn.Linear(2, 2, dtype=np.float32, seed=0)
            self.b = fastrnn.Linear(2, 2, dtype=np.float64, seed=0)

    model = Mixed()
    for g in model.grads.values():
        g[...] = 1.5
    fastrnn.mpi.allreduce_gradients(model, MPI.COMM_SELF)
    assert {g.dtype.name for g in model.grads.values()} == {"float32", "float64"}
    assert all(np.array_equal(g, np.full_like(g, 1.5)) for g in model.grads.values())


# ------------------------------------------------------------------ example

def test_example_trains_in_two_processes(tmp_path):
    if importlib.util.find_spec("sklearn") is None or importlib.util.find_spec("tqdm") is None:
        pytest.skip("the examples extra is not installed (pip install '.[examples]')")
    # each process writes what its main returned to a file of its own (their
    # printed lines may interleave)
    mpiexec("-c", "import json, sys; sys.path.insert(0, sys.argv[1]); import train_mpi; "
            "r = train_mpi.main(sys.argv[3:]); "
            "json.dump(r, open(f'{sys.argv[2]}.{train_mpi.MPI.COMM_WORLD.rank}.json', 'w'))",
            EXAMPLES, str(tmp_path / "result"), "--quick", "--plot", str(tmp_path / "plot.png"))
    results = [json.loads((tmp_path / f"result.{rank}.json").read_text()) for rank in (0, 1)]
    assert results[0] == results[1]            # both processes, the same model
    r = results[0]
    assert r["processes"] == 2 and r["same_parameters"]
    assert r["accuracy"] >= 0.90 > r["majority"] + 0.5
    assert (tmp_path / "plot.png").stat().st_size > 10_000
