"""CUDA array arguments: anything exposing ``__cuda_array_interface__`` (CuPy,
Numba, PyTorch CUDA tensors) or on a CUDA device by DLPack (``__dlpack__``, e.g.
JAX), checked by the same checks as host arrays (_core.check_device_array,
csrc/bindings/checks.cpp) besides what only a CUDA array has (its interface's
fields, its device), and the optional CUDA module (collex._cuda) that moves
their bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core, _dlpack
from .._arrays import where
from .._dtypes import SUPPORTED


def is_device_array(x: Any) -> bool:
    """A CUDA array: one with ``__cuda_array_interface__``, or one on a CUDA device by DLPack."""
    return hasattr(x, "__cuda_array_interface__") or _dlpack.on_device(x)


_module: Any = None  # collex._cuda once imported


def cuda_module(op: str, rank: int) -> Any:
    """The CUDA module; the import is done once, not on every call of a collective."""
    global _module
    if _module is not None:
        return _module
    try:
        from .. import _cuda
    except ImportError:
        raise TypeError(
            f"{where(op, rank)}: got a CUDA array, but this build of collex has no CUDA module (the CUDA "
            "toolkit was not found when it was built); rebuild with the toolkit, or pass host arrays"
        ) from None
    _module = _cuda
    return _module


class DeviceArg:
    """A checked CUDA array argument: the array, its device pointer, shape, dtype,
    size in bytes, device ordinal and the stream its producer orders it on."""

    __slots__ = ("array", "view", "pointer", "shape", "dtype", "nbytes", "device", "stream")

    def __init__(self, x: Any, arg: str, op: str, rank: int, writable: bool):
        here = f"{where(op, rank)}: {arg}"
        # A DLPack producer's array is read through a view that holds its capsule.
        self.view = x if hasattr(x, "__cuda_array_interface__") else _dlpack.CudaView(x)
        cai = self.view.__cuda_array_interface__
        self.array = x
        try:
            self.shape = tuple(int(s) for s in cai["shape"])
            typestr, (pointer, readonly) = cai["typestr"], cai["data"]
        except (KeyError, TypeError, ValueError):
            raise TypeError(f"{here}: malformed __cuda_array_interface__: {cai!r}") from None
        try:
            dtype = np.dtype(typestr)
        except TypeError:
            dtype = None
        if cai.get("mask") is not None:
            raise TypeError(f"{here}: masked CUDA arrays are not supported")
        strides = cai.get("strides")
        self.pointer, count, code = _core.check_device_array(
            self.shape, None if strides is None else tuple(strides), dtype, str(typestr), int(pointer or 0),
            bool(readonly), arg, op, rank, writable,
        )  # fmt: skip
        self.dtype = SUPPORTED[code]
        self.nbytes = count * self.dtype.itemsize
        # The interface's stream (version 3): None when the data needs no ordering,
        # else a handle (1 and 2 are the legacy and per-thread default streams).
        self.stream = int(cai.get("stream") or 0)
        self.device = -1
        if self.nbytes:
            try:
                self.device = cuda_module(op, rank).pointer_device(self.pointer)
            except RuntimeError as e:
                raise TypeError(f"{here}: got a CUDA array, but no CUDA device is usable here: {e}") from None
            if self.device < 0:
                raise ValueError(
                    f"{here}: its __cuda_array_interface__ points at memory that is not on a CUDA device"
                )


class DeviceSpan:
    """Device memory of collex's own (a fusion buffer, a share of an array) with the
    attributes of a DeviceArg that the GPU paths read."""

    __slots__ = ("pointer", "nbytes", "dtype", "stream", "device")

    def __init__(self, pointer: int, nbytes: int, dtype: np.dtype, stream: int, device: int):
        self.pointer, self.nbytes, self.dtype = pointer, nbytes, dtype
        self.stream, self.device = stream, device


def new_device_array(like: DeviceArg, shape: tuple, op: str, rank: int) -> DeviceArg:
    """A new CUDA array for a result, made by the input's own library (CuPy)."""
    if type(like.array).__module__.split(".")[0] != "cupy":
        raise TypeError(
            f"{where(op, rank)}: out: collex allocates results only for CuPy arrays; pass out= for "
            f"{type(like.array).__name__}"
        )
    import cupy

    with cupy.cuda.Device(max(like.device, 0)):
        a = cupy.empty(shape, like.dtype)
    return DeviceArg(a, "out", op, rank, writable=True)
