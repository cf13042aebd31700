"""The soak's short version: a seeded random mix of every collective and
point-to-point over two communicators at once, every result checked, no growth
in memory or file descriptors after warm-up (collex.bench.soak; the long run is
`python -m collex.bench.soak --minutes N`)."""

import pytest
from conftest import run_mpi


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_soak_mix_stays_right_and_keeps_its_memory(ranks):
    proc = run_mpi(
        ranks, "-m", "collex.bench.soak", "--ops", "1500", "--seed", str(ranks), module=True, timeout=400
    )
    assert "soak: passed" in proc.stdout, proc.stdout
    assert "0 wrong" in proc.stdout, proc.stdout
