"""Text that ships with Python itself: the source of a few standard-library
modules, as characters. No download."""

from __future__ import annotations

import importlib
import inspect

import numpy as np

MODULES = ("json.decoder", "json.encoder", "textwrap", "string", "bisect", "heapq", "shlex", "fnmatch")


def corpus() -> str:
    parts = []
    for name in MODULES:
        parts.append(inspect.getsource(importlib.import_module(name)))
    return "\n".join(parts)


class CharData:
    """The corpus as token ids over its printable ASCII characters (others map to '?')."""

    def __init__(self, text: str | None = None):
        text = corpus() if text is None else text
        text = "".join(c if 32 <= ord(c) < 127 or c == "\n" else "?" for c in text)
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.ids = np.array([self.index[c] for c in text], np.int64)

    @property
    def vocab(self) -> int:
        return len(self.chars)

    def batch(self, rng: np.random.Generator, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
        """`batch` random windows: inputs (batch, seq) and the next characters as targets."""
        starts = rng.integers(0, len(self.ids) - seq - 1, batch)
        x = np.stack([self.ids[s : s + seq] for s in starts])
        y = np.stack([self.ids[s + 1 : s + seq + 1] for s in starts])
        return x, y

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index.get(c, self.index.get("?", 0)) for c in text], np.int64)
