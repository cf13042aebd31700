"""Inputs every rank can reproduce, and the exact result each collective must give.
Values are small integers, so every dtype (bfloat16 included) holds sums and
products exactly and a result is either right or wrong."""

from __future__ import annotations

import numpy as np


def rank_input(coll: str, count: int, dtype: np.dtype, rank: int, op: str) -> np.ndarray:
    i = np.arange(count, dtype=np.int64)
    if op == "prod":
        vals = 1 + (i + rank) % 2
    else:
        vals = (i + rank) % 4
    return vals.astype(np.float64).astype(dtype)


def expected(coll: str, count: int, dtype: np.dtype, ranks: int, rank: int, op: str, root: int) -> np.ndarray:
    """This rank's correct result (for reduce: the root's; other ranks are not checked)."""
    if coll == "broadcast":
        return rank_input(coll, count, dtype, root, op)
    inputs = [rank_input(coll, count, dtype, r, op).astype(np.float64) for r in range(ranks)]
    if coll == "allgather":
        block = count // ranks
        return np.concatenate([inputs[r][:block] for r in range(ranks)]).astype(dtype)
    if op in ("sum", "avg"):
        total = np.sum(inputs, axis=0)
        total = total / ranks if op == "avg" else total
    elif op == "prod":
        total = np.prod(inputs, axis=0)
    elif op == "min":
        total = np.min(inputs, axis=0)
    else:
        total = np.max(inputs, axis=0)
    result = total.astype(dtype)
    if coll == "reduce_scatter":
        block = count // ranks
        return result[rank * block : (rank + 1) * block]
    return result


def count_wrong(got: np.ndarray, want: np.ndarray, op: str) -> int:
    """Elements that differ (avg: beyond the dtype's rounding of one division)."""
    g = np.asarray(got).reshape(-1)
    w = np.asarray(want).reshape(-1)
    if g.shape != w.shape:
        return max(g.size, w.size)
    if op == "avg":
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        return int(np.count_nonzero(~np.isclose(g64, w64, rtol=1e-2, atol=1e-2)))
    if g.dtype.kind == "f" or g.dtype.name == "bfloat16":
        return int(np.count_nonzero(g.astype(np.float64) != w.astype(np.float64)))
    return int(np.count_nonzero(g != w))
