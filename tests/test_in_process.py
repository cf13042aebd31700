"""The message algorithms (ring, tree, dissemination) on ranks that are threads
of this process (collex._core._run_in_threads over the in-process transport):
their own offer and run code, schedules and executor, as a communicator runs
them, checked against NumPy without mpirun. Values are small integers, so every
result is exact whatever order a schedule combines ranks in."""

import numpy as np
import pytest
from collex import _core
from collex._dtypes import CODES

CHUNK = 64  # bytes: small enough that every schedule pipelines several chunks
SENTINEL = 77  # what outputs hold before the call

CASES = [
    ("ring", "allreduce"),
    ("tree", "allreduce"),
    ("ring", "broadcast"),
    ("tree", "broadcast"),
    ("tree", "reduce"),
    ("ring", "allgather"),
    ("ring", "reduce_scatter"),
]
REDUCE = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}


def inputs(collective, size, count, dtype, op):
    rng = np.random.default_rng(size * 1000 + count)
    n = count * size if collective == "reduce_scatter" else count
    high = 3 if op == "prod" else 50  # products of small integers stay exact
    return [rng.integers(1, high, n).astype(dtype) for _ in range(size)]


def expected(collective, xs, op, root, rank, size, count):
    if collective == "broadcast":
        return xs[root]
    if collective == "allgather":
        return np.concatenate(xs)
    total = xs[0].copy()
    for x in xs[1:]:
        total = REDUCE["sum" if op == "avg" else op](total, x)
    if op == "avg":
        total = total / size
    if collective == "reduce_scatter":
        return total[rank * count : (rank + 1) * count]
    return total


def run(algo, collective, size, count, dtype=np.float64, op="sum", root=0):
    xs = inputs(collective, size, count, dtype, op)
    ins = [x.copy() for x in xs]
    out_count = count * size if collective == "allgather" else count
    outs = [np.full(out_count, SENTINEL, dtype) for _ in range(size)]
    _core._run_in_threads(
        algo,
        collective,
        [a.ctypes.data for a in ins],
        [o.ctypes.data for o in outs],
        count,
        CODES[np.dtype(dtype)],
        _core.OPS[op],
        root,
        CHUNK,
        10.0,
    )
    for r in range(size):
        got = ins[r] if collective == "broadcast" else outs[r]
        if collective == "reduce" and r != root:
            assert np.all(outs[r] == SENTINEL), f"rank {r}: a non-root's out was written"
            continue
        want = expected(collective, xs, op, root, r, size, count)
        assert np.array_equal(got, want), f"{algo} {collective} rank {r}/{size} count={count}"
        if collective != "broadcast":
            assert np.array_equal(ins[r], xs[r]), f"rank {r}: the input changed"


@pytest.mark.parametrize("algo,collective", CASES)
# One rank is the communicator's own case (its input is the result): no algorithm runs.
@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("count", [0, 1, 7, 100])
def test_every_rank_gets_numpys_result(algo, collective, size, count):
    root = size - 1 if collective in ("broadcast", "reduce") else 0
    run(algo, collective, size, count, root=root)


@pytest.mark.parametrize("algo,collective", [c for c in CASES if c[1] not in ("broadcast", "allgather")])
@pytest.mark.parametrize("op", ["prod", "min", "max", "avg"])
def test_every_op(algo, collective, op):
    run(algo, collective, 5, 33, op=op)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.float16, np.float32])
def test_every_dtype(dtype):
    for algo, collective in CASES:
        run(algo, collective, 3, 19, dtype=dtype)


@pytest.mark.parametrize("size", [2, 3, 6])
def test_dissemination_barrier_completes(size):
    run("dissemination", "barrier", size, 0, dtype=np.uint8)


@pytest.mark.parametrize(
    "algo,collective,why",
    [
        ("tree", "allgather", "the tree has no all-gather"),
        ("ring", "reduce", "the ring has no reduce"),
        ("dissemination", "allreduce", "dissemination runs barriers only"),
    ],
)
def test_an_algorithm_that_cannot_run_a_call_declines_with_its_reason(algo, collective, why):
    with pytest.raises(ValueError, match=why):
        run(algo, collective, 3, 4)
