"""SQLiteStorage: one database file, safe across crashes and across processes.

One connection per process, used from one worker thread at a time (calls that queue up
go over batched in one hand-off, see ``_thread.py``), so no sqlite3 call ever runs on the
event loop. Each operation is one synchronous function holding one transaction
(``BEGIN IMMEDIATE`` for writes), so no lock is held across an ``await``. WAL
journaling lets readers in other processes proceed while one writes; ``busy_timeout``
makes writers queue, not fail.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, Literal, TypeVar, final

import trio

from ..errors import DatabaseError, StorageError, UnstorableData, require_trio
from ..model import (
    Document,
)
from ._search import stored_search_words, stored_tag_words
from ._sqlbackend import SQLBackend
from ._stop import PROGRESS_STEPS, Stop, Stopped
from ._thread import ThreadBatcher

__all__ = ["SQLiteStorage"]

SCHEMA_VERSION: Final = 7
APPLICATION_ID: Final = 0x43524D4C  # "CRML": marks the file as a cardmill database

# Provider batches (schema 4): ``seq`` orders a run's batches oldest first.
_BATCH_TABLES: Final = [
    """CREATE TABLE batches (
    seq INTEGER PRIMARY KEY,
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
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    creator TEXT
)""",
    "CREATE INDEX batches_by_run ON batches(run_id, state)",
    """CREATE TABLE batch_items (
    batch_id TEXT NOT NULL REFERENCES batches(id),
    upload_id TEXT NOT NULL REFERENCES uploads(id),
    ordinal INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (batch_id, upload_id)
)""",
]

# Cards (schema 5): ``seq`` names a card in the search index, so it must never change
# (a VACUUM renumbers an implicit rowid); ``search_words`` and ``search_tags`` are the
# words the index keeps (see _search.py), written with the card.
_CARDS_TABLE: Final = """CREATE TABLE {name} (
    seq INTEGER PRIMARY KEY,
    upload_id TEXT NOT NULL REFERENCES uploads(id),
    ordinal INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL,
    quote TEXT,
    created_at REAL NOT NULL,
    fields_json TEXT,
    search_words TEXT NOT NULL DEFAULT '',
    search_tags TEXT NOT NULL DEFAULT '',
    UNIQUE (upload_id, ordinal)
)"""

# The card search index (schema 5): FTS5 over the cards' words, its content read from
# the cards table and kept in step by triggers, inside the transaction that writes them.
# Accents are kept, as every backend keeps them.
_SEARCH_INDEX: Final = [
    """CREATE VIRTUAL TABLE cards_fts USING fts5(
    search_words, search_tags, content='cards', content_rowid='seq',
    tokenize='unicode61 remove_diacritics 0'
)""",
    """CREATE TRIGGER cards_fts_insert AFTER INSERT ON cards BEGIN
    INSERT INTO cards_fts(rowid, search_words, search_tags)
    VALUES (new.seq, new.search_words, new.search_tags);
END""",
    """CREATE TRIGGER cards_fts_delete AFTER DELETE ON cards BEGIN
    INSERT INTO cards_fts(cards_fts, rowid, search_words, search_tags)
    VALUES ('delete', old.seq, old.search_words, old.search_tags);
END""",
    """CREATE TRIGGER cards_fts_update AFTER UPDATE ON cards BEGIN
    INSERT INTO cards_fts(cards_fts, rowid, search_words, search_tags)
    VALUES ('delete', old.seq, old.search_words, old.search_tags);
    INSERT INTO cards_fts(rowid, search_words, search_tags)
    VALUES (new.seq, new.search_words, new.search_tags);
