"""Creating runs: reading outside transactions, bounded chunks, never a half run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import (
    FLASHCARDS,
    STUDY_CARDS,
    CardDraft,
    Document,
    InputError,
    RunNotFound,
    RunStatus,
    SQLiteStorage,
)
from cardmill.engine import Engine
from cardmill.storage import PostgresStorage
from cardmill.testing import ScriptedProvider, check_invariants

from .. import pg
from .conftest import Backend, FakeClock, make_backend

CHILD = Path(__file__).with_name("ingest_child.py")

# What schema 4 added to runs and uploads.
SPENT_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
)
# What schema 5 added to runs and uploads.
COUNT_COLUMNS = ("requests", "rate_limited")


@contextmanager
def released(go: threading.Event) -> Iterator[None]:
    """Whatever happens, let a gated reader go on (a failure must not become a hang)."""
    try:
        yield
    finally:
        go.set()


def gated_documents(
    n: int, stop_at: int, stopped: threading.Event, go: threading.Event
) -> Iterator[Document]:
    """``n`` documents; before the one at ``stop_at`` it says so and waits for ``go``."""
    for i in range(n):
        if i == stop_at:
            stopped.set()
            go.wait()
        yield Document(f"{i}.txt", f"document {i}".encode())


async def test_reading_documents_does_not_hold_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stopped, go = threading.Event(), threading.Event()
    # The other process's storage does not wait for a lock at all: a held lock fails it.
    async with (
        SQLiteStorage.open(path) as ingesting,
        SQLiteStorage.open(path, busy_timeout=0) as other,
    ):
        busy = await other.create_run([Document("busy.txt", b"busy")])
        async with trio.open_nursery() as nursery:
            created: list[Any] = []

            async def ingest() -> None:
                created.append(await ingesting.create_run(gated_documents(5, 2, stopped, go)))

            nursery.start_soon(ingest)
            with released(go):
                await trio.to_thread.run_sync(stopped.wait)
                # The ingest is reading its documents: the other storage writes freely.
                u = await other.claim_upload(busy.id, worker="other", lease_seconds=60)
                assert u is not None
                assert await other.renew_lease(u.id, worker="other", lease_seconds=60)
                assert await other.complete_upload(u.id, [CardDraft("t", "b")], worker="other")
        (run,) = created
        assert run.total_items == 5
        await check_invariants(other, run.id)
        await check_invariants(other, busy.id)


@asynccontextmanager
async def raw(backend: Backend) -> AsyncIterator[Callable[[str], list[Any]]]:
    """Plain SQL on the backend's database, outside the storage."""
    if backend.kind == "postgres":
        import psycopg

        with psycopg.connect(pg.DSN, autocommit=True) as pg_conn:
            pg_conn.execute(f'SET search_path TO "{backend.schema}"')
            yield lambda q: pg_conn.execute(q).fetchall()
    else:
        conn = sqlite3.connect(backend.path)
        try:
            yield lambda q: conn.execute(q).fetchall()
        finally:
            conn.close()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    from cardmill.storage._sqlbackend import SQLBackend

    monkeypatch.setattr(SQLBackend, "_chunk_rows", 4)
    return 4


