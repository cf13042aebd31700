"""Bad arguments raise a clear TypeError/ValueError naming the operation, the rank
and the argument, before anything touches the wire; the communicator stays usable.
Every rank passes the same bad arguments."""

from __future__ import annotations

import collex as cx
import numpy as np
from _harness import Cases, raises

cx.init()
rank, size = cx.rank(), cx.size()
cases = Cases("bad_input")


def expect(label, exc, needle, fn):
    """A case: fn raises exc saying needle (a string, or several that must all be there)."""
    needles = [needle] if isinstance(needle, str) else needle
    cases.run(label, lambda: raises(fn, exc, *needles))


x = np.ones(8, np.float32)
ro = np.ones(8, np.float32)
ro.setflags(write=False)
strided = np.ones((4, 4))[:, ::2]
where = f"[rank {rank}]"

expect(
    "non-contiguous",
    ValueError,
    ["collex.allreduce", where, "x:", "C-contiguous", "strides=(32, 16)"],
    lambda: cx.allreduce(strided),
)
expect("read-only in place", ValueError, ["read-only", "x:"], lambda: cx.allreduce(ro))
expect("read-only out", ValueError, ["read-only", "out:"], lambda: cx.allreduce(x, out=ro))
expect(
    "complex dtype",
    TypeError,
    ["unsupported dtype complex64", "bfloat16"],
    lambda: cx.allreduce(np.ones(4, np.complex64)),
)
expect("bool dtype", TypeError, "unsupported dtype bool", lambda: cx.broadcast(np.ones(4, bool)))
expect("list", TypeError, ["buffer protocol", "list"], lambda: cx.allreduce([1.0, 2.0]))
expect("unknown op", ValueError, ["op='xor'", "collex.allreduce"], lambda: cx.allreduce(x, op="xor"))
expect("op not a string", ValueError, "op=", lambda: cx.allreduce(x, op=None))
expect("avg of ints", ValueError, ["avg", "int32"], lambda: cx.allreduce(np.ones(4, np.int32), op="avg"))
expect("reduce avg of ints", ValueError, "avg", lambda: cx.reduce(np.ones(4, np.int64), op="avg"))
expect(
    "out wrong shape",
    ValueError,
    ["out:", "shape=(8,)", "shape=(9,)"],
    lambda: cx.allreduce(x, out=np.ones(9, np.float32)),
)
expect("out wrong dtype", ValueError, ["out:", "float64"], lambda: cx.allreduce(x, out=np.ones(8)))
base = np.ones(8)
expect("out overlaps x", ValueError, "overlaps", lambda: cx.allreduce(base[:6], out=base[2:8]))
expect(
    "out non-contiguous",
    ValueError,
    ["out:", "C-contiguous"],
    lambda: cx.allreduce(np.ones(2), out=np.ones(4)[::2]),
)
expect(
    "broadcast root too big",
    ValueError,
    ["collex.broadcast", f"root={size}", "out of range"],
    lambda: cx.broadcast(x, root=size),
)
expect("broadcast root negative", ValueError, "root=-1", lambda: cx.broadcast(x, root=-1))
expect("reduce root type", TypeError, ["root", "str"], lambda: cx.reduce(x, root="0"))
expect("reduce root bool", TypeError, ["root", "bool"], lambda: cx.reduce(x, root=True))
expect("unknown algo", ValueError, ["algo='butterfly'", "ring"], lambda: cx.allreduce(x, algo="butterfly"))
expect("broadcast unknown algo", ValueError, "algo=", lambda: cx.broadcast(x, algo="direct2"))
if size > 1:
    expect(
        "reduce_scatter indivisible",
        ValueError,
        ["collex.reduce_scatter", "divisible", f"shape=({size + 1},)"],
        lambda: cx.reduce_scatter(np.ones(size + 1)),
    )
expect("reduce_scatter 0-d", ValueError, "divisible", lambda: cx.reduce_scatter(np.ones(())))
expect(
    "reduce_scatter out shape",
    ValueError,
    "out:",
    lambda: cx.reduce_scatter(np.ones(2 * size), out=np.ones(3)),
)
expect(
    "allgather out shape",
    ValueError,
    ["collex.allgather", f"shape=({size}, 8)"],
    lambda: cx.allgather(x, out=np.ones((size + 1, 8), np.float32)),
)
expect("send bad dst", ValueError, ["collex.send", "dst=", "out of range"], lambda: cx.send(x, size))
expect("send bad tag", ValueError, "tag=-1", lambda: cx.send(x, (rank + 1) % size, tag=-1))
expect(
    "isend tag too large", ValueError, ["collex.isend", "tag=1048576"], lambda: cx.isend(x, 0, tag=1 << 20)
)
expect("recv read-only", ValueError, ["collex.recv", "read-only"], lambda: cx.recv(ro, 0))
expect(
    "batch_p2p bad kind",
    ValueError,
    ["collex.batch_p2p", "ops[1]"],
    lambda: cx.batch_p2p([("send", x, 0), ("put", x, 0)]),
)
expect("batch_p2p bad peer", ValueError, ["ops[0]", "peer="], lambda: cx.batch_p2p([("recv", x, -1)]))
# A bad item anywhere posts nothing: no send to self is left queued before the bad tag.
expect(
    "batch_p2p bad tag",
    ValueError,
    ["ops[1]", "tag=-5"],
    lambda: cx.batch_p2p([("send", x, rank), ("recv", x, rank, -5)]),
)


