"""Every collective against NumPy under real mpirun jobs of 1 to 5 ranks (the
machine may have fewer cores than ranks: oversubscribed waits must still finish).

One test function per collective and algorithm (and launch: ranks, transport,
sizes), e.g. ``pytest -k "allreduce and tree and mpi"``. Each launch of
tests/mpi/collectives.py runs, once, every group of cases that the selected
tests ask of it, and each test reads its own group's counts from the launch."""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

import pytest
from conftest import run_mpi

# A small chunk makes the edge matrix's largest size span many pipelined chunks.
SMALL_CHUNKS = (("COLLEX_CHUNK_BYTES", "256"),)
ALGOS = ("ring", "tree", "direct", "hier")
GROUPS = [f"allreduce:{a}" for a in ALGOS] + [f"broadcast:{a}" for a in ALGOS]
GROUPS += ["reduce", "allgather", "reduce_scatter", "extras"]


class Launch(NamedTuple):
    """One mpirun of collectives.py: its ranks, sizes (edge or large) and environment."""

    ranks: int
    mode: str
    env: tuple = ()
    timeout: float = 240

    def __str__(self) -> str:
        settings = "-".join(f"{k.removeprefix('COLLEX_').lower()}={v}" for k, v in self.env)
        return f"{self.ranks}ranks-{self.mode}" + (f"-{settings}" if settings else "")


# "auto" puts ranks of one node on shared memory (direct algorithms); "mpi" forces
# every collective onto MPI messages (ring and tree). One rank with "mpi" exchanges
# nothing, so it is left out.
EDGE = [Launch(n, "edge", SMALL_CHUNKS) for n in range(1, 6)]
EDGE += [Launch(n, "edge", (*SMALL_CHUNKS, ("COLLEX_TRANSPORT", "mpi"))) for n in range(2, 6)]
LARGE = [Launch(n, "large", timeout=300) for n in (2, 3, 5)]
LARGE += [Launch(3, "large", (("COLLEX_TRANSPORT", "mpi"),), timeout=300)]
# Pretend nodes (COLLEX_NODE_SIZE) split one machine's ranks into nodes of k, each
# with its own window: all-reduce then runs hierarchically (direct inside a node, a
# ring across the nodes' leaders), the other collectives over MPI.
NODES = [
    Launch(
        ranks, mode, (*(SMALL_CHUNKS if mode == "edge" else ()), ("COLLEX_NODE_SIZE", str(k))), timeout=300
    )
    for ranks, k in ((4, 2), (5, 3), (5, 2))
    for mode in ("edge", "large")
]

_results: dict[Launch, tuple] = {}


def launch_result(request, launch: Launch, env_extra: dict | None = None):
    """(groups' counts, process) of `launch`, run once with every group the
    session's selected tests need from it."""
    if launch not in _results:
        wanted = {
            item.callspec.params["group"]
            for item in request.session.items
            if getattr(item, "callspec", None) and item.callspec.params.get("launch") == launch
        } or set(GROUPS)
        groups = ",".join(g for g in GROUPS if g in wanted)
        proc = run_mpi(
            launch.ranks,
            "collectives.py",
            launch.mode,
            groups,
            timeout=launch.timeout,
            env={**dict(launch.env), **(env_extra or {})},
            expect_rc=None,
        )
        found = re.search(r"^GROUPS (\{.*\})$", proc.stdout, re.M)
        _results[launch] = (json.loads(found[1]) if found else {}, proc)
    return _results[launch]


def check_group(request, launch: Launch, group: str):
    counts, proc = launch_result(request, launch)
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL") and f"[{group}]" in line]
    assert group in counts, (
        f"{launch}: no result for {group}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    passed, failed = counts[group]
    assert failed == 0 and not failures, "\n".join(failures[:20])
    assert passed > 0
    return proc


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.replace(":", "-"))
@pytest.mark.parametrize("launch", EDGE, ids=str)
def test_edge_sizes_every_dtype_and_op(request, launch, group):
    check_group(request, launch, group)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.replace(":", "-"))
@pytest.mark.parametrize("launch", LARGE, ids=str)
def test_megabyte_buffers_default_chunking(request, launch, group):
    check_group(request, launch, group)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.replace(":", "-"))
@pytest.mark.parametrize("launch", NODES, ids=str)
def test_pretend_nodes(request, launch, group):
    check_group(request, launch, group)


def test_pretend_nodes_reduce_hierarchically():
    proc = run_mpi(
        4, "collectives.py", "large", "allreduce:hier", env={"COLLEX_NODE_SIZE": "2", "COLLEX_DEBUG": "1"}
    )
    assert " 0 failed" in proc.stdout and "algo=hier" in proc.stderr


