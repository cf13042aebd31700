"""The turns of the CUDA IPC collectives (csrc/collex/transport/cuda_ipc/turns.h),
for ranks that share a GPU without MPS, on their CPU stand-in: every rank's
kernels of a call in one process, in the order the IPC events enforce (every
rank stages, then every rank reads, round by round), with the CUDA kernels'
element arithmetic, against NumPy (the helpers of test_ipc_lanes.py); and the
Python path that records and waits for the events, on CPU processes
(tests/mpi/cuda_lanes_standin.py with the ranks sharing a pretend GPU)."""

import numpy as np
import pytest
from collex import _core
from collex._dtypes import CODES, OPS
from collex.cuda.lanes import COLLECTIVES
from conftest import run_mpi
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ipc_lanes import (
    COMBINE,
    DTYPES,
    addr,
    at_odd_offsets,
    check,
    gathered_in_place,
    rank_inputs,
    wanted,
)


def run(inputs, kind="allreduce", op="sum", root=0, staging_bytes=1 << 20, direct=False, reverse=False, **kw):
    """One call of `kind` over inputs[r] (rank r's); every rank's output (unless
    given, new ones filled with 7: reduce leaves the others' so)."""
    ranks, x, outputs = len(inputs), inputs[0], kw.get("outputs")
    block = x.size // ranks if kind == "reduce_scatter" else x.size
    count = {"reduce_scatter": block, "allgather": ranks * block}.get(kind, x.size)
    if outputs is None:
        outputs = [np.full(count, 7, x.dtype) for _ in inputs]
    _core._ipc_turns(
        COLLECTIVES[kind], [addr(a) for a in inputs], [addr(o) for o in outputs], block * x.itemsize,
        CODES[x.dtype], OPS[op], root=root, staging_bytes=staging_bytes, direct=direct, reverse=reverse,
    )  # fmt: skip
    return outputs


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(list(COLLECTIVES)),
    ranks=st.integers(1, 8),
    count=st.integers(0, 300),
    staging=st.integers(1, 24),
    dtype=st.sampled_from(DTYPES),
    op=st.sampled_from(list(COMBINE)),
    root=st.integers(0, 7),
    seed=st.integers(0, 2**31),
    direct=st.booleans(),
    reverse=st.booleans(),
)
def test_every_collective_against_numpy(kind, ranks, count, staging, dtype, op, root, seed, direct, reverse):
    # count is one rank's block for reduce-scatter and all-gather, the array
    # otherwise; staging of 16-384 bytes: most staged calls take many rounds.
    if op == "avg" and np.dtype(dtype).kind in "iu":
        op = "sum" if kind not in ("allgather", "broadcast") else op  # moves take any op, avg included
    root %= ranks
    rng = np.random.default_rng(seed)
    per_rank = count * ranks if kind == "reduce_scatter" else count
    inputs = rank_inputs(rng, ranks, per_rank, dtype)
    staging_bytes = 16 * max(staging, ranks if kind == "reduce_scatter" else 1)
    outputs = run(inputs, kind, op, root, staging_bytes, direct, reverse)
    check([inputs], [outputs], op, kind, root)


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("kind", ["allreduce", "broadcast", "reduce", "reduce_scatter"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_in_place(kind, direct, reverse):
    # Direct, a rank's output is its input, which its peers read in place: a
    # schedule that wrote a byte a peer still reads in the same turn would give
    # one of the two orders another result. Reduce-scatter's output is its own
    # block of its input.
    rng = np.random.default_rng(3)
    ranks, count = 3, 999
    inputs = rank_inputs(rng, ranks, count * (ranks if kind == "reduce_scatter" else 1), np.float32)
    copies = [x.copy() for x in inputs]
    if kind == "reduce_scatter":
        outputs = [c[r * count : (r + 1) * count] for r, c in enumerate(copies)]
    else:
        outputs = copies
    run(copies, kind, root=1, staging_bytes=256, direct=direct, reverse=reverse, outputs=outputs)
    for r, x in enumerate(outputs):
        want = wanted(kind, inputs, "sum", 1, r)
        np.testing.assert_array_equal(x, inputs[r] if want is None else want)


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
def test_all_gather_in_place(direct):
    outputs, views, inputs = gathered_in_place()
    run(views, "allgather", staging_bytes=256, outputs=outputs, direct=direct)
    for o in outputs:
        np.testing.assert_array_equal(o, np.concatenate(inputs))


@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("kind", list(COLLECTIVES))
def test_arrays_at_odd_offsets(kind, direct):
    # Pieces over unaligned arrays go element by element, the rest by whole vectors.
    inputs, outputs = at_odd_offsets(kind, np.random.default_rng(4))
    run(inputs, kind, root=2, staging_bytes=512, direct=direct, outputs=outputs)
    check([inputs], [outputs], "sum", kind, root=2)


def test_bad_arguments():
    x = [np.zeros(4, np.float32)] * 9
    with pytest.raises(ValueError, match="one input and one output per rank, 1 to 8"):
        run(x)
    y = [np.zeros(4, np.int32)] * 2
    with pytest.raises(ValueError, match="avg is not defined for integer dtypes"):
        run(y, op="avg")
    with pytest.raises(ValueError, match="root outside the ranks"):
        run(y, "broadcast", root=2)
    with pytest.raises(ValueError, match="reduce-scatter needs a vector per rank"):
        run([np.zeros(8, np.int32)] * 4, "reduce_scatter", staging_bytes=48)
    with pytest.raises(ValueError, match=r"part: expected 0 \(stage\) or 1 \(read\), got 2"):
        _core._ipc_turn(2, 0, [addr(y[0])] * 2, 16, 0, addr(y[0]), addr(y[1]), 16, 0, 0, CODES[y[0].dtype], 0)


def test_signatures_tell_calls_apart():
    sig = _core._ipc_call_signature
    base = sig(COLLECTIVES["allreduce"], 64, 0, CODES[np.dtype(np.float32)], OPS["sum"], False)
    others = [
        sig(COLLECTIVES["reduce"], 64, 0, CODES[np.dtype(np.float32)], OPS["sum"], False),
        sig(COLLECTIVES["allreduce"], 80, 0, CODES[np.dtype(np.float32)], OPS["sum"], False),
        sig(COLLECTIVES["allreduce"], 64, 0, CODES[np.dtype(np.float64)], OPS["sum"], False),
        sig(COLLECTIVES["allreduce"], 64, 0, CODES[np.dtype(np.float32)], OPS["max"], False),
        sig(COLLECTIVES["allreduce"], 64, 0, CODES[np.dtype(np.float32)], OPS["sum"], True),
    ]
    assert len({base, *others}) == 6


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_python_path_on_cpu_processes_sharing_a_gpu(ranks):
    # The stand-in's ranks say they share one GPU and no MPS runs: the events
    # order the ranks' kernels, chosen by the ranks themselves.
    proc = run_mpi(ranks, "cuda_lanes_standin.py", timeout=150, env={"STANDIN_SHARED_GPU": "1"})
    assert " 0 failed" in proc.stdout, proc.stdout
