"""How every benchmark times a call: warm-up calls, then timed repeats of a loop
of calls, every rank starting together; the median over the repeats on each rank,
then the slowest rank's."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def timed(comm: Any, fn: Callable[[], Any], warmup: int = 3, iters: int = 0, repeats: int = 5) -> float:
    """Seconds per call of fn. `comm` is an mpi4py communicator over the ranks that
    call fn together; iters=0 picks about 20 ms worth of calls per repeat."""
    from mpi4py import MPI

    for _ in range(warmup):
        fn()
    if iters <= 0:
        # The best of three calls: one slow call (a first touch, the machine's
        # neighbours) would otherwise shrink every repeat to a few calls.
        once = float("inf")
        for _ in range(3):
            comm.Barrier()
            t = time.perf_counter()
            fn()
            once = min(once, time.perf_counter() - t)
        once = comm.allreduce(once, op=MPI.MAX)
        iters = int(min(1000, max(1, 0.02 / max(once, 1e-7))))
    per = []
    for _ in range(repeats):
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        per.append((time.perf_counter() - t) / iters)
    return comm.allreduce(statistics.median(per), op=MPI.MAX)
