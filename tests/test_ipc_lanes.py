"""The CUDA IPC collectives' protocol (csrc/collex/transport/cuda_ipc/lanes.h) on
its CPU stand-in: every (rank, lane) a thread (and, at the end, ranks as
processes, through collex's own Python path: tests/mpi/cuda_lanes_standin.py),
the staging buffers and flag words in host memory, the element arithmetic of
the CUDA kernels. These tests need no GPU: they check the rounds, lanes,
shares, sequence numbers and flags that the kernels run unchanged, against
NumPy combining the ranks in rank order with float32 accumulation for fp16/bf16."""

import re
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from collex import CollectiveTimeout, _core
from collex._dtypes import CODES, OPS
from collex.cuda.lanes import COLLECTIVES
from conftest import run_mpi
from hypothesis import given, settings
from hypothesis import strategies as st

DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64]
COMBINE = {"sum": np.add, "avg": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}


def addr(a):
    return a.__array_interface__["data"][0]


def rank_inputs(rng, ranks, count, dt):
    dt = np.dtype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return [rng.integers(info.min, info.max, count, dtype=dt, endpoint=True) for _ in range(ranks)]
    # Random values, so that a sum in another order, or rounded to fp16/bf16
    # after every rank instead of once, gives other bits; and a few NaNs, which
    # min and max must propagate.
    xs = [rng.standard_normal(count) for _ in range(ranks)]
    for x in xs:
        x[rng.random(count) < 0.01] = np.nan
    return [x.astype(dt) for x in xs]


def expected(inputs, op):
    dt = inputs[0].dtype
    acc_dt = np.dtype(np.float32) if dt in (np.float16, np.dtype(ml_dtypes.bfloat16)) else dt
    acc = inputs[0].astype(acc_dt)
    with np.errstate(over="ignore", invalid="ignore"):
        for x in inputs[1:]:
            acc = COMBINE[op](acc, x.astype(acc_dt))
        if op == "avg":
            acc = acc / acc_dt.type(len(inputs))
    return acc.astype(dt)


def run(
    calls, op="sum", lanes=1, staging_bytes=1 << 20, shots=2, timeout=30.0, absent_rank=-1, direct=False, **kw
):
    """The stand-in running `kind` over calls[i][r] (rank r's input of call i);
    every rank's outputs (unless given, new ones filled with 7: reduce leaves
    the others' so). direct: the ranks read each other's arrays in place."""
    kind, root, outputs = kw.get("kind", "allreduce"), kw.get("root", 0), kw.get("outputs")
    ranks = len(calls[0])
    x = calls[0][0]
    block = x.size // ranks if kind == "reduce_scatter" else x.size
    count = {"reduce_scatter": block, "allgather": ranks * block}.get(kind, x.size)
    if outputs is None:
        outputs = [[np.full(count, 7, x.dtype) for _ in call] for call in calls]
    _core._ipc_lanes(
        COLLECTIVES[kind], [[addr(x) for x in call] for call in calls],
        [[addr(y) for y in call] for call in outputs], block * x.itemsize, CODES[x.dtype], OPS[op],
        lanes=lanes, staging_bytes=staging_bytes, shots=shots, root=root, timeout=timeout,
        absent_rank=absent_rank, direct=direct,
    )  # fmt: skip
    return outputs


def wanted(kind, inputs, op, root, r):
    """What rank r's output holds after `kind` over every rank's input (None: untouched)."""
    ranks = len(inputs)
    if kind == "allreduce":
        return expected(inputs, op)
    if kind == "reduce":
        return expected(inputs, op) if r == root else None
    if kind == "reduce_scatter":
        block = inputs[0].size // ranks
        return expected([x[r * block : (r + 1) * block] for x in inputs], op)
    if kind == "allgather":
        return np.concatenate(inputs)
    return inputs[root]  # broadcast


def same(got, want):
    if want.dtype.kind == "f" or want.dtype == np.dtype(ml_dtypes.bfloat16):
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    else:
        np.testing.assert_array_equal(got, want)


