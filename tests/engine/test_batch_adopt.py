"""Re-attaching a batch whose create call's answer was lost, when another client of the
same API key made a batch of the same size meanwhile: ours is adopted, theirs never."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from cardmill import Document, MemoryStorage, RunStatus
from cardmill.engine import BatchExecutor
from cardmill.errors import RateLimited, TransientError
from cardmill.model import BatchState
from cardmill.providers import AnthropicProvider, BatchStatus
from cardmill.testing import FakeAnthropicServer, check_invariants

from .batch_fakes import FakeBatchAPI


def docs(n: int) -> list[Document]:
    return [Document(f"doc{i:04d}.txt", b"x" * 400) for i in range(n)]


def executor(storage: MemoryStorage, api: FakeBatchAPI) -> BatchExecutor:
    return BatchExecutor(storage, api, poll_interval=5.0, max_poll_interval=60.0)


@attrs.define
class _ForeignBetween(FakeBatchAPI):
    """Our first create call is refused with a 429; meanwhile another client of the key
    creates a batch of the same size (``foreign_lead`` seconds before our record when
    negative); our next call creates ours, and its answer is lost (and, with ``crash``,
    the process dies right then)."""

    foreign_lead: float = 0.0
    crash: trio.CancelScope | None = None
    ours: str | None = None
    theirs: str | None = None

    async def create_batch(self, requests: Sequence[Mapping[str, Any]]) -> BatchStatus:
        if self.theirs is None:
            if self.foreign_lead < 0:
                # Their batch was made a moment before our record (within the margin).
                self.clock, real = (lambda: real() + self.foreign_lead), self.clock
                try:
                    self.theirs = await self._foreign(len(requests))
                finally:
                    self.clock = real
            else:
                self.theirs = await self._foreign(len(requests))
            raise RateLimited("429 rate_limit_error: slow down", retry_after=5.0)
        status = await super().create_batch(requests)
        self.ours = status.provider_batch_id
        if self.crash is not None:
            self.crash.cancel()  # kill -9: the answer is never recorded
        raise TransientError("connection reset while reading the answer")

    async def _foreign(self, n: int) -> str:
        theirs = [
            await self.batch_request(Document(f"theirs{i}.txt", b"y"), f"theirs-{i}")
            for i in range(n)
        ]
        return (await super().create_batch(theirs)).provider_batch_id


async def _check_ours_adopted(storage: MemoryStorage, api: _ForeignBetween, run_id: str) -> None:
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    uploads = await storage.list_uploads(run_id)
    # each upload paid once: our batch was adopted, nothing was sent again
    assert {u.name: api.sent[u.name] for u in uploads} == {u.name: 1 for u in uploads}
    assert all(u.attempts == 1 for u in uploads)
    [batch] = await storage.list_batches(run_id)
    assert batch.state == BatchState.DONE
    assert batch.provider_batch_id == api.ours != api.theirs
    for upload in uploads:  # no foreign result settled
        [card] = await storage.list_cards(run_id, upload_id=upload.id)
        assert card.title == f"About {upload.name}"
    await check_invariants(storage, run_id)


@pytest.mark.parametrize("submit", [True, False], ids=["resume", "resume-no-batch"])
async def test_resume_after_a_crash_adopts_our_batch_not_a_foreign_one_made_meanwhile(
    autojump_clock: trio.testing.MockClock, submit: bool
) -> None:
    storage, api = MemoryStorage(clock=trio.current_time), _ForeignBetween()
    run = await storage.create_run(docs(3))
    with trio.CancelScope() as api.crash:
        await executor(storage, api).execute(run.id)
    assert api.ours is not None
    assert api.theirs is not None
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.SUBMITTING
    api.crash = None
    # resume (without sending, as `resume --no-batch` first collects the open batches)
    with trio.fail_after(24 * 3600):
        await executor(storage, api).execute(run.id, submit=submit)
    await _check_ours_adopted(storage, api, run.id)


async def test_a_lost_create_answer_finds_our_batch_not_a_foreign_one_made_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = MemoryStorage(clock=trio.current_time), _ForeignBetween()
    run = await storage.create_run(docs(3))
    await executor(storage, api).execute(run.id)
    await _check_ours_adopted(storage, api, run.id)


async def test_a_batch_made_after_the_record_is_preferred_to_one_made_just_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = MemoryStorage(clock=trio.current_time), _ForeignBetween(foreign_lead=-1.0)
    run = await storage.create_run(docs(3))
    with trio.CancelScope() as api.crash:
        await executor(storage, api).execute(run.id)
    api.crash = None
    await executor(storage, api).execute(run.id)
    await _check_ours_adopted(storage, api, run.id)


async def test_through_the_sdk_resume_adopts_our_batch_not_a_foreign_one_made_meanwhile() -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(3))
    uploads = await storage.list_uploads(run.id)
    async with FakeAnthropicServer() as server:
        provider = AnthropicProvider(api_key="fake-key-adopt-0123456789", base_url=server.url)
        async with provider:
            # our process recorded a batch; its first create was refused; another client
            # of the key made a batch of the same size; ours was created, the answer lost
            made = await storage.create_batch(run.id, [u.id for u in uploads], lease_seconds=3600)
            assert made is not None
            batch, items = made
            theirs = [
                await provider.batch_request(
                    Document(f"theirs{i}.md", b"# T\n\nTheirs.\n"), f"t{i}"
                )
                for i in range(3)
            ]
            foreign = (await provider.create_batch(theirs)).provider_batch_id
            requests = [
                await provider.batch_request(await storage.load_document(i.upload_id), i.custom_id)
                for i in items
            ]
            ours = (await provider.create_batch(requests)).provider_batch_id
            executor = BatchExecutor(storage, provider, poll_interval=0.01, max_poll_interval=0.05)
            with trio.fail_after(30):
                summary = await executor.execute(run.id)
        assert summary.run.status == RunStatus.SUCCEEDED
        assert (await storage.get_batch(batch.id)).provider_batch_id == ours != foreign
        sent = Counter(s.custom_id for s in server.batch_log)
        assert sent == Counter({**{u.id: 1 for u in uploads}, "t0": 1, "t1": 1, "t2": 1})
        await check_invariants(storage, run.id)
