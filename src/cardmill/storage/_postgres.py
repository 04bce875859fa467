"""PostgresStorage: runs shared by any number of workers on any number of machines.

psycopg 3's async API does not run under trio, so this backend uses the synchronous
driver and a ``psycopg_pool.ConnectionPool`` from worker threads
(``trio.to_thread.run_sync`` with a ``CapacityLimiter`` sized to the pool): no database
call ever runs on the event loop. The transactions are the ones SQLite runs
(``storage/_transactions.py``); PostgreSQL adds row locks where several writers meet, and claims
use ``FOR UPDATE SKIP LOCKED`` so workers never queue behind each other's claims.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import outcome
import trio

from ..errors import (
    DatabaseError,
    InputError,
    StorageError,
    TransientStorageError,
    UnstorableData,
    require_trio,
)
from ..model import Document
from ._dsn import check_dsn, redact_dsn, redact_message, require_driver
from ._search import stored_search_words, stored_tag_words
from ._sqlbackend import SQLBackend
from ._stop import Stop

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresStorage", "connection_string"]

T = TypeVar("T")
SCHEMA_VERSION: Final = 7

# libpq parameters cardmill's connections get unless the DSN sets them: a peer that
# stops answering (a half-dead TCP connection) is noticed within about a minute.
CLIENT_DEFAULTS: Final = {
    "application_name": "cardmill",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
# Server settings, sent as `options` unless the DSN's (or PGOPTIONS') options name them:
# a row lock another session holds makes a call fail (and be tried again) instead of
# waiting for ever, and a session of ours stuck inside a transaction is ended.
SERVER_DEFAULTS: Final = {
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
}
# How long a call interrupted while it runs in its thread may still finish (so that a
# claim that committed reaches its caller) before it is abandoned to its thread.
GRACE_SECONDS: Final = 1.0
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
        recipe_toml TEXT,
        recipe_digest TEXT,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens BIGINT NOT NULL DEFAULT 0,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0,
        cost_nanos BIGINT NOT NULL DEFAULT 0,
        requests BIGINT NOT NULL DEFAULT 0,
        rate_limited BIGINT NOT NULL DEFAULT 0,
        provider TEXT,
        model TEXT,
        reused_items INTEGER NOT NULL DEFAULT 0,
        saved_tokens BIGINT NOT NULL DEFAULT 0,
        saved_nanos BIGINT NOT NULL DEFAULT 0,
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
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens BIGINT NOT NULL DEFAULT 0,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0,
        cost_nanos BIGINT NOT NULL DEFAULT 0,
        requests BIGINT NOT NULL DEFAULT 0,
        rate_limited BIGINT NOT NULL DEFAULT 0,
        answer_key TEXT,
        reused INTEGER NOT NULL DEFAULT 0,
        saved_tokens BIGINT NOT NULL DEFAULT 0,
        saved_nanos BIGINT NOT NULL DEFAULT 0,
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
        fields_json TEXT,
        search_words TEXT NOT NULL DEFAULT '',
        search_tags TEXT NOT NULL DEFAULT '',
        UNIQUE (upload_id, ordinal))""",
    # Provider batches (schema 4): ``seq`` orders a run's batches oldest first.
    """CREATE TABLE IF NOT EXISTS batches (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL REFERENCES runs(id),
        state TEXT NOT NULL,
        provider_batch_id TEXT UNIQUE,
        size INTEGER NOT NULL,
        processing INTEGER NOT NULL DEFAULT 0,
        succeeded INTEGER NOT NULL DEFAULT 0,
        errored INTEGER NOT NULL DEFAULT 0,
        canceled INTEGER NOT NULL DEFAULT 0,
        expired INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        creator TEXT)""",
    "CREATE INDEX IF NOT EXISTS batches_by_run ON batches(run_id, state)",
    """CREATE TABLE IF NOT EXISTS batch_items (
        batch_id TEXT NOT NULL REFERENCES batches(id),
        upload_id TEXT NOT NULL REFERENCES uploads(id),
        ordinal INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        PRIMARY KEY (batch_id, upload_id))""",
    """CREATE TABLE IF NOT EXISTS rate_limits (
        name TEXT PRIMARY KEY,
        state TEXT,
        updated DOUBLE PRECISION NOT NULL)""",
    # Answers kept for reuse (schema 7), keyed by what determined them; see _answers.py.
    """CREATE TABLE IF NOT EXISTS answers (
        key TEXT PRIMARY KEY,
        answered INTEGER NOT NULL DEFAULT 0,
        upload_id TEXT,
        attempt INTEGER,
        drafts_json TEXT,
        provider TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cost_nanos BIGINT NOT NULL DEFAULT 0,
        size BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        used_at DOUBLE PRECISION)""",
    # The requests being asked for, by the upload asking (see _transactions.forget_asking).
    "CREATE INDEX IF NOT EXISTS answers_asking ON answers(upload_id) WHERE answered = 0",
]


