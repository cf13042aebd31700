"""The data-parallel training layer under mpirun (tests/mpi/training.py), over the
shared-memory window, the MPI transport, and pretend nodes (hierarchical)."""

import pytest
from conftest import run_mpi

# One BLAS thread per rank: the ranks already fill the cores.
SERIAL_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(
    "ranks, env",
    [
        (1, {}),
        (2, {}),
        (3, {}),
        (3, {"COLLEX_TRANSPORT": "mpi"}),
        (5, {"COLLEX_NODE_SIZE": "2"}),
        (3, {"COLLEX_RESULT_WRITES": "streaming"}),
    ],
    ids=["1", "2", "3", "3-mpi", "5-nodes-of-2", "3-streamed-results"],
)
def test_training_layer(ranks, env):
    proc = run_mpi(ranks, "training.py", env={**SERIAL_BLAS, **env}, timeout=240)
    assert " 0 failed" in proc.stdout
