"""A hash of plain values (ints, strings, tuples of them) that every process
computes alike, unlike hash(), which is salted per process for strings: what
the ranks compare to find that they were set up differently (a reducer's
gradients, a sharded optimizer's parameters)."""

from __future__ import annotations

import hashlib
from typing import Any


def digest(value: Any) -> int:
    """62 bits of a hash of repr(value): non-negative, and still an int64 when negated or doubled."""
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little") >> 2