# The card search index (schema 5): the cards' words (see _search.py, written with each
# card, already case-folded) as a generated tsvector under a GIN index. The words become
# lexemes as they are, not through a text search parser, whose idea of a word differs
# from the other backends' (it drops "²", splits "1e5x"); tag words carry a "#".
_SEARCH_INDEX: Final = [
    """ALTER TABLE cards ADD COLUMN IF NOT EXISTS search tsvector GENERATED ALWAYS AS (
        array_to_tsvector(string_to_array(btrim(search_words || ' ' || search_tags), ' '))
        ) STORED""",
    "CREATE INDEX IF NOT EXISTS cards_search ON cards USING gin (search)",
]
_BACKFILL_ROWS: Final = 1000


def _backfill_search(conn: psycopg.Connection[Any]) -> None:
    """Write the search words of every card stored before schema 5, a chunk at a time."""
    after: tuple[str, int] = ("", -1)
    while True:
        rows = conn.execute(
            "SELECT upload_id, ordinal, title, body, quote, tags, fields_json FROM cards"
            " WHERE (upload_id, ordinal) > (%s, %s) ORDER BY upload_id, ordinal LIMIT %s",
            (*after, _BACKFILL_ROWS),
        ).fetchall()
        if not rows:
            return
        with conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE cards SET search_words = %s, search_tags = %s"
                " WHERE upload_id = %s AND ordinal = %s",
                [
                    (stored_search_words(t, b, q, tags, f), stored_tag_words(tags), up, n)
                    for up, n, t, b, q, tags, f in rows
                ],
            )
        after = (rows[-1][0], rows[-1][1])


# The request counts of uploads and runs, added in schema 5.
_COUNT_COLUMNS: Final = [
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} BIGINT NOT NULL DEFAULT 0"
    for table in ("runs", "uploads")
    for column in ("requests", "rate_limited")
]


# Schema version -> the steps (statements, or functions of the connection) that bring a
# schema from it to the next one.
_MIGRATIONS: Final[dict[int, list[str | Callable[[psycopg.Connection[Any]], None]]]] = {
    # Runs being created in chunks are marked until their last chunk commits.
    1: ["ALTER TABLE runs ADD COLUMN IF NOT EXISTS creating INTEGER NOT NULL DEFAULT 0"],
    # Recipes: a run's recipe (NULL: the study cards, as every run before them) and a
    # card's recipe fields (NULL: a study card).
    2: [
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS recipe_toml TEXT",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS recipe_digest TEXT",
        "ALTER TABLE cards ADD COLUMN IF NOT EXISTS fields_json TEXT",
    ],
    # Cost: token and cost totals (nano-dollars, so sums are exact) on uploads and
    # runs. The batch tables are new: the DDL above creates them.
    3: [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} BIGINT NOT NULL DEFAULT 0"
        for table in ("runs", "uploads")
        for column in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_nanos",
        )
    ],
    # Card search: the cards' words, written for the cards already stored, then indexed.
    # Uploads and runs count their requests and the 429s among them (0 for older rows).
    4: [
        *_COUNT_COLUMNS,
        "ALTER TABLE cards ADD COLUMN IF NOT EXISTS search_words TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE cards ADD COLUMN IF NOT EXISTS search_tags TEXT NOT NULL DEFAULT ''",
        _backfill_search,
        *_SEARCH_INDEX,
    ],
    # A run keeps the provider and model it is sent to (NULL: not known, as for every
    # run before).
    5: [
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS provider TEXT",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model TEXT",
    ],
    # Reuse: on uploads and runs what reusing earlier answers saved. The answers table
    # is new: the DDL above creates it.
    6: [
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS reused_items INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE uploads ADD COLUMN IF NOT EXISTS answer_key TEXT",
        "ALTER TABLE uploads ADD COLUMN IF NOT EXISTS reused INTEGER NOT NULL DEFAULT 0",
        *(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} BIGINT NOT NULL DEFAULT 0"
            for table in ("runs", "uploads")
            for column in ("saved_tokens", "saved_nanos")
        ),
    ],
}


