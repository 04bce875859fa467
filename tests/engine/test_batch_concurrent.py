"""Two batch executors on one run at once (two processes resuming it, or one cancelling
it while another runs it): nothing is paid for twice, and a cancel wins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from cardmill import Document, MemoryStorage, RunStatus, SQLiteStorage, Storage
from cardmill.engine import BatchExecutor, RunSummary
from cardmill.model import Batch, BatchState
from cardmill.testing import check_invariants

from .batch_fakes import FakeBatchAPI


def docs(n: int) -> list[Document]:
    return [Document(f"doc{i:04d}.txt", b"x" * 400) for i in range(n)]


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage(clock=trio.current_time)
    else:
        async with SQLiteStorage.open(tmp_path / "batch.db", clock=trio.current_time) as s:
            yield s


def executor(storage: Storage, api: FakeBatchAPI, worker: str) -> BatchExecutor:
    return BatchExecutor(
        storage,
        api,
        poll_interval=5.0,
        max_poll_interval=60.0,
        cancel_timeout=3600.0,
        worker=worker,
        clock=trio.current_time,
    )


async def until(check: Callable[[], bool]) -> None:
    """Wait in virtual time, a second at a time, until ``check`` holds."""
    for _ in range(100_000):
        if check():
            return
        await trio.sleep(1)
    raise AssertionError("never happened")


async def test_a_second_executor_leaves_a_batch_whose_create_is_in_flight_alone(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    api = FakeBatchAPI(hold_creates=trio.Event())
    run = await storage.create_run(docs(3))
    summaries: dict[str, RunSummary] = {}

    async def execute(worker: str) -> None:
        summaries[worker] = await executor(storage, api, worker).execute(run.id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(execute, "host:1:aaaaaa")
        await until(lambda: api.held == 1)
        nursery.start_soon(execute, "host:2:bbbbbb")
        # the second one looks at the run several times while the create is held
        await trio.sleep(600)
        [batch] = await storage.list_batches(run.id)
        assert batch.state == BatchState.SUBMITTING
        assert batch.creator == "host:1:aaaaaa"
        assert api.calls.count("create") == 1
        assert api.hold_creates is not None
        api.hold_creates.set()
    assert api.sent == {d.name: 1 for d in docs(3)}
    assert len(api.submissions) == 1
    for summary in summaries.values():
        assert summary.run.status == RunStatus.SUCCEEDED
    await check_invariants(storage, run.id)


async def test_a_batch_of_another_live_executor_is_taken_for_lost_after_the_margin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    api = FakeBatchAPI()
    run = await storage.create_run(docs(2))
    ids = [u.id for u in await storage.list_uploads(run.id)]
    made = await storage.create_batch(run.id, ids, lease_seconds=1e6, creator="host:1:aaaaaa")
    assert made is not None
    second = executor(storage, api, "host:2:bbbbbb")
    with trio.move_on_after(60):
        await second.execute(run.id)
    assert api.submissions == []  # left to its creator
    autojump_clock.jump(timedelta(hours=1).total_seconds())
    summary = await second.execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert api.sent == {d.name: 1 for d in docs(2)}
    [old, new] = await storage.list_batches(run.id)
    assert old.state == BatchState.ABANDONED
    assert new.creator == "host:2:bbbbbb"
    await check_invariants(storage, run.id)


async def test_cancel_while_another_executor_creates_a_batch_sends_nothing_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # In memory only: the steps are timed in virtual time, which a SQLite call on its
    # thread lets the autojump clock run past (the held create then times out and is
    # abandoned before the cancel is seen). The storage side of it, on every backend, is
    # tests/storage/test_contract_batches.py.
    storage = MemoryStorage(clock=trio.current_time)
    api = FakeBatchAPI(hold_creates=trio.Event(), batch_max_requests=2)
    run = await storage.create_run(docs(4))
    summaries: dict[str, RunSummary] = {}

    async def execute() -> None:
        summaries["run"] = await executor(storage, api, "host:1:aaaaaa").execute(run.id)

    async def cancel() -> None:
        summaries["cancel"] = await executor(storage, api, "host:2:bbbbbb").cancel(run.id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(execute)
        await until(lambda: api.held == 1)
        nursery.start_soon(cancel)
        await trio.sleep(10)
        [batch] = await storage.list_batches(run.id)
        assert batch.state == BatchState.CANCELING
        assert api.hold_creates is not None
        api.hold_creates.set()
    # the held batch reached the provider and was cancelled there; nothing else was sent
    assert len(api.submissions) == 1
    assert all(n == 1 for n in api.sent.values())
    assert api.calls.count("cancel") == 1
    stopped = summaries["run"].stopped
    assert stopped is not None
    assert "is being cancelled" in stopped
    final = await storage.get_run(run.id)
    assert final.status == RunStatus.CANCELLED
    await check_invariants(storage, run.id)


async def test_cancel_of_a_live_batch_stops_another_executor_resending_its_uploads(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    api = FakeBatchAPI(seconds_per_request=1000.0)
    run = await storage.create_run(docs(3))
    summaries: dict[str, RunSummary] = {}

    async def execute() -> None:
        summaries["run"] = await executor(storage, api, "host:1:aaaaaa").execute(run.id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(execute)
        await until(lambda: len(api.submissions) == 1)
        await trio.sleep(1500)  # one request processed
        summaries["cancel"] = await executor(storage, api, "host:2:bbbbbb").cancel(run.id)
    assert len(api.submissions) == 1
    assert all(n == 1 for n in api.sent.values())
    assert summaries["run"].stopped is not None
    assert "is being cancelled" in summaries["run"].stopped
    assert (await storage.get_run(run.id)).status == RunStatus.CANCELLED
    assert (await storage.get_run(run.id)).completed_items == 1
    await check_invariants(storage, run.id)


class _RecordedBeforeCancelWrites:
    """MemoryStorage where, once armed, the cancel's write of CANCELING waits until the
    create call's answer has been recorded (the cancel read the batch SUBMITTING, stale
    by the time it writes)."""

    def __init__(self, inner: MemoryStorage) -> None:
        self.inner = inner
        self.armed: trio.Event | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def update_batch(self, batch_id: str, **kw: Any) -> Batch:
        if kw.get("state") == BatchState.CANCELING and self.armed is not None:
            armed, self.armed = self.armed, None
            armed.set()  # the held create call goes on
            for _ in range(100_000):  # virtual seconds
                if (await self.inner.get_batch(batch_id)).provider_batch_id is not None:
                    break
                await trio.sleep(1)
            for _ in range(50):  # and the creator past its look at the state
                await trio.lowlevel.checkpoint()
        return await self.inner.update_batch(batch_id, **kw)


async def test_a_cancel_that_lost_the_race_with_the_create_call_cancels_at_the_provider(
    autojump_clock: trio.testing.MockClock,
) -> None:
    racing = _RecordedBeforeCancelWrites(MemoryStorage(clock=trio.current_time))
    storage = cast(Storage, racing)
    api = FakeBatchAPI(hold_creates=trio.Event(), seconds_per_request=1000.0)
    racing.armed = api.hold_creates
    run = await storage.create_run(docs(2))
    summaries: dict[str, RunSummary] = {}

    async def execute() -> None:
        summaries["run"] = await executor(storage, api, "host:1:aaaaaa").execute(run.id)

    async def cancel() -> None:
        summaries["cancel"] = await executor(storage, api, "host:2:bbbbbb").cancel(run.id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(execute)
        await until(lambda: api.held == 1)
        nursery.start_soon(cancel)
    # the batch was cancelled at the provider, not left to run (and be billed) to its end
    [sent] = api.batches.values()
    assert sent.canceled_at is not None
    assert api.calls.count("cancel") == 1
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.DONE
    assert batch.counts.canceled == 2
    final = await storage.get_run(run.id)
    assert final.status == RunStatus.CANCELLED
    await check_invariants(storage, run.id)
