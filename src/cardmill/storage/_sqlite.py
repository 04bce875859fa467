"""SQLiteStorage: one database file, safe across crashes and across processes.

One connection per process, used from one worker thread at a time (a
``trio.CapacityLimiter(1)``, with calls that queue up batched into one hand-off), so no
sqlite3 call ever runs on the event loop. Each
operation is one synchronous function holding one transaction (``BEGIN IMMEDIATE`` for
writes), so no lock is held across an ``await``. WAL journaling lets readers in other
processes proceed while one writes; ``busy_timeout`` makes writers queue, not fail.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar, final

import trio

from ..errors import DatabaseError, RunNotFound, StorageError, UploadNotFound
from ..model import (
    Card,
    CardDraft,
    Document,
    Run,
    RunStatus,
    Upload,
    UploadStatus,
    final_status,
)
from ._base import card_id, check_drafts, check_lease, new_id, one_line, to_datetime
from ._thread import ThreadBatcher

__all__ = ["SQLiteStorage"]

SCHEMA_VERSION: Final = 1
_PREFETCH_LIMIT: Final = 256
APPLICATION_ID: Final = 0x43524D4C  # "CRML": marks the file as a cardmill database

_SCHEMA: Final = """
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
    UNIQUE (run_id, position)
);
CREATE INDEX uploads_by_status ON uploads(run_id, status, position);
CREATE TABLE documents (
    upload_id TEXT PRIMARY KEY REFERENCES uploads(id),
    data BLOB NOT NULL
);
CREATE TABLE cards (
    upload_id TEXT NOT NULL REFERENCES uploads(id),
    ordinal INTEGER NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL,
    quote TEXT,
    created_at REAL NOT NULL,
    UNIQUE (upload_id, ordinal)
);
"""

_UPLOAD_COLUMNS: Final = (
    "id, run_id, name, media_type, size, sha256, status, attempts, error, card_count,"
    " started_at, finished_at, position, worker, lease_expires"
)
_RUN_COLUMNS: Final = (
    "id, name, status, total_items, completed_items, failed_items, total_cards,"
    " created_at, started_at, finished_at"
)

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def _run_row(row: Any) -> Run:
    created = to_datetime(row[7])
    assert created is not None
    return Run(
        row[0],
        row[1],
        RunStatus(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        created,
        to_datetime(row[8]),
        to_datetime(row[9]),
    )


def _upload_row(row: Any) -> Upload:
    return Upload(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        UploadStatus(row[6]),
        row[7],
        row[8],
        row[9],
        to_datetime(row[10]),
        to_datetime(row[11]),
        row[12],
        row[13],
        to_datetime(row[14]),
    )


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
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0 and version == 0:
            _initialise(conn, path)
        elif app_id != APPLICATION_ID:
            raise DatabaseError(f"{path}: not a cardmill database")
        elif version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path}: written by a newer cardmill (schema {version}; "
                f"this version reads up to {SCHEMA_VERSION})"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DatabaseError(f"{path}: not a cardmill database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _initialise(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have initialised the file while we waited for the lock.
        if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
            conn.execute("COMMIT")
            return
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise DatabaseError(f"{path}: not a cardmill database")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@final
class SQLiteStorage:
    """Storage in one SQLite file, shared safely by threads and processes.

    Open it with ``async with SQLiteStorage.open("cardmill.db") as storage:``.

    Args:
        conn: an open connection (use :meth:`open`).
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
        """Open a database without a context manager; call :meth:`aclose` when done."""
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

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await self._thread.run(conn.close)
        else:
            await trio.lowlevel.checkpoint()

    # -- plumbing -----------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self._path}: storage is closed")
        try:
            return await self._thread.run(partial(fn, conn, *args))
        except sqlite3.Error as exc:
            raise StorageError(f"{self._path}: {exc}") from exc

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(_transaction, fn, *args)

    # -- the protocol ---------------------------------------------------------------

    async def create_run(self, documents: Iterable[Document], *, name: str | None = None) -> Run:
        run_id = new_id("run")
        await self._write(_create_run, run_id, name or run_id, documents, self._clock())
        return await self.get_run(run_id)

    async def get_run(self, run_id: str) -> Run:
        return await self._call(_get_run, run_id)

    async def list_runs(self) -> list[Run]:
        return await self._call(_list_runs)

    async def list_uploads(self, run_id: str, status: UploadStatus | None = None) -> list[Upload]:
        return await self._call(_list_uploads, run_id, status)

    async def list_cards(self, run_id: str, upload_id: str | None = None) -> list[Card]:
        return await self._call(_list_cards, run_id, upload_id)

    async def load_document(self, upload_id: str) -> Document:
        document = self._prefetched.pop(upload_id, None)
        if document is not None:
            await trio.lowlevel.checkpoint()
            return document
        return await self._call(_load_document, upload_id)

    async def claim_upload(
        self, run_id: str, *, worker: str, lease_seconds: float
    ) -> Upload | None:
        check_lease(lease_seconds)
        claimed = await self._write(_claim, run_id, worker, lease_seconds, self._clock())
        if claimed is None:
            return None
        upload, document = claimed
        self._prefetched[upload.id] = document
        while len(self._prefetched) > _PREFETCH_LIMIT:
            self._prefetched.pop(next(iter(self._prefetched)))
        return upload

    async def renew_lease(self, upload_id: str, *, worker: str, lease_seconds: float) -> bool:
        check_lease(lease_seconds)
        return await self._write(_renew, upload_id, worker, lease_seconds, self._clock())

    async def complete_upload(
        self, upload_id: str, drafts: Sequence[CardDraft], *, worker: str | None = None
    ) -> bool:
        checked = check_drafts(drafts)
        return await self._write(_complete, upload_id, checked, worker, self._clock())

    async def fail_upload(self, upload_id: str, error: str, *, worker: str | None = None) -> bool:
        return await self._write(_fail, upload_id, one_line(error), worker, self._clock())

    async def release_upload(self, upload_id: str, *, worker: str | None = None) -> bool:
        return await self._write(_release, upload_id, worker)

    async def finish_run(self, run_id: str) -> Run:
        return await self._write(_finish_run, run_id, self._clock())


