"""What splitting one step's exchange into buckets costs by itself, with the
memory held fixed: every way below all-reduces (averages) the same bytes of one
ordinary NumPy array, so the memory draw (bench/memory_draw.py: identical
arrays on the project's VM differ by up to 1.2x by the memory they get) cancels
out. Before each way's turn every rank writes a 64 MiB scratch array, so that
no way finds in the cache what the way before it left.

    mpirun -n 2 python bench/bucket_cost.py [--set resnet50|bert_base] [--turns 30]

The ways, taking turns:

  flat          one collex.allreduce of the whole array (the training bench's flat ideal)
  6 slices      six equal slices, one blocking all-reduce after another
  buckets       the slices GradientReducer's buckets cover, in its launch order, blocking
  buckets, async  the same, all queued at once (async_op=True) on the engine's thread,
                waited for in order
  reducer       GradientReducer over the gradients as contiguous views of the array

Prints, on rank 0, each way's median time and the median of its per-turn
ratios to flat (the slower rank's time counts each turn); fails if any result
is off the exact average.
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
    p.add_argument("--turns", type=int, default=30)
    a = p.parse_args()
    cx.init()
    comm = MPI.COMM_WORLD
    shapes = load_shapes(a.set)
    counts = [int(np.prod(s)) for s in shapes]
    whole = np.full(sum(counts), comm.rank + 1, np.float32)
    views, at = [], 0
    for s, n in zip(shapes, counts):
        views.append(whole[at : at + n].reshape(s))
        at += n
    reducer = cx.GradientReducer(views)
    starts = np.concatenate([[0], np.cumsum(counts)])
    spans = [(min(starts[i] for i in b), max(starts[i + 1] for i in b)) for b in reducer.buckets]
    buckets = [whole[lo:hi] for lo, hi in spans]  # in launch order
    cuts = np.linspace(0, whole.size, 7).astype(int)
    slices = [whole[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]

    def one_by_one(parts):
        for x in parts:
            cx.allreduce(x, op="avg")

    def queued():
        for w in [cx.allreduce(x, op="avg", async_op=True) for x in buckets]:
            w.wait()

    ways = {
        "flat": lambda: cx.allreduce(whole, op="avg"),
        "6 slices": lambda: one_by_one(slices),
        "buckets": lambda: one_by_one(buckets),
        "buckets, async": queued,
        "reducer": reducer.reduce,
    }
    for _ in range(4):  # the array moves onto shared pages on its fourth call
        for f in ways.values():
            f()
    # Written before each turn, so that no way finds in the cache what the way
    # before it left there (a way starting where the last one ended ran 3 % faster).
    evict = np.zeros(16 << 20, np.float32)
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(a.turns):
        for w, f in ways.items():
            evict += 1
            comm.Barrier()
            start = time.perf_counter()
            f()
            times[w].append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    # Averaging equal values keeps them: every element is the first step's average.
    wrong = comm.allreduce(int(np.count_nonzero(whole != np.float32((comm.size + 1) / 2))))
    if comm.rank == 0:
        print(f"{a.set}: {len(buckets)} buckets, {whole.nbytes / 2**20:.1f} MiB, {comm.size} ranks")
        for w, t in times.items():
            ratio = statistics.median(x / f for x, f in zip(t, times["flat"]))
            print(f"  {w:16s} {statistics.median(t) * 1e3:8.2f} ms   / flat {ratio:.3f}")
        print(f"wrong: {wrong}")
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
