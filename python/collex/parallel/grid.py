"""Process grids: the ranks of a communicator laid out along named axes."""

from __future__ import annotations

from typing import Any

AXES = ("dp", "pp", "tp")


class Grid:
    """The ranks of ``comm`` (collex's world when None) as a grid of axes.

    ``Grid(dp=2, pp=1, tp=2)``: axes in ``order`` (default ``("dp", "pp", "tp")``)
    with the last varying fastest, so tensor-parallel ranks are neighbours (and
    share a node). An axis left out has size 1, except ``dp``, which takes what
    the others leave (``Grid(tp=2)`` on 8 ranks is dp 4 x tp 2). ``comm(axis)`` is
    this rank's group along that axis: its own Communicator (own sequence
    numbers, shared-memory window where its ranks share a node, engine), so
    traffic of different groups never mixes. Collective over ``comm``: every rank
    must build the same grid (the ranks compare theirs first, and where one
    differs or is invalid every rank raises ValueError).
    """

    def __init__(
        self,
        dp: int | None = None,
        pp: int | None = None,
        tp: int | None = None,
        *,
        order: tuple = AXES,
        comm: Any = None,
        **other: Any,
    ):
        import numpy as np

        from .._comm import Communicator
        from .._runtime import world
        from .agree import agree

        base = world() if comm is None else comm if isinstance(comm, Communicator) else Communicator(comm)
        order = tuple(order)
        sizes = {"dp": dp, "pp": 1 if pp is None else pp, "tp": 1 if tp is None else tp}
        problem = _problem(order, sizes, other, base.size)
        if not problem and dp is None:
            sizes["dp"] = base.size // (sizes["pp"] * sizes["tp"])
        # Before the splits (collective): a rank whose grid is invalid or differs
        # makes every rank raise, and none waits in a split the others never join.
        mine = np.full(6, -1, np.int64)
        if not problem:
            mine[0:3] = [AXES.index(a) for a in order]
            mine[3:6] = [sizes[a] for a in AXES]
        agree(base, "collex.parallel.Grid", mine, problem, _describe)
        self.order = order
        self.sizes = {a: sizes[a] for a in order}
        self.base = base
        # Mixed radix, last axis fastest.
        coords, r = {}, base.rank
        for a in reversed(order):
            coords[a] = r % sizes[a]
            r //= sizes[a]
        self.coords = {a: coords[a] for a in order}
        self._comms = {}
        for a in order:  # the same order on every rank: split is collective
            others = [b for b in order if b != a]
            color = 0
            for b in others:
                color = color * sizes[b] + self.coords[b]
            self._comms[a] = base.split(color, key=self.coords[a])

    def _axis(self, axis: str) -> str:
        if axis not in self.sizes:
            raise ValueError(f"collex.parallel.Grid: unknown axis {axis!r}; the axes are {self.order}")
        return axis

    def comm(self, axis: str) -> Any:
        """This rank's Communicator along `axis` (ranks differing only there)."""
        return self._comms[self._axis(axis)]

    def rank(self, axis: str) -> int:
        return self.coords[self._axis(axis)]

    def size(self, axis: str) -> int:
        return self.sizes[self._axis(axis)]

    def __repr__(self) -> str:
        axes = ", ".join(f"{a}={self.sizes[a]}" for a in self.order)
        return f"<collex.parallel.Grid {axes} at {self.coords}>"


def _problem(order: tuple, sizes: dict, other: dict, ranks: int) -> str:
    """What is wrong with this rank's grid arguments, or ""."""
    if other:
        return f"unknown axes {sorted(other)}; the axes are {AXES}"
    unknown = [a for a in order if a not in AXES]
    if unknown or sorted(order) != sorted(AXES):
        also = f" (unknown: {unknown})" if unknown else ""
        return f"order={order!r}: expected each of {AXES} once{also}"
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return f"{name}={value!r}: expected an int >= 1"
    rest = sizes["pp"] * sizes["tp"]
    if sizes["dp"] is None:
        if ranks % rest:
            return f"pp={sizes['pp']} x tp={sizes['tp']} does not divide the {ranks} ranks"
        return ""
    if sizes["dp"] * rest != ranks:
        return (
            f"dp={sizes['dp']} x pp={sizes['pp']} x tp={sizes['tp']} = {sizes['dp'] * rest} ranks, "
            f"but the communicator has {ranks}"
        )
    return ""


def _describe(words) -> str:
    """A grid as agree() passes it: the order's axis indices, then dp, pp, tp."""
    return " x ".join(f"{AXES[int(i)]}={int(words[3 + int(i)])}" for i in words[0:3])
