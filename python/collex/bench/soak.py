"""mpirun -n N python -m collex.bench.soak [--minutes M | --ops K] [--seed S]:
a long, seeded random mix of every collective and point-to-point, over two
communicators at once, every result checked, memory and file descriptors watched.

Every rank draws the same sequence of operations from the seed: the collective,
the communicator (the world, or a split holding every rank in reverse order), the
size (a few elements to a few MiB), dtype, op, root, algorithm, and how many
asynchronous operations to leave pending before waiting (up to 6, on both
communicators at once). Inputs are small integers drawn from the operation's seed
for every rank at once (rank r's is row r), so every rank computes each expected
result with NumPy and every reduction is exact.

After a warm-up (every collective at the largest size, every algorithm, on both
communicators), the resident memory (each rank's proportional share: Pss) and
the open file descriptors are recorded; at the end they must be within 10 % (and 2 descriptors) of that.
Prints ops/s and the checks; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

import numpy as np

DTYPES = ("float32", "float64", "float16", "bfloat16", "int32", "int64", "int8", "uint8")
OPS = ("sum", "prod", "min", "max", "avg")


def np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def everyones_inputs(seed: int, size: int, shape: tuple, dtype: str, op: str) -> np.ndarray:
    """Every rank's input for an operation, row r being rank r's: small integers,
    so that every reduction of up to 4 ranks is exact in every dtype (sums of
    |v| <= 3 fit even bfloat16), and products of factors 1, 2 (or -1) stay small.
    Drawn for all ranks at once and as int8 (every dtype holds them exactly):
    drawing and widening them rank by rank took more time than the collectives."""
    rng = np.random.default_rng(seed)
    if op == "prod":
        return rng.choice(np.array([1, 2] if dtype == "uint8" else [-1, 1, 2], np.int8), size=(size, *shape))
    return rng.integers(0 if dtype == "uint8" else -3, 4, size=(size, *shape), dtype=np.int8)


def reduction_of(everyone: np.ndarray, op: str) -> np.ndarray:
    """What the rows of `everyone` (everyones_inputs) reduce to with `op`, in float64."""
    stack = everyone.astype(np.float64)
    if op == "sum":
        return stack.sum(0)
    if op == "prod":
        return stack.prod(0)
    if op == "min":
        return stack.min(0)
    if op == "max":
        return stack.max(0)
    return stack.sum(0) / len(everyone)


def matches(got: Any, want: np.ndarray, dtype: str, op: str) -> bool:
    """Exact, except an average's one rounding to the dtype."""
    got = np.asarray(got).astype(np.float64)
    if got.shape != want.shape:
        return False
    if op == "avg":
        tol = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 1e-6, "float64": 1e-12}[dtype]
        return bool(np.allclose(got, want, rtol=tol, atol=tol))
    return bool((got == want).all())


