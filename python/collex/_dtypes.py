"""The dtypes collex reduces, and their codes in the C++ core (collex/common/dtype.h)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from . import _core

# Order matters: the index is the core's DType code.
SUPPORTED = (
    np.dtype(np.float16),
    np.dtype(ml_dtypes.bfloat16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.int8),
    np.dtype(np.uint8),
    np.dtype(np.int32),
    np.dtype(np.int64),
)
CODES = {dt: code for code, dt in enumerate(SUPPORTED)}
_core.set_bfloat16_type_num(SUPPORTED[1].num)
FLOATING = frozenset(CODES[dt] for dt in SUPPORTED[:4])
NAMES = ", ".join(str(dt) for dt in SUPPORTED)

# Reduction operators, with their codes in the core (collex/common/reduce_op.h).
OPS = {"sum": 0, "prod": 1, "min": 2, "max": 3, "avg": 4}
AVG = OPS["avg"]

ALGOS = ("auto", "ring", "tree", "direct", "hier")
