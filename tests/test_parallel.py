"""Tensor parallelism and process grids under mpirun (tests/mpi/parallel.py), at
group sizes 1 to 4."""

import pytest
from conftest import run_mpi


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_tensor_parallel_layers_and_grids(ranks):
    proc = run_mpi(ranks, "parallel.py", timeout=300)
    assert " 0 failed" in proc.stdout
