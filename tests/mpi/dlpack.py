"""Host arrays that come by DLPack only (no buffer protocol, like a PyTorch CPU
tensor) through the collectives: read and written in place, results right, a
read-only one refused where it would be written."""

from __future__ import annotations

import collex as cx
import numpy as np
from _harness import Cases

cx.init()
comm = cx.world()
rank, size = comm.rank, comm.size
cases = Cases("dlpack")


class Producer:
    """An array reachable only through DLPack (as a PyTorch CPU tensor is)."""

    def __init__(self, a: np.ndarray):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def in_place():
    a = np.full(1000, rank + 1, np.float32)
    cx.allreduce(Producer(a))
    assert (a == size * (size + 1) / 2).all(), a[:3]
    b = np.arange(77, dtype=np.int64) * (rank == 0)
    cx.broadcast(Producer(b), root=0)
    assert (b == np.arange(77)).all()


def out_of_place():
    a = np.full(10, rank, np.float64)
    g = cx.allgather(Producer(a))
    assert isinstance(g, np.ndarray) and g.shape == (size, 10) and (g == np.arange(size)[:, None]).all()
    out = np.zeros(10, np.float64)
    cx.allreduce(Producer(a), out=Producer(out), op="max")
    assert (out == size - 1).all()


def read_only_refused():
    a = np.ones(8, np.float32)
    a.flags.writeable = False
    try:
        cx.allreduce(Producer(a))
    except ValueError as e:
        assert "read-only" in str(e), str(e)
    else:
        raise AssertionError("a read-only DLPack array was written in place")
    out = np.zeros(8, np.float32)
    cx.allreduce(Producer(a), out=out)  # reading it is fine
    assert (out == size).all()


for label, fn in [
    ("in place", in_place),
    ("out of place", out_of_place),
    ("read-only refused", read_only_refused),
]:
    cases.run(label, fn)
cases.finish()
