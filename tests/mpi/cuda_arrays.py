"""Collectives and the training layer on CuPy arrays (run by tests/test_cuda.py
only where a GPU and CuPy are present). The ranks may share one GPU. Every
result is checked against NumPy arithmetic on the same rank-dependent data."""

from __future__ import annotations

import os
import sys

import collex as cx
import cupy as cp
import numpy as np
from _harness import Cases, identical_on_all_ranks
from collex._work import wait_all

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))

cx.init()
comm = cx.world()
rank, size = comm.rank, comm.size
cp.cuda.Device(comm.local_rank % cp.cuda.runtime.getDeviceCount()).use()
cases = Cases("cuda_arrays")

DTYPES = (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64)
COUNTS = (0, 1, 7, 1000, (1 << 18) + 3)


def data(r: int, count: int, dtype, salt: int = 0) -> np.ndarray:
    """Rank r's input: small values so that sums and products stay exact."""
    v = (np.arange(count) * 7 + r * 3 + salt) % 5 + 1
    return v.astype(dtype)


def everyone(count, dtype, salt=0):
    return np.stack([data(r, count, dtype, salt) for r in range(size)])


def reference(op, count, dtype):
    all_ = everyone(count, dtype)
    if op == "sum":
        return all_.sum(axis=0, dtype=dtype)
    if op == "prod":
        return all_.prod(axis=0, dtype=dtype)
    if op == "min":
        return all_.min(axis=0)
    if op == "max":
        return all_.max(axis=0)
    return (all_.astype(np.float64).sum(axis=0) / size).astype(dtype)


def allreduce_matrix():
    for dtype in DTYPES:
        ops = ("sum", "prod", "min", "max") + (("avg",) if np.dtype(dtype).kind == "f" else ())
        for count in COUNTS:
            for op in ops:
                if op == "prod" and count > 1000:
                    continue
                x = cp.asarray(data(rank, count, dtype))
                got = cx.allreduce(x, op=op)
                assert got is x, "in place returns x"
                want = reference(op, count, dtype)
                tol = 1e-2 if dtype == np.float16 else 1e-6
                if np.dtype(dtype).kind == "f":
                    ok = np.allclose(cp.asnumpy(got), want, rtol=tol)
                else:
                    ok = np.array_equal(cp.asnumpy(got), want)
                assert ok, f"allreduce {op} {np.dtype(dtype)} x{count}"
                assert identical_on_all_ranks(cp.asnumpy(got)), f"{op} {np.dtype(dtype)} differs"


def path_taken():
    # On one node with the kernels built, all-reduce reads peers' device memory
    # (CUDA IPC) unless COLLEX_CUDA_IPC=0; otherwise it stages through the host,
    # but for the lanes, which run inside each node of several.
    x = cp.ones(1 << 19, cp.float32)  # 2 MiB: above the size where IPC starts
    cx.allreduce(x)
    from collex import _cuda

    how = os.environ.get("COLLEX_CUDA_IPC", "1")
    one_node = comm.local_size == size  # else the lanes run inside each node (cuda/across_nodes.py)
    reachable = one_node or (how == "lanes" and comm.local_size > 1)
    want = size > 1 and _cuda.has_kernels and how != "0" and reachable
    taken = comm._device._lanes if how == "lanes" else comm._device._ipc
    assert bool(taken) == want, (taken, want)
    if taken and how == "lanes" and one_node:
        # Ranks sharing a GPU without MPS take turns (IPC events); COLLEX_CUDA_ORDER forces a way.
        from collex.cuda import mps_running
        from collex.cuda.turns import TurnPeers

        order = os.environ.get("COLLEX_CUDA_ORDER", "auto")
        sharing = _cuda.device_count() < size and not mps_running()
        assert isinstance(taken, TurnPeers) == (order == "events" or (order == "auto" and sharing)), taken


def out_and_async():
    x = cp.asarray(data(rank, 1000, np.float32))
    out = cp.empty_like(x)
    assert cx.allreduce(x, out=out) is out
    np.testing.assert_array_equal(cp.asnumpy(x), data(rank, 1000, np.float32))  # x untouched
    np.testing.assert_allclose(cp.asnumpy(out), reference("sum", 1000, np.float32))
    w = cx.allreduce(x, op="max", async_op=True)
    assert w.wait() is x and w.done()
    np.testing.assert_array_equal(cp.asnumpy(x), reference("max", 1000, np.float32))


