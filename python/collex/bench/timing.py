"""How every benchmark times a call: warm-up calls, then timed repeats of a loop
of calls, every rank starting together; the median over the repeats on each rank,
then the slowest rank's."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

# With iters=0, calls made after the warm-up to choose how many calls a repeat makes.
SAMPLING_CALLS = 3


def timed(comm: Any, fn: Callable[[], Any], warmup: int = 3, iters: int = 0, repeats: int = 5) -> float:
    """Seconds per call of fn. `comm` is an mpi4py communicator over the ranks that
    call fn together; iters=0 picks about 20 ms worth of calls per repeat."""
    return timed_together(comm, [fn], warmup, iters, repeats)[0]


def timed_together(
    comm: Any, fns: list[Callable[[], Any]], warmup: int = 3, iters: int = 0, repeats: int = 5
) -> list[float]:
    """Seconds per call of each of fns, each timed as timed() does, but their
    repeats take turns (the first of each, then the second of each, ...): on a
    shared machine whose speed drifts within minutes, every median then comes
    from the same minutes, and the ratios between them compare like with like."""
    from mpi4py import MPI

    counts = []  # calls per repeat
    for fn in fns:
        for _ in range(warmup):
            fn()
        n = iters
        if n <= 0:
            # The best of three calls: one slow call (a first touch, the machine's
            # neighbours) would otherwise shrink every repeat to a few calls.
            once = float("inf")
            for _ in range(SAMPLING_CALLS):
                comm.Barrier()
                t = time.perf_counter()
                fn()
                once = min(once, time.perf_counter() - t)
            once = comm.allreduce(once, op=MPI.MAX)
            n = int(min(1000, max(1, 0.02 / max(once, 1e-7))))
        counts.append(n)
    per: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, n, times in zip(fns, counts, per):
            comm.Barrier()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t) / n)
    return [comm.allreduce(statistics.median(times), op=MPI.MAX) for times in per]
