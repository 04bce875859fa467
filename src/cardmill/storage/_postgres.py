"""PostgresStorage: runs shared by any number of workers on any number of machines.

psycopg 3's async API does not run under trio, so this backend uses the synchronous
driver and a ``psycopg_pool.ConnectionPool`` from worker threads
(``trio.to_thread.run_sync`` with a ``CapacityLimiter`` sized to the pool): no database
call ever runs on the event loop. The transactions are the ones SQLite runs
(``storage/_transactions.py``); PostgreSQL adds row locks where several writers meet, and claims
use ``FOR UPDATE SKIP LOCKED`` so workers never queue behind each other's claims.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import trio

from ..errors import DatabaseError, InputError, StorageError
from ..model import Document
from ._dsn import check_dsn, redact_dsn, redact_message, require_driver
from ._sqlbackend import SQLBackend

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresStorage"]

T = TypeVar("T")
SCHEMA_VERSION: Final = 2
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# What may hold a "?" or "%" that is not a placeholder: literals, quoted names, comments.
_SQL_TOKEN: Final = re.compile(
    r"""
      (?<![\w$])[eE]'(?:[^'\\]|\\.|'')*'   # an escape string, E'...'
    | '(?:[^']|'')*'                        # a string literal
    | "(?:[^"]|"")*"                        # a quoted identifier
    | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$  # a dollar-quoted string
    | --[^\n]*                              # a line comment
    | /\*.*?\*/                             # a block comment
    | \?                                    # a placeholder
    | %                                     # a percent sign, special to psycopg
    """,
    re.VERBOSE | re.DOTALL,
)

_DDL: Final = [
    """CREATE TABLE IF NOT EXISTS cardmill_meta (
        key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        total_items INTEGER NOT NULL,
        completed_items INTEGER NOT NULL DEFAULT 0,
        failed_items INTEGER NOT NULL DEFAULT 0,
        total_cards INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        creating INTEGER NOT NULL DEFAULT 0,
        CHECK (completed_items + failed_items <= total_items))""",
    """CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id),
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        card_count INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_expires DOUBLE PRECISION,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        UNIQUE (run_id, position))""",
    "CREATE INDEX IF NOT EXISTS uploads_by_status ON uploads(run_id, status, position)",
    """CREATE TABLE IF NOT EXISTS documents (
        upload_id TEXT PRIMARY KEY REFERENCES uploads(id),
        data BYTEA NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cards (
        upload_id TEXT NOT NULL REFERENCES uploads(id),
        ordinal INTEGER NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        tags TEXT NOT NULL,
        quote TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (upload_id, ordinal))""",
    """CREATE TABLE IF NOT EXISTS rate_limits (
        name TEXT PRIMARY KEY,
        state TEXT,
        updated DOUBLE PRECISION NOT NULL)""",
]


# Schema version -> the statements that bring a schema from it to the next one.
_MIGRATIONS: Final = {
    # Runs being created in chunks are marked until their last chunk commits.
    1: ["ALTER TABLE runs ADD COLUMN IF NOT EXISTS creating INTEGER NOT NULL DEFAULT 0"],
}


class PostgresTx:
    """`Tx` over psycopg: row locks where writers meet."""

    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    share = " FOR KEY SHARE"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @staticmethod
    def _sql(text: str) -> str:
        return psycopg_query(text)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._sql(sql), params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(self._sql(sql), params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(self._sql(sql), params)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(self._sql(sql), list(rows))


@functools.lru_cache(maxsize=512)
def psycopg_query(text: str) -> str:
    """Rewrite SQL with ``?`` placeholders into psycopg's ``%s`` style.

    Only a ``?`` outside literals, quoted names and comments is a placeholder, and every
    ``%`` becomes ``%%``: psycopg reads ``%`` as the start of a placeholder anywhere in the
    text, quoted or not.
    """

    def rewrite(match: re.Match[str]) -> str:
        token = match.group(0)
        return "%s" if token == "?" else token.replace("%", "%%")

    return _SQL_TOKEN.sub(rewrite, text)


def _rate_step(
    tx: PostgresTx,
    name: str,
    step: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], T]],
) -> T:
    tx.run(
        "INSERT INTO rate_limits (name, state, updated) VALUES (?, NULL, 0)"
        " ON CONFLICT (name) DO NOTHING",
        (name,),
    )
    (raw,) = tx.one("SELECT state FROM rate_limits WHERE name = ? FOR UPDATE", (name,))
    # The time of the step is the database's, read while the row is locked: every worker
    # steps the shared state on one clock, in the order the lock serialises them, whatever
    # their own clocks say and however long they waited for a connection or the lock.
    (now,) = tx.one("SELECT extract(epoch FROM clock_timestamp())::float8")
    state, result = step(None if raw is None else json.loads(raw), now)
    tx.run(
        "UPDATE rate_limits SET state = ?, updated = ? WHERE name = ?",
        (json.dumps(state), now, name),
    )
    return result


def _transaction(pool: psycopg_pool.ConnectionPool[Any], fn: Callable[..., T], *args: Any) -> T:
    with pool.connection() as conn, conn.transaction():
        return fn(PostgresTx(conn), *args)


def _migrate(conn: psycopg.Connection[Any], schema: str) -> None:
    with conn.transaction():
        # One migrator at a time, across every process and machine.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cardmill:{schema}",))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for statement in _DDL:
            conn.execute(statement)
        row = conn.execute(
            "SELECT value FROM cardmill_meta WHERE key = 'schema_version'"
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO cardmill_meta (key, value) VALUES ('schema_version', %s)",
                (str(SCHEMA_VERSION),),
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise DatabaseError(
                f"schema {schema!r} was written by a newer cardmill (schema {row[0]}; "
                f"this version reads up to {SCHEMA_VERSION})"
            )
        elif int(row[0]) < SCHEMA_VERSION:
            for version in range(int(row[0]), SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
            conn.execute(
                "UPDATE cardmill_meta SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )


def _open_pool(dsn: str, schema: str, size: int) -> psycopg_pool.ConnectionPool[Any]:
    import psycopg
    import psycopg_pool

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.commit()

    check_dsn(dsn)
    where = redact_dsn(dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            _migrate(conn, schema)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"PostgreSQL at {where}: {redact_message(_first_line(exc), dsn)}"
        ) from None
    pool = psycopg_pool.ConnectionPool(
        dsn, min_size=1, max_size=size, configure=configure, open=False, name="cardmill"
    )
    try:
        pool.open(wait=True, timeout=10)
    except psycopg_pool.PoolTimeout:
        pool.close()
        raise DatabaseError(f"PostgreSQL at {where}: no connection within 10 s") from None
    return pool


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@final
class PostgresStorage(SQLBackend):
    """Storage in PostgreSQL, for several workers on several machines.

    Open it with ``async with PostgresStorage.open("postgresql://host/db") as storage:``.
    Every worker that opens the same database and schema shares its runs: claims skip
    rows another worker has locked, leases expire, and the ``worker`` fencing of
    [`Storage`][cardmill.Storage] keeps a worker whose lease expired from committing.

    Args:
        pool: an open psycopg pool (use [`open`][cardmill.storage.PostgresStorage.open]).
        schema: the PostgreSQL schema holding cardmill's tables.
        size: the pool size; as many calls run at once.
        clock: wall-clock seconds for leases and timestamps. Workers on several machines
            need synchronised clocks (NTP), as leases are compared across them.
    """

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool[Any],
        *,
        schema: str,
        size: int,
        clock: Callable[[], float] = time.time,
        dsn: str = "",
    ) -> None:
        self._pool: psycopg_pool.ConnectionPool[Any] | None = pool
        self._schema = schema
        self._limiter = trio.CapacityLimiter(size)
        self._clock = clock
        self._where = redact_dsn(dsn)
        self._prefetched: dict[str, Document] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        dsn: str,
        *,
        schema: str = "cardmill",
        size: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> AsyncIterator[PostgresStorage]:
        """Connect (creating or migrating the schema) and yield the storage.

        Raises:
            DatabaseError: the server cannot be reached, or the schema is newer.
            InputError: the schema name is not a plain lowercase identifier, or the DSN
                does not parse (see [`redact_dsn`][cardmill.storage.redact_dsn]).
            MissingExtra: the PostgreSQL driver is not installed
                (`pip install 'cardmill[postgres]'`).
        """
        require_driver()
        if not isinstance(schema, str) or not _IDENTIFIER.fullmatch(schema):
            raise InputError(f"schema must be a lowercase identifier, not {schema!r}")
        if size < 1:
            raise InputError("size must be >= 1")
        pool = await trio.to_thread.run_sync(_open_pool, dsn, schema, size)
        storage = cls(pool, schema=schema, size=size, clock=clock, dsn=dsn)
        async with storage:
            yield storage

    def __repr__(self) -> str:
        return f"PostgresStorage({self._where!r}, schema={self._schema!r})"

    async def aclose(self) -> None:
        """Close the database (a checkpoint even when already closed)."""
        pool, self._pool = self._pool, None
        if pool is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(pool.close)

    async def _call(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        import psycopg

        pool = self._pool
        if pool is None:
            raise StorageError(f"{self._where}: storage is closed")
        try:
            return await trio.to_thread.run_sync(
                partial(_transaction, pool, fn, *args), limiter=self._limiter
            )
        except psycopg.Error as exc:
            raise StorageError(f"{self._where}: {_first_line(exc)}") from exc

    # -- shared rate limits (see cardmill.engine.SharedBucket) ------------------------

    async def update_rate_state(
        self, name: str, step: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], T]]
    ) -> T:
        """Run ``step(state, now)`` with the named rate-limit state locked, and store it.

        ``now`` is the database server's clock, read under the lock, never this worker's.
        """
        return await self._call(_rate_step, name, step)
