"""GradientReducer on CUDA gradients without a host copy (issue 16): where the
communicator runs the stream-ordered kernels (COLLEX_CUDA_IPC=lanes), each
bucket is averaged on the GPU; on several nodes, on the GPU inside each node
with the shares' host all-reduce between nodes (across_nodes.py: there a
bucket's launch waits for its node's reduce-scatter). Not yet run on a GPU:
tests/mpi/cuda_lanes_standin.py runs it on CPU ranks with a stand-in for the
CUDA module (whose compression kernels run the same element code on the host).

Without compression, a bucket whose gradients fill one span of device memory
(views of one flat array, e.g. from ``cx.cuda.zeros_like_each``, or any
allocator that puts them back to back) is all-reduced where it lies; any other
bucket has a device fusion buffer: ``ready(i)`` queues the copy of gradient i
into it on the gradient's stream, right behind the backward work that made it.
With fp16/bf16 compression, float32 buckets are packed by a kernel into a wire
buffer instead (fp16 scaled by a power of two from the ranks' largest magnitude,
itself agreed by a one-element all-reduce on the GPU; error feedback keeps each
element's rounding residual on the device), and unpacked by another.

Once every gradient of a bucket is ready, and every earlier bucket has launched
(so that every rank launches the buckets in the same order whatever order its
gradients became ready in), the streams they came on hand over to the reducer's
own stream by an event, and on that stream run the bucket's kernels and
all-reduce. ``wait()`` orders the gradients' streams after that work and
returns without waiting for the GPU: later work on those streams sees the
averages, as with any collective on CUDA arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from .._arrays import where
from .._digest import digest
from .._dtypes import AVG, CODES, FLOATING, OPS, SUPPORTED
from .across_nodes import NodeLanes
from .arguments import DeviceArg, DeviceSpan
from .lanes import LanePeers

FLOAT32 = np.dtype(np.float32)
BFLOAT16 = SUPPORTED[_core.DTYPE_NAMES.index("bfloat16")]
SEGMENT_WORDS = 3  # kernels::compress::Segment: grad address, count, offset


class _Bucket:
    """One bucket's gradients and the device memory its way needs: a span (none),
    a fusion buffer, or a wire buffer with its segments, residual and amax."""

    def __init__(self, code: int, members: list, offsets: list):
        self.dtype = SUPPORTED[code]
        self.members, self.offsets = members, offsets
        self.count = 0
        self.span: int | None = None
        self.fusion: Any = None
        self.compressed = False
        self.wire_dtype = self.dtype
        self.wire: Any = None
        self.residual: Any = None
        self.segments: Any = None
        self.segment_count = 0
        self.amax = 0  # the address of its word in the reducer's amax buffer (fp16 only)


class DeviceReducer:
    """The device half of GradientReducer (see _fusion.GradientReducer)."""

    def __init__(
        self, comm: Any, grads: list, lanes: LanePeers | NodeLanes, cuda: Any, cap: int, first_cap: int,
        compression: str, error_feedback: bool,
    ):  # fmt: skip
        op = "GradientReducer"
        self._comm, self._lanes, self._cuda, self.device = comm, lanes, cuda, lanes.device
        self._grads = list(grads)
        args = [DeviceArg(g, f"grads[{i}]", op, comm.rank, writable=True) for i, g in enumerate(grads)]
        here = where(op, comm.rank)
        for i, a in enumerate(args):
            if CODES[a.dtype] not in FLOATING:
                raise TypeError(f"{here}: grads[{i}]: gradients must be floating point, got {a.dtype}")
            if a.nbytes and a.device != self.device:
                raise ValueError(
                    f"{here}: grads[{i}] is on device {a.device}, the others on device {self.device}; "
                    "every gradient of a reducer lies on one device"
                )
        self._pointers = [a.pointer for a in args]
        self._sizes = [a.nbytes for a in args]
        self._shapes = [a.shape for a in args]
        _check_no_overlap(self._pointers, self._sizes, here)
        shapes = [(a.nbytes // a.dtype.itemsize, CODES[a.dtype]) for a in args]
        arrays = [tuple(a.shape) for a in args]  # compared too: (10, 100) is not (100, 10)
        _agree(comm, (shapes, arrays, cap, first_cap, compression, bool(error_feedback)), here)
        self._buckets = [_Bucket(*b) for b in _core._assign_buckets(shapes, cap, first_cap)]
        self._bucket_of = {k: b for b, bucket in enumerate(self._buckets) for k in bucket.members}
        wire = {"fp16": np.dtype(np.float16), "bf16": BFLOAT16}.get(compression)
        fp16_buckets = 0
        for bucket in self._buckets:
            bucket.count = sum(self._sizes[k] for k in bucket.members) // bucket.dtype.itemsize
            if bucket.count == 0:
                continue
            if wire is not None and bucket.dtype == FLOAT32:
                self._compressed(bucket, wire, error_feedback)
                fp16_buckets += wire == np.float16
                continue
            bucket.span = self._span(bucket.members)
            if bucket.span is None:
                bucket.fusion = cuda.SharedDeviceBuffer(bucket.count * bucket.dtype.itemsize, self.device)
        # One float per fp16 bucket: its ranks' largest magnitude, found and agreed on the GPU.
        self._amax = cuda.SharedDeviceBuffer(4 * fp16_buckets, self.device) if fp16_buckets else None
        at = 0
        for bucket in self._buckets:
            if bucket.compressed and bucket.wire_dtype == np.float16:
                bucket.amax, at = self._amax.address + at, at + 4
        self._stream = cuda.Stream(self.device)
        # Recorded and waited for at once, so one event serves every hand-over.
        self._handoff = cuda.Event(self.device)
        self._done = cuda.Event(self.device)
        self._ordered: set = set()  # streams already ordered after the last step
        self._new_step()

    def _compressed(self, bucket: _Bucket, wire: np.dtype, error_feedback: bool) -> None:
        """A float32 bucket packed into `wire` by the compression kernels: its
        segments (gradient, count, offset) uploaded once, a wire buffer and,
        with error feedback, a residual per element (zero at first)."""
        cuda = self._cuda
        bucket.compressed, bucket.wire_dtype = True, wire
        rows = [(self._pointers[k], self._sizes[k] // 4, o) for k, o in zip(bucket.members, bucket.offsets)]
        table = np.array([r for r in rows if r[1]], np.uint64).reshape(-1, SEGMENT_WORDS)
        bucket.segment_count = len(table)
        bucket.segments = cuda.SharedDeviceBuffer(table.nbytes, self.device)
        cuda.copy(bucket.segments.address, table.ctypes.data, table.nbytes, 0, self.device)
        bucket.wire = cuda.SharedDeviceBuffer(bucket.count * wire.itemsize, self.device)
        if error_feedback:
            bucket.residual = cuda.SharedDeviceBuffer(bucket.count * 4, self.device)

    def _span(self, members: list) -> int | None:
        """The start of the one span of memory the bucket's gradients fill back to
        back, in any order (views of one flat array), or None."""
        parts = sorted((self._pointers[k], self._sizes[k]) for k in members if self._sizes[k])
        if not parts or any(p + n != q for (p, n), (q, _) in zip(parts, parts[1:])):
            return None
        return parts[0][0]

    def _new_step(self) -> None:
        self._marked = [False] * len(self._grads)
        self._pending = [len(b.members) for b in self._buckets]
        self._streams: list[set] = [
            set() for _ in self._buckets
        ]  # the streams each bucket's gradients came on
        self._next_launch = 0

    def _after_last_step(self, stream: int) -> None:
        """Orders `stream` after the last step's averaging (once per stream and
        step): a pack must not overwrite a buffer that is still being read."""
        if stream not in self._ordered:
            self._done.order_before(stream)  # a no-op before the first step's record
            self._ordered.add(stream)

    def ready(self, k: int) -> None:
        here = where("GradientReducer.ready", self._comm.rank)
        if self._marked[k]:
            raise ValueError(
                f"{here}: gradient {k} was already marked ready in this step "
                "(call wait() to end the step first)"
            )
        a = DeviceArg(self._grads[k], f"grads[{k}]", "GradientReducer.ready", self._comm.rank, writable=True)
        b = self._bucket_of[k]
        bucket = self._buckets[b]
        self._marked[k] = True
        self._after_last_step(a.stream)
        self._streams[b].add(a.stream)
        if bucket.fusion is not None and a.nbytes:
            at = bucket.offsets[bucket.members.index(k)] * bucket.dtype.itemsize
            self._cuda.copy_async(bucket.fusion.address + at, a.pointer, a.nbytes, a.stream, self.device)
        self._pending[b] -= 1
        while self._next_launch < len(self._buckets) and self._pending[self._next_launch] == 0:
            self._launch(self._next_launch)
            self._next_launch += 1

    def _launch(self, b: int) -> None:
        bucket = self._buckets[b]
        if bucket.count == 0:
            return
        stream = self._stream.handle
        for s in self._streams[b]:
            self._handoff.record(s)  # the packs (and the backward work) queued on s so far
            self._handoff.order_before(stream)
        if bucket.compressed:
            self._launch_compressed(bucket, stream)
            return
        start = bucket.span if bucket.fusion is None else bucket.fusion.address
        span = DeviceSpan(start, bucket.count * bucket.dtype.itemsize, bucket.dtype, stream, self.device)
        self._lanes.run("allreduce", span, span, AVG)
        if bucket.fusion is not None:
            for k, o in zip(bucket.members, bucket.offsets):
                if self._sizes[k]:
                    self._cuda.copy_async(
                        self._pointers[k], bucket.fusion.address + o * bucket.dtype.itemsize, self._sizes[k],
                        stream, self.device,
                    )  # fmt: skip

    def _launch_compressed(self, bucket: _Bucket, stream: int) -> None:
        cuda, ranks, fp16 = self._cuda, self._comm.size, bucket.wire_dtype == np.float16
        residual = bucket.residual.address if bucket.residual is not None else 0
        if fp16:
            cuda.bucket_amax(
                bucket.segments.address, bucket.segment_count, residual, bucket.amax, stream, self.device
            )
            word = DeviceSpan(bucket.amax, 4, FLOAT32, stream, self.device)
            self._lanes.run("allreduce", word, word, OPS["max"])  # every rank scales alike
        segments, n = bucket.segments.address, bucket.segment_count
        cuda.bucket_pack(
            segments, n, bucket.wire.address, residual, bucket.amax, ranks, fp16, stream, self.device
        )
        wire = DeviceSpan(bucket.wire.address, bucket.count * 2, bucket.wire_dtype, stream, self.device)
        self._lanes.run("allreduce", wire, wire, OPS["sum"])
        cuda.bucket_unpack(segments, n, bucket.wire.address, bucket.amax, ranks, fp16, stream, self.device)

    def wait(self) -> None:
        if self._next_launch < len(self._buckets):
            missing = [str(i) for i, m in enumerate(self._marked) if not m]
            listed = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise ValueError(
                f"{where('GradientReducer.wait', self._comm.rank)}: gradients {listed} were never marked "
                "ready in this step: call ready(i) for each (or reduce())"
            )
        self._lanes.check("GradientReducer.wait")
        self._done.record(self._stream.handle)
        self._ordered = set().union(*self._streams)
        for s in self._ordered:
            self._done.order_before(s)  # the gradients' streams see the averages
        self._new_step()

    def reduce(self) -> None:
        for k in reversed(range(len(self._grads))):
            if not self._marked[k]:
                self.ready(k)
        self.wait()

    def buckets(self) -> list:
        """(dtype code, members, offsets) per bucket, as the core's reducer describes them."""
        return [(CODES[b.dtype], b.members, b.offsets) for b in self._buckets]

    def path(self, b: int) -> str:
        return "span" if self._buckets[b].span is not None else "packed"

    def wire_dtype(self, b: int) -> np.dtype:
        return self._buckets[b].wire_dtype

    def residual(self, k: int) -> np.ndarray | None:
        """A host copy of gradient k's error-feedback residual (None when not kept),
        once the reducer's stream has finished its work."""
        bucket = self._buckets[self._bucket_of[k]]
        if bucket.residual is None:
            return None
        out = np.empty(self._shapes[k], np.float32)
        at = bucket.residual.address + 4 * bucket.offsets[bucket.members.index(k)]
        self._cuda.copy(out.ctypes.data, at, out.nbytes, self._stream.handle, self.device)
        return out


def _check_no_overlap(pointers: list, sizes: list, here: str) -> None:
    # Overlapping gradients would be packed from and averaged into the same memory twice.
    order = sorted((p, n, i) for i, (p, n) in enumerate(zip(pointers, sizes)) if n)
    for (p, n, i), (q, _, j) in zip(order, order[1:]):
        if p + n > q:
            raise ValueError(f"{here}: gradients {i} and {j} overlap in memory")


def _agree(comm: Any, settings: tuple, here: str) -> None:
    """Every rank built the reducer alike (gradients' sizes and dtypes, bucket
    caps, compression): else the buckets, and so the all-reduces, would differ.
    A digest of their text (the same in every process)."""
    h = digest(settings)
    extremes = np.array([h, -h], np.int64)
    comm.allreduce(extremes, op="min")
    if extremes[0] != -extremes[1]:
        raise _core.CollectiveMismatch(
            f"{here}: the ranks passed different gradients (count, shapes or dtypes) or settings "
            "(bucket sizes, compression); every rank must build the reducer alike"
        )
