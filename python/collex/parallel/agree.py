"""Arguments that every rank of a group must pass alike (a grid's shape, a
pipeline's schedule, a layer's weights, a sharded optimizer's parameters):
each rank checks its own, then they compare, so that a rank whose arguments
are invalid or differ makes every rank raise and none waits in a collective
the others never join, or computes with a model the others do not have."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._dtypes import CODES, SUPPORTED


def agree(
    comm: Any, where: str, mine: Any, problem: str | Exception, describe: Callable[[np.ndarray], str]
) -> None:
    """Collective over `comm`: `mine` (int64 words, the same length on every rank)
    says what this rank passed, `problem` what is wrong with it ("" if nothing;
    an exception is raised as it is, a text as ValueError). Raises on every
    rank where some rank has a problem or the words differ: ValueError naming
    each rank's (`describe(words)`, or "invalid")."""
    every = comm.allgather(np.append(np.asarray(mine, np.int64), int(bool(problem))))
    if isinstance(problem, Exception):
        raise problem
    if problem:
        raise ValueError(f"{where}: {problem}")
    if (every != every[0]).any():
        desc = ", ".join(
            f"rank {r}: {'invalid' if words[-1] else describe(words[:-1])}" for r, words in enumerate(every)
        )
        raise ValueError(f"{where}: the ranks disagree: {desc}")


def agree_settings(comm: Any, where: str, settings: dict, problem: str | Exception) -> None:
    """agree() over named settings, each an int, a bool or a NumPy dtype (the
    same names, in the same order, on every rank); a disagreement names them:
    "rank 0: in_features=64, bias=True, dtype=float32, rank 1: ..."."""
    kinds = [
        bool if isinstance(v, (bool, np.bool_)) else int if isinstance(v, (int, np.integer)) else np.dtype
        for v in settings.values()
    ]

    def word(value: Any, kind: type) -> int:
        if kind is np.dtype:
            return CODES.get(np.dtype(value), -1)
        return int(value)

    def shown(value: int, kind: type) -> str:
        if kind is bool:
            return str(bool(value))
        if kind is np.dtype:
            return str(SUPPORTED[value]) if 0 <= value < len(SUPPORTED) else "unsupported"
        return str(value)

    def describe(words: np.ndarray) -> str:
        return ", ".join(f"{n}={shown(int(w), k)}" for n, w, k in zip(settings, words, kinds))

    agree(comm, where, [word(v, k) for v, k in zip(settings.values(), kinds)], problem, describe)


def agree_checked(comm: Any, where: str, check: Callable[[], Any], settings: dict) -> None:
    """agree_settings() after this rank's own check: `check()` raises (TypeError
    or ValueError) what is wrong with its arguments, which this rank then raises
    while the others say it is invalid. Constructors that are collective (the
    layers, ShardedOptimizer) start with it."""
    problem: str | Exception = ""
    try:
        check()
    except (TypeError, ValueError) as e:
        problem = e
    agree_settings(comm, where, settings, problem)
