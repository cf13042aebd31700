"""The pipeline executor: runs one rank's list of actions (schedules.py), moving
activations forward and their gradients back with collex's point-to-point."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from . import schedules
from .agree import agree
from .regions import array_module

# A forward message is preceded by its description: ndim, dtype, device, shape.
_META = 12
_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64", "bool")
_ABORT_TAG = (1 << 20) - 1


def _dtype_code(dt: Any) -> int:
    name = np.dtype(dt).name
    if name not in _DTYPES:
        raise TypeError(f"collex.parallel.Pipeline: activations of dtype {name} cannot be sent")
    return _DTYPES.index(name)


def _dtype(code: int) -> Any:
    name = _DTYPES[code]
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


class PipelineAborted(RuntimeError):
    """Raised on the other ranks of a pipeline when one rank's step failed."""


class Pipeline:
    """Runs a model split into consecutive stages on consecutive ranks of `comm`.

    ``stages``: this rank's stage, or for ``schedule="interleaved"`` its list of v
    stages (rank r holds stages r, r + p, ..., r + (v-1)p). A stage is any object
    with ``forward(x) -> (y, ctx)``, ``backward(dy, ctx) -> dx`` and
    ``params``/``grads`` lists; "zb1p" also needs ``backward_input(dy, ctx) ->
    (dx, wctx)`` and ``backward_weight(wctx)``. ``loss_fn(y, target) -> (loss,
    dy)`` is applied to the last stage's output (needed on the last rank).

    ``step(x, target)`` splits the global batch into ``n_microbatches`` along
    axis 0 (as numpy.array_split does; x is used on the first rank, target on
    the last, the others may pass None), runs the schedule, accumulates every
    stage's grads over the micro-batches, each weighted by its share of the
    batch, and returns the batch's mean loss on every rank. Schedules: "gpipe",
    "1f1b", "interleaved" (m a multiple of p) and "zb1p" (ZB-H1). Every message
    is checked (shape, dtype); an error on one rank (a stage raising, a
    gradient of the wrong shape) raises on every rank of the pipeline, and the
    pipeline is unusable afterwards. ``timeline``: the last step's forwards,
    backwards and waits, with start and end times (seconds from the step's
    start); ``peak_live``: the most forward contexts held at once.
    """

    def __init__(
        self,
        stages: Any,
        comm: Any,
        schedule: str = "1f1b",
        n_microbatches: int | None = None,
        loss_fn: Callable | None = None,
    ):
        here = f"collex.parallel.Pipeline [rank {comm.rank}]"
        self.stages = list(stages) if isinstance(stages, (list, tuple)) else [stages]
        self.comm, self.schedule, self.loss_fn = comm, schedule, loss_fn
        p, v = comm.size, len(self.stages)
        m = p if n_microbatches is None else n_microbatches
        if schedule not in schedules.SCHEDULES:
            raise ValueError(f"{here}: schedule={schedule!r}: expected one of {schedules.SCHEDULES}")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"{here}: n_microbatches={m!r}: expected an int >= 1")
        # Every rank checks the same things in the same order, then they compare:
        # a rank that disagrees makes every rank raise, none waits.
        problem = ""
        if m < p:
            problem = f"n_microbatches={m} is fewer than the {p} pipeline ranks"
        elif schedule == "interleaved" and v < 2:
            problem = "schedule 'interleaved' needs a list of v > 1 stages per rank"
        elif schedule == "interleaved" and m % p:
            problem = f"schedule 'interleaved': n_microbatches={m} is not a multiple of the {p} ranks"
        elif schedule != "interleaved" and v != 1:
            problem = f"schedule {schedule!r} runs one stage per rank, got {v}"
        for k, st in enumerate(self.stages):
            need = ["forward", "backward"]
            if schedule == "zb1p":
                need += ["backward_input", "backward_weight"]
            missing = [n for n in need if not callable(getattr(st, n, None))]
            if missing and not problem:
                problem = f"stage {k} lacks {', '.join(missing)}"
        if comm.rank == p - 1 and not callable(loss_fn) and not problem:
            problem = "the last stage's rank needs a loss_fn"
        if 3 * p * v * m + 1 > _ABORT_TAG and not problem:
            problem = f"{p * v} stages x {m} micro-batches need more message tags than collex has"

        def describe(words) -> str:
            return f"{schedules.SCHEDULES[int(words[0])]} m={int(words[1])} v={int(words[2])}"

        agree(comm, here, [schedules.SCHEDULES.index(schedule), m, v], problem, describe)
        # The pipeline's messages travel on a communicator of its own: a failed
        # step leaves receives posted that nobody will match, and they must not
        # take the messages of another pipeline (or of the caller) on `comm`.
        self.comm = comm.split(0, key=comm.rank)
        self.n_microbatches, self.v, self.n_stages = m, v, p * v
        self.actions = schedules.build(schedule, p, m, comm.rank, v)
        self.timeline: list[dict] = []
        self.peak_live = 0
        self._broken = ""

    # ---- messages ----

    def _tag(self, kind: int, stage: int, mb: int) -> int:
        return (kind * self.n_stages + stage) * self.n_microbatches + mb

    def _rank_of(self, stage: int) -> int:
        return stage % self.comm.size

    def _check_abort(self) -> None:
        for peer, (work, flag) in list(self._abort_in.items()):
            if work.done():
                work.wait()
                del self._abort_in[peer]
                if flag[0]:
                    self._broken = f"rank {peer} failed"
                    raise PipelineAborted(
                        f"collex.parallel.Pipeline [rank {self.comm.rank}]: rank {peer} of the pipeline "
                        "failed in this step (see its error); the step was abandoned"
                    )
                self._finished_peers.add(peer)

    def _give_up_after(self, start: float, what: str) -> None:
        """Raises when a wait has made no progress for the communicator's timeout."""
        if time.perf_counter() - start > self.comm.timeout:
            raise PipelineAborted(
                f"collex.parallel.Pipeline [rank {self.comm.rank}]: {what}: nothing came for "
                f"{self.comm.timeout:.0f} s"
            )

    def _wait(self, work: Any, what: tuple) -> Any:
        """Waits for `work`, running deferred weight passes meanwhile, and gives up
        when another rank reports a failure or nothing comes for the timeout."""
        start = time.perf_counter()
        polls = 0
        while not work.done():
            self._check_abort()
            if polls & 1023 == 1023:
                self._give_up_after(start, f"waiting for {what[0]} of micro-batch {what[1]}")
            if self._run_deferred_w():
                continue
            polls += 1
            if polls > 64:
                time.sleep(0.0001 if polls < 2000 else 0.001)
        result = work.wait()
        end = time.perf_counter()
        if end - start > 20e-6:
            self._record("wait", what[0], what[1], start, end)
        return result

    def _send(self, a: Any, stage: int, kind: int, mb: int, describe: bool) -> None:
        dst = self._rank_of(stage)
        if describe:
            meta = np.zeros(_META, np.int64)
            meta[0], meta[1] = a.ndim, _dtype_code(a.dtype)
            meta[2] = 1 if hasattr(a, "__cuda_array_interface__") else 0
            meta[3 : 3 + a.ndim] = a.shape
            self._sends.append(self.comm.isend(meta, dst, self._tag(0, stage, mb)))
        a = array_module(a).ascontiguousarray(a)
        self._sends.append(self.comm.isend(a, dst, self._tag(kind, stage, mb)))

    def _receive_forward(self, stage: int, mb: int) -> Any:
        src = self._rank_of(stage - 1)
        meta = np.zeros(_META, np.int64)
        self._wait(self.comm.irecv(meta, src, self._tag(0, stage, mb)), ("F", mb))
        ndim = int(meta[0])
        shape = tuple(int(s) for s in meta[3 : 3 + ndim])
        if meta[2]:
            import cupy as xp
        else:
            xp = np
        buf = xp.empty(shape, _dtype(int(meta[1])))
        return self._wait(self.comm.irecv(buf, src, self._tag(1, stage, mb)), ("F", mb))

    def _receive_backward(self, stage: int, mb: int, shape: tuple, dtype: Any, xp: Any) -> Any:
        # The gradient must have the shape and dtype of this stage's output for the
        # micro-batch: the receive checks it, and a mismatch raises on both ranks.
        buf = xp.empty(shape, dtype)
        src = self._rank_of(stage + 1)
        return self._wait(self.comm.irecv(buf, src, self._tag(2, stage, mb)), ("B", mb))

    # ---- actions ----

    def _record(self, op: str, chunk: int, mb: int, start: float, end: float) -> None:
        self.timeline.append(
            {"op": op, "chunk": chunk, "microbatch": mb, "start": start - self._t0, "end": end - self._t0}
        )

    def _run_deferred_w(self) -> bool:
        """Runs the earliest W whose I has run, if any (zb1p fills waits with them)."""
        if not self._w_ready:
            return False
        key = self._w_ready.pop(0)
        self._weight(key)
        return True

    def _weight(self, key: tuple) -> None:
        chunk, mb = key
        start = time.perf_counter()
        self.stages[chunk].backward_weight(self._wctx.pop(key))
        self._w_done.add(key)
        self._record("W", chunk, mb, start, time.perf_counter())

    def _forward(self, chunk: int, mb: int) -> None:
        stage = chunk * self.comm.size + self.comm.rank
        x = self._inputs[mb] if stage == 0 else self._receive_forward(stage, mb)
        start = time.perf_counter()
        y, ctx = self.stages[chunk].forward(x)
        self._ctx[(chunk, mb)] = (ctx, y.shape, y.dtype, array_module(y))
        self.peak_live = max(self.peak_live, len(self._ctx))
        if stage == self.n_stages - 1:
            loss, dy = self.loss_fn(y, self._targets[mb])
            share = self._sizes[mb] / self._total
            self._loss += float(loss) * share
            self._dy[mb] = dy * share
        self._record("F", chunk, mb, start, time.perf_counter())
        if stage < self.n_stages - 1:
            self._send(y, stage + 1, 1, mb, describe=True)

    def _backward(self, chunk: int, mb: int, split: bool) -> None:
        stage = chunk * self.comm.size + self.comm.rank
        ctx, shape, dtype, xp = self._ctx.pop((chunk, mb))
        dy = (
            self._dy.pop(mb)
            if stage == self.n_stages - 1
            else self._receive_backward(stage, mb, shape, dtype, xp)
        )
        start = time.perf_counter()
        if split:
            dx, wctx = self.stages[chunk].backward_input(dy, ctx)
            self._wctx[(chunk, mb)] = wctx
            self._w_ready.append((chunk, mb))
        else:
            dx = self.stages[chunk].backward(dy, ctx)
        self._record("I" if split else "B", chunk, mb, start, time.perf_counter())
        if stage > 0:
            self._send(dx, stage - 1, 2, mb, describe=False)

    # ---- a step ----

    def step(self, x: Any = None, target: Any = None) -> float:
        comm, p, rank = self.comm, self.comm.size, self.comm.rank
        here = f"collex.parallel.Pipeline.step [rank {rank}]"
        if self._broken:
            raise PipelineAborted(f"{here}: an earlier step failed ({self._broken}); build a new pipeline")
        m = self.n_microbatches
        self._t0 = time.perf_counter()
        self.timeline = []
        self.peak_live = 0
        self._ctx: dict = {}
        self._dy: dict = {}
        self._wctx: dict = {}
        self._w_ready: list = []
        self._w_done: set = set()
        self._sends: list = []
        self._loss = 0.0
        self._finished_peers: set = set()
        flags = {peer: np.zeros(1, np.int64) for peer in range(p) if peer != rank}
        self._abort_in = {peer: (comm.irecv(f, peer, _ABORT_TAG), f) for peer, f in flags.items()}
        try:
            if rank == 0:
                if x is None:
                    raise ValueError(f"{here}: x: the first stage's rank needs the batch, got None")
                self._inputs = array_module(x).array_split(x, m)
            if rank == p - 1:
                if target is None:
                    raise ValueError(f"{here}: target: the last stage's rank needs the targets, got None")
                self._targets = array_module(target).array_split(target, m)
                self._sizes = [len(t) for t in self._targets]
                self._total = sum(self._sizes)
            for a in self.actions:
                if a.op == "F":
                    self._forward(a.chunk, a.microbatch)
                elif a.op == "W":
                    if (a.chunk, a.microbatch) not in self._w_done:
                        self._w_ready.remove((a.chunk, a.microbatch))
                        self._weight((a.chunk, a.microbatch))
                else:
                    self._backward(a.chunk, a.microbatch, split=a.op == "I")
            for w in self._sends:
                self._wait(w, ("send", -1))
            self._sends = []
        except BaseException:
            self._abort()
            raise
        # Each rank tells the others it finished; once all have, no message of
        # this step is left in flight.
        done = [comm.isend(np.zeros(1, np.int64), peer, _ABORT_TAG) for peer in flags]
        start = time.perf_counter()
        while self._abort_in:
            self._check_abort()
            self._give_up_after(start, f"waiting for ranks {sorted(self._abort_in)} to finish the step")
            time.sleep(0.0001)
        for w in done:
            w.wait()
        loss = comm.broadcast(np.array([self._loss]), root=p - 1)
        return float(loss[0])

    def _abort(self) -> None:
        """Tells every other rank of the pipeline that this rank's step failed."""
        self._broken = self._broken or "this rank failed"
        for peer in range(self.comm.size):
            if peer != self.comm.rank and peer not in self._finished_peers:
                try:
                    self.comm.isend(np.ones(1, np.int64), peer, _ABORT_TAG)
                except Exception:  # noqa: BLE001  (the original error is what matters)
                    pass


