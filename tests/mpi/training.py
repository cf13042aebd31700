"""The data-parallel training layer under mpirun: GradientReducer against
per-tensor all-reduce, ready() in any order and its misuse, compression and error
feedback, broadcast_parameters, DistributedOptimizer, and a short training run
that must follow the one-process run."""

from __future__ import annotations

import os
import sys

import collex as cx
import ml_dtypes
import numpy as np
from _harness import Cases, identical_on_all_ranks, raises
from collex import _core

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from mlp import train  # noqa: E402

cx.init()
rank, size = cx.rank(), cx.size()
cases = Cases("training")
KIB = 1 << 10

# Mixed shapes and dtypes, some empty, enough to make several buckets at a small cap.
SHAPES = [(3, 5), (1000,), (0,), (64, 64), (7,), (300, 30), (1,), (2000,), (33, 3)]
DTYPES = [np.float32, np.float32, np.float32, np.float64, np.float16, np.float32, ml_dtypes.bfloat16,
          np.float32, np.float64]  # fmt: skip


def integer_grads(seed):
    """Small integers: every sum and average over up to 5 ranks is exact in every dtype."""
    rng = np.random.default_rng(seed)
    return [rng.integers(-8, 9, s).astype(dt) * 4 for s, dt in zip(SHAPES, DTYPES)]


def expected_average():
    total = [sum(integer_grads(r)[i].astype(np.float64) for r in range(size)) for i in range(len(SHAPES))]
    return [(t / size).astype(dt) for t, dt in zip(total, DTYPES)]


def same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def reducer_equals_per_tensor_allreduce():
    for cap_kib, first in ((1, 1), (16, 4), (25 * 1024, 1024)):
        grads = integer_grads(rank)
        red = cx.GradientReducer(grads, bucket_mb=cap_kib / 1024, first_bucket_mb=first / 1024)
        per_tensor = [cx.allreduce(g.copy(), op="avg") for g in integer_grads(rank)]
        red.reduce()
        for i, (g, e, t) in enumerate(zip(grads, expected_average(), per_tensor)):
            assert same(g, e), f"cap {cap_kib} KiB: gradient {i} {g.ravel()[:4]} != {e.ravel()[:4]}"
            assert same(g, t), f"cap {cap_kib} KiB: gradient {i} differs from the per-tensor all-reduce"
        # A second step on the same reducer.
        for g, fresh in zip(grads, integer_grads(rank + 100)):
            g[...] = fresh
        red.reduce()
        again = [sum(integer_grads(r + 100)[i].astype(np.float64) for r in range(size)) / size
                 for i in range(len(SHAPES))]  # fmt: skip
        assert all(same(g, a.astype(g.dtype)) for g, a in zip(grads, again)), "second step wrong"


def bucket_paths_and_many_pieces():
    # On one node with the shared window, uncompressed buckets of separate arrays
    # are reduced where they lie; forced onto MPI or across (pretend) nodes they are packed.
    one_node = os.environ.get("COLLEX_TRANSPORT") != "mpi" and "COLLEX_NODE_SIZE" not in os.environ
    # 3000 tiny gradients (and empty ones) in one bucket: more pieces than one
    # system call takes (IOV_MAX), pieces smaller than a vector.
    shapes = [(k % 5,) for k in range(3000)]
    grads = [np.full(s, 4 * (rank + 1) + k % 3, np.float32) for k, s in enumerate(shapes)]
    red = cx.GradientReducer(grads)
    paths = {b["path"] for b in red.bucket_info()}
    assert paths == ({"segments"} if one_node else {"packed"}), paths
    # Peers could not read these in place: on one node they go through the
    # fusion buffer all the same (but the empty ones, and on one rank none).
    packed = [i for b in red.bucket_info() for i in b["packed"]]
    expect = [k for k, s in enumerate(shapes) if s[0] > 0] if one_node and size > 1 else []
    assert sorted(packed) == expect, (len(packed), len(expect))
    compressed = cx.GradientReducer(float_grads(rank), compression="fp16")
    assert {b["path"] for b in compressed.bucket_info()} == {"packed"}
    red.reduce()
    mean = 4 * (size + 1) / 2
    for k, g in enumerate(grads):
        assert np.all(g == mean + k % 3), f"gradient {k}: {g} != {mean + k % 3}"


