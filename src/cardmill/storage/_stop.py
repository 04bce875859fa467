"""Stopping a long read when its caller is cancelled, though it runs on a worker thread.

A storage call on a worker thread cannot be interrupted from outside (see _thread.py):
cancelling its caller only abandons the wait. For a read that may go on for a while (a
search), `stoppable` hands the call a `Stop` and sets it the moment the caller is
cancelled; the read checks it between steps (and SQLite from a progress handler, inside a
statement), so the thread is freed at once rather than when the read would have ended.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, final

import outcome
import trio

__all__ = ["Stop", "Stopped", "stoppable"]

T = TypeVar("T")

#: How many SQLite virtual machine steps pass between two looks at a `Stop`.
PROGRESS_STEPS: Final = 1000


class Stopped(Exception):
    """The read saw its `Stop` set: its caller was cancelled (never reaches a caller)."""


@final
class Stop:
    """A flag the event loop sets and a worker thread reads; it also counts the looks."""

    def __init__(self) -> None:
        self._event = threading.Event()
        #: how many times a progress handler looked (what a statement did, in steps)
        self.looks = 0

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Stopped` once the flag is set."""
        if self._event.is_set():
            raise Stopped

    def progress(self) -> int:
        """A ``sqlite3`` progress handler: non-zero (interrupt the statement) once set."""
        self.looks += 1
        return 1 if self._event.is_set() else 0


async def stoppable(call: Callable[[Stop], Awaitable[T]]) -> T:
    """``await call(stop)``, setting ``stop`` if the caller is cancelled meanwhile."""
    stop = Stop()

    async def watch() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        # Captured, so that what the call raises reaches the caller as it is, not in a
        # group with the watcher's.
        result = await outcome.acapture(call, stop)
        nursery.cancel_scope.cancel()
    if isinstance(result, outcome.Error) and isinstance(result.error, Stopped):
        # Only a cancellation sets the flag: let it be what the caller sees.
        await trio.lowlevel.checkpoint()
    return result.unwrap()
