"""The storage thread's hand-off under Ctrl-C and cancellation, at every await.

trio delivers Ctrl-C as ``KeyboardInterrupt`` into the main task at whatever checkpoint
it is blocked in. These tests run their own ``trio.run`` so that the task calling the
storage IS the main task, raise a real SIGINT from inside the run (trio turns it into a
pending ``KeyboardInterrupt`` and delivers it to the main task at its next checkpoint),
and then check that nothing was lost or stranded: a call that had not started was
withdrawn, one that had started returned its result to its caller, and every later call
still completes.
"""

from __future__ import annotations

import functools
import itertools
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from cardmill import RunStatus, SQLiteStorage, UploadStatus
from cardmill.engine import Engine
from cardmill.storage._thread import ThreadBatcher
from cardmill.testing import ScriptedProvider, Step, check_invariants

from ..engine.conftest import docs

T = TypeVar("T")

# Only a guard that turns a hang into a failure: a healthy test takes milliseconds.
HANG_GUARD = 60.0


@pytest.fixture(autouse=True)
def _trio_handles_sigint() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here; trio would not take it")


def run_as_main(fn: Callable[[], Awaitable[T]], *instruments: trio.abc.Instrument) -> T:
    """Run ``fn`` as trio's main task, where Ctrl-C lands, with Ctrl-C at checkpoints."""

    async def guarded() -> T:
        with trio.fail_after(HANG_GUARD):
            return await fn()

    try:
        return trio.run(
            guarded, instruments=instruments, restrict_keyboard_interrupt_to_checkpoints=True
        )
    except KeyboardInterrupt as exc:  # pytest would take it for the user's Ctrl-C
        raise AssertionError("Ctrl-C escaped the code under test") from exc


def ctrl_c() -> None:
    """Press Ctrl-C: trio queues a KeyboardInterrupt for the main task."""
    signal.raise_signal(signal.SIGINT)


