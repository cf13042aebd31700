"""MPI alone (mpi4py, no collex) after a rank on another host is killed: what
the mpich wheel does with the sends that follow. Run on pretend hosts:

    CX_RANKS_PER_HOST=2 bash bench/netns/run.sh 2 -l -disable-auto-cleanup \
        python -X faulthandler bench/netns/mpi_after_peer_death.py MODE

Rank 3 (on the second host) kills itself; one second later rank 0 (on the first)
sends to rank 2, then to rank 3. MODE says what rank 0 has in flight with rank 3
when it dies: `none`, `send` (a 32 MiB send it has posted) or `recv` (a receive
it has posted). Every step rank 0 gets through is printed; a crash shows as
faulthandler's report and the launcher's "Segmentation fault".
"""

import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
comm.Set_errhandler(MPI.ERRORS_RETURN)
rank = comm.rank
mode = sys.argv[1]
# Every pair has talked once, so that no connection is still to be made.
for q in range(comm.size):
    if q != rank:
        comm.Isend(np.ones(4), q, tag=5)
for q in range(comm.size):
    if q != rank:
        comm.Recv(np.empty(4), q, tag=5)
big = np.ones(1 << 22)
pending = None
if rank == 0 and mode == "send":
    pending = comm.Isend(big, 3, tag=9)
if rank == 0 and mode == "recv":
    pending = comm.Irecv(big, 3, tag=9)
comm.Barrier()
if rank == 3:
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(1.0)
try:
    if rank == 0:
        if pending is not None:
            print(f"rank 0: the pending {mode} has completed: {pending.Test()}", flush=True)
        comm.Isend(np.ones(4), 2, tag=7).Wait()
        print("rank 0: sent to rank 2", flush=True)
        comm.Isend(np.ones(4), 3, tag=7)
        print("rank 0: posted a send to rank 3", flush=True)
    if rank == 2:
        comm.Recv(np.empty(4), 0, tag=7)
        print("rank 2: received from rank 0", flush=True)
except MPI.Exception as e:
    print(f"rank {rank}: MPI error: {e}", flush=True)
print(f"rank {rank}: done", flush=True)
time.sleep(0.5)
os._exit(0)
