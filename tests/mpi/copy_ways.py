"""Long loops of mid-size all-reduces, broadcasts and all-gathers, with fresh
data every call and every result checked: the node re-decides how such copies
move while running (probes of the other way, then a decision every rank must
share), so results must stay right through probes and switches. Likewise
larger all-reduces, which re-decide how they write their results (ordinary or
streaming stores), and reduces and reduce-scatters beside them.

Run with COLLEX_DEBUG=1: the test then compares the decisions each rank printed.
"""

from __future__ import annotations

import collex as cx
import numpy as np
from _harness import Cases

cx.init()
rank, size = cx.rank(), cx.size()
cases = Cases("copy_ways")
CALLS = 120  # past the first probe of every size class (calls 12-15) and windows after it


def loop(collective: str, n: int) -> None:
    """CALLS calls of one collective on n float32 elements (per rank, for an
    all-gather), each checked. Call c's data is a fixed pattern plus c, so only the
    pattern is made with a (slow) float modulo, once per loop, and each expected
    result is a precomputed array plus a number."""
    pattern = np.arange(n, dtype=np.float32) % 97  # exact in float32
    summed = size * pattern  # the all-reduce of pattern + rank, less size * (size - 1) / 2
    ranks_added = size * (size - 1) // 2
    if collective == "reduce_scatter":
        whole = np.arange(n * size, dtype=np.float32) % 89
        my_part = size * whole[rank * n : (rank + 1) * n]
    elif collective == "allgather":
        rows = np.stack([pattern + r for r in range(size)])
    for call in range(CALLS):
        base = pattern + call
        if collective == "allreduce":
            got = cx.allreduce(base + rank)
            want = summed + (size * call + ranks_added)
        elif collective == "reduce":
            root = call % size
            got = cx.reduce(base + rank, root=root)
            want = summed + (size * call + ranks_added) if rank == root else base + rank
        elif collective == "reduce_scatter":
            got = cx.reduce_scatter(whole + (call + rank))
            want = my_part + (size * call + ranks_added)
        elif collective == "broadcast":
            root = call % size
            got = base + rank if rank == root else np.zeros(n, np.float32)
            cx.broadcast(got, root=root)
            want = base + root
        else:
            got = cx.allgather(base + rank)
            want = rows + call
        if not np.array_equal(got, want):
            wrong = np.flatnonzero(got.ravel() != want.ravel())
            raise AssertionError(f"call {call}: {wrong.size} wrong, the first at {wrong[:1]}")


# 96 KiB to 3 MiB of float32, in three size classes that may stream either way,
# with all-reduce blocks that do not divide evenly among 3 ranks.
for n in (24_577, 150_001, 786_433):
    for collective in ("allreduce", "broadcast", "allgather"):
        cases.run(f"{collective} x{CALLS} of {n} float32", lambda c=collective, n=n: loop(c, n))
# Broadcasts are mid-size from 16 KiB: 24 KiB ones are staged whole through the
# root's slot or read from the root in one copy.
cases.run(f"broadcast x{CALLS} of 6145 float32", lambda: loop("broadcast", 6145))

# Past the mid-size range: 6 MiB all-reduces, which read peers in place and
# choose their result stores; reduces and reduce-scatters of as many bytes.
for collective in ("allreduce", "reduce", "reduce_scatter"):
    n = 1_572_865 if collective != "reduce_scatter" else 524_289
    cases.run(f"{collective} x{CALLS} of {n} float32", lambda c=collective, n=n: loop(c, n))

cases.finish()
