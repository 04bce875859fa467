"""Reading documents off the event loop, with a deadline that frees its slot.

A hostile document must fail alone. A reader that is still running at its deadline
fails its document, and its slot goes to the next document at once, whatever the reader
is still doing: otherwise a few hostile files hold every slot and every later document
fails too.

The deadline is in real time, not trio's: it bounds a parser's work, which a virtual
clock does not see. (Under trio's `MockClock` with autojump, a clock that jumps while
every task waits on a reader thread would fail documents that were being read fine.)

Small plain-text and Markdown documents are read on the event loop: their readers take
time linear in a few kilobytes, less than the hop to a thread and back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Final, TypeVar

import trio

from ..errors import DocumentError
from ..model import Document

__all__ = ["read_off_loop"]

T = TypeVar("T")

_INLINE_BYTES: Final = 16 * 1024  # plain text and Markdown this small are read inline
_INLINE_TYPES: Final = frozenset({"text/plain", "text/markdown"})


async def read_off_loop(
    fn: Callable[[Document], T],
    document: Document,
    *,
    limiter: trio.CapacityLimiter,
    seconds: float,
    isolated: bool = False,
) -> T:
    """``fn(document)``, run off the event loop in one of ``limiter``'s slots.

    Waiting for a slot is not reading time: the deadline of ``seconds`` (real time)
    starts once the reader runs. At the deadline the document fails and its slot is
    freed. Plain text and Markdown of up to 16 KiB are read at once, on the event loop.

    Args:
        fn: the blocking reader.
        document: what it reads.
        limiter: how many documents are read at once.
        seconds: how long one document may take.
        isolated: run ``fn`` in a worker process (trio-parallel), killed at the
            deadline: for parsers that can run away on crafted input (pypdf). ``fn``, the
            document and the result travel by pickle, so ``fn`` must be importable by
            name (a module-level function, or a ``functools.partial`` of one). Without
            it, ``fn`` runs on a thread that the deadline abandons, still running: only
            for readers whose time is bounded by the document's size.

    Raises:
        DocumentError: the deadline passed, the worker process died, or ``fn`` raised
            it.
    """
    if not isolated and document.media_type in _INLINE_TYPES and document.size <= _INLINE_BYTES:
        await trio.lowlevel.checkpoint()
        return fn(document)
    async with limiter:
        with trio.CancelScope() as scope:
            timer = _deadline(scope, seconds)
            try:
                if isolated:
                    return await _in_process(fn, document)
                # A limiter of its own: an abandoned thread must not hold a slot of
                # trio's default thread limiter either.
                return await trio.to_thread.run_sync(
                    fn, document, limiter=trio.CapacityLimiter(1), abandon_on_cancel=True
                )
            finally:
                timer.cancel()
    raise DocumentError(f"{document.name}: still being read after {seconds:g} s; given up")


def _deadline(scope: trio.CancelScope, seconds: float) -> threading.Timer:
    """Cancel ``scope`` after ``seconds`` of real time."""
    token = trio.lowlevel.current_trio_token()

    def expire() -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the run ended meanwhile
            token.run_sync_soon(scope.cancel)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


async def _in_process(fn: Callable[[Document], T], document: Document) -> T:
    # Imported here: multiprocessing is not free to import, and most runs read no PDF.
    import trio_parallel

    try:
        result: T = await trio_parallel.run_sync(
            fn, document, kill_on_cancel=True, limiter=trio.CapacityLimiter(1)
        )
    except trio_parallel.BrokenWorkerError as exc:
        process = exc.args[-1] if exc.args else None
        code = getattr(process, "exitcode", None)
        raise DocumentError(
            f"{document.name}: the process reading it died (exit code {code})"
        ) from None
    return result
