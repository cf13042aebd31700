"""Turning user arrays into (address, element count, dtype code) for the core.

Every check happens here, before anything touches the wire, and every message
names the operation, the rank, the argument and what was found.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import inspect_array
from ._dtypes import AVG, CODES, FLOATING, NAMES, OPS


def where(op: str, rank: int) -> str:
    return f"collex.{op} [rank {rank}]"


def describe(a: np.ndarray) -> str:
    return f"shape={a.shape} strides={a.strides} dtype={a.dtype}"


def as_ndarray(x: Any, arg: str, op: str, rank: int) -> np.ndarray:
    """A NumPy view of x, never a copy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        raise TypeError(
            f"{where(op, rank)}: {arg}: expected a host array like the other arguments, got a CUDA array"
        )
    try:
        memoryview(x)
    except TypeError:
        raise TypeError(
            f"{where(op, rank)}: {arg}: expected an array exposing the buffer protocol "
            f"(e.g. numpy.ndarray), got {type(x).__name__}"
        ) from None
    return np.asarray(x)


class Arg:
    """A checked array argument: the array, its address, element count and dtype code."""

    __slots__ = ("array", "address", "count", "code")

    def __init__(self, x: Any, arg: str, op: str, rank: int, writable: bool):
        fast = inspect_array(x, writable)
        if fast is not None:  # the common case, checked in one call
            self.array = x
            self.address, self.count, self.code = fast
            return
        a = as_ndarray(x, arg, op, rank)
        code = CODES.get(a.dtype)
        if code is None:
            raise TypeError(f"{where(op, rank)}: {arg}: unsupported dtype {a.dtype}; expected one of {NAMES}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{where(op, rank)}: {arg}: expected a C-contiguous array, got {describe(a)}")
        if writable and not a.flags.writeable:
            raise ValueError(
                f"{where(op, rank)}: {arg}: the result is written into it, but the array is read-only "
                f"({describe(a)})"
            )
        self.array = a
        self.address = a.__array_interface__["data"][0]
        self.count = a.size
        self.code = code


def check_out(out: Any, shape: tuple, dtype: np.dtype, x: Arg, op: str, rank: int) -> Arg:
    """Checks a caller's `out` against the shape and dtype the operation produces."""
    o = Arg(out, "out", op, rank, writable=True)
    a = o.array
    if a.shape != shape or a.dtype != dtype:
        raise ValueError(
            f"{where(op, rank)}: out: expected shape={tuple(shape)} dtype={dtype}, "
            f"got shape={a.shape} dtype={a.dtype}"
        )
    # Both are contiguous, so they overlap exactly when their byte ranges do.
    o_end, x_end = o.address + a.nbytes, x.address + x.array.nbytes
    same = o.address == x.address and o.count == x.count
    if not same and o.address < x_end and x.address < o_end:
        raise ValueError(f"{where(op, rank)}: out: overlaps x without being x; pass out=None for in place")
    return o


def op_code(op: Any, name: str, rank: int, dtype: np.dtype) -> int:
    """The core's code of reduction operator `op` for arrays of `dtype`."""
    code = OPS.get(op) if isinstance(op, str) else None
    if code is None:
        raise ValueError(f"{where(name, rank)}: op={op!r}: expected one of {', '.join(map(repr, OPS))}")
    if code == AVG and CODES[dtype] not in FLOATING:
        raise ValueError(
            f"{where(name, rank)}: op='avg' needs a floating-point dtype, got {dtype}; "
            "use op='sum' and divide"
        )
    return code


def check_rank_arg(value: Any, name: str, size: int, op: str, rank: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where(op, rank)}: {name}: expected an int, got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(
            f"{where(op, rank)}: {name}={value} is out of range for a communicator of size {size}"
        )
    return int(value)
