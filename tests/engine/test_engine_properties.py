"""Property test: random provider scripts and a random cancellation, then resume.

Every upload ends in exactly one terminal state, with exactly one set of cards when it
completed; an observer checks the counters against what is persisted at every event.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from cardmill import (
    LimitKind,
    MemoryStorage,
    Overloaded,
    PermanentError,
    RateLimited,
    SQLiteStorage,
    Storage,
    TransientError,
    UploadStatus,
)
from cardmill.engine import Engine, Event, RetryPolicy
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .conftest import docs


def snapshot_check(storage: Storage, path: Path | None, run_id: str) -> None:
    """Check counters against persisted rows, atomically, from inside an observer."""
    if isinstance(storage, MemoryStorage):
        run = storage._runs[run_id]
        uploads = [storage._uploads[i] for i in storage._by_run[run_id]]
        cards = sum(len(storage._cards.get(u.id, ())) for u in uploads)
        completed = sum(u.status == UploadStatus.COMPLETED for u in uploads)
        failed = sum(u.status == UploadStatus.FAILED for u in uploads)
        totals = (run.total_cards, run.completed_items, run.failed_items)
    else:
        assert path is not None
        conn = sqlite3.connect(path)
        try:
            conn.execute("BEGIN")
            totals = conn.execute(
                "SELECT total_cards, completed_items, failed_items FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            cards = conn.execute(
                "SELECT count(*) FROM cards c JOIN uploads u ON u.id = c.upload_id"
                " WHERE u.run_id = ?",
                (run_id,),
            ).fetchone()[0]
            completed, failed = conn.execute(
                "SELECT sum(status = 'completed'), sum(status = 'failed') FROM uploads"
                " WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            conn.execute("COMMIT")
        finally:
            conn.close()
    assert tuple(totals) == (cards, completed, failed)


outcome = st.one_of(
    st.builds(lambda n, lat: Step(lat, cards=n), st.integers(0, 3), st.sampled_from([0.1, 1.0])),
    st.builds(
        lambda ra: Step(0.05, error=RateLimited(retry_after=ra, limit=LimitKind.REQUESTS)),
        st.sampled_from([None, 0.5, 3.0, 75.0]),
    ),
    st.just(Step(0.05, error=Overloaded(retry_after=1.0))),
    st.just(Step(0.5, error=TransientError("connection reset"))),
    st.just(Step(0.2, error=PermanentError("unsupported document"))),
)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@given(
    scripts=st.lists(st.lists(outcome, min_size=1, max_size=4), min_size=1, max_size=8),
    concurrency=st.integers(1, 4),
    cancel_at=st.one_of(st.none(), st.floats(0.0, 8.0)),
)
def test_every_upload_ends_once_after_cancel_and_resume(
    kind: str, scripts: list[list[Step]], concurrency: int, cancel_at: float | None
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        trio.run(
            scenario,
            kind,
            Path(directory) / "p.db",
            scripts,
            concurrency,
            cancel_at,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )


async def scenario(
    kind: str, path: Path, scripts: list[list[Step]], concurrency: int, cancel_at: float | None
) -> None:
    storage: Any
    if kind == "memory":
        storage = MemoryStorage()
        await _run(storage, None, scripts, concurrency, cancel_at)
    else:
        async with SQLiteStorage.open(path) as storage:
            await _run(storage, path, scripts, concurrency, cancel_at)


async def _run(
    storage: Storage,
    path: Path | None,
    scripts: list[list[Step]],
    concurrency: int,
    cancel_at: float | None,
) -> None:
    documents = docs(len(scripts))
    run = await storage.create_run(documents)
    provider = ScriptedProvider(
        {d.name: list(s) for d, s in zip(documents, scripts, strict=True)},
        default=Step(0.5, cards=1),
    )
    events: list[Event] = []

    def observe(event: Event) -> None:
        events.append(event)
        snapshot_check(storage, path, run.id)

    policy = RetryPolicy(max_attempts=3, max_rate_limited=3, base_delay=0.5)
    engine = Engine(storage, provider, concurrency=concurrency, retry=policy, observer=observe)
    if cancel_at is not None:
        with trio.move_on_after(cancel_at):
            await engine.execute(run.id)
        await check_invariants(storage, run.id)
        assert not await storage.list_uploads(run.id, UploadStatus.LOADING)
    summary = await engine.execute(run.id)
    assert summary.run.status.finished
    await check_invariants(storage, run.id)
    uploads = await storage.list_uploads(run.id)
    assert all(u.status.terminal for u in uploads)
    for u in uploads:
        cards = await storage.list_cards(run.id, u.id)
        assert len(cards) == u.card_count
        # One set of cards: exactly the drafts of one answer the provider gave for this
        # document, whole and in order (every answer's cards are unique to it).
        stored = tuple(c.draft for c in cards)
        if u.status == UploadStatus.COMPLETED:
            assert stored in [a for name, a in provider.answers if name == u.name]
        else:
            assert stored == ()
        if u.status == UploadStatus.FAILED:
            assert u.error
            assert "\n" not in u.error
    finished = [e for e in events if type(e).__name__ == "RunFinished"]
    assert finished
