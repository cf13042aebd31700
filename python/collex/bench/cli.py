"""mpirun -n N python -m collex.bench [options]: sweep sizes for each collective,
dtype, op and algorithm; time collex and every peer in the same run on the same
ranks; check every result; print one table, and optionally JSON, CSV and a plot."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from typing import Any

import numpy as np

from .breakdown import Breakdown
from .data import count_wrong, expected, rank_input
from .model import COLLECTIVES, busbw, count_for, format_size, limit_seconds, parse_size, sweep
from .peers import CollexPeer, GlooPeer, Mpi4pyPeer, NotSupported, Row, gloo_unavailable
from .report import Progress, Table, plot, write_csv, write_json
from .timing import SAMPLING_CALLS, timed_together

REDUCING = ("allreduce", "reduce", "reduce_scatter")
WITH_ALGO = ("allreduce", "broadcast")
FIXED_ALGO = {"reduce": "tree", "allgather": "ring", "reduce_scatter": "ring"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m collex.bench", description=__doc__)
    p.add_argument("-b", "--minbytes", default="8", help="smallest size (e.g. 8, 1K, 64M); default 8")
    p.add_argument("-e", "--maxbytes", default="64M", help="largest size; default 64M")
    p.add_argument("-f", "--stepfactor", type=int, default=4, help="multiply the size by this; default 4")
    p.add_argument("-c", "--collectives", default=",".join(COLLECTIVES), help="comma list; default all")
    p.add_argument("-d", "--dtype", default="float32", help="comma list of dtypes; default float32")
    p.add_argument("-o", "--op", default="sum", help="comma list of sum,prod,min,max,avg; default sum")
    p.add_argument(
        "-a", "--algo", default="auto", help="comma list of auto,ring,tree (all-reduce, broadcast)"
    )
    p.add_argument(
        "-t", "--transport", default="auto", help="comma list of COLLEX_TRANSPORT values; default auto"
    )
    p.add_argument(
        "-i",
        "--inplace",
        choices=["0", "1", "both"],
        default="0",
        help="all-reduce and reduce: 0 out of place (default), 1 in place, both",
    )
    p.add_argument("-r", "--root", type=int, default=0, help="root of broadcast and reduce; default 0")
    p.add_argument("-w", "--warmup", type=int, default=3, help="untimed calls before timing; default 3")
    p.add_argument(
        "-n", "--iters", type=int, default=0, help="calls per timed repeat; default 0 = about 20 ms worth"
    )
    p.add_argument("-R", "--repeats", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--peers", default="mpi4py,gloo", help="comma list of peers to measure; '' for none")
    p.add_argument(
        "-S",
        "--symmetric",
        action="store_true",
        help="collex's arrays are symmetric buffers (collex.empty); peers keep ordinary ones",
    )
    p.add_argument("--no-limit", action="store_true", help="skip the memory-bandwidth limit")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="say per rank where collex's time goes (reductions, copies, waits; bench/README.md)",
    )
    p.add_argument("--json", help="write every row to this JSON file")
    p.add_argument("--csv", help="write every row to this CSV file")
    p.add_argument("--plot", help="draw busbw against size into this PNG file (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plant-wrong", action="store_true", help=argparse.SUPPRESS)  # tests the checker
    return p.parse_args(argv)


def split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def machine_info(mpi) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import collex

    info = {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mpi": mpi.Get_library_version().splitlines()[0].strip(),
        "collex": collex.__version__,
        "kernels": collex.kernel_isa(),
        "copy_loop": collex._core.kernel_copy_loop(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except Exception:  # noqa: BLE001
        pass
    return info


class Bench:
    def __init__(self, args: argparse.Namespace):
        from mpi4py import MPI

        import collex as cx

        self.args, self.MPI, self.cx = args, MPI, cx
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.rank, self.comm.size
        self.notes: list[str] = []

        cx.init()
        self.peers: list[Any] = []
        wanted = split_list(args.peers)
        for name in wanted:
            if name == "mpi4py":
                self.peers.append(Mpi4pyPeer(self.comm.Dup()))
            elif name == "gloo":
                why = gloo_unavailable()
                if why:
                    self.notes.append(f"gloo: {why}")
                else:
                    local = cx.world().local_size == self.size
                    self.peers.append(GlooPeer(self.comm, local_only=local))
            else:
                raise SystemExit(f"collex.bench: unknown peer {name!r} (known: mpi4py, gloo)")
        self.peer_names = [p.name for p in self.peers]

    # ---- measurement ----

    def timed_together(self, fns) -> list[float]:
        a = self.args
        return timed_together(self.comm, fns, a.warmup, a.iters, a.repeats)

    def bandwidth_probe(self, nbytes: int):
        """A call that measures this rank's memory bandwidth at a working set of
        `nbytes` (copy and add, bytes read+written per second; the larger), to take
        turns with the libraries' repeats, and the function that turns its samples
        into the row's bandwidth: their median on each rank, the slowest rank's.
        Measured in the same minutes as the collectives it bounds, the limit drifts
        with the shared host as they do, instead of once per size at another time."""
        samples: list[float] = []

        def probe() -> None:
            samples.append(max(self.cx.memory_bandwidth(nbytes, 1)))

        def bandwidth() -> float:
            return self.comm.allreduce(statistics.median(samples), op=self.MPI.MIN)

        return probe, bandwidth

    def arrays(self, coll: str, count: int, dt: np.dtype, op: str, inplace: bool, root: int):
        """Fresh inputs (and an output array unless in place) for one peer's turn."""
        p = self.size
        if coll == "broadcast":
            x = rank_input(coll, count, dt, root, op) if self.rank == root else np.zeros(count, dt)
            return x, None
        if coll == "allgather":
            return rank_input(coll, count // p, dt, self.rank, op), np.zeros((p, count // p), dt)
        x = rank_input(coll, count, dt, self.rank, op)
        if coll == "reduce_scatter":
            return x, np.zeros(count // p, dt)
        return x, (None if inplace else np.zeros(count, dt))

    def prepare(self, peer, coll, count, dt, op, algo, inplace, root) -> tuple | None:
        """One peer's call for a row, with its arrays: (call, result, x, row), or
        None when the peer cannot make it (alike on every rank)."""
        x, out = self.arrays(coll, count, dt, op, inplace, root)
        if self.args.symmetric and peer.name == "collex":
            x, out = (None if a is None else self.symmetric_copy(peer.comm, a) for a in (x, out))
        row = Row(coll, x, out, op if coll in REDUCING else "sum", root, algo)
        try:
            fn, result = peer.make(row)
            if peer.name != "collex":
                fn()  # a peer library that refuses this call fails alike on every rank
        except NotSupported:
            return None
        except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
            note = f"{peer.name} failed on {coll} {dt.name}: {type(e).__name__}: {str(e).splitlines()[0]}"
            if note not in self.notes:
                self.notes.append(note)
                if self.rank == 0:
                    print(f"note: {note}", file=sys.stderr)
            return None
        return fn, result, x, row

    def measure(self, peers, coll, count, dt, op, algo, inplace, root) -> tuple[dict, float | None]:
        """Each peer's time for a row (None for a peer that cannot make it), the
        peers' repeats taking turns, and whether its result was right; and the
        memory bandwidth measured in turns with them (None with --no-limit)."""
        prepared = {p.name: self.prepare(p, coll, count, dt, op, algo, inplace, root) for p in peers}
        ready = {name: made for name, made in prepared.items() if made is not None}
        parts = None
        if self.args.breakdown and "collex" in ready:
            fn, *rest = ready["collex"]
            # Counted from the timed repeats on: an array that moves onto shared
            # pages does so on its fourth call, the first after the warm-up.
            skip = self.args.warmup + (SAMPLING_CALLS if self.args.iters <= 0 else 0)
            parts = Breakdown(fn, skip)
            ready["collex"] = (parts, *rest)
        calls = [made[0] for made in ready.values()]
        bandwidth = None
        if not self.args.no_limit:
            probe, bandwidth = self.bandwidth_probe(count * dt.itemsize)
            calls.append(probe)
        times = dict(zip(ready, self.timed_together(calls)))
        results: dict[str, dict[str, Any] | None] = dict.fromkeys(prepared)
        for name, (fn, result, x, row) in ready.items():
            # Repeated in-place reductions compound; check those on a fresh call.
            if inplace and coll in ("allreduce", "reduce"):
                x[...] = self.arrays(coll, count, dt, op, inplace, root)[0]
                fn()
            got = result()
            nbytes = count * dt.itemsize
            wrong = 0
            if coll != "reduce" or self.rank == root:
                if self.args.plant_wrong and name == "collex" and self.rank == 0 and got.size:
                    got.reshape(-1)[0] += 1
                want = expected(coll, count, dt, self.size, self.rank, row.op, root)
                wrong = count_wrong(got, want, row.op)
            seconds = times[name]
            results[name] = {
                "time_us": seconds * 1e6,
                "algbw": nbytes / seconds / 1e9,
                "busbw": busbw(coll, nbytes, seconds, self.size),
                "wrong": self.comm.allreduce(wrong),
            }
        if parts is not None and results["collex"] is not None:
            results["collex"]["breakdown"] = self.comm.allgather(parts.finish())
        return results, (bandwidth() if bandwidth else None)

    @staticmethod
    def symmetric_copy(comm, a: np.ndarray) -> np.ndarray:
        s = comm.empty(a.shape, a.dtype)  # collective: every rank makes the same arrays
        s[...] = a
        return s

    # ---- the sweep ----

    def plan(self) -> list[tuple]:
        a = self.args
        sizes = sweep(parse_size(a.minbytes), parse_size(a.maxbytes), a.stepfactor)
        modes = {"0": [False], "1": [True], "both": [False, True]}[a.inplace]
        items = []
        import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy

        from collex import SUPPORTED_DTYPES

        for transport in split_list(a.transport):
            for coll in split_list(a.collectives):
                if coll not in COLLECTIVES:
                    raise SystemExit(
                        f"collex.bench: unknown collective {coll!r} (known: {', '.join(COLLECTIVES)})"
                    )
                for dname in split_list(a.dtype):
                    dt = np.dtype(ml_dtypes.bfloat16) if dname == "bfloat16" else np.dtype(dname)
                    if dt not in SUPPORTED_DTYPES:
                        raise SystemExit(f"collex.bench: unsupported dtype {dname!r}")
                    ops = split_list(a.op) if coll in REDUCING else ["-"]
                    for op in ops:
                        if op == "avg" and dt.kind not in "f" and dt.name != "bfloat16":
                            continue
                        algos = split_list(a.algo) if coll in WITH_ALGO else [FIXED_ALGO[coll]]
                        for algo in algos:
                            for inplace in (
                                modes if coll in ("allreduce", "reduce") else [coll == "broadcast"]
                            ):
                                for s in sizes:
                                    items.append((transport, coll, dt, op, algo, inplace, s))
        return items

    def run(self) -> int:
        a = self.args
        items = self.plan()
        table = Table(self.peer_names) if self.rank == 0 else None
        progress = Progress(len(items), enabled=self.rank == 0 and not a.no_progress)
        if self.rank == 0:
            print(
                f"collex.bench: {self.size} ranks, {len(items)} rows; times are medians of {a.repeats} "
                f"repeats, the slowest rank's; kernels {self.cx.kernel_isa()}, large streaming copies "
                f"{self.cx._core.kernel_copy_loop()} (COLLEX_COPY_LOOP)"
            )
            for n in self.notes:
                print(f"note: {n}")
        comms: dict[str, Any] = {}
        rows = []
        for transport, coll, dt, op, algo, inplace, s in items:
            if transport not in comms:
                os.environ["COLLEX_TRANSPORT"] = transport
                comms[transport] = c = self.cx.Communicator(self.comm)
                if c.shared_memory:
                    # How mid-size all-reduces, broadcasts and all-gathers move decides
                    # their times, so a result says how that was chosen (and, at the
                    # end, what was chosen).
                    forced = os.environ.get("COLLEX_MIDSIZE_COPY", "auto")
                    how = (
                        "take whichever way (streamed through the shared slots, or read in one "
                        "copy) timed faster while running"
                        if forced == "auto"
                        else f"take one way: COLLEX_MIDSIZE_COPY={forced}"
                    )
                    note = f"{transport}: mid-size all-reduces, broadcasts and all-gathers {how}"
                    self.notes.append(note)
                    if self.rank == 0:
                        print(f"note: {note}")
            count = count_for(coll, s, dt.itemsize, self.size)
            nbytes = count * dt.itemsize
            root = a.root
            algo_arg = algo if coll in WITH_ALGO else "auto"
            everyone = [CollexPeer(comms[transport]), *self.peers]
            peers, bw = self.measure(everyone, coll, count, dt, op, algo_arg, inplace, root)
            mine = peers.pop("collex")
            limit = None
            if bw is not None:
                t = limit_seconds(coll, nbytes, self.size, bw)
                limit = {
                    "time_us": t * 1e6,
                    "fraction": t / (mine["time_us"] * 1e-6),
                    "busbw": busbw(coll, nbytes, t, self.size),
                    "memory_GBps": bw / 1e9,
                }
            row = {
                "collective": coll, "dtype": dt.name, "op": op, "algo": algo, "inplace": inplace,
                "transport": transport, "ranks": self.size, "bytes": nbytes, "count": count,
                "symmetric": bool(a.symmetric),
                "collex": mine, "peers": peers,
                "speedup": {n: (r["time_us"] / mine["time_us"]) if r else None for n, r in peers.items()},
                "limit": limit,
            }  # fmt: skip
            rows.append(row)
            progress.step(f"{coll} {dt.name} {format_size(nbytes)}")
            if table:
                progress.close()
                table.add(row)
        progress.close()
        for transport, c in comms.items():
            if c.shared_memory:
                note = f"{transport}: mid-size copies at the end: {c.copy_ways()}"
                self.notes.append(note)
                if self.rank == 0:
                    print(f"note: {note}")
        wrong = sum(r["collex"]["wrong"] for r in rows)
        if self.rank == 0:
            self.outputs(rows)
            if wrong:
                print(f"collex.bench: {wrong} wrong elements in collex results (see #wrong)", file=sys.stderr)
        for p in self.peers:
            if hasattr(p, "close"):
                p.close()
        self.cx.finalize()
        return 1 if wrong else 0

    def outputs(self, rows: list[dict[str, Any]]) -> None:
        a = self.args
        meta = {"machine": machine_info(self.MPI), "command": " ".join(sys.argv), "ranks": self.size,
                "peers": self.peer_names, "notes": self.notes}  # fmt: skip
        if a.json:
            write_json(a.json, meta, rows)
        if a.csv:
            write_csv(a.csv, self.peer_names, rows)
        if a.plot:
            title = f"{meta['machine']['cpu']} - {self.size} ranks"
            err = plot(a.plot, self.peer_names, rows, title)
            if err:
                print(f"note: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.exit(Bench(args).run())