class PostgresTx:
    """`Tx` over psycopg: row locks where writers meet."""

    lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    share = " FOR KEY SHARE"
    search = "tsvector"

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

    def watch(self, stop: Stop) -> contextlib.AbstractContextManager[None]:
        # Each statement of a search is bounded; the stop is looked at between them.
        return contextlib.nullcontext()


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


def connection_string(dsn: str) -> str:
    """``dsn`` with cardmill's connection defaults added where it does not set them.

    Keepalives, ``tcp_user_timeout``, ``connect_timeout`` and ``application_name`` (see
    ``CLIENT_DEFAULTS``), and the server settings ``lock_timeout`` and
    ``idle_in_transaction_session_timeout`` (``SERVER_DEFAULTS``) through ``options``,
    after any ``-c`` settings the DSN's ``options`` (or ``PGOPTIONS``) already makes. A
    DSN overrides any of them: ``?options=-c%20lock_timeout%3D30s``,
    ``keepalives_idle=60``. The result holds the password: it is for connecting only.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    extra = {k: v for k, v in CLIENT_DEFAULTS.items() if k not in params}
    if "PGAPPNAME" in os.environ:
        extra.pop("application_name", None)
    given = str(params.get("options", os.environ.get("PGOPTIONS", "")))
    ours = [f"-c {k}={v}" for k, v in SERVER_DEFAULTS.items() if k not in given]
    if ours:
        extra["options"] = " ".join([*ours, given]).strip()
    return make_conninfo(dsn, **extra)


class _ConnectionLost(Exception):
    """The connection broke during a transaction; ``committing`` when during its COMMIT."""

    def __init__(self, committing: bool) -> None:
        super().__init__("connection lost while committing" if committing else "connection lost")
        self.committing = committing


def _transaction(pool: psycopg_pool.ConnectionPool[Any], fn: Callable[..., T], *args: Any) -> T:
    import psycopg

    with pool.connection() as conn:
        committing = False
        try:
            with conn.transaction():
                result = fn(PostgresTx(conn), *args)
                committing = True
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                # The pool replaces a broken connection when it is given back.
                raise _ConnectionLost(committing) from exc
            raise
        return result


def _migrate(conn: psycopg.Connection[Any], schema: str) -> None:
    with conn.transaction():
        # One migrator at a time, across every process and machine.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cardmill:{schema}",))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        if _current_version(conn) == SCHEMA_VERSION:
            # Nothing to do, and no DDL: even CREATE INDEX IF NOT EXISTS locks its table,
            # which would make this open wait for (or deadlock with) workers at work.
            return
        for statement in _DDL:
            conn.execute(statement)
        row = conn.execute(
            "SELECT value FROM cardmill_meta WHERE key = 'schema_version'"
        ).fetchone()
        if row is None:
            for statement in _SEARCH_INDEX:
                conn.execute(statement)
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
                for step in _MIGRATIONS[version]:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
            conn.execute(
                "UPDATE cardmill_meta SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )


def _current_version(conn: psycopg.Connection[Any]) -> int | None:
    """The schema's version, or None when it has no cardmill tables yet."""
    (meta,) = conn.execute("SELECT to_regclass('cardmill_meta')").fetchone() or (None,)
    if meta is None:
        return None
    row = conn.execute("SELECT value FROM cardmill_meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _open_pool(dsn: str, schema: str, size: int) -> psycopg_pool.ConnectionPool[Any]:
    import psycopg
    import psycopg_pool

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.commit()

    check_dsn(dsn)
    where = redact_dsn(dsn)
    conninfo = connection_string(dsn)
    try:
        with psycopg.connect(conninfo) as conn:
            _migrate(conn, schema)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"PostgreSQL at {where}: {redact_message(_first_line(exc), dsn)}"
        ) from None
    pool = psycopg_pool.ConnectionPool(
        conninfo,
        min_size=1,
        max_size=size,
        configure=configure,
        # A connection the server dropped (a restart, pg_terminate_backend, a timeout)
        # is found and replaced before a transaction is given it.
        check=psycopg_pool.ConnectionPool.check_connection,
        timeout=10,
        open=False,
        name="cardmill",
    )
    try:
        pool.open(wait=True, timeout=10)
    except psycopg_pool.PoolTimeout:
        pool.close()
        raise DatabaseError(f"PostgreSQL at {where}: no connection within 10 s") from None
    return pool