def bubble_fraction(timeline: list[dict]) -> float:
    """The share of a rank's step spent outside its forward and backward passes."""
    if not timeline:
        return 0.0
    span = max(e["end"] for e in timeline)
    busy = sum(e["end"] - e["start"] for e in timeline if e["op"] in ("F", "B", "I", "W"))
    return 1.0 - busy / span if span > 0 else 0.0


def plot_timeline(timelines: list[list[dict]], path: str, title: str = "") -> None:
    """Draws every rank's timeline as a Gantt chart (ranks as rows) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"F": "#4c72b0", "B": "#dd8452", "I": "#c44e52", "W": "#55a868", "wait": "#dddddd"}
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(timelines) + 1.6))
    for r, tl in enumerate(timelines):
        for e in tl:
            width = (e["end"] - e["start"]) * 1e3
            ax.barh(r, width, left=e["start"] * 1e3, color=colors[e["op"]], height=0.8)
            if e["op"] != "wait" and (e["end"] - e["start"]) > 0:
                ax.text((e["start"] + e["end"]) / 2 * 1e3, r, str(e["microbatch"]), ha="center", va="center",
                        fontsize=6, color="white")  # fmt: skip
    ax.set_yticks(range(len(timelines)))
    ax.set_yticklabels([f"rank {r}" for r in range(len(timelines))])
    ax.invert_yaxis()
    ax.set_xlabel("ms from the step's start")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    labels = ["forward", "backward", "backward (input)", "backward (weights)", "waiting"]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.35), fontsize=7, ncol=5)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
