"""What the kernels a large collective is made of reach here, every rank running
them at once, beside the measurement the bench's limit is priced at: the
ceiling of each part of `python -m collex.bench --breakdown`.

    mpirun -n 2 python bench/kernel_rates.py [--mib 32] [--rounds 3]

Each rank times, on its own arrays of `--mib` MiB (a 64 MiB all-reduce on 2 ranks
reduces 32 MiB blocks), all taking turns within every round:

* the limit's copy and add (`collex.memory_bandwidth`: `c = a` and `c += a` on
  arrays it allocates);
* on shared memory (shmem, the kind symmetric buffers and shared pages are, which
  collectives read in place), on NumPy's private memory (on transparent huge
  pages where the system allows) and on private memory kept on 4 KiB pages (`4K`):
  - the reduction a collective runs: `d = a + b` into a third array with streaming
    stores (collex's kernel for float32 sums of 16 MiB and more);
  - the limit's own pattern, `a += b` with ordinary stores;
  - the copy a collective runs: `d = a` with streaming stores.

Rates count bytes read plus written per second (3 per element of a sum, 2 per
copied byte), each rank's median per round, the slowest rank's; rank 0 prints one
line per round and the medians over the rounds, also as a fraction of the limit's
bandwidth (the larger of its copy and add).
"""

from __future__ import annotations

import argparse
import mmap
import statistics
from typing import Callable

import collex as cx
import numpy as np
from collex import _core
from collex._dtypes import CODES, OPS
from collex.bench.timing import timed_together
from mpi4py import MPI


def shared_array(n: int) -> np.ndarray:
    """n float32 in shared anonymous memory: shmem, as collex's symmetric buffers
    and shared pages are (on 4 KiB pages unless the system's shmem_enabled allows
    huge ones)."""
    a = np.frombuffer(mmap.mmap(-1, n * 4, flags=mmap.MAP_SHARED), np.float32)
    a[...] = 1
    return a


def private_array(n: int) -> np.ndarray:
    """NumPy's own: private, on transparent huge pages where the system allows."""
    return np.ones(n, np.float32)


def small_pages_array(n: int) -> np.ndarray:
    """Private memory kept on 4 KiB pages (MADV_NOHUGEPAGE), to tell the page size
    apart from sharing."""
    m = mmap.mmap(-1, n * 4, flags=mmap.MAP_PRIVATE)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    a = np.frombuffer(m, np.float32)
    a[...] = 1
    return a


def kernels(make: Callable[[int], np.ndarray], nbytes: int) -> dict[str, tuple[int, Callable[[], None]]]:
    """Each kernel a collective is made of, on three arrays from `make`, with the
    bytes it moves per byte of an array."""
    n = nbytes // 4
    x, y, z = (make(n) for _ in range(3))
    f32, add = CODES[np.dtype(np.float32)], OPS["sum"]

    def at(v: np.ndarray) -> int:  # called each time, so the closures keep the arrays
        return v.ctypes.data

    return {
        "streaming d = a + b": (3, lambda: _core._kernel_reduce_streaming(at(z), at(x), at(y), n, f32, add)),
        "ordinary a += b": (3, lambda: _core._kernel_reduce(at(x), at(x), at(y), n, f32, add)),
        "streaming d = a": (2, lambda: _core._kernel_copy_result(at(z), at(x), nbytes)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=32, help="size of each array in MiB; default 32")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every measurement; default 3")
    a = p.parse_args()
    cx.init()
    comm = MPI.COMM_WORLD
    nbytes = a.mib << 20
    timed: dict[str, tuple[int, Callable[[], None]]] = {}
    for memory, make in (("shared", shared_array), ("private", private_array), ("4K", small_pages_array)):
        for name, kernel in kernels(make, nbytes).items():
            timed[f"{name}, {memory}"] = kernel
    probe: list[tuple[float, float]] = []
    calls = [fn for _, fn in timed.values()]
    calls.append(lambda: probe.append(cx.memory_bandwidth(nbytes, 1)))
    rows: dict[str, list[float]] = {name: [] for name in ("limit copy", "limit add", *timed)}
    for r in range(a.rounds):
        probe.clear()
        times = timed_together(comm, calls, repeats=7)
        rates = {name: per * nbytes / t for (name, (per, _)), t in zip(timed.items(), times)}
        rates["limit copy"] = statistics.median(c for c, _ in probe)
        rates["limit add"] = statistics.median(s for _, s in probe)
        for name in rows:
            rows[name].append(comm.allreduce(rates[name], op=MPI.MIN))
        if comm.rank == 0:
            print(f"round {r + 1}: " + " | ".join(f"{k} {v[-1] / 1e9:.1f}" for k, v in rows.items()))
    if comm.rank == 0:
        print(f"\n{comm.size} ranks, {a.mib} MiB arrays, GB/s read + written, medians of {a.rounds} rounds:")
        best = max(statistics.median(rows["limit copy"]), statistics.median(rows["limit add"]))
        for name, values in rows.items():
            m = statistics.median(values)
            print(f"  {name:<32} {m / 1e9:6.1f}   {100 * m / best:5.0f} % of the limit's bandwidth")
    cx.finalize()


if __name__ == "__main__":
    main()
