"""The CUDA IPC all-reduce's protocol (csrc/collex/transport/cuda_ipc/lanes.h) on
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


def run(calls, op="sum", lanes=1, staging_bytes=1 << 20, shots=2, timeout=30.0, absent_rank=-1):
    """The stand-in over calls[i][r] (rank r's input of call i); every rank's outputs."""
    outputs = [[np.full_like(x, 7) for x in call] for call in calls]
    dt = calls[0][0].dtype
    _core._ipc_lanes(
        [[addr(x) for x in call] for call in calls],
        [[addr(y) for y in call] for call in outputs],
        calls[0][0].nbytes, CODES[dt], OPS[op], lanes=lanes, staging_bytes=staging_bytes, shots=shots,
        timeout=timeout, absent_rank=absent_rank,
    )  # fmt: skip
    return outputs


def check(calls, outputs, op):
    for call, outs in zip(calls, outputs):
        want = expected(call, op)
        for r, got in enumerate(outs):
            # Every rank the same bits as rank 0, and those NumPy's.
            assert got.tobytes() == outs[0].tobytes(), f"rank {r} differs from rank 0"
            if want.dtype.kind == "f" or want.dtype == np.dtype(ml_dtypes.bfloat16):
                np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
            else:
                np.testing.assert_array_equal(got, want)


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
)
def test_every_rank_gets_numpys_rank_order_result(
    ranks, lanes, shots, count, staging, dtype, op, n_calls, seed
):
    if op == "avg" and np.dtype(dtype).kind in "iu":
        op = "sum"
    rng = np.random.default_rng(seed)
    calls = [rank_inputs(rng, ranks, count, dtype) for _ in range(n_calls)]
    # Staging of 16-384 bytes: most calls take many rounds, with partial lanes,
    # shares of one vector or none, and a partial last vector.
    outputs = run(calls, op, lanes=lanes, staging_bytes=16 * staging, shots=shots)
    check(calls, outputs, op)


@pytest.mark.parametrize("shots", [1, 2])
def test_many_rounds_back_to_back(shots):
    # 1 MiB through 64 KiB of staging, 4 ranks, 8 lanes, 4 calls: 64 rounds whose
    # flags only grow; a stale flag read as fresh would mix two rounds' data.
    rng = np.random.default_rng(shots)
    calls = [rank_inputs(rng, 4, 1 << 18, np.float32) for _ in range(4)]
    outputs = run(calls, "sum", lanes=8, staging_bytes=64 << 10, shots=shots)
    check(calls, outputs, "sum")


def test_in_place():
    rng = np.random.default_rng(3)
    calls = [rank_inputs(rng, 3, 1000, np.float32)]
    want = expected(calls[0], "sum")
    copies = [x.copy() for x in calls[0]]
    _core._ipc_lanes([[addr(x) for x in copies]], [[addr(x) for x in copies]], copies[0].nbytes,
                     CODES[np.dtype(np.float32)], OPS["sum"], lanes=3, staging_bytes=256)  # fmt: skip
    for x in copies:
        np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("shots", [1, 2])
def test_arrays_at_odd_offsets(shots):
    # Views one element into their buffers: the users' arrays need not be
    # 16-byte aligned; the staging buffers are.
    rng = np.random.default_rng(4)
    pad = np.zeros(1, np.float32)
    calls = [[np.concatenate([pad, x])[1:] for x in rank_inputs(rng, 3, 999, np.float32)] for _ in range(2)]
    assert all(addr(x) % 16 for call in calls for x in call) and calls[0][0].dtype == np.float32
    outputs = [[np.zeros(1000, np.float32)[1:] for _ in call] for call in calls]
    _core._ipc_lanes([[addr(x) for x in call] for call in calls], [[addr(y) for y in o] for o in outputs],
                     calls[0][0].nbytes, CODES[np.dtype(np.float32)], OPS["sum"], lanes=2, staging_bytes=512,
                     shots=shots)  # fmt: skip
    check(calls, outputs, "sum")


@pytest.mark.parametrize("shots", [1, 2])
def test_a_rank_that_never_arrives_times_out_naming_it(shots):
    rng = np.random.default_rng(0)
    calls = [rank_inputs(rng, 3, 4096, np.float32)]
    t = time.monotonic()
    said = r"waited 0\.3\d* s for rank 2 to finish phase 'staged' of round 1"
    with pytest.raises(CollectiveTimeout, match=said):
        run(calls, lanes=2, staging_bytes=1024, shots=shots, timeout=0.3, absent_rank=2)
    assert time.monotonic() - t < 10


def test_bad_arguments():
    x = [np.zeros(4, np.float32)] * 9
    with pytest.raises(ValueError, match="ranks: expected 1 to 8, got 9"):
        run([x])
    y = [np.zeros(4, np.int32)] * 2
    with pytest.raises(ValueError, match="avg is not defined for integer dtypes"):
        run([y], op="avg")
    with pytest.raises(ValueError, match="lanes: expected 1 to 128, got 0"):
        run([y], lanes=0)


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_python_path_on_cpu_processes(ranks):
    proc = run_mpi(ranks, "cuda_lanes_standin.py", timeout=120)
    assert " 0 failed" in proc.stdout, proc.stdout


def test_the_stand_in_takes_the_cuda_modules_arguments():
    # The CPU test above replaces collex._cuda.lanes_allreduce; the real one (built
    # wherever the CUDA toolkit is, CI included) must take the same arguments.
    cuda = pytest.importorskip("collex._cuda", reason="this build has no CUDA module")
    if not cuda.has_kernels:
        pytest.skip("this build of the CUDA module has no kernels (no nvcc)")
    signature = cuda.lanes_allreduce.__doc__.split("(", 1)[1].split(")", 1)[0]
    real = re.findall(r"(\w+): ", signature)
    source = (Path(__file__).parent / "mpi" / "cuda_lanes_standin.py").read_text()
    params = source.split("def lanes_allreduce(", 1)[1].split(")", 1)[0]
    standin = [p.strip() for p in params.split(",") if p.strip() not in ("cls", "*", "")]
    assert len(real) == 17 and standin == real
