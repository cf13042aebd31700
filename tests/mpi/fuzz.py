"""Property-based tests under mpirun, with hypothesis.

Rank 0 runs hypothesis and draws each example; it sends the example to the
other ranks (through mpi4py, not collex), every rank runs it, and rank 0 learns
whether every rank got the right answer, so that hypothesis (shrinking included)
sees one outcome for the whole job. Each rank's inputs come from the example's
seed and the rank (small integers: collex.bench.soak's, shared with the soak),
so every rank can compute the expected answer with NumPy and reductions are exact.

usage: fuzz.py PROPERTY EXAMPLES
  results  collectives and point-to-point over shapes, dtypes, ops, algorithms,
           in place and out of place, array views and mixes of async operations,
           checked against NumPy
  hostile  bad arguments (wrong types, non-contiguous or read-only arrays,
           bad sizes, roots, tags, ops, algorithms, out= arrays): a TypeError or
           ValueError naming the argument on every rank, the communicator still
           usable; and arrays dropped or resized while an async operation is
           pending (collex keeps them alive, NumPy refuses the resize)
"""

from __future__ import annotations

import gc
import sys
import traceback

import collex as cx
import numpy as np
from collex.bench.soak import DTYPES, OPS, everyones_inputs, matches, np_dtype, reduction_of
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

WORLD = MPI.COMM_WORLD
cx.init()
rank, size = cx.rank(), cx.size()
prop, examples = sys.argv[1], int(sys.argv[2])

DTYPES = list(DTYPES)
OPS = list(OPS)


def placed(a: np.ndarray, view: str, seed: int) -> np.ndarray:
    """`a` as the caller might hold it: its own array, a contiguous slice with an
    offset inside a larger one (misaligned for vector loads), or a reshaped view."""
    if view == "own" or a.size == 0:
        return a.copy()
    if view == "offset":
        off = 1 + seed % 7
        big = np.zeros(a.size + off + 3, a.dtype)
        big[off : off + a.size] = a.ravel()
        return big[off : off + a.size].reshape(a.shape)
    return a.ravel().copy().reshape(a.shape)  # "reshaped": a view of a flat array


# ---- one example of the results property --------------------------------------


def run_one(step: dict) -> str:
    """Runs one operation described by `step` and returns "" or what was wrong."""
    kind, dtype, op, shape, seed = step["kind"], step["dtype"], step["op"], tuple(step["shape"]), step["seed"]
    everyone = everyones_inputs(seed, size, shape, dtype, op)
    mine = placed(everyone[rank].astype(np_dtype(dtype)), step["view"], seed)
    kept = mine.copy()
    async_op = step["async"]
    if kind == "allreduce":
        out = None if step["inplace"] else np.empty_like(mine)
        w = cx.allreduce(mine, op=op, out=out, algo=step["algo"], async_op=async_op)
        return lambda: check(w, async_op, mine, kept, reduction_of(everyone, op), out, dtype, op)
    if kind == "broadcast":
        root = step["root"] % size
        w = cx.broadcast(mine, root=root, algo=step["algo"], async_op=async_op)
        want = everyone[root].astype(np.float64)
        return lambda: check(w, async_op, mine, None, want, None, dtype, "sum")
    if kind == "reduce":
        root = step["root"] % size
        out = None if step["inplace"] else np.empty_like(mine)
        w = cx.reduce(mine, op=op, root=root, out=out, async_op=async_op)
        if rank == root:
            return lambda: check(w, async_op, mine, kept, reduction_of(everyone, op), out, dtype, op)

        # Elsewhere the input is untouched (and out, if given, holds nothing defined).
        def untouched():
            if async_op:
                w.wait()
            return "" if (mine == kept).all() else "a non-root's input changed"

        return untouched
    if kind == "allgather":
        w = cx.allgather(mine, async_op=async_op)
        want = everyone.astype(np.float64)
        return lambda: check(w, async_op, mine, kept, want, "new", dtype, "sum")
    if kind == "reduce_scatter":
        w = cx.reduce_scatter(mine, op=op, async_op=async_op)
        full = reduction_of(everyone, op)
        block = shape[0] // size
        return lambda: check(
            w, async_op, mine, kept, full[rank * block : (rank + 1) * block], "new", dtype, op
        )
    # a ring of sendrecv: each rank sends its input to the next and receives the previous one's
    got = np.empty_like(mine)
    cx.sendrecv(mine, (rank + 1) % size, got, (rank - 1) % size, tag=step["root"] % 1000)
    want = everyone[(rank - 1) % size].astype(np.float64)
    return lambda: "" if matches(got, want, dtype, "sum") else f"sendrecv got {got.ravel()[:6]}"


