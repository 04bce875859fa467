"""One worker thread for blocking storage calls, with the calls that queue up batched.

Every call runs on the thread, one at a time, each whole (a transaction is one call). A
call that arrives while the thread is busy waits in a queue; when the thread frees up,
everything queued goes over in one hop. Under load that turns N thread hand-offs into
one, which is most of what a trio program pays to talk to SQLite or psycopg.

Cancellation keeps the contract of ``trio.to_thread.run_sync``: a call that has not
started is withdrawn (``Cancelled``); one that has started finishes and its result is
returned, the cancellation landing at the caller's next checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["ThreadBatcher"]

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("finished", "fn", "promoted", "result", "started", "wake")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.wake = trio.Event()  # set when finished, or when promoted to run the next hop
        self.finished = trio.Event()
        self.promoted = False
        self.started = False
        self.result: outcome.Outcome[T] | None = None


def _run_all(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        job.result = outcome.capture(job.fn)


class ThreadBatcher:
    """Runs synchronous callables on a worker thread, one at a time, batching waiters."""

    def __init__(self) -> None:
        self._queue: list[_Job[Any]] = []
        self._busy = False
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread and return (or raise) what it did."""
        await trio.lowlevel.checkpoint_if_cancelled()
        job: _Job[T] = _Job(fn)
        self._queue.append(job)
        if self._busy:
            await self._wait(job)
            if job.result is not None:
                return job.result.unwrap()
        # This task carries the next hop: everything queued, its own job included.
        self._busy = True
        batch, self._queue = self._queue, []
        for queued in batch:
            queued.started = True
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_run_all, batch, limiter=self._limiter)
        finally:
            for done in batch:
                done.finished.set()
                done.wake.set()
            self._hand_off()
        # A job that ran is reported, even if we were cancelled meanwhile: a claim that
        # committed must reach its caller, or nobody would ever release it.
        assert job.result is not None
        return job.result.unwrap()

    async def _wait(self, job: _Job[Any]) -> None:
        try:
            await job.wake.wait()
        except trio.Cancelled:
            if job.started:
                with trio.CancelScope(shield=True):
                    await job.finished.wait()
                return  # it ran: report its result, as trio.to_thread.run_sync would
            self._queue.remove(job)
            if job.promoted:
                self._hand_off()
            raise

    def _hand_off(self) -> None:
        if self._queue:
            successor = self._queue[0]
            successor.promoted = True
            successor.wake.set()
        else:
            self._busy = False
