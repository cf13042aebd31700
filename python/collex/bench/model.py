"""The bench's arithmetic, apart from any measurement (and unit-tested alone).

Sizes follow nccl-tests: a row's size is the collective's whole buffer, i.e. the
all-reduce/broadcast/reduce buffer, the all-gather output and the reduce-scatter
input. algbw = size / time; busbw = algbw x factor, the factor making busbw
comparable with the hardware's link bandwidth whatever the rank count.
"""

from __future__ import annotations

import re

COLLECTIVES = ("allreduce", "broadcast", "reduce", "allgather", "reduce_scatter")

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
}


def parse_size(text: str) -> int:
    """'8' -> 8, '1K' -> 1024, '64M' -> 67108864 (binary units, as nccl-tests)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?B?)\s*", str(text).upper())
    if not m:
        raise ValueError(f"size {text!r}: expected a number with an optional K, M or G suffix")
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_size(nbytes: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)


def sweep(minbytes: int, maxbytes: int, factor: int) -> list[int]:
    """minbytes, minbytes*factor, ... up to maxbytes (maxbytes itself included)."""
    if minbytes <= 0 or maxbytes < minbytes:
        raise ValueError(f"sizes: need 0 < min <= max, got {minbytes} and {maxbytes}")
    if factor < 2:
        raise ValueError(f"step factor {factor}: expected 2 or more")
    sizes = []
    s = minbytes
    while s < maxbytes:
        sizes.append(s)
        s *= factor
    sizes.append(maxbytes)
    return sizes


def count_for(coll: str, nbytes: int, itemsize: int, ranks: int) -> int:
    """Elements in a row's buffer: a multiple of `ranks` for the collectives that split
    it into per-rank blocks, at least one element (or one per rank)."""
    count = max(1, nbytes // itemsize)
    if coll in ("allgather", "reduce_scatter"):
        count = max(ranks, count - count % ranks)
    return count


def bus_factor(coll: str, ranks: int) -> float:
    """nccl-tests' busbw factor: 2(p-1)/p for all-reduce, (p-1)/p for all-gather and
    reduce-scatter, 1 for broadcast and reduce."""
    p = ranks
    if coll == "allreduce":
        return 2 * (p - 1) / p
    if coll in ("allgather", "reduce_scatter"):
        return (p - 1) / p
    if coll in ("broadcast", "reduce"):
        return 1.0
    raise ValueError(f"unknown collective {coll!r}")


def algbw(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else 0.0


def busbw(coll: str, nbytes: int, seconds: float, ranks: int) -> float:
    return algbw(nbytes, seconds) * bus_factor(coll, ranks)


def memory_traffic(coll: str, nbytes: int, ranks: int) -> float:
    """Bytes one rank must read plus write in memory, at the least, for one call on a
    buffer of `nbytes` (S), when every rank can read its peers' memory directly (one
    copy, no staging). Derived in bench/README.md:

      allreduce       reduce S/p of all p inputs (read S, write S/p), then fetch the
                      other p-1 reduced blocks (read and write S(p-1)/p): S(3p-1)/p
      reduce          every rank reduces its S/p block of all p inputs (read S) into
                      the root's result (write S/p): S(p+1)/p, as reduce_scatter
      broadcast       every receiver must read the root's S and write its own S:
                      2S(p-1) in all, shared by p ranks when the root writes part
                      of it into the receivers: 2S(p-1)/p
      allgather       read S in all (own block and p-1 peers'), write S: 2S
      reduce_scatter  read the rank's block of every input (S), write S/p: S(p+1)/p
    """
    s, p = float(nbytes), ranks
    if p == 1:
        # Alone, the out-of-place result is one copy (read S, write S).
        return 2 * s
    if coll == "allreduce":
        return s * (3 * p - 1) / p
    if coll == "broadcast":
        return 2 * s * (p - 1) / p
    if coll == "allgather":
        return 2 * s
    if coll in ("reduce_scatter", "reduce"):
        return s * (p + 1) / p
    raise ValueError(f"unknown collective {coll!r}")


def limit_seconds(coll: str, nbytes: int, ranks: int, bytes_per_second: float) -> float:
    """The best time memory allows: the traffic above at the measured bandwidth
    (bytes read plus written per second, measured on every rank at once)."""
    return memory_traffic(coll, nbytes, ranks) / bytes_per_second