def runs_and_uploads(sql: Callable[[str], list[Any]]) -> list[tuple[str, int, int, int]]:
    return [
        tuple(row)
        for row in sql(
            "SELECT r.id, r.creating, r.total_items,"
            " (SELECT count(*) FROM uploads u WHERE u.run_id = r.id) FROM runs r ORDER BY r.id"
        )
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backends that create runs in chunks."""
    if request.param == "postgres":
        pg.require()
    made = make_backend(request.param, tmp_path, FakeClock())
    yield made
    if request.param == "postgres":
        pg.drop_schema(made.schema)


async def test_a_large_run_is_written_in_chunks_and_hidden_until_whole(
    sql_backend: Backend, small_chunks: int
) -> None:
    stopped, go = threading.Event(), threading.Event()
    async with sql_backend.open() as storage, raw(sql_backend) as sql:
        async with trio.open_nursery() as nursery:
            created: list[Any] = []

            async def ingest() -> None:
                created.append(await storage.create_run(gated_documents(20, 10, stopped, go)))

            nursery.start_soon(ingest)
            with released(go):
                await trio.to_thread.run_sync(stopped.wait)
                # Two chunks of four are committed; the third is being read.
                ((run_id, creating, total, uploads),) = runs_and_uploads(sql)
                assert (creating, total, uploads) == (1, 2 * small_chunks, 2 * small_chunks)
                # Nothing in the protocol sees a run still being created.
                assert await storage.list_runs() == []
                with pytest.raises(RunNotFound):
                    await storage.get_run(run_id)
                with pytest.raises(RunNotFound):
                    await storage.claim_upload(run_id, worker="w", lease_seconds=60)
                with pytest.raises(RunNotFound):
                    await storage.finish_run(run_id)
                with pytest.raises(RunNotFound):
                    await storage.list_uploads(run_id)
        (run,) = created
        assert run.id == run_id
        assert [tuple(r) for r in runs_and_uploads(sql)] == [(run_id, 0, 20, 20)]
        assert [u.position for u in await storage.list_uploads(run_id)] == list(range(20))
        await check_invariants(storage, run_id)


def failing_documents(n: int, error: BaseException) -> Iterator[Document]:
    for i in range(n):
        yield Document(f"{i}.txt", b"x")
    raise error


async def test_a_run_whose_documents_fail_midway_leaves_nothing(
    backend: Backend, small_chunks: int
) -> None:
    async with backend.open() as storage:
        with pytest.raises(InputError, match="unreadable"):
            await storage.create_run(failing_documents(10, InputError("9.txt: unreadable")))
        with pytest.raises(InputError, match=r"documents\[3\] is a str, not a Document"):
            await storage.create_run([Document("a", b"a")] * 3 + ["b"])  # type: ignore[list-item]
        assert await storage.list_runs() == []
        if backend.kind != "memory":
            async with raw(backend) as sql:
                assert sql("SELECT count(*) FROM runs") == [(0,)]
                assert sql("SELECT count(*) FROM uploads") == [(0,)]
                assert sql("SELECT count(*) FROM documents") == [(0,)]


async def test_a_cancelled_ingest_leaves_nothing(sql_backend: Backend, small_chunks: int) -> None:
    stopped, go = threading.Event(), threading.Event()
    async with sql_backend.open() as storage:
        with trio.CancelScope() as scope, released(go):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(storage.create_run, gated_documents(20, 10, stopped, go))
                await trio.to_thread.run_sync(stopped.wait)
                scope.cancel()
                # The reader may go on in the background; nobody waits for it.
                go.set()
        assert await storage.list_runs() == []
        async with raw(sql_backend) as sql:
            assert sql("SELECT count(*) FROM uploads") == [(0,)]


def test_an_ingest_killed_midway_is_never_taken_for_a_whole_run(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    # The child prints this once two chunks of four are committed and a third is read.
    assert child.stdout.readline().strip() == b"reading"
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    conn = sqlite3.connect(path)
    ((run_id, creating, total, uploads),) = conn.execute(
        "SELECT r.id, r.creating, r.total_items,"
        " (SELECT count(*) FROM uploads u WHERE u.run_id = r.id) FROM runs r"
    ).fetchall()
    conn.close()
    # Its committed chunks are counted exactly, and the run says it is not whole.
    assert (creating, total, uploads) == (1, 8, 8)

    async def check() -> None:
        async with SQLiteStorage.open(path) as storage:
            assert await storage.list_runs() == []
            with pytest.raises(RunNotFound):
                await storage.claim_upload(run_id, worker="w", lease_seconds=60)
            with pytest.raises(RunNotFound):
                await storage.finish_run(run_id)
            with pytest.raises(RunNotFound):
                await Engine(storage, ScriptedProvider()).execute(run_id)
            # Its rows are left in the file, out of sight, and nothing else is disturbed.
            run = await storage.create_run([Document("next.txt", b"next")])
            summary = await Engine(storage, ScriptedProvider()).execute(run.id)
            assert summary.run.status == RunStatus.SUCCEEDED

    trio.run(check)


async def test_a_version_1_database_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    async with SQLiteStorage.open(path) as storage:
        old = await storage.create_run([Document("a.txt", b"a")], name="old")
    conn = sqlite3.connect(path)
    for trigger in ("insert", "delete", "update"):
        conn.execute(f"DROP TRIGGER cards_fts_{trigger}")
    conn.execute("DROP TABLE cards_fts")
    conn.execute("ALTER TABLE runs DROP COLUMN creating")
    conn.execute("ALTER TABLE runs DROP COLUMN recipe_toml")
    conn.execute("ALTER TABLE runs DROP COLUMN recipe_digest")
    conn.execute("ALTER TABLE runs DROP COLUMN provider")
    conn.execute("ALTER TABLE runs DROP COLUMN model")
    conn.execute("ALTER TABLE cards DROP COLUMN fields_json")
    conn.execute("DROP TABLE batch_items")
    conn.execute("DROP TABLE batches")
    conn.execute("DROP TABLE answers")
    for column in ("reused_items", "saved_tokens", "saved_nanos"):
        conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    for column in ("answer_key", "reused", "saved_tokens", "saved_nanos"):
        conn.execute(f"ALTER TABLE uploads DROP COLUMN {column}")
    for table in ("runs", "uploads"):
        for column in (*SPENT_COLUMNS, *COUNT_COLUMNS):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    async with SQLiteStorage.open(path) as storage:
        assert [r.name for r in await storage.list_runs()] == ["old"]
        await storage.create_run([Document("b.txt", b"b")], name="new")
        assert [r.name for r in await storage.list_runs()] == ["old", "new"]
        await check_invariants(storage, old.id)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    conn.close()


async def test_a_version_1_postgres_schema_is_migrated_and_keeps_its_runs() -> None:
    pg.require()
    schema = pg.new_schema()
    try:
        async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
            await storage.create_run([Document("a.txt", b"a")], name="old")
        import psycopg

        with psycopg.connect(pg.DSN, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}".runs DROP COLUMN creating')
            conn.execute(f'ALTER TABLE "{schema}".runs DROP COLUMN recipe_toml')
            conn.execute(f'ALTER TABLE "{schema}".runs DROP COLUMN recipe_digest')
            conn.execute(f'ALTER TABLE "{schema}".cards DROP COLUMN fields_json')
            conn.execute(f"UPDATE \"{schema}\".cardmill_meta SET value = '1'")
        async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
            assert [r.name for r in await storage.list_runs()] == ["old"]
            await storage.create_run([Document("b.txt", b"b")], name="new")
            assert [r.name for r in await storage.list_runs()] == ["old", "new"]
        with psycopg.connect(pg.DSN, autocommit=True) as conn:
            row = conn.execute(f'SELECT value FROM "{schema}".cardmill_meta').fetchone()
            assert row == ("7",)
    finally:
        pg.drop_schema(schema)


async def test_a_version_2_postgres_schema_gains_recipes_in_place() -> None:
    pg.require()
    schema = pg.new_schema()
    try:
        async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
            old = await storage.create_run([Document("a.txt", b"a")], name="old")
            (upload,) = await storage.list_uploads(old.id)
            assert await storage.complete_upload(upload.id, [CardDraft("t", "b")])
        import psycopg

        # The schema of the previous release: no recipe, no card fields.
        with psycopg.connect(pg.DSN, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}".runs DROP COLUMN recipe_toml')
            conn.execute(f'ALTER TABLE "{schema}".runs DROP COLUMN recipe_digest')
            conn.execute(f'ALTER TABLE "{schema}".cards DROP COLUMN fields_json')
            conn.execute(f"UPDATE \"{schema}\".cardmill_meta SET value = '2'")
        async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
            (run,) = await storage.list_runs()
            assert (run.recipe_name, run.recipe_digest) == ("study-cards", STUDY_CARDS.digest)
            assert [c.fields for c in await storage.list_cards(old.id)] == [None]
            new = await storage.create_run([Document("b.txt", b"b")], recipe=FLASHCARDS)
            (upload,) = await storage.list_uploads(new.id)
            card = FLASHCARDS.draft({"question": "q", "answer": "a", "tags": ["x"]})
            assert await storage.complete_upload(upload.id, [card])
            assert [c.draft for c in await storage.list_cards(new.id)] == [card]
            await check_invariants(storage, new.id)
        with psycopg.connect(pg.DSN, autocommit=True) as conn:
            row = conn.execute(f'SELECT value FROM "{schema}".cardmill_meta').fetchone()
            assert row == ("7",)
    finally:
        pg.drop_schema(schema)
