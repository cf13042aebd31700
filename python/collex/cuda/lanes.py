"""The stream-ordered CUDA IPC collectives (COLLEX_CUDA_IPC=lanes, issue 16): every
rank's staging buffer and flag words in one device buffer its peers map; one
kernel per call, queued on the array's stream, in which each block (a lane)
stages its part, signals its peers through their flag words and reads what it
needs from theirs (all-reduce: one shot reduces everything, two shots its share,
then gathers the others'; reduce-scatter, all-gather, broadcast and reduce
likewise), with no host step (csrc/collex/transport/cuda_ipc/lanes.h). From
DIRECT_MIN_BYTES on, where every rank's arrays can be mapped into its peers,
the kernel reads them in place instead, and an all-reduce writes each rank's
reduced share into every rank's output (registered.py: a host exchange of where
they lie, no wait for the GPU). The call returns once the kernel is queued.
Not yet run on a GPU: the protocol, and this module with a CPU stand-in for the
CUDA module, are tested on CPU ranks (tests/test_ipc_lanes.py,
tests/mpi/cuda_lanes_standin.py); the kernels are only compiled.

The kernels of all ranks spin on each other's flags, so they must run at the
same time: separate GPUs, or one GPU under MPS. On one GPU without MPS they still
finish, a time slice per wait. A lane that waits longer than the timeout gives
up and says so in status words in mapped host memory, which the next call (or
the Work's wait) reads and raises; so does a lane that finds a peer's call to be
another collective, size, dtype, operator or root (each round's first barrier
compares the ranks' call signatures)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import _core
from .._arrays import where
from .._dtypes import CODES
from .arguments import DeviceArg
from .ipc import declined, map_device_buffers, unusable
from .registered import Registry

STAGING_BYTES = 32 << 20
ONE_SHOT_MAX_BYTES = 256 << 10  # one barrier less pays while the message is small
# From this size on the kernels read the ranks' arrays in place (registered.py),
# where every rank's can be mapped: a host exchange per call buys a copy less
# of every byte. Not yet tuned on a GPU.
DIRECT_MIN_BYTES = 8 << 20
THREADS = 512
LANE_BYTES = 1 << 20  # about this much per lane and round, up to MAX_LANES lanes
MAX_LANES = 32

# The protocol's collectives (ipc::Collective in lanes.h: the numbers are the contract).
COLLECTIVES = {"allreduce": 0, "reduce_scatter": 1, "allgather": 2, "broadcast": 3, "reduce": 4}
DISAGREED = 2  # ipc::kDisagreed: a lane's status when a peer's call differs


def mps_running() -> bool:
    """Whether a CUDA MPS control daemon serves this machine (its pipe directory,
    CUDA_MPS_PIPE_DIRECTORY or /tmp/nvidia-mps, holds its control pipe): then the
    kernels of ranks sharing a GPU run at the same time instead of in turns.
    Start one with `nvidia-cuda-mps-control -d`; stop it with
    `echo quit | nvidia-cuda-mps-control`."""
    pipes = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return os.path.exists(os.path.join(pipes, "control"))


def gpu_identities(comm: Any, cuda: Any, device: int) -> list[bytes]:
    """Collective: every rank's GPU (its UUID), in rank order."""
    ids = comm.allgather(np.frombuffer(cuda.device_identity(device).ljust(16, b"\0")[:16], np.uint8))
    return [bytes(i) for i in ids]


