"""`--breakdown`: where collex's calls of a row spend their time on each rank,
counted inside the core (`collex/common/time_parts.h`): reduction kernels, copies
in place (shared memory, symmetric buffers, shared pages), copies through the
kernel (cross-memory attach, ordinary arrays) and waits for peers, each with
the rate of its memory traffic (bytes read plus written per second), beside the
memory bandwidth the limit is priced at. "other" is the rest of the call: Python,
the bindings, checks, staging copies of small calls."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from .. import _core

PARTS = ("reduce", "copy", "kernel copy", "wait")


class Breakdown:
    """Wraps a row's collex call: the first `skip` calls (those before the timed
    repeats) run as they are; from then on each call adds what the core counted during it (and only
    during it: the limit's own measurement runs the same kernels between calls)
    and its wall time."""

    def __init__(self, fn: Callable[[], Any], skip: int):
        self.fn, self.skip = fn, skip
        self.seen, self.calls, self.wall = 0, 0, 0.0
        self.ns = [0] * len(PARTS)
        self.bytes = [0] * len(PARTS)

    def __call__(self) -> Any:
        self.seen += 1
        if self.seen <= self.skip:
            return self.fn()
        if self.calls == 0:
            _core._time_parts_enable(True)
        ns0, b0 = _core._time_parts()
        t = time.perf_counter()
        result = self.fn()
        self.wall += time.perf_counter() - t
        ns1, b1 = _core._time_parts()
        self.ns = [s + b - a for s, a, b in zip(self.ns, ns0, ns1)]
        self.bytes = [s + b - a for s, a, b in zip(self.bytes, b0, b1)]
        self.calls += 1
        return result

    def finish(self) -> dict[str, Any]:
        """This rank's means per call: µs and bytes of memory traffic of each part,
        and its rate in GB/s."""
        _core._time_parts_enable(False)
        n = max(self.calls, 1)
        parts = {}
        for name, t, b in zip(PARTS, self.ns, self.bytes):
            parts[name] = {"us": t / 1e3 / n, "bytes": b / n, "GBps": (b / t if t and b else None)}
        wall_us = self.wall * 1e6 / n
        other = wall_us - sum(p["us"] for p in parts.values())
        return {"calls": self.calls, "wall_us": wall_us, "parts": parts, "other_us": other}


def describe(per_rank: list[dict[str, Any]], memory_GBps: float | None) -> list[str]:
    """One line per rank for the bench's table."""
    lines = []
    for rank, b in enumerate(per_rank):
        text = f"    rank {rank}: {b['wall_us']:.0f} us/call ="
        for name in PARTS:
            p = b["parts"][name]
            if p["us"] < 0.05:
                continue
            rate = f" at {p['GBps']:.1f} GB/s" if p["GBps"] else ""
            text += f" {name} {p['us']:.0f}{rate} +"
        text += f" other {b['other_us']:.0f}"
        lines.append(text)
    if memory_GBps:
        calls = per_rank[0]["calls"]
        lines.append(f"    (memory limit priced at {memory_GBps:.1f} GB/s; means of {calls} calls)")
    return lines


def summary(runs: list[dict[str, Any]]) -> str:
    """Medians over runs of one row (`runs`: that row in each run's JSON) for
    `collex.bench.summarize`'s breakdown table: each part's rate on the slower
    rank, in GB/s ("-" where the row has no such part), the limit's bandwidth,
    and the share of the call the longer-waiting rank spent waiting, and in other
    work, in %."""

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def slower_rate(r: dict[str, Any], name: str) -> float | None:
        rates = [b["parts"][name]["GBps"] for b in r["collex"]["breakdown"]]
        return min(rates) if all(rates) else None

    cells = []
    for name in PARTS[:-1]:
        rate = median([v for v in (slower_rate(r, name) for r in runs) if v is not None])
        cells.append("-" if rate is None else f"{rate:.1f}")
    limit = median([r["limit"]["memory_GBps"] for r in runs if r.get("limit")])
    cells.append("n/a" if limit is None else f"{limit:.1f}")
    for share in (lambda b: b["parts"]["wait"]["us"], lambda b: b["other_us"]):
        per_run = [max(share(b) / b["wall_us"] for b in r["collex"]["breakdown"]) for r in runs]
        cells.append(f"{100 * statistics.median(per_run):.0f}")
    return " | ".join(cells)


SUMMARY_HEAD = "reduce GB/s | copy GB/s | kernel copy GB/s | limit GB/s | waits % | other %"
