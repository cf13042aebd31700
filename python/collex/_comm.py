"""Communicator: the Python face of a group of ranks. Checks arguments, adapts
arrays and hands (address, count, dtype code) to the C++ core."""

from __future__ import annotations

import atexit
import itertools
import sys
import weakref
from typing import Any

import numpy as np

from . import _core
from ._arrays import Arg, as_ndarray, back_to_back, where
from ._dtypes import CODES, NAMES
from ._work import Work, wait_all
from .cuda.arguments import is_device_array
from .cuda.staging import DeviceStaging

CollexError = _core.CollexError

# Every live Communicator by the order of its making, so that finalize() can
# shut them all down, newest first: in the same order on every rank, since each
# shutdown waits a moment for the peers' word that they left too.
_live: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_made = itertools.count()


# Why this process leaves its communicators, as peers that still wait for it are
# told: set when the program ends on an uncaught exception.
_leaving_because = ""


def shutdown_all() -> None:
    """Finishes queued operations on every communicator, tells peers still
    waiting for this rank that it left (and why), and releases them."""
    for key in sorted(_live.keys(), reverse=True):
        c = _live.get(key)
        if c is not None:
            c._c.shutdown(_leaving_because)


# Registered after mpi4py's own exit hook (collex imports mpi4py first), so it runs
# before MPI is finalised: atexit handlers run last-in first-out.
atexit.register(shutdown_all)


def _note_uncaught(kind: type, error: BaseException, tb: Any) -> None:
    """sys.excepthook: remembers which exception ends the program, so that the
    peers' errors name it (they would otherwise wait out their timeout, or hang
    while this rank waits for them in MPI_Finalize)."""
    global _leaving_because
    if not hasattr(sys, "ps1"):  # an interactive interpreter goes on after it
        text = str(error).splitlines()[0][:200] if str(error) else ""
        _leaving_because = f"ended on an uncaught {kind.__name__}" + (f" ({text})" if text else "")
    _previous_excepthook(kind, error, tb)


_previous_excepthook = sys.excepthook
sys.excepthook = _note_uncaught


# Where each call's arrays are among its arguments (in the public methods'
# order), and their names: a CUDA array among them sends the call to the device
# path; any other array that is not a NumPy array is viewed as one.
_ARRAY_ARGUMENTS = {
    "allreduce": ((0, "x"), (2, "out")),
    "broadcast": ((0, "x"),),
    "reduce": ((0, "x"), (3, "out")),
    "allgather": ((0, "x"), (1, "out")),
    "reduce_scatter": ((0, "x"), (2, "out")),
    "send": ((0, "x"),),
    "recv": ((0, "x"),),
}


