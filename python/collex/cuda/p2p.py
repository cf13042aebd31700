"""Send and receive of CUDA arrays between the ranks of one node, stream-ordered
(COLLEX_CUDA_IPC=lanes, issue 16): the bytes go from the sender's array to the
receiver's in one device-to-device copy that the receiver queues on its own
stream; the host only carries a descriptor and the answer, through the core's
point-to-point messages (csrc/collex/core/p2p.h, DeviceEnd), and waits for no
GPU work (but in one case below).

A send records this rank's interprocess CUDA event on the array's stream
(after the array's producers) and posts a message whose payload says where the
peer can read the array (the CUDA IPC handle of the allocation holding it and
its offset there, or its address within one process) and which event to wait
for. When the receiver's core matches the message (in whichever wait makes
progress, so MPI_Ssend's guarantee holds as for host memory) it has already
checked dtype, size and shape; the receiver's stream then waits for the
sender's event, copies, and records the receiver's own event, and only then
does the verdict go back, carrying that event's handle. The send completes on
the verdict, and its Work orders the sender's stream after the receiver's
event: later work on it, which may overwrite the array, runs after the copy.

An event's stream wait takes its latest record as of the wait call, so a copy
may wait for a later record of the sender's (a later send) and the sender for a
later copy: more than needed, never less. Each wait is for a record made before
it in time, so no set of waits can wait for each other.

The receiver keeps a peer's allocation open once it has mapped it (keyed by
its IPC handle, which a new allocation at the same address does not share), as
registered.py does for the collectives. A send to this rank itself, and a send
of an array whose allocation cannot be exported (cudaMallocAsync pools, the
virtual memory API), first copies the array on its stream into a device buffer
of its own that can be: the receive may come after the array has changed, and
the peer must be able to map what it reads. The peer maps that buffer for the
one copy and waits for the copy before it answers, so that it has closed the
mapping before the sender frees the buffer (the one wait for the device here).

A peer's allocation kept open is closed when more than MAX_OPEN are open, or
with the communicator. An allocation its owner frees back to the driver
meanwhile (CuPy's free_all_blocks, PyTorch's empty_cache) is open in the peer
still, which CUDA leaves undefined; the collectives' registry (registered.py)
keeps peers' allocations open the same way.

Not yet run on a GPU: tested on CPU processes with the stand-in for the CUDA
module (tests/mpi/cuda_lanes_standin.py), whose streams run on threads."""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any

import numpy as np

from .._dtypes import CODES
from .._work import Work
from .arguments import DeviceArg
from .ipc import HANDLE_BYTES

EVENT_HANDLE_BYTES = 64  # sizeof(cudaIpcEventHandle_t)
# The descriptor: process id, address of the bytes, how the peer maps them (a
# MAPPING), offset in the allocation, bytes, device; then the allocation's IPC
# handle and the event's.
WORDS = 6
NOT_MAPPED, KEEP_OPEN, CLOSE_AFTER = 0, 1, 2  # MAPPING: a user's allocation stays open, a send's own copy not
DESCRIPTOR_BYTES = WORDS * 8 + HANDLE_BYTES + EVENT_HANDLE_BYTES
REPLY_BYTES = 8 + EVENT_HANDLE_BYTES  # the receiver's process id and its event's handle
MAX_OPEN = 64  # peers' allocations kept open before all are closed (and opened anew when needed)

# This process's interprocess events by handle: a receive from a rank of the same
# process (threads) uses the object, since a process cannot open its own handle.
_own_events: dict[bytes, Any] = {}

# Each posted receive's deliver, by the key the core holds instead of the function
# (kept alive by the receive's Work, so a receive that never matches leaves nothing).
_delivers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_keys = itertools.count(1)


def deliver_matched(key: int, descriptor: bytes) -> bytes:
    """The core's call when receive `key`'s message has matched: runs its deliver."""
    deliver = _delivers.get(key)
    if deliver is None:
        raise RuntimeError("the receive was dropped before its message came")
    return deliver(descriptor)


def _count(a: DeviceArg) -> int:
    return int(np.prod(a.shape, dtype=np.int64))


def _padded(handle: bytes, n: int) -> bytes:
    if len(handle) > n:
        raise RuntimeError(f"a CUDA IPC handle of {len(handle)} bytes (at most {n} expected)")
    return handle.ljust(n, b"\0")


