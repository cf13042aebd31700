"""With COLLEX_CHECK=1, ranks that issue different collectives all raise
CollectiveMismatch describing every rank's call, and the communicator stays usable."""

from __future__ import annotations

import collex as cx
import numpy as np
from _harness import Cases, raises

cx.init()
rank, size = cx.rank(), cx.size()
cases = Cases("mismatch")


def expect_mismatch(label, fn, needles):
    cases.run(label, lambda: raises(fn, cx.CollectiveMismatch, *needles))


expect_mismatch(
    "different collectives",
    lambda: cx.allreduce(np.ones(4)) if rank == 0 else cx.broadcast(np.ones(4)),
    ["rank 0: allreduce", "rank 1: broadcast", "different collectives"],
)
expect_mismatch(
    "different counts",
    lambda: cx.allreduce(np.ones(10 + (rank == size - 1), np.float32)),
    ["count=10", "count=11"],
)
expect_mismatch(
    "different roots",
    lambda: cx.broadcast(np.ones(3), root=rank % 2),
    ["root=0", "root=1"],
)
cases.run("usable afterwards", lambda: np.testing.assert_array_equal(cx.allreduce(np.ones(4)), size))
cases.check("not broken", not cx.world().broken)
cases.finish()