def large_bucket_of_separate_arrays():
    # Over 16 MiB in one bucket: on one node, pieces of the block inside one array
    # are reduced straight into it with streaming stores, pieces that straddle two
    # arrays go through a buffer; odd sizes put both kinds on every rank.
    shapes = [(2_000_001,), (1_999_999,), (1_000_003,)]
    grads = [np.full(s, 4 * (rank + 1) + k, np.float32) for k, s in enumerate(shapes)]
    red = cx.GradientReducer(grads, bucket_mb=32, first_bucket_mb=32)
    assert len(red.buckets) == 1, red.buckets
    for step in range(2):
        red.reduce()
        for k, g in enumerate(grads):
            expect = 2 * (size + 1) + k
            wrong = np.flatnonzero(g != expect)
            assert wrong.size == 0, f"step {step}, gradient {k}: {wrong.size} wrong, first at {wrong[:3]}"
            g[...] = 4 * (rank + 1) + k


def two_exact_steps(red, grads, modulus):
    """Two steps of `red` on gradients k that hold arange % modulus + rank + k (10 more each
    step): every element must come out the exact average."""
    for step in range(2):
        red.reduce()
        for k, g in enumerate(grads):
            expect = np.arange(g.size, dtype=np.float32) % modulus + k + (size - 1) / 2 + 10 * step
            wrong = np.flatnonzero(g != expect)
            assert wrong.size == 0, f"step {step}, gradient {k} ({g.size}): {wrong.size} wrong: {wrong[:3]}"
            g[...] = np.arange(g.size, dtype=np.float32) % modulus + rank + k + 10 * (step + 1)


def mixed_small_and_large_arrays_in_one_bucket():
    # Large arrays get pieces of their own, reduced in place; small ones are
    # staged in the fusion buffer, at their places in the bucket (or, not staged,
    # go together through a piece buffer, up to the next large one). Sizes
    # on both sides of 64 KiB and of a piece, empty ones, and small runs between
    # large arrays, with each rank's block starting somewhere else in them.
    sizes = [10, 70_000, 3, 5, 16_384, 16_383, 300_001, 1, 0, 2, 16_385, 7, 600_000, 4096, 9]
    grads = [np.arange(n, dtype=np.float32) % 97 + rank + k for k, n in enumerate(sizes)]
    red = cx.GradientReducer(grads, bucket_mb=32, first_bucket_mb=32)
    assert len(red.buckets) == 1, red.buckets
    # On one node, those under 256 KiB (which never lie on shared pages) go
    # through the fusion buffer whole; those of 1 MiB and up never.
    one_node = os.environ.get("COLLEX_TRANSPORT") != "mpi" and "COLLEX_NODE_SIZE" not in os.environ
    packed = set(red.bucket_info()[0]["packed"])
    if one_node and size > 1:
        assert {k for k, n in enumerate(sizes) if 0 < 4 * n < 256 * KIB} <= packed, packed
    assert not {k for k, n in enumerate(sizes) if 4 * n >= 1024 * KIB} & packed, packed
    two_exact_steps(red, grads, 97)


def private_edges_are_staged():
    # Arrays moved onto shared pages keep their first and last pages private. On
    # one node peers read those edges from copies in the fusion buffer, so nothing
    # but the ranks' small tables of where things lie goes through the kernel.
    # Views that start elsewhere in larger arrays on every rank make the edges
    # differ between ranks: the ranks stage the largest, in the same places.
    one_node = os.environ.get("COLLEX_TRANSPORT") != "mpi" and "COLLEX_NODE_SIZE" not in os.environ
    sizes = [300_001, 1_000_003, 262_145, 700_000, 2_000_001, 500_000]
    bases = [np.zeros(n + 1024 * ((rank + k) % 3) + 7 * rank, np.float32) for k, n in enumerate(sizes)]
    grads = [b[len(b) - n :] for b, n in zip(bases, sizes)]
    for k, g in enumerate(grads):
        g[...] = np.arange(g.size, dtype=np.float32) % 89 + rank + k
    red = cx.GradientReducer(grads, bucket_mb=32, first_bucket_mb=32)
    assert len(red.buckets) == 1 and red.bucket_info()[0]["packed"] == [], red.bucket_info()
    _core._time_parts_enable(True)
    two_exact_steps(red, grads, 89)
    _, traffic = _core._time_parts()
    _core._time_parts_enable(False)
    through_kernel = traffic[2]  # bytes read plus written by cross-memory attach
    if one_node and size > 1:
        assert through_kernel < 16 * KIB, f"{through_kernel} bytes through the kernel in two steps"


