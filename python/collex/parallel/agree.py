"""Arguments that every rank of a group must pass alike (a grid's shape, a
pipeline's schedule): each rank checks its own, then they compare, so that a
rank whose arguments are invalid or differ makes every rank raise ValueError
and none waits in a collective the others never join."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def agree(comm: Any, where: str, mine: Any, problem: str, describe: Callable[[np.ndarray], str]) -> None:
    """Collective over `comm`: `mine` (int64 words, the same length on every rank)
    says what this rank passed, `problem` what is wrong with it ("" if nothing).
    Raises ValueError on every rank where some rank's problem is not "" or the
    words differ, naming each rank's (`describe(words)`, or "invalid")."""
    every = comm.allgather(np.append(np.asarray(mine, np.int64), int(bool(problem))))
    if problem:
        raise ValueError(f"{where}: {problem}")
    if (every != every[0]).any():
        desc = ", ".join(
            f"rank {r}: {'invalid' if words[-1] else describe(words[:-1])}" for r, words in enumerate(every)
        )
        raise ValueError(f"{where}: the ranks disagree: {desc}")
