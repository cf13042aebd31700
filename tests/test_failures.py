"""Failure paths under mpirun: bad input, use outside init/finalize, mismatched
calls, and a peer that never arrives."""

import pytest
from conftest import run_mpi


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_bad_input_raises_before_the_wire(ranks):
    proc = run_mpi(ranks, "bad_input.py", timeout=120)
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize("ranks", [1, 3])
def test_lifecycle(ranks):
    proc = run_mpi(ranks, "lifecycle.py", timeout=120)
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize("ranks", [2, 3])
def test_mismatched_calls_detected_with_check(ranks):
    proc = run_mpi(ranks, "mismatch.py", env={"COLLEX_CHECK": "1"}, timeout=120)
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize("scenario", ["small", "large", "reduce", "barrier", "async", "interrupt"])
@pytest.mark.parametrize("ranks", [2, 3])
def test_absent_peer_times_out_and_breaks(ranks, scenario):
    proc = run_mpi(ranks, "timeouts.py", scenario, timeout=120)
    assert " 0 failed" in proc.stdout
