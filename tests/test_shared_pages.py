"""Ordinary arrays moved onto shared pages (tests/mpi/shared_pages.py) under
mpirun: on 2 and 3 ranks of one node, where they move; with
COLLEX_SHARE_PAGES=0 and on one rank, where nothing moves and every result
stays right."""

import pytest
from conftest import run_mpi


@pytest.mark.parametrize(
    "ranks, env, args",
    [
        (2, {}, []),
        (3, {}, []),
        (2, {"COLLEX_SHARE_PAGES": "0"}, ["expect=off"]),
        (1, {}, ["expect=off"]),
    ],
    ids=["2", "3", "2-off", "1"],
)
def test_shared_pages(ranks, env, args):
    proc = run_mpi(ranks, "shared_pages.py", *args, env=env, timeout=240)
    assert " 0 failed" in proc.stdout