def huge_pages_change_only_the_pages():
    # Gradients under 4 MiB, which NumPy leaves on 4 KiB pages, with the other
    # arrays of a 2 MiB region beside them: the reducer backs the regions with
    # huge pages (on one node, where peers read them in place) and every array
    # keeps its contents; the averages are those of a reducer that does not.
    one_node = os.environ.get("COLLEX_TRANSPORT") != "mpi" and "COLLEX_NODE_SIZE" not in os.environ
    sizes = [700_001, 3, 300_000, 1 << 20, 5, 650_000]

    def fresh(seed):
        return [np.arange(n, dtype=np.float32) % 89 + seed for n in sizes]

    grads, neighbours = [], []
    for g in fresh(rank):
        grads.append(g)
        neighbours.append(np.arange(1000, dtype=np.float64) * (rank + 1))
    red = cx.GradientReducer(grads)
    plain_grads = fresh(rank)
    plain = cx.GradientReducer(plain_grads, huge_pages=False)
    total = sum(g.nbytes for g in grads)
    assert plain.huge_page_bytes == 0, plain.huge_page_bytes
    assert 0 <= red.huge_page_bytes <= total, (red.huge_page_bytes, total)
    if not one_node or size == 1:
        assert red.huge_page_bytes == 0, f"no peer reads these in place, yet {red.huge_page_bytes} B moved"
    for step in range(2):
        red.reduce()
        plain.reduce()
        for k, (g, h, n) in enumerate(zip(grads, plain_grads, sizes)):
            expect = np.arange(n, dtype=np.float32) % 89 + step * 10 + (size - 1) / 2
            assert np.array_equal(g, expect), f"step {step}, gradient {k}: {g[:3]} != {expect[:3]}"
            assert np.array_equal(h, expect), f"step {step}, gradient {k} without huge pages"
        for g, h, f in zip(grads, plain_grads, fresh(rank + (step + 1) * 10)):
            g[...] = f
            h[...] = f
    for k, nb in enumerate(neighbours):
        assert np.array_equal(nb, np.arange(1000) * (rank + 1.0)), f"neighbour array {k} changed"


def zeros_like_each_gives_one_span_per_bucket():
    like = integer_grads(rank)
    grads = cx.zeros_like_each(like)
    assert [(g.shape, g.dtype) for g in grads] == [(a.shape, a.dtype) for a in like]
    assert all(not g.any() for g in grads)
    # Back to back per dtype, in order: views of one buffer.
    for dt in set(DTYPES):
        mine = [g for g in grads if g.dtype == dt and g.size > 0]
        for a, b in zip(mine, mine[1:]):
            assert b.ctypes.data == a.ctypes.data + a.nbytes, f"{np.dtype(dt)}: not back to back"
    for g, a in zip(grads, like):
        g[...] = a
    red = cx.GradientReducer(grads, bucket_mb=16 / 1024, first_bucket_mb=4 / 1024)
    assert len(red.buckets) >= 3, red.buckets
    assert {b["path"] for b in red.bucket_info()} == {"span"}, red.bucket_info()
    red.reduce()
    assert all(same(g, e) for g, e in zip(grads, expected_average())), "average over zeros_like_each arrays"
    raises(lambda: cx.zeros_like_each(like[0]), TypeError, "zeros_like_each", "expected a list")
    raises(lambda: cx.zeros_like_each([like[0], 3]), TypeError, "arrays[1]", "expected an array")

    class OnDevice:  # what a CuPy array looks like to collex
        shape, dtype = (4,), np.dtype(np.float32)
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}

    raises(lambda: cx.zeros_like_each([OnDevice()]), TypeError, "arrays[0] is a CUDA array")


def ready_in_any_order():
    grads = integer_grads(rank)
    red = cx.GradientReducer(grads, bucket_mb=2 / 1024, first_bucket_mb=1 / 1024)
    assert len(red.buckets) >= 4, red.buckets
    for step in range(3):
        # Each rank its own order: buckets still launch in the same order everywhere.
        order = np.random.default_rng(1000 * rank + step).permutation(len(grads))
        for i in order:
            red.ready(int(i))
        red.wait()
        assert all(same(g, e) for g, e in zip(grads, expected_average())), f"step {step}"
        for g, fresh in zip(grads, integer_grads(rank)):
            g[...] = fresh


