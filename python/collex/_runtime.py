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


# The module-level collectives try the core's fast path for blocking calls on
# ordinary arrays themselves, as Communicator's methods do first: a small call
# then crosses one Python frame, not three (about 0.1 us of a 0.7-3 us call
# here). Anything the fast path declines goes the whole way.


def allreduce(x: Any, op: str = "sum", out: Any = None, algo: str = "auto", async_op: bool = False) -> Any:
    w = _world
    if w is not None and not async_op:
        done = w._c.allreduce_now(x, out, op, algo)
        if done is not NotImplemented:
            return done
    return world().allreduce(x, op=op, out=out, algo=algo, async_op=async_op)


def broadcast(x: Any, root: int = 0, algo: str = "auto", async_op: bool = False) -> Any:
    w = _world
    if w is not None and not async_op:
        done = w._c.broadcast_now(x, root, algo)
        if done is not NotImplemented:
            return done
    return world().broadcast(x, root=root, algo=algo, async_op=async_op)


def reduce(x: Any, op: str = "sum", root: int = 0, out: Any = None, async_op: bool = False) -> Any:
    w = _world
    if w is not None and not async_op:
        done = w._c.reduce_now(x, out, op, root)
        if done is not NotImplemented:
            return done
    return world().reduce(x, op=op, root=root, out=out, async_op=async_op)


def allgather(x: Any, out: Any = None, async_op: bool = False) -> Any:
    w = _world
    if w is not None and not async_op:
        done = w._c.allgather_now(x, out)
        if done is not NotImplemented:
            return done
    return world().allgather(x, out=out, async_op=async_op)


def reduce_scatter(x: Any, op: str = "sum", out: Any = None, async_op: bool = False) -> Any:
    w = _world
    if w is not None and not async_op:
        done = w._c.reduce_scatter_now(x, out, op)
        if done is not NotImplemented:
            return done
    return world().reduce_scatter(x, op=op, out=out, async_op=async_op)


def barrier(async_op: bool = False) -> Any:
    return world().barrier(async_op=async_op)


def send(x: Any, dst: int, tag: int = 0) -> None:
    w = _world
    if w is None or w._c.send_now(x, dst, tag) is NotImplemented:
        world().send(x, dst, tag)


def recv(x: Any, src: int, tag: int = 0) -> Any:
    w = _world
    if w is not None:
        done = w._c.recv_now(x, src, tag)
        if done is not NotImplemented:
            return done
    return world().recv(x, src, tag)


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
