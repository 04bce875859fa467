"""One worker thread for blocking storage calls, with the calls that queue up batched.

Every call runs on a worker thread, one at a time, each whole (a transaction is one
call). A call that arrives while the thread is busy waits in a queue; when the thread
frees up, everything queued goes over in one hop. Under load that turns N thread
hand-offs into one, which is most of what a trio program pays to talk to SQLite or
psycopg.

No task carries a hop for the others: the thread's result comes back through
``run_sync_soon`` to the event loop, which wakes each caller and starts the next hop
itself. So whatever happens to a caller (``Cancelled``, ``KeyboardInterrupt``, which
trio delivers to the main task at any checkpoint) cannot strand the queue. Each caller
waits in a single ``wait_task_rescheduled`` whose abort function keeps the contract of
``trio.to_thread.run_sync``: a call that has not started is withdrawn and the exception
raised; one that has started cannot be interrupted, finishes, and its result is returned,
the interruption landing at the caller's next checkpoint. A claim that committed always
reaches its caller, or nobody would ever release it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["ThreadBatcher"]

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("fn", "result", "started", "task")

    def __init__(self, fn: Callable[[], T], task: trio.lowlevel.Task) -> None:
        self.fn = fn
        self.task = task
        self.started = False
        self.result: outcome.Outcome[T] = outcome.Error(RuntimeError("never ran"))


def _run_all(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        job.result = outcome.capture(job.fn)


class ThreadBatcher:
    """Runs synchronous callables on a worker thread, one at a time, batching waiters."""

    def __init__(self) -> None:
        self._queue: deque[_Job[Any]] = deque()
        self._busy = False

    # KeyboardInterrupt may only land at the awaits below, never between the queue's
    # bookkeeping steps.
    @trio.lowlevel.enable_ki_protection
    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread and return (or raise) what it did."""
        await trio.lowlevel.checkpoint_if_cancelled()
        job: _Job[T] = _Job(fn, trio.lowlevel.current_task())
        self._queue.append(job)
        if not self._busy:
            self._start_hop()

        def abort(_: Any) -> trio.lowlevel.Abort:
            if job.started:
                return trio.lowlevel.Abort.FAILED
            self._queue.remove(job)
            return trio.lowlevel.Abort.SUCCEEDED

        result: outcome.Outcome[T] = await trio.lowlevel.wait_task_rescheduled(abort)
        return result.unwrap()

    def _start_hop(self) -> None:
        """Send everything queued to the thread (on the event loop, KI-protected)."""
        batch = list(self._queue)
        self._queue.clear()
        for job in batch:
            job.started = True
        self._busy = True
        token = trio.lowlevel.current_trio_token()

        def deliver(_: outcome.Outcome[None]) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(self._hop_done, batch)

        try:
            trio.lowlevel.start_thread_soon(lambda: _run_all(batch), deliver, "cardmill storage")
        except BaseException as exc:  # no thread to be had: every call of the hop fails
            for job in batch:
                job.result = outcome.Error(exc)
            token.run_sync_soon(self._hop_done, batch)

    def _hop_done(self, batch: list[_Job[Any]]) -> None:
        # Runs as a run_sync_soon callback: on the event loop, KI-protected. Every caller
        # in the batch is still waiting, as its abort function refuses once started.
        for job in batch:
            trio.lowlevel.reschedule(job.task, outcome.Value(job.result))
        if self._queue:
            self._start_hop()
        else:
            self._busy = False
