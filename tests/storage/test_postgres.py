"""What only the PostgreSQL backend promises: many workers, safe claims, clear errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import pytest
import trio

from cardmill import CardDraft, DatabaseError, Document, InputError, Run, RunStatus, UploadStatus
from cardmill.storage import PostgresStorage
from cardmill.storage import _batches as batches
from cardmill.storage import _transactions as sql
from cardmill.storage._postgres import PostgresTx
from cardmill.testing import check_invariants

from .. import pg
from .conftest import FakeClock

T = TypeVar("T")


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


async def test_four_workers_share_a_run_without_overlap(schema: str) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema) as first:
        run = await first.create_run([Document(f"{i}.txt", b"x") for i in range(200)])
    done: list[str] = []

    async def worker(name: str) -> None:
        async with PostgresStorage.open(pg.DSN, schema=schema, size=2) as storage:
            while u := await storage.claim_upload(run.id, worker=name, lease_seconds=60):
                assert await storage.complete_upload(u.id, [CardDraft("t", name)], worker=name)
                done.append(u.id)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(worker, f"w{i}")
    assert len(done) == len(set(done)) == 200
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        await check_invariants(storage, run.id)
        assert (await storage.finish_run(run.id)).status.name == "SUCCEEDED"


async def test_newer_schema_is_refused(schema: str) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema):
        pass
    with psycopg.connect(pg.DSN, autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".cardmill_meta SET value = %s', ("99",))
    with pytest.raises(DatabaseError, match="newer cardmill"):
        async with PostgresStorage.open(pg.DSN, schema=schema):
            pass


async def test_unreachable_server_is_one_clear_error_without_the_password() -> None:
    dsn = "postgresql://someone:hunter2@127.0.0.1:9/nowhere"
    with pytest.raises(DatabaseError) as caught:
        async with PostgresStorage.open(dsn):
            pass
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1:9" in str(caught.value)


async def test_schema_names_are_checked() -> None:
    with pytest.raises(InputError, match="lowercase identifier"):
        async with PostgresStorage.open(pg.DSN, schema='x"; DROP TABLE runs; --'):
            pass


@pytest.mark.parametrize("name", ["cardmill\n", "cardmill\r\n", "Cardmill", "x" * 64, "", "1st"])
async def test_schema_names_must_be_whole_lowercase_identifiers(name: str) -> None:
    with pytest.raises(InputError, match="lowercase identifier"):
        async with PostgresStorage.open(pg.DSN, schema=name):
            pass


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("SELECT ? WHERE a = ?", "SELECT %s WHERE a = %s"),
        ("SELECT '?', ?", "SELECT '?', %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', %s"),
        ('SELECT "odd?name", ?', 'SELECT "odd?name", %s'),
        ("SELECT $$?$$, $q$?$q$, ?", "SELECT $$?$$, $q$?$q$, %s"),
        ("SELECT ? -- why?\n", "SELECT %s -- why?\n"),
        ("SELECT /* ? */ ?", "SELECT /* ? */ %s"),
        ("SELECT 7 % 3, 'x%', ?", "SELECT 7 %% 3, 'x%%', %s"),
    ],
)
def test_only_unquoted_question_marks_become_placeholders(text: str, query: str) -> None:
    assert PostgresTx._sql(text) == query


def test_literal_question_marks_and_percents_reach_postgres_unchanged(schema: str) -> None:
    with psycopg.connect(pg.DSN) as conn:
        tx = PostgresTx(conn)
        row = tx.one(
            "SELECT '?', ?, 'a%b', ? || '%', $$?%$$, 7 % 3 -- what? 100%\n",
            ("first", "second"),
        )
        assert tuple(row) == ("?", "first", "a%b", "second%", "?%", 1)
        tx.many("SELECT ? || '?%'", [("x",), ("y",)])


class PausingTx:
    """A transaction that stops after its first statement until told to go on."""

    def __init__(self, tx: PostgresTx) -> None:
        self._tx = tx
        self.lock, self.skip_locked = tx.lock, tx.skip_locked
        self.share = tx.share
        self.paused = threading.Event()
        self.resume = threading.Event()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._tx.one(sql, params)
        if not self.paused.is_set():
            self.paused.set()
            self.resume.wait()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._tx.all(sql, params)

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._tx.run(sql, params)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._tx.many(sql, rows)


def connect(schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(pg.DSN)
    conn.execute(f'SET search_path TO "{schema}"')
    conn.commit()
    return conn


def in_transaction(conn: psycopg.Connection[Any], fn: Callable[..., T], *args: Any) -> T:
    with conn.transaction():
        return fn(*args)


async def blocked_or_done(schema: str, pid: int, done: trio.Event) -> bool:
    """Whether backend ``pid`` waits on a lock (True) or finished without waiting."""
    with connect(schema) as watcher:
        while not done.is_set():
            row = watcher.execute("SELECT cardinality(pg_blocking_pids(%s))", (pid,)).fetchone()
            watcher.commit()
            if row is not None and row[0] > 0:
                return True
            await trio.sleep(0.01)
    return False


async def test_finish_run_waits_for_a_claim_in_flight_and_sees_it(
    schema: str, clock: FakeClock
) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        run = await storage.create_run([Document("a.txt", b"a"), Document("b.txt", b"b")])
        first = await storage.claim_upload(run.id, worker="a", lease_seconds=30)
        assert first is not None
        assert await storage.complete_upload(first.id, [], worker="a")
    # One upload left, the run RUNNING. A claim starts; finish_run comes in meanwhile.
    claiming, finishing = connect(schema), connect(schema)
    pausing = PausingTx(PostgresTx(claiming))
    claimed: list[Any] = []
    finished: list[Run] = []
    finish_done = trio.Event()

    async def claim() -> None:
        claimed.append(
            await trio.to_thread.run_sync(
                in_transaction, claiming, sql.claim, pausing, run.id, "b", 30.0, clock.now
            )
        )

    async def finish() -> None:
        finished.append(
            await trio.to_thread.run_sync(
                in_transaction, finishing, sql.finish_run, PostgresTx(finishing), run.id, clock.now
            )
        )
        finish_done.set()

    with claiming, finishing:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim)
            await trio.to_thread.run_sync(pausing.paused.wait)
            nursery.start_soon(finish)
            # finish_run either waits for the claim's lock or has already decided.
            waited = await blocked_or_done(schema, finishing.info.backend_pid, finish_done)
            pausing.resume.set()
    assert claimed[0] is not None
    (decided,) = finished
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        now = await storage.get_run(run.id)
        held = await storage.list_uploads(run.id, UploadStatus.LOADING)
    assert len(held) == 1
    # A worker holds a live lease: the run must not be left CANCELLED.
    assert (decided.status, now.status) == (RunStatus.RUNNING, RunStatus.RUNNING)
    assert waited


async def test_claimers_that_both_revive_a_cancelled_run_do_not_deadlock(
    schema: str, clock: FakeClock
) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(3)])
        assert (await storage.finish_run(run.id)).status == RunStatus.CANCELLED
    # Two claims read the CANCELLED run at once; each must then set it RUNNING.
    conns = [connect(schema), connect(schema)]
    txs = [PausingTx(PostgresTx(c)) for c in conns]
    claimed: list[Any] = []

    async def claim(conn: psycopg.Connection[Any], tx: PausingTx, worker: str) -> None:
        claimed.append(
            await trio.to_thread.run_sync(
                in_transaction, conn, sql.claim, tx, run.id, worker, 30.0, clock.now
            )
        )

    with conns[0], conns[1]:
        async with trio.open_nursery() as nursery:
            for conn, tx, worker in zip(conns, txs, "ab", strict=True):
                nursery.start_soon(claim, conn, tx, worker)
            for tx in txs:
                await trio.to_thread.run_sync(tx.paused.wait)
            for tx in txs:
                tx.resume.set()
    assert len(claimed) == 2
    assert all(c is not None for c in claimed)
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        assert (await storage.get_run(run.id)).status == RunStatus.RUNNING
        await check_invariants(storage, run.id)


class PausingAfterSelectTx(PausingTx):
    """A transaction that stops after its first multi-row SELECT (a batch's take of its
    uploads, their rows locked) until told to go on."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._tx.one(sql, params)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        rows = self._tx.all(sql, params)
        if not self.paused.is_set():
            self.paused.set()
            self.resume.wait()
        return rows


