"""Ordinary NumPy arrays moved onto shared pages (transport/shm/shared_pages.h,
bindings/sharing.cpp) under mpirun: every collective gives NumPy's result on
arrays that moved, whose contents change between calls (a peer reading a stale
copy would be caught), at odd sizes (an array's first and last pages stay
private, so reads straddle both kinds of memory), through views, and through
GradientReducer; a freed array, or one whose memory was replaced, gives its
region up before its addresses hold another array; peers unmap released
regions; a forked child's writes stay in the child; memory that cannot move
(a buffer, a memory map, a small array) stays as it is, and a heap array's
pages are zeros again once it is freed. `expect=off` (COLLEX_SHARE_PAGES=0):
nothing moves.

    mpirun -n 3 python tests/mpi/shared_pages.py [expect=off]
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import sys

import collex as cx
import numpy as np
from _harness import Cases
from collex import _core

# glibc gives arrays of M_MMAP_THRESHOLD bytes and up a mapping of their own
# (unmapped when freed, so that a new array often lands at the old addresses,
# which the freed and moved cases want); it raises that threshold, up to 32 MiB,
# as such arrays are freed. Fixed at 1 MiB here, whatever ran before; the heap
# case below puts an array on the heap on purpose.
M_MMAP_THRESHOLD = -3
LIBC = ctypes.CDLL(None)
LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20)

cx.init()
R, P = cx.rank(), cx.size()
SHARING = "expect=off" not in sys.argv[1:]
MIN = 1 << 20
# Calls after which an array has moved (bindings/sharing.cpp moves it on the fourth).
CALLS = 6
# Odd element counts: the arrays' ends fall inside pages.
N = (3 * MIN) // 4 + 12345
cases = Cases("shared_pages")


def regions() -> int:
    return _core._shared_pages()[0]


def data(n: int, rank: int, step: int, dtype=np.float32) -> np.ndarray:
    return ((np.arange(n) * 7 + rank * 3 + step) % 23).astype(dtype)


def total(n: int, step: int, dtype=np.float32) -> np.ndarray:
    return sum(data(n, r, step, np.float64) for r in range(P)).astype(dtype)


def check_moved(before: int, label: str) -> None:
    now = regions()
    if SHARING:
        assert now > before, f"{label}: no array moved onto shared pages ({before} -> {now} regions)"
    else:
        assert now == 0, f"{label}: COLLEX_SHARE_PAGES=0, yet {now} regions"


def moved_array(n: int = N) -> np.ndarray:
    """A new float32 array passed to CALLS in-place all-reduces (so it has
    moved where sharing is on), holding the last one's result."""
    x = np.empty(n, np.float32)
    for step in range(CALLS):
        x[...] = data(n, R, step)
        cx.allreduce(x)
    return x


def allreduce_cases(dtype) -> None:
    before = regions()
    x = np.empty(N, dtype)
    out = np.empty(N, dtype)
    for step in range(CALLS):
        x[...] = data(N, R, step, dtype)
        cx.allreduce(x, out=out)
        assert np.array_equal(out, total(N, step, dtype)), f"out of place, call {step}"
        assert np.array_equal(x, data(N, R, step, dtype)), f"input changed, call {step}"
    for step in range(CALLS):
        x[...] = data(N, R, step, dtype)
        cx.allreduce(x)
        assert np.array_equal(x, total(N, step, dtype)), f"in place, call {step}"
    check_moved(before, "allreduce")


def broadcast_cases() -> None:
    before = regions()
    for root in range(P):
        x = np.empty(N, np.float64)
        for step in range(CALLS):
            x[...] = data(N, R, step, np.float64)
            cx.broadcast(x, root=root)
            assert np.array_equal(x, data(N, root, step, np.float64)), f"root {root}, call {step}"
    check_moved(before, "broadcast")


