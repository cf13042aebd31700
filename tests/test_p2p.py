"""Point-to-point under mpirun (tests/mpi/p2p.py): every dtype and size class,
ordering, posting orders that must not deadlock, and mismatched receives that
raise on both ranks within seconds, on the default transport and on MPI alone."""

import pytest
from conftest import run_mpi


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_point_to_point(ranks):
    proc = run_mpi(ranks, "p2p.py", "good", timeout=180)
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize("transport", ["auto", "mpi"])
@pytest.mark.parametrize("ranks", [2, 3])
def test_mismatched_receives_raise_on_both_sides(ranks, transport):
    proc = run_mpi(ranks, "p2p.py", "mismatch", env={"COLLEX_TRANSPORT": transport}, timeout=180)
    assert " 0 failed" in proc.stdout


def test_a_receive_with_no_sender_times_out_and_breaks():
    proc = run_mpi(2, "p2p.py", "timeout", env={"COLLEX_TIMEOUT": "2"}, timeout=120)
    assert " 0 failed" in proc.stdout