async def test_a_batch_skips_uploads_another_batch_is_taking(schema: str, clock: FakeClock) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(4)])
        ids = [u.id for u in await storage.list_uploads(run.id)]
        conn = connect(schema)
        tx = PausingAfterSelectTx(PostgresTx(conn))
        first: list[Any] = []

        async def take() -> None:
            first.append(
                await trio.to_thread.run_sync(
                    in_transaction,
                    conn,
                    batches.create_batch,
                    tx,
                    run.id,
                    tuple(ids),
                    "batch-first",
                    60.0,
                    clock.now,
                )
            )

        with conn:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take)
                await trio.to_thread.run_sync(tx.paused.wait)
                try:
                    # The first batch holds the rows' locks: the second skips them,
                    # without waiting, and so takes nothing.
                    with trio.fail_after(5):
                        second = await storage.create_batch(run.id, ids, lease_seconds=60)
                finally:
                    tx.resume.set()
                assert second is None
        ((batch, items),) = first
        assert [i.upload_id for i in items] == ids
        assert await storage.list_batches(run.id) == [batch]
        assert await storage.create_batch(run.id, ids, lease_seconds=60) is None
        await check_invariants(storage, run.id)


async def test_workers_creating_batches_over_the_same_uploads_never_share_one(
    schema: str, clock: FakeClock
) -> None:
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(60)])
        ids = [u.id for u in await storage.list_uploads(run.id)]
    taken: list[str] = []

    async def worker(offset: int) -> None:
        async with PostgresStorage.open(pg.DSN, schema=schema, size=2, clock=clock) as s:
            for start in range(offset % 3, len(ids), 7):
                made = await s.create_batch(run.id, ids[start : start + 20], lease_seconds=60)
                if made is not None:
                    taken.extend(i.upload_id for i in made[1])

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(worker, i)
    assert len(taken) == len(set(taken)) == len(ids)
    async with PostgresStorage.open(pg.DSN, schema=schema, clock=clock) as storage:
        assert await storage.claim_upload(run.id, worker="w", lease_seconds=60) is None
        await check_invariants(storage, run.id)