class DeviceP2p:
    """One communicator's sends and receives of CUDA arrays on one node."""

    def __init__(self, comm: Any, cuda: Any):
        self._comm, self._cuda = comm, cuda
        self._events: dict[int, Any] = {}  # device -> this rank's interprocess event
        self._opened: dict[tuple[int, bytes], Any] = {}  # (pid, handle) -> PeerDeviceBuffer
        self._peer_events: dict[tuple[int, bytes], Any] = {}  # (pid, handle) -> opened Event
        self._copies: dict[tuple[int, int], Any] = {}  # (device, stream) -> event after its last copy
        self._to_self: dict[int, Any] = {}  # address -> the copy a send to this rank made
        self._parked: list[tuple[Any, Any]] = []  # (event, buffer): freed once the event is done

    # ---- this rank's objects ----

    def _event(self, device: int) -> Any:
        e = self._events.get(device)
        if e is None:
            e = self._events[device] = self._cuda.Event(device, interprocess=True)
            _own_events[bytes(_padded(e.handle(), EVENT_HANDLE_BYTES))] = e
        return e

    def _park(self, buffer: Any, device: int, stream: int) -> None:
        """Frees `buffer` once the work now queued on `stream` is done."""
        e = self._cuda.Event(device)
        e.record(stream)
        self._parked.append((e, buffer))

    def _free_parked(self) -> None:
        self._parked = [(e, b) for e, b in self._parked if not e.done()]

    def _copy_of(self, a: DeviceArg) -> Any:
        """A device buffer of a's bytes (copied on a's stream) that peers can map."""
        buffer = self._cuda.SharedDeviceBuffer(a.nbytes, a.device, zeroed=False)  # no wait for the device
        self._cuda.copy_async(buffer.address, a.pointer, a.nbytes, a.stream, a.device)
        return buffer

    def _export(self, pointer: int) -> tuple[bytes, int] | None:
        """(IPC handle of the allocation holding `pointer`, offset in it), or None."""
        try:
            base, _ = self._cuda.allocation_of(pointer)
            return self._cuda.ipc_handle(base), pointer - base
        except RuntimeError:
            return None

    # ---- a peer's objects ----

    def _peer_event(self, pid: int, handle: bytes, device: int) -> Any:
        if pid == os.getpid():
            return _own_events[handle]
        e = self._peer_events.get((pid, handle))
        if e is None:
            e = self._peer_events[(pid, handle)] = self._cuda.Event.opened(handle, device)
        return e

    def _peer_allocation(self, pid: int, handle: bytes, device: int) -> Any:
        key = (pid, handle)
        buffer = self._opened.get(key)
        if buffer is None:
            if len(self._opened) >= MAX_OPEN:
                for e in self._copies.values():  # no queued copy reads a mapping any more
                    e.synchronize()
                self._opened.clear()
            buffer = self._opened[key] = self._cuda.PeerDeviceBuffer(handle, device)
        return buffer

    # ---- send ----

    def send(self, a: DeviceArg, peer: int, tag: int) -> Any:
        """Posts a send of a to `peer`; its Work orders a's stream after the peer's copy."""
        self._free_parked()
        own_copy, source, exported, event_handle, mapping = None, a.pointer, None, b"", NOT_MAPPED
        if a.nbytes:  # an empty array lies on no device: nothing to copy or order
            exported = None if peer == self._comm.rank else self._export(a.pointer)
            mapping = KEEP_OPEN if exported else NOT_MAPPED
            if exported is None:
                own_copy = self._copy_of(a)
                source = own_copy.address
                if peer == self._comm.rank:
                    self._to_self[source] = own_copy  # the receive frees it
                else:
                    exported, mapping = (own_copy.handle(), 0), CLOSE_AFTER
            event = self._event(a.device)
            event.record(a.stream)
            event_handle = event.handle()
        words = [os.getpid(), source, mapping, exported[1] if exported else 0, a.nbytes]
        descriptor = (
            np.array([*words, max(a.device, 0)], np.uint64).tobytes()
            + _padded(exported[0] if exported else b"", HANDLE_BYTES)
            + _padded(event_handle, EVENT_HANDLE_BYTES)
        )
        try:
            work = self._comm._c.send_device(
                a.pointer, _count(a), CODES[a.dtype], a.device, a.shape, peer, tag, descriptor
            )  # fmt: skip
        except BaseException:
            if own_copy is not None:
                self._to_self.pop(source, None)
                self._park(own_copy, a.device, a.stream)
            raise
        keep = own_copy if peer != self._comm.rank else None
        return Work(_SendWork(self, work, a, keep), None, (a.array,))

    def after_send(self, work: Any, a: DeviceArg, own_copy: Any, failed: bool) -> None:
        """Orders a's stream after the receiver's copy (its event, from the
        verdict), and frees the send's own copy of the array after that."""
        reply = b"" if failed else work.device_reply()
        if len(reply) == REPLY_BYTES:
            pid = int(np.frombuffer(reply[:8], np.uint64)[0])
            self._peer_event(pid, reply[8:], a.device).order_before(a.stream)
        if own_copy is not None:
            self._park(own_copy, a.device, a.stream)

    # ---- receive ----

    def recv(self, a: DeviceArg, peer: int, tag: int) -> Any:
        """Posts a receive into a; the core calls the deliver when the message matches."""
        self._free_parked()

        def deliver(descriptor: bytes) -> bytes:
            return self._deliver(a, descriptor)

        key = next(_keys)
        _delivers[key] = deliver
        work = self._comm._c.recv_device(
            a.pointer, _count(a), CODES[a.dtype], a.device, a.shape, peer, tag, key
        )  # fmt: skip
        return Work(work, a.array, (a.array, deliver))

    def _deliver(self, a: DeviceArg, descriptor: bytes) -> bytes:
        """Queues the copy of a matched message into a on a's stream, after the
        sender's event; returns the reply (this rank's event, recorded after it).
        Runs inside the core's progress: a RuntimeError refuses the message with
        its text, on both ranks."""
        if len(descriptor) != DESCRIPTOR_BYTES:
            raise RuntimeError(f"malformed descriptor of {len(descriptor)} bytes")
        words = np.frombuffer(descriptor[: WORDS * 8], np.uint64)
        pid, pointer, mapping, offset, nbytes, _ = (int(w) for w in words)
        handle = descriptor[WORDS * 8 : WORDS * 8 + HANDLE_BYTES]
        event_handle = descriptor[WORDS * 8 + HANDLE_BYTES :]
        if nbytes != a.nbytes:
            raise RuntimeError(f"{nbytes} bytes sent into an array of {a.nbytes}")
        if not nbytes:
            return b""  # nothing to order the sender's stream after
        one_off = None  # a send's own copy, mapped for this copy only
        if pid == os.getpid():
            source = pointer
        elif mapping == KEEP_OPEN:
            source = self._peer_allocation(pid, handle, a.device).address + offset
        elif mapping == CLOSE_AFTER:
            one_off = self._cuda.PeerDeviceBuffer(handle, a.device)
            source = one_off.address + offset
        else:
            raise RuntimeError("the sender's array lies in another process and has no IPC handle")
        self._peer_event(pid, event_handle, a.device).order_before(a.stream)
        self._cuda.copy_async(a.pointer, source, nbytes, a.stream, a.device)
        last = self._copies.get((a.device, a.stream))
        if last is None:
            last = self._copies[(a.device, a.stream)] = self._cuda.Event(a.device)
        last.record(a.stream)
        if one_off is not None:
            # Closed before the answer, so before the sender may free it (CUDA
            # leaves freeing memory a peer still has open undefined): the one
            # place here where the host waits for the device.
            copied = self._cuda.Event(a.device)
            copied.record(a.stream)
            copied.synchronize()
            del one_off
        own_copy = self._to_self.pop(pointer, None) if pid == os.getpid() else None
        if own_copy is not None:
            self._park(own_copy, a.device, a.stream)  # freed once the copy has run
        event = self._event(a.device)
        event.record(a.stream)
        return np.array([os.getpid()], np.uint64).tobytes() + _padded(event.handle(), EVENT_HANDLE_BYTES)


class _SendWork:
    """A device send's Work: done when the receiver has queued its copy, after
    which (once) the sender's stream is ordered after that copy."""

    def __init__(self, owner: DeviceP2p, work: Any, a: DeviceArg, own_copy: Any):
        self._owner, self._work, self._a, self._own_copy = owner, work, a, own_copy
        self._settled = False

    def _settle(self, failed: bool) -> None:
        if not self._settled:
            self._settled = True
            self._owner.after_send(self._work, self._a, self._own_copy, failed)
            self._own_copy = None

    def wait(self) -> None:
        try:
            self._work.wait()
        except BaseException:
            self._settle(failed=True)
            raise
        self._settle(failed=False)

    def done(self) -> bool:
        try:
            finished = bool(self._work.done())
        except BaseException:
            self._settle(failed=True)
            raise
        if finished:
            try:
                self._work.wait()  # raises the refusal, if any
            except BaseException:
                self._settle(failed=True)
                return True
            self._settle(failed=False)
        return finished