def misuse_is_a_clear_error():
    grads = integer_grads(rank)
    red = cx.GradientReducer(grads, bucket_mb=1 / 1024)
    red.ready(3)
    raises(lambda: red.ready(3), ValueError, "ready", "gradient 3", "already marked ready", f"[rank {rank}]")
    raises(lambda: red.ready(9), ValueError, "out of range", "[0, 9)")
    raises(lambda: red.ready(-1), ValueError, "out of range")
    raises(lambda: red.ready("x"), TypeError, "int index")
    for i in (8, 7, 6, 5, 4):
        red.ready(i)
    raises(red.wait, ValueError, "gradients 0, 1, 2", "never marked ready")
    for i in (2, 1, 0):
        red.ready(i)
    red.wait()  # the step completes once the rest are ready
    assert all(same(g, e) for g, e in zip(grads, expected_average())), "after the late ready() calls"
    x = np.ones(8, np.float32)
    raises(
        lambda: cx.GradientReducer([x, np.ones(3, np.int32)]),
        TypeError,
        "grads[1]",
        "floating point",
        "int32",
    )
    raises(lambda: cx.GradientReducer([x[:5], x[3:]]), ValueError, "overlap")
    raises(lambda: cx.GradientReducer([x], compression="zip"), ValueError, "compression='zip'")
    raises(lambda: cx.GradientReducer([x], bucket_mb=0), ValueError, "bucket_mb=0")
    raises(
        lambda: cx.GradientReducer([np.ones((4, 4), np.float32)[:, ::2]]),
        ValueError,
        "C-contiguous",
        "grads[0]",
    )
    raises(lambda: cx.GradientReducer(x), TypeError, "list of arrays")
    raises(lambda: cx.DistributedOptimizer(object(), [x]), TypeError, "step(params, grads)")
    if size > 1:
        # Ranks that disagree are told so on every rank, before any bucket moves.
        mine = [np.ones(8 + (rank == 0), np.float32)]
        raises(
            lambda: cx.GradientReducer(mine), cx.CollectiveMismatch, "different gradients", f"[rank {rank}]"
        )
        other = "fp16" if rank == size - 1 else None
        raises(lambda: cx.GradientReducer([x], compression=other), cx.CollectiveMismatch, "settings")
        # The same counts in other shapes: the average would mix unrelated elements.
        turned = [np.ones((10, 100) if rank == 0 else (100, 10), np.float32)]
        raises(lambda: cx.GradientReducer(turned), cx.CollectiveMismatch, "different gradients")
    red = cx.GradientReducer([x])  # and the communicator is still usable
    red.reduce()


def float_grads(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal(s) * scale).astype(np.float32)
        for s in ((100, 30), (5000,), (17,), (0,), (64, 64))
    ]


def compression_is_close_and_identical():
    for compression, tol in (("fp16", 2e-3), ("bf16", 1e-2)):
        for magnitude in (1.0, 6e4, 1e-6):  # 6e4 * ranks overflows fp16 unless scaled
            grads = float_grads(rank, magnitude)
            exact = [sum(float_grads(r, magnitude)[i].astype(np.float64) for r in range(size)) / size
                     for i in range(len(grads))]  # fmt: skip
            red = cx.GradientReducer(grads, bucket_mb=0.05, compression=compression)
            assert all(b["wire_dtype"].itemsize == 2 for b in red.bucket_info()), red.bucket_info()
            red.reduce()
            for i, (g, e) in enumerate(zip(grads, exact)):
                assert np.all(np.isfinite(g)), f"{compression} x{magnitude}: gradient {i} not finite"
                err = np.max(np.abs(g - e), initial=0) / (np.max(np.abs(e), initial=0) or 1)
                assert err < tol, f"{compression} x{magnitude}: gradient {i} relative error {err}"
                assert identical_on_all_ranks(g), f"{compression}: gradient {i} differs across ranks"


def error_feedback_arithmetic():
    # bf16 is never scaled: the residual is exactly what rounding to bf16 dropped,
    # and the next step rounds gradient + residual.
    grads = float_grads(rank)
    red = cx.GradientReducer(grads, compression="bf16", error_feedback=True)
    v = [g.copy() for g in grads]
    red.reduce()
    for i, g0 in enumerate(v):
        r = red.residual(i)
        assert r is not None and r.shape == g0.shape
        assert np.array_equal(r, g0 - g0.astype(ml_dtypes.bfloat16).astype(np.float32)), (
            f"step 1, gradient {i}"
        )
    new = float_grads(rank + 7)
    v = [n + red.residual(i) for i, n in enumerate(new)]
    for g, n in zip(grads, new):
        g[...] = n
    red.reduce()
    for i, vi in enumerate(v):
        expected = vi - vi.astype(ml_dtypes.bfloat16).astype(np.float32)
        assert np.allclose(red.residual(i), expected, rtol=0, atol=1e-7), f"step 2, gradient {i}"
    # Without error feedback nothing is kept.
    off = cx.GradientReducer(float_grads(rank), compression="fp16", error_feedback=False)
    assert off.residual(0) is None
    # fp16 with error feedback: what was sent plus what was kept is the gradient.
    grads = float_grads(rank)
    original = [g.copy() for g in grads]
    red = cx.GradientReducer(grads, compression="fp16")
    red.reduce()
    if size == 1:
        for i, (g, o) in enumerate(zip(grads, original)):
            assert np.allclose(g + red.residual(i), o, rtol=0, atol=1e-6), f"fp16 gradient {i}"


