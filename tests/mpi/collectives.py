"""Every collective x algorithm x dtype x op x edge size against NumPy, in place
and out of place, plus async handles and point-to-point, in groups of cases
that tests/test_collectives.py selects one by one.

usage: collectives.py edge|large [GROUPS]
  edge:   sizes 0, 1, p-1, p+1 and one spanning many chunks (run with a small
          COLLEX_CHUNK_BYTES so that "many chunks" stays cheap)
  large:  buffers of a few hundred kilobytes to megabytes with the default chunking
  GROUPS: comma-separated, of allreduce:ALGO, broadcast:ALGO (ALGO: ring, tree,
          direct, hier), reduce, allgather, reduce_scatter, extras; all by default.
          Rank 0 prints each group's counts on a line "GROUPS {json}".
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import sys
from functools import reduce as fold

import collex as cx
import ml_dtypes
import numpy as np
from _harness import Cases, identical_on_all_ranks

DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64]
OPS = ["sum", "prod", "min", "max", "avg"]
UFUNC = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}
RTOL = {np.float16: 2e-3, ml_dtypes.bfloat16: 1e-2, np.float32: 1e-6, np.float64: 1e-12}

cx.init()
rank, size = cx.rank(), cx.size()
# Message algorithms always; "direct" when the ranks share a window (shared memory),
# "hier" on several (pretend) nodes; a choice that cannot run declines to the tuner's.
ALGOS = ("ring", "tree", "direct", "hier")
mode = sys.argv[1] if len(sys.argv) > 1 else "edge"
ALL_GROUPS = [f"allreduce:{a}" for a in ALGOS] + [f"broadcast:{a}" for a in ALGOS]
ALL_GROUPS += ["reduce", "allgather", "reduce_scatter", "extras"]
groups = sys.argv[2].split(",") if len(sys.argv) > 2 else ALL_GROUPS
unknown = set(groups) - set(ALL_GROUPS)
if unknown:
    raise SystemExit(f"collectives.py: unknown groups {sorted(unknown)}; known: {ALL_GROUPS}")
cases = Cases(f"collectives[{mode}]")

if mode == "edge":
    SIZES = sorted({0, 1, max(size - 1, 0), size + 1, 2500})
    DTYPES_HERE, OPS_HERE = DTYPES, OPS
else:
    # 150001 elements: staged reductions and streamed broadcasts/all-gathers with a
    # partial last chunk on a few ranks; 2**20 + 3: reading peers' buffers.
    SIZES = [150_001, (1 << 20) + 3]
    DTYPES_HERE, OPS_HERE = [np.float32, ml_dtypes.bfloat16, np.int32], ["sum", "max", "avg"]


def is_float(dt) -> bool:
    return np.dtype(dt).kind == "f" or np.dtype(dt) == np.dtype(ml_dtypes.bfloat16)


def ops_for(dt):
    return [op for op in OPS_HERE if op != "avg" or is_float(dt)]


def data(n: int, dt, r: int, op: str, salt: int, shape=None) -> np.ndarray:
    """Rank r's input: small integers, so that every dtype holds sums and products exactly."""
    rng = np.random.default_rng([salt, r, n])
    unsigned = np.dtype(dt).kind == "u"
    if op == "prod":
        vals = rng.choice(np.array([1, 2] if unsigned else [1, 2, -1], np.int8), size=n)
    else:
        vals = rng.integers(0 if unsigned else -3, 4, size=n, dtype=np.int8)
    a = vals.astype(dt)
    return a.reshape(shape) if shape is not None else a


def reference(inputs: list, dt, op: str) -> np.ndarray:
    if op == "gather":
        return np.stack(inputs)
    if op == "avg":
        total = np.add.reduce(np.stack([x.astype(np.float64) for x in inputs]), axis=0)
        return (total / len(inputs)).astype(dt)
    return fold(lambda a, b: UFUNC[op](a, b).astype(dt), inputs)


# From this many elements, a case's inputs are made once and rotated (below).
ROTATE_FROM = 4096
_inputs: dict = {}  # (n, dtype, whether for products): every rank's input
_results: dict = {}  # (n, dtype, op): this rank's input and the expected result


