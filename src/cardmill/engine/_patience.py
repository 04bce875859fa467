"""Storage calls tried again when they fail for a while (a lock held elsewhere, a lost
connection), and cleanup that gives up after a deadline."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import trio

from ..errors import TransientStorageError

__all__ = ["CLEANUP_SECONDS", "STORAGE_TRIES", "cleanup_scope", "patiently"]

T = TypeVar("T")
log = logging.getLogger("cardmill.engine")

#: How often a storage call that failed with TransientStorageError is made in all,
#: waiting 0.5, 1, 2, 4 s (jittered) in between, before the run stops.
STORAGE_TRIES: Final = 5
_FIRST_WAIT: Final = 0.5

#: The longest the shielded cleanup of an interrupted run (releasing its uploads,
#: recording the run's end) may take: a storage call stuck on a lock or a dead peer must
#: not keep Ctrl-C from ending the program. What it could not release is taken back
#: once its lease expires.
CLEANUP_SECONDS: Final = 2.0


def cleanup_scope(storage: object) -> trio.CancelScope:
    """A shielded scope for cleanup, bounded by :data:`CLEANUP_SECONDS` when the
    storage says its calls may be abandoned (``bounded_cleanup``, as PostgresStorage's
    are: a call stuck in its thread is left to it). Other backends' calls cannot be
    abandoned and do not wait on other sessions for ever (SQLite's ``busy_timeout``), and
    a deadline on them would only fire early in virtual time, which counts a thread's
    work as idle."""
    if getattr(storage, "bounded_cleanup", False):
        return trio.move_on_after(CLEANUP_SECONDS, shield=True)
    return trio.CancelScope(shield=True)


async def patiently(call: Callable[[], Awaitable[T]], what: str, rng: random.Random) -> T:
    """``await call()``, made again after a jittered, doubling wait while it raises
    :class:`~cardmill.TransientStorageError`, up to :data:`STORAGE_TRIES` times.

    Only for calls that are safe to repeat even when an earlier try may have committed:
    the engine's settling writes are fenced and idempotent by upload state, and a claim
    whose answer was lost leaves an upload LOADING until its lease expires.
    """
    wait = _FIRST_WAIT
    for tries_left in range(STORAGE_TRIES - 1, -1, -1):
        try:
            return await call()
        except TransientStorageError as exc:
            if not tries_left:
                raise
            pause = wait * (0.5 + rng.random())
            log.warning("%s: %s; trying again in %.1f s", what, exc, pause)
            await trio.sleep(pause)
            wait *= 2
    raise AssertionError("unreachable")
