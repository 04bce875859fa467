"""A results line the provider cannot read, through the real SDK, the batch executor and
FakeAnthropicServer: its one upload is retried or fails, the others settle."""

from __future__ import annotations

from collections import Counter

import trio

from cardmill import Document, MemoryStorage, RunStatus, UploadStatus
from cardmill.engine import BatchExecutor, RetryPolicy
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer, check_invariants

KEY = "fake-key-unreadable-results"


def docs(n: int) -> list[Document]:
    return [
        Document(f"note{i}.md", f"# Note {i}\n\nNote {i} says one thing.\n".encode())
        for i in range(n)
    ]


async def run_with_an_unreadable_line(
    retry: RetryPolicy,
) -> tuple[MemoryStorage, str, FakeAnthropicServer, str]:
    storage = MemoryStorage()
    run = await storage.create_run(docs(3))
    by_name = {u.name: u for u in await storage.list_uploads(run.id)}
    bad = by_name["note1.md"].id
    async with FakeAnthropicServer() as server:
        server.fail_batch_item(bad, "unreadable")
        provider = AnthropicProvider(api_key=KEY, base_url=server.url)
        async with provider:
            executor = BatchExecutor(
                storage, provider, retry=retry, poll_interval=0.01, max_poll_interval=0.05
            )
            with trio.fail_after(30):
                await executor.execute(run.id)
    return storage, run.id, server, bad


async def test_an_unreadable_results_line_sends_its_one_upload_again() -> None:
    storage, run_id, server, bad = await run_with_an_unreadable_line(RetryPolicy())
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    sent = Counter(s.custom_id for s in server.batch_log)
    uploads = await storage.list_uploads(run_id)
    assert sent == Counter({u.id: 2 if u.id == bad else 1 for u in uploads})
    assert {u.id: u.attempts for u in uploads} == {u.id: 2 if u.id == bad else 1 for u in uploads}
    await check_invariants(storage, run_id)


async def test_an_unreadable_results_line_fails_its_one_upload_when_retries_are_spent() -> None:
    storage, run_id, server, bad = await run_with_an_unreadable_line(RetryPolicy(max_attempts=1))
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.PARTIAL
    uploads = {u.id: u for u in await storage.list_uploads(run_id)}
    assert uploads[bad].status == UploadStatus.FAILED
    assert "results line" in (uploads[bad].error or "")
    assert KEY not in (uploads[bad].error or "")
    assert [u.status for i, u in uploads.items() if i != bad] == [UploadStatus.COMPLETED] * 2
    assert len(server.batch_log) == 3
    await check_invariants(storage, run_id)
