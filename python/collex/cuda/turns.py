"""The CUDA IPC collectives for ranks that share a GPU without MPS (issue 16).

Processes sharing a GPU without the MPS daemon never run kernels at the same
time: the GPU gives each a time slice in turn. The lanes' kernels (lanes.py)
spin on their peers' flags, so there every flag costs a time slice. Here no
kernel waits for another. Each round of a call is two kernels on the array's
stream (csrc/collex/transport/cuda_ipc/turns.h): one copies this rank's part
into its own staging buffer, one reads what it needs from every rank's. Between
them each rank records one of its two CUDA IPC events on its stream, the ranks
meet on the host (a barrier on the node's shared memory; the first of a call
also compares the ranks' calls), and each rank's stream waits for its peers'
events. The GPU runs each rank's kernel once its peers' are done, one switch
between processes per rank and meeting; the host waits for no GPU work.

One meeting a round is enough: rounds alternate between the two halves of the
staging buffers, and a peer records its event for round k only after its
kernel that read round k - 1, so the wait that lets a rank read round k also
lets it stage round k + 1 into the half that round k - 1 used. From
DIRECT_MIN_BYTES on, where the ranks' arrays can be mapped into their peers
(registered.py), one kernel per rank reads and writes them in place, between
two meetings: every rank's arrays are ready, and nobody touches a peer's any more.

Why two events: a stream waits for an event's latest record as of the wait
call. Rank r records meeting t + 1 only after meeting t, and a peer may still
be about to wait for r's record of meeting t then: with one event it would
find the later record and wait for more than it needs (never for less, and
never for a record that waits for it in turn). Meeting t goes into event
t % 2, so that peer finds record t; the next record into it, t + 2, comes only
after meeting t + 1, which the peer has not reached.

Which way the ranks take (node_peers): turns where some ranks share a GPU and
no MPS daemon runs, the lanes' device flags where every kernel runs at the
same time; COLLEX_CUDA_ORDER=events or =flags forces one. The bench says
which way each row ran (`last_way`). Not yet run on a GPU: the turns and this
module are tested on CPU processes with a stand-in for the CUDA module
(tests/test_ipc_turns.py)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import _core
from .._arrays import where
from .._dtypes import CODES
from . import lanes
from .arguments import DeviceArg
from .ipc import declined, map_device_buffers, share_among, unusable
from .lanes import COLLECTIVES, LanePeers, gpu_identities, mps_running
from .registered import Registry

PATH = "CUDA IPC turns"
EVENT_HANDLE_BYTES = 64  # sizeof(cudaIpcEventHandle_t)
THREADS = 512
STAGE, READ = 0, 1  # turns.h's TurnPart


def take_turns(comm: Any, cuda: Any, device: int) -> str:
    """Collective: why the ranks' kernels cannot run at the same time, so that
    IPC events must order them ("" where device flags can): COLLEX_CUDA_ORDER,
    else whether two ranks have one GPU (by its UUID) and no MPS daemon runs."""
    way = os.environ.get("COLLEX_CUDA_ORDER", "auto")
    if way not in ("auto", "events", "flags"):
        raise ValueError(f"COLLEX_CUDA_ORDER: expected auto, events or flags, got {way!r}")
    if way != "auto":
        return "COLLEX_CUDA_ORDER=events" if way == "events" else ""
    shared = len(set(gpu_identities(comm, cuda, device))) < comm.size
    mps = comm.allreduce(np.array([mps_running()], np.int32), op="min")
    return "ranks share a GPU and no MPS daemon runs" if shared and not mps[0] else ""


def node_peers(comm: Any, cuda: Any, device: int) -> LanePeers | TurnPeers | None:
    """Collective over the ranks of one node: the way their kernels are ordered,
    mapped (None on every rank where no way can run)."""
    why = unusable(comm, cuda, getattr(cuda, "LANE_MAX_RANKS", 0))
    if why:
        declined(comm, "CUDA IPC lanes", why)
        return None
    turns = take_turns(comm, cuda, device)
    if turns:
        declined(comm, "CUDA IPC lanes with device flags", turns, instead="IPC events between turns")
        return TurnPeers.map(comm, cuda, device)
    return LanePeers.map(comm, cuda, device)


class TurnPeers:
    """Every rank's staging buffer and IPC events, opened in this process."""

    kinds = tuple(COLLECTIVES)

    def __init__(self, comm: Any, cuda: Any, device: int, buffers: tuple, events: tuple, staging_bytes: int):
        self._comm, self._cuda, self.device = comm, cuda, device
        self._own, self._peers = buffers  # kept alive while mapped
        self._staging = [p.address for p in self._peers]
        self._half = staging_bytes // 2 // 16 * 16  # each round stages into one half (whole vectors)
        self._staged = 0  # staged rounds so far: which half the next uses
        own, every = events
        self._events = own  # this rank's two
        self._waits = [[every[q][slot] for q in range(comm.size) if q != comm.rank] for slot in (0, 1)]
        self._meeting = 0  # meetings so far: which event the next records into
        self._last = cuda.Event(device)  # the last call's work, which the next waits for
        self.registry = Registry(comm, cuda, device) if hasattr(cuda, "allocation_of") else None
        self.last_way = ""

    @classmethod
    def map(cls, comm: Any, cuda: Any, device: int) -> TurnPeers | None:
        """Collective over comm, like LanePeers.map (whose checks node_peers made)."""
        staging_bytes = lanes.STAGING_BYTES  # as the lanes' (read here, so that tests may set it)
        buffers = map_device_buffers(comm, cuda, device, staging_bytes, PATH)
        if buffers is None:
            return None

        def make() -> tuple[Any, bytes]:
            two = [cuda.Event(device, interprocess=True) for _ in range(2)]
            return two, b"".join(e.handle().ljust(EVENT_HANDLE_BYTES, b"\0") for e in two)

        def open_peer(handle: bytes) -> list:
            n = EVENT_HANDLE_BYTES
            return [cuda.Event.opened(handle[i * n : (i + 1) * n], device) for i in range(2)]

        events = share_among(comm, PATH, make, 2 * EVENT_HANDLE_BYTES, open_peer)
        return None if events is None else cls(comm, cuda, device, buffers, events, staging_bytes)

    @property
    def ranks(self) -> int:
        return self._comm.size

    def takes(self, a: DeviceArg, o: DeviceArg) -> bool:
        """Whether this path can run the call: input and output on this device."""
        return a.device == o.device == self.device

    def check(self, op: str) -> None:
        """Nothing to report: a turn's errors are raised by the call itself."""

    def _meet(self, stream: int, signature: int = 0, kind: str = "") -> None:
        """Records this rank's event on `stream`, meets the peers on the host and
        makes `stream` wait for theirs; with a `signature` (lanes.h's
        call_signature), raises CollectiveMismatch on every rank unless every
        rank's call has the same one."""
        slot = self._meeting % 2
        self._events[slot].record(stream)
        self._meeting += 1
        if signature:
            words = self._comm.allgather(np.array([signature], np.uint64).view(np.int64)).view(np.uint64)
            words = words.reshape(-1)
            other = next((q for q in range(self.ranks) if words[q] != signature), None)
            if other is not None:
                raise _core.CollectiveMismatch(
                    f"{where(kind, self._comm.rank)}: rank {other} called "
                    f"{_core._ipc_describe_call(int(words[other]))} where rank {self._comm.rank} called "
                    f"{_core._ipc_describe_call(signature)}"
                )
        else:
            self._comm.barrier()
        for peer in self._waits[slot]:
            peer.order_before(stream)

    def run(self, kind: str, a: DeviceArg, o: DeviceArg, code: int, root: int = 0) -> None:
        """Queues collective `kind` from a into o on a's stream, as LanePeers.run."""
        cuda, size = self._cuda, self._comm.size
        per_rank = a.nbytes // size if kind == "reduce_scatter" else a.nbytes  # as lanes.h's Call
        collective = COLLECTIVES[kind]
        direct = None
        if self.registry is not None and a.nbytes >= lanes.DIRECT_MIN_BYTES:
            direct = self.registry.exchange(a, o, self._last.synchronize)
        inputs, outputs = direct if direct is not None else ([], [])
        self.last_way = "events, direct" if direct else "events, staged"  # what the bench reports
        signature = _core._ipc_call_signature(collective, per_rank, root, CODES[a.dtype], code, bool(direct))
        self._last.order_before(a.stream)  # staging buffers serve one call at a time, whatever its stream

        def launch(part: int, k: int, staging: list) -> None:
            cuda.turns_launch(
                part=part, collective=collective, staging=staging, staging_bytes=self._half,
                rank=self._comm.rank, threads=THREADS, input=a.pointer, output=o.pointer, bytes=per_rank,
                round=k, root=root, dtype=CODES[a.dtype], op=code, stream=a.stream, device=a.device,
                inputs=inputs, outputs=outputs,
            )  # fmt: skip

        if direct:
            self._meet(a.stream, signature, kind)  # every rank's arrays are ready
            launch(READ, 0, self._staging)
            self._meet(a.stream)  # nobody reads a peer's input or writes its output any more
        for k in range(0 if direct else cuda.lanes_rounds(collective, per_rank, self._half, size)):
            half = self._half * (self._staged % 2)
            self._staged += 1
            staging = [s + half for s in self._staging]
            launch(STAGE, k, staging)
            self._meet(a.stream, signature if k == 0 else 0, kind)  # every rank's part is staged
            launch(READ, k, staging)
        self._last.record(a.stream)
