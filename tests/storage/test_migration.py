"""Databases written by earlier versions of cardmill open, upgrade and resume.

``data/cardmill-schema-3.db`` and ``data/cardmill-schema-3.pg.sql`` were written by
cardmill at commit 638d004 (schema 3, before usage, cost and batches were stored), with
this script run against that commit's code (``git worktree add /tmp/old 638d004``;
``PYTHONPATH=/tmp/old/src python make_v3.py cardmill-schema-3.db``)::

    clock = lambda: 1_700_000_000.0
    async with SQLiteStorage.open(path, clock=clock) as s:
        done = await s.create_run(
            [Document("a.md", b"# A\\n\\nalpha"), Document("b.txt", b"bravo")], name="finished"
        )
        for u in await s.list_uploads(done.id):
            await s.complete_upload(u.id, [CardDraft("Alpha", "one"), CardDraft("Beta", "two")])
        await s.finish_run(done.id)
        half = await s.create_run(
            [Document(f"{n}.txt", n.encode()) for n in "cdef"], name="half", recipe=FLASHCARDS
        )
        c, d, e, f = await s.list_uploads(half.id)
        card = FLASHCARDS.draft({"question": "q", "answer": "a", "tags": ["x"]})
        await s.complete_upload(c.id, [card])
        await s.fail_upload(d.id, "too large")
        await s.claim_upload(half.id, worker="gone", lease_seconds=60)
        await s.finish_run(half.id)

then ``PRAGMA journal_mode = DELETE; VACUUM``. The PostgreSQL one is the same script with
``PostgresStorage.open(dsn, schema="cardmill_v3", clock=clock)``, dumped with
``pg_dump --schema=cardmill_v3 --no-owner --no-privileges --inserts`` (comments and psql
meta-commands removed).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardmill import (
    FLASHCARDS,
    STUDY_CARDS,
    BatchState,
    CardDraft,
    Document,
    RunStatus,
    SQLiteStorage,
    Storage,
    UploadStatus,
    Usage,
)
from cardmill.storage import PostgresStorage
from cardmill.testing import check_invariants

from .. import pg

DATA = Path(__file__).parent / "data"
WRITTEN_AT = 1_700_000_000.0
LATER = WRITTEN_AT + 3600  # the lease of the upload claimed by "gone" has expired


async def check_upgraded_and_resume(storage: Storage) -> None:
    runs = {r.name: r for r in await storage.list_runs()}
    assert sorted(runs) == ["finished", "half"]
    finished, half = runs["finished"], runs["half"]
    assert (finished.status, finished.total_cards, finished.recipe_name) == (
        RunStatus.SUCCEEDED,
        4,
        STUDY_CARDS.name,
    )
    assert [c.title for c in await storage.list_cards(finished.id)] == ["Alpha", "Beta"] * 2
    # Cards stored before the search index are in it.
    found = await storage.search_cards(finished.id, text="ALPH")
    assert [c.title for c in found.cards] == ["Alpha"] * 2
    assert half.recipe_digest == FLASHCARDS.digest
    assert await storage.get_recipe(half.id) == FLASHCARDS
    for run in (finished, half):
        assert (run.usage, run.cost_usd, run.requests, run.rate_limited) == (Usage(), 0, 0, 0)
        assert all(
            (u.usage, u.cost_usd, u.requests, u.rate_limited) == (Usage(), 0, 0, 0)
            for u in await storage.list_uploads(run.id)
        )
        assert await storage.list_batches(run.id) == []
        await check_invariants(storage, run.id)
    c, d, e, f = await storage.list_uploads(half.id)
    assert [u.status for u in (c, d, e, f)] == [
        UploadStatus.COMPLETED,
        UploadStatus.FAILED,
        UploadStatus.LOADING,
        UploadStatus.PENDING,
    ]
    assert (e.worker, e.attempts) == ("gone", 1)
    # Resume: a batch takes the upload whose lease expired and the pending one.
    made = await storage.create_batch(half.id, [c.id, d.id, e.id, f.id], lease_seconds=600)
    assert made is not None
    batch, items = made
    assert [(i.upload_id, i.attempt) for i in items] == [(e.id, 2), (f.id, 1)]
    await storage.set_batch_submitted(batch.id, "msgbatch_resumed")
    card = FLASHCARDS.draft({"question": "q2", "answer": "a2", "tags": []})
    for item, cost in zip(items, (0.25, 0.5), strict=True):
        assert await storage.complete_upload(
            item.upload_id,
            [card],
            worker=batch.holder,
            attempt=item.attempt,
            usage=Usage(100, 10),
            cost_usd=cost,
            requests=1,
        )
    assert (await storage.update_batch(batch.id, state=BatchState.DONE)).state == BatchState.DONE
    done = await storage.finish_run(half.id)
    assert (done.status, done.completed_items, done.failed_items, done.total_cards) == (
        RunStatus.PARTIAL,
        3,
        1,
        3,
    )
    assert (done.usage, done.cost_usd) == (Usage(200, 20), 0.75)
    assert (done.requests, done.rate_limited) == (2, 0)
    await check_invariants(storage, half.id)
    assert (await storage.get_run(finished.id)).cost_usd == 0


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return version


async def test_a_schema_3_sqlite_file_upgrades_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    shutil.copy(DATA / "cardmill-schema-3.db", path)
    assert user_version(path) == 3
    async with SQLiteStorage.open(path, clock=lambda: LATER) as storage:
        await check_upgraded_and_resume(storage)
    assert user_version(path) == 7
    conn = sqlite3.connect(path)
    try:  # the index built for the old cards holds exactly their words
        conn.execute("INSERT INTO cards_fts(cards_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()
    # Reopening an upgraded file changes nothing.
    async with SQLiteStorage.open(path, clock=lambda: LATER) as storage:
        for run in await storage.list_runs():
            await check_invariants(storage, run.id)
    assert user_version(path) == 7


async def test_the_0_1_0_file_still_upgrades_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(DATA / "cardmill-0.1.0.db", path)
    assert user_version(path) == 2
    async with SQLiteStorage.open(path) as storage:
        runs = await storage.list_runs()
        assert [r.name for r in runs] == ["finished", "half"]
        for run in runs:
            assert (run.usage, run.cost_usd) == (Usage(), 0)
            every = [c.title for c in await storage.list_cards(run.id)]
            assert [c.title for c in (await storage.search_cards(run.id)).cards] == every
            for title in every:
                hits = await storage.search_cards(run.id, text=title.upper())
                assert title in [c.title for c in hits.cards]
            assert await storage.list_batches(run.id) == []
            await check_invariants(storage, run.id)
        half = runs[1]
        pending = await storage.list_uploads(half.id, UploadStatus.PENDING)
        made = await storage.create_batch(half.id, [u.id for u in pending], lease_seconds=60)
        assert made is not None
        batch, items = made
        for item in items:
            assert await storage.complete_upload(
                item.upload_id,
                [CardDraft("t", "b")],
                worker=batch.holder,
                attempt=item.attempt,
                cost_usd=0.1,
            )
        assert (await storage.get_run(half.id)).cost_usd == round(0.1 * len(items), 9)
        await check_invariants(storage, half.id)
    assert user_version(path) == 7


@pytest.fixture
def v3_schema() -> Iterator[str]:
    """A PostgreSQL schema as cardmill wrote it at schema 3, under a fresh name."""
    pg.require()
    import psycopg

    name = pg.new_schema()
    script = (DATA / "cardmill-schema-3.pg.sql").read_text().replace("cardmill_v3", name)
    with psycopg.connect(pg.DSN, autocommit=True) as conn:
        conn.execute(script.encode())
    yield name
    pg.drop_schema(name)


def pg_version(schema: str) -> str:
    import psycopg

    with psycopg.connect(pg.DSN, autocommit=True) as conn:
        row = conn.execute(f'SELECT value FROM "{schema}".cardmill_meta').fetchone()
    assert row is not None
    return str(row[0])


async def test_a_schema_3_postgres_schema_upgrades_and_resumes(v3_schema: str) -> None:
    assert pg_version(v3_schema) == "3"
    async with PostgresStorage.open(pg.DSN, schema=v3_schema, clock=lambda: LATER) as storage:
        await check_upgraded_and_resume(storage)
    assert pg_version(v3_schema) == "7"
    async with PostgresStorage.open(pg.DSN, schema=v3_schema, clock=lambda: LATER) as storage:
        for run in await storage.list_runs():
            await check_invariants(storage, run.id)


# ``data/cardmill-schema-5.db`` and ``data/cardmill-schema-5.pg.sql`` were written by
# cardmill at commit 6d95c82 (schema 5, before a run kept its provider and model), the
# same way as the schema-3 ones, by this script::
#
#     half = await s.create_run([Document(f"{n}.txt", n.encode()) for n in "abc"], name="half")
#     a, b, c = await s.list_uploads(half.id)
#     await s.claim_upload(half.id, worker="w", lease_seconds=60)
#     await s.complete_upload(a.id, [CardDraft("Alpha", "one")], worker="w", attempt=1,
#                             usage=Usage(1000, 100), cost_usd=0.5, requests=1)
#     await s.finish_run(half.id)
#
# (the PostgreSQL one in schema ``cardmill_v5``).


async def check_schema_5_upgraded(storage: Storage) -> None:
    (half,) = await storage.list_runs()
    # What the run was sent to was not kept: unknown, not guessed.
    assert (half.name, half.provider, half.model) == ("half", "", "")
    assert (half.status, half.completed_items, half.cost_usd) == (RunStatus.CANCELLED, 1, 0.5)
    await check_invariants(storage, half.id)
    new = await storage.create_run(
        [Document("d.txt", b"d")], provider="anthropic", model="claude-opus-4-5"
    )
    assert (new.provider, new.model) == ("anthropic", "claude-opus-4-5")
    assert (await storage.get_run(new.id)).model == "claude-opus-4-5"
    claimed = await storage.claim_upload(half.id, worker="w2", lease_seconds=60)
    assert claimed is not None
    assert await storage.complete_upload(
        claimed.id, [CardDraft("Bravo", "two")], worker="w2", attempt=claimed.attempts
    )
    await check_invariants(storage, half.id)


async def test_a_schema_5_sqlite_file_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    shutil.copy(DATA / "cardmill-schema-5.db", path)
    assert user_version(path) == 5
    async with SQLiteStorage.open(path, clock=lambda: LATER) as storage:
        await check_schema_5_upgraded(storage)
    assert user_version(path) == 7
    async with SQLiteStorage.open(path, clock=lambda: LATER) as storage:
        runs = await storage.list_runs()
        assert [(r.provider, r.model) for r in runs] == [("", ""), ("anthropic", "claude-opus-4-5")]


async def test_a_schema_5_postgres_schema_upgrades_in_place() -> None:
    pg.require()
    import psycopg

    name = pg.new_schema()
    script = (DATA / "cardmill-schema-5.pg.sql").read_text().replace("cardmill_v5", name)
    try:
        with psycopg.connect(pg.DSN, autocommit=True) as conn:
            conn.execute(script.encode())
        assert pg_version(name) == "5"
        async with PostgresStorage.open(pg.DSN, schema=name, clock=lambda: LATER) as storage:
            await check_schema_5_upgraded(storage)
        assert pg_version(name) == "7"
    finally:
        pg.drop_schema(name)
