"""The batch executor dies between any two storage calls (before a call, or after it
committed but before its answer came back); a new executor re-attaches, and no upload
is sent more often than its requests called for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from cardmill import Document, MemoryStorage, RunStatus
from cardmill.engine import BatchExecutor, RetryPolicy
from cardmill.model import BatchState
from cardmill.testing import check_invariants

from .batch_fakes import OK, TRANSIENT, FakeBatchAPI


class Crash(BaseException):
    """The process died."""


class CrashingStorage:
    """MemoryStorage that dies at its ``at``-th call: before making it, or ``after`` it
    committed. A dead process makes no more calls."""

    def __init__(self, inner: MemoryStorage, at: int, *, after: bool) -> None:
        self._inner = inner
        self._at = at
        self._after = after
        self.calls = 0
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash
            self.calls += 1
            if self.calls == self._at and not self._after:
                self.dead = True
                raise Crash
            result = await attr(*args, **kwargs)
            if self.calls == self._at:
                self.dead = True
                raise Crash
            return result

        return call


SCRIPT: dict[str, list[str]] = {
    "a.txt": [OK],
    "b.txt": [TRANSIENT, OK],
    "c.txt": [OK],
    "d.txt": [TRANSIENT, TRANSIENT, OK],
    "e.txt": [OK],
}


def _api() -> FakeBatchAPI:
    return FakeBatchAPI(
        batch_max_requests=2,
        seconds_per_request=30.0,
        outcome=lambda name, n: SCRIPT[name][n - 1],
    )


def _documents() -> list[Document]:
    return [Document(name, f"text of {name}".encode()) for name in SCRIPT]


def _executor(storage: object, api: FakeBatchAPI) -> BatchExecutor:
    return BatchExecutor(
        storage,  # type: ignore[arg-type]
        api,
        poll_interval=5.0,
        max_poll_interval=40.0,
        retry=RetryPolicy(max_attempts=5),
    )


async def _calls_of_a_clean_run() -> int:
    storage = MemoryStorage(clock=trio.current_time)
    run = await storage.create_run(_documents())
    counting = CrashingStorage(storage, at=-1, after=False)
    summary = await _executor(counting, _api()).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    return counting.calls


async def _crash_then_resume(at: int, *, after: bool, when: Callable[[], None]) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    run = await storage.create_run(_documents())
    api = _api()
    crashing = CrashingStorage(storage, at, after=after)
    with pytest.raises(Crash):
        await _executor(crashing, api).execute(run.id)
    when()
    summary = await _executor(storage, api).execute(run.id)
    where = f"crash {'after' if after else 'before'} storage call {at}"
    assert summary.run.status == RunStatus.SUCCEEDED, where
    await check_invariants(storage, run.id)
    # every request was sent exactly as often as its script needed: nothing twice
    assert api.sent == {name: len(s) for name, s in SCRIPT.items()}, where
    assert not await storage.list_batches(run.id, open_only=True), where
    states = {b.state for b in await storage.list_batches(run.id)}
    assert states <= {BatchState.DONE, BatchState.ABANDONED}, where
    assert len(await storage.list_cards(run.id)) == len(SCRIPT), where


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_a_crash_at_any_storage_call_resumes_without_sending_twice(
    autojump_clock: trio.testing.MockClock, after: bool
) -> None:
    total = await _calls_of_a_clean_run()
    assert total > 40  # the run is long enough to cross every kind of step
    for at in range(1, total + 1):
        await _crash_then_resume(at, after=after, when=lambda: None)


async def test_a_crash_at_any_storage_call_then_a_long_pause_resumes_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The provider ends every batch while nobody looks; the next execution collects them.
    total = await _calls_of_a_clean_run()

    for at in range(1, total + 1, 3):
        await _crash_then_resume(at, after=True, when=lambda: autojump_clock.jump(3600))


async def test_an_execution_cancelled_at_any_moment_resumes_without_sending_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for stop in range(0, 400, 7):
        storage = MemoryStorage(clock=trio.current_time)
        run = await storage.create_run(_documents())
        api = _api()
        with trio.move_on_after(stop):
            await _executor(storage, api).execute(run.id)
        summary = await _executor(storage, api).execute(run.id)
        assert summary.run.status == RunStatus.SUCCEEDED, stop
        assert api.sent == {name: len(s) for name, s in SCRIPT.items()}, stop
        await check_invariants(storage, run.id)