def check(calls, outputs, op, kind="allreduce", root=0):
    for call, outs in zip(calls, outputs):
        for r, got in enumerate(outs):
            want = wanted(kind, call, op, root, r)
            if want is None:
                assert (got == 7).all(), f"reduce wrote rank {r}'s output, not the root's"
            else:
                same(got, want)
        if kind == "allreduce":  # every rank the same bits as rank 0
            assert all(o.tobytes() == outs[0].tobytes() for o in outs)


@settings(max_examples=80, deadline=None)
@given(
    ranks=st.integers(1, 8),
    lanes=st.integers(1, 5),
    shots=st.sampled_from([1, 2]),
    count=st.integers(0, 300),
    staging=st.integers(1, 24),
    dtype=st.sampled_from(DTYPES),
    op=st.sampled_from(list(COMBINE)),
    n_calls=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    direct=st.booleans(),
)
def test_every_rank_gets_numpys_rank_order_result(
    ranks, lanes, shots, count, staging, dtype, op, n_calls, seed, direct
):
    if op == "avg" and np.dtype(dtype).kind in "iu":
        op = "sum"
    shots = 2 if direct else shots  # a direct all-reduce is two-shot
    rng = np.random.default_rng(seed)
    calls = [rank_inputs(rng, ranks, count, dtype) for _ in range(n_calls)]
    # Staging of 16-384 bytes: most calls take many rounds, with partial lanes,
    # shares of one vector or none, and a partial last vector.
    outputs = run(calls, op, lanes=lanes, staging_bytes=16 * staging, shots=shots, direct=direct)
    check(calls, outputs, op)


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(["reduce_scatter", "allgather", "broadcast", "reduce"]),
    ranks=st.integers(1, 8),
    lanes=st.integers(1, 5),
    shots=st.sampled_from([1, 2]),
    count=st.integers(0, 200),
    staging=st.integers(1, 24),
    dtype=st.sampled_from(DTYPES),
    op=st.sampled_from(list(COMBINE)),
    root=st.integers(0, 7),
    n_calls=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    direct=st.booleans(),
)
def test_every_other_collective_against_numpy(
    kind, ranks, lanes, shots, count, staging, dtype, op, root, n_calls, seed, direct
):
    # count is one rank's block for reduce-scatter and all-gather, the array otherwise.
    if op == "avg" and np.dtype(dtype).kind in "iu":
        op = "sum" if kind not in ("allgather", "broadcast") else op  # moves take any op, avg included
    root %= ranks
    rng = np.random.default_rng(seed)
    per_rank = count * ranks if kind == "reduce_scatter" else count
    calls = [rank_inputs(rng, ranks, per_rank, dtype) for _ in range(n_calls)]
    # Reduce-scatter stages a vector per rank at least.
    staging_bytes = 16 * max(staging, ranks if kind == "reduce_scatter" else 1)
    outputs = run(
        calls, op, lanes=lanes, staging_bytes=staging_bytes, shots=shots, kind=kind, root=root, direct=direct
    )
    check(calls, outputs, op, kind, root)


@pytest.mark.parametrize("shots, direct", [(1, False), (2, False), (2, True)])
def test_many_rounds_back_to_back(shots, direct):
    # 1 MiB through 64 KiB of staging, 4 ranks, 8 lanes, 4 calls: 64 rounds whose
    # flags only grow; a stale flag read as fresh would mix two rounds' data.
    rng = np.random.default_rng(shots)
    calls = [rank_inputs(rng, 4, 1 << 18, np.float32) for _ in range(4)]
    outputs = run(calls, "sum", lanes=8, staging_bytes=64 << 10, shots=shots, direct=direct)
    check(calls, outputs, "sum")


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("kind", ["allreduce", "broadcast", "reduce", "reduce-1"])
def test_in_place(kind, direct):
    # Direct, a rank's output is its input, which its peers read in place.
    kind, shots = (kind[:-2], 1) if kind.endswith("-1") else (kind, 2)
    rng = np.random.default_rng(3)
    calls = [rank_inputs(rng, 3, 1000, np.float32)]
    copies = [[x.copy() for x in calls[0]]]
    run(copies, kind=kind, root=1, lanes=3, staging_bytes=256, shots=shots, outputs=copies, direct=direct)
    for r, x in enumerate(copies[0]):
        want = wanted(kind, calls[0], "sum", 1, r)
        np.testing.assert_array_equal(x, calls[0][r] if want is None else want)