def on_a_stream():
    # The input is written on a non-default stream just before the call: the copy
    # down must be ordered after that work (the array interface carries the stream).
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        x = cp.full(1 << 22, rank + 1, cp.float32)
        for _ in range(20):
            x *= 1.0  # queue some work ahead of the collective
        cx.allreduce(x)
        total = float(x[-1].get())
    assert total == size * (size + 1) / 2, total


def back_to_back():
    # Copies up are queued, not waited for; the next call must not write the
    # staging buffer before they have read it (a broadcast's receivers write it
    # from the host first). Results are checked only at the end, so that nothing
    # in between waits for the stream.
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        xs, ys = [], []
        for i in range(12):
            xs.append(cp.full(300_000, rank + i, cp.float32))
            cx.allreduce(xs[-1])
            ys.append(cp.full(300_000, i if rank == 0 else -1, cp.float32))
            cx.broadcast(ys[-1], root=0)
        for i, (x, y) in enumerate(zip(xs, ys)):
            assert (x == sum(r + i for r in range(size))).all(), f"all-reduce {i}"
            assert (y == i).all(), f"broadcast {i}"


def many_small_without_waiting():
    # Small all-reduces queued back to back and checked only at the end: each
    # reuses the staging buffers and flags (the sequence numbers) while the
    # host never waits.
    xs = [cp.full(1000 + i, rank + i, cp.float32) for i in range(200)]
    for x in xs:
        cx.allreduce(x)
    for i, x in enumerate(xs):
        assert (x == sum(r + i for r in range(size))).all(), f"all-reduce {i}"


def written_right_after():
    # A kernel writing the input right after an async all-reduce runs after it:
    # both are on the array's stream.
    x = cp.full(1 << 20, rank + 1, cp.float32)
    w = cx.allreduce(x, async_op=True)
    x *= 2
    w.wait()
    assert (x == size * (size + 1)).all()


def at_odd_offsets():
    # Views one element into their buffers (not 16-byte aligned), in place and out.
    for count in (1001, (1 << 18) + 5):
        base = cp.asarray(data(rank, count, np.float32))
        out = cp.zeros(count, cp.float32)
        want = reference("sum", count, np.float32)[1:]
        cx.allreduce(base[1:], out=out[1:])
        np.testing.assert_array_equal(cp.asnumpy(out[1:]), want)
        cx.allreduce(base[1:])
        np.testing.assert_array_equal(cp.asnumpy(base[1:]), want)


def rooted_and_gathers():
    count = 4099
    for root in range(size):
        x = cp.asarray(data(rank, count, np.float64))
        cx.broadcast(x, root=root)
        np.testing.assert_array_equal(cp.asnumpy(x), data(root, count, np.float64))
        x = cp.asarray(data(rank, count, np.int32))
        got = cx.reduce(x, op="sum", root=root)
        want = reference("sum", count, np.int32) if rank == root else data(rank, count, np.int32)
        np.testing.assert_array_equal(cp.asnumpy(got), want)
    x = cp.asarray(data(rank, count, np.float32))
    g = cx.allgather(x)
    assert isinstance(g, cp.ndarray) and g.shape == (size, count)
    np.testing.assert_array_equal(cp.asnumpy(g), everyone(count, np.float32))
    x = cp.asarray(data(rank, size * 6 * 5, np.float32).reshape(size * 6, 5))
    rs = cx.reduce_scatter(x)
    full = everyone(size * 6 * 5, np.float32).sum(axis=0).reshape(size * 6, 5)
    np.testing.assert_allclose(cp.asnumpy(rs), full[rank * 6 : (rank + 1) * 6])
    out = cp.zeros((6, 5), cp.float32)
    assert cx.reduce_scatter(x, out=out) is out


