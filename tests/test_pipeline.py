"""Pipelines under mpirun (tests/mpi/pipeline.py) at 2, 3 and 4 stages, and the
schedules as data (no MPI): each rank's list, checked by simulation."""

import pytest
from collex.parallel import schedules
from conftest import run_mpi


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_pipeline_schedules_match_the_unsplit_model(ranks):
    proc = run_mpi(ranks, "pipeline.py", timeout=300)
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize(
    "name,v", [("gpipe", 1), ("1f1b", 1), ("zb1p", 1), ("interleaved", 2), ("interleaved", 3)]
)
@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_every_rank_runs_each_pass_once_and_the_lists_never_deadlock(name, v, p):
    m = 2 * p
    for r in range(p):
        acts = schedules.build(name, p, m, r, v)
        ops = "BW" if name != "zb1p" else "IW"
        for chunk in range(v):
            for op in "F" + ops.replace("W", "" if name != "zb1p" else "W"):
                got = sorted(a.microbatch for a in acts if a.op == op and a.chunk == chunk)
                assert got == list(range(m)), (r, op, chunk, got)
        # A backward never comes before its forward; a W never before its I.
        seen = set()
        for a in acts:
            if a.op in "BI":
                assert ("F", a.chunk, a.microbatch) in seen
            if a.op == "W":
                assert ("I", a.chunk, a.microbatch) in seen
            seen.add((a.op, a.chunk, a.microbatch))
    result = schedules.simulate(name, p, m, v)  # raises on a deadlock
    assert 0 <= result["bubble"] < 1


def test_interleaved_needs_a_multiple_of_the_ranks():
    with pytest.raises(ValueError, match="not a multiple"):
        schedules.build("interleaved", 4, 6, 0, 2)
