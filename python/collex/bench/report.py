"""How results leave the bench: one table per run on rank 0, JSON and CSV files,
an optional plot, and a progress bar. Only rank 0 calls anything here."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

from .breakdown import describe
from .model import format_size


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


class Table:
    """Rows grouped under a header per (collective, dtype, op, algo, mode)."""

    def __init__(self, peers: list[str], stream=sys.stdout):
        self.peers = peers
        self.stream = stream
        self.group: tuple | None = None

    def header(self, row: dict[str, Any]) -> None:
        mode = "in-place" if row["inplace"] else "out-of-place"
        if row.get("symmetric"):
            mode += "  symmetric buffers"
        print(
            f"\n# {row['collective']}  {row['dtype']}  op={row['op']}  algo={row['algo']}  {mode}"
            f"  ranks={row['ranks']}",
            file=self.stream,
        )
        cols = f"{'size':>7} {'count':>10} | {'collex us':>10} {'algbw':>6} {'busbw':>6} {'#wrong':>6}"
        for p in self.peers:
            cols += f" | {p + ' us':>10} {'busbw':>6}"
        cols += " |" + "".join(f" {'x ' + p:>9}" for p in self.peers)
        cols += f" | {'limit us':>9} {'%limit':>6}"
        print(cols, file=self.stream)

    def add(self, row: dict[str, Any]) -> None:
        key = (row["collective"], row["dtype"], row["op"], row["algo"], row["inplace"])
        if key != self.group:
            self.group = key
            self.header(row)
        c = row["collex"]
        line = (
            f"{format_size(row['bytes']):>7} {row['count']:>10} | {c['time_us']:>10.1f} "
            f"{c['algbw']:>6.2f} {c['busbw']:>6.2f} {c['wrong']:>6}"
        )
        for p in self.peers:
            r = row["peers"].get(p)
            line += f" | {_num(r and r['time_us'], '10.1f'):>10} {_num(r and r['busbw'], '6.2f'):>6}"
        line += " |"
        for p in self.peers:
            line += f" {_num(row['speedup'].get(p), '8.2f') + ('x' if row['speedup'].get(p) else ''):>9}"
        lim = row["limit"]
        line += (
            f" | {_num(lim and lim['time_us'], '9.1f'):>9} {_num(lim and 100 * lim['fraction'], '5.1f'):>6}"
        )
        print(line, file=self.stream, flush=True)
        if c.get("breakdown"):
            for text in describe(c["breakdown"], lim and lim["memory_GBps"]):
                print(text, file=self.stream, flush=True)


class Progress:
    """A one-line bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {what:<40}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


CSV_FIELDS = [
    "collective", "dtype", "op", "algo", "inplace", "ranks", "bytes", "count",
    "collex_time_us", "collex_algbw", "collex_busbw", "collex_wrong",
]  # fmt: skip


def write_json(path: str, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


def write_csv(path: str, peers: list[str], rows: list[dict[str, Any]]) -> None:
    fields = list(CSV_FIELDS)
    for p in peers:
        fields += [f"{p}_time_us", f"{p}_busbw", f"{p}_wrong", f"speedup_vs_{p}"]
    fields += ["limit_time_us", "limit_fraction", "memory_GBps"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            flat = {k: r[k] for k in CSV_FIELDS[:8]}
            flat.update(
                collex_time_us=r["collex"]["time_us"],
                collex_algbw=r["collex"]["algbw"],
                collex_busbw=r["collex"]["busbw"],
                collex_wrong=r["collex"]["wrong"],
            )
            for p in peers:
                pr = r["peers"].get(p) or {}
                flat[f"{p}_time_us"] = pr.get("time_us")
                flat[f"{p}_busbw"] = pr.get("busbw")
                flat[f"{p}_wrong"] = pr.get("wrong")
                flat[f"speedup_vs_{p}"] = r["speedup"].get(p)
            lim = r["limit"] or {}
            flat.update(
                limit_time_us=lim.get("time_us"),
                limit_fraction=lim.get("fraction"),
                memory_GBps=lim.get("memory_GBps"),
            )
            w.writerow(flat)


def plot(path: str, peers: list[str], rows: list[dict[str, Any]], title: str) -> str | None:
    """busbw against size, one panel per collective (its first dtype/op/algo/mode
    group), collex beside every peer and the memory limit. Returns an error text
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'collex[bench]'); no plot"
    groups: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, tuple] = {}
    for r in rows:
        key = (r["dtype"], r["op"], r["algo"], r["inplace"])
        first.setdefault(r["collective"], key)
        if first[r["collective"]] == key:
            groups.setdefault(r["collective"], []).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
    for ax, (coll, rs) in zip(axes[0], groups.items()):
        xs = [r["bytes"] for r in rs]
        ax.plot(xs, [r["collex"]["busbw"] for r in rs], "o-", label="collex", linewidth=2)
        for p in peers:
            pts = [(r["bytes"], r["peers"][p]["busbw"]) for r in rs if r["peers"].get(p)]
            if pts:
                ax.plot(*zip(*pts), "s--", label=p)
        lim = [(r["bytes"], r["limit"]["busbw"]) for r in rs if r["limit"]]
        if lim:
            ax.plot(*zip(*lim), ":", color="gray", label="memory limit")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        d, o, a, ip = first[coll]
        ax.set_title(f"{coll} {d} {o} {a}{' in-place' if ip else ''}", fontsize=9)
        ax.set_xlabel("bytes")
        ax.set_ylabel("busbw (GB/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
