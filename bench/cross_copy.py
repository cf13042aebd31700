"""What one copy between two ranks' ordinary arrays costs here, beside a local
copy: the part of every collective on ordinary arrays that goes through the
kernel's cross-memory attach (process_vm_readv), which collex uses to read a
peer's NumPy array in one copy.

    mpirun -n 2 python bench/cross_copy.py [--bytes 33554432] [--repeats 9]

Both ranks copy at once, each from the other's array, in the ways collex does:
in pieces into one cache-sized buffer (the reduce-scatter half: the piece is
reduced while still in cache) and straight into a large array (the all-gather
half); and in 1 MiB pieces from a source left on 4 KiB pages, which the kernel
pins page by page. Prints medians on rank 0, ms and GB/s (bytes copied per second).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time

import numpy as np
from mpi4py import MPI


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", type=int, default=32 << 20)
    p.add_argument("--repeats", type=int, default=9)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        raise SystemExit("bench/cross_copy.py runs on 2 ranks")
    libc = ctypes.CDLL(None, use_errno=True)
    readv = libc.process_vm_readv
    iov = ctypes.POINTER(_Iovec)
    readv.argtypes = [ctypes.c_int, iov, ctypes.c_ulong, iov, ctypes.c_ulong, ctypes.c_ulong]
    size = a.bytes
    mine, into = np.ones(size // 4, np.float32), np.ones(size // 4, np.float32)
    # The same source on 4 KiB pages, as NumPy leaves arrays under 4 MiB (it asks
    # for huge pages from 4 MiB): marked MADV_NOHUGEPAGE before its first touch.
    small = np.empty(size // 4, np.float32)
    page = os.sysconf("SC_PAGE_SIZE")
    start = -(-small.ctypes.data // page) * page  # madvise takes whole pages
    length = (small.ctypes.data + small.nbytes - start) // page * page
    if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), 15):  # MADV_NOHUGEPAGE
        raise OSError(ctypes.get_errno(), "madvise(MADV_NOHUGEPAGE)")
    small[...] = 1
    pid, remote, remote_small = comm.allgather((os.getpid(), mine.ctypes.data, small.ctypes.data))[
        1 - comm.rank
    ]

    def cross(piece: int, target: np.ndarray | None, source: int = remote) -> None:
        buf = np.ones(piece // 4, np.float32) if target is None else target
        local, peer = _Iovec(buf.ctypes.data, piece), _Iovec(0, piece)
        for off in range(0, size, piece):
            peer.base = source + off
            if target is not None:
                local.base = target.ctypes.data + off
            if readv(pid, ctypes.byref(local), 1, ctypes.byref(peer), 1, 0) != piece:
                raise OSError(ctypes.get_errno(), "process_vm_readv")

    ways = {f"pieces of {k >> 10} KiB into a cache buffer": (lambda k: lambda: cross(k, None))(k)
            for k in (256 << 10, 1 << 20, 2 << 20)}  # fmt: skip
    ways["1 MiB pieces, the source on 4 KiB pages"] = lambda: cross(1 << 20, None, remote_small)
    ways["one call into a large array"] = lambda: cross(size, into)
    ways["local copy (numpy.copyto)"] = lambda: np.copyto(into, mine)
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(a.repeats):
        for w, f in ways.items():  # taking turns, so a noisy moment hits all of them
            comm.Barrier()
            start = time.perf_counter()
            f()
            times[w].append(time.perf_counter() - start)
    if comm.rank == 0:
        print(f"{size >> 20} MiB per rank, both ranks at once:")
        for w, t in times.items():
            m = statistics.median(t)
            print(f"  {w:44s} {m * 1e3:7.2f} ms {size / m / 1e9:6.1f} GB/s")


if __name__ == "__main__":
    main()
