"""Host arrays for the core: NumPy arrays as they are, any other buffer as a
NumPy view of it.

The checks themselves (dtype, contiguity, writability, shapes, overlap, op, root,
tag, algo) and their messages live in the C++ bindings (csrc/bindings/checks.cpp),
which check every call on NumPy arrays; this module only adapts what is not one
yet, and names it when it cannot.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core, _dlpack


def where(op: str, rank: int) -> str:
    return f"collex.{op} [rank {rank}]"


def back_to_back(specs: list, zeros: Any) -> list:
    """Views with the (shape, dtype) of each of `specs`, in order, back to back in
    one flat buffer per dtype that zeros(count, dtype) makes (in the order of the
    dtypes' first use, so that every rank makes them alike)."""
    totals: dict[np.dtype, int] = {}
    for shape, dt in specs:
        totals[dt] = totals.get(dt, 0) + int(np.prod(shape, dtype=np.int64))
    buffers = {dt: zeros(n, dt) for dt, n in totals.items()}
    at = dict.fromkeys(totals, 0)
    views = []
    for shape, dt in specs:
        n = int(np.prod(shape, dtype=np.int64))
        views.append(buffers[dt][at[dt] : at[dt] + n].reshape(shape))
        at[dt] += n
    return views


def as_ndarray(x: Any, arg: str, op: str, rank: int) -> np.ndarray:
    """A NumPy view of x, never a copy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__cuda_array_interface__") or _dlpack.on_device(x):
        raise TypeError(
            f"{where(op, rank)}: {arg}: expected a host array like the other arguments, got a CUDA array"
        )
    if _dlpack.on_host(x):  # e.g. a PyTorch CPU tensor, which has no buffer protocol
        return _dlpack.host_view(x)
    try:
        memoryview(x)
    except TypeError:
        raise TypeError(
            f"{where(op, rank)}: {arg}: expected an array exposing the buffer protocol or DLPack "
            f"(e.g. numpy.ndarray), got {type(x).__name__}"
        ) from None
    return np.asarray(x)


class Arg:
    """A checked host array argument: the array, its address, element count and
    dtype code."""

    __slots__ = ("array", "address", "count", "code")

    def __init__(self, x: Any, arg: str, op: str, rank: int, writable: bool):
        self.array = as_ndarray(x, arg, op, rank)
        self.address, self.count, self.code = _core.check_array(self.array, arg, op, rank, writable)
