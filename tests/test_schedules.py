"""The algorithms' schedules, checked without any transport: every rank's steps
are simulated together (sends complete at once, each receive waits for its
message, as on a real transport), for rank counts beyond what mpirun tests reach.
A schedule passes when every message is matched in order with the right size,
no rank is left waiting (no deadlock), and the symbolic result is right."""

from __future__ import annotations

import numpy as np
import pytest
from collex import _core

RANKS = list(range(1, 10)) + [12, 16]
COUNTS = [0, 1, 2, 7, 64, 129]
CHUNKS = [1, 5, 1000]


def simulate(
    name: str,
    size: int,
    count: int,
    chunk: int,
    root: int = 0,
    average: bool = False,
    buffers: list[np.ndarray] | None = None,
    reduce=np.add,
    inputs: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Runs every rank's schedule on buffers[r] (a working buffer per rank); steps
    marked from_input read inputs[r] (the working buffer itself when None, i.e. in place)."""
    inputs = inputs if inputs is not None else buffers
    steps = [_core._schedule(name, r, size, count, chunk, root, average) for r in range(size)]
    if size == 1:
        # Alone there is nothing to exchange: the communicator copies input to output.
        assert steps == [[]], steps
        buffers[0][...] = inputs[0]
        return buffers
    pc = [0] * size
    queues: dict[tuple[int, int, int], list[np.ndarray]] = {}  # (src, dst, channel) -> messages
    while True:
        progressed = False
        for r in range(size):
            while pc[r] < len(steps[r]):
                kind, channel, _round, peer, off, n, from_input = steps[r][pc[r]]
                src = inputs[r] if from_input else buffers[r]
                if kind == "send":
                    queues.setdefault((r, peer, channel), []).append(src[off : off + n].copy())
                elif kind in ("recv_reduce", "recv_copy"):
                    q = queues.get((peer, r, channel))
                    if not q:
                        break  # waits for its message
                    msg = q.pop(0)
                    assert msg.size == n, f"{name}: rank {r} wanted {n} elements from {peer}, got {msg.size}"
                    if kind == "recv_reduce":
                        buffers[r][off : off + n] = reduce(src[off : off + n], msg)
                    else:
                        buffers[r][off : off + n] = msg
                else:  # divide
                    buffers[r][off : off + n] /= size
                pc[r] += 1
                progressed = True
        if all(pc[r] == len(steps[r]) for r in range(size)):
            break
        if not progressed:
            stuck = {r: steps[r][pc[r]] for r in range(size) if pc[r] < len(steps[r])}
            raise AssertionError(f"{name} deadlocks with {size} ranks: {stuck}")
    left = {k: len(v) for k, v in queues.items() if v}
    assert not left, f"{name}: unreceived messages {left}"
    return buffers


def inputs(size: int, count: int) -> list[np.ndarray]:
    # Distinct powers of two per rank make every partial sum identify its contributors.
    return [np.arange(count, dtype=np.float64) * 1000 + 2.0**r for r in range(size)]


@pytest.mark.parametrize("algo", ["ring_allreduce", "tree_allreduce"])
@pytest.mark.parametrize("size", RANKS)
def test_allreduce(algo, size):
    for count in COUNTS:
        for chunk in CHUNKS:
            for average in (False, True):
                ins = inputs(size, count)
                want = sum(ins) / (size if average else 1)
                # In place, and out of place into buffers that start as NaN: a
                # schedule that left an element unwritten would show it.
                for out_of_place in (False, True):
                    bufs = [np.full(count, np.nan) if out_of_place else x.copy() for x in ins]
                    out = simulate(
                        algo,
                        size,
                        count,
                        chunk,
                        average=average,
                        buffers=bufs,
                        inputs=[x.copy() for x in ins] if out_of_place else None,
                    )
                    for r in range(size):
                        np.testing.assert_allclose(
                            out[r], want, err_msg=f"rank {r} count={count} chunk={chunk}"
                        )


@pytest.mark.parametrize("size", RANKS)
def test_reduce_scatter_and_allgather(size):
    for n in (0, 1, 3, 50):
        for chunk in CHUNKS:
            ins = inputs(size, n * size)
            bufs = [np.full(n * size, np.nan) for _ in range(size)]
            out = simulate("ring_reduce_scatter", size, n * size, chunk, buffers=bufs, inputs=ins)
            total = sum(ins)
            for r in range(size):
                np.testing.assert_allclose(out[r][r * n : (r + 1) * n], total[r * n : (r + 1) * n])
            blocks = [np.zeros(n * size) for _ in range(size)]
            for r in range(size):
                blocks[r][r * n : (r + 1) * n] = r + 1
            out = simulate("ring_allgather", size, n * size, chunk, buffers=blocks)
            want = np.repeat(np.arange(1, size + 1, dtype=np.float64), n)
            for r in range(size):
                np.testing.assert_array_equal(out[r], want)


@pytest.mark.parametrize("algo", ["ring_broadcast", "tree_broadcast"])
@pytest.mark.parametrize("size", RANKS)
def test_broadcast_every_root(algo, size):
    for root in range(size):
        for count, chunk in ((0, 1), (1, 1), (37, 5), (37, 1000)):
            bufs = [np.full(count, -1.0) for _ in range(size)]
            bufs[root] = np.arange(count, dtype=np.float64)
            out = simulate(algo, size, count, chunk, root=root, buffers=bufs)
            for r in range(size):
                np.testing.assert_array_equal(out[r], np.arange(count, dtype=np.float64))


@pytest.mark.parametrize("size", RANKS)
def test_reduce_every_root(size):
    for root in range(size):
        for count, chunk in ((1, 1), (37, 5)):
            ins = inputs(size, count)
            bufs = [np.full(count, np.nan) for _ in range(size)]
            out = simulate("tree_reduce", size, count, chunk, root=root, buffers=bufs, inputs=ins)
            np.testing.assert_allclose(out[root], sum(ins))


def test_reduction_order_is_fixed():
    """Floating-point sums depend on order; the schedule fixes it, so every rank and
    every run agree bitwise. Concatenation as the 'reduction' exposes the order."""
    for algo in ("ring_allreduce", "tree_allreduce"):
        for size in (3, 5):
            orders = []
            for _ in range(2):
                ins = [np.array([str(r)] * 4, dtype=object) for r in range(size)]
                bufs = [np.array([""] * 4, dtype=object) for _ in range(size)]
                out = simulate(algo, size, 4, 1, buffers=bufs, inputs=ins, reduce=lambda a, b: a + b)
                assert all(sorted(v) == [str(r) for r in range(size)] for v in out[0])
                assert all((o == out[0]).all() for o in out), f"{algo}: ranks disagree"
                orders.append(list(out[0]))
            assert orders[0] == orders[1]


@pytest.mark.parametrize("size", RANKS)
def test_barrier_hears_from_everyone(size):
    # Track whom each rank has (transitively) heard from: a barrier must reach all.
    steps = [_core._schedule("barrier", r, size, 0, 1) for r in range(size)]
    for r in range(size):
        assert all(st[5] == 0 for st in steps[r])
    # Each round is a send then a receive; propagate the sets along the sends.
    heard = [set([r]) for r in range(size)]
    rounds = max((len(s) for s in steps), default=0) // 2
    for k in range(rounds):
        sent = {steps[r][2 * k][3]: set(heard[r]) for r in range(size)}
        for r in range(size):
            heard[r] |= sent[r]
    assert all(h == set(range(size)) for h in heard), heard
