"""trio functions awaited from asyncio: a trio guest run on the running asyncio loop.

trio's guest mode (`trio.lowlevel.start_guest_run`) runs trio's scheduler as callbacks of
the host loop, on its thread: trio tasks and asyncio tasks take turns, and trio's waits
for I/O happen in a thread of trio's, so neither loop blocks the other.

One guest run serves every call awaited on a loop (trio allows one per thread). It is
started by the first call and ended when the last one in flight returns, so the loop
never closes under a trio run that is still going: each call counts itself in before
it waits for the guest, and out in a ``finally``.

Cancelling the awaiting asyncio task cancels the call's own trio cancel scope, then
waits for the trio function to unwind (the engine's shielded cleanup puts in-flight
uploads back to PENDING and marks the run CANCELLED) before `asyncio.CancelledError`
reaches the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

from .._jobs import refuse_while_a_child_starts
from ..engine._groups import leaves, root_error

__all__ = ["call"]

T = TypeVar("T")

_guests: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Guest] = weakref.WeakKeyDictionary()


async def call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await fn(*args)`` in the trio guest run of the running asyncio loop.

    Errors raised by ``fn`` are raised here as they are (a group of one error as that
    error). A Ctrl-C that trio takes (no asyncio handler installed) raises
    `KeyboardInterrupt` in every call in flight.
    """
    refuse_while_a_child_starts()
    loop = asyncio.get_running_loop()
    guest = await _enter(loop)
    try:
        job = _Job(fn, args, loop.create_future())
        await _settled(guest.ready)  # trio's token and nursery
        guest.ready.result()  # raises if the guest run could not start
        guest.submit(job)
        try:
            return await asyncio.shield(job.result)
        except asyncio.CancelledError:
            if job.result.done():
                raise
            guest.cancel(job)
            await _settled(job.result)
            raise
    finally:
        await guest.leave()


async def _enter(loop: asyncio.AbstractEventLoop) -> _Guest:
    """The loop's guest run, started if none is, and this call counted in it."""
    while True:
        guest = _guests.get(loop)
        if guest is None:
            guest = _guests[loop] = _Guest(loop)
            try:
                guest.start()
            except BaseException:
                del _guests[loop]  # never started: the next call starts another
                raise
        if not guest.closing:
            guest.calls += 1
            return guest
        await _settled(guest.done)  # a run that is ending: the next one follows it


async def _settled(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, though the awaiting task be cancelled meanwhile;
    the cancellation is then delivered at the task's next await (also when it came in
    the same turn of the loop as the future's result)."""
    task = asyncio.current_task()
    swallowed = False
    while not future.done():
        asked = task.cancelling() if task is not None else 0
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # Someone asked to cancel the task meanwhile (not only the future, which is
            # cancelled when its trio scope was): keep that cancel for later.
            if task is not None and task.cancelling() > asked:
                swallowed = True
            if future.done():
                break
        except BaseException:
            break
    if swallowed and task is not None:
        task.uncancel()
        task.cancel()


class _Job:
    """One call: its trio function, its cancel scope and the future of its outcome."""

    def __init__(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], result: asyncio.Future[Any]
    ) -> None:
        self.fn, self.args, self.result = fn, args, result
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        try:
            with self.scope:
                value = await self.fn(*self.args)
        except BaseException as exc:
            root = root_error(exc)
            if all(isinstance(leaf, trio.Cancelled) for leaf in leaves(exc)):
                # Not this call's scope: the guest run itself is being torn down
                # (trio's Ctrl-C handler cancels it); let trio unwind it.
                self._set(exception=KeyboardInterrupt())
                raise
            self._set(exception=root)
            return
        if self.scope.cancelled_caught:
            self._set(exception=asyncio.CancelledError())
        else:
            self._set(value=value)

    def _set(self, *, value: Any = None, exception: BaseException | None = None) -> None:
        if self.result.done():
            return
        if exception is None:
            self.result.set_result(value)
        elif isinstance(exception, asyncio.CancelledError):
            self.result.cancel()
        else:
            self.result.set_exception(exception)


class _Guest:
    """A trio guest run on an asyncio loop, and the calls it serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls = 0
        self.closing = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._jobs: set[_Job] = set()

    def start(self) -> None:
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=self.loop.call_soon,
            done_callback=self._finished,
            # asyncio receives signals through signal.set_wakeup_fd.
            host_uses_signal_set_wakeup_fd=True,
        )

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            if not self.ready.done():
                self.ready.set_result(None)
            await trio.sleep_forever()

    def submit(self, job: _Job) -> None:
        assert self._token is not None
        assert self._nursery is not None
        self._jobs.add(job)
        job.result.add_done_callback(lambda _: self._jobs.discard(job))
        nursery = self._nursery
        self._token.run_sync_soon(nursery.start_soon, job.run)

    def cancel(self, job: _Job) -> None:
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(job.scope.cancel)

    async def leave(self) -> None:
        """Count a call out; the last one ends the guest run and waits for its end."""
        self.calls -= 1
        if self.calls > 0 or self.closing:
            return
        self.closing = True
        await _settled(self.ready)
        if self._token is not None and self._nursery is not None:
            nursery = self._nursery
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(nursery.cancel_scope.cancel)
        await _settled(self.done)

    def _finished(self, result: outcome.Outcome[None]) -> None:
        """trio's done callback: the guest run has ended."""
        if _guests.get(self.loop) is self:
            del _guests[self.loop]
        self.closing = True
        error = result.error if isinstance(result, outcome.Error) else None
        if error is not None and not isinstance(root_error(error), trio.Cancelled):
            failure = root_error(error)
        else:
            failure = RuntimeError("cardmill's trio run ended before this call")
        for future in (self.ready, *(job.result for job in self._jobs)):
            if not future.done():
                future.set_exception(failure)
        if not self.done.done():
            self.done.set_result(None)