def case_data(n: int, dt, op: str, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """(this rank's input, the expected result) of a case: `op` a reduction, or
    "gather" for every rank's input stacked. Every rank makes all ranks' inputs to
    know the result, which on 5 ranks sharing 2 cores cost more than the calls
    tested. So large inputs and their result are made once per (n, dtype, op) and
    rotated by an amount that changes with the salt: each case still has its own
    data (a result left from the case before is wrong) and, the reduction being
    elementwise, the rotated result is the result of the rotated inputs."""
    if n < ROTATE_FROM:
        inputs = [data(n, dt, r, op, salt) for r in range(size)]
        return inputs[rank], reference(inputs, dt, op)
    key = (n, np.dtype(dt), op)
    if key not in _results:
        made_as = (n, np.dtype(dt), op == "prod")  # data() tells only products apart
        if made_as not in _inputs:
            _inputs[made_as] = [data(n, dt, r, op, 0) for r in range(size)]
        inputs = _inputs[made_as]
        _results[key] = (inputs[rank], reference(inputs, dt, op))
    mine, want = _results[key]
    shift = salt * 7919 % n
    return np.roll(mine, shift), np.roll(want, shift, axis=-1)


def same(got: np.ndarray, want: np.ndarray, dt, op: str) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if op == "avg":
        return np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=RTOL[dt], atol=RTOL[dt])
    return np.array_equal(got, want)


def mismatch(got, want) -> str:
    g, w = np.asarray(got).ravel(), np.asarray(want).ravel()
    if g.shape != w.shape:
        return f"shape {np.asarray(got).shape} != {np.asarray(want).shape}"
    bad = np.flatnonzero(g != w)
    i = int(bad[0]) if bad.size else 0
    first = (g[i], w[i]) if g.size else (None, None)
    return f"{bad.size} elements differ, first at {i}: got {first[0]} want {first[1]}"


def expect(label: str, ok: bool, got, want) -> None:
    """Checks one case, describing the difference only when there is one."""
    cases.check(label, ok, "" if ok else mismatch(got, want))


def allreduce_cases(algo: str) -> None:
    salt = 1000
    for dt in DTYPES_HERE:
        name = np.dtype(dt).name
        for n in SIZES:
            for op in ops_for(dt):
                for inplace in (True, False):
                    salt += 1
                    mine, want = case_data(n, dt, op, salt)
                    x = mine.copy()
                    label = f"allreduce {algo} {name} {op} n={n} {'inplace' if inplace else 'out'}"
                    if inplace:
                        got = cx.allreduce(x, op=op, algo=algo)
                        ok = got is x
                    else:
                        out = np.full_like(x, 7)
                        got = cx.allreduce(x, op=op, out=out, algo=algo)
                        ok = got is out and np.array_equal(x, mine)
                    expect(label, ok and same(got, want, dt, op), got, want)
                    cases.check(label + " identical", identical_on_all_ranks(got))
    s = cx.allreduce(np.float64(0) + np.ones(()), algo=algo)
    cases.check(f"allreduce {algo} 0-d", s.shape == () and s == size)
    # Floats with rounding: float32 accumulation, bitwise identical everywhere, deterministic.
    for dt in (np.float16, ml_dtypes.bfloat16, np.float32):
        everyone = [np.random.default_rng([99, r]).standard_normal(3001).astype(dt) for r in range(size)]
        want = np.sum([e.astype(np.float64) for e in everyone], axis=0)
        got = cx.allreduce(everyone[rank].copy(), algo=algo)
        err = np.abs(got.astype(np.float64) - want).max() if got.size else 0.0
        tol = {np.float16: 0.02, ml_dtypes.bfloat16: 0.15, np.float32: 1e-5}[dt] * size
        cases.check(f"random {np.dtype(dt).name} {algo} accuracy", err <= tol, f"max error {err} > {tol}")
        cases.check(f"random {np.dtype(dt).name} {algo} identical", identical_on_all_ranks(got))
        again = cx.allreduce(everyone[rank].copy(), algo=algo)
        cases.check(f"random {np.dtype(dt).name} {algo} deterministic", np.array_equal(again, got))


def broadcast_cases(algo: str) -> None:
    salt = 2000
    for dt in DTYPES_HERE:
        name = np.dtype(dt).name
        for n in SIZES:
            for root in sorted({0, size - 1}):
                salt += 1
                src = case_data(n, dt, "gather", salt)[1][root]  # the root's input
                x = src.copy() if rank == root else np.zeros_like(src)
                got = cx.broadcast(x, root=root, algo=algo)
                ok = got is x and np.array_equal(x, src)
                expect(f"broadcast {algo} {name} n={n} root={root}", ok, x, src)


