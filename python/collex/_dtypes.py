"""The dtypes and reduction operators collex handles, as NumPy dtypes and names,
built from the C++ core's own tables (collex._core: DTYPE_NAMES in code order,
FLOAT_DTYPE_CODES, OPS, ALGOS; common/names.cpp), so that no list lives twice."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from . import _core


def _numpy_dtype(name: str) -> np.dtype:
    # NumPy has no bfloat16 of its own; ml_dtypes registers one.
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


# The index is the core's DType code.
SUPPORTED = tuple(_numpy_dtype(name) for name in _core.DTYPE_NAMES)
CODES = {dt: code for code, dt in enumerate(SUPPORTED)}
_core.set_bfloat16_type_num(SUPPORTED[CODES[np.dtype(ml_dtypes.bfloat16)]].num)
FLOATING = frozenset(_core.FLOAT_DTYPE_CODES)
NAMES = ", ".join(str(dt) for dt in SUPPORTED)

# Reduction operators by name, with their codes in the core.
OPS = dict(_core.OPS)
AVG = OPS["avg"]

# The algorithms a caller may name (algo=, COLLEX_ALGO).
ALGOS = tuple(_core.ALGOS)
