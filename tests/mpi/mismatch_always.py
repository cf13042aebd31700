"""Mismatched calls with default settings (no COLLEX_CHECK), on the shared window
and over MPI alone: rank 0 calls something else than the others. Every rank must raise
CollectiveMismatch within seconds (COLLEX_TIMEOUT is 60 s here), no rank may
return a result computed from the mismatched data, and afterwards the
communicator says it is broken. argv[1]: which case."""

from __future__ import annotations

import sys
import time

import collex as cx
import numpy as np
from _harness import Cases
from mpi4py import MPI

cx.init()
rank, size = cx.rank(), cx.size()
cases = Cases(f"mismatch_always {sys.argv[1]}")
odd = rank == 0  # the rank whose call differs


def count(comm):
    x = np.ones(1000 if odd else 2000, np.float32)
    comm.allreduce(x)
    return x


def dtype(comm):
    x = np.ones(1000, np.float32 if odd else np.float64)
    comm.allreduce(x)
    return x


def order(comm):
    x = np.ones(1000, np.float32)
    if odd:
        comm.allreduce(x)
        comm.broadcast(x, root=0)
    else:
        comm.broadcast(x, root=0)
        comm.allreduce(x)
    return x


def large(comm):
    x = np.ones((4 if odd else 8) << 18, np.float32)  # 4 MiB against 8 MiB
    comm.allreduce(x)
    return x


def reduce_root(comm):
    x = np.ones(64, np.float32)
    comm.reduce(x, root=0 if odd else size - 1)
    return x


def allgather(comm):
    x = np.ones(100 if odd else 300, np.int32)
    return comm.allgather(x)


def empty(comm):
    # A symmetric buffer is made with MPI calls that have no deadline: the node's
    # ranks must find the mismatch on the window first, and make no segment.
    if odd:
        return comm.empty(1000, np.float32)
    x = np.ones(1000, np.float32)
    comm.allreduce(x)
    return x


def split(comm):
    # split's ranks meet first (MPI_Comm_split has no deadline); a barrier
    # called meanwhile must not pass for that meeting, or rank 0 would wait in
    # MPI_Comm_split for ranks that went on.
    if odd:
        return comm.split(0)
    comm.barrier()
    return np.ones(1)


CASES = {"count": count, "dtype": dtype, "order": order, "large": large, "reduce_root": reduce_root,
         "allgather": allgather, "empty": empty, "split": split}  # fmt: skip


def case():
    comm = cx.Communicator(MPI.COMM_WORLD)
    t0 = time.monotonic()
    try:
        got = CASES[sys.argv[1]](comm)
    except cx.CollectiveMismatch as e:
        msg = str(e)
        assert "called different operations" in msg, msg
        assert time.monotonic() - t0 < 10, f"took {time.monotonic() - t0:.1f} s"
        assert "broken" in msg, msg
    else:
        # Only a rank that computes nothing may return: a reduce's non-root (in
        # every rank's view) stages its input and leaves without waiting. It hears
        # of the mismatch in its next call.
        assert sys.argv[1] == "reduce_root" and 0 < rank < size - 1, f"rank {rank} returned {got.ravel()[:4]}"
        assert (got == 1).all()
        try:
            comm.barrier()
        except cx.CollectiveMismatch as e:
            assert "reported" in str(e) and "called different operations" in str(e), str(e)
        else:
            raise AssertionError(f"rank {rank}: the next call did not hear of the mismatch")
    took = time.monotonic() - t0
    assert took < 10, f"took {took:.1f} s"
    assert comm.broken
    try:
        comm.allreduce(np.ones(3))
    except cx.CommunicatorBroken:
        pass
    else:
        raise AssertionError("a broken communicator ran an all-reduce")
    comm.shutdown()
    # The world communicator, untouched, still works.
    assert (cx.allreduce(np.ones(3)) == size).all()


cases.run(sys.argv[1], case)
cases.finish()
