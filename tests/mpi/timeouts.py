"""A peer that never arrives: after the timeout the waiting ranks raise
CollectiveTimeout naming the operation and the rank they waited for; the
communicator is then broken and says so on every later call.

usage: timeouts.py SCENARIO   (run on 2 ranks or more; the last rank stays away)
  small     an 8-element allreduce
  large     an 8 MiB allreduce (the MPI library's rendezvous path)
  reduce    a reduce rooted at rank 0
  barrier   a barrier
  split     a split (its ranks meet in a barrier first: MPI_Comm_split has no deadline)
  async     the allreduce is asynchronous; the error comes out of wait()
  reducer   a GradientReducer step (built by every rank; the last never reduces)
  reducer16 the same with fp16 compression (its scale is agreed first)
  recv      a receive from the absent rank
  interrupt no timeout in sight: SIGINT (Ctrl-C) ends the wait with KeyboardInterrupt
  communicator  making a collex.Communicator (MPI_Comm_dup has no deadline)
Run with COLLEX_WARN_AFTER below the timeout, every wait also says once, on
stderr, whom it waits for (the test reads that).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import collex as cx
import numpy as np
from _harness import Cases
from mpi4py import MPI

scenario = sys.argv[1]
TIMEOUT = 1.5
cx.init(timeout=600 if scenario == "interrupt" else TIMEOUT)
rank, size = cx.rank(), cx.size()
cases = Cases(f"timeouts[{scenario}]")
absent = size - 1

if scenario == "interrupt":
    if rank != absent:
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            cx.allreduce(np.ones(8))
        except KeyboardInterrupt:
            cases.check(
                "interrupted promptly", time.monotonic() - start < 10, f"{time.monotonic() - start:.1f} s"
            )
        else:
            cases.check("interrupted", False, "allreduce returned")
        cases.check("broken after an interrupted collective", cx.world().broken)
    MPI.COMM_WORLD.Barrier()
    cases.finish()

if scenario == "communicator":
    # Making a communicator is collective: the ranks meet in a barrier with a
    # deadline before MPI_Comm_dup, so those that make it while the last rank
    # never does raise instead of waiting for ever (before: killed by the launcher).
    mpi = MPI.COMM_WORLD.Dup()  # the barrier left pending when they give up stays on this one
    if rank != absent:
        start = time.monotonic()
        try:
            cx.Communicator(mpi, timeout=TIMEOUT)
        except cx.CollectiveTimeout as e:
            took = time.monotonic() - start
            needles = (f"[rank {rank}] collex.Communicator", "not every rank", "within 1.5 s")
            cases.check("message", all(n in str(e) for n in needles), str(e))
            cases.check("took about the timeout", TIMEOUT - 0.5 <= took < TIMEOUT + 20, f"{took:.1f} s")
        else:
            cases.check("raised CollectiveTimeout", False, "made the communicator")
        cases.check("the world is not broken by it", not cx.world().broken)
    MPI.COMM_WORLD.Barrier()
    cases.finish()

# The reducer is built by every rank (that is collective); the absent rank then stays away.
reducer = None
if scenario.startswith("reducer"):
    grads = [np.ones(s, np.float32) for s in ((1000,), (30, 30), (5,))]
    reducer = cx.GradientReducer(grads, compression="fp16" if scenario == "reducer16" else None)
    MPI.COMM_WORLD.Barrier()

ops = {
    "small": lambda: cx.allreduce(np.ones(8, np.float32)),
    "large": lambda: cx.allreduce(np.ones(1 << 21, np.float32)),
    "reduce": lambda: cx.reduce(np.ones(8), root=0),
    "barrier": lambda: cx.barrier(),
    "split": lambda: cx.world().split(color=0),
    "async": lambda: cx.allreduce(np.ones(8), async_op=True).wait(),
    "reducer": lambda: reducer.reduce(),
    "reducer16": lambda: reducer.reduce(),
    "recv": lambda: cx.recv(np.ones(8), absent),
}
name = {
    "small": "allreduce",
    "large": "allreduce",
    "reduce": "reduce",
    "barrier": "barrier",
    "split": "split",
    "async": "allreduce",
    "reducer": "allreduce",
    "reducer16": "allreduce",
    "recv": "recv from rank",
}[scenario]
# Building the reducer took a sequence number; point-to-point has none.
seq = {"recv": "", "reducer": "seq=", "reducer16": "seq="}.get(scenario, "seq=0")

# In a reduce, a rank whose subtree lacks the absent rank sends its part and is
# done; only the ranks that wait (directly or through a child) time out.
may_finish = scenario == "reduce" and rank != 0

if rank != absent:
    start = time.monotonic()
    try:
        ops[scenario]()
        finished = True
    except cx.CollectiveTimeout as e:
        finished = False
        took = time.monotonic() - start
        msg = str(e)
        # Who is waited for depends on the schedule: the absent rank, or a rank
        # that is itself stuck waiting for it.
        cases.check(
            "message", all(n in msg for n in (f"[rank {rank}]", name, seq, "after 1.5 s", "rank ")), msg
        )
        # A rank that started waiting a little later may hear of another's timeout
        # (relayed) a little before its own deadline.
        cases.check("took about the timeout", TIMEOUT - 0.5 <= took < TIMEOUT + 20, f"{took:.1f} s")
    except Exception as e:  # noqa: BLE001
        finished = False
        cases.check("raised CollectiveTimeout", False, f"{type(e).__name__}: {e}")
    if finished:
        cases.check("raised CollectiveTimeout", may_finish, "returned normally")
        MPI.COMM_WORLD.Barrier()
        cases.finish()
    cases.check("broken", cx.world().broken)
    try:
        cx.allreduce(np.ones(2))
    except cx.CommunicatorBroken as e:
        cases.check("later call says broken", "broken" in str(e) and "allreduce" in str(e), str(e))
    else:
        cases.check("later call says broken", False, "no CommunicatorBroken")
    # Other ways in are refused alike.
    try:
        cx.broadcast(np.ones(2), async_op=True)
    except cx.CommunicatorBroken:
        cases.check("async call refused", True)
    else:
        cases.check("async call refused", False, "no CommunicatorBroken")

# Keep the absent rank away until the others have given up, then meet through MPI.
MPI.COMM_WORLD.Barrier()
cases.finish()
