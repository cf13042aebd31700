"""Process-wide state: init/finalize, the world communicator, and the module-level
collectives that run on it."""

from __future__ import annotations

from typing import Any

from . import _comm, _core

_world: _comm.Communicator | None = None
_finalized = False


def init(comm: Any = None, timeout: float | None = None) -> _comm.Communicator:
    """Initialises collex on ``comm`` (an mpi4py communicator; COMM_WORLD if None).

    Idempotent: a second call returns the existing world communicator. ``timeout``
    is how many seconds any wait may pass without progress before the operation
    raises CollectiveTimeout (default: COLLEX_TIMEOUT, else 300).
    """
    global _world, _finalized
    if _world is not None:
        return _world
    _world = _comm.Communicator(comm, timeout)
    _finalized = False
    return _world


def finalize() -> None:
    """Finishes queued operations and releases every communicator. Idempotent;
    also runs at interpreter exit."""
    global _world, _finalized
    _comm.shutdown_all()
    _world = None
    _finalized = True


def is_initialized() -> bool:
    return _world is not None


def world() -> _comm.Communicator:
    """The communicator init() made."""
    if _world is None:
        when = "after collex.finalize()" if _finalized else "before collex.init()"
        raise _core.CollexError(f"collex: used {when}; call collex.init() first")
    return _world


def rank() -> int:
    return world().rank


def size() -> int:
    return world().size


def local_rank() -> int:
    """This rank's index among the ranks on its node."""
    return world().local_rank


def local_size() -> int:
    """How many ranks share this rank's node."""
    return world().local_size


def empty(shape: Any, dtype: Any = "float32") -> Any:
    return world().empty(shape, dtype)


def zeros(shape: Any, dtype: Any = "float32") -> Any:
    return world().zeros(shape, dtype)


def zeros_like_each(arrays: Any) -> list:
    return world().zeros_like_each(arrays)


# The module-level collectives hand their arguments to the binding themselves,
# as Communicator's methods do: a small call then crosses one Python frame, not
# two (about 0.1 us of a 0.7-3 us call here).


def allreduce(x: Any, op: str = "sum", out: Any = None, algo: str = "auto", async_op: bool = False) -> Any:
    w = _world or world()
    return w._c.allreduce_call(x, op, out, algo, async_op, w)


def broadcast(x: Any, root: int = 0, algo: str = "auto", async_op: bool = False) -> Any:
    w = _world or world()
    return w._c.broadcast_call(x, root, algo, async_op, w)


def reduce(x: Any, op: str = "sum", root: int = 0, out: Any = None, async_op: bool = False) -> Any:
    w = _world or world()
    return w._c.reduce_call(x, op, root, out, async_op, w)


def allgather(x: Any, out: Any = None, async_op: bool = False) -> Any:
    w = _world or world()
    return w._c.allgather_call(x, out, async_op, w)


def reduce_scatter(x: Any, op: str = "sum", out: Any = None, async_op: bool = False) -> Any:
    w = _world or world()
    return w._c.reduce_scatter_call(x, op, out, async_op, w)


def barrier(async_op: bool = False) -> Any:
    return world().barrier(async_op=async_op)


def send(x: Any, dst: int, tag: int = 0) -> None:
    w = _world or world()
    w._c.send_call(x, dst, tag, w)


def recv(x: Any, src: int, tag: int = 0) -> Any:
    w = _world or world()
    return w._c.recv_call(x, src, tag, w)


def isend(x: Any, dst: int, tag: int = 0) -> Any:
    return world().isend(x, dst, tag)


def irecv(x: Any, src: int, tag: int = 0) -> Any:
    return world().irecv(x, src, tag)


def sendrecv(x: Any, dst: int, y: Any, src: int, tag: int = 0) -> Any:
    return world().sendrecv(x, dst, y, src, tag)


def batch_p2p(ops: Any) -> list:
    return world().batch_p2p(ops)


_WORLD_FUNCTIONS = (allreduce, broadcast, reduce, allgather, reduce_scatter, barrier, send, recv,
                    isend, irecv, sendrecv, batch_p2p, empty, zeros, zeros_like_each)  # fmt: skip
for _f in _WORLD_FUNCTIONS:
    _f.__doc__ = getattr(_comm.Communicator, _f.__name__).__doc__ + "\n\nRuns on the world communicator."
