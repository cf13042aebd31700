"""Every collective against NumPy under real mpirun jobs of 1 to 5 ranks (the
machine may have fewer cores than ranks: oversubscribed waits must still finish)."""

import os
import re

import pytest
from conftest import run_mpi

# A small chunk makes the edge matrix's largest size span many pipelined chunks.
SMALL_CHUNKS = {"COLLEX_CHUNK_BYTES": "256"}


# "auto" puts ranks of one node on shared memory (direct algorithms); "mpi" forces
# every collective onto MPI messages (ring and tree).
@pytest.mark.parametrize("transport", ["auto", "mpi"])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
def test_edge_sizes_every_dtype_op_algorithm(ranks, transport):
    if ranks == 1 and transport == "mpi":
        pytest.skip("one rank exchanges nothing: the transport plays no part")
    proc = run_mpi(ranks, "collectives.py", "edge", env={**SMALL_CHUNKS, "COLLEX_TRANSPORT": transport})
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize(("ranks", "transport"), [(2, "auto"), (3, "auto"), (5, "auto"), (3, "mpi")])
def test_megabyte_buffers_default_chunking(ranks, transport):
    proc = run_mpi(ranks, "collectives.py", "large", timeout=300, env={"COLLEX_TRANSPORT": transport})
    assert " 0 failed" in proc.stdout


# Pretend nodes (COLLEX_NODE_SIZE) split one machine's ranks into nodes of k, each
# with its own window: all-reduce then runs hierarchically (direct inside a node, a
# ring across the nodes' leaders), the other collectives over MPI.
@pytest.mark.parametrize(("ranks", "node_size"), [(4, 2), (5, 3), (5, 2)])
def test_pretend_nodes(ranks, node_size):
    env = {"COLLEX_NODE_SIZE": str(node_size)}
    proc = run_mpi(ranks, "collectives.py", "edge", env={**SMALL_CHUNKS, **env})
    assert " 0 failed" in proc.stdout
    proc = run_mpi(ranks, "collectives.py", "large", env={**env, "COLLEX_DEBUG": "1"}, timeout=300)
    assert " 0 failed" in proc.stdout and "algo=hier" in proc.stderr


# Mid-size all-reduces, broadcasts and all-gathers stream through the slots or
# read the source in one copy: both ways must give the same results (the "large"
# sizes fall in that range, with blocks that do not divide evenly).
@pytest.mark.parametrize("way", ["slots", "attach"])
def test_midsize_copies_either_way(way):
    env = {"COLLEX_MIDSIZE_COPY": way, "COLLEX_DEBUG": "1"}
    proc = run_mpi(3, "collectives.py", "large", timeout=300, env=env)
    assert " 0 failed" in proc.stdout and f"mid-size copies: {way}" in proc.stderr


# Not forced, the way is re-decided while running: results stay right through
# probes of the other way, and every rank reaches the same decisions (the ranks
# would otherwise wait on markers the others never set, or read stale data).
def test_midsize_copies_redecided_alike_on_every_rank():
    proc = run_mpi(3, "copy_ways.py", env={"COLLEX_DEBUG": "1"})
    assert " 0 failed" in proc.stdout
    decisions: dict[int, list[str]] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"collex: \[rank (\d)\] mid-size copies: (.+: (keeps|switches to) .+)", line)
        if m:
            decisions.setdefault(int(m[1]), []).append(m[2])
    assert sorted(decisions) == [0, 1, 2], proc.stderr[-2000:]
    assert decisions[0] == decisions[1] == decisions[2]
    # A probe decided in each of the 9 classes (3 collectives x 3 sizes).
    assert len({d.split(":")[0] for d in decisions[0]}) == 9, decisions[0]


def test_shared_memory_is_used_and_leaves_nothing_behind():
    proc = run_mpi(
        3, "collectives.py", "edge", env={**SMALL_CHUNKS, "COLLEX_TRANSPORT": "shm", "COLLEX_DEBUG": "1"}
    )
    assert "algo=direct" in proc.stderr
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("collex-")]


def test_forced_algorithm_from_environment():
    proc = run_mpi(
        3, "collectives.py", "edge", env={**SMALL_CHUNKS, "COLLEX_ALGO": "tree", "COLLEX_DEBUG": "1"}
    )
    # Explicit algo= wins over the environment; auto follows it.
    assert "algo=tree" in proc.stderr and "algo=ring" in proc.stderr


@pytest.mark.parametrize("variable", ["COLLEX_ALGO", "COLLEX_MIDSIZE_COPY"])
def test_bad_setting_in_environment_is_refused(variable):
    proc = run_mpi(1, "lifecycle.py", env={variable: "bogus"}, expect_rc=None)
    assert proc.returncode != 0
    assert f"{variable}=bogus" in proc.stderr
