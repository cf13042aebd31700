"""Train the character-level GPT of model.py in three dimensions with collex.

    pip install '.[examples]'
    mpirun -n 4 python -m mpi4py examples/gpt/train.py --grids 1x2x2,2x2x1,2x1x2,4x1x1 --plot gpt.png
    python examples/gpt/train.py --steps 600 --generate 300          # one process

Each grid is dp x pp x tp: the blocks cut into pp pipeline stages (schedule
--schedule, --microbatches per step), each block tensor-parallel over tp ranks,
and dp replicas, each taking 1/dp of every global batch, whose gradients are
averaged by a GradientReducer (or, with --zero 1|2, a ShardedOptimizer keeps
1/dp of Adam's state per rank). The same model (every parameter drawn whole
from its own seed) is also trained on one process on the whole batch, and each
grid's loss curve is compared with it step by step (--check fails the run when
any step strays further). The text is the source of a few standard-library
modules; after training, the first grid's model is gathered onto rank 0 and
writes --generate characters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import collex as cx  # noqa: E402
from collex import parallel as par  # noqa: E402
from data import CharData  # noqa: E402
from mlp import Adam  # noqa: E402
from model import Stage, cross_entropy, split_blocks  # noqa: E402
from mpi4py import MPI  # noqa: E402


def train(cfg: dict, data: CharData, args, grid: par.Grid) -> tuple[list[float], list[float], Stage]:
    """The loss of every step (on every rank), the step times, and this rank's stage."""
    tp, pp, dp = grid.comm("tp"), grid.comm("pp"), grid.comm("dp")
    first, last = split_blocks(cfg["layers"], pp.size)[pp.rank]
    stage = Stage(cfg, first, last, tp)
    pipe = par.Pipeline(stage, pp, args.schedule, n_microbatches=args.microbatches, loss_fn=cross_entropy)
    if args.zero:
        opt = par.ShardedOptimizer(Adam(lr=args.lr), stage.params, stage.grads, comm=dp, stage=args.zero)
        update = opt.step
    else:
        reducer, adam = cx.GradientReducer(stage.grads, comm=dp), Adam(lr=args.lr)

        def update():
            reducer.reduce()
            adam.step(stage.params, stage.grads)

    rng = np.random.default_rng(1234)  # every rank draws the same batches
    share = args.batch // dp.size
    losses, times = [], []
    for _ in range(args.steps):
        x, y = data.batch(rng, args.batch, cfg["seq"])
        rows = slice(dp.rank * share, (dp.rank + 1) * share)
        t0 = time.perf_counter()
        stage.zero_grad()
        loss = pipe.step(x[rows] if pp.rank == 0 else None, y[rows] if last == cfg["layers"] else None)
        update()
        times.append(time.perf_counter() - t0)
        if dp.size > 1:
            loss = float(dp.allreduce(np.array([loss]), op="avg")[0])
        losses.append(loss)
    return losses, times, stage


def gather_model(cfg: dict, grid: par.Grid, stage: Stage, solo) -> Stage | None:
    """The whole model on world rank 0 (a one-process Stage), from the ranks of replica 0."""
    world = MPI.COMM_WORLD
    tp, pp = grid.comm("tp"), grid.comm("pp")
    if grid.rank("dp") == 0:
        arrays = []
        for part in stage.parts:
            arrays += part.full_params() if hasattr(part, "full_params") else [p.copy() for p in part.params]
        if tp.rank == 0 and world.rank != 0:
            world.send(arrays, dest=0, tag=77)
    if world.rank != 0:
        return None
    whole = Stage(cfg, 0, cfg["layers"], solo)
    pieces = []
    for k in range(pp.size):
        sender = k * tp.size  # coordinates (dp 0, pp k, tp 0), the last axis fastest
        pieces += arrays if sender == 0 else world.recv(source=sender, tag=77)
    for dst, src in zip(whole.params, pieces):
        dst[...] = src
    return whole


