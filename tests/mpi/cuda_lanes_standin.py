"""The stream-ordered CUDA IPC collectives' Python path (collex/cuda/lanes.py,
COLLEX_CUDA_IPC=lanes) end to end on CPU ranks: the CUDA module is replaced by a
stand-in whose "device" memory is host memory, whose buffers that peers map are
POSIX shared memory, and whose kernel launch runs this rank's lanes of the same
protocol on host threads (_core._ipc_lane_rank, csrc/collex/transport/cuda_ipc/).
So the ranks are processes, as on a GPU, and everything but the kernels' own
code is what runs there: the handle exchange, the flags' sequence numbers across
calls, the choice of lanes and shots, the status word after a timeout. The
arrays are NumPy arrays dressed in __cuda_array_interface__.

Streams are real here too: each stream handle is a worker thread running its
queued work in order after a small random delay, events mark points in it, and
waits on events hold a stream back, as on a GPU. So a missing order (a copy
that does not wait for the kernel before it, a fusion buffer packed again before
it was read) shows up as a wrong result, and the tests read results only after
waiting for the stream they are ordered on (settle())."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import io
import itertools
import mmap
import os
import queue
import random
import sys
import threading
import time

import collex as cx
import numpy as np
from _harness import Cases, identical_on_all_ranks, raises
from collex import _core
from collex._work import wait_all
from collex.cuda import arguments, lanes
from mpi4py import MPI

os.environ["COLLEX_CUDA_IPC"] = "lanes"
lanes.STAGING_BYTES = 64 << 10  # many rounds from 64 KiB on; little shared memory
cx.init(timeout=3)
comm = cx.world()
rank, size = comm.rank, comm.size
# In pretend nodes (COLLEX_NODE_SIZE), all-reduce runs the lanes inside each
# node around a host all-reduce between nodes (collex/cuda/across_nodes.py);
# the other collectives stage through the host.
node_size = comm.local_size
one_node = node_size == size
shared_gpu = os.environ.get("STANDIN_SHARED_GPU") == "1"  # the ranks take turns (collex/cuda/turns.py)
cases = Cases("cuda_lanes_standin")


def allreduce_launches(count: int) -> int:
    """Kernels one all-reduce of `count` elements launches: one on one node; across
    nodes a reduce-scatter and an all-gather of the shares, and an all-reduce of
    the elements the node's ranks do not divide."""
    if one_node:
        return 1
    share, tail = divmod(count, node_size)
    return 2 * (share > 0) + (tail > 0)


def address_of(buffer) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class Streams:
    """A worker thread per stream handle, each running its queue in order."""

    workers: dict = {}
    shake = random.Random(rank)

    @classmethod
    def enqueue(cls, stream: int, work) -> None:
        q = cls.workers.get(stream)
        if q is None:
            q = cls.workers[stream] = queue.Queue()
            threading.Thread(target=cls._run, args=(q,), daemon=True).start()
        q.put((cls.shake.random() * 0.002 if cls.shake.random() < 0.3 else 0.0, work))

    @staticmethod
    def _run(q) -> None:
        while True:
            delay, work = q.get()
            if delay:
                time.sleep(delay)  # other streams' work may run first
            work()

    @classmethod
    def drain(cls) -> None:
        """Waits for every stream, as cudaFree does before it frees (not while
        the interpreter shuts down: its worker threads are frozen then)."""
        if sys.is_finalizing():
            return
        for stream in list(cls.workers):
            cls.marker(stream).wait()

    @classmethod
    def marker(cls, stream: int) -> threading.Event:
        """Set once the stream has run everything queued on it so far."""
        m = threading.Event()
        cls.enqueue(stream, m.set)
        return m


def settle(stream: int = 1) -> None:
    """Waits for the work queued on `stream` (the Dressed arrays' stream)."""
    Streams.marker(stream).wait()