def nothing_left_queued():
    y = np.zeros(8, np.float32)
    cx.sendrecv(np.full(8, 3, np.float32), rank, y, rank)
    cases.check("batch_p2p posted nothing", bool((y == 3).all()), f"got {y}")


nothing_left_queued()
expect("recv strided", ValueError, ["collex.recv", "C-contiguous"], lambda: cx.recv(strided, 0))
expect("batch_p2p not a list", TypeError, "ops: expected a list", lambda: cx.batch_p2p(x))
expect("recv bad src", ValueError, ["collex.recv", "src"], lambda: cx.recv(x, size + 3))


def fake_cuda_array(**interface):
    """An object claiming to be a CUDA array (its pointer is host memory)."""
    cai = {"shape": (8,), "typestr": "<f4", "data": (x.ctypes.data, False), "version": 3, **interface}
    return type("FakeCudaArray", (), {"__cuda_array_interface__": cai})()


expect(
    "cuda array, malformed interface",
    TypeError,
    ["collex.allreduce", "x:", "__cuda_array_interface__"],
    lambda: cx.allreduce(type("FakeCupy", (), {"__cuda_array_interface__": {}})()),
)
expect(
    "cuda array, bad dtype",
    TypeError,
    ["collex.allreduce", "unsupported dtype '<c8'"],
    lambda: cx.allreduce(fake_cuda_array(typestr="<c8")),
)
expect(
    "cuda array, strided",
    ValueError,
    ["collex.allreduce", "C-contiguous", "strides=(8,)"],
    lambda: cx.allreduce(fake_cuda_array(strides=(8,))),
)
# Host memory behind the interface: refused as not device memory where a GPU is
# usable, as no usable device (or no CUDA module) elsewhere.
expect(
    "cuda array on host memory",
    (TypeError, ValueError),
    ["collex.allreduce", "CUDA"],
    lambda: cx.allreduce(fake_cuda_array()),
)
expect(
    "cuda out for a host x",
    TypeError,
    ["collex.allreduce", "x:", "expected a CUDA array like the other arguments"],
    lambda: cx.allreduce(x, out=fake_cuda_array()),
)
expect("empty of a bad dtype", TypeError, ["collex.empty", "complex128"], lambda: cx.empty(4, np.complex128))
expect("empty of a negative size", ValueError, ["collex.empty", "shape=(-1,)"], lambda: cx.empty(-1))
expect("Communicator of a non-comm", TypeError, "mpi4py communicator", lambda: cx.Communicator(42))
expect("Communicator bad timeout", ValueError, "timeout", lambda: cx.Communicator(None, timeout=-1))


# The core checks again what it relies on, with messages of the same shape (the
# Python layer's checks come first; these reach the core's entry points directly).
core = cx.world()._c
ints = np.ones(size, np.int32)
at = ints.ctypes.data
expect(
    "core: avg of integers",
    ValueError,
    [f"collex.allreduce {where}: op='avg': expected a floating-point dtype, got int32"],
    lambda: core.allreduce(at, at, size, 6, 4, "auto", False),
)
expect(
    "core: root out of range",
    ValueError,
    [f"collex.broadcast {where}: root: expected 0 <= root < {size}, got {size}"],
    lambda: core.broadcast(at, size, 6, size, "auto", False),
)
if size > 1:  # one rank's out is all of x: any size divides
    expect(
        "core: reduce_scatter of a size that does not divide",
        ValueError,
        [f"collex.reduce_scatter {where}: x: expected {size} int32 elements", f"got {size + 1} int32"],
        lambda: core.reduce_scatter(at, at, size + 1, 6, 0, False),
    )


# A read-only input is fine when the result goes elsewhere, and so are other buffers.
def still_usable():
    y = np.zeros(8, np.float32)
    cx.allreduce(ro, out=y)
    assert (y == size).all(), y
    b = bytearray(4)
    if rank == 0:
        b[:] = b"abcd"
    cx.broadcast(b, root=0)
    assert bytes(b) == b"abcd", b
    assert not cx.world().broken


cases.run("usable after bad input", still_usable)
cases.finish()
