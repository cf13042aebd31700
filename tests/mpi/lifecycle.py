"""init/finalize, use before and after, sub-communicators, split, environment."""

from __future__ import annotations

import collex as cx
import numpy as np
from _harness import Cases, raises
from mpi4py import MPI

cases = Cases("lifecycle")
rank, size = MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size


cases.run(
    "allreduce before init",
    lambda: raises(lambda: cx.allreduce(np.ones(2)), cx.CollexError, "before collex.init()"),
)
cases.run("rank before init", lambda: raises(cx.rank, cx.CollexError, "collex.init()"))
cases.check("not initialised", not cx.is_initialized())

w = cx.init()
cases.check("init idempotent", cx.init() is w and cx.world() is w)
cases.check("rank/size", (cx.rank(), cx.size()) == (rank, size))
cases.check("local rank/size", 0 <= cx.local_rank() < cx.local_size() <= size and cx.local_size() == size)


def sub_communicator():
    sub = MPI.COMM_WORLD.Split(rank % 2, rank)
    c = cx.Communicator(sub)
    assert c.size == sub.size and c.rank == sub.rank
    y = c.allreduce(np.array([rank], np.int64))
    assert y[0] == sum(r for r in range(size) if r % 2 == rank % 2), y
    # The user's own MPI traffic on the same communicator does not interfere.
    sub.Barrier()
    sub.Free()


def split():
    c = cx.world().split(rank % 2, key=-rank)  # reversed order within each half
    members = [r for r in range(size) if r % 2 == rank % 2]
    assert c.size == len(members)
    assert c.rank == sorted(members, reverse=True).index(rank), (c.rank, members)
    y = c.allreduce(np.array([rank], np.int64), algo="tree")
    assert y[0] == sum(members)
    none = cx.world().split(None if rank == 0 else 1)
    assert (none is None) == (rank == 0)


cases.run("sub communicator", sub_communicator)
cases.run("split", split)


def finalize_then_use():
    cx.finalize()
    cx.finalize()  # idempotent
    raises(lambda: cx.allreduce(np.ones(2)), cx.CollexError, "after collex.finalize()")
    raises(lambda: w.allreduce(np.ones(2)), cx.CollexError, "shut down")
    again = cx.init()
    assert again is not w
    assert (cx.allreduce(np.ones(3)) == size).all()


cases.run("finalize then use", finalize_then_use)
cases.finish()
