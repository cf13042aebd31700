"""Shared by the MPI test scripts: run named cases, collect failures, agree on
the outcome across ranks, exit non-zero if any rank failed. Cases may belong to
groups (`cases.group = "..."` before them): rank 0 then prints every group's
passed and failed counts over all ranks on one line, `GROUPS {json}`, for the
test functions that each check one group of a launch."""

from __future__ import annotations

import hashlib
import json
import sys
import traceback

import collex as cx
import numpy as np
from mpi4py import MPI


class Cases:
    def __init__(self, name: str):
        self.name = name
        self.passed = 0
        self.failed: list[str] = []
        self.group = ""
        self.counts: dict[str, list[int]] = {}  # group: [passed, failed]

    def _count(self, ok: bool) -> None:
        self.counts.setdefault(self.group, [0, 0])[0 if ok else 1] += 1

    def check(self, label: str, ok: bool, detail: str = "") -> None:
        self._count(ok)
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{self._where()}{label}: {detail}")

    def _where(self) -> str:
        return f"[{self.group}] " if self.group else ""

    def run(self, label: str, fn) -> None:
        try:
            fn()
        except AssertionError as e:
            self._count(False)
            self.failed.append(f"{self._where()}{label}: {e}")
        except Exception:
            self._count(False)
            self.failed.append(f"{self._where()}{label}: raised\n{traceback.format_exc()}")
        else:
            self._count(True)
            self.passed += 1

    def finish(self) -> None:
        comm = MPI.COMM_WORLD
        for f in self.failed:
            print(f"FAIL [rank {comm.rank}] {self.name} {f}", flush=True)
        total_failed = comm.allreduce(len(self.failed))
        total_passed = comm.allreduce(self.passed)
        every = comm.gather(self.counts, root=0)
        if comm.rank == 0 and any(g for counts in every for g in counts):
            groups: dict[str, list[int]] = {}
            for counts in every:
                for g, (p, f) in counts.items():
                    total = groups.setdefault(g, [0, 0])
                    total[0] += p
                    total[1] += f
            print("GROUPS " + json.dumps(groups), flush=True)
        if comm.rank == 0:
            print(
                f"{self.name}: {total_passed} passed, {total_failed} failed on {comm.size} ranks", flush=True
            )
        cx.finalize()
        sys.exit(1 if total_failed else 0)


def raises(fn, exc, *needles: str) -> str:
    """Calls fn, which must raise exc with every needle in its message; returns the message."""
    try:
        fn()
    except exc as e:
        said = str(e)
        missing = [n for n in needles if n not in said]
        assert not missing, f"{type(e).__name__} {said!r} lacks {missing}"
        return said
    names = "/".join(e.__name__ for e in exc) if isinstance(exc, tuple) else exc.__name__
    raise AssertionError(f"did not raise {names} (expected one saying {list(needles)})")


def identical_on_all_ranks(a: np.ndarray) -> bool:
    """Whether every rank holds the same shape, dtype and bytes (checked through
    mpi4py, not collex). The ranks compare digests: sending every rank's bytes to
    every other cost more than the collectives tested at a few megabytes."""
    a = np.ascontiguousarray(a)
    digest = hashlib.blake2b(f"{a.shape} {a.dtype.str} {a.dtype.name}".encode())
    digest.update(a.reshape(-1).view(np.uint8))
    digests = MPI.COMM_WORLD.allgather(digest.digest())
    return all(d == digests[0] for d in digests)
