"""Pipelines under mpirun: every schedule's gradients and loss against the
unsplit model on the whole batch (m = p, m > p, m not a multiple of p, an uneven
last micro-batch), the live contexts each schedule promises, ZB-H1 against
1F1B, and the failures: bad configurations, ranks that disagree, a gradient of
the wrong shape, a stage that raises."""

from __future__ import annotations

import time

import collex as cx
import numpy as np
from _harness import Cases, raises
from collex import parallel as par
from collex.parallel import schedules
from collex.parallel.stages import DenseStage

cx.init()
rank, size = cx.rank(), cx.size()
comm = cx.world()
cases = Cases("pipeline")
WIDTH = 6


def TanhStage(seed: int):
    """The stage under test: two tanh layers of WIDTH units, float64."""
    return DenseStage(WIDTH, 2, seed, dtype=np.float64, scale=0.5 * np.sqrt(WIDTH))


def mse(y, t):
    """The micro-batch's mean (over samples) squared error and its gradient."""
    return float(((y - t) ** 2).sum() / len(y)), 2 * (y - t) / len(y)


def reference(n_stages, x, t):
    """The unsplit model on the whole batch, in one process: (loss, grads per stage)."""
    stages = [TanhStage(100 + s) for s in range(n_stages)]
    saved, h = [], x
    for st in stages:
        h, c = st.forward(h)
        saved.append(c)
    loss, dy = mse(h, t)
    for st, c in zip(reversed(stages), reversed(saved)):
        dy = st.backward(dy, c)
    return loss, [st.grads for st in stages]


def batch(n):
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, WIDTH)), rng.standard_normal((n, WIDTH))


def run(schedule, m, n, v=1, steps=1):
    x, t = batch(n)
    mine = [TanhStage(100 + c * size + rank) for c in range(v)]
    pipe = par.Pipeline(mine if v > 1 else mine[0], comm, schedule=schedule, n_microbatches=m, loss_fn=mse)
    losses = [pipe.step(x if rank == 0 else None, t if rank == size - 1 else None) for _ in range(steps)]
    return pipe, mine, losses


def check_schedule(schedule, m, n, v=1):
    pipe, mine, losses = run(schedule, m, n, v, steps=2)
    loss, grads = reference(size * v, *batch(n))
    assert all(abs(lo - loss) < 1e-12 for lo in losses), (schedule, m, losses, loss)
    for c, st in enumerate(mine):
        for g, r in zip(st.grads, grads[c * size + rank]):
            # Two steps accumulated (the caller zeroes between steps; here it does not).
            assert np.allclose(g, 2 * r, rtol=1e-12, atol=1e-13), (schedule, m, n, c)
    return pipe, mine


def every_schedule():
    for schedule in ("gpipe", "1f1b", "zb1p"):
        for m, n in ((size, 3 * size), (size + 1, 2 * size + 5), (2 * size + 1, 4 * size + 3)):
            pipe, _ = check_schedule(schedule, m, n)
            if schedule == "1f1b":
                assert pipe.peak_live == min(size - rank, m), (pipe.peak_live, size - rank)
            elif schedule == "gpipe":
                assert pipe.peak_live == m
            elif schedule == "zb1p":
                assert pipe.peak_live <= min(size - rank, m)
    for m in (size, 2 * size):
        for v in (2, 3):
            pipe, _ = check_schedule("interleaved", m, 2 * m + 1, v=v)
            promised = min((size - rank - 1) * 2 + (v - 1) * size + 1, m * v)
            assert pipe.peak_live == promised, (m, v, pipe.peak_live, promised)


def zb1p_equals_1f1b():
    _, a, la = run("1f1b", 2 * size, 5 * size)
    _, b, lb = run("zb1p", 2 * size, 5 * size)
    assert abs(la[0] - lb[0]) < 1e-12
    for g, h in zip(a[0].grads, b[0].grads):
        assert np.allclose(g, h, rtol=1e-13, atol=1e-14)


def timeline_recorded():
    pipe, _, _ = run("1f1b", size, 2 * size)
    ops = [e["op"] for e in pipe.timeline]
    assert ops.count("F") == size and ops.count("B") == size, ops
    assert all(e["end"] >= e["start"] >= 0 for e in pipe.timeline)
    assert 0.0 <= par.bubble_fraction(pipe.timeline) < 1.0


