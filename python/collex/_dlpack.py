"""Arrays that come by DLPack (``__dlpack__``, as PyTorch, JAX and CuPy give):
host ones become NumPy views (numpy.from_dlpack), CUDA ones a view exposing
``__cuda_array_interface__`` over the memory the producer's capsule describes
(csrc/bindings/dlpack.cpp), so that both then take the paths every other array
takes. Never a copy."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core

# DLPack device types (DLDeviceType).
CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
# The stream a CUDA producer is asked to order its pending work before (the
# legacy default stream, which every blocking stream waits for); the view then
# says its data is ordered on it.
STREAM = 1


def device_type(x: Any) -> int | None:
    """x's DLPack device type, or None when x does not speak DLPack."""
    if not (hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")):
        return None
    try:
        return int(x.__dlpack_device__()[0])
    except Exception:  # noqa: BLE001 - a producer that cannot say is not one
        return None


def on_host(x: Any) -> bool:
    return device_type(x) in (CPU, CUDA_HOST)


def on_device(x: Any) -> bool:
    return device_type(x) in (CUDA, CUDA_MANAGED)


def host_view(x: Any) -> np.ndarray:
    """A NumPy view of a host array given by DLPack (read-only where its producer says so)."""
    return np.from_dlpack(x)


class CudaView:
    """A CUDA array given by DLPack, seen through ``__cuda_array_interface__``;
    holds the producer's capsule, and so its memory, while it lives."""

    def __init__(self, x: Any):
        try:
            capsule = x.__dlpack__(stream=STREAM, max_version=(1, 0))
        except TypeError:  # a producer of DLPack before 1.0
            capsule = x.__dlpack__(stream=STREAM)
        address, _, device, shape, strides, typestr, read_only = _core._dlpack_describe(capsule)
        self._capsule = capsule
        self.device = device
        self.__cuda_array_interface__ = {
            "shape": shape, "strides": strides, "typestr": typestr or "|V0", "data": (address, read_only),
            "version": 3, "stream": STREAM,
        }  # fmt: skip