# -- synchronous transactions, each run whole on the storage's thread ----------------


def _transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _get_run(conn: sqlite3.Connection, run_id: str) -> Run:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return _run_row(row)


def _list_runs(conn: sqlite3.Connection) -> list[Run]:
    rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at, rowid")
    return [_run_row(r) for r in rows]


def _require_run(conn: sqlite3.Connection, run_id: str) -> None:
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
        raise RunNotFound(run_id)


def _list_uploads(
    conn: sqlite3.Connection, run_id: str, status: UploadStatus | None
) -> list[Upload]:
    conn.execute("BEGIN")
    try:
        _require_run(conn, run_id)
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if status is not None:
            sql += " AND status = ?"
            args += (UploadStatus(status).value,)
        return [_upload_row(r) for r in conn.execute(sql + " ORDER BY position", args)]
    finally:
        conn.execute("COMMIT")


def _list_cards(conn: sqlite3.Connection, run_id: str, upload_id: str | None) -> list[Card]:
    conn.execute("BEGIN")
    try:
        _require_run(conn, run_id)
        sql = (
            "SELECT c.upload_id, c.ordinal, c.title, c.body, c.tags, c.quote, c.created_at"
            " FROM uploads u JOIN cards c ON c.upload_id = u.id WHERE u.run_id = ?"
        )
        args: tuple[Any, ...] = (run_id,)
        if upload_id is not None:
            sql += " AND u.id = ?"
            args += (upload_id,)
        rows = conn.execute(sql + " ORDER BY u.position, c.ordinal", args).fetchall()
    finally:
        conn.execute("COMMIT")
    cards = []
    for up, ordinal, title, body, tags, quote, created in rows:
        created_at = to_datetime(created)
        assert created_at is not None
        cards.append(
            Card(
                card_id(up, ordinal),
                run_id,
                up,
                ordinal,
                title,
                body,
                tuple(json.loads(tags)),
                quote,
                created_at,
            )
        )
    return cards


def _load_document(conn: sqlite3.Connection, upload_id: str) -> Document:
    row = conn.execute(
        "SELECT u.name, u.media_type, d.data FROM uploads u JOIN documents d"
        " ON d.upload_id = u.id WHERE u.id = ?",
        (upload_id,),
    ).fetchone()
    if row is None:
        raise UploadNotFound(upload_id)
    return Document(row[0], bytes(row[2]), row[1])


def _create_run(
    conn: sqlite3.Connection, run_id: str, name: str, documents: Iterable[Document], now: float
) -> None:
    conn.execute(
        "INSERT INTO runs (id, name, status, total_items, created_at) VALUES (?, ?, ?, 0, ?)",
        (run_id, name, RunStatus.PENDING.value, now),
    )
    count = 0
    # Documents are consumed one at a time on this thread: a generator that reads
    # files keeps memory flat and file reads off the event loop.
    for position, doc in enumerate(documents):
        upload_id = new_id("up")
        conn.execute(
            "INSERT INTO uploads (id, run_id, position, name, media_type, size, sha256, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                upload_id,
                run_id,
                position,
                doc.name,
                doc.media_type,
                doc.size,
                doc.sha256,
                UploadStatus.PENDING.value,
            ),
        )
        conn.execute("INSERT INTO documents (upload_id, data) VALUES (?, ?)", (upload_id, doc.data))
        count += 1
    conn.execute("UPDATE runs SET total_items = ? WHERE id = ?", (count, run_id))