def configuration_errors():
    st = TanhStage(0)
    if size > 1:
        raises(lambda: par.Pipeline(st, comm, "1f1b", size - 1, mse), ValueError, "fewer than")
        raises(lambda: par.Pipeline([st, st], comm, "interleaved", size + 1, mse), ValueError, "multiple")
    raises(lambda: par.Pipeline(st, comm, "interleaved", size, mse), ValueError, "v > 1")
    raises(lambda: par.Pipeline([st, st], comm, "1f1b", size, mse), ValueError, "one stage per rank")
    raises(lambda: par.Pipeline(st, comm, "zigzag", size, mse), ValueError, "schedule='zigzag'")
    raises(lambda: par.Pipeline(object(), comm, "gpipe", size, mse), ValueError, "lacks forward")
    # Ranks that disagree all raise, none waits.
    mine = "gpipe" if rank == 0 else "1f1b"
    if size > 1:
        disagree = ("disagree", "rank 0: gpipe")
        raises(lambda: par.Pipeline(st, comm, mine, size, mse), ValueError, *disagree)
        m = size if rank else 2 * size
        raises(lambda: par.Pipeline(st, comm, "1f1b", m, mse), ValueError, "disagree")
        stages = [st, st] if rank else [st, st, st]
        raises(lambda: par.Pipeline(stages, comm, "interleaved", size, mse), ValueError, "disagree", "v=3")


class WrongGradient(DenseStage):
    def __init__(self, seed):
        super().__init__(WIDTH, 2, seed, dtype=np.float64)

    def backward(self, dy, saved):
        dx = super().backward(dy, saved)
        return np.zeros((dx.shape[0], WIDTH + 1))


class Exploding(DenseStage):
    def __init__(self, seed):
        super().__init__(WIDTH, 2, seed, dtype=np.float64)

    def forward(self, x):
        raise RuntimeError("the stage exploded")


def failures():
    """A gradient of the wrong shape: CollectiveMismatch on the two ranks involved,
    PipelineAborted elsewhere; a stage that raises: its error there, PipelineAborted
    elsewhere; both within seconds (COLLEX_TIMEOUT is 60 s here)."""
    if size < 2:
        return
    x, t = batch(4 * size)
    for bad, faulty in ((WrongGradient, 1), (Exploding, size - 1)):
        st = bad(0) if rank == faulty else TanhStage(0)
        pipe = par.Pipeline(st, comm, "1f1b", size, mse)
        t0 = time.monotonic()
        try:
            pipe.step(x, t)
        except cx.CollectiveMismatch as e:
            assert bad is WrongGradient and rank in (faulty, faulty - 1), (rank, str(e))
            assert f"shape ({len(x) // size}, {WIDTH + 1})" in str(e), str(e)
        except par.PipelineAborted as e:
            assert "failed" in str(e)
        except RuntimeError as e:
            assert bad is Exploding and rank == faulty and "exploded" in str(e), str(e)
        else:
            raise AssertionError(f"rank {rank}: {bad.__name__} raised nothing")
        assert time.monotonic() - t0 < 15, time.monotonic() - t0
        raises(lambda p=pipe: p.step(x, t), par.PipelineAborted, "earlier step failed")
        comm.barrier()


def schedules_simulated():
    for p in (2, 3, 4):
        for m in (p, p + 1, 3 * p):
            one = schedules.simulate("1f1b", p, m)
            zb = schedules.simulate("zb1p", p, m)
            g = schedules.simulate("gpipe", p, m)
            assert abs(g["bubble"] - (p - 1) / (m + p - 1)) < 1e-9  # F=1, B=2: (p-1)/(m+p-1)
            assert abs(one["makespan"] - g["makespan"]) < 1e-9
            assert zb["makespan"] - sum(zb["busy"]) / p <= (one["makespan"] - sum(one["busy"]) / p) / 3 + 1e-9
        for v in (2, 3):
            it = schedules.simulate("interleaved", p, 2 * p, v, cost={"F": 1 / v, "B": 2 / v})
            assert abs(it["bubble"] - (p - 1) / (v * 2 * p + p - 1)) < 0.05, (p, v, it["bubble"])


for label, fn in [
    ("every schedule", every_schedule),
    ("zb1p equals 1f1b", zb1p_equals_1f1b),
    ("timeline", timeline_recorded),
    ("configuration errors", configuration_errors),
    ("failures", failures),
    ("schedules simulated", schedules_simulated),
]:
    cases.run(label, fn)
cases.finish()
