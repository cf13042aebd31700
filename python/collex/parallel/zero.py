"""Sharded data parallelism (ZeRO stages 1 and 2): each data-parallel rank keeps
and updates only its share of the optimizer state."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core
from .._digest import digest
from .._dtypes import CODES
from .agree import agree_checked
from .regions import array_module

MIB = 1 << 20
WIRE = {"fp16": "float16", "bf16": "bfloat16"}
COMPRESSIONS = (None, "fp16", "bf16")


class _Bucket:
    """Gradients reduced together: their place in one flat array, padded to a
    multiple of the ranks, of which rank r owns the contiguous block r."""

    def __init__(self, members: list, offsets: list, count: int, size: int):
        self.members, self.offsets, self.count = list(members), list(offsets), count
        self.block = -(-count // size)  # ceil
        self.padded = self.block * size


def _wire_dtype(compression: str) -> Any:
    if compression == "bf16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.float16


class ShardedOptimizer:
    """Wraps an element-wise optimizer (``step(params, grads)``, e.g. SGD with
    momentum or Adam) so that each rank of ``comm`` keeps only its 1/p share of
    the optimizer's state.

    Each step the gradients are reduce-scattered instead of all-reduced: bucketed
    in reverse registration order as GradientReducer does (``ready(i)`` during the
    backward pass launches a bucket once all its gradients are final; buckets
    launch in bucket order), each rank receiving the average of its block of
    every bucket. The wrapped optimizer is then given this rank's blocks only
    (one parameter and one gradient array per bucket, the same list positions at
    every step) and the updated blocks are all-gathered back into every rank's
    ``params``, which stay bitwise identical on every rank.

    ``stage=1`` keeps a full-size fusion buffer per bucket between steps;
    ``stage=2`` allocates it when the bucket launches and releases it once
    reduced, so that between steps each rank holds gradient memory of 1/p of
    the model besides the caller's own arrays (``buffer_bytes()``).
    ``compression="fp16"``/``"bf16"`` sends the gradients (divided by p first, so
    that the sum cannot overflow where the average would not) at half the bytes;
    with ``error_feedback`` each bucket's rounding residual is added back at the
    next step. ``state_bytes()``: the bytes of the arrays the wrapped optimizer
    holds. Collective over ``comm`` (collex's world when None): every rank passes
    params of the same shapes and dtypes, in the same order, and the same
    settings; the ranks compare them and all raise ValueError where they differ.
    """

    def __init__(
        self,
        optimizer: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        comm: Any = None,
        stage: int = 1,
        bucket_mb: float = 25,
        first_bucket_mb: float = 1,
        compression: str | None = None,
        error_feedback: bool = True,
    ):
        from .._runtime import world

        self.comm = comm = world() if comm is None else comm
        here = f"collex.parallel.ShardedOptimizer [rank {comm.rank}]"
        params, grads = list(params), list(grads)

        def check() -> None:
            if not callable(getattr(optimizer, "step", None)):
                raise TypeError(f"{here}: optimizer: expected an object with step(params, grads)")
            if stage not in (1, 2):
                raise ValueError(f"{here}: stage={stage!r}: expected 1 or 2")
            if compression not in COMPRESSIONS:
                raise ValueError(f"{here}: compression={compression!r}: expected None, 'fp16' or 'bf16'")
            if len(params) != len(grads):
                raise ValueError(f"{here}: {len(params)} params but {len(grads)} grads")
            for i, (p, g) in enumerate(zip(params, grads)):
                if tuple(p.shape) != tuple(g.shape) or p.dtype != g.dtype:
                    raise ValueError(
                        f"{here}: grads[{i}] is {g.dtype} {tuple(g.shape)}, "
                        f"params[{i}] is {p.dtype} {tuple(p.shape)}"
                    )
                if np.dtype(p.dtype).name not in ("float16", "bfloat16", "float32", "float64"):
                    raise TypeError(f"{here}: params[{i}]: expected a floating-point array, got {p.dtype}")

        # Collective: ranks whose parameters or settings differ would shard
        # different buckets and exchange blocks that do not match; every rank
        # raises instead (a rank with invalid arguments raises its own error).
        cap, first_cap = int(bucket_mb * MIB), int(min(bucket_mb, first_bucket_mb) * MIB)
        settings = {
            "stage": stage if isinstance(stage, int) else -1,
            "bucket_bytes": cap,
            "first_bucket_bytes": first_cap,
            "compression": COMPRESSIONS.index(compression) if compression in COMPRESSIONS else -1,
            "params": len(params),
            "shapes_digest": digest([(tuple(p.shape), str(p.dtype)) for p in params]),
        }
        agree_checked(comm, "collex.parallel.ShardedOptimizer", check, settings)
        self.optimizer, self.params, self.grads = optimizer, params, grads
        self.stage, self.compression, self.error_feedback = stage, compression, error_feedback
        self._xp = array_module(params[0]) if params else np
        self._buckets = self._assign(cap, first_cap)
        xp, rank = self._xp, comm.rank
        self._param_shards, self._grad_shards, self._flats, self._residuals = [], [], [], []
        for b in self._buckets:
            dt = params[b.members[0]].dtype
            flat = self._pack(b, params, dt)
            self._param_shards.append(flat[rank * b.block : (rank + 1) * b.block].copy())
            self._grad_shards.append(xp.zeros(b.block, dt))
            self._flats.append(None if stage == 2 else xp.zeros(b.padded, self._wire(dt)))
            use_residual = compression is not None and error_feedback and dt == np.float32
            self._residuals.append(xp.zeros(b.padded, np.float32) if use_residual else None)
        self._bucket_of = {i: k for k, b in enumerate(self._buckets) for i in b.members}
        self._ready: set[int] = set()
        self._launched = 0
        self._works: list = [None] * len(self._buckets)
        self._wire_out: list = [None] * len(self._buckets)

    def _wire(self, dt: Any) -> Any:
        return _wire_dtype(self.compression) if self.compression and dt == np.float32 else dt

    def _assign(self, cap: int, first_cap: int) -> list[_Bucket]:
        """GradientReducer's assignment (the core's, in reverse registration order,
        one dtype per bucket), each bucket padded to a multiple of the ranks."""
        specs = [(int(g.size), CODES[np.dtype(g.dtype)]) for g in self.grads]
        buckets = []
        for _, members, offsets in _core._assign_buckets(specs, cap, first_cap):
            count = offsets[-1] + int(self.grads[members[-1]].size)
            buckets.append(_Bucket(members, offsets, count, self.comm.size))
        return buckets

    def _pack(self, b: _Bucket, arrays: list, dt: Any, out: Any = None) -> Any:
        xp = self._xp
        flat = xp.zeros(b.padded, dt) if out is None else out
        for i, at in zip(b.members, b.offsets):
            flat[at : at + arrays[i].size] = arrays[i].reshape(-1)
        if out is not None and b.padded > b.count:
            flat[b.count :] = 0
        return flat

    def _launch(self, k: int) -> None:
        b, xp = self._buckets[k], self._xp
        dt = self.params[b.members[0]].dtype
        wire = self._wire(dt)
        flat = self._flats[k] if self._flats[k] is not None else xp.empty(b.padded, wire)
        if wire == dt:
            self._pack(b, self.grads, dt, out=flat)
            op, out = "avg", self._grad_shards[k]
        else:
            # Divided by p before the cast, so that the sum is the average and
            # cannot overflow where the average would not.
            full = self._pack(b, self.grads, np.float32) / self.comm.size
            if self._residuals[k] is not None:
                full += self._residuals[k]
            flat[...] = full.astype(wire)
            if self._residuals[k] is not None:
                self._residuals[k][...] = full - flat.astype(np.float32)
            op, out = "sum", xp.empty(b.block, wire)
        self._wire_out[k] = out
        self._works[k] = self.comm.reduce_scatter(flat, op=op, out=out, async_op=True)

    def ready(self, i: int) -> None:
        """Gradient i is final for this step; its bucket launches once all its
        gradients are (buckets go in bucket order, so every rank agrees)."""
        k = operator.index(i)
        if not 0 <= k < len(self.grads):
            raise ValueError(f"collex.parallel.ShardedOptimizer.ready: gradient index {i} out of range")
        if k in self._ready:
            raise ValueError(f"collex.parallel.ShardedOptimizer.ready: gradient {k} marked twice in one step")
        self._ready.add(k)
        while self._launched < len(self._buckets) and all(
            m in self._ready for m in self._buckets[self._launched].members
        ):
            self._launch(self._launched)
            self._launched += 1

    def step(self) -> Any:
        """Reduces what is not yet in flight, waits, updates this rank's share and
        all-gathers the updated parameters into every rank's params."""
        for i in range(len(self.grads)):
            if i not in self._ready:
                self.ready(i)
        for k, w in enumerate(self._works):
            w.wait()
            if self._wire_out[k] is not self._grad_shards[k]:
                self._grad_shards[k][...] = self._wire_out[k].astype(self._grad_shards[k].dtype)
            self._works[k] = self._wire_out[k] = None
        result = self.optimizer.step(self._param_shards, self._grad_shards)
        gathers = [self.comm.allgather(s, async_op=True) for s in self._param_shards]
        for b, w in zip(self._buckets, gathers):
            flat = w.wait().reshape(-1)
            for i, at in zip(b.members, b.offsets):
                p = self.params[i]
                p[...] = flat[at : at + p.size].reshape(p.shape)
        self._ready.clear()
        self._launched = 0
        return result

    def state_bytes(self) -> int:
        """Bytes of every array the wrapped optimizer holds (found through its
        attributes, lists, tuples and dicts)."""
        seen: set[int] = set()

        def walk(obj: Any) -> int:
            if id(obj) in seen:
                return 0
            seen.add(id(obj))
            if hasattr(obj, "nbytes") and hasattr(obj, "shape"):
                return int(obj.nbytes)
            if isinstance(obj, dict):
                return sum(walk(v) for v in obj.values())
            if isinstance(obj, (list, tuple)):
                return sum(walk(v) for v in obj)
            if hasattr(obj, "__dict__") and not isinstance(obj, type):
                return sum(walk(v) for v in vars(obj).values())
            return 0

        return walk(self.optimizer)

    def buffer_bytes(self) -> int:
        """Bytes of gradient buffers this object holds between steps (the shards,
        and with stage 1 the full-size fusion buffers)."""
        total = sum(int(g.nbytes) for g in self._grad_shards)
        total += sum(int(p.nbytes) for p in self._param_shards)
        total += sum(int(f.nbytes) for f in self._flats if f is not None)
        return total + sum(int(r.nbytes) for r in self._residuals if r is not None)
