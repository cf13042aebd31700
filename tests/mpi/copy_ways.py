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
CALLS = 120  # past the first probe of every size class (calls 8-11) and windows after it


def loop(collective: str, n: int) -> None:
    """CALLS calls of one collective on n float32 elements (per rank, for an
    all-gather), each checked."""
    for call in range(CALLS):
        base = np.arange(n, dtype=np.float32) % 97 + call  # exact in float32
        if collective == "allreduce":
            got = cx.allreduce(base + rank)
            want = size * base + size * (size - 1) // 2
        elif collective == "reduce":
            root = call % size
            got = cx.reduce(base + rank, root=root)
            want = size * base + size * (size - 1) // 2 if rank == root else base + rank
        elif collective == "reduce_scatter":
            whole = np.arange(n * size, dtype=np.float32) % 89 + call
            got = cx.reduce_scatter(whole + rank)
            want = (size * whole + size * (size - 1) // 2)[rank * n : (rank + 1) * n]
        elif collective == "broadcast":
            root = call % size
            got = base + rank if rank == root else np.zeros(n, np.float32)
            cx.broadcast(got, root=root)
            want = base + root
        else:
            got = cx.allgather(base + rank)
            want = np.stack([base + r for r in range(size)])
        wrong = np.flatnonzero(got.ravel() != want.ravel())
        assert wrong.size == 0, f"call {call}: {wrong.size} wrong, the first at {wrong[:1]}"


# 96 KiB to 3 MiB of float32, in three size classes that may stream either way,
# with all-reduce blocks that do not divide evenly among 3 ranks.
for n in (24_577, 150_001, 786_433):
    for collective in ("allreduce", "broadcast", "allgather"):
        cases.run(f"{collective} x{CALLS} of {n} float32", lambda c=collective, n=n: loop(c, n))

# Past the mid-size range: 6 MiB all-reduces, which read peers in place and
# choose their result stores; reduces and reduce-scatters of as many bytes.
for collective in ("allreduce", "reduce", "reduce_scatter"):
    n = 1_572_865 if collective != "reduce_scatter" else 524_289
    cases.run(f"{collective} x{CALLS} of {n} float32", lambda c=collective, n=n: loop(c, n))

cases.finish()
