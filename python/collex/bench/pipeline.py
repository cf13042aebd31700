"""The pipeline and sharded-optimizer parts of ``python -m collex.bench.parallel``.

Pipelines: equal dense stages (tanh layers, float32), every schedule at several
micro-batch counts; time per step (the slowest rank's median), the measured
bubble (the share of each rank's step outside forward/backward passes,
averaged over ranks) beside the schedule's formula, and the peak number of
live micro-batch activations per rank with their bytes. Each result is checked
against the unsplit model computed on rank 0.

ShardedOptimizer: stage 1 and 2 beside replicated data parallelism
(GradientReducer + the same Adam), optimizer-state bytes per rank and step time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from collex.parallel.stages import DenseStage


def mse(y, t):
    return float(((y - t) ** 2).sum() / len(y)), 2 * (y - t) / len(y)


def bubble_formula(schedule: str, p: int, m: int, v: int) -> float:
    """The idle share of a step, with backward = 2 forwards (and, for zb1p, its
    input and weight halves one forward each)."""
    if schedule in ("gpipe", "1f1b"):
        return (p - 1) / (m + p - 1)
    if schedule == "interleaved":
        return (p - 1) / (v * m + p - 1)
    return (p - 1) / (3 * m + p - 1)  # zb1p: (p-1) F of idle per 3m F of work


def pipeline_rows(cx: Any, mpi: Any, args: Any, plot_dir: str | None) -> tuple[list[dict], bool]:
    from threadpoolctl import threadpool_limits

    from collex import parallel as par

    comm = cx.world()
    p, rank = comm.size, comm.rank
    width, per_rank, micro = args.pipe_width, args.pipe_layers, args.pipe_micro
    rows, ok = [], True
    with threadpool_limits(limits=1, user_api="blas"):
        for schedule in ("gpipe", "1f1b", "interleaved", "zb1p"):
            v = 2 if schedule == "interleaved" else 1
            for m in args.pipe_m:
                if m < p or (schedule == "interleaved" and m % p):
                    continue
                layers = per_rank // v
                stages = [DenseStage(width, layers, 1000 + c * p + rank) for c in range(v)]
                pipe = par.Pipeline(stages if v > 1 else stages[0], comm, schedule, m, mse)
                rng = np.random.default_rng(5)
                x = rng.standard_normal((micro * m, width)).astype(np.float32)
                t = rng.standard_normal((micro * m, width)).astype(np.float32)
                times = []
                for k in range(args.repeats + 1):
                    for st in stages:
                        for g in st.grads:
                            g[...] = 0
                    mpi.Barrier()
                    t0 = time.perf_counter()
                    loss = pipe.step(x, t)
                    took = mpi.allreduce(time.perf_counter() - t0, op=_max())
                    if k:
                        times.append(took)
                ok &= _check_pipeline(mpi, stages, p, v, width, per_rank, x, t, loss)
                timelines = mpi.gather(pipe.timeline, root=0)
                peaks = mpi.gather(pipe.peak_live, root=0)
                if rank == 0:
                    bubble = statistics.mean(par.bubble_fraction(tl) for tl in timelines)
                    act_bytes = 2 * micro * width * 4 * layers  # x and y of every layer of a stage
                    rows.append({"schedule": schedule, "m": m, "v": v, "ms": statistics.median(times) * 1e3,
                                 "bubble": bubble, "formula": bubble_formula(schedule, p, m, v),
                                 "peak_live": max(peaks), "peak_bytes": max(peaks) * act_bytes})  # fmt: skip
                    if plot_dir and m == 8:
                        par.plot_timeline(
                            timelines, f"{plot_dir}/timeline-{schedule}-{p}ranks-m{m}.png",
                            f"{schedule}, {p} ranks, m={m} (bubble {bubble:.0%})",
                        )  # fmt: skip
    return rows, bool(mpi.allreduce(ok, op=_land()))


def _check_pipeline(mpi, stages, p, v, width, per_rank, x, t, loss) -> bool:
    """Compares every stage's gradients with the unsplit model's, on rank 0."""
    grads = mpi.gather([[g.copy() for g in st.grads] for st in stages], root=0)
    if mpi.rank != 0:
        return True
    layers = per_rank // v
    model = [DenseStage(width, layers, 1000 + s) for s in range(p * v)]
    h, saved = x, []
    for st in model:
        h, c = st.forward(h)
        saved.append(c)
    ref_loss, dy = mse(h, t)
    for st, c in zip(reversed(model), reversed(saved)):
        dy = st.backward(dy, c)
    good = abs(ref_loss - loss) <= 1e-4 * abs(ref_loss)
    for s, st in enumerate(model):
        got = grads[s % p][s // p]
        good &= all(np.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(got, st.grads))
    return good


class Adam:
    """Element-wise Adam, in place (the replicated and the sharded runs use it alike)."""

    def __init__(self, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t, self.m, self.v = lr, b1, b2, eps, 0, None, None

    def step(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(g) for g in grads]
            self.v = [np.zeros_like(g) for g in grads]
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)


def zero_rows(cx: Any, mpi: Any, args: Any) -> tuple[list[dict], bool]:
    from threadpoolctl import threadpool_limits

    from collex import parallel as par

    n = args.zero_params
    shapes = [(n // 8,)] * 8
    rank = mpi.rank

    def model():
        rng = np.random.default_rng(0)
        params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        return params, [np.zeros_like(p) for p in params]

    def fill(grads, k):
        for i, g in enumerate(grads):
            g[...] = 0.001 * (rank + 1 + k + i)

    variants = {}
    params, grads = model()
    reducer, adam = cx.GradientReducer(grads), Adam()

    def replicated(k):
        fill(grads, k)
        reducer.reduce()
        adam.step(params, grads)

    variants["replicated (GradientReducer + Adam)"] = (replicated, adam, params)
    for stage in (1, 2):
        ps, gs = model()
        opt = par.ShardedOptimizer(Adam(), ps, gs, stage=stage)

        def sharded(k, opt=opt, gs=gs):
            fill(gs, k)
            opt.step()

        variants[f"ShardedOptimizer stage {stage}"] = (sharded, opt, ps)
    times: dict[str, list[float]] = {k: [] for k in variants}
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(args.repeats + 1):
            for name, (fn, _, _) in variants.items():  # the variants take turns
                mpi.Barrier()
                t0 = time.perf_counter()
                fn(k)
                took = mpi.allreduce(time.perf_counter() - t0, op=_max())
                if k:
                    times[name].append(took)
    ref = variants["replicated (GradientReducer + Adam)"][2]
    ok = True
    for _, (_, _, ps) in variants.items():
        ok &= all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ps, ref))
    rows = []
    for name, (_, holder, _) in variants.items():
        state = (
            holder.state_bytes() if hasattr(holder, "state_bytes") else sum(a.nbytes for a in adam.m + adam.v)
        )
        rows.append({"variant": name, "ms": statistics.median(times[name]) * 1e3, "state_bytes": state})
    return rows, bool(mpi.allreduce(ok, op=_land()))


def _max() -> Any:
    from mpi4py import MPI

    return MPI.MAX


def _land() -> Any:
    from mpi4py import MPI

    return MPI.LAND
