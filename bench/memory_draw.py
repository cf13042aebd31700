"""How much the memory an array happens to get changes the time of one and the same
streaming operation, in one process, without collex: several identical arrays,
each the source of the same NumPy add into one destination, taking turns.

On the project's 2-core VM identical 64 MiB arrays on 4 KiB pages differed by
19-27 % this way in each of five launches, on huge pages by 7-12 % in four (bench/README.md,
"Six more runs, and the memory draw"): the spread that a comparison of two layouts
of the same bytes (the reducer's separate gradients against one flat array) has
to get through before it says anything about collex.

    python bench/memory_draw.py [--arrays 6] [--mib 64] [--turns 25] [--huge-pages]

The arrays lie on 4 KiB pages, as the shared pages of ordinary arrays do where
the system keeps shared memory off huge pages (the usual default); --huge-pages
leaves them on whatever NumPy's allocation gets.

Prints each array's median time and the slowest over the fastest; as root, also
how its physical pages follow each other (from /proc/self/pagemap: the share of
neighbouring pages whose frames are neighbours, ascending or descending).
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time

import numpy as np

PAGE = 4096


def frame_order(a: np.ndarray) -> str:
    """The share of page pairs on ascending and on descending neighbouring frames,
    or "" where this process may not read the frames (not root)."""
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return ""
    try:
        first = a.__array_interface__["data"][0] // PAGE
        pages = a.nbytes // PAGE
        entries = np.frombuffer(os.pread(fd, 8 * pages, 8 * first), np.uint64)
    finally:
        os.close(fd)
    frames = (entries & np.uint64((1 << 55) - 1)).astype(np.int64)
    if not frames.any():
        return ""
    steps = np.diff(frames)
    return f"  frames: {np.mean(steps == 1):.2f} ascending, {np.mean(steps == -1):.2f} descending"


def small_page_array(count: int) -> tuple[mmap.mmap, np.ndarray]:
    """An array of `count` float32 ones on private 4 KiB pages (and its mapping)."""
    m = mmap.mmap(-1, count * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    x = np.frombuffer(m, np.float32)
    x[:] = 1
    return m, x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arrays", type=int, default=6)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--turns", type=int, default=25)
    p.add_argument("--huge-pages", action="store_true")
    a = p.parse_args()
    count = (a.mib << 20) // 4
    if a.huge_pages:
        arrays = [np.ones(count, np.float32) for _ in range(a.arrays)]
    else:
        mappings = [small_page_array(count) for _ in range(a.arrays)]  # each touched when made
        arrays = [x for _, x in mappings]
    out = np.zeros(count, np.float32)
    times: list[list[float]] = [[] for _ in arrays]
    for _ in range(a.turns):
        for i, x in enumerate(arrays):
            t = time.perf_counter()
            np.add(x, x, out=out)
            times[i].append(time.perf_counter() - t)
    medians = [statistics.median(t) for t in times]
    for i, (x, median) in enumerate(zip(arrays, medians)):
        print(f"array {i}: {median * 1e3:.2f} ms{frame_order(x)}")
    print(f"slowest / fastest: {max(medians) / min(medians):.2f}")


if __name__ == "__main__":
    main()