def check(w, async_op, mine, kept, want, out, dtype, op) -> str:
    res = w.wait() if async_op else w
    if out is None:  # in place: the result is x itself
        if res is not mine:
            return "in-place result is not x"
        return "" if matches(mine, want, dtype, op) else f"got {mine.ravel()[:6]}, want {want.ravel()[:6]}"
    if kept is not None and not (mine == kept).all():
        return "x changed by an out-of-place call"
    got = res if isinstance(out, str) else out
    if not isinstance(out, str) and res is not out:
        return "result is not out"
    return (
        "" if matches(got, want, dtype, op) else f"got {np.asarray(got).ravel()[:6]}, want {want.ravel()[:6]}"
    )


def run_results(example: dict) -> str:
    """Issues the example's operations (async ones stay pending until the end of
    the mix, in order), then checks each."""
    checks = []
    for step in example["steps"]:
        try:
            checks.append(run_one(step))
        except Exception:  # noqa: BLE001 - reported as the example's failure
            return f"{step}: raised\n{traceback.format_exc()}"
    for step, c in zip(example["steps"], checks):
        problem = c()
        if problem:
            return f"{step}: {problem}"
    return ""


@st.composite
def steps(draw):
    kind = draw(
        st.sampled_from(["allreduce", "broadcast", "reduce", "allgather", "reduce_scatter", "sendrecv"])
    )
    dtype = draw(st.sampled_from(DTYPES))
    ops = [o for o in OPS if not (o == "avg" and dtype.startswith(("int", "uint")))]
    op = draw(st.sampled_from(ops))
    # Sizes across the thresholds: a few elements, the window's slots, a chunked transfer.
    n = draw(st.one_of(st.integers(0, 40), st.integers(1000, 5000), st.sampled_from([65536, 300001])))
    ndim = draw(st.integers(1, 3))
    if kind == "reduce_scatter":
        shape = [size * max(1, n // (size * 4))] + [2] * (ndim - 1)
    elif ndim == 1:
        shape = [n]
    else:
        shape = [max(1, n // 4)] + [2] * (ndim - 1)
    algo = (
        draw(st.sampled_from(["auto", "ring", "tree", "direct", "hier"]))
        if kind in ("allreduce", "broadcast")
        else "auto"
    )
    return {
        "kind": kind,
        "dtype": dtype,
        "op": op,
        "shape": shape,
        "seed": draw(st.integers(0, 2**31)),
        "view": draw(st.sampled_from(["own", "offset", "reshaped"])),
        "inplace": draw(st.booleans()),
        "async": kind != "sendrecv" and draw(st.booleans()),
        "algo": algo,
        "root": draw(st.integers(0, 1000)),
    }


# ---- one example of the hostile property --------------------------------------

GOOD = np.ones(8, np.float32)


def hostile_call(case: dict):
    """The call with one bad argument, and the words its error must contain."""
    arg, value = case["arg"], case["value"]
    x = np.ones(8, np.float32)
    if arg == "x-type":
        bad = {"list": [1.0, 2.0], "str": "abc", "none": None, "float": 3.0, "dict": {}}[value]
        return (lambda: cx.allreduce(bad)), (TypeError,), ["collex.allreduce"]
    if arg == "x-dtype":
        bad = np.ones(
            4, {"complex": np.complex64, "bool": bool, "object": object, "uint16": np.uint16}[value]
        )
        return (lambda: cx.allreduce(bad)), (TypeError,), ["unsupported dtype"]
    if arg == "x-strided":
        step = 2 + value % 3
        return (
            (lambda: cx.allreduce(np.ones(8 * step, np.float32)[::step])),
            (ValueError,),
            ["x:", "C-contiguous"],
        )
    if arg == "x-readonly":
        ro = np.ones(8, np.float32)
        ro.setflags(write=False)
        return (lambda: cx.allreduce(ro)), (ValueError,), ["x:", "read-only"]
    if arg == "root":
        fn = {"broadcast": lambda: cx.broadcast(x, root=value), "reduce": lambda: cx.reduce(x, root=value)}
        return fn[case["kind"]], (ValueError,), [f"root={value}", "out of range"]
    if arg == "root-type":
        bad = {"str": "0", "float": 0.5, "bool": True, "none": None}[value]
        return (lambda: cx.broadcast(x, root=bad)), (TypeError,), ["root"]
    if arg == "tag":
        return (lambda: cx.isend(x, rank, tag=value)), (ValueError,), [f"tag={value}"]
    if arg == "peer":
        return (lambda: cx.send(x, value)), (ValueError,), ["dst=", "out of range"]
    if arg == "op":
        return (lambda: cx.allreduce(x, op=value)), (ValueError,), ["op="]
    if arg == "algo":
        return (lambda: cx.allreduce(x, algo=value)), (ValueError,), ["algo="]
    if arg == "out-shape":
        return (lambda: cx.allreduce(x, out=np.ones(value, np.float32))), (ValueError,), ["out:", "shape="]
    if arg == "out-dtype":
        return (lambda: cx.allreduce(x, out=np.ones(8, value))), (ValueError,), ["out:"]
    if arg == "scatter-rows":
        # One rank divides any row count: there only a 0-d array has no rows to split.
        rows = np.ones(value * size + 1) if size > 1 else np.ones(())
        return (lambda: cx.reduce_scatter(rows)), (ValueError,), ["divisible"]
    raise AssertionError(arg)


def run_hostile(case: dict) -> str:
    fn, types, words = hostile_call(case)
    try:
        fn()
    except types as e:
        missing = [w for w in words + [f"[rank {rank}]"] if w not in str(e)]
        if missing:
            return f"{case}: message {str(e)!r} lacks {missing}"
    except Exception as e:  # noqa: BLE001 - the wrong type is what is being tested for
        return f"{case}: raised {type(e).__name__}: {e}"
    else:
        return f"{case}: did not raise"
    # The communicator is still usable, and not broken.
    y = np.full(4, float(rank + 1))
    cx.allreduce(y)
    if cx.world().broken or not (y == size * (size + 1) / 2).all():
        return f"{case}: the communicator did not work afterwards ({y})"
    return ""


# Where integer conversions break: the edges of C's int, long and size_t.
BOUNDARY_INTS = st.sampled_from(
    [2**31, 2**32, 2**63 - 1, 2**63, 2**64, 2**70, -(2**31) - 1, -(2**63), -(2**63) - 1, -(2**70)]
)

hostile_cases = st.one_of(
    st.fixed_dictionaries(
        {"arg": st.just("x-type"), "value": st.sampled_from(["list", "str", "none", "float", "dict"])}
    ),
    st.fixed_dictionaries(
        {"arg": st.just("x-dtype"), "value": st.sampled_from(["complex", "bool", "object", "uint16"])}
    ),
    st.fixed_dictionaries({"arg": st.just("x-strided"), "value": st.integers(0, 100)}),
    st.fixed_dictionaries({"arg": st.just("x-readonly"), "value": st.just(0)}),
    st.fixed_dictionaries(
        {
            "arg": st.just("root"),
            "kind": st.sampled_from(["broadcast", "reduce"]),
            "value": st.one_of(st.integers(-(2**70), -1), st.integers(size, 2**70), BOUNDARY_INTS),
        }
    ),
    st.fixed_dictionaries(
        {"arg": st.just("root-type"), "value": st.sampled_from(["str", "float", "bool", "none"])}
    ),
    st.fixed_dictionaries(
        {
            "arg": st.just("tag"),
            "value": st.one_of(st.integers(-(2**40), -1), st.integers(2**20, 2**40), BOUNDARY_INTS),
        }
    ),
    st.fixed_dictionaries(
        {
            "arg": st.just("peer"),
            "value": st.one_of(st.integers(-(2**40), -1), st.integers(size, 2**40), BOUNDARY_INTS),
        }
    ),
    st.fixed_dictionaries(
        {"arg": st.just("op"), "value": st.text(max_size=6).filter(lambda s: s.lower() not in OPS)}
    ),
    st.fixed_dictionaries(
        {
            "arg": st.just("algo"),
            "value": st.text(max_size=8).filter(
                lambda s: s.lower() not in ("auto", "ring", "tree", "direct", "hier")
            ),
        }
    ),
    st.fixed_dictionaries(
        {"arg": st.just("out-shape"), "value": st.integers(0, 100).filter(lambda n: n != 8)}
    ),
    st.fixed_dictionaries(
        {"arg": st.just("out-dtype"), "value": st.sampled_from(["float64", "int32", "float16"])}
    ),
    st.fixed_dictionaries({"arg": st.just("scatter-rows"), "value": st.integers(1, 50)}),
)


def run_pending_arrays(_: dict) -> str:
    """Arrays dropped while an async operation runs stay alive until it ends;
    resizing one in place is refused by NumPy (collex holds a reference)."""
    x = np.full(100000, float(rank + 1))
    w = cx.allreduce(x, async_op=True)
    try:
        x.resize(200000)
    except ValueError:
        pass
    else:
        return "a pending operation's array could be resized"
    del x
    gc.collect()
    res = w.wait()
    if not (res == size * (size + 1) / 2).all():
        return f"dropped array: got {res[:4]}"
    y = np.ones(10, np.float32)
    w = cx.allgather(y, async_op=True)
    del y
    gc.collect()
    if w.wait().shape != (size, 10):
        return "allgather of a dropped array"
    # Handles dropped at once, with the only references to their arrays: the
    # operations still run to the end on live memory (peers read it in place).
    for n in (300000, 1000, 2000000):
        cx.allreduce(np.full(n, 1.0), async_op=True)
        cx.allgather(np.ones(n // 10, np.float32), async_op=True)
        cx.broadcast(np.ones(n), root=size - 1, async_op=True)
    gc.collect()
    z = np.full(1000, float(rank))
    cx.allreduce(z)
    if not (z == size * (size - 1) / 2).all():
        return f"after dropped handles: got {z[:4]}"
    return ""


# ---- the driver: rank 0 runs hypothesis, every rank runs each example ------------


RUNNERS = {"results": run_results, "hostile": run_hostile, "pending": run_pending_arrays}


ran = 0


def everywhere(kind: str, example: dict) -> list:
    """Runs the example on every rank; the problems each found (rank 0 only)."""
    global ran
    ran += 1
    WORLD.bcast((kind, example), root=0)
    return WORLD.gather(RUNNERS[kind](example), root=0)


def follow() -> None:
    while True:
        order = WORLD.bcast(None, root=0)
        if order is None:
            return
        WORLD.gather(RUNNERS[order[0]](order[1]), root=0)


SETTINGS = settings(
    max_examples=examples,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@SETTINGS
@given(st.fixed_dictionaries({"steps": st.lists(steps(), min_size=1, max_size=4)}))
def results_hold(example):
    problems = [p for p in everywhere("results", example) if p]
    assert not problems, "\n".join(problems)


@SETTINGS
@given(hostile_cases)
def hostile_refused(case):
    problems = [p for p in everywhere("hostile", case) if p]
    assert not problems, "\n".join(problems)


failed = False
if rank == 0:
    try:
        if prop == "results":
            results_hold()
        else:
            hostile_refused()
            problems = [p for p in everywhere("pending", {}) if p]
            assert not problems, "\n".join(problems)
    except Exception:  # noqa: BLE001 - reported below; the other ranks are released first
        failed = True
        print(f"FAIL fuzz[{prop}]\n{traceback.format_exc()}", flush=True)
    WORLD.bcast(None, root=0)
else:
    follow()
failed = WORLD.bcast(failed, root=0)
if rank == 0:
    print(f"fuzz[{prop}]: {ran} examples {'FAILED' if failed else 'passed'} on {size} ranks", flush=True)
cx.finalize()
sys.exit(1 if failed else 0)
