"""CUDA arrays: collectives on anything exposing ``__cuda_array_interface__``
(CuPy, Numba, PyTorch CUDA tensors).

All-reduce above 1 MiB between ranks of one node reads the peers' device memory
directly: each rank copies its input into a device staging buffer the others
have mapped (CUDA IPC), and after a host barrier every rank reduces all of them
with a CUDA kernel, in rank order (the same bits on every rank). Everything else (other
collectives, several nodes, builds without the kernels, COLLEX_CUDA_IPC=0) is
staged through pinned host memory: the input is copied down (in order on the
array's stream, which is then waited for), the host collective runs on that
buffer, and the copy of the result back up is queued on the same stream; large
all-reduces go piece by piece so that the copies overlap the host work. Every
rank passes the same kind of array (the paths differ in how many collectives
they issue).

The bytes are moved by the optional CUDA module (collex._cuda), imported the
first time a CUDA array arrives.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._arrays import check_rank_arg, op_code, where
from ._dtypes import CODES, NAMES


def is_device_array(x: Any) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def cuda_module(op: str, rank: int) -> Any:
    try:
        from . import _cuda
    except ImportError:
        raise TypeError(
            f"{where(op, rank)}: got a CUDA array, but this build of collex has no CUDA module (the CUDA "
            "toolkit was not found when it was built); rebuild with the toolkit, or pass host arrays"
        ) from None
    return _cuda


class DeviceArg:
    """A checked CUDA array argument: the array, its device pointer, shape, dtype,
    size in bytes, device ordinal and the stream its producer orders it on."""

    __slots__ = ("array", "pointer", "shape", "dtype", "nbytes", "device", "stream")

    def __init__(self, x: Any, arg: str, op: str, rank: int, writable: bool):
        here = f"{where(op, rank)}: {arg}"
        cai = x.__cuda_array_interface__
        self.array = x
        try:
            self.shape = tuple(int(s) for s in cai["shape"])
            typestr, (pointer, readonly) = cai["typestr"], cai["data"]
        except (KeyError, TypeError, ValueError):
            raise TypeError(f"{here}: malformed __cuda_array_interface__: {cai!r}") from None
        try:
            self.dtype = np.dtype(typestr)
        except TypeError:
            self.dtype = None
        if self.dtype not in CODES:
            raise TypeError(f"{here}: unsupported dtype {typestr!r}; expected one of {NAMES}")
        if cai.get("mask") is not None:
            raise TypeError(f"{here}: masked CUDA arrays are not supported")
        count = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = count * self.dtype.itemsize
        strides = cai.get("strides")
        contiguous = strides is None or tuple(strides) == _c_strides(self.shape, self.dtype.itemsize)
        if count > 1 and not contiguous:
            raise ValueError(
                f"{here}: expected a C-contiguous array, got shape={self.shape} strides={tuple(strides)} "
                f"dtype={self.dtype}"
            )
        self.pointer = int(pointer or 0)
        if writable and readonly:
            raise ValueError(f"{here}: the result is written into it, but the array is read-only")
        # The interface's stream (version 3): None when the data needs no ordering,
        # else a handle (1 and 2 are the legacy and per-thread default streams).
        self.stream = int(cai.get("stream") or 0)
        self.device = -1
        if self.nbytes:
            try:
                self.device = cuda_module(op, rank).pointer_device(self.pointer)
            except RuntimeError as e:
                raise TypeError(f"{here}: got a CUDA array, but no CUDA device is usable here: {e}") from None
            if self.device < 0:
                raise ValueError(
                    f"{here}: its __cuda_array_interface__ points at memory that is not on a CUDA device"
                )


def _c_strides(shape: tuple, itemsize: int) -> tuple:
    strides, step = [], itemsize
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


def new_device_array(like: DeviceArg, shape: tuple, op: str, rank: int) -> DeviceArg:
    """A new CUDA array for a result, made by the input's own library (CuPy)."""
    if type(like.array).__module__.split(".")[0] != "cupy":
        raise TypeError(
            f"{where(op, rank)}: out: collex allocates results only for CuPy arrays; pass out= for "
            f"{type(like.array).__name__}"
        )
    import cupy

    with cupy.cuda.Device(max(like.device, 0)):
        a = cupy.empty(shape, like.dtype)
    return DeviceArg(a, "out", op, rank, writable=True)


class _Finished:
    """A Work handle for an operation that completed before it was returned."""

    def wait(self) -> None:
        return None

    def done(self) -> bool:
        return True