def reduce_cases() -> None:
    salt = 3000
    for dt in DTYPES_HERE:
        name = np.dtype(dt).name
        for n in SIZES:
            for op in ops_for(dt):
                for root in sorted({0, size - 1}):
                    for inplace in (True, False):
                        salt += 1
                        mine, want = case_data(n, dt, op, salt)
                        x = mine.copy()
                        out = None if inplace else np.full_like(x, 7)
                        got = cx.reduce(x, op=op, root=root, out=out)
                        label = f"reduce {name} {op} n={n} root={root} {'inplace' if inplace else 'out'}"
                        if rank == root:
                            expect(label, same(got, want, dt, op), got, want)
                        else:
                            untouched = np.array_equal(x, mine) and (out is None or (out == 7).all())
                            cases.check(label + " untouched", untouched)


def allgather_cases() -> None:
    salt = 4000
    for dt in DTYPES_HERE:
        name = np.dtype(dt).name
        for n in SIZES:
            for with_out in (False, True):
                salt += 1
                mine, want = case_data(n, dt, "gather", salt)
                out = np.zeros((size, n), dt) if with_out else None
                got = cx.allgather(mine.copy(), out=out)
                ok = (out is None or got is out) and np.array_equal(got, want)
                expect(f"allgather {name} n={n} out={with_out}", ok, got, want)
    x = np.full((2, 3), rank + 1, np.float32)
    g = cx.allgather(x)
    cases.check(
        "allgather 2-d shape", g.shape == (size, 2, 3) and (g[:, 0, 0] == np.arange(1, size + 1)).all()
    )


def reduce_scatter_cases() -> None:
    salt = 5000
    for dt in DTYPES_HERE:
        name = np.dtype(dt).name
        for n in SIZES:
            for op in ops_for(dt):
                salt += 1
                mine, whole = case_data(n * size, dt, op, salt)
                want = whole[rank * n : (rank + 1) * n]
                x = mine.copy()
                got = cx.reduce_scatter(x, op=op)
                ok = same(got, want, dt, op) and np.array_equal(x, mine)
                expect(f"reduce_scatter {name} {op} n={n}", ok, got, want)
    x = np.ones((2 * size, 3), np.int32)
    r = cx.reduce_scatter(x)
    cases.check("reduce_scatter 2-d shape", r.shape == (2, 3) and (r == size).all())


# ---- symmetric buffers: every collective reads peers in place ----
def symmetric_buffers():
    for n in (3, 5000, 300001):  # staged, and read in place (above the slot size)
        ones = cx.empty(n, np.float32)
        assert ones.shape == (n,) and ones.dtype == np.float32 and ones.flags.c_contiguous
        ones[:] = rank + 1
        out = cx.zeros(n, np.float32)
        assert (out == 0).all()
        cx.allreduce(ones, out=out)
        assert (out == size * (size + 1) / 2).all() and (ones == rank + 1).all(), out[:3]
        cx.allreduce(ones, op="max")  # in place
        assert (ones == size).all()
        ones[:] = rank + 1
        red = cx.zeros(n, np.float32)
        cx.reduce(ones, root=size - 1, out=red)
        assert rank != size - 1 or (red == size * (size + 1) / 2).all()
        # In place at a root that peers write their reduced blocks into, while the
        # last rank's block is still to be read from it (root >= 2 on 3+ ranks).
        inplace = cx.empty(n, np.float32)
        inplace[:] = np.arange(n) % 7 + rank
        cx.reduce(inplace, root=size - 1)
        want = size * (np.arange(n) % 7) + size * (size - 1) / 2
        assert np.array_equal(inplace, want if rank == size - 1 else np.arange(n) % 7 + rank), inplace[:4]
        b = cx.empty((2, n), np.int64)
        b[:] = rank
        cx.broadcast(b, root=size - 1)
        assert (b == size - 1).all()
        g = cx.empty((size, n), np.float32)
        cx.allgather(ones, out=g)
        assert (g == np.arange(1, size + 1, dtype=np.float32)[:, None]).all()
        big = cx.empty(n * size, np.float64)
        big[:] = np.arange(n * size) + rank
        part = cx.reduce_scatter(big)
        want = size * np.arange(rank * n, (rank + 1) * n) + size * (size - 1) / 2
        assert np.array_equal(part, want)
    assert cx.empty(0, np.int8).size == 0 and cx.zeros((0, 3)).shape == (0, 3)
    # Mixed: a symmetric input with an ordinary output, and the reverse.
    sym = cx.empty(200000, np.float32)
    sym[:] = 1
    plain = np.full(200000, 1, np.float32)
    assert (cx.allreduce(sym, out=np.empty(200000, np.float32)) == size).all()
    assert (cx.allreduce(plain, out=cx.empty(200000, np.float32)) == size).all()
    # A reduce into a symmetric result at the root that the other ranks no longer
    # hold (their views of the segment are gone): the root's view decides how the
    # blocks are split, for every rank alike.
    kept = cx.empty(300001, np.float32)
    if rank != 0:
        del kept
        gc.collect()
    x = np.arange(300001, dtype=np.float32) % 11 + rank
    got = cx.reduce(x, root=0, out=kept if rank == 0 else None)
    want = size * (np.arange(300001, dtype=np.float32) % 11) + size * (size - 1) / 2
    assert rank != 0 or np.array_equal(got, want), got[:4]
    # ... and where the other ranks then put ordinary memory at the very addresses their
    # views had (as an allocator may): the root holds the segment still, but what lies
    # at those addresses now is each peer's own memory, to read as such, not the
    # segment's stale parts (-1 here) through the root's view.
    n = 300001
    kept = cx.empty(n, np.float32)
    # Without a shared window (MPI alone, a rank alone on its node) cx.empty gives an
    # ordinary array: every rank skips the case if any rank has one.
    if cx.allreduce(np.array([kept.base is not None], np.int32), op="min")[0] == 0:
        return
    kept[:] = -1
    at = kept.ctypes.data
    cx.barrier()  # every part holds -1 before any rank lets go of its view
    unmap = None
    if rank != 0:
        del kept
        gc.collect()
        memory, unmap = private_memory_at(at, n * 4)
        x = np.frombuffer(memory, np.float32, count=n)
    else:
        x = np.empty(n, np.float32)
    x[:] = np.arange(n) % 11 + rank
    got = cx.reduce(x, root=0, out=kept if rank == 0 else None)
    assert rank != 0 or np.array_equal(got, want), f"{np.count_nonzero(got != want)} wrong, first {got[:4]}"
    if unmap is not None:
        del x, memory
        unmap()