def return_freed_memory() -> None:
    """Makes glibc hand every large freed block back to the system (a fixed mmap
    threshold instead of one that grows after frees), so that the resident size
    between operations measures what is kept, not what malloc holds in reserve."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: the check is then looser than it reads


def resident_bytes() -> int:
    """This process's proportional share of resident memory (Pss): a page that n
    processes map counts 1/n in each. The resident set size would count an array
    moved onto shared pages (README, "Shared pages") once in its rank and again
    in every peer that maps it, as growth, though the node holds it once."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Soak:
    """One rank's part: draws operations, issues them, checks them when waited."""

    def __init__(self, cx: Any, seed: int):
        self.cx = cx
        self.world = cx.world()
        self.size = self.world.size
        # The second communicator: every rank, in reverse order (its rank r is world rank size-1-r).
        self.reverse = self.world.split(0, key=self.size - 1 - self.world.rank)
        self.rng = np.random.default_rng(seed)
        self.pending: list = []  # (check, description)
        self.ops = 0
        self.checked = 0
        self.failures: list = []
        self.counts: dict = {}
        # One input and one output buffer per operation that may be pending at once.
        # Filled now, so that their pages are resident before the baseline: the
        # warm-up reaches only the slots it uses, and a slot first touched in the
        # mix would read as growth.
        most = 8 * self.largest  # bytes
        self.pool = [(np.ones(most, np.uint8), np.ones(most * self.size, np.uint8)) for _ in range(8)]

    def warm_up(self) -> None:
        """Every collective at the largest size, on both communicators, with every
        algorithm and the deepest async mix: buffers that grow to the largest
        call seen (staging, slots, pools) reach their size before the baseline.
        Then every dtype and op of every collective once: the first use of each
        faults in its code (collex's kernels, NumPy's loops, ml_dtypes), about
        10 MiB of resident pages that are no leak."""
        for comm in (self.world, self.reverse):
            for kind in ("allreduce", "broadcast", "reduce", "allgather", "reduce_scatter", "sendrecv"):
                for dtype in DTYPES:
                    for op in OPS:
                        if op == "avg" and dtype.startswith(("int", "uint")):
                            continue
                        for n in (1000, 50000):
                            self.issue((kind, dtype, op, n, comm, "auto", 0, 7, False, True))
                    self.settle()
            for kind in ("allreduce", "broadcast", "reduce", "allgather", "reduce_scatter", "sendrecv"):
                for algo in ("auto", "ring", "tree", "direct"):
                    for _ in range(6):
                        async_op = kind != "sendrecv"
                        self.issue((kind, "float64", "sum", self.largest, comm, algo, 0, 7, async_op, True))
                    self.settle()

    largest = 300000  # elements of the largest operation (2.3 MiB of float64)

    def draw_op(self) -> tuple:
        rng = self.rng
        kind = str(
            rng.choice(
                ["allreduce", "broadcast", "reduce", "allgather", "reduce_scatter", "sendrecv", "barrier"]
            )
        )
        dtype = str(rng.choice(DTYPES))
        ops = [o for o in OPS if not (o == "avg" and dtype.startswith(("int", "uint")))]
        op = str(rng.choice(ops))
        n = int(
            rng.choice(
                [rng.integers(0, 64), rng.integers(64, 20000), rng.integers(20000, self.largest)],
                p=[0.5, 0.35, 0.15],
            )
        )
        comm = self.world if rng.random() < 0.5 else self.reverse
        algo = str(rng.choice(["auto", "auto", "ring", "tree", "direct"]))
        root = int(rng.integers(0, self.size))
        seed = int(rng.integers(0, 2**31))
        async_op = bool(rng.random() < 0.5) and kind != "sendrecv"
        inplace = bool(rng.random() < 0.5)
        return kind, dtype, op, n, comm, algo, root, seed, async_op, inplace

    def issue(self, drawn: tuple | None = None) -> None:
        """Issues one operation (`drawn`, or the next of the seeded mix), and
        settles the pending ones when the mix says so."""
        kind, dtype, op, n, comm, algo, root, seed, async_op, inplace = drawn or self.draw_op()
        if len(self.pending) == len(self.pool):
            self.settle()
        r, size = comm.rank, self.size
        rows = max(size, n - n % size) if kind == "reduce_scatter" else n
        # Arrays come from a pool reused op after op, as a training loop reuses its
        # buffers: memory that grows then is collex's, not new arrays' (MPI keeps
        # state per buffer address it has seen).
        x, out_bytes = self.pool[len(self.pending)]
        x = x[: rows * np_dtype(dtype).itemsize].view(np_dtype(dtype))
        everyone = everyones_inputs(seed, size, (rows,), dtype, op)
        x[...] = everyone[r]

        def out_of(shape: tuple) -> np.ndarray:
            return out_bytes[: int(np.prod(shape)) * x.itemsize].view(x.dtype).reshape(shape)

        on = "world" if comm is self.world else "reverse"
        label = f"op {self.ops}: {kind} n={n} {dtype} {op} root={root} algo={algo} on {on}"
        check: Callable[[Any], bool]
        if kind == "allreduce":
            out = None if inplace else out_of((n,))
            res = comm.allreduce(x, op=op, out=out, algo=algo, async_op=async_op)
            want = reduction_of(everyone, op)
            check = lambda got: matches(got, want, dtype, op)  # noqa: E731
        elif kind == "broadcast":
            res = comm.broadcast(x, root=root, algo=algo, async_op=async_op)
            want = everyone[root].astype(np.float64)
            check = lambda got: matches(got, want, dtype, "sum")  # noqa: E731
        elif kind == "reduce":
            out = None if inplace else out_of((n,))
            res = comm.reduce(x, op=op, root=root, out=out, async_op=async_op)
            want = reduction_of(everyone, op) if r == root else x.astype(np.float64)
            kept = x.copy()
            if r == root:
                check = lambda got: matches(got, want, dtype, op)  # noqa: E731
            else:
                check = lambda got: bool((x == kept).all())  # noqa: E731
        elif kind == "allgather":
            res = comm.allgather(x, out=out_of((size, n)), async_op=async_op)
            want = everyone.astype(np.float64)
            check = lambda got: matches(got, want, dtype, "sum")  # noqa: E731
        elif kind == "reduce_scatter":
            block = rows // size
            res = comm.reduce_scatter(x, op=op, out=out_of((block,)), async_op=async_op)
            want = reduction_of(everyone, op)[r * block : (r + 1) * block]
            check = lambda got: matches(got, want, dtype, op)  # noqa: E731
        elif kind == "sendrecv":
            got = out_of((n,))
            comm.sendrecv(x, (r + 1) % size, got, (r - 1) % size, tag=root)
            res = got
            want = everyone[(r - 1) % size].astype(np.float64)
            check = lambda got: matches(got, want, dtype, "sum")  # noqa: E731
        else:
            res = comm.barrier(async_op=async_op)
            check = lambda got: True  # noqa: E731
        self.ops += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.pending.append((res, async_op, check, label))
        # Leave up to 6 operations pending (async ones keep running meanwhile).
        if drawn is None and len(self.pending) > int(self.rng.integers(0, 7)):
            self.settle()

    def settle(self) -> None:
        for res, async_op, check, label in self.pending:
            got = res.wait() if async_op else res
            self.checked += 1
            if not check(got):
                self.failures.append(label)
        self.pending.clear()


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collex.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=None, help="run this long (default: --ops)")
    p.add_argument("--ops", type=int, default=3000, help="operations to run when --minutes is not given")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    import collex as cx  # noqa: I001  (first: it sets MPI's defaults before MPI starts)
    from mpi4py import MPI

    return_freed_memory()
    cx.init()
    world = MPI.COMM_WORLD
    soak = Soak(cx, args.seed)
    soak.warm_up()
    soak.settle()
    base_rss, base_fds = resident_bytes(), open_fds()
    # The mix proper: counted and timed from here.
    soak.ops, soak.checked, soak.counts = 0, 0, {}
    start = time.monotonic()
    deadline = None if args.minutes is None else start + 60 * args.minutes
    go = True
    while go:
        soak.issue()
        # Every rank decides alike whether to go on (rank 0's clock decides).
        if deadline is None:
            go = soak.ops < args.ops
        elif soak.ops % 100 == 0:
            go = world.bcast(time.monotonic() < deadline if world.rank == 0 else None, root=0)
    soak.settle()
    seconds = time.monotonic() - start
    rss, fds = resident_bytes(), open_fds()
    grew = rss > 1.10 * base_rss
    leaked_fds = fds > base_fds + 2
    failures = world.allgather(len(soak.failures))
    problems = world.allreduce(int(grew) + int(leaked_fds))
    for label in soak.failures[:10]:
        print(f"FAIL [rank {world.rank}] {label}", flush=True)
    if grew or leaked_fds:
        print(f"FAIL [rank {world.rank}] resident {base_rss} -> {rss} B, fds {base_fds} -> {fds}", flush=True)
    rows = world.gather((rss, base_rss, fds, base_fds), root=0)
    if world.rank == 0:
        mix = ", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items()))
        rate = soak.ops / seconds
        print(f"soak: {soak.ops} operations on {soak.size} ranks in {seconds:.1f} s, {rate:.0f} ops/s: {mix}")
        print(f"soak: {soak.checked} results checked, {sum(failures)} wrong")
        for q, (r_now, r_base, f_now, f_base) in enumerate(rows):
            print(
                f"soak: rank {q}: resident {r_base / 2**20:.1f} MiB after warm-up, "
                f"{r_now / 2**20:.1f} at the end, file descriptors {f_base} -> {f_now}"
            )
        print(f"soak: {'FAILED' if sum(failures) or problems else 'passed'}", flush=True)
    cx.finalize()
    return 1 if sum(failures) or problems else 0


if __name__ == "__main__":
    sys.exit(main())
