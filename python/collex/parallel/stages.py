"""A ready-made pipeline stage: a stack of dense tanh layers. Examples, tests and
the bench use it; any object with the same methods is a stage too."""

from __future__ import annotations

from typing import Any

import numpy as np


class DenseStage:
    """`layers` layers y = tanh(x W + b) of `width` units, W drawn from `seed`
    (N(0, 1/width)), b zero. ``forward(x) -> (y, ctx)``, ``backward(dy, ctx)``,
    and the split pair ``backward_input``/``backward_weight`` for "zb1p"."""

    def __init__(self, width: int, layers: int, seed: int, dtype: Any = np.float32, scale: float = 1.0):
        rng = np.random.default_rng(seed)
        self.params = []
        for _ in range(layers):
            w = (rng.standard_normal((width, width)) * (scale / np.sqrt(width))).astype(dtype)
            self.params += [w, np.zeros(width, dtype)]
        self.grads = [np.zeros_like(p) for p in self.params]

    def forward(self, x: Any) -> tuple:
        saved = []
        for k in range(0, len(self.params), 2):
            y = np.tanh(x @ self.params[k] + self.params[k + 1])
            saved.append((x, y))
            x = y
        return x, saved

    def backward_input(self, dy: Any, saved: list) -> tuple:
        parts = []
        for k in range(len(self.params) - 2, -1, -2):
            x, y = saved[k // 2]
            dh = dy * (1 - y * y)
            parts.append((k, x, dh))
            dy = dh @ self.params[k].T
        return dy, parts

    def backward_weight(self, parts: list) -> None:
        for k, x, dh in parts:
            self.grads[k] += x.reshape(-1, x.shape[-1]).T @ dh.reshape(-1, dh.shape[-1])
            self.grads[k + 1] += dh.reshape(-1, dh.shape[-1]).sum(axis=0)

    def backward(self, dy: Any, saved: list) -> Any:
        dx, parts = self.backward_input(dy, saved)
        self.backward_weight(parts)
        return dx
