"""What only the PostgreSQL backend promises: many workers, safe claims, clear errors."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import trio

from cardmill import CardDraft, DatabaseError, Document, InputError
from cardmill.storage import PostgresStorage
from cardmill.storage._postgres import _PgTx
from cardmill.testing import check_invariants

from .. import pg


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
    assert _PgTx._sql(text) == query


def test_literal_question_marks_and_percents_reach_postgres_unchanged(schema: str) -> None:
    with psycopg.connect(pg.DSN) as conn:
        tx = _PgTx(conn)
        row = tx.one(
            "SELECT '?', ?, 'a%b', ? || '%', $$?%$$, 7 % 3 -- what? 100%\n",
            ("first", "second"),
        )
        assert tuple(row) == ("?", "first", "a%b", "second%", "?%", 1)
        tx.many("SELECT ? || '?%'", [("x",), ("y",)])
