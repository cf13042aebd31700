"""All-reduce of CUDA arrays on several nodes (COLLEX_CUDA_IPC=lanes, issue 16):
the stream-ordered kernels between the ranks of each node (lanes.py) around a
host all-reduce between nodes, hierarchically, so that the gradients of a
GradientReducer never leave the GPU inside a node either.

Each call: a reduce-scatter on the node's lanes leaves every rank its node's
reduction of one share of the array (1/L of it for L ranks a node; the few
elements that L does not divide are all-reduced whole on the lanes, and every
rank carries them); the share goes down to pinned host memory (the one wait for
the stream), is all-reduced over MPI with the ranks of the same local rank on
the other nodes, comes back up, and an all-gather on the lanes hands every rank
of the node every share. Every rank of a node so sends its own share between
nodes, and each byte crosses between nodes once per node. Averages are averaged
twice, over the node and over the nodes (the nodes are of one size).

Other collectives of CUDA arrays on several nodes stage through the host
(staging.py). Not yet run on a GPU: tests/mpi/cuda_lanes_standin.py runs it on
CPU ranks in pretend nodes (COLLEX_NODE_SIZE)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._dtypes import OPS
from .arguments import DeviceSpan
from .ipc import declined
from .lanes import LanePeers
from .turns import TurnPeers, node_peers

OP_NAMES = {code: name for name, code in OPS.items()}
PATH = "CUDA IPC lanes across nodes"


class NodeLanes:
    """The node's lanes and the communicator of this rank's peers on the other nodes."""

    kinds = ("allreduce",)

    def __init__(self, cuda: Any, lanes: LanePeers | TurnPeers, across: Any):
        self._cuda, self._lanes, self._across = cuda, lanes, across
        self.device = lanes.device
        self._share: Any = None  # this rank's share and the tail, on the device
        self._host: Any = None  # and in pinned host memory
        self._capacity = 0  # bytes of each
        self._last = cuda.Event(self.device)  # the last call's work, which the next waits for

    @classmethod
    def map(cls, comm: Any, cuda: Any, device: int) -> NodeLanes | None:
        """Collective over comm (ranks on several nodes): the node's lanes, mapped
        as LanePeers.map does over the node's ranks, or None on every rank unless
        every node could map its own and the nodes have one number of ranks."""
        node = comm.split(comm._c.node_leader, comm.rank)
        across = comm.split(comm.local_rank, comm.rank)
        extremes = np.array([comm.local_size, -comm.local_size], np.int64)
        comm.allreduce(extremes, op="min")
        lanes = node_peers(node, cuda, device) if extremes[0] == -extremes[1] else None
        everyone = np.array([lanes is not None], np.int32)
        comm.allreduce(everyone, op="min")
        if extremes[0] != -extremes[1]:
            declined(comm, PATH, f"the nodes have from {extremes[0]} to {-extremes[1]} ranks")
        elif not everyone[0]:
            declined(comm, PATH, "a node's ranks could not run the lanes between them")
        if not everyone[0]:
            return None
        return cls(cuda, lanes, across)

    def takes(self, a: Any, o: Any) -> bool:
        return self._lanes.takes(a, o)

    def check(self, op: str) -> None:
        self._lanes.check(op)

    def _buffers(self, nbytes: int) -> tuple[Any, int]:
        """The device share buffer and its pinned host twin, at least nbytes each."""
        if self._capacity < nbytes:
            self._last.synchronize()  # the last call's copies have finished with the old ones
            self._share = self._host = None
            self._capacity = max(nbytes, 2 * self._capacity, 1 << 16)
            self._share = self._cuda.SharedDeviceBuffer(self._capacity, self.device)
            self._host = self._cuda.PinnedBuffer(self._capacity)
        return self._share, self._host

    def run(self, kind: str, a: Any, o: Any, code: int, root: int = 0) -> None:
        """o = the reduction (operator `code`) of every rank's a; queued on a's
        stream, which is waited for once, after the node's reduce-scatter."""
        if kind not in self.kinds:
            raise ValueError(f"{PATH}: runs {', '.join(self.kinds)}, not {kind}")
        self.check(kind)
        cuda, lanes, stream = self._cuda, self._lanes, a.stream
        itemsize, ranks = a.dtype.itemsize, lanes.ranks
        share, tail = divmod(a.nbytes // itemsize, ranks)
        whole, mine = ranks * share * itemsize, share * itemsize  # the scattered part; this rank's share
        nbytes = mine + tail * itemsize
        buf, host = self._buffers(nbytes)
        self._last.order_before(stream)  # the buffers serve one call at a time, whatever its stream

        def span(pointer: int, n: int) -> DeviceSpan:
            return DeviceSpan(pointer, n, a.dtype, stream, self.device)

        if share:
            lanes.run("reduce_scatter", span(a.pointer, whole), span(buf.address, mine), code)
        if tail:
            rest = nbytes - mine
            lanes.run("allreduce", span(a.pointer + whole, rest), span(buf.address + mine, rest), code)
        h = np.frombuffer(host, np.uint8, count=nbytes).view(a.dtype)
        cuda.copy(h.ctypes.data, buf.address, nbytes, stream, self.device)  # waits for the node's part
        self._across.allreduce(h, op=OP_NAMES[code])
        cuda.copy_async(buf.address, h.ctypes.data, nbytes, stream, self.device)
        if tail:
            cuda.copy_async(o.pointer + whole, buf.address + mine, rest, stream, self.device)
        if share:
            lanes.run("allgather", span(buf.address, mine), span(o.pointer, whole), OPS["sum"])
        self._last.record(stream)