def lanes_room(comm: Any, cuda: Any, device: int) -> int:
    """Collective: the most lanes a call may have, alike on every rank. Each lane
    spins until its peers' same lane comes, so every rank's lanes must run at
    once: the lanes this GPU runs at once (for the kernel that fits fewest),
    shared among the ranks on it, the fewest over the ranks; up to MAX_LANES.
    0 where not even one lane per rank fits, or the runtime cannot say."""
    ids = gpu_identities(comm, cuda, device)
    try:
        resident = int(cuda.lanes_resident(THREADS, device))
    except RuntimeError:
        resident = 0
    room = comm.allreduce(np.array([resident // ids.count(ids[comm.rank])], np.int64), op="min")
    return min(MAX_LANES, int(room[0]))


class LanePeers:
    """Every rank's staging buffer and flags, mapped into this process, on one
    device, and the communicator's count of rounds (the flags' sequence numbers)."""

    kinds = tuple(COLLECTIVES)

    def __init__(
        self, comm: Any, cuda: Any, device: int, own: Any, peers: list, staging_bytes: int, max_lanes: int
    ):
        self._comm, self._cuda, self.device = comm, cuda, device
        self._max_lanes = max_lanes  # lanes_room: every rank's lanes run at once
        self._staging_bytes = staging_bytes  # the flags follow the staging buffer
        self._own, self._peers = own, peers  # kept alive while mapped
        self._staging = [p.address for p in peers]
        self._flags = [p.address + staging_bytes for p in peers]
        self._status = cuda.PinnedBuffer(64)
        self._status_words = np.frombuffer(self._status, np.uint64, count=7)  # ipc::LaneStatus
        self._status_words[:] = 0
        self._seq = 1
        self._last = cuda.Event(device)  # the last call's kernel, which the next waits for
        self._timeout = float(comm.timeout)
        # Users' arrays mapped into the peers, for direct calls (builds that can export them).
        self.registry = Registry(comm, cuda, device) if hasattr(cuda, "allocation_of") else None
        self.last_way = ""

    @classmethod
    def map(cls, comm: Any, cuda: Any, device: int) -> LanePeers | None:
        """Collective over comm, like ipc.PeerBuffers.map: None on every rank unless
        every rank could map every peer's buffer (or where the protocol cannot
        apply: one rank or more than LANE_MAX_RANKS, several nodes, no kernels)."""
        why = unusable(comm, cuda, getattr(cuda, "LANE_MAX_RANKS", 0))
        if why:
            declined(comm, "CUDA IPC lanes", why)
            return None
        room = lanes_room(comm, cuda, device)
        if room < 1:
            declined(comm, "CUDA IPC lanes", "the GPU cannot run a lane of every rank sharing it at once")
            return None
        staging_bytes = STAGING_BYTES
        total = staging_bytes + cuda.LANE_FLAG_WORDS * 8
        mapped = map_device_buffers(comm, cuda, device, total, "CUDA IPC lanes")
        return None if mapped is None else cls(comm, cuda, device, *mapped, staging_bytes, room)

    @property
    def ranks(self) -> int:
        return self._comm.size

    def takes(self, a: DeviceArg, o: DeviceArg) -> bool:
        """Whether this path can run the call: input and output on this device
        (at any element offset: the kernels go by bytes where an array is not
        16-byte aligned)."""
        return a.device == o.device == self.device

    def check(self, op: str) -> None:
        """Raises, as from `op`, if a lane of an earlier call gave up: it waited
        too long for a peer (CommunicatorBroken), or a peer's call was another
        collective, size, dtype, operator or root (CollectiveMismatch). Either
        way that call's result is wrong and every later call raises too."""
        failed = int(self._status_words[0])
        if not failed:
            return
        what = _core._lane_failure([int(w) for w in self._status_words], self._timeout)
        text = (
            f"{where(op, self._comm.rank)}: a CUDA IPC collective gave up ({what}); "
            "that call's result is wrong and the GPU path of this communicator is broken"
        )
        raise (_core.CollectiveMismatch if failed == DISAGREED else _core.CommunicatorBroken)(text)

    def run(self, kind: str, a: DeviceArg, o: DeviceArg, code: int, root: int = 0) -> None:
        """Queues collective `kind` from a into o on a's stream (`code`: the
        reduction's operator; `root`: broadcast's and reduce's). Every rank
        passes the same kind, size, dtype, operator and root."""
        self.check(kind)
        cuda = self._cuda
        per_rank = a.nbytes // self._comm.size if kind == "reduce_scatter" else a.nbytes  # as lanes.h's Call
        collective = COLLECTIVES[kind]
        per_round = min(a.nbytes, self._staging_bytes)
        lanes = max(1, min(self._max_lanes, -(-per_round // LANE_BYTES)))
        shots = 1 if a.nbytes <= ONE_SHOT_MAX_BYTES else 2
        # Alike on every rank: the decision goes by the call's size, the exchange's outcome is agreed.
        direct = None
        if self.registry is not None and a.nbytes >= DIRECT_MIN_BYTES:
            direct = self.registry.exchange(a, o, self._last.synchronize)
        inputs, outputs = direct if direct is not None else ([], [])
        self.last_way = "direct" if direct else f"{shots}-shot"  # what the bench reports
        self._last.order_before(a.stream)  # staging buffers serve one call at a time, whatever its stream
        cuda.lanes_launch(
            collective=collective, staging=self._staging, flags=self._flags,
            staging_bytes=self._staging_bytes, rank=self._comm.rank, lanes=lanes, threads=THREADS,
            input=a.pointer, output=o.pointer, bytes=per_rank, first_seq=self._seq,
            shots=2 if direct else shots, root=root, dtype=CODES[a.dtype], op=code, timeout=self._timeout,
            status=self._status.device_address, stream=a.stream, device=a.device,
            inputs=inputs, outputs=outputs,
        )  # fmt: skip
        self._seq += cuda.lanes_rounds(collective, per_rank, self._staging_bytes, self._comm.size)
        self._last.record(a.stream)


class LaneWork:
    """The Work of a collective queued on the GPU: done when its kernel is."""

    def __init__(self, peers: LanePeers, cuda: Any, device: int, stream: int, op: str):
        self._peers, self._op = peers, op
        self._event = cuda.Event(device)
        self._event.record(stream)

    def wait(self) -> None:
        self._event.synchronize()
        self._peers.check(self._op)

    def done(self) -> bool:
        return bool(self._event.done())
