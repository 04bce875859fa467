"""Fencing as the engine relies on it: by claim, and by process only where pids are shared."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from cardmill import CardDraft, Document, RunStatus, Storage, UploadStatus, Usage
from cardmill.engine import Engine
from cardmill.engine._executor import default_worker_id
from cardmill.providers import Analysis
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .conftest import FakeClock


class GatedProvider:
    """Answers with two cards once ``go`` is set; ``called`` says a request arrived."""

    name = "gated"

    def __init__(self) -> None:
        self.called = trio.Event()
        self.go = trio.Event()

    async def analyze(self, document: Document) -> Analysis:
        self.called.set()
        await self.go.wait()
        return Analysis((CardDraft("stale", "one"), CardDraft("stale", "two")), Usage())


class WatchedStorage:
    """Passes every call through, says when a completion has answered, and holds the
    caller there until ``proceed`` is set (so the test acts before the engine goes on)."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.completed: list[bool] = []
        self.complete_answered = trio.Event()
        self.proceed = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete_upload(
        self, upload_id: str, drafts: Sequence[CardDraft], **fence: Any
    ) -> bool:
        changed = await self._inner.complete_upload(upload_id, drafts, **fence)
        self.completed.append(changed)
        self.complete_answered.set()
        await self.proceed.wait()
        return changed

    async def complete_and_claim(
        self, upload_id: str, drafts: Sequence[CardDraft], **kwargs: Any
    ) -> tuple[bool, Any]:
        changed, following = await self._inner.complete_and_claim(upload_id, drafts, **kwargs)
        self.completed.append(changed)
        self.complete_answered.set()
        await self.proceed.wait()
        return changed, following


async def test_a_stale_claim_of_the_same_engine_cannot_commit(
    storage: Storage, clock: FakeClock, mock_clock: trio.testing.MockClock
) -> None:
    # trio's clock stands still (no heartbeat fires); the storage's clock is moved by hand.
    run = await storage.create_run([Document("a.txt", b"alpha")])
    provider = GatedProvider()
    watched = WatchedStorage(storage)
    lease, poll = 3600.0, 1.0
    engine = Engine(
        watched,
        provider,
        worker="w",
        lease_seconds=lease,
        poll_interval=poll,
    )
    async with trio.open_nursery() as nursery:
        done: list[Any] = []

        async def execute() -> None:
            done.append(await engine.execute(run.id))

        nursery.start_soon(execute)
        await provider.called.wait()
        # The engine's lease expires while its request is in flight, and the same worker
        # name claims the upload again: a new claim, attempt 2.
        clock.advance(lease + 1)
        again = await storage.claim_upload(run.id, worker="w", lease_seconds=lease)
        assert again is not None
        assert again.attempts == 2
        provider.go.set()
        await watched.complete_answered.wait()
        # The first claim's answer did not commit over the second claim.
        assert watched.completed == [False]
        (held,) = await storage.list_uploads(run.id)
        assert (held.status, held.attempts, held.card_count) == (UploadStatus.LOADING, 2, 0)
        assert await storage.list_cards(run.id) == []
        # The second claim commits its own cards; the engine sees the run through.
        fresh = [CardDraft("fresh", "card")]
        assert await storage.complete_upload(again.id, fresh, worker="w", attempt=2)
        watched.proceed.set()
        while not done:
            mock_clock.jump(poll)
            await trio.testing.wait_all_tasks_blocked()
    (summary,) = done
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.completed == 0
    assert [c.draft for c in await storage.list_cards(run.id)] == fresh
    await check_invariants(storage, run.id)


async def dead_pid() -> str:
    child = await trio.run_process(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_stdout=True
    )
    return child.stdout.decode().strip()


async def test_uploads_of_a_dead_pid_in_another_pid_namespace_are_not_reclaimed(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    host, _, token = default_worker_id().split(":")
    ours = token.rpartition("@")[2]
    pid = await dead_pid()
    # The same hostname and a pid that is dead here: but another container's pid, or a
    # worker id of an older version that does not say which namespace its pid is in.
    foreign = [f"{host}:{pid}:abc123@{ours}0", f"{host}:{pid}:abc123@other.1", f"{host}:{pid}:x"]
    run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(len(foreign))])
    for worker in foreign:
        assert await storage.claim_upload(run.id, worker=worker, lease_seconds=3600) is not None
    engine = Engine(storage, ScriptedProvider(default=Step(1.0)), poll_interval=5.0)
    with trio.move_on_after(60):
        await engine.execute(run.id)
    held = await storage.list_uploads(run.id)
    assert [(u.status, u.worker, u.attempts) for u in held] == [
        (UploadStatus.LOADING, w, 1) for w in foreign
    ]


async def test_uploads_of_a_dead_pid_in_our_pid_namespace_are_reclaimed(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    host, _, token = default_worker_id().split(":")
    dead = f"{host}:{await dead_pid()}:{token}"
    run = await storage.create_run([Document("a.txt", b"x")])
    assert await storage.claim_upload(run.id, worker=dead, lease_seconds=3600) is not None
    summary = await Engine(storage, ScriptedProvider(default=Step(1.0))).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    await check_invariants(storage, run.id)