END""",
]

# Answers kept for reuse (schema 7), keyed by what determined them; see _answers.py.
_ANSWERS_TABLE: Final = """CREATE TABLE answers (
    key TEXT PRIMARY KEY,
    answered INTEGER NOT NULL DEFAULT 0,
    upload_id TEXT,
    attempt INTEGER,
    drafts_json TEXT,
    provider TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    used_at REAL
)"""
# The requests being asked for, by the upload asking: a claim that ends without an
# answer (failed, released) removes its own (see _transactions.forget_asking).
_ANSWERS_ASKING: Final = "CREATE INDEX answers_asking ON answers(upload_id) WHERE answered = 0"

_SCHEMA: Final = (
    """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    total_items INTEGER NOT NULL,
    completed_items INTEGER NOT NULL DEFAULT 0,
    failed_items INTEGER NOT NULL DEFAULT 0,
    total_cards INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    creating INTEGER NOT NULL DEFAULT 0,
    recipe_toml TEXT,
    recipe_digest TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    provider TEXT,
    model TEXT,
    reused_items INTEGER NOT NULL DEFAULT 0,
    saved_tokens INTEGER NOT NULL DEFAULT 0,
    saved_nanos INTEGER NOT NULL DEFAULT 0,
    CHECK (completed_items + failed_items <= total_items)
);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    card_count INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_expires REAL,
    started_at REAL,
    finished_at REAL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    answer_key TEXT,
    reused INTEGER NOT NULL DEFAULT 0,
    saved_tokens INTEGER NOT NULL DEFAULT 0,
    saved_nanos INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, position)
);
CREATE INDEX uploads_by_status ON uploads(run_id, status, position);
CREATE TABLE documents (
    upload_id TEXT PRIMARY KEY REFERENCES uploads(id),
    data BLOB NOT NULL
);
"""
    + _CARDS_TABLE.format(name="cards")
    + ";\n"
    + "".join(s + ";\n" for s in _BATCH_TABLES)
    + _ANSWERS_TABLE
    + ";\n"
    + _ANSWERS_ASKING
    + ";\n"
)

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def _connect(path: str, synchronous: Synchronous, busy_timeout: float) -> sqlite3.Connection:
    if os.path.isdir(path):
        raise DatabaseError(f"{path}: is a directory, not a cardmill database")
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path}: cannot open database ({exc})") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.create_function("cardmill_search_words", 5, stored_search_words, deterministic=True)
        conn.create_function("cardmill_tag_words", 1, stored_tag_words, deterministic=True)
        # One read of both: another connection may be initialising the file meanwhile.
        app_id, version = conn.execute(
            "SELECT * FROM pragma_application_id, pragma_user_version"
        ).fetchone()
        if app_id == 0:
            _initialise(conn, path)  # it looks again under the write lock
        elif app_id != APPLICATION_ID:
            raise DatabaseError(f"{path}: not a cardmill database")
        elif version != SCHEMA_VERSION:
            _check_version(conn, path, version)
        _wal(conn, busy_timeout)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DatabaseError(f"{path}: not a cardmill database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _check_version(conn: sqlite3.Connection, path: str, version: int) -> None:
    """Migrate a database of an older schema; refuse one of a newer."""
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"{path}: written by a newer cardmill (schema {version}; "
            f"this version reads up to {SCHEMA_VERSION})"
        )
    _migrate(conn)


def _wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the database in WAL mode (already so, but for a new one).

    The switch of a new database takes its lock without SQLite's busy handler: another
    connection opening the file at the same moment makes it fail with "database is
    locked" at once. It is tried again until ``busy_timeout`` (blocking: a thread).
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _initialise(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have initialised the file while we waited for the lock.
        app_id, version = conn.execute(
            "SELECT * FROM pragma_application_id, pragma_user_version"
        ).fetchone()
        if app_id == APPLICATION_ID:
            conn.execute("COMMIT")
            if version != SCHEMA_VERSION:
                _check_version(conn, path, version)
            return
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise DatabaseError(f"{path}: not a cardmill database")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        for statement in _SEARCH_INDEX:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# The request counts of uploads and runs, added in schema 5.
_COUNT_COLUMNS: Final = [
    f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
    for table in ("runs", "uploads")
    for column in ("requests", "rate_limited")
]


# Schema version -> the statements that bring a database from it to the next one.
_MIGRATIONS: Final = {
    # Runs being created in chunks are marked until their last chunk commits.
    1: ["ALTER TABLE runs ADD COLUMN creating INTEGER NOT NULL DEFAULT 0"],
    # Recipes: a run's recipe (NULL: the study cards, as every run before them) and a
    # card's recipe fields (NULL: a study card).
    2: [
        "ALTER TABLE runs ADD COLUMN recipe_toml TEXT",
        "ALTER TABLE runs ADD COLUMN recipe_digest TEXT",
        "ALTER TABLE cards ADD COLUMN fields_json TEXT",
    ],
    # Cost and provider batches: token and cost totals (nano-dollars, so sums are
    # exact) on uploads and runs, and the batches with the uploads they hold.
    3: [
        f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
        for table in ("runs", "uploads")
        for column in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_nanos",
        )
    ]
    + _BATCH_TABLES,
    # Card search: the cards table gains a stable ``seq`` and its words (computed by the
    # functions _connect registers), and the FTS5 index is built over every card. Uploads
    # and runs count their requests and the 429s among them (0 for older rows).
    4: [
        *_COUNT_COLUMNS,
        _CARDS_TABLE.format(name="cards_v5"),
        "INSERT INTO cards_v5 (upload_id, ordinal, title, body, tags, quote, created_at,"
        " fields_json, search_words, search_tags) SELECT upload_id, ordinal, title, body,"
        " tags, quote, created_at, fields_json,"
        " cardmill_search_words(title, body, quote, tags, fields_json),"
        " cardmill_tag_words(tags) FROM cards ORDER BY rowid",
        "DROP TABLE cards",
        "ALTER TABLE cards_v5 RENAME TO cards",
        *_SEARCH_INDEX,
        "INSERT INTO cards_fts(cards_fts) VALUES ('rebuild')",
    ],
    # A run keeps the provider and model it is sent to (NULL: not known, as for every
    # run before).
    5: ["ALTER TABLE runs ADD COLUMN provider TEXT", "ALTER TABLE runs ADD COLUMN model TEXT"],
    # Reuse: the answers kept, and on uploads and runs what reusing them saved.
    6: [
        *(
            f"ALTER TABLE runs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            for column in ("reused_items", "saved_tokens", "saved_nanos")
        ),
        "ALTER TABLE uploads ADD COLUMN answer_key TEXT",
        *(
            f"ALTER TABLE uploads ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            for column in ("reused", "saved_tokens", "saved_nanos")
        ),
        _ANSWERS_TABLE,
        _ANSWERS_ASKING,
    ],
}


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated the file while we waited for the lock.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute(f"PRAGMA user_version = {version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@final
class SQLiteStorage(SQLBackend):
    """Storage in one SQLite file, shared safely by threads and processes.

    Open it with ``async with SQLiteStorage.open("cardmill.db") as storage:``.

    Args:
        conn: an open connection (use [`open`][cardmill.SQLiteStorage.open]).
        path: the database path, for messages.
        clock: wall-clock seconds for leases and timestamps; leases are shared between
            processes, so this is wall time, not trio time.

    Durability: with ``synchronous="NORMAL"`` (the default) a committed transaction
    survives a crash of the process; ``"FULL"`` also survives a power cut, at some cost.
    Either way a transaction is all or nothing.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._clock = clock
        self._thread = ThreadBatcher()
        # Documents read along with a claim, until the claimer asks for them.
        self._prefetched: dict[str, Document] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> AsyncIterator[SQLiteStorage]:
        """Open (creating if needed) a cardmill database.

        Raises:
            DatabaseError: the file is not a cardmill database, or a newer one.
        """
        storage = await cls.connect(
            path, synchronous=synchronous, busy_timeout=busy_timeout, clock=clock
        )
        async with storage:
            yield storage

    @classmethod
    async def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> SQLiteStorage:
        """Open a database without a context manager; call
        [`aclose`][cardmill.SQLiteStorage.aclose] when done."""
        require_trio("SQLiteStorage.open")
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        p = os.fspath(path)
        conn = await trio.to_thread.run_sync(_connect, p, synchronous, busy_timeout)
        return cls(conn, p, clock=clock)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._path!r})"

    async def aclose(self) -> None:
        """Close the database (a checkpoint even when already closed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await self._thread.run(conn.close)
        else:
            await trio.lowlevel.checkpoint()

    # -- plumbing -----------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self._path}: storage is closed")
        try:
            return await self._thread.run(partial(_transaction, conn, write, fn, *args))
        except sqlite3.Error as exc:
            raise StorageError(f"{self._path}: {exc}") from exc
        except UnicodeEncodeError as exc:
            raise UnstorableData(
                "text with a character that cannot be encoded (a lone surrogate)"
            ) from exc


# -- transactions ------------------------------------------------------------------------


class SQLiteTx:
    """`Tx` over sqlite3: one writer at a time already."""

    lock = ""
    skip_locked = ""
    share = ""
    search = "fts5"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql, params)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    @contextlib.contextmanager
    def watch(self, stop: Stop) -> Iterator[None]:
        # A progress handler interrupts the statement it runs in once the flag is set;
        # it is gone before the transaction's COMMIT or ROLLBACK.
        self._conn.set_progress_handler(stop.progress, PROGRESS_STEPS)
        try:
            yield
        except sqlite3.OperationalError:
            if stop.is_set:
                raise Stopped from None
            raise
        finally:
            self._conn.set_progress_handler(None, 0)


def _transaction(conn: sqlite3.Connection, write: bool, fn: Callable[..., T], *args: Any) -> T:
    # Writers take the lock up front (no upgrade deadlocks); readers get a snapshot.
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        result = fn(SQLiteTx(conn), *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
