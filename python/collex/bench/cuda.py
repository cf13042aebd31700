"""All-reduce of CuPy arrays: collex against what a user would otherwise write.

    mpirun -n 2 python -m collex.bench.cuda [-b 8] [-e 256M] [-f 8] [--json out.json]

Rows are float32 sums of one size each, on every launched rank's GPU (ranks
share GPUs round-robin by local rank). Columns, each the slowest rank's median:
collex on the CuPy array itself (its default way: CUDA IPC with host barriers
above 1 MiB, else host staging); "lanes": the same call on the stream-ordered
kernels (COLLEX_CUDA_IPC=lanes, one-shot up to 256 KiB, else two-shot, from
8 MiB reading the ranks' CuPy arrays in place: "direct");
"cupy+mpi4py": ``x.get()``, mpi4py's Allreduce on the host copy, ``x.set()``;
NCCL through ``cupy.cuda.nccl`` where every rank of the node has a GPU of its
own (NCCL refuses two ranks on one GPU); "copies": one device-to-host plus one
host-to-device copy of the array through pinned memory, the floor for any
scheme that reduces on the host; "bound": the least time the GPU's memory
allows, from a device-to-device copy timed in the same row: every rank must
read its input and write its output, 2S bytes, as the copy does (less than the
CPU's limit of S(3p-1)/p in bench/README.md, whose schedule writes only its own
output), and the ranks sharing a GPU share its bandwidth. Every result is checked.

With --p2p, a second sweep times a ring exchange (``sendrecv`` to the next
rank, from the one before) of CuPy arrays: "staged" (the default way, through
pinned host memory), "device" (COLLEX_CUDA_IPC=lanes on one node: one
device-to-device copy the receiver queues, collex/cuda/p2p.py), "cupy+mpi4py"
(``x.get()``, mpi4py's Sendrecv, ``y.set()``) and "bound" (a device-to-device
copy of the array: each rank's receive reads and writes S, the ranks sharing a
GPU share it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import numpy as np

from .model import format_size, parse_size, sweep
from .timing import timed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-b", "--minbytes", default="8")
    ap.add_argument("-e", "--maxbytes", default="256M")
    ap.add_argument("-f", "--factor", type=int, default=8)
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--p2p", action="store_true", help="also time a ring of send/recv (sendrecv)")
    args = ap.parse_args(argv)

    import cupy as cp
    from mpi4py import MPI

    import collex as cx

    cx.init()
    comm, mpi = cx.world(), MPI.COMM_WORLD
    devices = cp.cuda.runtime.getDeviceCount()
    cp.cuda.Device(comm.local_rank % devices).use()
    nccl = make_nccl(comm, mpi, devices)
    props = cp.cuda.runtime.getDeviceProperties(comm.local_rank % devices)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    from collex.cuda import IPC_MIN_BYTES, mps_running

    lanes_ok = comm.size > 1 and comm.local_size == comm.size
    sharing = -(-comm.local_size // devices)  # ranks per GPU
    peers = ["collex", "lanes", "cupy+mpi4py", "nccl", "copies", "bound"]
    if comm.rank == 0:
        mps = "under MPS" if mps_running() else "no MPS (ranks sharing a GPU run their kernels in turns)"
        print(f"all-reduce of float32 CuPy arrays, {comm.size} ranks on {devices} x {gpu}, {mps}")
        if nccl is None:
            print("nccl: n/a (needs one GPU per rank on a node, and cupy.cuda.nccl)")
        print(
            f"{'size':>9} "
            + " ".join(f"{p + ' us':>15}" for p in peers)
            + f" {'best vs peers':>14} {'% bound':>8}"
        )

    default_way = os.environ.get("COLLEX_CUDA_IPC", "1")
    rows = []
    for nbytes in sweep(parse_size(args.minbytes), parse_size(args.maxbytes), args.factor):
        count = max(1, nbytes // 4)
        # Small integers (exact in float32 and in any summation order); the
        # arange is integer because float32 cannot count past 2**24.
        fill = (cp.arange(count) % 7).astype(cp.float32) + comm.rank
        want = (np.arange(count) % 7).astype(np.float32) * comm.size + sum(range(comm.size))
        x = fill.copy()
        pinned = cp.cuda.alloc_pinned_memory(count * 4)
        host = np.frombuffer(pinned, np.float32, count)

        def collex_call(x=x):
            cx.allreduce(x)

        def mpi4py_call(x=x):
            h = x.get()
            mpi.Allreduce(MPI.IN_PLACE, h)
            x.set(h)

        def copies(x=x, host=host):
            x.get(out=host)
            x.set(host)

        def lanes_call(x=x):
            os.environ["COLLEX_CUDA_IPC"] = "lanes"
            try:
                cx.allreduce(x)
            finally:
                os.environ["COLLEX_CUDA_IPC"] = default_way

        y = cp.empty_like(x)

        def device_copy(x=x, y=y):
            y[...] = x

        calls: dict[str, Callable[[], Any] | None] = {
            "collex": collex_call,
            "lanes": lanes_call if lanes_ok else None,
            "cupy+mpi4py": mpi4py_call,
            "nccl": None if nccl is None else (lambda x=x: nccl(x)),
            "copies": copies,
            "bound": device_copy,
        }
        row: dict[str, Any] = {"bytes": count * 4}

        def reset(x=x, fill=fill) -> None:
            x[...] = fill

        def wrong(x=x, want=want) -> int:
            return int(np.count_nonzero(x.get() != want))

        row.update(checked_times(mpi, calls, reset, wrong, ("copies", "bound"), "all-reduce", count * 4))
        # The copy read and wrote 2S, as an all-reduce must on every rank (read its
        # input, write its output: the direct kernels reduce each rank's share of
        # every input into that share of every output and move no more);
        # `sharing` ranks to a GPU.
        row["bound"] = row["bound"] * sharing
        row["way"] = "staged" if comm.size == 1 or count * 4 <= IPC_MIN_BYTES else "ipc"
        lanes = comm._device._lanes if lanes_ok else None
        row["lanes_way"] = (
            lanes.last_way if lanes else None
        )  # 1-shot, 2-shot or direct (arrays read in place)
        row["sharing"] = sharing
        ours = min(row[p] for p in ("collex", "lanes") if row[p] is not None)
        peers_best = min(row[p] for p in ("cupy+mpi4py", "nccl") if row[p] is not None)
        row["ratio"] = peers_best / ours
        row["fraction_of_bound"] = row["bound"] / ours
        rows.append(row)
        if comm.rank == 0:
            cells = " ".join(f"{'n/a' if row[p] is None else f'{row[p] * 1e6:.1f}':>15}" for p in peers)
            ratio, bound = f"{row['ratio']:>13.2f}x", f"{100 * row['fraction_of_bound']:>7.0f}%"
            ways = f"({row['way']}, lanes {row['lanes_way'] or 'n/a'})"
            print(f"{format_size(count * 4):>9} {cells} {ratio} {bound}  {ways}", flush=True)
    p2p_rows = p2p_sweep(args, comm, mpi, lanes_ok, sharing, default_way) if args.p2p else []
    if args.json and comm.rank == 0:
        with open(args.json, "w") as f:
            info = {"gpu": gpu, "ranks": comm.size, "devices": devices, "mps": mps_running()}
            json.dump({**info, "rows": rows, "p2p_rows": p2p_rows}, f, indent=1)
    cx.finalize()
    return 0


def checked_times(
    mpi: Any, calls: dict, reset: Callable, wrong: Callable, unchecked: tuple, what: str, nbytes: int
) -> dict:
    """Seconds per call of each of `calls` (None where it is None), each run
    once first after `reset()` and, unless named in `unchecked`, checked:
    `wrong()` counts this rank's wrong elements, and rank 0 says where any rank
    had some."""
    import cupy as cp

    def synchronize() -> None:
        cp.cuda.get_current_stream().synchronize()

    times: dict[str, float | None] = {}
    for name, call in calls.items():
        if call is None:
            times[name] = None
            continue
        reset()
        call()
        if name not in unchecked and mpi.allreduce(wrong()) and mpi.rank == 0:
            print(f"WRONG RESULT: {what} {name} at {format_size(nbytes)}", file=sys.stderr)
        synchronize()
        times[name] = timed(mpi, lambda call=call: (call(), synchronize()))
    return times


def p2p_sweep(args: Any, comm: Any, mpi: Any, device_ok: bool, sharing: int, default_way: str) -> list[dict]:
    """The --p2p rows: each rank sends to the next and receives from the one before."""
    import cupy as cp

    import collex as cx

    nxt, prv = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    peers = ["staged", "device", "cupy+mpi4py", "bound"]
    if comm.rank == 0:
        print(f"\nsendrecv ring of float32 CuPy arrays, {comm.size} ranks")
        print(
            f"{'size':>9} "
            + " ".join(f"{p + ' us':>15}" for p in peers)
            + f" {'device vs peer':>15} {'% bound':>8}"
        )
    rows = []
    for nbytes in sweep(parse_size(args.minbytes), parse_size(args.maxbytes), args.factor):
        count = max(1, nbytes // 4)
        x = (cp.arange(count) % 7).astype(cp.float32) + comm.rank
        want = (np.arange(count) % 7).astype(np.float32) + prv
        y = cp.empty_like(x)

        def exchange(way: str, x=x, y=y) -> None:
            os.environ["COLLEX_CUDA_IPC"] = way
            try:
                cx.sendrecv(x, nxt, y, prv)
            finally:
                os.environ["COLLEX_CUDA_IPC"] = default_way

        def mpi4py_call(x=x, y=y) -> None:
            h = x.get()
            r = np.empty_like(h)
            mpi.Sendrecv(h, nxt, recvbuf=r, source=prv)
            y.set(r)

        def device_copy(x=x, y=y) -> None:
            y[...] = x

        calls: dict[str, Callable[[], Any] | None] = {
            "staged": lambda: exchange("1"),
            "device": (lambda: exchange("lanes")) if device_ok else None,
            "cupy+mpi4py": mpi4py_call,
            "bound": device_copy,
        }
        row: dict[str, Any] = {"bytes": count * 4}

        def wrong(y=y, want=want) -> int:
            return int(np.count_nonzero(y.get() != want))

        row.update(
            checked_times(mpi, calls, lambda y=y: y.fill(-1), wrong, ("bound",), "sendrecv", count * 4)
        )
        row["bound"] *= sharing  # the ranks sharing a GPU copy at once
        ours = row["device"] if row["device"] is not None else row["staged"]
        row["ratio"] = row["cupy+mpi4py"] / ours
        row["fraction_of_bound"] = row["bound"] / ours
        rows.append(row)
        if comm.rank == 0:
            cells = " ".join(f"{'n/a' if row[p] is None else f'{row[p] * 1e6:.1f}':>15}" for p in peers)
            ratio, bound = f"{row['ratio']:>14.2f}x", f"{100 * row['fraction_of_bound']:>7.0f}%"
            print(f"{format_size(count * 4):>9} {cells} {ratio} {bound}")
    return rows


def make_nccl(comm: Any, mpi: Any, devices: int) -> Callable | None:
    """An in-place NCCL sum over the ranks, or None where NCCL cannot run here."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    if not nccl.available or comm.local_size > devices:
        return None
    uid = mpi.bcast(nccl.get_unique_id() if comm.rank == 0 else None, root=0)
    ncomm = nccl.NcclCommunicator(comm.size, uid, comm.rank)

    def allreduce(x):
        import cupy as cp

        ncomm.allReduce(
            x.data.ptr, x.data.ptr, x.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, cp.cuda.get_current_stream().ptr
        )

    return allreduce


if __name__ == "__main__":
    raise SystemExit(main())
