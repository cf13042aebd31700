"""GradientReducer on a model's gradients as separate arrays against one flat
all-reduce of the same bytes, taking turns: a before/after comparison of the
reducer alone, steadier than the training bench's many variants. A second
reducer over a second set of separate arrays, made with huge_pages=False (its
gradients stay on the 4 KiB pages NumPy gave them), takes turns with them.

    mpirun -n 2 python bench/reducer_loop.py [--set resnet50|bert_base] [--turns 40]

Prints, on rank 0, the median time of each and the medians of the per-turn
ratios to the flat all-reduce.
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
    small_page_grads = [np.ones(s, np.float32) for s in load_shapes(a.set)]
    flat = np.ones(sum(g.size for g in grads), np.float32)
    reducer = cx.GradientReducer(grads)
    small_pages = cx.GradientReducer(small_page_grads, huge_pages=False)
    ways = {
        "reducer": reducer.reduce,
        "reducer, 4 KiB pages": small_pages.reduce,
        "flat": lambda: cx.allreduce(flat, op="avg"),
    }
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
    moved = MPI.COMM_WORLD.gather(reducer.huge_page_bytes)
    if cx.rank() == 0:
        total = sum(g.nbytes for g in grads)
        shares = ", ".join(f"{m / total:.0%}" for m in moved)
        print(f"{a.set}: {len(reducer.buckets)} buckets; on huge pages by huge_pages: {shares} (per rank)")
        for w, t in times.items():
            ratio = statistics.median(x / f for x, f in zip(t, times["flat"]))
            print(f"  {w:22s} {statistics.median(t) * 1e3:8.2f} ms   / flat {ratio:.2f}")


if __name__ == "__main__":
    main()