class StandinCuda:
    """The parts of collex._cuda that collex/cuda/lanes.py and staging.py use."""

    has_kernels = True
    LANE_MAX_RANKS = 8
    LANE_MAX_LANES = 128
    LANE_FLAG_WORDS = 128 * 9
    launches = 0
    direct_launches = 0  # of them, calls that read the ranks' arrays in place

    @staticmethod
    def pointer_device(address: int) -> int:
        return 0

    @staticmethod
    def device_identity(device: int) -> bytes:
        # One pretend GPU for every rank with STANDIN_SHARED_GPU=1 (the ranks then
        # take turns, ordered by IPC events: collex/cuda/turns.py), else one each.
        return b"standin-gpu" if shared_gpu else f"standin-gpu-{rank}".encode()

    RESIDENT = 3  # lanes the pretend GPU runs at once (lanes_room caps a call's lanes by it)

    @classmethod
    def lanes_resident(cls, threads: int, device: int) -> int:
        return cls.RESIDENT

    @staticmethod
    def lanes_rounds(collective: int, bytes: int, staging_bytes: int, ranks: int) -> int:
        return _core._ipc_lane_rounds(collective, bytes, staging_bytes, ranks)

    class SharedDeviceBuffer:
        # A new file in /dev/shm (zeros), its name the handle. Removed at the first
        # launch, when every peer has mapped it (LanePeers.map agrees on that), so
        # that a rank that dies leaves nothing behind.
        made = itertools.count()
        unmapped: list = []

        def __init__(self, nbytes: int, device: int, zeroed: bool = True):  # zeroed either way
            self.path = f"/dev/shm/lanes-standin-{os.getpid()}-{next(self.made)}"
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            os.ftruncate(fd, nbytes)
            self._map = mmap.mmap(fd, nbytes)
            os.close(fd)
            self.unmapped.append(self.path)
            self.address = address_of(self._map)

        def handle(self) -> bytes:
            return self.path.encode()

        @classmethod
        def unlink_mapped(cls) -> None:
            while cls.unmapped:
                with contextlib.suppress(FileNotFoundError):  # a send's own copy, freed already
                    os.unlink(cls.unmapped.pop())

        def __del__(self):
            Streams.drain()  # queued work may still use it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # a send's own copy (collex/cuda/p2p.py), freed before any launch

    class DeviceMemory:
        # A user's allocation that peers may open by its handle (ipc_handle): a
        # file in /dev/shm kept until freed; allocation_of knows its range.
        made = itertools.count()
        live: dict = {}  # base -> (bytes, path)

        def __init__(self, nbytes: int):
            self.path = f"/dev/shm/lanes-standin-{os.getpid()}-user-{next(self.made)}"
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            os.ftruncate(fd, max(nbytes, 1))
            self._map = mmap.mmap(fd, max(nbytes, 1))
            os.close(fd)
            self.address = address_of(self._map)
            self.live[self.address] = (nbytes, self.path)

        def array(self, count: int, dtype, offset: int = 0) -> np.ndarray:
            return np.frombuffer(self._map, dtype, count=count, offset=offset)

        def __del__(self):
            Streams.drain()
            self.live.pop(self.address, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    @classmethod
    def allocation_of(cls, address: int) -> tuple:
        for base, (nbytes, _) in cls.DeviceMemory.live.items():
            if base <= address < base + max(nbytes, 1):
                return base, nbytes
        raise RuntimeError("cuMemGetAddressRange: not memory the stand-in allocated")

    @classmethod
    def ipc_handle(cls, base: int) -> bytes:
        return cls.DeviceMemory.live[base][1].encode()

    class PeerDeviceBuffer:
        def __init__(self, handle: bytes, device: int):
            fd = os.open(handle.rstrip(b"\0").decode(), os.O_RDWR)
            self._map = mmap.mmap(fd, 0)
            os.close(fd)
            self.address = address_of(self._map)

        def __del__(self):
            Streams.drain()

    class Stream:
        made = itertools.count(100)

        def __init__(self, device: int):
            self.handle, self.device = next(self.made), device

    @staticmethod
    def copy_async(dst: int, src: int, bytes: int, stream: int, device: int) -> None:
        Streams.enqueue(stream, lambda: ctypes.memmove(dst, src, bytes))

    @staticmethod
    def copy(dst: int, src: int, bytes: int, stream: int, device: int) -> None:
        StandinCuda.copy_async(dst, src, bytes, stream, device)
        settle(stream)

    @staticmethod
    def synchronize(stream: int, device: int) -> None:
        settle(stream)

    # GradientReducer's compression kernels: the same element code on the host.
    @staticmethod
    def bucket_amax(segments, count, residual, amax, stream, device):
        Streams.enqueue(
            stream, lambda: _core._bucket_compress("amax", segments, count, 0, residual, amax, 1, True)
        )

    @staticmethod
    def bucket_pack(segments, count, wire, residual, amax, ranks, fp16, stream, device):
        Streams.enqueue(
            stream, lambda: _core._bucket_compress("pack", segments, count, wire, residual, amax, ranks, fp16)
        )

    @staticmethod
    def bucket_unpack(segments, count, wire, amax, ranks, fp16, stream, device):
        Streams.enqueue(
            stream, lambda: _core._bucket_compress("unpack", segments, count, wire, 0, amax, ranks, fp16)
        )

    class PinnedBuffer(bytearray):
        def __init__(self, nbytes: int):
            super().__init__(nbytes)

        @property
        def bytes(self) -> int:
            return len(self)

        @property
        def device_address(self) -> int:
            return address_of(self)

    class Event:
        # The point its last record marked in a stream (none yet: already passed).
        # An interprocess one also counts its records in a file in /dev/shm,
        # its handle: words [records issued, records the stream has passed].
        # A peer's stream waits for the record latest when it is told to wait,
        # as cudaStreamWaitEvent does.
        made = itertools.count()

        def __init__(self, device: int, interprocess: bool = False, path: str = ""):
            self._at, self._words, self.path = None, None, path
            if interprocess:
                self.path = f"/dev/shm/lanes-standin-{os.getpid()}-event-{next(self.made)}"
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                os.ftruncate(fd, 16)
                os.close(fd)
                StandinCuda.SharedDeviceBuffer.unmapped.append(self.path)
            if self.path:
                fd = os.open(self.path, os.O_RDWR)
                self._map = mmap.mmap(fd, 16)
                os.close(fd)
                self._words = np.frombuffer(self._map, np.uint64)

        @classmethod
        def opened(cls, handle: bytes, device: int):
            return cls(device, path=handle.rstrip(b"\0").decode())

        def handle(self) -> bytes:
            return self.path.encode()

        def record(self, stream: int) -> None:
            self._at = Streams.marker(stream)
            if self._words is not None:
                issued = int(self._words[0]) + 1
                self._words[0] = issued
                Streams.enqueue(stream, lambda: self._words.__setitem__(1, issued))

        def synchronize(self) -> None:
            if self._at is not None:
                self._at.wait()

        def done(self) -> bool:
            return self._at is None or self._at.is_set()

        def order_before(self, stream: int) -> None:
            if self._words is not None:  # a peer's: its latest record as of now
                latest, words = int(self._words[0]), self._words

                def passed() -> None:
                    deadline = time.monotonic() + 20
                    while int(words[1]) < latest:
                        assert time.monotonic() < deadline, f"a peer's event record {latest} never came"
                        time.sleep(0.0002)

                Streams.enqueue(stream, passed)
                return
            at = self._at
            if at is not None:
                Streams.enqueue(stream, at.wait)

    @classmethod
    def lanes_launch(
        cls, *, collective, staging, flags, staging_bytes, rank, lanes, threads, input, output, bytes,
        first_seq, shots, root, dtype, op, timeout, status, stream, device, inputs=None, outputs=None,
    ):  # fmt: skip
        # The same names as collex._cuda.lanes_launch (tests/test_ipc_lanes.py compares them).
        cls.SharedDeviceBuffer.unlink_mapped()
        cls.launches += 1
        cls.direct_launches += bool(inputs)
        cls.last = (lanes, shots, first_seq, collective)
        inputs, outputs = list(inputs or []), list(outputs or [])
        Streams.enqueue(stream, lambda: _core._ipc_lane_rank(
            collective, staging, flags, staging_bytes, rank, lanes, input, output, bytes, first_seq, shots,
            root, dtype, op, timeout, status, inputs, outputs,
        ))  # fmt: skip

    turn_launches = 0  # the turns' kernels (two a round, one a direct call)

    @classmethod
    def turns_launch(
        cls, *, part, collective, staging, staging_bytes, rank, threads, input, output, bytes, round, root,
        dtype, op, stream, device, inputs=None, outputs=None,
    ):  # fmt: skip
        # The same names as collex._cuda.turns_launch (tests/test_ipc_lanes.py compares them).
        cls.SharedDeviceBuffer.unlink_mapped()
        cls.turn_launches += 1
        if part == 1 and round == 0:  # a call's first read: one call on the GPU path, as a lanes launch
            cls.launches += 1
            cls.direct_launches += bool(inputs)
        inputs, outputs = list(inputs or []), list(outputs or [])
        Streams.enqueue(stream, lambda: _core._ipc_turn(
            part, collective, staging, staging_bytes, rank, input, output, bytes, round, root, dtype, op,
            inputs, outputs,
        ))  # fmt: skip


arguments._module = StandinCuda


class Dressed:
    """A NumPy array that says it lives on a CUDA device."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False), "version": 3,
            "strides": None, "stream": 1,
        }  # fmt: skip


def data(r: int, count: int, dtype, salt: int = 0) -> np.ndarray:
    return ((np.arange(count) * 7 + r * 3 + salt) % 5 + 1).astype(dtype)


def every_size_and_dtype():
    # An empty array first: it takes the host path and must not keep the
    # lanes from being mapped for the calls after it.
    empty = np.zeros(0, np.float32)
    cx.allreduce(Dressed(empty))
    settle()
    before, launched = StandinCuda.launches, 0
    for dtype in (np.float16, np.float32, np.float64, np.int32, np.int64):
        for count in (1, 7, 1000, (64 << 10) // 4 + 5, 100_003):
            x = data(rank, count, dtype)
            got = cx.allreduce(Dressed(x))
            settle()
            want = sum(data(r, count, dtype) for r in range(size)).astype(dtype)
            assert got is not None
            np.testing.assert_array_equal(x, want, err_msg=f"{np.dtype(dtype)} x{count}")
            assert identical_on_all_ranks(x)
            launched += allreduce_launches(count)
    assert StandinCuda.launches - before == launched, "every call took the lanes path"


def shots_and_sequence_numbers():
    # One-shot while small, two-shot above; each call's first sequence number is
    # the last call's plus its rounds (64 KiB of staging each).
    x = np.ones(1000, np.float32)
    cx.allreduce(Dressed(x))
    lanes_, shots, seq, _ = StandinCuda.last
    assert shots == 1 and lanes_ == 1
    y = np.ones(300_000, np.float32)  # 1.2 MB: 19 rounds, two-shot
    cx.allreduce(Dressed(y))
    assert StandinCuda.last[1] == 2 and StandinCuda.last[2] == seq + 1
    cx.allreduce(Dressed(x))
    assert StandinCuda.last[2] == seq + 1 + 19
    settle()
    assert (x == size * size).all() and (y == size).all()


def lanes_fit_the_gpu_at_once():
    # Every lane spins until its peers' same lane comes, so a call has at most
    # as many lanes as the GPU runs at once (lanes.lanes_room; the stand-in's
    # runs RESIDENT), however many its size would take.
    saved = lanes.LANE_BYTES
    lanes.LANE_BYTES = 4096  # a round of 64 KiB would take 16 lanes
    try:
        x = data(rank, 40_000, np.float32)
        cx.allreduce(Dressed(x))
        settle()
        assert StandinCuda.last[0] == StandinCuda.RESIDENT, StandinCuda.last
        np.testing.assert_array_equal(x, sum(data(r, 40_000, np.float32) for r in range(size)))
    finally:
        lanes.LANE_BYTES = saved


def out_of_place_and_async():
    x = data(rank, 5000, np.float32)
    out = np.zeros(5000, np.float32)
    cx.allreduce(Dressed(x), out=Dressed(out), op="max")
    settle()
    np.testing.assert_array_equal(out, np.max([data(r, 5000, np.float32) for r in range(size)], axis=0))
    np.testing.assert_array_equal(x, data(rank, 5000, np.float32))
    w = cx.allreduce(Dressed(x), op="avg", async_op=True)
    w.wait()
    assert w.done()
    np.testing.assert_allclose(x, sum(data(r, 5000, np.float32) for r in range(size)) / size, rtol=1e-6)


def odd_offsets():
    base = data(rank, 70_001, np.float32)
    x = base[1:]
    cx.allreduce(Dressed(x))
    settle()
    np.testing.assert_array_equal(x, sum(data(r, 70_001, np.float32) for r in range(size))[1:])


def every_other_collective():
    # Sizes from one element to many rounds (64 KiB of staging; reduce-scatter
    # takes a ranks'th of it per round), every root, ops with and without avg.
    before = StandinCuda.launches
    launched = 0
    for dtype in (np.float16, np.float32, np.int32):
        for count in (1, 1000, 40_003):
            blocks = [data(r, count, dtype) for r in range(size)]
            for root in range(size):
                x = blocks[rank].copy()
                cx.broadcast(Dressed(x), root=root)
                settle()
                np.testing.assert_array_equal(x, blocks[root], err_msg=f"broadcast x{count}")
                x = blocks[rank].copy()
                out = np.full(count, 9, dtype)
                cx.reduce(Dressed(x), op="max", root=root, out=Dressed(out))
                settle()
                want = np.max(blocks, axis=0) if rank == root else np.full(count, 9, dtype)
                np.testing.assert_array_equal(out, want, err_msg=f"reduce x{count} root {root}")
                launched += 2 * one_node  # across nodes: through the host
            out = np.zeros((size, count), dtype)
            got = cx.allgather(Dressed(blocks[rank]), out=Dressed(out))
            assert got is not None
            settle()
            np.testing.assert_array_equal(out, np.stack(blocks), err_msg=f"allgather x{count}")
            whole = [data(r, size * count, dtype, salt=1) for r in range(size)]
            part = np.zeros(count, dtype)
            cx.reduce_scatter(Dressed(whole[rank]), out=Dressed(part))
            settle()
            want = sum(w.astype(np.int64) for w in whole)[rank * count : (rank + 1) * count].astype(dtype)
            np.testing.assert_array_equal(part, want, err_msg=f"reduce_scatter {np.dtype(dtype)} x{count}")
            launched += 2 * one_node
    assert StandinCuda.launches - before == launched, "every call took the lanes path (on one node)"
    out = np.zeros((size, 10), np.float32)
    w = cx.allgather(Dressed(np.full(10, rank, np.float32)), out=Dressed(out), async_op=True)
    w.wait()
    settle()  # the host path's Work is done once the copy up is queued
    assert w.done()
    assert (out == np.arange(size)[:, None]).all()


def direct_calls_read_arrays_in_place():
    # From lanes.DIRECT_MIN_BYTES on, arrays that peers can open (here in the
    # stand-in's DeviceMemory) are read where they lie: one host exchange of
    # where they are per call, a second only for allocations new to the ranks.
    # An array that cannot be exported (NumPy's own memory), on any rank, keeps
    # that call staged on every rank. Every result against NumPy.
    saved = lanes.DIRECT_MIN_BYTES
    lanes.DIRECT_MIN_BYTES = 4096
    try:
        count = 5000
        memory = StandinCuda.DeviceMemory(4 * (size + 1) * count + 64)
        out_memory = StandinCuda.DeviceMemory(4 * size * count)
        cx.allreduce(Dressed(np.ones(10, np.float32)))  # small: staged, and maps the lanes
        registry = comm._device._lanes.registry
        calls = [StandinCuda.direct_launches, registry.exchanges, registry.agreements]

        def counted(direct, exchanges, agreements):
            now = [StandinCuda.direct_launches, registry.exchanges, registry.agreements]
            assert [n - c for n, c in zip(now, calls)] == [direct, exchanges, agreements], (now, calls)
            calls[:] = now

        counted(0, 0, 0)
        x = memory.array(count, np.float32, offset=4 * (rank % 2))  # at an element's offset on odd ranks
        for step in range(2):  # the second time nothing is new
            x[...] = data(rank, count, np.float32, salt=step)
            cx.allreduce(Dressed(x))
            settle()
            np.testing.assert_array_equal(x, sum(data(r, count, np.float32, salt=step) for r in range(size)))
            counted(1, 1, 1 - step)
        out = out_memory.array(count, np.float32)
        x[...] = data(rank, count, np.float32)
        cx.allreduce(Dressed(x), op="max", out=Dressed(out))
        settle()
        np.testing.assert_array_equal(out, np.max([data(r, count, np.float32) for r in range(size)], axis=0))
        np.testing.assert_array_equal(x, data(rank, count, np.float32))
        counted(1, 1, 1)
        for root in range(size):
            x[...] = data(rank, count, np.float32, salt=root)
            cx.broadcast(Dressed(x), root=root)
            settle()
            np.testing.assert_array_equal(x, data(root, count, np.float32, salt=root), err_msg=f"root {root}")
            x[...] = data(rank, count, np.float32, salt=root)
            out[...] = 9
            cx.reduce(Dressed(x), root=root, out=Dressed(out))
            settle()
            want = sum(data(r, count, np.float32, salt=root) for r in range(size)) if rank == root else 9
            np.testing.assert_array_equal(out, want, err_msg=f"reduce to {root}")
            x[...] = data(rank, count, np.float32, salt=root)
            cx.reduce(Dressed(x), root=root)  # in place at the root, which its peers write
            settle()
            if rank == root:
                reduced = sum(data(r, count, np.float32, salt=root) for r in range(size))
                np.testing.assert_array_equal(x, reduced)
        counted(3 * size, 3 * size, 0)
        gathered = out_memory.array(size * count, np.float32)
        x[...] = data(rank, count, np.float32)
        cx.allgather(Dressed(x), out=Dressed(gathered.reshape(size, count)))
        settle()
        everyone = [data(r, count, np.float32) for r in range(size)]
        np.testing.assert_array_equal(gathered, np.concatenate(everyone))
        whole = memory.array(size * count, np.float32, offset=4 * count + 64)
        whole[...] = data(rank, size * count, np.float32, salt=5)
        part = out_memory.array(count, np.float32)
        cx.reduce_scatter(Dressed(whole), out=Dressed(part))
        settle()
        want = sum(data(r, size * count, np.float32, salt=5) for r in range(size))
        np.testing.assert_array_equal(part, want[rank * count : (rank + 1) * count])
        counted(2, 2, 0)
        own = np.zeros(count, np.float32) if rank == size - 1 else x  # NumPy's memory on one rank
        own[...] = data(rank, count, np.float32)
        cx.allreduce(Dressed(own))
        settle()
        np.testing.assert_array_equal(own, sum(data(r, count, np.float32) for r in range(size)))
        counted(0, 1, 0)
        small = memory.array(100, np.float32)
        small[...] = rank
        cx.allreduce(Dressed(small))  # below DIRECT_MIN_BYTES: staged, no exchange
        settle()
        assert (small == sum(range(size))).all()
        counted(0, 0, 0)
    finally:
        lanes.DIRECT_MIN_BYTES = saved


def ranks_that_call_different_collectives():
    # Rank 0 broadcasts where the others all-reduce an array of the same size:
    # the flags alone would let both run (one barrier each round, the same
    # rounds), each rank reading what it takes for its own call. The lanes
    # compare the calls' signatures and stop; the next call raises on every rank.
    sub = comm.split(0)
    x = np.ones(1000, np.float32)
    if rank == 0:
        sub.broadcast(Dressed(x))
    else:
        sub.allreduce(Dressed(x))
    settle()  # the kernels have stopped; the next call reads why
    raises(
        lambda: sub.allreduce(Dressed(np.ones(10, np.float32))),
        cx.CollectiveMismatch,
        "called broadcast of 4000 bytes of float32, root 0",
        "called allreduce of 4000 bytes of float32, op sum",
        "GPU path of this communicator is broken",
    )


def reducer_grads(flat: bool):
    # 12 gradients of two dtypes and mixed sizes (one empty), as separate arrays
    # or as views of one flat array per dtype (every bucket one span).
    specs = [((300,), np.float32), ((7, 11), np.float16), ((0,), np.float32), ((5000,), np.float32)] * 3
    if flat:
        return cx.zeros_like_each([np.empty(shape, dt) for shape, dt in specs])  # host twin of cx.cuda's
    return [np.zeros(shape, dt) for shape, dt in specs]


def gradient_reducer_on_the_gpu_path():
    # Without compression, CUDA gradients are averaged through the lanes, never
    # copied to the host: packed buckets through device fusion buffers, spans in
    # place. Each rank marks them ready in its own order; every rank launches
    # the buckets in bucket order, so the all-reduces pair up.
    for flat in (False, True):
        grads = reducer_grads(flat)
        dressed = [Dressed(g) for g in grads]
        r = cx.GradientReducer(dressed, bucket_mb=0.01, first_bucket_mb=0.002)
        assert r._device is not None and r._mirror is None, "not on the GPU path"
        for b in r.bucket_info():
            alone = sum(1 for k in b["gradients"] if grads[k].size) <= 1  # one array is a span
            assert b["path"] == ("span" if flat or alone else "packed"), b
        assert "packed" in {b["path"] for b in r.bucket_info()} or flat
        assert len(r.buckets) > 3
        for step in range(2):
            settle()  # the last step's work is done before the host writes the gradients
            for i, g in enumerate(grads):
                g[...] = data(rank, g.size, g.dtype, salt=i + step).reshape(g.shape)
            before = StandinCuda.launches
            order = range(len(grads)) if rank % 2 else reversed(range(len(grads)))
            for i in order:
                r.ready(i)
            r.wait()
            settle()  # wait() ordered the gradients' stream after the averages
            assert StandinCuda.launches - before == sum(
                allreduce_launches(sum(grads[k].size for k in b["gradients"])) for b in r.bucket_info()
                if any(grads[k].size for k in b["gradients"])
            )  # fmt: skip
            for i, g in enumerate(grads):
                runs = [data(q, g.size, np.float64, salt=i + step) for q in range(size)]
                want = (sum(runs) / size).astype(g.dtype).reshape(g.shape)
                np.testing.assert_allclose(g.astype(np.float64), want.astype(np.float64), rtol=1e-3,
                                           err_msg=f"flat={flat} step {step} grads[{i}]")  # fmt: skip
                assert identical_on_all_ranks(g), f"grads[{i}] differs between ranks"
        r.reduce()  # every gradient marked ready at once
        settle()  # before the gradients are freed
        assert r.residual(0) is None and r.huge_page_bytes == 0


def gradient_reducer_compressed_on_the_gpu_path():
    # fp16 and bf16 with error feedback: float32 buckets packed by the
    # compression kernels (here their host stand-in), the fp16 scale agreed by
    # an all-reduce of the largest magnitude on the GPU path; a float16 bucket
    # travels as it is. Against the host reducer on the same data: the same
    # scale, so the same residuals bit for bit, and averages within rounding.
    specs = [((3000,), np.float32), ((0,), np.float32), ((70,), np.float16), ((400, 3), np.float32)] * 2
    for compression in ("fp16", "bf16"):
        on_gpu = [np.zeros(shape, dt) for shape, dt in specs]
        on_host = [np.zeros(shape, dt) for shape, dt in specs]
        kw = dict(bucket_mb=0.01, first_bucket_mb=0.005, compression=compression)
        gpu = cx.GradientReducer([Dressed(g) for g in on_gpu], **kw)
        host = cx.GradientReducer(on_host, **kw)
        assert gpu._device is not None
        wires = {str(b["wire_dtype"]) for b in gpu.bucket_info()}
        assert wires == {"float16", compression.replace("fp16", "float16").replace("bf16", "bfloat16")}, wires
        for step in range(3):
            settle()
            for i, (g, h) in enumerate(zip(on_gpu, on_host)):
                v = (data(rank, g.size, np.float64, salt=i + step) * 1000.3 * (rank + 1) + step).reshape(
                    g.shape
                )
                g[...] = v
                h[...] = v
            gpu.reduce()
            host.reduce()
            settle()
            for i, (g, h) in enumerate(zip(on_gpu, on_host)):
                np.testing.assert_allclose(g.astype(np.float64), h.astype(np.float64), rtol=1e-2,
                                           err_msg=f"{compression} step {step} grads[{i}]")  # fmt: skip
                assert identical_on_all_ranks(g), f"{compression} grads[{i}] differs between ranks"
                rg, rh = gpu.residual(i), host.residual(i)
                assert (rg is None) == (rh is None), i
                if rg is not None:
                    np.testing.assert_array_equal(rg, rh, err_msg=f"{compression} residual {i}")
                    assert g.size == 0 or step == 0 or np.abs(rg).max() > 0, "no residual kept"


def gradient_reducer_misuse():
    grads = [Dressed(np.ones(100, np.float32)), Dressed(np.ones(50, np.float32))]
    r = cx.GradientReducer(grads)
    r.ready(1)
    raises(lambda: r.ready(1), ValueError, "gradient 1 was already marked ready in this step")
    raises(r.wait, ValueError, "gradients 0 were never marked ready")
    r.ready(0)
    r.wait()
    settle()
    assert (grads[0].a == 1).all()
    mine = [Dressed(np.ones(100 + rank, np.float32))]
    raises(lambda: cx.GradientReducer(mine), cx.CollectiveMismatch, "every rank must build the reducer alike")


def declines_with_its_reason_in_the_debug_log():
    # One rank alone has no peer to map: the lanes decline, say why with
    # COLLEX_DEBUG=1, and the call stages through the host instead.
    alone = comm.split(rank)
    said = io.StringIO()
    os.environ["COLLEX_DEBUG"] = "1"
    try:
        with contextlib.redirect_stderr(said):
            x = np.arange(10, dtype=np.float32)
            alone.allreduce(Dressed(x))
    finally:
        os.environ.pop("COLLEX_DEBUG")
    settle()  # the result's copy up was queued
    assert (x == np.arange(10)).all()
    assert "collex: [rank 0] CUDA IPC lanes declined: one rank; host staging instead" in said.getvalue(), (
        said.getvalue()
    )


def shares_and_tails_across_nodes():
    # Across nodes each rank carries one share of the array and the elements the
    # node's ranks do not divide: fewer elements than a node has ranks, a tail of
    # every length, odd offsets, every operator, out= and async_op.
    for dtype in (np.float32, np.float16, np.int32):
        for count in (1, node_size - 1, node_size, 5 * node_size + 1, 3001, 40_003):
            if count == 0:
                continue
            for op, combine in (("sum", np.sum), ("max", np.max), ("avg", np.mean)):
                if op == "avg" and dtype == np.int32:
                    continue
                inputs = [data(r, count + 1, dtype, salt=count)[1:] for r in range(size)]
                x = data(rank, count + 1, dtype, salt=count)[1:]  # at an element's offset
                out = np.zeros(count, dtype)
                before = StandinCuda.launches
                w = cx.allreduce(Dressed(x), op=op, out=Dressed(out), async_op=True)
                w.wait()
                assert StandinCuda.launches - before == allreduce_launches(count)
                want = combine(np.stack(inputs).astype(np.float64), axis=0)
                tol = 1e-3 if dtype == np.float16 else 1e-6
                np.testing.assert_allclose(out.astype(np.float64), want, rtol=tol,
                                           err_msg=f"{op} {np.dtype(dtype)} x{count}")  # fmt: skip
                assert identical_on_all_ranks(out), f"{op} {np.dtype(dtype)} x{count} differs between ranks"
                np.testing.assert_array_equal(x, inputs[rank])


def nodes_of_different_sizes_decline():
    # Ranks 0-2 in nodes of two: a node of 2 ranks and one of 1. The shares
    # would not line up between nodes: the lanes decline, say why, and the
    # all-reduce stages through the host.
    part = comm.split(0 if rank < 3 else None)
    if part is None:
        return
    said = io.StringIO()
    os.environ["COLLEX_DEBUG"] = "1"
    try:
        with contextlib.redirect_stderr(said):
            x = data(rank, 100, np.float32)
            before = StandinCuda.launches
            part.allreduce(Dressed(x))
    finally:
        os.environ.pop("COLLEX_DEBUG")
    settle()
    assert StandinCuda.launches == before
    np.testing.assert_array_equal(x, sum(data(r, 100, np.float32) for r in range(3)))
    assert "CUDA IPC lanes across nodes declined: the nodes have from 1 to 2 ranks" in said.getvalue(), (
        said.getvalue()
    )


def a_peer_that_never_comes():
    # Rank 0 leaves out one all-reduce: the others' lanes give up after the
    # timeout (3 s) and fill in the status word; their next call after that
    # (here, once their stream has finished) raises.
    if rank != 0:
        cx.allreduce(Dressed(np.ones(100, np.float32)))
        settle()
        x = Dressed(np.ones(100, np.float32))
        raises(lambda: cx.allreduce(x), cx.CommunicatorBroken, "gave up", "for rank 0", "result is wrong")


def turns_and_their_meetings():
    # Ranks sharing a GPU take turns: every round of a call is a kernel that
    # stages into one half of the staging buffers (the halves alternate) and
    # one that reads, with a meeting between them (an IPC event recorded, a
    # host barrier, the peers' events waited for); many calls back to back,
    # never waiting for the stream in between, each reading the last one's
    # results (32 KiB halves: the chain's 20 KB calls alternate too).
    x = np.ones(1000, np.float32)
    cx.allreduce(Dressed(x))
    turns = comm._device._lanes
    assert turns.last_way == "events, staged", turns.last_way
    kernels, meetings = StandinCuda.turn_launches, turns._meeting
    cx.allreduce(Dressed(x))
    assert StandinCuda.turn_launches - kernels == 2 and turns._meeting - meetings == 1
    y = np.ones(300_000, np.float32)  # 1.2 MB through 32 KiB halves: 37 rounds
    cx.allreduce(Dressed(y))
    assert StandinCuda.turn_launches - kernels == 2 + 74 and turns._meeting - meetings == 1 + 37
    z = data(rank, 5000, np.float32)
    chain = [z] + [np.zeros(5000, np.float32) for _ in range(30)]
    for i in range(30):
        cx.allreduce(Dressed(chain[i]), op="max", out=Dressed(chain[i + 1]))  # reads what the last one wrote
    settle()
    settle()
    want = np.max([data(r, 5000, np.float32) for r in range(size)], axis=0)
    for i in range(1, 31):
        np.testing.assert_array_equal(chain[i], want, err_msg=f"call {i}")
    settle()
    np.testing.assert_array_equal(y, size)


def ranks_that_call_different_collectives_in_turns():
    # Rank 0 broadcasts where the others all-reduce: the call's first meeting
    # compares the ranks' calls, and every rank raises from the call itself,
    # naming both. The next call runs.
    sub = comm.split(0)
    x = np.ones(1000, np.float32)
    try:
        if rank == 0:
            sub.broadcast(Dressed(x))
        else:
            sub.allreduce(Dressed(x))
    except cx.CollectiveMismatch as e:
        said = str(e)
        theirs = "broadcast of 4000 bytes of float32, root 0"
        mine = "allreduce of 4000 bytes of float32, op sum"
        if rank == 0:
            theirs, mine = mine, theirs
        assert f"rank {1 if rank == 0 else 0} called {theirs} where rank {rank} called {mine}" in said, said
    else:
        raise AssertionError("ranks that called different collectives did not raise")
    y = np.ones(10, np.float32)
    sub.allreduce(Dressed(y))
    settle()
    assert (y == size).all()


def a_peer_that_never_comes_in_turns():
    # Rank 0 leaves out one all-reduce: the others' first meeting times out on
    # the host (3 s), which raises from the call; no kernel waits on the GPU.
    sub = comm.split(0)
    sub.allreduce(Dressed(np.ones(100, np.float32)))  # every rank: the turns are set up
    settle()
    if rank != 0:
        x = Dressed(np.ones(100, np.float32))
        raises(lambda: sub.allreduce(x), (cx.CommunicatorBroken, cx.CollectiveTimeout), "rank 0")


def p2p_of_cuda_arrays():
    # Ring exchanges of several dtypes and sizes (empty too): blocking in both
    # orders, isend/irecv, sendrecv and batch_p2p. On one node they go from device
    # to device (the receiver's copy, collex/cuda/p2p.py), across nodes through the host.
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    for dtype in (np.float16, np.float32, np.int64, np.uint8):
        for count in (0, 1, 7, 100_003):
            x, y = data(rank, count, dtype), np.full(count, 99, dtype)
            if rank % 2 == 0:
                cx.send(Dressed(x), nxt)
                got = cx.recv(Dressed(y), prv)
            else:
                got = cx.recv(Dressed(y), prv)
                cx.send(Dressed(x), nxt)
            assert got is not None
            settle()
            np.testing.assert_array_equal(y, data(prv, count, dtype), err_msg=f"{np.dtype(dtype)} x{count}")
    x, y, z = data(rank, 5000, np.float64), np.zeros(5000), np.zeros(5000)
    into = Dressed(y)
    r = cx.irecv(into, prv, tag=3)
    s = cx.isend(Dressed(x), nxt, tag=3)
    cx.sendrecv(Dressed(x), nxt, Dressed(z), prv, tag=4)
    assert s.wait() is None and r.wait() is into
    assert s.done() and r.done()
    settle()
    np.testing.assert_array_equal(y, data(prv, 5000, np.float64))
    np.testing.assert_array_equal(z, data(prv, 5000, np.float64))
    ys = [np.zeros(100, np.int32) for _ in range(5)]
    ops = [("recv", Dressed(y), prv, t) for t, y in enumerate(ys)]
    ops += [("send", Dressed(data(rank, 100, np.int32, salt=t)), nxt, t) for t in reversed(range(5))]
    wait_all(cx.batch_p2p(ops))
    settle()
    for t, y in enumerate(ys):
        np.testing.assert_array_equal(y, data(prv, 100, np.int32, salt=t), err_msg=f"tag {t}")
    on_device = comm._device._p2p is not None
    assert on_device == one_node, "device to device exactly where every rank is on one node"


def p2p_follows_the_streams():
    # The sender's array is written on its stream before the send and again right
    # after it returns; the receiver's result is read after its stream. The
    # stand-in's streams run late at random, so a copy that did not wait for
    # the sender's producer, or a later write that did not wait for the copy,
    # shows up as a wrong value.
    # Every other round the array lies in memory the peer reads in place (the
    # stand-in's DeviceMemory), the others in NumPy's (sent through a copy).
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    memory = StandinCuda.DeviceMemory(20_000 * 4)
    for i in range(30):
        x = memory.array(20_000, np.float32) if i % 2 else np.zeros(20_000, np.float32)
        y = np.full(20_000, -1, np.float32)
        Streams.enqueue(1, lambda x=x, i=i: x.fill(rank * 100 + i))  # the producer
        wait_all(cx.batch_p2p([("recv", Dressed(y), prv), ("send", Dressed(x), nxt)]))
        Streams.enqueue(1, lambda x=x: x.fill(-7))  # later work, free to overwrite x
        settle()
        assert (y == prv * 100 + i).all(), f"round {i}: got {np.unique(y)}"


def p2p_to_this_rank():
    # A send to this rank itself before the receive: the array may change before
    # the receive comes, which gets what was sent.
    x = data(rank, 3000, np.float32)
    sent = x.copy()
    cx.send(Dressed(x), rank, tag=9)
    Streams.enqueue(1, lambda: x.fill(0))
    y = np.zeros(3000, np.float32)
    cx.recv(Dressed(y), rank, tag=9)
    settle()
    np.testing.assert_array_equal(y, sent)
    if one_node:
        assert not comm._device._p2p._to_self, "the receive freed the send's own copy"


def p2p_reads_exportable_arrays_in_place():
    # An array in memory the peer can open (the stand-in's DeviceMemory, as
    # cudaMalloc's) is read where it lies; the receiver keeps the allocation open.
    # (The sends of NumPy's memory before went through copies of their own,
    # which the receiver mapped for one copy each and did not keep.)
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    # Every rank comes here first: the case before (a peer that never comes)
    # holds some ranks for its timeout, longer than a receive here may wait.
    MPI.COMM_WORLD.Barrier()
    opened = comm._device._p2p._opened
    before = set(opened)
    for salt in range(3):
        memory = StandinCuda.DeviceMemory(8000 * 4)
        x = memory.array(8000, np.float32)
        x[:] = data(rank, 8000, np.float32, salt)
        y = np.zeros(8000, np.float32)
        cx.sendrecv(Dressed(x), nxt, Dressed(y), prv)
        settle()
        np.testing.assert_array_equal(y, data(prv, 8000, np.float32, salt))
        del x, memory
    assert len(set(opened) - before) == 3, opened
    assert all(b"-user-" in handle for _, handle in opened), opened


def p2p_refusals():
    # A receive of another shape refuses the message on both ranks and writes
    # nothing; the pair's next message still matches. A CUDA array sent into host
    # memory is refused the same way (the device path never lands in host memory).
    if rank > 1:
        return
    x = data(rank, 10, np.float32)
    if rank == 0:
        for expected in ("float32 shape (10,), the receiving buffer is float32 shape (11,)", "device memory"):
            raises(lambda: cx.send(Dressed(x), 1), cx.CollectiveMismatch, expected)
        cx.send(Dressed(x), 1)
        return
    y = np.full(11, 5, np.float32)
    raises(lambda: cx.recv(Dressed(y), 0), cx.CollectiveMismatch, "nothing was written")
    settle()
    assert (y == 5).all()
    raises(
        lambda: cx.recv(np.zeros(10, np.float32), 0),
        cx.CollectiveMismatch,
        "in device memory, the receiving buffer is float32 shape (10,) in host memory",
    )
    y = np.zeros(10, np.float32)
    cx.recv(Dressed(y), 0)
    settle()
    np.testing.assert_array_equal(y, data(0, 10, np.float32))


def p2p_a_receiver_that_cannot_map():
    # Rank 0's array lies in memory that rank 1 cannot open (its file is gone by
    # the time rank 1 receives): rank 1 refuses the message with the reason,
    # both ranks raise, and the pair's next message goes through.
    if rank > 1:
        return
    world = MPI.COMM_WORLD
    if rank == 0:
        memory = StandinCuda.DeviceMemory(4000)
        x = memory.array(1000, np.float32)
        x[:] = 3
        w = cx.isend(Dressed(x), 1, tag=6)
        os.unlink(memory.path)
        world.send(None, dest=1)  # rank 1 receives only now
        try:
            w.wait()
        except cx.CollexError as e:
            assert "rank 1 could not take the CUDA array" in str(e), str(e)
            assert not isinstance(e, cx.CollectiveMismatch), str(e)
        else:
            raise AssertionError("a send the receiver could not take did not raise")
        x = np.full(1000, 4, np.float32)
        cx.send(Dressed(x), 1, tag=6)
        settle()  # x is read on the stream
        return
    world.recv(source=0)
    y = np.zeros(1000, np.float32)
    raises(
        lambda: cx.recv(Dressed(y), 0, tag=6), cx.CollexError, "could not take the CUDA array", "No such file"
    )
    cx.recv(Dressed(y), 0, tag=6)
    settle()
    assert (y == 4).all()


def p2p_a_receiver_that_never_comes():
    # On a communicator of ranks 0 and 1, rank 1 never receives what rank 0
    # sends: the send gives up after the timeout (3 s), naming rank 1.
    sub = comm.split(0 if rank < 2 else None)
    if sub is None:
        return
    if rank == 1:
        MPI.COMM_WORLD.recv(source=0, tag=77)  # alive (a rank that has ended is said so at once)
        return
    x = data(0, 1000, np.float32)
    start = time.monotonic()
    try:
        raises(
            lambda: sub.send(Dressed(x), 1, tag=2),
            cx.CollectiveTimeout,
            "send to rank 1 tag 2",
            "not received",
        )
    finally:
        MPI.COMM_WORLD.send(None, dest=1, tag=77)
    assert time.monotonic() - start < 30
    settle()


def p2p_progress_in_any_wait():
    # Rank 1 posts a CUDA receive, then waits for host memory that rank 0 sends
    # only once its CUDA send has completed: the CUDA receive's copy is queued
    # inside that host wait, as MPI_Ssend's rule asks.
    if rank > 1:
        return
    if rank == 0:
        x = data(0, 500, np.float32)
        cx.send(Dressed(x), 1, tag=1)
        cx.send(np.arange(3.0), 1, tag=2)
        settle()  # x is read on the stream (as CuPy's pool frees in stream order, NumPy does not)
        return
    y, h = np.zeros(500, np.float32), np.zeros(3)
    w = cx.irecv(Dressed(y), 0, tag=1)
    cx.recv(h, 0, tag=2)
    assert w.done(), "the CUDA receive was not taken while the host receive waited"
    w.wait()
    settle()
    np.testing.assert_array_equal(y, data(0, 500, np.float32))
    np.testing.assert_array_equal(h, np.arange(3.0))


everywhere = [
    ("every size and dtype on lanes", every_size_and_dtype),
    ("out= and async_op", out_of_place_and_async),
    ("arrays at odd offsets", odd_offsets),
    ("broadcast, reduce, all-gather and reduce-scatter", every_other_collective),
    ("GradientReducer on the GPU path", gradient_reducer_on_the_gpu_path),
    ("GradientReducer compressed on the GPU path", gradient_reducer_compressed_on_the_gpu_path),
    ("GradientReducer misused", gradient_reducer_misuse),
    ("a path that declines says why", declines_with_its_reason_in_the_debug_log),
    ("send/recv of CUDA arrays", p2p_of_cuda_arrays),
    ("send/recv follow the streams", p2p_follows_the_streams),
    ("send to this rank itself", p2p_to_this_rank),
]
p2p_on_one_node = [
    ("send/recv read exportable arrays in place", p2p_reads_exportable_arrays_in_place),
    ("send/recv refusals", p2p_refusals),
    ("a receiver that cannot map the array", p2p_a_receiver_that_cannot_map),
    ("send/recv progress in any wait", p2p_progress_in_any_wait),
    ("a receiver that never comes", p2p_a_receiver_that_never_comes),
]
on_one_node = [
    ("one-shot, two-shot and the sequence numbers", shots_and_sequence_numbers),
    ("a call's lanes fit the GPU at once", lanes_fit_the_gpu_at_once),
    ("direct calls read the ranks' arrays in place", direct_calls_read_arrays_in_place),
    ("ranks that call different collectives", ranks_that_call_different_collectives),
    ("a peer that never comes", a_peer_that_never_comes),
]
across_nodes = [
    ("shares and tails across nodes", shares_and_tails_across_nodes),
    ("nodes of different sizes decline", nodes_of_different_sizes_decline),
]
if shared_gpu:  # what differs where the ranks take turns
    on_one_node = [
        ("turns and their meetings", turns_and_their_meetings),
        ("direct calls read the ranks' arrays in place", direct_calls_read_arrays_in_place),
        ("ranks that call different collectives", ranks_that_call_different_collectives_in_turns),
        ("a peer that never comes", a_peer_that_never_comes_in_turns),
    ]
for label, fn in everywhere + (on_one_node + p2p_on_one_node if one_node else across_nodes):
    cases.run(label, fn)


@atexit.register
def remove_leftovers() -> None:
    # What this rank's pretend device memory left in /dev/shm (buffers and events
    # its peers had mapped, sends' own copies not yet freed), once cases.finish()
    # has met every rank after its last case.
    for leftover in glob.glob(f"/dev/shm/lanes-standin-{os.getpid()}-*"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)


Streams.drain()
cases.finish()