def _claim(
    conn: sqlite3.Connection, run_id: str, worker: str, lease_seconds: float, now: float
) -> tuple[Upload, Document] | None:
    run = conn.execute("SELECT status, started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
    if run is None:
        raise RunNotFound(run_id)
    row = conn.execute(
        "SELECT id FROM uploads WHERE run_id = ? AND status = ? ORDER BY position LIMIT 1",
        (run_id, UploadStatus.PENDING.value),
    ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT id FROM uploads WHERE run_id = ? AND status = ? AND lease_expires <= ?"
            " ORDER BY position LIMIT 1",
            (run_id, UploadStatus.LOADING.value, now),
        ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE uploads SET status = ?, attempts = attempts + 1, worker = ?,"
        " lease_expires = ?, started_at = coalesce(started_at, ?) WHERE id = ?",
        (UploadStatus.LOADING.value, worker, now + lease_seconds, now, row[0]),
    )
    if run[0] != RunStatus.RUNNING.value:
        conn.execute(
            "UPDATE runs SET status = ?, started_at = coalesce(started_at, ?),"
            " finished_at = NULL WHERE id = ?",
            (RunStatus.RUNNING.value, now, run_id),
        )
    got = conn.execute(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ?", row).fetchone()
    upload = _upload_row(got)
    # Whoever claims an upload reads its document next: fetch it in the same hop.
    (data,) = conn.execute("SELECT data FROM documents WHERE upload_id = ?", row).fetchone()
    return upload, Document(upload.name, bytes(data), upload.media_type)


def _upload_state(conn: sqlite3.Connection, upload_id: str) -> tuple[str, str, str | None]:
    row = conn.execute(
        "SELECT run_id, status, worker FROM uploads WHERE id = ?", (upload_id,)
    ).fetchone()
    if row is None:
        raise UploadNotFound(upload_id)
    return row[0], row[1], row[2]


def _may_settle(status: str, holder: str | None, worker: str | None) -> bool:
    if UploadStatus(status).terminal:
        return False
    return worker is None or (status == UploadStatus.LOADING.value and holder == worker)


def _renew(
    conn: sqlite3.Connection, upload_id: str, worker: str, lease_seconds: float, now: float
) -> bool:
    _, status, holder = _upload_state(conn, upload_id)
    if status != UploadStatus.LOADING.value or holder != worker:
        return False
    conn.execute(
        "UPDATE uploads SET lease_expires = ? WHERE id = ?", (now + lease_seconds, upload_id)
    )
    return True


def _complete(
    conn: sqlite3.Connection,
    upload_id: str,
    drafts: tuple[CardDraft, ...],
    worker: str | None,
    now: float,
) -> bool:
    run_id, status, holder = _upload_state(conn, upload_id)
    if not _may_settle(status, holder, worker):
        return False
    conn.executemany(
        "INSERT INTO cards (upload_id, ordinal, title, body, tags, quote, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (upload_id, i, d.title, d.body, json.dumps(list(d.tags)), d.quote, now)
            for i, d in enumerate(drafts)
        ],
    )
    conn.execute(
        "UPDATE uploads SET status = ?, card_count = ?, error = NULL, worker = NULL,"
        " lease_expires = NULL, finished_at = ?, started_at = coalesce(started_at, ?)"
        " WHERE id = ?",
        (UploadStatus.COMPLETED.value, len(drafts), now, now, upload_id),
    )
    conn.execute(
        "UPDATE runs SET completed_items = completed_items + 1,"
        " total_cards = total_cards + ? WHERE id = ?",
        (len(drafts), run_id),
    )
    return True


def _fail(
    conn: sqlite3.Connection, upload_id: str, error: str, worker: str | None, now: float
) -> bool:
    run_id, status, holder = _upload_state(conn, upload_id)
    if not _may_settle(status, holder, worker):
        return False
    conn.execute(
        "UPDATE uploads SET status = ?, error = ?, worker = NULL, lease_expires = NULL,"
        " finished_at = ?, started_at = coalesce(started_at, ?) WHERE id = ?",
        (UploadStatus.FAILED.value, error, now, now, upload_id),
    )
    conn.execute("UPDATE runs SET failed_items = failed_items + 1 WHERE id = ?", (run_id,))
    return True


def _release(conn: sqlite3.Connection, upload_id: str, worker: str | None) -> bool:
    _, status, holder = _upload_state(conn, upload_id)
    if status != UploadStatus.LOADING.value or (worker is not None and holder != worker):
        return False
    conn.execute(
        "UPDATE uploads SET status = ?, worker = NULL, lease_expires = NULL WHERE id = ?",
        (UploadStatus.PENDING.value, upload_id),
    )
    return True


def _finish_run(conn: sqlite3.Connection, run_id: str, now: float) -> Run:
    run = _get_run(conn, run_id)
    status = final_status(run.total_items, run.completed_items, run.failed_items)
    if status == RunStatus.CANCELLED:
        live = conn.execute(
            "SELECT 1 FROM uploads WHERE run_id = ? AND status = ? AND lease_expires > ? LIMIT 1",
            (run_id, UploadStatus.LOADING.value, now),
        ).fetchone()
        if live is not None:
            status = RunStatus.RUNNING
    conn.execute(
        "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
        (status.value, now if status.finished else None, run_id),
    )
    return _get_run(conn, run_id)
