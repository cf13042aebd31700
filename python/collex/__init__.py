"""collex: fast collective communication for NumPy and CuPy training loops over MPI.

    import collex as cx
    cx.init()
    x = np.ones(1 << 20, np.float32)
    cx.allreduce(x)             # in place: every rank now holds the sum
    cx.finalize()

Launch with ``mpirun -n 4 python -m mpi4py script.py`` (``-m mpi4py`` makes an
uncaught exception abort the whole job instead of leaving the others waiting).
"""

from __future__ import annotations

import os as _os
import sys as _sys

# The mpich wheel's network layer (UCX) keeps the memory registrations it drops
# when memory is unmapped until a cleanup that its default bound (512M) calls
# too rarely for a process whose MPI traffic is light, as collex's is when
# shared memory carries a node's data: the resident size then creeps up (soak
# at 4 ranks: +0.45 MiB per 1000 operations, for as long as it ran; with 64m,
# flat). Set before MPI starts, and only where the user has not.
if "mpi4py.MPI" not in _sys.modules:
    _os.environ.setdefault("UCX_RCACHE_MAX_UNRELEASED", "64m")

# mpi4py initialises MPI (with MPI_THREAD_MULTIPLE) and loads libmpi before the
# extension module needs it.
from mpi4py import MPI as _MPI  # noqa: E402, F401  (import for its side effect)

from . import _core
from ._comm import Communicator
from ._dtypes import SUPPORTED as SUPPORTED_DTYPES
from ._fusion import DistributedOptimizer, GradientReducer, broadcast_parameters
from ._runtime import (
    allgather,
    allreduce,
    barrier,
    batch_p2p,
    broadcast,
    empty,
    finalize,
    init,
    irecv,
    is_initialized,
    isend,
    local_rank,
    local_size,
    rank,
    recv,
    reduce,
    reduce_scatter,
    send,
    sendrecv,
    size,
    world,
    zeros,
    zeros_like_each,
)
from ._work import Work

CollexError = _core.CollexError
CollectiveTimeout = _core.CollectiveTimeout
CollectiveMismatch = _core.CollectiveMismatch
CommunicatorBroken = _core.CommunicatorBroken

__version__ = "0.1.0"


def kernel_isa() -> str:
    """The instruction set collex's reduction kernels use on this CPU (avx512, avx2 or generic)."""
    return _core.kernel_isa()


def cuda_available() -> bool:
    """Whether collex can take CUDA arrays here: its CUDA module was built and a
    GPU is visible. False otherwise, never an error."""
    try:
        from . import _cuda
    except ImportError:
        return False
    return _cuda.device_count() > 0


def memory_bandwidth(nbytes: int, repeats: int = 5) -> tuple[float, float]:
    """This process's memory bandwidth at a working set of `nbytes`, as (copy, add)
    in bytes read and written per second (the bench's memory limit)."""
    return _core._stream(max(int(nbytes), 64), repeats)


__all__ = [
    "CollectiveMismatch",
    "CollectiveTimeout",
    "CollexError",
    "CommunicatorBroken",
    "Communicator",
    "DistributedOptimizer",
    "SUPPORTED_DTYPES",
    "GradientReducer",
    "Work",
    "allgather",
    "allreduce",
    "barrier",
    "batch_p2p",
    "broadcast",
    "broadcast_parameters",
    "cuda_available",
    "empty",
    "finalize",
    "init",
    "irecv",
    "is_initialized",
    "isend",
    "kernel_isa",
    "local_rank",
    "local_size",
    "memory_bandwidth",
    "rank",
    "recv",
    "reduce",
    "reduce_scatter",
    "send",
    "sendrecv",
    "size",
    "world",
    "zeros",
    "zeros_like_each",
]