# An all-reduce larger than two pieces is pipelined piece by piece: copying the
# next piece down and the last one up overlaps the host all-reduce of this one.
PIECE_BYTES = 8 << 20
# Each rank's device staging buffer for all-reduce over CUDA IPC (larger
# all-reduces go through it in pieces).
IPC_BYTES = 32 << 20
# All-reduces above this size take the CUDA IPC path. It waits for the stream
# twice per call, the host staging path once: measured with 2 ranks sharing one
# H100, staging won up to 256 KiB (0.15 ms against 0.6 ms) and IPC from 2 MiB.
IPC_MIN_BYTES = 1 << 20
HANDLE_BYTES = 64  # sizeof(cudaIpcMemHandle_t)


class DeviceStaging:
    """A communicator's collectives on CUDA arrays, through pinned host buffers.

    Two buffers ('in' and 'out') grow to the largest operation seen and are reused.
    Copies down are waited for; the copy of the result back up is only queued on
    the array's stream (the result is ordered on it, like any GPU work), and a
    buffer is written again only once the copy reading it has finished (an event
    per buffer). Calls return when the host part is done: ``async_op=True`` gives
    a Work that is already done.
    """

    def __init__(self, comm: Any):
        self._comm = comm
        self._buffers: dict[str, Any] = {}
        self._events: dict[tuple, Any] = {}
        # buffer -> (event after the last copy reading it, its (device, stream))
        self._pending: dict[str, tuple] = {}
        # CUDA IPC: None until first needed, then False (not possible here) or
        # (device, own staging buffer, peers' mapped buffers, their addresses).
        self._ipc: Any = None

    def _cuda(self, op: str) -> Any:
        return cuda_module(op, self._comm.rank)

    def _event(self, name: str, device: int, op: str) -> Any:
        e = self._events.get((name, device))
        if e is None:
            e = self._events[(name, device)] = self._cuda(op).Event(device)
        return e

    def _host(
        self, role: str, shape: tuple, dtype: np.dtype, op: str, filled_on: tuple | None = None
    ) -> np.ndarray:
        """A view of buffer `role`, free to write. `filled_on`: (device, stream) of the
        copy down that will write it first; on the stream of the last copy up from
        it, stream order already keeps them apart and the host need not wait."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buf = self._buffers.get(role)
        grow = buf is None or buf.bytes < nbytes
        pending = self._pending.pop(role, None)
        if pending is not None and (grow or filled_on != pending[1]):
            pending[0].synchronize()  # the copy up from this buffer has read it
        if grow:
            self._buffers.pop(role, None)  # free the old one before taking a larger
            larger = max(nbytes, 2 * (buf.bytes if buf is not None else 0), 1 << 20)
            buf = self._buffers[role] = self._cuda(op).PinnedBuffer(larger)
        return np.frombuffer(buf, dtype=np.uint8, count=nbytes).view(dtype).reshape(shape)

    def _down(self, a: DeviceArg, role: str, op: str) -> np.ndarray:
        """The array's contents in a host buffer."""
        h = self._host(role, a.shape, a.dtype, op, filled_on=(a.device, a.stream) if a.nbytes else None)
        if a.nbytes:
            self._cuda(op).copy(h.ctypes.data, a.pointer, a.nbytes, a.stream, a.device)
        return h

    def _up(self, h: np.ndarray, a: DeviceArg, role: str, op: str) -> None:
        if a.nbytes:
            self._cuda(op).copy_async(a.pointer, h.ctypes.data, a.nbytes, a.stream, a.device)
            self._release_after(role, a, op)

    def _release_after(self, role: str, a: DeviceArg, op: str) -> None:
        """Buffer `role` may be written once the work now queued on a's stream is done."""
        e = self._event(role, a.device, op)
        e.record(a.stream)
        self._pending[role] = (e, (a.device, a.stream))

    def _ipc_buffers(self, a: DeviceArg) -> Any:
        """Every rank's staging buffer mapped here, or None where the ranks cannot
        read each other's device memory. Set up on the first all-reduce of a CUDA
        array; collective (every rank decides alike, agreeing through the host)."""
        comm = self._comm
        if self._ipc is None:
            cuda = self._cuda("allreduce")
            usable = (
                comm.size > 1
                and comm.local_size == comm.size
                and getattr(cuda, "has_kernels", False)
                and os.environ.get("COLLEX_CUDA_IPC", "1") != "0"
            )
            self._ipc = self._map_peers(cuda, a.device) if usable else False
        if not self._ipc or self._ipc[0] != a.device:
            return None
        return self._ipc

    def _map_peers(self, cuda: Any, device: int) -> Any:
        comm, ok = self._comm, 1
        own, handle = None, bytes(HANDLE_BYTES)
        try:
            own = cuda.SharedDeviceBuffer(IPC_BYTES, device)
            handle = own.handle()
        except RuntimeError:
            ok = 0
        handles = comm.allgather(np.frombuffer(handle.ljust(HANDLE_BYTES, b"\0"), np.uint8))
        peers = []
        if ok:
            try:
                for r in range(comm.size):
                    peers.append(own if r == comm.rank else cuda.PeerDeviceBuffer(bytes(handles[r]), device))
            except RuntimeError:
                ok = 0
        everyone = comm.allreduce(np.array([ok], np.int32), op="min")
        if not everyone[0]:
            return False  # some rank cannot: every rank stages through the host instead
        return (device, own, peers, [p.address for p in peers])

    def _allreduce_ipc(self, a: DeviceArg, o: DeviceArg, code: int, ipc: Any) -> None:
        name = "allreduce"
        cuda, (_, own, _, addresses) = self._cuda(name), ipc
        size = a.dtype.itemsize
        count, step = a.nbytes // size, IPC_BYTES // size
        for s in range(0, count, step):
            n = min(count - s, step)
            cuda.copy_async(own.address, a.pointer + s * size, n * size, a.stream, a.device)
            cuda.synchronize(a.stream, a.device)
            self._comm.barrier()  # every rank's piece is in its staging buffer
            cuda.reduce_peers(o.pointer + s * size, addresses, n, CODES[a.dtype], code, a.stream, a.device)
            cuda.synchronize(a.stream, a.device)
            self._comm.barrier()  # every rank has read every staging buffer

    def _allreduce_in_pieces(self, a: DeviceArg, o: DeviceArg, op: str, algo: str) -> None:
        name = "allreduce"
        cuda, size = self._cuda(name), a.dtype.itemsize
        h = self._host("in", (a.nbytes // size,), a.dtype, name, filled_on=(a.device, a.stream))
        step = PIECE_BYTES // size
        pieces = [(s, min(h.size, s + step)) for s in range(0, h.size, step)]
        fetched = [self._event("piece0", a.device, name), self._event("piece1", a.device, name)]

        def fetch(k: int) -> None:
            s, e = pieces[k]
            cuda.copy_async(h[s:e].ctypes.data, a.pointer + s * size, (e - s) * size, a.stream, a.device)
            fetched[k % 2].record(a.stream)

        try:
            fetch(0)
            for k, (s, e) in enumerate(pieces):
                fetched[k % 2].synchronize()
                if k + 1 < len(pieces):
                    fetch(k + 1)
                self._comm.allreduce(h[s:e], op=op, algo=algo)
                cuda.copy_async(o.pointer + s * size, h[s:e].ctypes.data, (e - s) * size, a.stream, a.device)
        finally:
            self._release_after("in", a, name)  # also when a piece failed: copies may be queued

    def _arg(self, x: Any, arg: str, op: str, writable: bool) -> DeviceArg:
        if not is_device_array(x):
            raise TypeError(
                f"{where(op, self._comm.rank)}: {arg}: expected a CUDA array like the other arguments, "
                f"got {type(x).__name__}"
            )
        return DeviceArg(x, arg, op, self._comm.rank, writable)

    def _out(self, x: DeviceArg, out: Any, shape: tuple, op: str) -> DeviceArg:
        if out is None:
            return new_device_array(x, shape, op, self._comm.rank)
        o = self._arg(out, "out", op, writable=True)
        if o.shape != shape or o.dtype != x.dtype:
            raise ValueError(
                f"{where(op, self._comm.rank)}: out: expected shape={shape} dtype={x.dtype}, "
                f"got shape={o.shape} dtype={o.dtype}"
            )
        same = o.pointer == x.pointer and o.nbytes == x.nbytes
        if o.nbytes and x.nbytes and not same:
            if o.pointer < x.pointer + x.nbytes and x.pointer < o.pointer + o.nbytes:
                raise ValueError(
                    f"{where(op, self._comm.rank)}: out: overlaps x without being x; "
                    "pass out=None for in place"
                )
        return o

    @staticmethod
    def _finish(result: Any, async_op: bool) -> Any:
        if not async_op:
            return result
        from ._comm import Work

        return Work(_Finished(), result)

    # ---- the collectives, each the host collective between two copies ----

    def allreduce(self, x: Any, op: str, out: Any, algo: str, async_op: bool) -> Any:
        name = "allreduce"
        a = self._arg(x, "x", name, writable=out is None)
        o = a if out is None else self._out(a, out, a.shape, name)
        code = op_code(op, name, self._comm.rank, a.dtype)  # before anything touches the wire
        ipc = self._ipc_buffers(a) if a.nbytes > IPC_MIN_BYTES and o.device == a.device else None
        if ipc:
            self._allreduce_ipc(a, o, code, ipc)
        elif a.nbytes > 2 * PIECE_BYTES:
            self._allreduce_in_pieces(a, o, op, algo)
        else:
            h = self._down(a, "in", name)
            self._comm.allreduce(h, op=op, algo=algo)
            self._up(h, o, "in", name)
        return self._finish(o.array, async_op)

    def broadcast(self, x: Any, root: int, algo: str, async_op: bool) -> Any:
        name = "broadcast"
        root = check_rank_arg(root, "root", self._comm.size, name, self._comm.rank)
        mine = self._comm.rank == root
        a = self._arg(x, "x", name, writable=not mine)
        h = self._down(a, "in", name) if mine else self._host("in", a.shape, a.dtype, name)
        self._comm.broadcast(h, root=root, algo=algo)
        if not mine:
            self._up(h, a, "in", name)
        return self._finish(a.array, async_op)

    def reduce(self, x: Any, op: str, root: int, out: Any, async_op: bool) -> Any:
        name = "reduce"
        root = check_rank_arg(root, "root", self._comm.size, name, self._comm.rank)
        mine = self._comm.rank == root
        a = self._arg(x, "x", name, writable=out is None and mine)
        o = a if out is None else self._out(a, out, a.shape, name)
        h = self._down(a, "in", name)
        self._comm.reduce(h, op=op, root=root)
        if mine:
            self._up(h, o, "in", name)
        return self._finish(o.array, async_op)

    def allgather(self, x: Any, out: Any, async_op: bool) -> Any:
        name = "allgather"
        a = self._arg(x, "x", name, writable=False)
        shape = (self._comm.size, *a.shape)
        o = self._out(a, out, shape, name)
        h = self._down(a, "in", name)
        ho = self._host("out", shape, a.dtype, name)
        self._comm.allgather(h, out=ho)
        self._up(ho, o, "out", name)
        return self._finish(o.array, async_op)

    def reduce_scatter(self, x: Any, op: str, out: Any, async_op: bool) -> Any:
        name = "reduce_scatter"
        a = self._arg(x, "x", name, writable=False)
        if len(a.shape) == 0 or a.shape[0] % self._comm.size:
            raise ValueError(
                f"{where(name, self._comm.rank)}: x: expected x.shape[0] divisible by the communicator "
                f"size {self._comm.size}, got shape={a.shape}"
            )
        shape = (a.shape[0] // self._comm.size, *a.shape[1:])
        o = self._out(a, out, shape, name)
        h = self._down(a, "in", name)
        ho = self._host("out", shape, a.dtype, name)
        self._comm.reduce_scatter(h, op=op, out=ho)
        self._up(ho, o, "out", name)
        return self._finish(o.array, async_op)

    def send(self, x: Any, dst: int, tag: int) -> None:
        a = self._arg(x, "x", "send", writable=False)
        self._comm.send(self._down(a, "in", "send"), dst, tag)

    def recv(self, x: Any, src: int, tag: int) -> Any:
        a = self._arg(x, "x", "recv", writable=True)
        h = self._host("in", a.shape, a.dtype, "recv")
        self._comm.recv(h, src, tag)
        self._up(h, a, "in", "recv")
        return a.array


class HostMirror:
    """Host copies of CUDA gradients for GradientReducer: one pinned buffer holding
    every gradient back to back in registration order (so that a bucket's
    gradients fill one span and are reduced where they lie). ``down(k)`` copies
    gradient k from its device once it is final; ``up_all()`` queues the averages'
    copies back."""

    def __init__(self, grads: Any, op: str, rank: int):
        self.args = [DeviceArg(g, f"grads[{i}]", op, rank, writable=True) for i, g in enumerate(grads)]
        offsets, at = [], 0
        for a in self.args:
            at = -(-at // a.dtype.itemsize) * a.dtype.itemsize  # aligned for its dtype
            offsets.append(at)
            at += a.nbytes
        self._cuda = cuda_module(op, rank)
        self._buffer = self._cuda.PinnedBuffer(max(at, 1))
        self._events: dict[tuple, Any] = {}  # (device, stream) -> event after the copies up
        self._unread: set[tuple] = set()  # streams whose copies up may still be reading
        raw = np.frombuffer(self._buffer, dtype=np.uint8)
        self.host = [raw[o : o + a.nbytes].view(a.dtype).reshape(a.shape) for o, a in zip(offsets, self.args)]

    def down(self, k: int) -> None:
        for key in self._unread:
            self._events[key].synchronize()
        self._unread.clear()
        a = self.args[k]
        if a.nbytes:
            self._cuda.copy(self.host[k].ctypes.data, a.pointer, a.nbytes, a.stream, a.device)

    def up_all(self) -> None:
        """Queues every average's copy up on its gradient's stream; the mirror is
        written again (next step's down) only after they have read it."""
        for a, h in zip(self.args, self.host):
            if a.nbytes:
                self._cuda.copy_async(a.pointer, h.ctypes.data, a.nbytes, a.stream, a.device)
                e = self._events.get((a.device, a.stream))
                if e is None:
                    e = self._events[(a.device, a.stream)] = self._cuda.Event(a.device)
                e.record(a.stream)
                self._unread.add((a.device, a.stream))
