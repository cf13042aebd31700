"""Shared by the MPI test scripts: run named cases, collect failures, agree on
the outcome across ranks, exit non-zero if any rank failed."""

from __future__ import annotations

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

    def check(self, label: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{label}: {detail}")

    def run(self, label: str, fn) -> None:
        try:
            fn()
        except AssertionError as e:
            self.failed.append(f"{label}: {e}")
        except Exception:
            self.failed.append(f"{label}: raised\n{traceback.format_exc()}")
        else:
            self.passed += 1

    def finish(self) -> None:
        comm = MPI.COMM_WORLD
        for f in self.failed:
            print(f"FAIL [rank {comm.rank}] {self.name} {f}", flush=True)
        total_failed = comm.allreduce(len(self.failed))
        total_passed = comm.allreduce(self.passed)
        if comm.rank == 0:
            print(
                f"{self.name}: {total_passed} passed, {total_failed} failed on {comm.size} ranks", flush=True
            )
        cx.finalize()
        sys.exit(1 if total_failed else 0)


def identical_on_all_ranks(a: np.ndarray) -> bool:
    """Whether every rank holds the same bytes (checked through mpi4py, not collex)."""
    blobs = MPI.COMM_WORLD.allgather(a.tobytes())
    return all(b == blobs[0] for b in blobs)
