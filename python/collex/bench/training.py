"""mpirun -n N python -m collex.bench.training: the gradient exchange of real
models, measured every way a user could do it, in one run on the same ranks.

For each gradient set (ResNet-50 and BERT-base per-layer shapes, and one 64 MiB
gradient) it times one step's exchange, averaging every gradient over the ranks:

  reducer            collex.GradientReducer on separate gradient arrays (25 MiB
                     buckets; everything included: on one node the buckets are
                     read in place, the gradients' memory put on huge pages
                     once, at construction)
  reducer, flat      the same with gradients from collex.zeros_like_each (views of
                     one symmetric buffer): buckets are reduced where they lie as
                     single spans, nothing is packed
  reducer, one alloc the same with gradients that are separate views (gaps between
                     them) into one large NumPy array: what the memory's page size
                     does to reading peers' gradients in place
  reducer fp16/bf16  compressed (half the bytes on the wire), error feedback on
  per-tensor collex  collex.allreduce(g, op="avg") for every gradient
  flat ideal         one collex.allreduce of all the bytes in a single flat array
  flat fp16 wire     one collex.allreduce of a float16 array as long: the transfer
                     alone that fp16 compression leaves, without its conversions
  per-tensor mpi4py  comm.Allreduce(MPI.IN_PLACE, g); g /= size for every gradient:
                     what a user writes without collex

and, for the model sets, how much of the exchange hides behind a simulated
backward pass (per-layer NumPy work, ready(i) after each layer). Each variant's
result is checked once on known inputs; then the variants' timed repeats take
turns (timing.timed_together), so their ratios compare the same minutes. No
variant's turn writes the arrays of the reducer or the flat ideal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

from .timing import timed, timed_together

SHAPES = os.path.join(os.path.dirname(__file__), "shapes")
MIB = 1 << 20
# Untimed steps before each variant's timed ones: a training run's first
# seconds. On one node the copy-way chooser settles each size class by its
# 16th operation (a first window of 12, then a probe of the other way for 4),
# and a reducer's bucket is one operation of its class per step; timed earlier,
# the probe of a way that loses by 3x lands in the repeats.
WARMUP_STEPS = 16


def load_shapes(name: str) -> list[tuple[int, ...]]:
    if name == "64MiB":
        return [(16 * MIB,)]
    with open(os.path.join(SHAPES, f"{name}.json")) as f:
        return [tuple(s) for _, s in json.load(f)["shapes"]]


class GradientSet:
    """One gradient set, laid out as separate arrays, views of one symmetric buffer, views of
    one ordinary buffer and one flat array; the per-tensor and compressed variants have
    separate arrays of their own (`others`): a turn that writes the arrays another variant
    reduces next leaves them in its core's cache, which only that variant would pay for
    (bench/README.md, the end of "Shared pages for ordinary arrays")."""

    def __init__(self, cx, shapes: list[tuple[int, ...]]):
        self.shapes = shapes
        self.counts = [math.prod(s) for s in shapes]
        self.total = sum(self.counts)
        self.separate = [np.zeros(s, np.float32) for s in shapes]
        self.others = [np.zeros(s, np.float32) for s in shapes]
        self.flat_views = cx.zeros_like_each(self.separate)  # views of one symmetric buffer
        self.ideal = np.zeros(self.total, np.float32)
        gap = 16  # elements between views, so that no two are adjacent
        self.one_alloc_buffer = np.zeros(self.total + gap * len(shapes), np.float32)
        self.one_alloc, at = [], 0
        for s, n in zip(shapes, self.counts):
            self.one_alloc.append(self.one_alloc_buffer[at : at + n].reshape(s))
            at += n + gap
        self.half = np.zeros(self.total, np.float16)

    @property
    def nbytes(self) -> int:
        return self.total * 4


def variants(cx, comm, mpi, g: GradientSet) -> dict[str, tuple[Any, list[np.ndarray]]]:
    """name -> (one step's exchange, the arrays it averages)."""
    size = comm.size
    reducers = {
        "reducer": (g.separate, None),
        "reducer, flat": (g.flat_views, None),
        "reducer, one alloc": (g.one_alloc, None),
        "reducer fp16": (g.others, "fp16"),
        "reducer bf16": (g.others, "bf16"),
    }
    out: dict[str, tuple[Any, list[np.ndarray]]] = {}
    for name, (grads, compression) in reducers.items():
        r = cx.GradientReducer(grads, compression=compression)
        out[name] = (r.reduce, grads)

    def per_tensor_collex():
        for a in g.others:
            cx.allreduce(a, op="avg")

    def flat_ideal():
        cx.allreduce(g.ideal, op="avg")

    def flat_fp16_wire():
        cx.allreduce(g.half, op="avg")

    def per_tensor_mpi4py():
        for a in g.others:
            comm.Allreduce(mpi.IN_PLACE, a)
            a /= size

    out["per-tensor collex"] = (per_tensor_collex, g.others)
    out["flat ideal"] = (flat_ideal, [g.ideal])
    out["flat fp16 wire"] = (flat_fp16_wire, [g.half])
    out["per-tensor mpi4py"] = (per_tensor_mpi4py, g.others)
    return out


def check(step, arrays: list[np.ndarray], rank: int, size: int, tolerance: float) -> int:
    """Elements off the exact average after one step from inputs rank + 1 (summed over ranks)."""
    for a in arrays:
        a[...] = rank + 1
    step()
    want = (size + 1) / 2
    wrong = sum(int(np.count_nonzero(np.abs(a - want) > tolerance * want)) for a in arrays)
    for a in arrays:  # back to varied values for timing
        a[...] = np.float32(0.5) * (rank + 1)
    return wrong


def overlap(cx, comm, g: GradientSet, work: int, repeats: int) -> dict[str, float]:
    """Times a simulated backward pass alone, the exchange alone, and the two
    interleaved (ready(i) after each layer's work); hidden = the share of the
    exchange's time that the interleaving saved."""
    grads = g.separate
    sources = [np.full(a.shape, 0.5, np.float32) for a in grads]
    reducer = cx.GradientReducer(grads)

    def backward(ready=None):
        for i in range(len(grads) - 1, -1, -1):
            # Per-layer work proportional to the layer's size, as a backward pass's is.
            np.multiply(sources[i], 1.0, out=grads[i])
            for _ in range(work - 1):
                np.multiply(grads[i], 1.0, out=grads[i])
            if ready is not None:
                ready(i)

    def both():
        backward(reducer.ready)
        reducer.wait()

    compute = timed(comm, backward, warmup=1, iters=1, repeats=repeats)
    exchange = timed(comm, reducer.reduce, warmup=WARMUP_STEPS, iters=1, repeats=repeats)
    together = timed(comm, both, warmup=1, iters=1, repeats=repeats)
    hidden = (compute + exchange - together) / exchange if exchange > 0 else 0.0
    return {"compute_s": compute, "exchange_s": exchange, "together_s": together, "hidden": hidden}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m collex.bench.training", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="resnet50,bert_base,64MiB", help="gradient sets, comma separated")
    ap.add_argument("-R", "--repeats", type=int, default=5, help="timed repeats; the median is reported")
    ap.add_argument("--work", type=int, default=4, help="passes over each layer in the simulated backward")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--plot", help="write a bar chart of the step times to this PNG")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print medians over these runs, and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0

    from mpi4py import MPI

    import collex as cx

    cx.init()
    comm = MPI.COMM_WORLD.Dup()
    rank, size = comm.rank, comm.size
    results: list[dict[str, Any]] = []
    wrong_total = 0
    for name in args.sets.split(","):
        g = GradientSet(cx, load_shapes(name))
        if rank == 0:
            print(f"\n# {name}: {len(g.shapes)} gradients, {g.nbytes / MIB:.1f} MiB float32, {size} ranks")
            print(f"{'variant':<20} {'ms/step':>9} {'x flat ideal':>13} {'x mpi4py':>9} {'wrong':>6}")
        wrong: dict[str, int] = {}
        ways = variants(cx, comm, MPI, g)
        for variant, (step, arrays) in ways.items():
            tolerance = 1e-2 if ("fp16" in variant or "bf16" in variant) else 0.0
            if variant == "flat fp16 wire":
                tolerance = 1e-3  # float16 holds (size + 1) / 2 exactly for small sizes, not always
            wrong[variant] = comm.allreduce(check(step, arrays, rank, size, tolerance))
        # The variants take turns, so that each ratio to the flat ideal compares
        # times from the same minutes of a machine whose speed drifts.
        steps = [step for step, _ in ways.values()]
        timed_steps = timed_together(comm, steps, warmup=WARMUP_STEPS, iters=1, repeats=args.repeats)
        times = dict(zip(ways, timed_steps))
        row: dict[str, Any] = {"set": name, "gradients": len(g.shapes), "bytes": g.nbytes, "ranks": size,
                               "seconds": times, "wrong": wrong}  # fmt: skip
        if name != "64MiB":
            row["overlap"] = overlap(cx, comm, g, args.work, args.repeats)
        results.append(row)
        wrong_total += sum(wrong.values())
        if rank == 0:
            for variant, t in times.items():
                print(
                    f"{variant:<20} {1e3 * t:>9.2f} {t / times['flat ideal']:>12.2f}x "
                    f"{times['per-tensor mpi4py'] / t:>8.2f}x {wrong[variant]:>6}"
                )
            if "overlap" in row:
                o = row["overlap"]
                print(
                    f"overlap: backward {1e3 * o['compute_s']:.1f} ms, "
                    f"exchange {1e3 * o['exchange_s']:.1f} ms, interleaved {1e3 * o['together_s']:.1f} ms: "
                    f"{100 * o['hidden']:.0f}% of the exchange hidden"
                )
        del g
    if rank == 0:
        meta = {"command": " ".join(sys.argv), "ranks": size, "date": time.strftime("%Y-%m-%d"),
                "kernels": cx.kernel_isa(), "copy_loop": cx._core.kernel_copy_loop()}  # fmt: skip
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
        if args.plot:
            plot(args.plot, results, size)
        if wrong_total:
            print(f"collex.bench.training: {wrong_total} wrong elements", file=sys.stderr)
    comm.Free()
    cx.finalize()
    return 1 if wrong_total else 0


def summarize(paths: list[str]) -> str:
    """A Markdown table of the medians over several runs' JSON files: time per
    step, and the ratios to the flat ideal and to per-tensor mpi4py taken within
    each run (side by side) before the median."""
    import statistics

    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f)["results"])
    lines = ["| set | variant | ms/step | × flat ideal | speed-up over per-tensor mpi4py | wrong |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for k, row in enumerate(runs[0]):
        rows = [run[k] for run in runs]
        for variant in row["seconds"]:
            t = [r["seconds"][variant] for r in rows]
            ideal = [r["seconds"]["flat ideal"] / r["seconds"][variant] for r in rows]
            mpi = [r["seconds"]["per-tensor mpi4py"] / r["seconds"][variant] for r in rows]
            wrong = sum(r["wrong"][variant] for r in rows)
            lines.append(
                f"| {row['set']} | {variant} | {1e3 * statistics.median(t):.2f} | "
                f"{1 / statistics.median(ideal):.2f} | {statistics.median(mpi):.2f} | {wrong} |"
            )
        if "overlap" in row:
            hidden = statistics.median(r["overlap"]["hidden"] for r in rows)
            share = f"{100 * hidden:.0f} %"
            lines.append(f"| {row['set']} | overlap: share of the exchange hidden | | | | {share} |")
    return "\n".join(lines)


def plot(path: str, results: list[dict[str, Any]], size: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, row in zip(axes[0], results):
        names = list(row["seconds"])
        ms = [1e3 * row["seconds"][n] for n in names]
        ax.barh(names, ms, color=["tab:blue" if n.startswith("reducer") else "tab:gray" for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("ms per step")
        ax.set_title(f"{row['set']}: {row['bytes'] / MIB:.0f} MiB, {size} ranks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