def every_collective_in_rounds_on_a_stream():
    # Arrays larger than the stream-ordered path's 32 MiB staging buffers (several
    # rounds; reduce-scatter's round takes a ranks'th of it), queued on a
    # non-default stream without waiting and checked at the end.
    s = cp.cuda.Stream(non_blocking=True)
    count, block = 9_000_001, 3_000_001
    with s:
        b = cp.asarray(data(rank, count, np.float32))
        cx.broadcast(b, root=size - 1)
        r = cp.asarray(data(rank, count, np.float32))
        red = cp.zeros(count, cp.float32)
        cx.reduce(r, op="max", root=0, out=red)
        g = cx.allgather(cp.asarray(data(rank, block, np.int32)))
        rs = cx.reduce_scatter(cp.asarray(data(rank, size * block, np.int32, salt=2)))
        w = cx.broadcast(cp.asarray(data(rank, 1000, np.float64)), root=0, async_op=True)
        small = w.wait()
    np.testing.assert_array_equal(cp.asnumpy(b), data(size - 1, count, np.float32))
    want = reference("max", count, np.float32) if rank == 0 else np.zeros(count, np.float32)
    np.testing.assert_array_equal(cp.asnumpy(red), want)
    np.testing.assert_array_equal(cp.asnumpy(g), everyone(block, np.int32))
    full = everyone(size * block, np.int32, salt=2).sum(axis=0, dtype=np.int32)
    np.testing.assert_array_equal(cp.asnumpy(rs), full[rank * block : (rank + 1) * block])
    np.testing.assert_array_equal(cp.asnumpy(small), data(0, 1000, np.float64))


def point_to_point():
    if size < 2:
        return
    x = cp.asarray(data(rank, 777, np.int64))
    if rank == 0:
        cx.send(x, 1, tag=5)
    elif rank == 1:
        y = cp.zeros(777, cp.int64)
        cx.recv(y, 0, tag=5)
        np.testing.assert_array_equal(cp.asnumpy(y), data(0, 777, np.int64))
    # A ring on a non-default stream in which each sender overwrites its array as
    # soon as the send returns (device to device with COLLEX_CUDA_IPC=lanes: the
    # receiver's copy is ordered before that write by the streams alone), then a
    # send to this rank itself before its receive, the array changed between.
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    with cp.cuda.Stream(non_blocking=True):
        for i in range(20):
            x = cp.full(1 << 20, rank * 100 + i, cp.float32)
            y = cp.zeros(1 << 20, cp.float32)
            wait_all(cx.batch_p2p([("recv", y, prv), ("send", x, nxt)]))
            x.fill(-7)
            got = (float(y.min()), float(y.max()))
            assert got == (prv * 100 + i, prv * 100 + i), f"round {i}: {got}"
        x = cp.arange(1000, dtype=cp.float64)
        cx.send(x, rank, tag=7)
        x.fill(0)
        y = cp.zeros(1000, cp.float64)
        cx.recv(y, rank, tag=7)
        np.testing.assert_array_equal(cp.asnumpy(y), np.arange(1000, dtype=np.float64))


def in_pieces():
    # Above 16 MiB an all-reduce is pipelined in 8 MiB pieces (the last one short).
    # (over CUDA IPC, the 40 MB one goes through the 32 MiB device buffer in two pieces)
    for dtype, count, op in (
        (np.float32, 5_000_003, "avg"),
        (np.int64, 3_000_001, "sum"),
        (np.float32, 10_000_003, "sum"),
    ):
        x = cp.asarray(data(rank, count, dtype))
        out = cp.zeros_like(x)
        cx.allreduce(x, op=op, out=out)
        want = reference(op, count, dtype)
        np.testing.assert_allclose(cp.asnumpy(out), want, rtol=1e-6)
        np.testing.assert_array_equal(cp.asnumpy(x), data(rank, count, dtype))  # x untouched
        cx.allreduce(x, op=op)  # in place
        np.testing.assert_array_equal(cp.asnumpy(x), cp.asnumpy(out))


def bad_arguments():
    x = cp.zeros((4, 4), cp.float32)[:, ::2]
    for fn, exc, needle in (
        (lambda: cx.allreduce(x), ValueError, "C-contiguous"),
        (lambda: cx.allreduce(cp.zeros(4, cp.complex64)), TypeError, "unsupported dtype"),
        (lambda: cx.allreduce(cp.zeros(4, cp.float32), out=np.zeros(4, np.float32)), TypeError, "out:"),
        (lambda: cx.allreduce(cp.zeros(4, cp.float32), out=cp.zeros(5, cp.float32)), ValueError, "shape"),
    ):
        try:
            fn()
        except exc as e:
            assert needle in str(e) and f"[rank {rank}]" in str(e), str(e)
        else:
            raise AssertionError(f"expected {exc.__name__} ({needle})")
    y = cp.ones(3, cp.float32)
    cx.allreduce(y)  # still usable
    assert float(y[0].get()) == size


