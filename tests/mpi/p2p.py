"""Point-to-point under mpirun: every dtype and size class (inline, separate
payload, to this rank itself), ordering, any posting order, and mismatched
receives that raise on both ranks within seconds. argv[1]: "good" or "mismatch"."""

from __future__ import annotations

import sys
import time

import collex as cx
import ml_dtypes
import numpy as np
from _harness import Cases

cx.init()
rank, size = cx.rank(), cx.size()
cases = Cases(f"p2p {sys.argv[1]}")
right, left = (rank + 1) % size, (rank - 1) % size
DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64]
# 8192 bytes is the largest payload that rides in the header's message.
SIZES = [0, 1, 7, 2048, 8192 // 8, 8192 // 8 + 1, 300_000]


def pattern(n, dtype, who, salt=0):
    return ((np.arange(n) * 7 + who * 13 + salt) % 100).astype(dtype)


def ring(n, dtype, tag):
    mine, got = pattern(n, dtype, rank, tag), np.full(n, 55, dtype)
    if rank % 2 == 0:
        cx.send(mine, right, tag=tag)
        cx.recv(got, left, tag=tag)
    else:
        cx.recv(got, left, tag=tag)
        cx.send(mine, right, tag=tag)
    assert np.array_equal(got, pattern(n, dtype, left, tag)), (n, dtype)


def every_dtype_and_size():
    for dtype in DTYPES:
        for n in SIZES:
            if size > 1 and size % 2 == 0:
                ring(n, dtype, tag=n % 1000)
            # isend/irecv around the ring works for any rank count.
            got = np.full(n, 55, dtype)
            r = cx.irecv(got, left, tag=5)
            s = cx.isend(pattern(n, dtype, rank), right, tag=5)
            assert r.wait() is got
            s.wait()
            assert np.array_equal(got, pattern(n, dtype, left)), (n, dtype)


def self_send():
    for n in (0, 5, 100_000):  # inline and beyond: both copied to the local queue
        x = pattern(n, np.float32, rank)
        cx.send(x, rank, tag=9)  # blocking send first: it must not wait for the receive
        cx.send(x * 2, rank, tag=9)
        a, b = np.zeros_like(x), np.zeros_like(x)
        cx.recv(a, rank, tag=9)
        cx.recv(b, rank, tag=9)
        assert np.array_equal(a, x) and np.array_equal(b, x * 2)
    y = np.zeros((3, 4))
    assert cx.sendrecv(np.ones((3, 4)), rank, y, rank) is y and (y == 1).all()


def posting_order_and_tags():
    if size == 1:
        return
    # Many messages of one tag arrive in posting order; other tags are matched
    # by tag, whatever order the receiver asks for them in.
    n_msgs = 6
    sends = []
    for k in range(n_msgs):
        for tag in (1, 2):
            sends.append(cx.isend(np.full(3000 if k % 2 else 3, k * 10 + tag, np.int64), right, tag=tag))
    for tag in (2, 1):
        for k in range(n_msgs):
            got = np.zeros(3000 if k % 2 else 3, np.int64)
            cx.recv(got, left, tag=tag)
            assert (got == k * 10 + tag).all(), (tag, k, got[:3])
    cx._work.wait_all(sends)
    # Posted receives match in posting order too (irecvs first, then the sends).
    got = [np.zeros(2000, np.int32) for _ in range(4)]
    works = [cx.irecv(g, left, tag=7) for g in got]
    for k in range(4):
        cx.send(np.full(2000, k, np.int32), right, tag=7)
    for k, w in enumerate(works):
        assert (w.wait() == k).all()
    assert cx._core  # noqa: B015


def batch_opposite_orders():
    if size == 1:
        return
    n = 1 << 20  # rendezvous-sized: a blocking send first on both ranks would wait forever
    a = np.full(n, rank, np.float32)
    b = np.zeros(n, np.float32)
    c = np.zeros(n, np.float32)
    ops = [("send", a, right, 4), ("recv", b, left, 4), ("send", a, left, 6), ("recv", c, right, 6)]
    if rank % 2:
        ops.reverse()
    works = cx.batch_p2p(ops)
    for w in works:
        w.wait()
    assert (b == left).all() and (c == right).all()
    # sendrecv both ways at once.
    y = np.zeros((4, 5000))
    cx.sendrecv(np.full((4, 5000), rank * 1.0), right, y, left, tag=11)
    assert (y == left).all()


def interleaved_with_collectives():
    if size == 1:
        return
    x = np.ones(1 << 16, np.float32)
    got = np.zeros(10, np.int32)
    w = cx.irecv(got, left, tag=3)
    cx.allreduce(x)
    cx.send(np.arange(10, dtype=np.int32) + rank, right, tag=3)
    a = cx.allreduce(np.ones(4), async_op=True)
    assert (w.wait() == np.arange(10) + left).all()
    assert (a.wait() == size).all() and (x == size).all()


def on_a_split_communicator():
    sub = cx.world().split(color=rank % 2, key=rank)
    if sub.size > 1:
        y = np.zeros(3, np.int64)
        sub.sendrecv(np.full(3, sub.rank), (sub.rank + 1) % sub.size, y, (sub.rank - 1) % sub.size)
        assert (y == (sub.rank - 1) % sub.size).all()
    sub.shutdown()


# ---- mismatches: 2 ranks or more; ranks 0 and 1 take part, the others watch ----

MISMATCHES = [
    # (label, what rank 0 sends, what rank 1 receives into)
    ("count small", np.ones(1000, np.float32), np.zeros(2000, np.float32)),
    ("count large", np.ones(1 << 20, np.float32), np.zeros(1 << 21, np.float32)),
    ("dtype small", np.ones(16, np.float32), np.zeros(16, np.float64)),
    ("dtype same bytes", np.ones(2048, np.float32), np.zeros(2048, np.int32)),
    ("dtype large", np.ones(1 << 20, np.float32), np.zeros(1 << 20, np.int32)),
    ("shape small", np.ones((4, 8), np.float32), np.zeros((8, 4), np.float32)),
    ("shape large", np.ones((512, 1024), np.float32), np.zeros((1024, 512), np.float32)),
    ("fewer bytes", np.ones(1 << 21, np.uint8), np.zeros(100, np.uint8)),
]


def mismatch(label, sent, into, posted):
    """Rank 0 sends, rank 1 receives into a buffer that does not fit: both raise
    CollectiveMismatch within seconds (the timeout is 60 s) naming both sides,
    rank 1's buffer stays untouched, and afterwards the pair still exchanges
    messages and the communicator runs collectives. `posted`: whether rank 0 uses
    isend (the error comes from Work.wait) and rank 1 irecv."""
    t0 = time.monotonic()
    if rank == 0:
        try:
            if posted:
                cx.isend(sent, 1, tag=2).wait()
            else:
                cx.send(sent, 1, tag=2)
        except cx.CollectiveMismatch as e:
            msg = str(e)
            assert "[rank 0] collex.send to rank 1 tag 2: rank 1 refused" in msg, msg
            assert str(sent.dtype) in msg and str(into.dtype) in msg, msg
        else:
            raise AssertionError(f"{label}: rank 0 raised nothing")
    elif rank == 1:
        before = into.copy()
        try:
            if posted:
                cx.irecv(into, 0, tag=2).wait()
            else:
                cx.recv(into, 0, tag=2)
        except cx.CollectiveMismatch as e:
            msg = str(e)
            assert "[rank 1] collex.recv from rank 0 tag 2" in msg, msg
            assert str(sent.dtype) in msg and str(into.dtype) in msg, msg
            if sent.shape != into.shape:
                assert str(sent.shape)[1:-1] in msg and str(into.shape)[1:-1] in msg, msg
        else:
            raise AssertionError(f"{label}: rank 1 received without error")
        assert np.array_equal(into, before), f"{label}: rank 1's buffer was written"
    took = time.monotonic() - t0
    assert took < 10, f"{label}: took {took:.1f} s"
    assert not cx.world().broken
    got = np.zeros(4, np.int64)
    if rank == 0:
        cx.send(np.arange(4), 1, tag=2)
    elif rank == 1:
        cx.recv(got, 0, tag=2)
        assert (got == np.arange(4)).all()
    assert (cx.allreduce(np.ones(3)) == size).all()


def mismatch_to_self():
    cx.send(np.ones(5), rank, tag=1)
    y = np.zeros(6)
    try:
        cx.recv(y, rank, tag=1)
    except cx.CollectiveMismatch as e:
        assert "shape (5,)" in str(e) and "shape (6,)" in str(e), str(e)
    else:
        raise AssertionError("a mismatched receive from self raised nothing")
    assert (y == 0).all()


def no_sender():
    """A receive nobody sends to times out (COLLEX_TIMEOUT=2) naming the call and
    breaks the communicator; a send nobody receives, likewise."""
    t0 = time.monotonic()
    try:
        if rank == 0:
            cx.recv(np.zeros(4, np.float32), 1, tag=8)
        else:
            cx.send(np.zeros(4, np.float32), 0, tag=9)
    except cx.CollectiveTimeout as e:
        peer = 1 if rank == 0 else 0
        verb = "recv from" if rank == 0 else "send to"
        assert f"[rank {rank}] collex.{verb} rank {peer} tag" in str(e) and "after 2 s" in str(e), str(e)
    else:
        raise AssertionError("no timeout")
    assert time.monotonic() - t0 < 8
    assert cx.world().broken
    try:
        cx.send(np.zeros(1), 0)
    except cx.CommunicatorBroken:
        pass
    else:
        raise AssertionError("a broken communicator took a send")


if sys.argv[1] == "timeout":
    cases.run("no sender", no_sender)
elif sys.argv[1] == "good":
    cases.run("every dtype and size", every_dtype_and_size)
    cases.run("send to self", self_send)
    cases.run("posting order and tags", posting_order_and_tags)
    cases.run("batch_p2p in opposite orders", batch_opposite_orders)
    cases.run("interleaved with collectives", interleaved_with_collectives)
    cases.run("split communicator", on_a_split_communicator)
else:
    for label, sent, into in MISMATCHES:
        for posted in (False, True):
            cases.run(f"mismatch {label} posted={posted}", lambda: mismatch(label, sent, into, posted))  # noqa: B023
    cases.run("mismatch to self", mismatch_to_self)
cases.finish()
