"""The shared-memory transport's huge-page backing of memory that peers read in
place (shm/huge_pages.h), in one process: contents survive, only private
anonymous memory is touched, and where the kernel can, an aligned region is
collapsed. The reducer that uses it runs under mpirun in test_training.py."""

import mmap
import os
import re

import numpy as np
import pytest
from collex import _core


def huge_page_bytes():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2 << 20


HUGE = huge_page_bytes()


def kernel_can_collapse():
    """Why MADV_COLLAPSE cannot work here, or None."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            if "[never]" in f.read():
                return "transparent huge pages are off on this system ([never])"
    except OSError:
        return "no /sys/kernel/mm/transparent_hugepage: a kernel without transparent huge pages"
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if found is None or tuple(int(v) for v in found.groups()) < (6, 1):
        return f"kernel {os.uname().release} is older than 6.1, which added MADV_COLLAPSE"
    return None


def spans(*arrays):
    return [(a.ctypes.data, a.nbytes) for a in arrays]


def huge_kib_at(address):
    """AnonHugePages of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if head:
                inside = int(head.group(1), 16) <= address < int(head.group(2), 16)
            elif inside and line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0


def test_contents_of_small_and_large_arrays_survive():
    rng = np.random.default_rng(7)
    sizes = [3 << 20, 1 << 20, 100 << 10, (5 << 19) + 12, 5 << 20, 17]
    arrays = [rng.integers(0, 255, n, dtype=np.uint8) for n in sizes]
    before = [a.copy() for a in arrays]
    moved = _core._back_with_huge_pages(spans(*arrays))
    assert 0 <= moved <= sum(sizes)
    for k, (a, b) in enumerate(zip(arrays, before)):
        assert np.array_equal(a, b), f"array {k} ({a.nbytes} B) changed"


def test_nothing_to_do():
    assert _core._back_with_huge_pages([]) == 0
    assert _core._back_with_huge_pages([(0, 0)]) == 0


def test_shared_memory_is_left_alone():
    # mmap(-1) is shared anonymous memory (what a window's segments are): not ours to change.
    m = mmap.mmap(-1, 3 * HUGE)
    a = np.frombuffer(m, np.uint8)
    a[:] = np.arange(a.size) % 251
    start = (-a.ctypes.data) % HUGE
    assert _core._back_with_huge_pages([(a.ctypes.data + start, HUGE)]) == 0
    assert np.array_equal(a, np.arange(a.size) % 251)
    del a
    m.close()


@pytest.mark.skipif(kernel_can_collapse() is not None, reason=str(kernel_can_collapse()))
def test_an_aligned_region_of_private_memory_is_collapsed():
    m = mmap.mmap(-1, 3 * HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    a = np.frombuffer(m, np.uint8)
    a[:] = np.arange(a.size) % 253  # faulted in on small pages: nothing marked it
    start = (-a.ctypes.data) % HUGE
    region = a[start : start + HUGE]
    assert huge_kib_at(region.ctypes.data) == 0
    # One span over the region's last half and the next region's start: two regions touched,
    # one of them wholly inside the mapping; the bytes reported are the span's in it.
    span = (region.ctypes.data + HUGE // 2, HUGE // 2 + 4096)
    moved = 0
    for _ in range(3):  # the kernel may briefly lack a free huge page
        moved = _core._back_with_huge_pages([span])
        if moved:
            break
    assert moved in (HUGE // 2, HUGE // 2 + 4096), moved
    assert huge_kib_at(region.ctypes.data) >= HUGE >> 10
    assert np.array_equal(a, np.arange(a.size) % 253)
    del region, a
    m.close()