# Mid-size all-reduces, broadcasts and all-gathers stream through the slots or
# read the source in one copy: both ways must give the same results (the "large"
# sizes fall in that range, with blocks that do not divide evenly; broadcasts
# are mid-size from 16 KiB, so the edge sizes' 20 KB ones of 8-byte dtypes too).
@pytest.mark.parametrize("mode", ["edge", "large"])
@pytest.mark.parametrize("way", ["slots", "attach"])
def test_midsize_copies_either_way(way, mode):
    env = {"COLLEX_MIDSIZE_COPY": way, "COLLEX_DEBUG": "1"}
    proc = run_mpi(3, "collectives.py", mode, timeout=300, env=env)
    assert " 0 failed" in proc.stdout and f"mid-size copies: {way}" in proc.stderr


# Operations that read peers' buffers in place write their results with
# ordinary or streaming stores, chosen while running from 1 MiB; forced either
# way for every such operation (mid-size ones too, read in place), every result
# of the "large" sizes stays right. Streamed, with the two-page copy loop, which
# the host would not take unless its CPU is Intel's.
@pytest.mark.parametrize("stores", ["ordinary", "streaming"])
def test_result_writes_either_way(stores):
    env = {"COLLEX_RESULT_WRITES": stores, "COLLEX_MIDSIZE_COPY": "attach", "COLLEX_TRANSPORT": "shm"}
    if stores == "streaming":
        env["COLLEX_COPY_LOOP"] = "two-pages"
    proc = run_mpi(3, "collectives.py", "large", timeout=300, env=env)
    assert " 0 failed" in proc.stdout


# Staged operations (up to 64 KiB per rank) write their slots with ordinary or
# streaming stores, chosen while running; forced to stream, every collective of
# the edge sizes (2500 elements of every dtype stage 2.5-20 KB) stays right.
def test_staged_writes_with_streaming_stores():
    env = {"COLLEX_STAGE_WRITES": "streaming", "COLLEX_TRANSPORT": "shm"}
    proc = run_mpi(3, "collectives.py", "edge", env=env)
    assert " 0 failed" in proc.stdout


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
    # A probe decided in each of the 10 classes (3 collectives x 3 sizes, and
    # the 24 KiB broadcasts).
    assert len({d.split(":")[0] for d in decisions[0]}) == 10, decisions[0]
    # And how all-reduces read in place write their results: alike too (they
    # need not agree, but decide from the same exchanged times), the 6 MiB ones
    # among them; reduces and reduce-scatters go by size.
    results: dict[int, list[str]] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"collex: \[rank (\d)\] result writes: (.+: (keeps|switches to) .+)", line)
        if m:
            results.setdefault(int(m[1]), []).append(m[2])
    assert sorted(results) == [0, 1, 2] and results[0] == results[1] == results[2], proc.stderr[-2000:]
    classes = {d.split(":")[0] for d in results[0]}
    assert "all-reduce results <=8 MiB" in classes, classes
    assert all(c.startswith("all-reduce") for c in classes), classes


def test_shared_memory_is_used_and_leaves_nothing_behind():
    env = {**dict(SMALL_CHUNKS), "COLLEX_TRANSPORT": "shm", "COLLEX_DEBUG": "1"}
    proc = run_mpi(3, "collectives.py", "edge", env=env)
    assert "algo=direct" in proc.stderr
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("collex-")]


def test_forced_algorithm_from_environment():
    env = {**dict(SMALL_CHUNKS), "COLLEX_ALGO": "tree", "COLLEX_DEBUG": "1"}
    proc = run_mpi(3, "collectives.py", "edge", env=env)
    # Explicit algo= wins over the environment; auto follows it; where the tree
    # cannot run (all-gather) it declines and says why.
    assert "algo=tree" in proc.stderr and "algo=ring" in proc.stderr
    assert "algo=tree declines (the tree has no all-gather" in proc.stderr


# The streaming copy's loop follows COLLEX_COPY_LOOP once a communicator is made
# (the kernel tests check both loops' copies byte for byte).
@pytest.mark.parametrize("loop", ["one-stream", "two-pages"])
def test_copy_loop_from_environment(loop):
    code = "import collex as cx; cx.init(); print('loop', cx._core.kernel_copy_loop()); cx.finalize()"
    proc = run_mpi(1, "-c", code, module=True, env={"COLLEX_COPY_LOOP": loop})
    assert f"loop {loop}" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "variable",
    ["COLLEX_ALGO", "COLLEX_MIDSIZE_COPY", "COLLEX_STAGE_WRITES", "COLLEX_RESULT_WRITES", "COLLEX_COPY_LOOP"],
)
def test_bad_setting_in_environment_is_refused(variable):
    proc = run_mpi(1, "lifecycle.py", env={variable: "bogus"}, expect_rc=None)
    assert proc.returncode != 0
    assert f"{variable}=bogus" in proc.stderr