def gathered_in_place(ranks=3, block=333):
    """Every rank's output, holding its input as its own block (as torch's
    all_gather_into_tensor allows); the inputs, as views of them and as copies."""
    inputs = rank_inputs(np.random.default_rng(5), ranks, block, np.float32)
    outputs = [np.zeros(ranks * block, np.float32) for _ in range(ranks)]
    for r, o in enumerate(outputs):
        o[r * block : (r + 1) * block] = inputs[r]
    return outputs, [o[r * block : (r + 1) * block] for r, o in enumerate(outputs)], inputs


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
def test_all_gather_in_place(direct):
    outputs, views, inputs = gathered_in_place()
    run([views], kind="allgather", lanes=2, staging_bytes=256, outputs=[outputs], direct=direct)
    for o in outputs:
        np.testing.assert_array_equal(o, np.concatenate(inputs))


def at_odd_offsets(kind, rng, ranks=3, block=999):
    """Rank inputs and outputs (filled with 7) for `kind`, each a view one
    element into its buffer: not 16-byte aligned. Reduce-scatter's blocks of
    999 float32 lie at offsets of every remainder mod 16."""
    count = block * ranks if kind == "reduce_scatter" else block
    out_count = block * ranks if kind == "allgather" else block

    def odd(x):
        return np.concatenate([np.zeros(1, x.dtype), x])[1:]

    inputs = [odd(x) for x in rank_inputs(rng, ranks, count, np.float32)]
    outputs = [odd(np.full(out_count, 7, np.float32)) for _ in inputs]
    assert all(addr(x) % 16 for x in inputs + outputs)
    return inputs, outputs


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize(
    "kind", ["allreduce", "allreduce-1", "reduce_scatter", "allgather", "broadcast", "reduce"]
)
def test_arrays_at_odd_offsets(kind, direct):
    # The users' arrays need not be 16-byte aligned; the staging buffers are.
    kind, shots = (kind[:-2], 1) if kind.endswith("-1") else (kind, 2)
    if direct and shots == 1 and kind == "allreduce":
        pytest.skip("a direct all-reduce is two-shot")
    rng = np.random.default_rng(4)
    calls, outputs = zip(*(at_odd_offsets(kind, rng) for _ in range(2)))
    run(
        calls,
        "sum",
        lanes=2,
        staging_bytes=512,
        shots=shots,
        kind=kind,
        root=2,
        outputs=outputs,
        direct=direct,
    )
    check(calls, outputs, "sum", kind, root=2)


@pytest.mark.parametrize("shots", [1, 2])
def test_a_rank_that_never_arrives_times_out_naming_it(shots):
    rng = np.random.default_rng(0)
    calls = [rank_inputs(rng, 3, 4096, np.float32)]
    t = time.monotonic()
    said = r"waited 0\.3\d* s for rank 2 to finish phase 'staged' of round 1"
    with pytest.raises(CollectiveTimeout, match=said):
        run(calls, lanes=2, staging_bytes=1024, shots=shots, timeout=0.3, absent_rank=2)
    assert time.monotonic() - t < 10


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("kind", list(COLLECTIVES))
def test_a_rank_that_never_arrives_in_any_collective(kind, direct):
    rng = np.random.default_rng(1)
    calls = [rank_inputs(rng, 2, 2048, np.float64)]
    with pytest.raises(CollectiveTimeout, match=r"for rank 1 to finish phase 'staged' of round 1"):
        run(calls, kind=kind, lanes=2, staging_bytes=1024, timeout=0.2, absent_rank=1, direct=direct)


