"""PostgreSQL under failure: locks held elsewhere, dropped connections, unstorable text."""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Iterator
from functools import partial
from urllib.parse import quote

import psycopg
import pytest
import trio

from cardmill import (
    CardDraft,
    Document,
    Engine,
    PermanentError,
    RunStatus,
    TransientStorageError,
    UploadStatus,
)
from cardmill.model import clean_text
from cardmill.storage import PostgresStorage
from cardmill.storage._postgres import PostgresTx, connection_string
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .. import pg


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


def with_params(dsn: str, **params: str) -> str:
    """``dsn`` with query parameters added (the test DSN is a URL)."""
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return dsn + ("&" if "?" in dsn else "?") + query


def show(tx: PostgresTx, setting: str) -> str:
    return str(tx.one(f"SHOW {setting}")[0])


class RowLock:
    """Another session holding a row lock (``SELECT ... FOR UPDATE``) and going idle."""

    def __init__(self, schema: str, table: str, row_id: str) -> None:
        self._conn = psycopg.connect(pg.DSN)
        self._conn.execute(f'SELECT 1 FROM "{schema}".{table} WHERE id = %s FOR UPDATE', (row_id,))

    def release(self) -> None:
        self._conn.rollback()
        self._conn.close()


def docs(n: int) -> list[Document]:
    return [Document(f"{i}.txt", f"document {i}".encode()) for i in range(n)]


def test_connections_get_timeouts_and_keepalives_unless_the_dsn_says() -> None:
    given = connection_string("host=db.example dbname=cards")
    for setting in (
        "keepalives=1",
        "tcp_user_timeout=",
        "lock_timeout=10s",
        "idle_in_transaction_session_timeout=60s",
    ):
        assert setting in given
    own = connection_string(
        "postgresql://u@db/cards?keepalives_idle=99&options=-c%20lock_timeout%3D3s"
    )
    assert "keepalives_idle=99" in own
    assert "keepalives_idle=30" not in own
    assert "lock_timeout=3s" in own
    assert "lock_timeout=10s" not in own
    assert "idle_in_transaction_session_timeout=60s" in own


async def test_server_settings_reach_the_session(schema: str) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        assert await storage._call(show, "lock_timeout") == "10s"
        assert await storage._call(show, "idle_in_transaction_session_timeout") == "1min"
    dsn = with_params(pg.DSN, options="-c lock_timeout=2500ms")
    async with PostgresStorage.open(dsn, schema=schema) as storage:
        assert await storage._call(show, "lock_timeout") == "2500ms"


async def test_a_row_lock_held_elsewhere_is_a_transient_error(schema: str) -> None:
    dsn = with_params(pg.DSN, options="-c lock_timeout=300ms")
    async with PostgresStorage.open(dsn, schema=schema) as storage:
        run = await storage.create_run(docs(2))
        lock = RowLock(schema, "runs", run.id)
        try:
            with trio.fail_after(30), pytest.raises(TransientStorageError, match="lock"):
                await storage.claim_upload(run.id, worker="w", lease_seconds=60)
        finally:
            lock.release()
        pending = await storage.list_uploads(run.id, UploadStatus.PENDING)
        assert len(pending) == 2


async def test_the_engine_waits_out_a_lock_held_for_a_while(schema: str) -> None:
    dsn = with_params(pg.DSN, options="-c lock_timeout=200ms")
    async with PostgresStorage.open(dsn, schema=schema) as storage:
        run = await storage.create_run(docs(6))
        lock = RowLock(schema, "runs", run.id)
        timer = threading.Timer(1.5, lock.release)
        timer.start()
        try:
            with trio.fail_after(60):
                summary = await Engine(storage, ScriptedProvider()).execute(run.id)
        finally:
            timer.join()
        assert summary.run.status == RunStatus.SUCCEEDED
        await check_invariants(storage, run.id)


async def test_a_lock_that_stays_stops_the_run_resumable(schema: str) -> None:
    dsn = with_params(pg.DSN, options="-c lock_timeout=100ms")
    async with PostgresStorage.open(dsn, schema=schema) as storage:
        run = await storage.create_run(docs(3))
        lock = RowLock(schema, "runs", run.id)
        try:
            with trio.fail_after(60), pytest.raises(TransientStorageError):
                await Engine(storage, ScriptedProvider()).execute(run.id)
        finally:
            lock.release()
        assert len(await storage.list_uploads(run.id, UploadStatus.PENDING)) == 3
        summary = await Engine(storage, ScriptedProvider()).execute(run.id)
        assert summary.run.status == RunStatus.SUCCEEDED
        await check_invariants(storage, run.id)