def reducer_matches_per_tensor():
    shapes = [(300, 200), (200,), (200, 10), (10,), (0,), (33, 3)]
    for compression in (None, "fp16", "bf16"):
        grads = [
            cp.asarray(data(rank, int(np.prod(s)), np.float32, salt=i).reshape(s))
            for i, s in enumerate(shapes)
        ]
        red = cx.GradientReducer(grads, bucket_mb=0.1, first_bucket_mb=0.05, compression=compression)
        order = list(range(len(grads)))
        np.random.default_rng(rank).shuffle(order)  # each rank marks them in its own order
        for i in order[:-1]:
            red.ready(i)
        red.reduce()
        for i, (g, s) in enumerate(zip(grads, shapes)):
            want = (everyone(int(np.prod(s)), np.float32, salt=i).sum(axis=0) / size).reshape(s)
            tol = 1e-6 if compression is None else 2e-2
            np.testing.assert_allclose(cp.asnumpy(g), want, rtol=tol, atol=tol)
            assert identical_on_all_ranks(cp.asnumpy(g))
        # misuse keeps its error on the device path
        red.ready(0)
        try:
            red.ready(0)
        except ValueError as e:
            assert "ready" in str(e)
        else:
            raise AssertionError("ready twice did not raise")
        red.reduce()


def reducer_on_the_gpu():
    # On the stream-ordered path (COLLEX_CUDA_IPC=lanes, no compression) the
    # gradients never leave the GPU: zeros_like_each's are spans averaged in
    # place, separate arrays go through fusion buffers; the work is queued on a
    # non-default stream and wait() returns without waiting for it.
    lanes = os.environ.get("COLLEX_CUDA_IPC") == "lanes" and size > 1
    params = [cp.empty(s, cp.float32) for s in [(300, 200), (200,), (0,), (33, 3)]] + [
        cp.empty(70, cp.float16)
    ]
    for flat in (True, False):
        grads = cx.cuda.zeros_like_each(params) if flat else [cp.zeros_like(p) for p in params]
        red = cx.GradientReducer(grads, bucket_mb=0.1, first_bucket_mb=0.05)
        assert (red._device is not None) == lanes, (red._device, lanes)
        if lanes and flat:
            assert {b["path"] for b in red.bucket_info()} == {"span"}, red.bucket_info()
        s = cp.cuda.Stream(non_blocking=True)
        for step in range(3):
            with s:
                for i, g in enumerate(grads):
                    g[...] = cp.asarray(data(rank, g.size, g.dtype, salt=i + step).reshape(g.shape))
                    red.ready(i)
                red.wait()
                got = [cp.asnumpy(g) for g in grads]  # ordered on s after the averages
            for i, g in enumerate(got):
                want = everyone(g.size, np.float64, salt=i + step).sum(axis=0) / size
                np.testing.assert_allclose(g.astype(np.float64).ravel(), want, rtol=1e-3)
                assert identical_on_all_ranks(g), f"grads[{i}] differs"


class DlpackOnly:
    """A CUDA array that speaks DLPack alone (as JAX's do): the DLPack path, not CAI."""

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, **kw):
        return self.t.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def torch_tensors_by_dlpack():
    # PyTorch CUDA tensors, as they come (__cuda_array_interface__) and through
    # DLPack alone, in place and out of place, every collective; against NumPy.
    try:
        import torch
    except ImportError:
        print(f"[rank {rank}] torch_tensors_by_dlpack: PyTorch is not installed; skipped")
        return
    if not torch.cuda.is_available():
        print(f"[rank {rank}] torch_tensors_by_dlpack: PyTorch sees no GPU; skipped")
        return
    dev = torch.device("cuda", cp.cuda.Device().id)
    for count in (1, 1000, (1 << 20) + 3):
        for wrap in (lambda t: t, DlpackOnly):
            t = torch.as_tensor(data(rank, count, np.float32), device=dev)
            cx.allreduce(wrap(t))
            np.testing.assert_array_equal(t.cpu().numpy(), everyone(count, np.float32).sum(axis=0))
            t = torch.as_tensor(data(rank, count, np.float32), device=dev)
            out = torch.zeros(count, dtype=torch.float32, device=dev)
            cx.allreduce(wrap(t), op="max", out=wrap(out))
            np.testing.assert_array_equal(out.cpu().numpy(), everyone(count, np.float32).max(axis=0))
            t = torch.as_tensor(data(rank, count, np.float32), device=dev)
            cx.broadcast(wrap(t), root=size - 1)
            np.testing.assert_array_equal(t.cpu().numpy(), data(size - 1, count, np.float32))
            gathered = torch.zeros((size, count), dtype=torch.float32, device=dev)
            cx.allgather(wrap(torch.as_tensor(data(rank, count, np.float32), device=dev)), out=wrap(gathered))
            np.testing.assert_array_equal(gathered.cpu().numpy(), everyone(count, np.float32))


