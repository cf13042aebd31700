"""Users' arrays that peers read in place (issue 16): for large calls on the
stream-ordered kernels, every rank's input and output are mapped into every
peer through CUDA IPC, so that the kernels read them where they lie (a direct
call, csrc/collex/transport/cuda_ipc/lanes.h) instead of copying them through
the staging buffers, which saves a copy in and one out of every byte.

Per call the ranks exchange where their arrays lie: one host all-gather of a
record per array (the IPC handle of the allocation that holds it and the
array's offset in it), which waits for no GPU work. Each rank opens every
peer's allocation the first time it appears and keeps it open (keyed by its
handle, which a new allocation at the same address does not share), as NCCL's
and PyTorch's registration caches do. Every rank sees the same records and so
knows alike which are new: only a call with a new one costs a second exchange,
in which the ranks agree whether all of them could open it. An allocation that
its owner cannot export (memory from cudaMallocAsync pools or the virtual
memory API) or some rank cannot open keeps such calls staged, on every rank
alike (the reason in the debug log with COLLEX_DEBUG=1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .ipc import HANDLE_BYTES, declined

RECORD_WORDS = 2 + HANDLE_BYTES // 8  # exportable (0/1), offset in the allocation, handle
MAX_KNOWN = 512  # allocations remembered before every mapping is closed and opened anew
PATH = "CUDA IPC of users' arrays"


class Registry:
    """The peers' allocations this rank has opened, and what the ranks agreed of each."""

    def __init__(self, comm: Any, cuda: Any, device: int):
        self._comm, self._cuda, self.device = comm, cuda, device
        self._opened: dict[tuple[int, bytes], Any] = {}  # (rank, handle) -> PeerDeviceBuffer
        self._usable: dict[tuple[int, bytes], bool] = {}  # the same on every rank
        self.exchanges = self.agreements = 0  # host exchanges: per call, and for new allocations

    def _record(self, pointer: int) -> np.ndarray:
        words = np.zeros(RECORD_WORDS, np.uint64)
        try:
            base, _ = self._cuda.allocation_of(pointer)
            handle = self._cuda.ipc_handle(base)
        except RuntimeError:
            return words  # not exportable: this call stays staged
        words[0], words[1] = 1, pointer - base
        words[2:] = np.frombuffer(handle.ljust(HANDLE_BYTES, b"\0")[:HANDLE_BYTES], np.uint64)
        return words

    def exchange(self, a: Any, o: Any, settle: Any) -> tuple[list[int], list[int]] | None:
        """Collective: every rank's a and o as mapped in this process, in rank
        order, or None on every rank when some rank's cannot be (the call then
        stages). `settle()` waits for the kernels that may still read mappings
        (before they are closed, every MAX_KNOWN allocations)."""
        comm, size = self._comm, self._comm.size
        mine = np.concatenate([self._record(a.pointer), self._record(o.pointer)])
        table = comm.allgather(mine.view(np.int64)).view(np.uint64).reshape(size, 2, RECORD_WORDS)
        self.exchanges += 1
        if not table[:, :, 0].all():
            return None
        keys = [(q, table[q, k, 2:].tobytes()) for q in range(size) for k in range(2)]
        new = [key for key in dict.fromkeys(keys) if key not in self._usable]
        if new:
            if len(self._usable) + len(new) > MAX_KNOWN:  # the same count on every rank
                settle()
                self._opened.clear()
                self._usable.clear()
            self._agree(new)
        if not all(self._usable[key] for key in keys):
            return None
        addresses = []
        for q in range(size):
            for k, own in enumerate((a.pointer, o.pointer)):
                if q == comm.rank:
                    addresses.append(own)
                else:
                    addresses.append(self._opened[keys[2 * q + k]].address + int(table[q, k, 1]))
        return addresses[0::2], addresses[1::2]

    def _agree(self, new: list) -> None:
        """Opens the new allocations of peers; every rank learns whether all could."""
        ok, why = 1, ""
        for q, handle in new:
            if q != self._comm.rank and (q, handle) not in self._opened:
                try:
                    self._opened[(q, handle)] = self._cuda.PeerDeviceBuffer(handle, self.device)
                except RuntimeError as e:
                    ok, why = 0, f"opening rank {q}'s allocation failed: {e}"
        everyone = np.array([ok], np.int32)
        self._comm.allreduce(everyone, op="min")
        self.agreements += 1
        for key in new:
            self._usable[key] = bool(everyone[0])
        if not everyone[0]:
            for key in new:
                self._opened.pop(key, None)
            why = why or "another rank could not open an allocation"
            declined(self._comm, PATH, why, "the staging buffers")
