"""Reuse in batch mode: an upload whose key was answered before is completed from that
answer under its batch's claim, not sent; an answer is kept as soon as its result is
read, before its upload is completed."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from cardmill import Document, MemoryStorage, RunStatus, SQLiteStorage, Storage
from cardmill._cost import DEFAULT_PRICES, cost_of
from cardmill.engine import BatchExecutor, Event, RunSummary, UploadCompleted
from cardmill.model import BatchState, UploadStatus
from cardmill.providers import BatchStatus
from cardmill.storage import AnswerStore, PostgresStorage
from cardmill.testing import check_invariants

from .. import pg
from .batch_fakes import FakeBatchAPI

PRICE = DEFAULT_PRICES.prices["claude-haiku-4-5"]


@attrs.define
class ReusingAPI(FakeBatchAPI):
    """The fake batch API, saying what determines its answers (so they can be reused);
    with ``archive``, every batch's results are gone (past the provider's retention)."""

    version: str = "v1"
    archive: bool = False

    def request_fingerprint(self) -> str:
        return f"{self.name}:{self.model}:{self.version}"

    async def retrieve_batch(self, provider_batch_id: str) -> BatchStatus:
        status = await super().retrieve_batch(provider_batch_id)
        return attrs.evolve(status, archived=self.archive and status.ended)


class Crash(BaseException):
    """The process died."""


class Wrapped:
    """A storage whose ``complete_upload`` dies at its ``crash_at``-th call (before it
    commits), and that forgets every answer before each ``create_batch`` when
    ``forget``."""

    def __init__(self, inner: Storage, *, crash_at: int = 0, forget: bool = False) -> None:
        self._inner = inner
        self._crash_at = crash_at
        self._forget = forget
        self.completes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete_upload(self, *args: Any, **kwargs: Any) -> bool:
        self.completes += 1
        if self.completes == self._crash_at:
            raise Crash
        return bool(await self._inner.complete_upload(*args, **kwargs))

    async def create_batch(self, *args: Any, **kwargs: Any) -> Any:
        if self._forget:
            assert isinstance(self._inner, AnswerStore)
            await self._inner.forget_answers()
        return await self._inner.create_batch(*args, **kwargs)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage(clock=trio.current_time)
    elif request.param == "sqlite":
        async with SQLiteStorage.open(tmp_path / "batch.db") as s:
            yield s
    else:
        pg.require()
        schema = pg.new_schema()
        try:
            async with PostgresStorage.open(pg.DSN, schema=schema) as s:
                yield s
        finally:
            pg.drop_schema(schema)


def notes(*names: str) -> list[Document]:
    # Texts of one length: every request is billed alike.
    return [Document(f"{name}.txt", f"note {name}".encode(), "text/plain") for name in names]


OLD = notes("a", "b", "c", "d")


async def run_of(
    storage: object, documents: Sequence[Document], api: FakeBatchAPI, **kw: Any
) -> tuple[str, BatchExecutor]:
    inner = storage._inner if isinstance(storage, Wrapped) else storage
    assert isinstance(inner, (MemoryStorage, SQLiteStorage, PostgresStorage))
    run = await inner.create_run(list(documents))
    ex = BatchExecutor(storage, api, poll_interval=5.0, max_poll_interval=60.0, **kw)  # type: ignore[arg-type]
    return run.id, ex


async def execute(
    storage: Storage, documents: Sequence[Document], api: FakeBatchAPI, **kw: Any
) -> RunSummary:
    run_id, ex = await run_of(storage, documents, api, **kw)
    summary = await ex.execute(run_id)
    await check_invariants(storage, run_id)
    return summary


async def kept(storage: Storage) -> int:
    assert isinstance(storage, AnswerStore)
    return (await storage.answer_stats()).answers


async def test_a_second_run_sends_only_the_new_document(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    api = ReusingAPI()
    one = await execute(storage, OLD, api)
    assert (one.requests, one.completed, one.reused, one.run.reused_items) == (4, 4, 0, 0)
    assert await kept(storage) == 4

    events: list[Event] = []
    two = await execute(storage, [*OLD, *notes("e")], api, observer=events.append)
    # Only the new document went to the provider, in the second run's one batch.
    assert len(api.submissions) == 2
    _, sent = api.submissions[1]
    [new] = [u for u in await storage.list_uploads(two.run.id) if u.name == "e.txt"]
    assert sent == (new.id,)
    assert api.sent == {"a.txt": 1, "b.txt": 1, "c.txt": 1, "d.txt": 1, "e.txt": 1}
    assert two.run.status == RunStatus.SUCCEEDED
    assert (two.requests, two.completed, two.failed, two.reused) == (1, 5, 0, 4)
    billed = api.billed(OLD[0])
    assert two.saved_tokens == 4 * (billed.input_tokens + billed.output_tokens)
    assert math.isclose(two.saved_cost_usd, 4 * cost_of(billed, PRICE, batch=True))
    assert (two.run.reused_items, two.run.saved_tokens) == (4, two.saved_tokens)
    assert math.isclose(two.run.saved_cost_usd, two.saved_cost_usd)
    # What was recorded as spent is the new request alone.
    assert math.isclose(two.run.cost_usd, cost_of(billed, PRICE, batch=True))
    assert two.run.requests == 1
    reused = sorted(e.upload.name for e in events if isinstance(e, UploadCompleted) and e.reused)
    assert reused == ["a.txt", "b.txt", "c.txt", "d.txt"]
    uploads = {u.name: u for u in await storage.list_uploads(two.run.id)}
    assert {n for n, u in uploads.items() if u.reused} == set(reused)
    # The reused uploads have the cards of the first run's answers.
    cards = {c.upload_id: c.title for c in await storage.list_cards(two.run.id)}
    assert cards[uploads["a.txt"].id] == "About a.txt"
    assert cards[uploads["e.txt"].id] == "About e.txt"
    assert await kept(storage) == 5


async def test_reused_uploads_take_no_room_in_a_batch(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    # Two requests a batch: the reused uploads between the two new ones do not push the
    # second new one into a batch of its own.
    api = ReusingAPI(batch_max_requests=2)
    await execute(storage, OLD[:2], api)
    assert len(api.submissions) == 1
    two = await execute(storage, [*notes("x"), *OLD[:2], *notes("y")], api)
    assert len(api.submissions) == 2
    assert len(api.submissions[1][1]) == 2
    assert (two.requests, two.completed, two.reused) == (2, 4, 2)
    states = [b.state for b in await storage.list_batches(two.run.id)]
    assert states == [BatchState.DONE]


async def test_a_batch_of_reused_uploads_only_sends_nothing(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    api = ReusingAPI()
    await execute(storage, OLD, api)
    again = await execute(storage, OLD, api)
    assert len(api.submissions) == 1
    assert api.calls.count("create") == 1
    assert (again.requests, again.completed, again.reused) == (0, 4, 4)
    assert again.run.status == RunStatus.SUCCEEDED
    [batch] = await storage.list_batches(again.run.id)
    assert batch.state == BatchState.DONE
    assert batch.provider_batch_id is None


@pytest.mark.parametrize("archive", [False, True], ids=["results-read-again", "archived"])
async def test_an_answer_kept_before_a_crash_is_not_paid_for_again(
    autojump_clock: trio.testing.MockClock, storage: Storage, archive: bool
) -> None:
    # The process dies completing the last upload of the batch, its answer kept. On
    # resume, the batch's results are read again, or (archived) are gone: the upload is
    # then completed from the kept answer, not sent again.
    api = ReusingAPI()
    crashing = Wrapped(storage, crash_at=3)
    run_id, ex = await run_of(crashing, OLD[:3], api)
    with pytest.raises(Crash):
        await ex.execute(run_id)
    assert await kept(storage) == 3
    [loading] = await storage.list_uploads(run_id, UploadStatus.LOADING)
    api.archive = archive
    summary = await BatchExecutor(storage, api, poll_interval=5.0).execute(run_id)
    assert summary.run.status == RunStatus.SUCCEEDED
    await check_invariants(storage, run_id)
    assert len(api.submissions) == 1
    assert api.sent == {"a.txt": 1, "b.txt": 1, "c.txt": 1}
    assert summary.requests == 0
    assert summary.completed == 1
    assert summary.reused == (1 if archive else 0)
    [done] = [u for u in await storage.list_uploads(run_id) if u.id == loading.id]
    assert done.status == UploadStatus.COMPLETED
    assert done.reused == archive
    assert len(await storage.list_cards(run_id)) == 3


async def test_reuse_off_sends_everything_and_keeps_nothing(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    api = ReusingAPI()
    await execute(storage, OLD, api)
    assert await kept(storage) == 4
    two = await execute(storage, [*OLD, *notes("e")], api, reuse=False)
    assert len(api.custom_ids_sent()) == 4 + 5
    assert (two.requests, two.completed, two.reused, two.run.reused_items) == (5, 5, 0, 0)
    assert two.saved_tokens == 0
    three = await execute(storage, notes("f"), api, reuse=False)
    assert three.requests == 1
    assert await kept(storage) == 4  # nothing new was kept


async def test_a_provider_that_does_not_say_what_determines_its_answers_is_never_reused(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    api = FakeBatchAPI()
    await execute(storage, OLD, api)
    two = await execute(storage, OLD, api)
    assert (two.requests, two.reused) == (4, 0)
    assert await kept(storage) == 0


async def test_the_same_new_document_twice_in_a_batch_is_sent_twice(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    # The second upload's key is being asked for by the first's live claim: a batch
    # does not wait for it (it may take 24 hours), so both are sent.
    api = ReusingAPI()
    twins = [Document(name, b"the same text", "text/plain") for name in ("1.txt", "2.txt")]
    one = await execute(storage, twins, api)
    assert (one.requests, one.reused) == (2, 0)
    assert await kept(storage) == 1
    two = await execute(storage, twins, api)
    assert (two.requests, two.reused) == (0, 2)


async def test_an_answer_forgotten_between_look_up_and_claim_is_sent_instead(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    # Found before the batch is recorded, gone once it holds the uploads: they go back to
    # PENDING and are sent in the next batch, never completed without their answer.
    api = ReusingAPI()
    await execute(storage, OLD[:2], api)
    forgetting = Wrapped(storage, forget=True)
    run_id, ex = await run_of(forgetting, OLD[:2], api)
    summary = await ex.execute(run_id)
    await check_invariants(storage, run_id)
    assert (summary.requests, summary.completed, summary.reused) == (2, 2, 0)
    assert api.sent == {"a.txt": 2, "b.txt": 2}
    states = [b.state for b in await storage.list_batches(run_id)]
    assert states == [BatchState.DONE, BatchState.DONE]
