"""Combine several bench runs (their --json files) into one Markdown table of
medians: collex's time and busbw, its speed-up over each peer, and its fraction
of the memory limit, per row that every run measured; and, when every run was
made with --breakdown, a second table of where the time went (breakdown.py).

    python -m collex.bench.summarize run1.json run2.json run3.json
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from .breakdown import SUMMARY_HEAD
from .breakdown import summary as breakdown_summary
from .model import format_size


def _key(r: dict[str, Any]) -> tuple:
    where = (r["collective"], r["dtype"], r["op"], r["algo"], r["inplace"])
    return (*where, r.get("transport", "auto"), r["bytes"])


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if len(vals) == len(values) and vals else None


def summarize(docs: list[dict[str, Any]]) -> str:
    peers = docs[0]["meta"]["peers"]
    rows_by_run = [{_key(r): r for r in d["rows"]} for d in docs]
    keys = [k for k in rows_by_run[0] if all(k in run for run in rows_by_run)]
    head = "| collective | size | collex µs | busbw GB/s |"
    head += "".join(f" × {p} |" for p in peers) + " % of limit | wrong |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for k in keys:
        rs = [run[k] for run in rows_by_run]
        t = _median([r["collex"]["time_us"] for r in rs])
        bw = _median([r["collex"]["busbw"] for r in rs])
        line = f"| {k[0]} | {format_size(k[-1])} | {t:.1f} | {bw:.2f} |"
        for p in peers:
            s = _median([r["speedup"].get(p) for r in rs])
            line += " n/a |" if s is None else f" {s:.2f} |"
        lim = _median([r["limit"]["fraction"] if r.get("limit") else None for r in rs])
        line += " n/a |" if lim is None else f" {100 * lim:.0f} |"
        line += f" {sum(r['collex']['wrong'] for r in rs)} |"
        lines.append(line)
    if all("breakdown" in run[k]["collex"] for run in rows_by_run for k in keys):
        lines += ["", "Where the time went (--breakdown):", ""]
        head = f"| collective | size | % of limit | {SUMMARY_HEAD} |"
        lines += [head, "|" + " --- |" * (head.count("|") - 1)]
        for k in keys:
            rs = [run[k] for run in rows_by_run]
            lim = _median([r["limit"]["fraction"] if r.get("limit") else None for r in rs])
            share = "n/a" if lim is None else f"{100 * lim:.0f}"
            lines.append(f"| {k[0]} | {format_size(k[-1])} | {share} | {breakdown_summary(rs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise SystemExit("usage: python -m collex.bench.summarize RUN.json [RUN.json ...]")
    docs = []
    for p in paths:
        with open(p) as f:
            docs.append(json.load(f))
    print(f"Medians over {len(docs)} runs ({docs[0]['meta']['ranks']} ranks).\n")
    print(summarize(docs))


if __name__ == "__main__":
    main()
