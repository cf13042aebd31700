"""All-reduce of CUDA arrays between the ranks of one node through CUDA IPC:
every rank has a device staging buffer that its peers map; a rank copies its
input into its own, and after a host barrier every rank reduces all of them with
a CUDA kernel, in rank order, so every rank gets the same bits."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from .._dtypes import CODES
from .arguments import DeviceArg

# Each rank's device staging buffer (larger all-reduces go through it in pieces).
IPC_BYTES = 32 << 20
# All-reduces above this size take this path. It waits for the stream twice per
# call, host staging once: measured with 2 ranks sharing one H100, staging won up
# to 256 KiB (0.15 ms against 0.6 ms) and IPC from 2 MiB.
IPC_MIN_BYTES = 1 << 20
HANDLE_BYTES = 64  # sizeof(cudaIpcMemHandle_t)
MAX_RANKS = 32  # the kernel's limit (kMaxPeers in kernels/cuda/reduce_peers.h)


def declined(comm: Any, path: str, why: str, instead: str = "host staging") -> None:
    """Says on stderr, with COLLEX_DEBUG=1 or more, why a GPU path is not taken."""
    if os.environ.get("COLLEX_DEBUG", "0") not in ("", "0"):
        print(f"collex: [rank {comm.rank}] {path} declined: {why}; {instead} instead", file=sys.stderr)


def share_among(comm: Any, path: str, make: Any, handle_bytes: int, open_peer: Any) -> tuple | None:
    """Collective over comm: every rank makes its object (`make()`, which
    returns it and its handle of at most `handle_bytes` bytes) and opens every
    peer's from its handle (`open_peer(handle)`). (own object, every rank's in
    rank order), or None on every rank unless every rank could; RuntimeError
    from either is the reason in the debug log (`path` names the caller)."""
    ok, own, handle, why = 1, None, b"", ""
    try:
        own, handle = make()
    except RuntimeError as e:
        ok, why = 0, f"making this rank's to share failed: {e}"
    handles = comm.allgather(np.frombuffer(handle.ljust(handle_bytes, b"\0"), np.uint8))
    peers = []
    if ok:
        try:
            for r in range(comm.size):
                peers.append(own if r == comm.rank else open_peer(bytes(handles[r])))
        except RuntimeError as e:
            ok, why = 0, f"opening rank {len(peers)}'s failed: {e}"
    everyone = comm.allreduce(np.array([ok], np.int32), op="min")
    if not everyone[0]:
        declined(comm, path, why or "another rank could not share or open its own")
        return None
    return own, peers


def map_device_buffers(comm: Any, cuda: Any, device: int, nbytes: int, path: str) -> tuple[Any, list] | None:
    """Collective over comm: every rank allocates `nbytes` of device memory (zeroed)
    and maps every peer's through CUDA IPC. (own buffer, every rank's buffer in
    rank order), or None on every rank unless every rank could (`path` names
    the caller in the debug log's reason)."""

    def make() -> tuple[Any, bytes]:
        own = cuda.SharedDeviceBuffer(nbytes, device)
        return own, own.handle()

    return share_among(comm, path, make, HANDLE_BYTES, lambda h: cuda.PeerDeviceBuffer(h, device))


def unusable(comm: Any, cuda: Any, max_ranks: int) -> str:
    """Why CUDA IPC between comm's ranks cannot work here, or ""."""
    if not getattr(cuda, "has_kernels", False):
        return "this build of the CUDA module has no kernels (nvcc was missing when it was built)"
    if comm.size == 1:
        return "one rank"
    if comm.size > max_ranks:
        return f"{comm.size} ranks, more than the kernels' {max_ranks}"
    if comm.local_size != comm.size:
        return "the ranks are on several nodes"
    return ""


class PeerBuffers:
    """Every rank's staging buffer, mapped into this process, on one device."""

    def __init__(self, comm: Any, cuda: Any, device: int, own: Any, peers: list):
        self._comm, self._cuda, self.device = comm, cuda, device
        self._own, self._peers = own, peers  # kept alive while mapped
        self._addresses = [p.address for p in peers]

    @classmethod
    def map(cls, comm: Any, cuda: Any, device: int) -> PeerBuffers | None:
        """Collective over comm: every rank allocates its buffer and maps its
        peers'; None on every rank unless every rank could (then all stage
        through the host instead). Also None where IPC cannot apply: one rank or
        more than 32, several nodes, a build without the kernels, or COLLEX_CUDA_IPC=0."""
        if os.environ.get("COLLEX_CUDA_IPC", "1") == "0":
            return None
        why = unusable(comm, cuda, MAX_RANKS)
        if why:
            declined(comm, "CUDA IPC all-reduce", why)
            return None
        mapped = map_device_buffers(comm, cuda, device, IPC_BYTES, "CUDA IPC all-reduce")
        return None if mapped is None else cls(comm, cuda, device, *mapped)

    def allreduce(self, a: DeviceArg, o: DeviceArg, code: int) -> None:
        """o = the reduction (operator `code`) of every rank's a, a piece of the
        staging buffer's size at a time."""
        cuda, size = self._cuda, a.dtype.itemsize
        count, step = a.nbytes // size, IPC_BYTES // size
        for s in range(0, count, step):
            n = min(count - s, step)
            cuda.copy_async(self._own.address, a.pointer + s * size, n * size, a.stream, a.device)
            cuda.synchronize(a.stream, a.device)
            self._comm.barrier()  # every rank's piece is in its staging buffer
            cuda.reduce_peers(
                o.pointer + s * size, self._addresses, n, CODES[a.dtype], code, a.stream, a.device
            )
            cuda.synchronize(a.stream, a.device)
            self._comm.barrier()  # every rank has read every staging buffer
