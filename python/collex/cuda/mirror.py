"""GradientReducer's host copy of CUDA gradients."""

from __future__ import annotations

from typing import Any

import numpy as np

from .arguments import DeviceArg, cuda_module


class HostMirror:
    """Host copies of CUDA gradients for GradientReducer: one pinned buffer holding
    every gradient back to back in registration order (so that a bucket's
    gradients fill one span and are reduced where they lie). ``down(k)`` copies
    gradient k from its device once it is final; ``up_all()`` queues the averages'
    copies back."""

    def __init__(self, grads: Any, op: str, rank: int):
        self.args = [DeviceArg(g, f"grads[{i}]", op, rank, writable=True) for i, g in enumerate(grads)]
        offsets, at = [], 0
        for a in self.args:
            at = -(-at // a.dtype.itemsize) * a.dtype.itemsize  # aligned for its dtype
            offsets.append(at)
            at += a.nbytes
        self._cuda = cuda_module(op, rank)
        self._buffer = self._cuda.PinnedBuffer(max(at, 1))
        self._events: dict[tuple, Any] = {}  # (device, stream) -> event after the copies up
        self._unread: set[tuple] = set()  # streams whose copies up may still be reading
        raw = np.frombuffer(self._buffer, dtype=np.uint8)
        self.host = [raw[o : o + a.nbytes].view(a.dtype).reshape(a.shape) for o, a in zip(offsets, self.args)]

    def down(self, k: int) -> None:
        for key in self._unread:
            self._events[key].synchronize()
        self._unread.clear()
        a = self.args[k]
        if a.nbytes:
            self._cuda.copy(self.host[k].ctypes.data, a.pointer, a.nbytes, a.stream, a.device)

    def up_all(self) -> None:
        """Queues every average's copy up on its gradient's stream; the mirror is
        written again (next step's down) only after they have read it."""
        for a, h in zip(self.args, self.host):
            if a.nbytes:
                self._cuda.copy_async(a.pointer, h.ctypes.data, a.nbytes, a.stream, a.device)
                e = self._events.get((a.device, a.stream))
                if e is None:
                    e = self._events[(a.device, a.stream)] = self._cuda.Event(a.device)
                e.record(a.stream)
                self._unread.add((a.device, a.stream))