def test_bad_arguments():
    x = [np.zeros(4, np.float32)] * 9
    with pytest.raises(ValueError, match="ranks: expected 1 to 8, got 9"):
        run([x])
    y = [np.zeros(4, np.int32)] * 2
    with pytest.raises(ValueError, match="avg is not defined for integer dtypes"):
        run([y], op="avg")
    with pytest.raises(ValueError, match="avg is not defined for integer dtypes"):
        run([y], op="avg", kind="reduce_scatter")
    with pytest.raises(ValueError, match="lanes: expected 1 to 128, got 0"):
        run([y], lanes=0)
    with pytest.raises(ValueError, match="root outside the ranks"):
        run([y], kind="broadcast", root=2)
    with pytest.raises(ValueError, match="reduce-scatter needs a vector per rank"):
        run([[np.zeros(8, np.int32)] * 4], kind="reduce_scatter", staging_bytes=48)
    with pytest.raises(ValueError, match="a direct all-reduce is two-shot"):
        run([y], shots=1, direct=True)
    with pytest.raises(ValueError, match="collective: expected 0 to 4, got 5"):
        _core._ipc_lanes(5, [[addr(y[0])]], [[addr(y[0])]], 16, CODES[np.dtype(np.int32)], 0)


def test_rounds_as_the_python_path_counts_them():
    # Every call's sequence numbers: the staging size per round, a ranks'th for reduce-scatter.
    assert _core._ipc_lane_rounds(COLLECTIVES["allreduce"], 100, 64, 3) == 2
    assert _core._ipc_lane_rounds(COLLECTIVES["reduce_scatter"], 100, 64, 3) == 7  # 16 bytes per round
    assert _core._ipc_lane_rounds(COLLECTIVES["allgather"], 0, 64, 3) == 0


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_python_path_on_cpu_processes(ranks):
    proc = run_mpi(ranks, "cuda_lanes_standin.py", timeout=120)
    assert " 0 failed" in proc.stdout, proc.stdout


def test_the_python_path_across_pretend_nodes():
    # Two nodes of two ranks: all-reduce and the reducer through the node's lanes
    # and a host all-reduce between the nodes.
    proc = run_mpi(4, "cuda_lanes_standin.py", timeout=180, env={"COLLEX_NODE_SIZE": "2"})
    assert " 0 failed" in proc.stdout, proc.stdout


def test_the_stand_in_takes_the_cuda_modules_arguments():
    # The CPU tests above replace collex._cuda's launches with a stand-in; the real
    # functions (built wherever the CUDA toolkit is, CI included) must take the
    # same arguments.
    cuda = pytest.importorskip("collex._cuda", reason="this build has no CUDA module")
    if not cuda.has_kernels:
        pytest.skip("this build of the CUDA module has no kernels (no nvcc)")
    source = (Path(__file__).parent / "mpi" / "cuda_lanes_standin.py").read_text()
    names = ("lanes_launch", "lanes_rounds", "lanes_resident", "bucket_amax", "bucket_pack", "bucket_unpack")
    names += ("copy_async", "allocation_of", "ipc_handle", "turns_launch", "device_identity")
    for name in names:
        signature = getattr(cuda, name).__doc__.split("(", 1)[1].split(")", 1)[0]
        real = re.findall(r"(\w+): ", signature)
        params = source.split(f"def {name}(", 1)[1].split(")", 1)[0]
        standin = [p.split(":")[0].split("=")[0].strip() for p in params.split(",")]
        standin = [p for p in standin if p not in ("cls", "*", "")]
        assert standin == real, name
    assert len(re.findall(r"(\w+): ", cuda.lanes_launch.__doc__.split(")", 1)[0])) == 21
