"""A rank killed with SIGKILL in the middle of a loop of collectives: the others
raise CommunicatorBroken naming it and its pid within a second (the timeout is
300 s), and nothing stays in /dev/shm.

usage: killed.py SIZE_BYTES OUTDIR   (under mpirun -disable-auto-cleanup, so that
the launcher lets the survivors go on). Each survivor writes OUTDIR/rank<r>.txt,
then waits for the others' files before leaving: once a rank has exited, the
launcher may end the job and its output at any moment.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import collex as cx
import numpy as np

TIMEOUT = 300.0  # a local peer's exit must be noticed within a second, whatever the timeout
cx.init(timeout=TIMEOUT)
rank, size = cx.rank(), cx.size()
victim = size - 1
x = np.ones(int(sys.argv[1]) // 4, np.float32)
outdir = sys.argv[2]


def report(text: str) -> None:
    with open(os.path.join(outdir, f"rank{rank}.tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(outdir, f"rank{rank}.tmp"), os.path.join(outdir, f"rank{rank}.txt"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(os.path.exists(os.path.join(outdir, f"rank{r}.txt")) for r in range(size) if r != victim):
            break
        time.sleep(0.05)
    # The job cannot finish cleanly with a rank gone; leave without MPI_Finalize.
    os._exit(0)


start = None
try:
    for i in range(100000):
        if rank == victim and i == 20:
            os.kill(os.getpid(), signal.SIGKILL)
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