class Communicator:
    """A group of ranks on which collectives run.

    ``Communicator(mpi_comm)`` wraps any mpi4py communicator (COMM_WORLD when
    None). It is collective over ``mpi_comm`` and duplicates it, so collex's
    traffic never mixes with the caller's own MPI messages. Every rank must issue
    the collectives of a communicator in the same order.
    """

    def __init__(self, mpi_comm: Any = None, timeout: float | None = None):
        from mpi4py import MPI

        if mpi_comm is None:
            mpi_comm = MPI.COMM_WORLD
        if not isinstance(mpi_comm, MPI.Comm):
            raise TypeError(
                f"collex.Communicator: expected an mpi4py communicator, got {type(mpi_comm).__name__}"
            )
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(
                f"collex.Communicator: timeout={timeout!r}: expected a positive number of seconds"
            )
        self._init_core(_core.Communicator(mpi_comm.py2f(), float(timeout or 0)))

    @classmethod
    def _wrap(cls, core: Any) -> Communicator:
        self = cls.__new__(cls)
        self._init_core(core)
        return self

    def _init_core(self, core: Any) -> None:
        self._c = core
        self.rank: int = core.rank
        self.size: int = core.size
        self.local_rank: int = core.local_rank
        self.local_size: int = core.local_size
        self._staging: DeviceStaging | None = None
        _live[next(_made)] = self

    @property
    def _device(self) -> DeviceStaging:
        """Collectives on CUDA arrays (staged through pinned host buffers)."""
        if self._staging is None:
            self._staging = DeviceStaging(self)
        return self._staging

    @property
    def timeout(self) -> float:
        """Seconds any wait may pass without progress before CollectiveTimeout."""
        return float(self._c.timeout)

    @property
    def broken(self) -> bool:
        return bool(self._c.broken)

    def __repr__(self) -> str:
        return f"<collex.Communicator rank {self.rank} of {self.size}{' (broken)' if self.broken else ''}>"

    def split(self, color: int | None, key: int = 0) -> Communicator | None:
        """Ranks passing the same color form a new communicator, ordered by key.
        color=None (or negative) leaves this rank out; it gets None. Collective:
        the ranks meet first (a barrier under split's own name), so a rank that
        never calls split makes the others raise CollectiveTimeout within the
        timeout, and one that calls another collective meanwhile, a barrier too,
        makes every rank raise CollectiveMismatch, where the MPI library's split
        would wait for ever."""
        core = self._c.split(-1 if color is None else int(color), int(key))
        return None if core is None else Communicator._wrap(core)

    @property
    def shared_memory(self) -> bool:
        """Whether the ranks share a node window (direct algorithms, symmetric buffers)."""
        return bool(self._c.window)

    def copy_ways(self) -> str:
        """How mid-size all-reduces, broadcasts and all-gathers on this node move now,
        per size class ("broadcast <=256 KiB slots, <=1 MiB attach; ..."), and how
        staged operations and those that read peers in place write (ordinary or
        streaming stores), after the queued operations; "" without a node window."""
        return self._c.copy_ways()

    def empty(self, shape: Any, dtype: Any = np.float32) -> np.ndarray:
        """A NumPy array in memory every rank of this communicator can read in place
        (a symmetric buffer). Collective: every rank passes the same shape and dtype.
        Collectives on such arrays read peers directly instead of copying through
        the kernel; without a shared window it is an ordinary array."""
        dt = np.dtype(dtype)
        if dt not in CODES:
            raise TypeError(
                f"{where('empty', self.rank)}: dtype: unsupported dtype {dt}; expected one of {NAMES}"
            )
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"{where('empty', self.rank)}: shape={shape}: sizes must not be negative")
        count = int(np.prod(shape, dtype=np.int64))
        memory = self._c.allocate_symmetric(count * dt.itemsize)
        if memory is None:
            return np.empty(shape, dt)
        return np.frombuffer(memory, dtype=dt, count=count).reshape(shape)

    def zeros(self, shape: Any, dtype: Any = np.float32) -> np.ndarray:
        """Like empty(), filled with zeros."""
        a = self.empty(shape, dtype)
        a.fill(0)
        return a

    def zeros_like_each(self, arrays: Any) -> list[np.ndarray]:
        """Zeroed NumPy arrays with the shapes and dtypes of ``arrays``, in order, laid
        out back to back in one symmetric buffer per dtype (see empty()).

        Allocate gradients this way (``grads = cx.zeros_like_each(params)``): every
        bucket of a GradientReducer then fills one span of memory the peers read in
        place, and is reduced as one flat all-reduce, the fastest exchange on a node
        (bench/README.md). Collective: every rank passes arrays of the same shapes and
        dtypes. Host memory only: for CUDA arrays allocate on the device."""
        here = where("zeros_like_each", self.rank)
        if isinstance(arrays, np.ndarray) or not isinstance(arrays, (list, tuple)):
            raise TypeError(f"{here}: arrays: expected a list of arrays, got {type(arrays).__name__}")
        specs = []
        for i, a in enumerate(arrays):
            if is_device_array(a):
                raise TypeError(f"{here}: arrays[{i}] is a CUDA array; symmetric buffers live in host memory")
            if not hasattr(a, "shape") or not hasattr(a, "dtype"):
                raise TypeError(f"{here}: arrays[{i}]: expected an array, got {type(a).__name__}")
            specs.append((tuple(int(s) for s in a.shape), np.dtype(a.dtype)))
        return back_to_back(specs, self.zeros)

    def shutdown(self) -> None:
        """Finishes queued operations and releases this communicator's resources."""
        self._c.shutdown()

    def _finish(self, handle: Any, result: Any, keep: tuple, async_op: bool) -> Any:
        return Work(handle, result, keep) if async_op else result

    # ---- collectives ----
    #
    # Each public method hands its arguments, and itself, to the binding
    # (csrc/bindings/calls.cpp), which checks and runs a call on NumPy arrays
    # (queued when async_op; the Work comes from _finish) and gives a call on any
    # other array to _dispatch.

    def _dispatch(self, name: str, *args: Any) -> Any:
        """The one way on for a call on arrays the binding does not take as they
        are: CUDA arrays go to collex/cuda/staging.py; any other host array
        (bytearray, memoryview, array.array, ...) is viewed as a NumPy array and
        the call goes back to the binding, which checks it (its messages name the
        argument)."""
        arrays = _ARRAY_ARGUMENTS[name]
        if any(is_device_array(args[i]) for i, _ in arrays):
            if name in ("send", "recv"):
                return self._post(*args, name, receive=name == "recv").wait()
            return getattr(self._device, name)(*args)
        adapted = list(args)
        for i, arg in arrays:
            if i == 0 or adapted[i] is not None:
                adapted[i] = as_ndarray(adapted[i], arg, name, self.rank)
        return getattr(self._c, name + "_call")(*adapted, self)

    def allreduce(
        self, x: Any, op: str = "sum", out: Any = None, algo: str = "auto", async_op: bool = False
    ) -> Any:
        """Reduces x over all ranks; every rank gets the result (bitwise identical).

        op: sum, prod, min, max, avg. In place (into x, returned) when out is None.
        algo: auto (the tuner), direct (ranks of one node read each other's memory),
        hier (direct inside nodes, a ring across them), ring or tree (MPI messages).
        A choice that cannot run here falls back to the tuner's."""
        return self._c.allreduce_call(x, op, out, algo, async_op, self)

    def broadcast(self, x: Any, root: int = 0, algo: str = "auto", async_op: bool = False) -> Any:
        """Copies root's x into x on every rank (in place); returns x."""
        return self._c.broadcast_call(x, root, algo, async_op, self)

    def reduce(self, x: Any, op: str = "sum", root: int = 0, out: Any = None, async_op: bool = False) -> Any:
        """Reduces x over all ranks into root's out (x when out is None).
        Other ranks' arrays are left untouched. Returns out (or x)."""
        return self._c.reduce_call(x, op, root, out, async_op, self)

    def allgather(self, x: Any, out: Any = None, async_op: bool = False) -> Any:
        """Gathers every rank's x; the result has shape (size, *x.shape)."""
        return self._c.allgather_call(x, out, async_op, self)

    def reduce_scatter(self, x: Any, op: str = "sum", out: Any = None, async_op: bool = False) -> Any:
        """Reduces x over all ranks and gives each rank its block of the result:
        x.shape[0] must divide by size; the result has shape
        (x.shape[0] // size, *x.shape[1:]). x is left untouched."""
        return self._c.reduce_scatter_call(x, op, out, async_op, self)

    def barrier(self, async_op: bool = False) -> Work | None:
        """Returns once every rank has entered the barrier."""
        h = self._c.barrier(async_op)
        return Work(h, None) if async_op else None

    # ---- point to point ----
    #
    # Every message carries the sender's dtype, element count and shape; a receive
    # whose buffer differs raises CollectiveMismatch and writes nothing, and the
    # sender raises too (in its send, or in its next call on this communicator).
    # Operations are posted at once and every wait advances all of them, so no
    # posting order across ranks can deadlock. Sends to this rank itself work.

    def _checked_p2p(self, x: Any, peer: Any, tag: Any, name: str, receive: bool, peer_name: str) -> tuple:
        """(array or checked Arg, peer, tag) for one send or receive, or a
        TypeError/ValueError naming the argument; nothing is posted."""
        peer = _core.check_rank(peer, peer_name, self.size, name, self.rank)
        tag = _core.check_tag(tag, self._c.max_user_tag, name, self.rank)
        a = x if is_device_array(x) else Arg(x, "x", name, self.rank, writable=receive)
        return a, peer, tag

    def _submit_p2p(self, a: Any, peer: int, tag: int, receive: bool) -> Work:
        if not isinstance(a, Arg):  # a CUDA array, staged through host memory
            return self._device.post_p2p(a, peer, tag, receive)
        fn = self._c.recv if receive else self._c.send
        h = fn(a.address, a.count, a.code, tuple(np.shape(a.array)), peer, tag, True)
        return Work(h, a.array if receive else None, (a.array,))

    def _post(self, x: Any, peer: int, tag: int, name: str, receive: bool) -> Work:
        checked = self._checked_p2p(x, peer, tag, name, receive, "src" if receive else "dst")
        return self._submit_p2p(*checked, receive)

    def send(self, x: Any, dst: int, tag: int = 0) -> None:
        """Sends x to rank dst (this rank included); returns when x may be reused.
        tag: an int in [0, 2**20); messages of one pair and tag arrive in order."""
        self._c.send_call(x, dst, tag, self)

    def recv(self, x: Any, src: int, tag: int = 0) -> Any:
        """Receives into x the next message from rank src with this tag; returns x.
        The message must have x's dtype, element count and shape, else
        CollectiveMismatch (on both ranks) and x is left untouched."""
        return self._c.recv_call(x, src, tag, self)

    def isend(self, x: Any, dst: int, tag: int = 0) -> Work:
        """Posts a send of x to rank dst; x must not change until the Work is done."""
        return self._post(x, dst, tag, "isend", receive=False)

    def irecv(self, x: Any, src: int, tag: int = 0) -> Work:
        """Posts a receive into x from rank src; Work.wait() returns x."""
        return self._post(x, src, tag, "irecv", receive=True)

    def sendrecv(self, x: Any, dst: int, y: Any, src: int, tag: int = 0) -> Any:
        """Sends x to dst and receives y from src at once (no deadlock whatever the
        peers' order); returns y."""
        works = self.batch_p2p([("recv", y, src, tag), ("send", x, dst, tag)])
        wait_all(works)
        return works[0].wait()

    def batch_p2p(self, ops: Any) -> list[Work]:
        """Posts every ``("send", x, peer)`` / ``("recv", y, peer)`` of `ops` (an
        optional tag as a fourth item) at once and returns their Works, in order.
        Every item is checked before any is posted."""
        name = "batch_p2p"
        if not isinstance(ops, (list, tuple)):
            raise TypeError(
                f"{where(name, self.rank)}: ops: expected a list of tuples, got {type(ops).__name__}"
            )
        parsed = []
        for i, item in enumerate(ops):
            shaped = isinstance(item, (list, tuple)) and len(item) in (3, 4)
            if not shaped or item[0] not in ("send", "recv"):
                raise ValueError(
                    f"{where(name, self.rank)}: ops[{i}]={item!r}: "
                    "expected ('send' or 'recv', array, peer[, tag])"
                )
            kind, x, peer = item[:3]
            tag = item[3] if len(item) == 4 else 0
            receive = kind == "recv"
            parsed.append((*self._checked_p2p(x, peer, tag, f"{name} ops[{i}]", receive, "peer"), receive))
        return [self._submit_p2p(*p) for p in parsed]
