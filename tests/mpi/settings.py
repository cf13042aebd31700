"""Launched with settings that differ between ranks (tests/test_failures.py):
either init refuses on every rank, or every collective and the reducer below
come out right. Prints "ran" on each rank when all did."""

from __future__ import annotations

import collex as cx
import numpy as np

cx.init()
r, p = cx.rank(), cx.size()
right = True
for n in (1 << 8, 1 << 14, 1 << 17, 1 << 19, 1 << 21):
    right &= bool(np.all(cx.allreduce(np.full(n, 1.0 + r, np.float32)) == sum(1.0 + q for q in range(p))))
    x = np.full(n, float(r), np.float32)
    cx.broadcast(x, root=0)
    right &= bool(np.all(x == 0))
    gathered = cx.allgather(np.full(n // p, float(r), np.float32))
    right &= all(bool(np.all(gathered[q] == q)) for q in range(p))
grads = [np.zeros(n, np.float32) for n in (10, 300_000, 70_000, 2_000_000)]
reducer = cx.GradientReducer(grads)
for step in range(3):
    for g in grads:
        g[...] = r + step
    reducer.reduce()
    right &= all(bool(np.all(g == (p - 1) / 2 + step)) for g in grads)
if right:
    print("ran", flush=True)
cx.finalize()
