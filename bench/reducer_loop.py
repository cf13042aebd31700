"""GradientReducer on a model's gradients as separate arrays against one flat
all-reduce of the same bytes, taking turns: a before/after comparison of the
reducer alone, steadier than the training bench's many variants.

    mpirun -n 2 python bench/reducer_loop.py [--set resnet50|bert_base] [--turns 40]

Prints, on rank 0, the median time of each and the median of the per-turn ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import collex as cx
import numpy as np
from collex.bench.training import load_shapes
from mpi4py import MPI


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="resnet50", choices=["resnet50", "bert_base"])
    p.add_argument("--turns", type=int, default=40)
    a = p.parse_args()
    cx.init()
    grads = [np.ones(s, np.float32) for s in load_shapes(a.set)]
    flat = np.ones(sum(g.size for g in grads), np.float32)
    reducer = cx.GradientReducer(grads)
    ways = {"reducer": reducer.reduce, "flat": lambda: cx.allreduce(flat, op="avg")}
    for f in ways.values():
        f()
        f()
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(a.turns):
        for w, f in ways.items():
            MPI.COMM_WORLD.Barrier()
            start = time.perf_counter()
            f()
            times[w].append(time.perf_counter() - start)
    if cx.rank() == 0:
        ratio = statistics.median(r / f for r, f in zip(times["reducer"], times["flat"]))
        print(f"{a.set}: reducer {statistics.median(times['reducer']) * 1e3:.2f} ms, "
              f"flat {statistics.median(times['flat']) * 1e3:.2f} ms, reducer / flat {ratio:.2f} "
              f"({len(reducer.buckets)} buckets)")  # fmt: skip


if __name__ == "__main__":
    main()