def large_calls_read_arrays_in_place():
    # From 8 MiB on the lanes read CuPy's arrays in place (their pool's memory is
    # cudaMalloc'd, so exportable): every collective there, results against NumPy.
    if os.environ.get("COLLEX_CUDA_IPC") != "lanes" or size == 1 or comm.local_size != size:
        return
    count = (8 << 20) // 4 + 5
    x = cp.asarray(data(rank, count, np.float32))
    cx.allreduce(x)
    lanes = comm._device._lanes
    assert lanes.last_way == "direct", lanes.last_way
    before = lanes.registry.exchanges
    np.testing.assert_array_equal(cp.asnumpy(x), everyone(count, np.float32).sum(axis=0))
    out = cp.zeros(count, cp.float32)
    cx.reduce(cp.asarray(data(rank, count, np.float32)), root=0, out=out)
    if rank == 0:
        np.testing.assert_array_equal(cp.asnumpy(out), everyone(count, np.float32).sum(axis=0))
    x = cp.asarray(data(rank, count, np.float32))
    cx.broadcast(x, root=size - 1)
    np.testing.assert_array_equal(cp.asnumpy(x), data(size - 1, count, np.float32))
    gathered = cx.allgather(cp.asarray(data(rank, count, np.float32)))
    np.testing.assert_array_equal(cp.asnumpy(gathered), everyone(count, np.float32))
    part = cx.reduce_scatter(cp.asarray(data(rank, size * count, np.float32)))
    want = everyone(size * count, np.float32).sum(axis=0)[rank * count : (rank + 1) * count]
    np.testing.assert_array_equal(cp.asnumpy(part), want)
    assert lanes.registry.exchanges - before == 4, lanes.registry.exchanges - before


def reducer_refuses_a_mix():
    try:
        cx.GradientReducer([cp.zeros(4, cp.float32), np.zeros(4, np.float32)])
    except TypeError as e:
        assert "mix of CUDA and host" in str(e), str(e)
    else:
        raise AssertionError("a mix of device and host gradients was accepted")


def training_follows_numpy():
    from mlp import train

    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, 16)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    common = dict(sizes=(16, 32, 4), optimizer="adam", steps=12, global_batch=24)
    _, host = train(np, x, y, comm=comm, **common)
    same = [True]

    def check(step, model):
        same[0] &= identical_on_all_ranks(np.concatenate([cp.asnumpy(p).ravel() for p in model.params]))

    _, dev = train(cp, cp.asarray(x), cp.asarray(y), comm=comm, on_step=check, **common)
    assert same[0], "parameters differ between ranks"
    np.testing.assert_allclose(dev, host, rtol=1e-4, atol=1e-5)


for label, fn in [
    ("allreduce matrix", allreduce_matrix),
    ("all-reduce path (CUDA IPC or host staging)", path_taken),
    ("out= and async_op", out_and_async),
    ("ordered on the array's stream", on_a_stream),
    ("back-to-back calls reuse staging safely", back_to_back),
    ("many small all-reduces without waiting", many_small_without_waiting),
    ("a kernel writing the input after an async all-reduce", written_right_after),
    ("arrays at odd offsets", at_odd_offsets),
    ("broadcast, reduce, allgather, reduce_scatter", rooted_and_gathers),
    ("every collective in many rounds on a stream", every_collective_in_rounds_on_a_stream),
    ("send/recv", point_to_point),
    ("pipelined all-reduce", in_pieces),
    ("bad arguments", bad_arguments),
    ("GradientReducer on CuPy gradients", reducer_matches_per_tensor),
    ("GradientReducer on the GPU (lanes) or the host mirror", reducer_on_the_gpu),
    ("GradientReducer refuses a mix", reducer_refuses_a_mix),
    ("PyTorch tensors, by DLPack too", torch_tensors_by_dlpack),
    ("large calls read the arrays in place", large_calls_read_arrays_in_place),
    ("CuPy training follows NumPy training", training_follows_numpy),
]:
    cases.run(label, fn)
cases.finish()
