"""Property-based tests (hypothesis) under mpirun: results against NumPy over
shapes, dtypes, ops, algorithms, views and async mixes; hostile arguments
refused with a clear error and the communicator usable. Each launch runs many
examples (tests/mpi/fuzz.py drives them from rank 0)."""

import pytest
from conftest import run_mpi

SETTINGS = {
    "shm": {},
    "mpi": {"COLLEX_TRANSPORT": "mpi"},
    "two-nodes": {"COLLEX_NODE_SIZE": "2"},  # pretend nodes of 2 ranks: the hierarchical paths
}


@pytest.mark.parametrize(
    "ranks,setting",
    [(2, "shm"), (3, "shm"), (4, "shm"), (2, "mpi"), (3, "mpi"), (4, "mpi"), (4, "two-nodes")],
)
def test_results_match_numpy(ranks, setting):
    proc = run_mpi(ranks, "fuzz.py", "results", "500", env=SETTINGS[setting], timeout=300)
    assert "examples passed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("ranks,setting", [(1, "shm"), (2, "shm"), (3, "shm"), (3, "mpi")])
def test_hostile_arguments_are_refused_and_leave_the_communicator_usable(ranks, setting):
    proc = run_mpi(ranks, "fuzz.py", "hostile", "300", env=SETTINGS[setting], timeout=300)
    assert "examples passed" in proc.stdout, proc.stdout
