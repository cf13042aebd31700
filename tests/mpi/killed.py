"""A rank that ends in the middle of a loop of collectives: the others raise
CommunicatorBroken naming it and its pid within a second (the timeout is 300 s),
saying how it ended, and nothing stays in /dev/shm.

usage: killed.py HOW SIZE_BYTES OUTDIR   (under mpirun -disable-auto-cleanup, so
that the launcher lets the survivors go on). HOW is how the last rank ends:
  kill    SIGKILL (nothing of it runs: its exit is seen by the others' waits)
  _exit   os._exit(3) (the same, without a signal)
  raise   a ValueError in its own code, uncaught (collex tells the others why)
  exit    sys.exit(3) (it leaves the communicator; the others are told)
Each survivor writes OUTDIR/rank<r>.txt, then waits for the others' files before
leaving: once a rank has exited, the launcher may end the job at any moment.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import collex as cx
import numpy as np

TIMEOUT = 300.0  # a peer's end must be noticed within a second, whatever the timeout
cx.init(timeout=TIMEOUT)
rank, size = cx.rank(), cx.size()
victim = size - 1
how = sys.argv[1]
x = np.ones(int(sys.argv[2]) // 4, np.float32)
outdir = sys.argv[3]


def end_victim() -> None:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "_exit":
        os._exit(3)
    elif how == "raise":
        raise ValueError("a bug in the victim's own code")
    elif how == "exit":
        sys.exit(3)


def report(text: str) -> None:
    with open(os.path.join(outdir, f"rank{rank}.tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(outdir, f"rank{rank}.tmp"), os.path.join(outdir, f"rank{rank}.txt"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(os.path.exists(os.path.join(outdir, f"rank{r}.txt")) for r in range(size) if r != victim):
            break
        time.sleep(0.05)
    if how in ("raise", "exit"):
        sys.exit(0)  # the victim waits in MPI_Finalize: every rank ends there
    # The job cannot finish cleanly with a rank gone; leave without MPI_Finalize.
    os._exit(0)


start = None
try:
    for i in range(100000):
        if rank == victim and i == 20:
            end_victim()
        start = time.monotonic()
        cx.allreduce(x)
except cx.CollexError as e:
    took = time.monotonic() - start
    lines = [f"{type(e).__name__}", f"{took:.2f}", str(e)]
    try:
        cx.allreduce(x)
        lines.append("not broken")
    except cx.CommunicatorBroken as again:
        lines.append(f"broken: {again}")
    report("\n".join(lines))
report("the loop finished without an error")