def generate(model: Stage, data: CharData, cfg: dict, n: int, prompt: str = "def ") -> str:
    rng = np.random.default_rng(0)
    ids = list(data.encode(prompt))
    for _ in range(n):
        ctx = np.array([ids[-cfg["seq"] :]], np.int64)
        logits, _ = model.forward(ctx)
        z = logits[0, -1] / 0.8
        p = np.exp(z - z.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return data.decode(ids)


def sleep_until_all_arrive(comm) -> None:
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.002)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", default="", help="dp x pp x tp grids, comma separated (default: all ranks dp)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16, help="global batch of sequences")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", default="1f1b")
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--zero", type=int, default=0, choices=(0, 1, 2), help="ShardedOptimizer stage (0: off)")
    ap.add_argument("--check", type=float, help="exit 1 if any step's loss strays more than this")
    ap.add_argument("--generate", type=int, default=200, help="characters to write after training")
    ap.add_argument("--plot", help="write the loss curves to this PNG")
    args = ap.parse_args(argv)

    cx.init()
    world = MPI.COMM_WORLD
    size, rank = world.size, world.rank
    data = CharData()
    cfg = {
        "vocab": data.vocab,
        "seq": args.seq,
        "d": args.d_model,
        "heads": args.heads,
        "layers": args.layers,
    }
    grids = [tuple(int(k) for k in g.split("x")) for g in args.grids.split(",") if g] or [(size, 1, 1)]
    for g in grids:
        if len(g) != 3 or g[0] * g[1] * g[2] != size:
            raise SystemExit(f"grid {g}: dp x pp x tp must multiply to the {size} ranks")

    # One process on the whole batch: rank 0 alone, the others asleep meanwhile.
    solo = cx.world().split(0 if rank == 0 else None)
    curves, times, worst = {}, {}, {}
    if rank == 0:
        ref, t, ref_stage = train(cfg, data, args, par.Grid(dp=1, comm=solo))
        curves["1 process"], times["1 process"] = ref, t
    sleep_until_all_arrive(world)
    ref = world.bcast(curves.get("1 process"), root=0)
    model = None
    for dp, pp, tp in grids:
        grid = par.Grid(dp=dp, pp=pp, tp=tp)
        label = f"dp {dp} x pp {pp} x tp {tp}"
        losses, t, stage = train(cfg, data, args, grid)
        curves[label], times[label] = losses, t
        worst[label] = max(abs(a - b) for a, b in zip(losses, ref))
        if model is None and args.generate:
            model = gather_model(cfg, grid, stage, solo) or 0
    ok = True
    if rank == 0:
        print(
            f"char GPT: vocab {cfg['vocab']}, d {cfg['d']}, {cfg['heads']} heads, {cfg['layers']} blocks, "
            f"seq {cfg['seq']}, batch {args.batch}, {args.steps} steps of Adam, {args.schedule} with "
            f"{args.microbatches} micro-batches"
            + (f", ShardedOptimizer stage {args.zero}" if args.zero else "")
        )
        print(f"{'run':<24} {'first loss':>10} {'last loss':>10} {'max |dloss|':>12} {'ms/step':>8}")
        for label, c in curves.items():
            dev = worst.get(label, 0.0)
            ms = 1e3 * statistics.median(times[label][1:] or times[label])
            print(f"{label:<24} {c[0]:>10.4f} {c[-1]:>10.4f} {dev:>12.2e} {ms:>8.1f}")
            if args.check is not None and dev > args.check:
                ok = False
        if model:
            first = next(iter(worst)) if worst else "1 process"
            print(
                f"\ntext written by the model trained as {first}:\n"
                + generate(model, data, cfg, args.generate)
            )
        if args.plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 4))
            for label, c in curves.items():
                ax.plot(c, label=label, lw=2.5 if label == "1 process" else 1.0)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (mean over the global batch)")
            ax.set_title(f"char GPT on {size} ranks, every grid against one process")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.plot, dpi=110)
            print(f"wrote {args.plot}")
    ok = world.allreduce(ok, op=MPI.LAND)
    cx.finalize()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