class Calls:
    """Jobs that record, in the worker thread, that they ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.returned: list[str] = []

    def job(self, name: str, gate: threading.Event | None = None) -> Callable[[], str]:
        def fn() -> str:
            if gate is not None:
                gate.wait()
            self.ran.append(name)
            return name

        return fn

    async def call(
        self, batcher: ThreadBatcher, name: str, gate: threading.Event | None = None
    ) -> None:
        # Nothing between the call's return and the record: a result either reaches
        # ``returned`` or was never handed back.
        self.returned.append(await batcher.run(self.job(name, gate)))


async def wait_until_returned(calls: Calls, name: str) -> None:
    # Progress, not time: look again after each trip through another thread.
    while name not in calls.returned:
        await trio.to_thread.run_sync(lambda: None)


@pytest.mark.parametrize("interrupt", ["ctrl-c", "cancel"])
def test_an_interrupted_call_that_waits_in_the_queue_is_withdrawn(interrupt: str) -> None:
    batcher = ThreadBatcher()
    calls = Calls()
    gate = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(calls.call, batcher, "busy", gate)
            await trio.testing.wait_all_tasks_blocked()

            async def others_then_interrupt() -> None:
                await trio.testing.wait_all_tasks_blocked()
                # The main task's call is first in line: it would carry the next hop.
                nursery.start_soon(calls.call, batcher, "second")
                nursery.start_soon(calls.call, batcher, "third")
                await trio.testing.wait_all_tasks_blocked()
                if interrupt == "ctrl-c":
                    ctrl_c()
                else:
                    scope.cancel()

            nursery.start_soon(others_then_interrupt)
            with trio.CancelScope() as scope:
                try:
                    await calls.call(batcher, "main")
                except KeyboardInterrupt:
                    assert interrupt == "ctrl-c"
                else:
                    assert interrupt == "cancel"
            assert scope.cancelled_caught == (interrupt == "cancel")
            gate.set()
        # The withdrawn call never ran; the others did, and returned.
        assert sorted(calls.ran) == ["busy", "second", "third"]
        assert sorted(calls.returned) == ["busy", "second", "third"]
        for i in range(3):
            assert await batcher.run(functools.partial(int, i * 7)) == i * 7

    run_as_main(main)


@pytest.mark.parametrize("interrupt", ["ctrl-c", "cancel"])
def test_an_interrupted_call_that_started_still_returns_its_result(interrupt: str) -> None:
    batcher = ThreadBatcher()
    calls = Calls()
    first, second = threading.Event(), threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(calls.call, batcher, "busy", first)
            await trio.testing.wait_all_tasks_blocked()
            # Queued behind "busy", ahead of the main task: its hop takes both.
            nursery.start_soon(calls.call, batcher, "ahead", second)
            await trio.testing.wait_all_tasks_blocked()

            async def interrupt_once_started() -> None:
                await trio.testing.wait_all_tasks_blocked()
                first.set()
                await wait_until_returned(calls, "busy")
                # "ahead" and the main task's call now run on the thread, one hop.
                await trio.testing.wait_all_tasks_blocked()
                if interrupt == "ctrl-c":
                    ctrl_c()
                else:
                    scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                second.set()

            nursery.start_soon(interrupt_once_started)
            with trio.CancelScope() as scope:
                try:
                    await calls.call(batcher, "main")
                    # The result came back; the interruption lands at the next checkpoint.
                    assert calls.returned[-1] == "main"
                    await trio.lowlevel.checkpoint()
                except KeyboardInterrupt:
                    assert interrupt == "ctrl-c"
            assert scope.cancelled_caught == (interrupt == "cancel")
        assert calls.ran == ["busy", "ahead", "main"]
        assert sorted(calls.returned) == ["ahead", "busy", "main"]
        assert await batcher.run(lambda: "later") == "later"

    run_as_main(main)


class CtrlCAtStep(trio.abc.Instrument):
    """Presses Ctrl-C once the main task (or, with ``any_task``, all tasks together) has
    run ``step`` steps (one per checkpoint). trio delivers it to the main task."""

    def __init__(self, step: int, *, any_task: bool = False) -> None:
        self.step = step
        self.seen = 0
        self.any_task = any_task
        self.main: trio.lowlevel.Task | None = None

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.main is not None and (self.any_task or task is self.main):
            self.seen += 1
            if self.seen == self.step:
                ctrl_c()


@pytest.mark.parametrize("step", range(1, 41))
def test_ctrl_c_at_any_checkpoint_of_busy_callers_loses_and_strands_nothing(step: int) -> None:
    batcher = ThreadBatcher()
    instrument = CtrlCAtStep(step)
    per_task: dict[str, Calls] = {}

    async def hammer(name: str, calls: Calls) -> None:
        for i in itertools.count():
            await calls.call(batcher, f"{name}{i}")

    async def main() -> None:
        instrument.main = trio.lowlevel.current_task()
        main_calls = per_task["main"] = Calls()
        with trio.CancelScope() as others:
            async with trio.open_nursery() as nursery:
                for name in "abcd":
                    calls = per_task[name] = Calls()
                    nursery.start_soon(hammer, name, calls)
                try:
                    for i in itertools.count():
                        await main_calls.call(batcher, f"main{i}")
                except KeyboardInterrupt:
                    # Ctrl-C stops the other callers too, at whatever await they are in.
                    others.cancel()
        # Every call that ran handed its result to its caller; none ran twice.
        for calls in per_task.values():
            assert calls.ran == calls.returned
        # Nothing is stranded: later calls complete.
        for i in range(3):
            assert await batcher.run(functools.partial(int, i)) == i

    run_as_main(main, instrument)


# Steps of every task of the run (200 uploads take over 1,000): from before the first
# claim to the last uploads, wherever the main task is waiting when Ctrl-C comes.
@pytest.mark.parametrize("step", [3, 7, 12, 20, 31, 45, 60, 150, 300, 500, 700])
def test_ctrl_c_during_a_busy_sqlite_run_releases_uploads_and_records_the_run(
    tmp_path: Path, step: int
) -> None:
    path = tmp_path / "ctrl-c.db"
    instrument = CtrlCAtStep(step, any_task=True)

    async def prepare() -> str:
        async with SQLiteStorage.open(path) as storage:
            return (await storage.create_run(docs(200))).id

    run_id = trio.run(prepare)

    async def main() -> Any:
        async with SQLiteStorage.open(path) as storage:
            engine = Engine(storage, ScriptedProvider(default=Step(latency=0)), concurrency=8)
            instrument.main = trio.lowlevel.current_task()
            with pytest.raises(KeyboardInterrupt):
                await engine.execute(run_id)
            instrument.main = None  # no more Ctrl-C
            # The interrupted run was recorded and every in-flight upload released.
            run = await storage.get_run(run_id)
            assert run.status in (RunStatus.CANCELLED, RunStatus.SUCCEEDED)
            assert await storage.list_uploads(run_id, UploadStatus.LOADING) == []
            await check_invariants(storage, run_id)
            # And the storage still works: the run resumes and completes.
            summary = await Engine(storage, ScriptedProvider(default=Step(latency=0))).execute(
                run_id
            )
            assert summary.run.status == RunStatus.SUCCEEDED
            await check_invariants(storage, run_id)

    run_as_main(main, instrument)
    assert instrument.seen >= step
