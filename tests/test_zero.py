"""ShardedOptimizer (ZeRO stages 1 and 2) under mpirun against replicated data
parallelism (tests/mpi/zero.py)."""

import pytest
from conftest import run_mpi


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_sharded_optimizer_follows_replicated_data_parallelism(ranks):
    proc = run_mpi(ranks, "zero.py", timeout=240)
    assert " 0 failed" in proc.stdout