def reduce_cases() -> None:
    before = regions()
    for root in (0, P - 1):
        x, out = np.empty(N, np.int32), np.zeros(N, np.int32)
        for step in range(CALLS):
            x[...] = data(N, R, step, np.int32)
            out[...] = -1
            cx.reduce(x, root=root, out=out)
            if R == root:
                assert np.array_equal(out, total(N, step, np.int32)), f"root {root}, call {step}"
            else:
                assert (out == -1).all(), f"root {root}: a non-root's out changed, call {step}"
    check_moved(before, "reduce")


def allgather_cases() -> None:
    before = regions()
    x, out = np.empty(N, np.float32), np.empty((P, N), np.float32)
    for step in range(CALLS):
        x[...] = data(N, R, step)
        cx.allgather(x, out=out)
        for r in range(P):
            assert np.array_equal(out[r], data(N, r, step)), f"block {r}, call {step}"
    check_moved(before, "allgather")


def reduce_scatter_cases() -> None:
    before = regions()
    n = P * (N // P)
    x, out = np.empty(n, np.float32), np.empty(n // P, np.float32)
    for step in range(CALLS):
        x[...] = data(n, R, step)
        cx.reduce_scatter(x, out=out)
        want = total(n, step)[R * (n // P) : (R + 1) * (n // P)]
        assert np.array_equal(out, want), f"call {step}"
    check_moved(before, "reduce_scatter")


def views_cases() -> None:
    # Views of one owner, at offsets that are not on a page: the owner moves.
    before = regions()
    big = np.zeros(2 * N + 1000, np.float32)
    a, b = big[1000 : 1000 + N], big[1000 + N :]
    for step in range(CALLS):
        a[...] = data(N, R, step)
        cx.allreduce(a)
        assert np.array_equal(a, total(N, step)), f"a view, call {step}"
        b[: N // 2] = data(N // 2, R, step)
        got = cx.allreduce(b[: N // 2], out=np.empty(N // 2, np.float32))
        assert np.array_equal(got, total(N // 2, step)), f"another view, call {step}"
    check_moved(before, "views")


def reducer_cases() -> None:
    # GradientReducer moves its large gradients at construction; peers read them
    # in place and the small ones through the kernel, in one bucket and across
    # buckets, step after step.
    before = regions()
    sizes = [N, 1000, 2 * N + 3, 77, N // 2 + 5, 3 * N]
    grads = [np.empty(n, np.float32) for n in sizes]
    reducer = cx.GradientReducer(grads, bucket_mb=2 * N * 4 / 2**20)
    check_moved(before, "reducer")
    for step in range(4):
        for g in grads:
            g[...] = data(g.size, R, step)
        for i in reversed(range(len(grads))):
            reducer.ready(i)
        reducer.wait()
        for k, g in enumerate(grads):
            want = total(g.size, step) / P
            assert np.allclose(g, want, rtol=1e-6), f"gradient {k} ({g.size}), step {step}"
    del reducer


def freed_cases() -> None:
    # An array that moved is freed; arrays made after it (malloc gives back the
    # same addresses) are read where they are, never through the freed region.
    x = moved_array()
    held = regions()
    del x
    gc.collect()
    assert regions() == (held - 1 if SHARING else 0), f"freeing kept its region: {held} -> {regions()}"
    for step in range(3):
        y = np.empty(N, np.float32)
        y[...] = data(N, R, 100 + step)
        cx.allreduce(y)
        assert np.array_equal(y, total(N, 100 + step)), f"a new array at old addresses, call {step}"
        del y


def moved_cases() -> None:
    # An array whose memory is replaced without being freed (__setstate__
    # allocates new memory and frees the old): its region goes before the next
    # call, whose arrays may lie where the old memory was.
    x = moved_array()
    x.__setstate__(data(3 * N, R, 7).__reduce__()[2])
    gc.collect()
    y = np.empty(N, np.float32)
    y[...] = data(N, R, 8)
    cx.allreduce(y)
    assert np.array_equal(y, total(N, 8)), "an array made after the move"
    cx.allreduce(x)
    assert np.array_equal(x, total(3 * N, 7)), "the moved array"


def resize_refused_cases() -> None:
    # collex watches the arrays it has seen through a weak reference, and NumPy
    # refuses to reallocate (resize in place) an array that has one.
    if not SHARING:
        return
    x = np.empty(N, np.float32)
    cx.allreduce(x)
    try:
        x.resize(2 * N, refcheck=False)
    except ValueError:
        return
    raise AssertionError("ndarray.resize reallocated an array collex watches")


def heap_cases() -> None:
    # An array on the heap, among other objects, moves as well; once freed, its
    # pages are zero pages again, which the allocator hands out (calloc, as
    # np.zeros asks for, may count on freshly trimmed pages reading as zeros).
    LIBC.mallopt(M_MMAP_THRESHOLD, 64 << 20)
    try:
        before = regions()
        x = np.empty(N, np.float32)
        for step in range(CALLS):
            x[...] = data(N, R, step)
            cx.allreduce(x)
            assert np.array_equal(x, total(N, step)), f"call {step}"
        check_moved(before, "heap")
        x[...] = 9.0
        del x
        for step in range(3):
            z = np.zeros(N, np.float32)
            assert not z.any(), f"np.zeros after a freed heap array: {np.count_nonzero(z)} non-zero"
            z[...] = data(N, R, 50 + step)
            cx.allreduce(z)
            assert np.array_equal(z, total(N, 50 + step)), f"a new heap array, call {step}"
            del z
    finally:
        LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20)


def peers_unmap_cases() -> None:
    # Peers drop their mappings of regions a rank released: the memory goes back
    # to the system once every rank has unmapped it.
    def mapped_regions() -> int:
        with open("/proc/self/maps") as f:
            return sum("memfd:collex-shared" in line for line in f)

    x = moved_array()
    del x
    gc.collect()
    y = np.empty(2 * N, np.float32)
    for step in range(CALLS + 1):
        y[...] = data(2 * N, R, step)
        cx.allreduce(y)
        assert np.array_equal(y, total(2 * N, step)), f"call {step}"
    # Each rank maps y's region of every rank (its own where y lies; a peer's only
    # where it may open the memfd), and nothing of x's: at most P mappings.
    most = P if SHARING else 0
    assert mapped_regions() <= most, f"{mapped_regions()} shared mappings, expected at most {most}"


def fork_cases() -> None:
    x = moved_array()
    kept = x.copy()
    child = os.fork()
    if child == 0:
        ok = np.array_equal(x, kept)
        x[...] = -5.0  # must not reach the parent, nor the peers
        os._exit(0 if ok else 3)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child did not see the parent's array"
    assert np.array_equal(x, kept), "the child's writes reached the parent"
    cx.allreduce(x)
    assert np.array_equal(x, kept * P), "a call after the fork"


def unmovable_cases() -> None:
    # Memory of a buffer or a memory map, and small arrays, stay where they are.
    before = regions()
    m = mmap.mmap(-1, N * 4)
    a = np.frombuffer(m, np.float32)
    raw = bytearray(N * 4)
    b = np.frombuffer(raw, np.float32)
    small = np.empty(MIN // 8, np.float32)
    for step in range(CALLS):
        for arr in (a, b, small):
            arr[...] = data(arr.size, R, step)
            cx.allreduce(arr)
            assert np.array_equal(arr, total(arr.size, step)), f"{arr.size} elements, call {step}"
    assert regions() == before, f"memory that cannot move moved: {before} -> {regions()}"
    del a, b
    m.close()


cases.run("allreduce float32", lambda: allreduce_cases(np.float32))
cases.run("allreduce int64", lambda: allreduce_cases(np.int64))
cases.run("broadcast", broadcast_cases)
cases.run("reduce", reduce_cases)
cases.run("allgather", allgather_cases)
cases.run("reduce_scatter", reduce_scatter_cases)
cases.run("views", views_cases)
cases.run("reducer", reducer_cases)
cases.run("freed", freed_cases)
cases.run("moved", moved_cases)
cases.run("resize refused", resize_refused_cases)
cases.run("heap", heap_cases)
cases.run("peers unmap", peers_unmap_cases)
cases.run("fork", fork_cases)
cases.run("unmovable", unmovable_cases)
cases.finish()
