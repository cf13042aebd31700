"""Device gradients laid out for GradientReducer's GPU path."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._arrays import back_to_back
from .arguments import is_device_array


def zeros_like_each(arrays: Any) -> list:
    """Zeroed CuPy arrays with the shapes and dtypes of ``arrays`` (CuPy arrays),
    in order, laid out back to back in one device allocation per dtype on the
    current device: the CUDA counterpart of ``collex.zeros_like_each``.

    Allocate CUDA gradients this way (``grads = cx.cuda.zeros_like_each(params)``):
    every bucket of a GradientReducer on the stream-ordered path then fills one
    span of device memory and is averaged where it lies, without a fusion buffer
    or its copies. Not collective: device memory needs no agreement."""
    here = "collex.cuda.zeros_like_each"
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{here}: arrays: expected a list of CuPy arrays, got {type(arrays).__name__}")
    for i, a in enumerate(arrays):
        if not is_device_array(a) or type(a).__module__.split(".")[0] != "cupy":
            raise TypeError(f"{here}: arrays[{i}]: expected a CuPy array, got {type(a).__name__}")
    import cupy

    specs = [(tuple(int(s) for s in a.shape), np.dtype(a.dtype)) for a in arrays]
    return back_to_back(specs, cupy.zeros)