def terminate(application_name: str) -> int:
    with psycopg.connect(pg.DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_run_outlives_its_connections_being_terminated(schema: str) -> None:
    name = f"cardmill-test-{secrets.token_hex(4)}"
    dsn = with_params(pg.DSN, application_name=name)
    async with PostgresStorage.open(dsn, schema=schema, size=3) as storage:
        run = await storage.create_run(docs(120))
        killed = 0
        engine = Engine(storage, ScriptedProvider(default=Step(latency=0.005)), concurrency=3)

        async def killer() -> None:
            # Every connection of the run, a few times over while it works.
            nonlocal killed
            for _ in range(6):
                await trio.sleep(0.1)
                killed += await trio.to_thread.run_sync(terminate, name)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(killer)
                summary = await engine.execute(run.id)
                nursery.cancel_scope.cancel()
        assert killed >= 3  # the run really lost connections along the way
        assert summary.run.status == RunStatus.SUCCEEDED
        await check_invariants(storage, run.id)
        assert len(await storage.list_cards(run.id)) == 120


async def test_a_broken_connection_is_replaced_before_use(schema: str) -> None:
    name = f"cardmill-test-{secrets.token_hex(4)}"
    dsn = with_params(pg.DSN, application_name=name)
    async with PostgresStorage.open(dsn, schema=schema, size=1) as storage:
        run = await storage.create_run(docs(1))
        assert await trio.to_thread.run_sync(terminate, name) == 1
        assert (await storage.get_run(run.id)).id == run.id


BAD_TEXT = ["a\x00b", "a\udc80b"]


@pytest.mark.parametrize("bad", BAD_TEXT)
async def test_text_postgres_cannot_hold_fails_only_its_upload(schema: str, bad: str) -> None:
    # Drafts clean such text as they are made (3.txt completes, cleaned); one that reaches
    # the storage all the same (1.txt: a draft altered after it was made) fails alone.
    unstorable = CardDraft("title", "body")
    object.__setattr__(unstorable, "body", f"body {bad}")
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        run = await storage.create_run(docs(4))
        provider = ScriptedProvider(
            script={
                "1.txt": [Step(cards=(unstorable,))],
                "2.txt": [Step(error=PermanentError(f"refused {bad} document"))],
                "3.txt": [Step(cards=(CardDraft("title", f"body {bad}"),))],
            }
        )
        summary = await Engine(storage, provider).execute(run.id)
        assert summary.run.status == RunStatus.PARTIAL
        assert (summary.run.completed_items, summary.run.failed_items) == (2, 2)
        failed = {u.name: u for u in await storage.list_uploads(run.id, UploadStatus.FAILED)}
        assert set(failed) == {"1.txt", "2.txt"}
        cleaned = [c.body async for c in storage.iter_cards(run.id) if c.body.startswith("body ")]
        assert cleaned == ["body " + clean_text(bad)]
        assert failed["1.txt"].id in str(failed["1.txt"].error)
        for upload in failed.values():
            assert upload.error is not None
            assert "\x00" not in upload.error
            assert "\udc80" not in upload.error
        await check_invariants(storage, run.id)


async def test_ctrl_c_exits_promptly_while_a_call_is_stuck_on_a_lock(schema: str) -> None:
    from ..cli.conftest import cardmill_command

    name = f"cardmill-test-{secrets.token_hex(4)}"
    # lock_timeout=0: no timeout, the claim waits for the lock as long as it is held.
    dsn = with_params(pg.DSN, application_name=name, options="-c lock_timeout=0")
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        run = await storage.create_run(docs(3))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "CARDMILL_"))
    }
    env["CARDMILL_PG_SCHEMA"] = schema
    command = [*cardmill_command(), "resume", run.id, "--db", dsn]
    lock = RowLock(schema, "runs", run.id)
    try:
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
            )
            with trio.fail_after(30):
                while not await trio.to_thread.run_sync(waiting_on_a_lock, name):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(15):  # it hangs for as long as the lock is held without the fix
                await process.wait()
    finally:
        lock.release()
    assert process.returncode == 130, process.stderr.decode()
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        assert len(await storage.list_uploads(run.id, UploadStatus.PENDING)) == 3
    resumed = await trio.run_process(command, capture_stderr=True, check=False, env=env)
    assert resumed.returncode == 0, resumed.stderr.decode()
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        assert (await storage.get_run(run.id)).status == RunStatus.SUCCEEDED
        await check_invariants(storage, run.id)


def waiting_on_a_lock(application_name: str) -> bool:
    with psycopg.connect(pg.DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return row is not None and row[0] > 0


async def test_a_call_whose_connection_broke_before_commit_is_made_once_more(
    schema: str,
) -> None:
    calls: list[int] = []

    def transaction(tx: PostgresTx) -> int:
        (pid,) = tx.one("SELECT pg_backend_pid()")
        calls.append(pid)
        if len(calls) == 1:
            with psycopg.connect(pg.DSN, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        tx.run("UPDATE cardmill_meta SET value = value WHERE key = 'schema_version'")
        return len(calls)

    async with PostgresStorage.open(pg.DSN, schema=schema, size=1) as storage:
        assert await storage._call(transaction) == 2
    assert calls[0] != calls[1]  # the second try ran on a new connection