def _data_problem(exc: BaseException) -> str:
    """What was wrong with a value, without the value (it may hold NUL or surrogates)."""
    if isinstance(exc, UnicodeEncodeError):
        return "text with a character that cannot be encoded (a lone surrogate)"
    return _first_line(exc).encode("ascii", "backslashreplace").decode("ascii")


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

    #: Its calls may be abandoned to their thread: the engine bounds its cleanup.
    bounded_cleanup: Final = True

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
        require_trio("PostgresStorage.open")
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
        # Bounded: a connection stuck in a call that was abandoned (see _threaded) must
        # not keep the program from exiting.
        with trio.move_on_after(2 * GRACE_SECONDS, shield=True):
            await trio.to_thread.run_sync(
                partial(pool.close, timeout=GRACE_SECONDS), abandon_on_cancel=True
            )

    async def _threaded(self, job: Callable[[], T]) -> T:
        """Run ``job`` on a thread, holding a token of the pool's limiter while it runs.

        Like ``trio.to_thread.run_sync``, a call interrupted (cancelled, or Ctrl-C) while
        it runs still returns its result if it finishes within ``GRACE_SECONDS``, the
        interruption landing at the caller's next checkpoint. Unlike it, a call that
        does not finish by then (stuck on a lock or a dead peer) is abandoned to its
        thread, and the interruption raised: a leased upload it held is taken back by
        another worker or ``resume`` once the lease expires.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        borrower = object()
        await self._limiter.acquire_on_behalf_of(borrower)
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []
        token = trio.lowlevel.current_trio_token()

        def back(result: outcome.Outcome[T]) -> None:
            self._limiter.release_on_behalf_of(borrower)
            box.append(result)
            done.set()

        def deliver(result: outcome.Outcome[T]) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(back, result)

        try:
            trio.lowlevel.start_thread_soon(job, deliver, name="cardmill postgres")
        except BaseException:
            self._limiter.release_on_behalf_of(borrower)
            raise
        try:
            await done.wait()
        except trio.Cancelled:
            with trio.move_on_after(GRACE_SECONDS, shield=True):
                await done.wait()
            if not box:
                raise
            # Finished after all: its result is returned; the scope is still cancelled,
            # so the caller's next checkpoint raises.
        return box[0].unwrap()

    async def _call(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        import psycopg

        pool = self._pool
        if pool is None:
            raise StorageError(f"{self._where}: storage is closed")
        for tries_left in (1, 0):
            try:
                return await self._threaded(partial(_transaction, pool, fn, *args))
            except _ConnectionLost as lost:
                reason = _first_line(lost.__cause__ or lost)
                if lost.committing:
                    # Not tried again here: the caller knows whether repeating the call
                    # is safe (the engine's writes are idempotent by upload state).
                    raise TransientStorageError(
                        f"{self._where}: connection lost while committing, whether the "
                        f"transaction committed is unknown ({reason})"
                    ) from lost.__cause__
                if not tries_left:
                    raise TransientStorageError(
                        f"{self._where}: connection lost ({reason})"
                    ) from lost.__cause__
                # Nothing was committed: once more, on a connection the pool checked.
            except (psycopg.DataError, UnicodeEncodeError) as exc:
                raise UnstorableData(_data_problem(exc)) from exc
            except psycopg.OperationalError as exc:
                # Lock timeouts, serialisation failures, deadlocks, no connection from
                # the pool (a PoolTimeout): the transaction did not commit.
                raise TransientStorageError(f"{self._where}: {_first_line(exc)}") from exc
            except psycopg.Error as exc:
                raise StorageError(f"{self._where}: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    # -- shared rate limits (see cardmill.engine.SharedBucket) ------------------------

    async def update_rate_state(
        self, name: str, step: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], T]]
    ) -> T:
        """Run ``step(state, now)`` with the named rate-limit state locked, and store it.

        ``now`` is the database server's clock, read under the lock, never this worker's.
        """
        return await self._call(_rate_step, name, step)
