"""Work: the handle of an asynchronous operation, and waiting for several."""

from __future__ import annotations

from typing import Any


class Work:
    """Handle of an asynchronous operation (``async_op=True``).

    ``wait()`` blocks until the operation finished and returns its result array
    (the same array the synchronous call would have returned); ``done()`` tells
    without blocking. The operation's arrays stay alive until it has finished,
    even when the handle is dropped before that.
    """

    __slots__ = ("_handle", "_result", "_keep")

    def __init__(self, handle: Any, result: Any, keep: tuple = ()):
        self._handle = handle
        self._result = result
        self._keep = keep
        if _orphans:
            _orphans[:] = [o for o in _orphans if not _finished(o[0])]

    def __del__(self) -> None:
        # Dropped while pending: the engine (and peers reading this rank's memory)
        # still use the arrays, so they outlive the handle until it finishes.
        handle = getattr(self, "_handle", None)
        if handle is not None and not _finished(handle):
            _orphans.append((handle, self._result, self._keep))

    def wait(self) -> Any:
        self._handle.wait()
        return self._result

    def done(self) -> bool:
        return bool(self._handle.done())

    def __repr__(self) -> str:
        return f"<collex.Work {'done' if self.done() else 'pending'}>"


# Operations whose handles were dropped before they finished, with their arrays.
_orphans: list = []


def _finished(handle: Any) -> bool:
    try:
        return bool(handle.done())
    except Exception:  # noqa: BLE001 - it failed: it is finished, and wait() would say why
        return True


def wait_all(works: list) -> None:
    """Waits for every Work, then raises the first error among them (so that no
    operation is left running when one fails)."""
    first = None
    for w in works:
        try:
            w.wait()
        except Exception as e:  # noqa: BLE001  (re-raised below)
            if first is None:
                first = e
    if first is not None:
        raise first
