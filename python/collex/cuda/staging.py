"""A communicator's collectives on CUDA arrays (see arguments.py).

With COLLEX_CUDA_IPC=lanes, every collective between ranks of one node runs as
one stream-ordered kernel through the peers' mapped staging buffers (lanes.py),
and a send/recv as one device-to-device copy the receiver queues (p2p.py); on
several nodes, all-reduce runs those kernels inside each
node around a host all-reduce between nodes (across_nodes.py). Otherwise
all-reduce above 1 MiB between ranks of one node reads the peers' device memory
directly (ipc.py). Everything else (other collectives, several nodes, builds
without the kernels, COLLEX_CUDA_IPC=0) is staged through pinned host memory:
the input is copied down (in order on the array's stream, which is then waited
for), the host collective runs on that buffer, and the copy of the result back
up is queued on the same stream; large all-reduces go piece by piece so that
the copies overlap the host work. Every
rank passes the same kind of array (the paths differ in how many collectives
they issue).

The bytes are moved by the optional CUDA module (collex._cuda), imported the
first time a CUDA array arrives.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import _core
from .._arrays import where
from .._dtypes import CODES, OPS
from .._work import Work
from .across_nodes import NodeLanes
from .arguments import DeviceArg, cuda_module, is_device_array, new_device_array
from .ipc import IPC_MIN_BYTES, PeerBuffers
from .lanes import LanePeers, LaneWork
from .p2p import DeviceP2p
from .turns import TurnPeers, node_peers


class _Finished:
    """A Work handle for an operation that completed before it was returned."""

    def wait(self) -> None:
        return None

    def done(self) -> bool:
        return True


class _CopiedUp:
    """The Work of a receive into a CUDA array: waits for the host message, then
    copies it up (once) and returns the array."""

    def __init__(self, work: Any, host: np.ndarray, a: DeviceArg, cuda: Any):
        self._work, self._host, self._a, self._cuda, self._copied = work, host, a, cuda, False

    def wait(self) -> Any:
        self._work.wait()
        a = self._a
        if not self._copied and a.nbytes:
            self._cuda.copy(a.pointer, self._host.ctypes.data, a.nbytes, a.stream, a.device)
        self._copied = True
        return self._a.array

    def done(self) -> bool:
        return self._work.done()


# An all-reduce larger than two pieces is pipelined piece by piece: copying the
# next piece down and the last one up overlaps the host all-reduce of this one.
PIECE_BYTES = 8 << 20


class DeviceStaging:
    """A communicator's collectives on CUDA arrays, through pinned host buffers.

    Two buffers ('in' and 'out') grow to the largest operation seen and are reused.
    Copies down are waited for; the copy of the result back up is only queued on
    the array's stream (the result is ordered on it, like any GPU work), and a
    buffer is written again only once the copy reading it has finished (an event
    per buffer). Calls return when the host part is done: ``async_op=True`` gives
    a Work that is already done. Collectives on the stream-ordered kernels
    (COLLEX_CUDA_IPC=lanes, lanes.py) return once queued, and their Work waits
    for the kernel.
    """

    def __init__(self, comm: Any):
        self._comm = comm
        self._buffers: dict[str, Any] = {}
        self._events: dict[tuple, Any] = {}
        # buffer -> (event after the last copy reading it, its (device, stream))
        self._pending: dict[str, tuple] = {}
        # CUDA IPC: None until first needed, then False (not possible here) or PeerBuffers.
        self._ipc: Any = None
        # The same for the stream-ordered kernels (COLLEX_CUDA_IPC=lanes): LanePeers,
        # or NodeLanes on several nodes.
        self._lanes: Any = None
        self._p2p: DeviceP2p | None = None  # sends and receives from device to device

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

    def _peer_buffers(self, a: DeviceArg) -> PeerBuffers | None:
        """The CUDA IPC buffers for a's device, mapped on the first all-reduce that
        may use them (collective: every rank gets there at the same call)."""
        if self._ipc is None:
            self._ipc = PeerBuffers.map(self._comm, self._cuda("allreduce"), a.device) or False
        return self._ipc if self._ipc and self._ipc.device == a.device else None

    def lane_peers(self, a: DeviceArg, op: str) -> LanePeers | TurnPeers | NodeLanes | None:
        """The stream-ordered kernels for a's device, if this communicator runs
        them (COLLEX_CUDA_IPC=lanes): every rank's buffers on one node, the
        node's and a host step between nodes on several. Mapped at the first
        call (collective, as _peer_buffers)."""
        if os.environ.get("COLLEX_CUDA_IPC") != "lanes":
            return None
        if self._lanes is None:
            comm = self._comm
            way = node_peers if comm.local_size == comm.size else NodeLanes.map
            self._lanes = way(comm, self._cuda(op), a.device) or False
        return self._lanes if self._lanes and self._lanes.device == a.device else None

    def _on_lanes(self, kind: str, a: DeviceArg, o: DeviceArg, code: int, root: int, async_op: bool) -> Any:
        """Runs `kind` on the stream-ordered kernels if it can: returns the result
        (or its Work), else None. Empty arrays (which lie on no device) take the
        host path, so that they never decide which device the buffers are mapped on."""
        if a.nbytes == 0:
            return None
        lanes = self.lane_peers(a, kind)
        if not (lanes and kind in lanes.kinds and lanes.takes(a, o)):
            return None
        lanes.run(kind, a, o, code, root)
        if not async_op:
            return o.array
        return Work(LaneWork(lanes, self._cuda(kind), a.device, a.stream, kind), o.array)

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
        _core.check_device_out(
            (o.pointer, o.nbytes // o.dtype.itemsize, CODES[o.dtype]), o.shape, tuple(shape),
            (x.pointer, x.nbytes // x.dtype.itemsize, CODES[x.dtype]), op, self._comm.rank,
        )  # fmt: skip
        return o

    @staticmethod
    def _finish(result: Any, async_op: bool) -> Any:
        if not async_op:
            return result
        return Work(_Finished(), result)

    # ---- the collectives, each the host collective between two copies ----

    def allreduce(self, x: Any, op: str, out: Any, algo: str, async_op: bool) -> Any:
        name = "allreduce"
        a = self._arg(x, "x", name, writable=out is None)
        o = a if out is None else self._out(a, out, a.shape, name)
        code = _core.check_op(op, CODES[a.dtype], name, self._comm.rank)  # before anything touches the wire
        done = self._on_lanes(name, a, o, code, 0, async_op)
        if done is not None:
            return done
        ipc = self._peer_buffers(a) if a.nbytes > IPC_MIN_BYTES and o.device == a.device else None
        if ipc:
            ipc.allreduce(a, o, code)
        elif a.nbytes > 2 * PIECE_BYTES:
            self._allreduce_in_pieces(a, o, op, algo)
        else:
            h = self._down(a, "in", name)
            self._comm.allreduce(h, op=op, algo=algo)
            self._up(h, o, "in", name)
        return self._finish(o.array, async_op)

    def broadcast(self, x: Any, root: int, algo: str, async_op: bool) -> Any:
        name = "broadcast"
        root = _core.check_rank(root, "root", self._comm.size, name, self._comm.rank)
        mine = self._comm.rank == root
        a = self._arg(x, "x", name, writable=not mine)
        done = self._on_lanes(name, a, a, OPS["sum"], root, async_op)
        if done is not None:
            return done
        h = self._down(a, "in", name) if mine else self._host("in", a.shape, a.dtype, name)
        self._comm.broadcast(h, root=root, algo=algo)
        if not mine:
            self._up(h, a, "in", name)
        return self._finish(a.array, async_op)

    def reduce(self, x: Any, op: str, root: int, out: Any, async_op: bool) -> Any:
        name = "reduce"
        root = _core.check_rank(root, "root", self._comm.size, name, self._comm.rank)
        mine = self._comm.rank == root
        a = self._arg(x, "x", name, writable=out is None and mine)
        o = a if out is None else self._out(a, out, a.shape, name)
        code = _core.check_op(op, CODES[a.dtype], name, self._comm.rank)
        done = self._on_lanes(name, a, o, code, root, async_op)
        if done is not None:
            return done
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
        done = self._on_lanes(name, a, o, OPS["sum"], 0, async_op)
        if done is not None:
            return done
        h = self._down(a, "in", name)
        ho = self._host("out", shape, a.dtype, name)
        self._comm.allgather(h, out=ho)
        self._up(ho, o, "out", name)
        return self._finish(o.array, async_op)

    def reduce_scatter(self, x: Any, op: str, out: Any, async_op: bool) -> Any:
        name = "reduce_scatter"
        a = self._arg(x, "x", name, writable=False)
        shape = _core.check_scattered_shape(a.shape, self._comm.size, name, self._comm.rank)
        o = self._out(a, out, shape, name)
        code = _core.check_op(op, CODES[a.dtype], name, self._comm.rank)
        done = self._on_lanes(name, a, o, code, 0, async_op)
        if done is not None:
            return done
        h = self._down(a, "in", name)
        ho = self._host("out", shape, a.dtype, name)
        self._comm.reduce_scatter(h, op=op, out=ho)
        self._up(ho, o, "out", name)
        return self._finish(o.array, async_op)

    def device_p2p(self, op: str) -> DeviceP2p | None:
        """Sends and receives of CUDA arrays from device to device (p2p.py), where
        this communicator runs the stream-ordered kernels (COLLEX_CUDA_IPC=lanes)
        and all its ranks are on one node: a rule every rank applies alike, so
        that both ends of a message take the same way."""
        if os.environ.get("COLLEX_CUDA_IPC") != "lanes" or self._comm.local_size != self._comm.size:
            return None
        if self._p2p is None:
            self._p2p = DeviceP2p(self._comm, self._cuda(op))
        return self._p2p

    def post_p2p(self, x: Any, peer: int, tag: int, receive: bool) -> Any:
        """A send or receive of a CUDA array: from device to device on one node
        with COLLEX_CUDA_IPC=lanes (device_p2p); else through a host buffer of its
        own (so that several may be in flight): a send copies down before
        posting; a receive's Work copies up once the message has arrived."""
        name = "recv" if receive else "send"
        a = self._arg(x, "x", name, writable=receive)
        direct = self.device_p2p(name)
        if direct is not None:
            return direct.recv(a, peer, tag) if receive else direct.send(a, peer, tag)
        h = np.empty(a.shape, a.dtype)
        cuda = self._cuda(name)
        if not receive:
            if a.nbytes:
                cuda.copy(h.ctypes.data, a.pointer, a.nbytes, a.stream, a.device)
            return self._comm.isend(h, peer, tag)
        work = self._comm.irecv(h, peer, tag)
        return _CopiedUp(work, h, a, cuda)