def private_memory_at(address, nbytes):
    """Private anonymous memory mapped exactly at `address` (which must be free):
    (a ctypes buffer over it, a function that unmaps it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    c_int = ctypes.c_int
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, c_int, c_int, c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    length = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    fixed_noreplace = 0x100000  # MAP_FIXED_NOREPLACE: fail rather than replace a mapping
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | fixed_noreplace
    got = libc.mmap(address, length, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
    assert got == address, f"could not map {length} B at {address:#x} (errno {ctypes.get_errno()}, got {got})"
    return (ctypes.c_char * length).from_address(address), lambda: libc.munmap(address, length)


# ---- async handles, in order with synchronous calls ----
def async_mix():
    xs = [np.full(1000 * (k + 1), rank + k, np.float64) for k in range(4)]
    works = [cx.allreduce(x, async_op=True) for x in xs]
    b = np.full(10, rank, np.int32)
    wb = cx.broadcast(b, root=size - 1, async_op=True)
    sync = cx.allreduce(np.ones(5, np.int64))  # queued behind the async ones
    assert (sync == size).all(), sync
    for k, w in enumerate(works):
        res = w.wait()
        assert res is xs[k] and w.done()
        assert (res == sum(r + k for r in range(size))).all(), (k, res[:3])
    assert (wb.wait() == size - 1).all()
    g = cx.allgather(np.array([rank]), async_op=True).wait()
    assert (g.ravel() == np.arange(size)).all()
    rs = cx.reduce_scatter(np.ones(size, np.float32), async_op=True).wait()
    assert rs.shape == (1,) and rs[0] == size
    red = cx.reduce(np.ones(3), root=0, async_op=True).wait()
    assert rank != 0 or (red == size).all()
    cx.barrier(async_op=True).wait()


# ---- point to point: a ring exchange ----
def ring_exchange():
    if size == 1:
        return
    right, left = (rank + 1) % size, (rank - 1) % size
    mine = np.arange(5000, dtype=np.float32) + rank
    got = np.zeros_like(mine)
    if rank % 2 == 0:
        cx.send(mine, right, tag=3)
        cx.recv(got, left, tag=3)
    else:
        cx.recv(got, left, tag=3)
        cx.send(mine, right, tag=3)
    assert (got == np.arange(5000, dtype=np.float32) + left).all()


def extras() -> None:
    cases.run("symmetric buffers", symmetric_buffers)
    cases.run("async mix", async_mix)
    cases.run("barrier", lambda: [cx.barrier() for _ in range(5)])
    cases.run("send/recv ring", ring_exchange)


RUN = {
    "reduce": reduce_cases,
    "allgather": allgather_cases,
    "reduce_scatter": reduce_scatter_cases,
    "extras": extras,
}
for group in groups:
    cases.group = group
    kind, _, algo = group.partition(":")
    if kind == "allreduce":
        allreduce_cases(algo)
    elif kind == "broadcast":
        broadcast_cases(algo)
    else:
        RUN[kind]()
cases.finish()