def error_feedback_keeps_the_sum():
    # Over many steps of the same gradient, bf16 rounding errors must not pile up:
    # with error feedback the running sum of what was received tracks the running
    # sum of the gradients far better than without (what is left is the rounding
    # of partial sums in the reduction, which no rank can feed back).
    def drift(error_feedback):
        g = np.full(1000, 1 + 2**-10, np.float32)  # not representable in bf16
        red = cx.GradientReducer([g], compression="bf16", error_feedback=error_feedback)
        received = np.zeros(1000, np.float64)
        for _ in range(50):
            g[...] = 1 + 2**-10
            red.reduce()
            received += g
        return abs(received.mean() - 50 * (1 + 2**-10))

    with_feedback, without = drift(True), drift(False)
    assert without > 0.04, without  # each step rounds 1 + 2**-10 down to 1
    assert with_feedback < without / 2, (with_feedback, without)


def broadcast_parameters_and_optimizer():
    params = [np.full(s, rank, np.float32) for s in ((3, 3), (10,), (0,))]
    cx.broadcast_parameters(params, root=size - 1)
    assert all(np.all(p == size - 1) for p in params)

    class Sgd:
        def step(self, params, grads):
            for p, g in zip(params, grads):
                p -= g

    grads = [np.full(p.shape, rank + 1, np.float32) for p in params]
    opt = cx.DistributedOptimizer(Sgd(), grads, bucket_mb=1)
    opt.ready(2)
    opt.step(params)
    mean = sum(range(1, size + 1)) / size
    assert all(np.allclose(p, size - 1 - mean) for p in params), params[0]
    raises(lambda: opt.step(params, [g.copy() for g in grads]), ValueError, "pass the arrays given")


def training_follows_one_process():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 20)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1)
    for optimizer in ("sgd", "adam"):
        common = dict(sizes=(20, 32, 32, 3), optimizer=optimizer, steps=12, global_batch=60)
        ref_model, ref = train(np, x, y, **common)
        flags = []

        def check(step, model, flags=flags):
            flags.append(identical_on_all_ranks(np.concatenate([p.ravel() for p in model.params])))

        model, losses = train(np, x, y, comm=cx.world(), on_step=check, **common)
        assert all(flags), f"{optimizer}: parameters differ across ranks at some step: {flags}"
        assert np.allclose(losses, ref, rtol=1e-5, atol=1e-6), f"{optimizer}: {losses} vs {ref}"
        for p, q in zip(model.params, ref_model.params):
            assert np.allclose(p, q, rtol=1e-4, atol=1e-5), f"{optimizer}: parameters drifted"
        # The same with gradients that are views of one symmetric buffer (no packing).
        model, flat_losses = train(
            np, x, y, comm=cx.world(), flat=lambda n: cx.zeros(n, np.float32), **common
        )
        assert np.allclose(flat_losses, ref, rtol=1e-5, atol=1e-6), f"{optimizer} flat: {flat_losses}"


for name, fn in [
    ("reducer equals per-tensor all-reduce", reducer_equals_per_tensor_allreduce),
    ("bucket paths and many pieces", bucket_paths_and_many_pieces),
    ("large bucket of separate arrays", large_bucket_of_separate_arrays),
    ("small and large arrays in one bucket", mixed_small_and_large_arrays_in_one_bucket),
    ("private edges are staged", private_edges_are_staged),
    ("huge pages change only the pages", huge_pages_change_only_the_pages),
    ("zeros_like_each", zeros_like_each_gives_one_span_per_bucket),
    ("ready in any order", ready_in_any_order),
    ("misuse", misuse_is_a_clear_error),
    ("compression", compression_is_close_and_identical),
    ("error feedback arithmetic", error_feedback_arithmetic),
    ("error feedback keeps the sum", error_feedback_keeps_the_sum),
    ("broadcast_parameters and DistributedOptimizer", broadcast_parameters_and_optimizer),
    ("training follows one process", training_follows_one_process),
]:
    cases.run(name, fn)
cases.finish()
