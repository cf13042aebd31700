"""A loop of one collective call, for before/after comparisons of small-call
latency that the sweep's rows are too coarse (0.1 us) or too noisy for.

    mpirun -n 2 python bench/loop.py [-c allreduce,broadcast] [--bytes 8] [--calls 50000] [--repeats 7]

Prints, on rank 0, each collective's median time per call over the repeats (us).
"""

from __future__ import annotations

import argparse
import statistics
import time

import collex as cx
import numpy as np
from mpi4py import MPI


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--collectives", default="allreduce,broadcast")
    p.add_argument("--bytes", type=int, default=8, help="float32 bytes per rank (reduce-scatter: its output)")
    p.add_argument("--calls", type=int, default=50000)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    cx.init()
    n = max(1, a.bytes // 4)
    x, big = np.ones(n, np.float32), np.ones(n * cx.size(), np.float32)
    calls = {
        "allreduce": lambda: cx.allreduce(x),
        "broadcast": lambda: cx.broadcast(x, root=0),
        "reduce": lambda: cx.reduce(x, root=0),
        "allgather": lambda: cx.allgather(x),
        "reduce_scatter": lambda: cx.reduce_scatter(big),
    }
    chosen = a.collectives.split(",")
    times: dict[str, list[float]] = {c: [] for c in chosen}
    for _ in range(a.repeats):
        for c in chosen:  # the collectives take turns, so a noisy moment hits all of them
            f = calls[c]
            for _ in range(min(2000, a.calls)):
                f()
            MPI.COMM_WORLD.Barrier()
            start = time.perf_counter()
            for _ in range(a.calls):
                f()
            times[c].append((time.perf_counter() - start) / a.calls * 1e6)
    if cx.rank() == 0:
        print(" ".join(f"{c} {statistics.median(t):.3f}" for c, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
