"""The storage transactions, written once for every SQL backend.

Each function is one whole transaction's work, run synchronously on a worker thread by a
backend that opened the transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a pooled
connection's transaction). They speak to the database through `Tx`, which hides
the few differences: the placeholder style and the row locks PostgreSQL needs where
SQLite's single writer already serialises.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

from .._recipe import STUDY_CARDS, Recipe
from ..errors import DatabaseError, InputError, RunNotFound, UploadNotFound
from ..model import (
    Card,
    CardDraft,
    Document,
    Run,
    RunStatus,
    Upload,
    UploadStatus,
    Usage,
    final_status,
)
from ._base import Spent, card_id, check_against, holds, to_datetime, to_usd
from ._search import search_words, tag_words
from ._stop import Stop

__all__ = ["Tx"]


class Tx(Protocol):
    """One open transaction. SQL uses ``?`` placeholders."""

    #: appended to a SELECT of the one row a write will change (" FOR UPDATE" or "")
    lock: str
    #: appended to a claim's SELECT (" FOR UPDATE SKIP LOCKED" or "")
    skip_locked: str
    #: appended to a claim's read of its run (" FOR KEY SHARE" or "")
    share: str
    #: the card search index: "fts5" (SQLite) or "tsvector" (PostgreSQL)
    search: str

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def watch(self, stop: Stop) -> AbstractContextManager[None]:
        """While open, a statement stops (`Stopped`) soon after ``stop`` is set, where
        the database lets a statement be interrupted; elsewhere a no-op."""
        ...


# What a settlement adds to an upload and to its run: tokens, the cost in nano-dollars,
# the requests and their 429s.
SPENT_COLUMNS: Final = (
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos,"
    " requests, rate_limited"
)
UPLOAD_COLUMNS: Final = (
    "id, run_id, name, media_type, size, sha256, status, attempts, error, card_count,"
    f" started_at, finished_at, position, worker, lease_expires, {SPENT_COLUMNS},"
    " answer_key, reused, saved_tokens, saved_nanos"
)
UPLOAD_COLUMNS_OF_U: Final = ", ".join("u." + c.strip() for c in UPLOAD_COLUMNS.split(","))
RUN_COLUMNS: Final = (
    "id, name, status, total_items, completed_items, failed_items, total_cards,"
    f" created_at, started_at, finished_at, recipe_toml, {SPENT_COLUMNS}, provider, model,"
    " reused_items, saved_tokens, saved_nanos"
)
CARD_COLUMNS: Final = "c.title, c.body, c.tags, c.quote, c.created_at, c.fields_json"


@functools.lru_cache(maxsize=64)
def _parse_recipe(text: str) -> Recipe:
    return Recipe.from_toml(text, source="stored recipe")


def stored_recipe(run_id: str, text: str | None) -> Recipe:
    """A run's recipe from its stored text; NULL is the study cards (runs made before
    recipes)."""
    if text is None:
        return STUDY_CARDS
    try:
        return _parse_recipe(text)
    except InputError as exc:
        raise DatabaseError(f"run {run_id}: {exc}") from None


def get_recipe(tx: Tx, run_id: str) -> Recipe:
    row = tx.one(f"SELECT recipe_toml FROM runs WHERE id = ? AND {VISIBLE}", (run_id,))
    if row is None:
        raise RunNotFound(run_id)
    return stored_recipe(run_id, row[0])


def card_fields(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def fields_text(draft: CardDraft) -> str | None:
    if draft.fields is None:
        return None
    return json.dumps(dict(draft.fields), ensure_ascii=False, separators=(",", ":"))


def run_row(row: Any) -> Run:
    created = to_datetime(row[7])
    assert created is not None
    recipe = stored_recipe(row[0], row[10])
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
        recipe.name,
        recipe.digest,
        Usage(row[11], row[12], row[13], row[14]),
        to_usd(row[15]),
        row[16],
        row[17],
        row[18] or "",
        row[19] or "",
        row[20],
        row[21],
        to_usd(row[22]),
    )


def upload_row(row: Any) -> Upload:
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
        Usage(row[15], row[16], row[17], row[18]),
        to_usd(row[19]),
        row[20],
        row[21],
        row[22],
        bool(row[23]),
        row[24],
        to_usd(row[25]),
    )


# A run exists for the protocol once its creation committed whole (see _ingest.py).
VISIBLE: Final = "creating = 0"


def get_run(tx: Tx, run_id: str, *, lock: bool = False) -> Run:
    sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ? AND {VISIBLE}"
    row = tx.one(sql + (tx.lock if lock else ""), (run_id,))
    if row is None:
        raise RunNotFound(run_id)
    return run_row(row)


def list_runs(tx: Tx) -> list[Run]:
    rows = tx.all(f"SELECT {RUN_COLUMNS} FROM runs WHERE {VISIBLE} ORDER BY created_at, id")
    return [run_row(r) for r in rows]


def require_run(tx: Tx, run_id: str) -> None:
    if tx.one(f"SELECT 1 FROM runs WHERE id = ? AND {VISIBLE}", (run_id,)) is None:
        raise RunNotFound(run_id)


def list_uploads(tx: Tx, run_id: str, status: UploadStatus | None) -> list[Upload]:
    require_run(tx, run_id)
    sql = f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE run_id = ?"
    args: tuple[Any, ...] = (run_id,)
    if status is not None:
        sql += " AND status = ?"
        args += (UploadStatus(status).value,)
    return [upload_row(r) for r in tx.all(sql + " ORDER BY position", args)]


def list_cards(tx: Tx, run_id: str, upload_id: str | None) -> list[Card]:
    require_run(tx, run_id)
    sql = (
        f"SELECT c.upload_id, c.ordinal, {CARD_COLUMNS}"
        " FROM uploads u JOIN cards c ON c.upload_id = u.id WHERE u.run_id = ?"
    )
    args: tuple[Any, ...] = (run_id,)
    if upload_id is not None:
        sql += " AND u.id = ?"
        args += (upload_id,)
    rows = tx.all(sql + " ORDER BY u.position, c.ordinal", args)
    return [card_row(run_id, row) for row in rows]


def get_uploads(tx: Tx, run_id: str, upload_ids: tuple[str, ...]) -> list[Upload]:
    """The run's uploads among ``upload_ids``, by position."""
    require_run(tx, run_id)
    if not upload_ids:
        return []
    marks = ", ".join("?" * len(upload_ids))
    rows = tx.all(
        f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE run_id = ? AND id IN ({marks})"
        " ORDER BY position",
        (run_id, *upload_ids),
    )
    return [upload_row(r) for r in rows]


def upload_page(tx: Tx, run_id: str, after: int, limit: int) -> list[tuple[int, Upload]]:
    """Up to ``limit`` of the run's uploads whose position is past ``after``, each with
    its position, the next cursor."""
    require_run(tx, run_id)
    rows = tx.all(
        f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE run_id = ? AND position > ?"
        " ORDER BY position LIMIT ?",
        (run_id, after, limit),
    )
    return [(r[12], upload_row(r)) for r in rows]


def card_page(
    tx: Tx, run_id: str, upload_id: str | None, after: tuple[int, int], limit: int
) -> list[tuple[tuple[int, int], Card]]:
    """Up to ``limit`` cards past the ``(upload position, ordinal)`` cursor ``after``,
    each with its own cursor."""
    require_run(tx, run_id)
    position, ordinal = after
    # `position >= ?` bounds the scan of uploads by (run_id, position), so a page costs
    # its own size, not the rest of the run.
    sql = (
        f"SELECT u.position, c.upload_id, c.ordinal, {CARD_COLUMNS}"
        " FROM uploads u JOIN cards c ON c.upload_id = u.id"
        " WHERE u.run_id = ? AND u.position >= ? AND (u.position > ? OR c.ordinal > ?)"
    )
    args: tuple[Any, ...] = (run_id, position, position, ordinal)
    if upload_id is not None:
        sql += " AND u.id = ?"
        args += (upload_id,)
    rows = tx.all(sql + " ORDER BY u.position, c.ordinal LIMIT ?", (*args, limit))
    return [((row[0], row[2]), card_row(run_id, row[1:])) for row in rows]


def card_row(run_id: str, row: Sequence[Any]) -> Card:
    """A card from ``upload_id, ordinal`` and the `CARD_COLUMNS` of its row."""
    up, number, title, body, tags, quote, created, fields = row
    created_at = to_datetime(created)
    assert created_at is not None
    return Card(
        card_id(up, number),
        run_id,
        up,
        number,
        title,
        body,
        tuple(json.loads(tags)),
        quote,
        created_at,
        card_fields(fields),
    )


def load_document(tx: Tx, upload_id: str) -> Document:
    row = tx.one(
        "SELECT u.name, u.media_type, d.data FROM uploads u JOIN documents d"
        " ON d.upload_id = u.id WHERE u.id = ?",
        (upload_id,),
    )
    if row is None:
        raise UploadNotFound(upload_id)
    return Document(row[0], bytes(row[2]), row[1])


def claim(
    tx: Tx, run_id: str, worker: str, lease_seconds: float, now: float
) -> tuple[Upload, Document] | None:
    # The run row stays locked until the claim commits, so a finish_run (FOR UPDATE)
    # either sees the new lease or runs entirely before the claim, which then revives
    # the run. KEY SHARE, not SHARE: it lets claimers run side by side and conflicts
    # with nothing but FOR UPDATE, and the claim's own UPDATE of the run (FOR NO KEY
    # UPDATE) never has to upgrade a lock another claimer also holds, so two claimers
    # reviving a CANCELLED run queue instead of deadlocking. Lock order is run, then
    # upload (SKIP LOCKED, never waiting); completes take upload, then run, but a
    # claimer never waits for an upload, so the orders cannot cross.
    run = tx.one(
        f"SELECT status, started_at FROM runs WHERE id = ? AND {VISIBLE}" + tx.share, (run_id,)
    )
    if run is None:
        raise RunNotFound(run_id)
    row = tx.one(
        "SELECT id FROM uploads WHERE run_id = ? AND status = ? ORDER BY position LIMIT 1"
        + tx.skip_locked,
        (run_id, UploadStatus.PENDING.value),
    )
    if row is None:
        row = tx.one(
            "SELECT id FROM uploads WHERE run_id = ? AND status = ? AND lease_expires <= ?"
            " ORDER BY position LIMIT 1" + tx.skip_locked,
            (run_id, UploadStatus.LOADING.value, now),
        )
    if row is None:
        return None
    tx.run(
        "UPDATE uploads SET status = ?, attempts = attempts + 1, worker = ?,"
        " lease_expires = ?, started_at = coalesce(started_at, ?) WHERE id = ?",
        (UploadStatus.LOADING.value, worker, now + lease_seconds, now, row[0]),
    )
    if run[0] != RunStatus.RUNNING.value:
        tx.run(
            "UPDATE runs SET status = ?, started_at = coalesce(started_at, ?),"
            " finished_at = NULL WHERE id = ?",
            (RunStatus.RUNNING.value, now, run_id),
        )
    # Whoever claims an upload reads its document next: fetch it in the same query.
    got = tx.one(
        f"SELECT {UPLOAD_COLUMNS_OF_U}, d.data FROM uploads u"
        " JOIN documents d ON d.upload_id = u.id WHERE u.id = ?",
        row,
    )
    upload = upload_row(got)
    return upload, Document(upload.name, bytes(got[-1]), upload.media_type)


def upload_state(tx: Tx, upload_id: str) -> tuple[str, UploadStatus, str | None, int]:
    row = tx.one(
        "SELECT run_id, status, worker, attempts FROM uploads WHERE id = ?" + tx.lock,
        (upload_id,),
    )
    if row is None:
        raise UploadNotFound(upload_id)
    return row[0], UploadStatus(row[1]), row[2], row[3]


def may_settle(tx: Tx, upload_id: str, worker: str | None, attempt: int | None) -> str | None:
    """The upload's run when a fenced call may settle it, else None."""
    run_id, status, holder, attempts = upload_state(tx, upload_id)
    if status.terminal or not holds(status, holder, attempts, worker, attempt):
        return None
    return run_id


def renew(
    tx: Tx, upload_id: str, worker: str, attempt: int | None, lease_seconds: float, now: float
) -> bool:
    _, status, holder, attempts = upload_state(tx, upload_id)
    if not holds(status, holder, attempts, worker, attempt):
        return False
    tx.run("UPDATE uploads SET lease_expires = ? WHERE id = ?", (now + lease_seconds, upload_id))
    return True


def spend(tx: Tx, upload_id: str, run_id: str, spent: Spent | None) -> None:
    """Add a settlement's usage, cost, requests and 429s to the upload and its run (lock
    order: the upload, then the run, as every settlement takes them)."""
    if spent is None or spent.nothing:
        return
    u = spent.usage or Usage()
    added = (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        spent.nanos,
        spent.requests,
        spent.rate_limited,
    )
    for table, key in (("uploads", upload_id), ("runs", run_id)):
        tx.run(
            f"UPDATE {table} SET input_tokens = input_tokens + ?,"
            " output_tokens = output_tokens + ?, cache_read_tokens = cache_read_tokens + ?,"
            " cache_write_tokens = cache_write_tokens + ?, cost_nanos = cost_nanos + ?,"
            " requests = requests + ?, rate_limited = rate_limited + ?"
            " WHERE id = ?",
            (*added, key),
        )


def complete(
    tx: Tx,
    upload_id: str,
    drafts: tuple[CardDraft, ...],
    worker: str | None,
    attempt: int | None,
    now: float,
    spent: Spent | None = None,
) -> bool:
    run_id = may_settle(tx, upload_id, worker, attempt)
    if run_id is None:
        return False
    check_against(get_recipe(tx, run_id), drafts)
    # The search words go in the same transaction as the cards: the index (a trigger in
    # SQLite, a generated column in PostgreSQL) is never behind the cards it covers.
    tx.many(
        "INSERT INTO cards (upload_id, ordinal, title, body, tags, quote, created_at,"
        " fields_json, search_words, search_tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                upload_id,
                i,
                d.title,
                d.body,
                json.dumps(d.tags),
                d.quote,
                now,
                fields_text(d),
                search_words(d.title, d.body, d.quote, d.tags, d.fields),
                tag_words(d.tags),
            )
            for i, d in enumerate(drafts)
        ],
    )
    tx.run(
        "UPDATE uploads SET status = ?, card_count = ?, error = NULL, worker = NULL,"
        " lease_expires = NULL, finished_at = ?, started_at = coalesce(started_at, ?)"
        " WHERE id = ?",
        (UploadStatus.COMPLETED.value, len(drafts), now, now, upload_id),
    )
    tx.run(
        "UPDATE runs SET completed_items = completed_items + 1,"
        " total_cards = total_cards + ? WHERE id = ?",
        (len(drafts), run_id),
    )
    spend(tx, upload_id, run_id, spent)
    return True


def complete_and_claim(
    tx: Tx,
    upload_id: str,
    drafts: tuple[CardDraft, ...],
    worker: str,
    attempt: int | None,
    run_id: str,
    lease_seconds: float,
    now: float,
    spent: Spent | None = None,
) -> tuple[bool, tuple[Upload, Document] | None]:
    """`complete`, then `claim` of the run's next upload, in one transaction.

    Lock order: the upload, then the run (its counters), then — skipping any locked —
    the next upload; a claimer never waits on an upload, so no cycle can form.
    """
    completed = complete(tx, upload_id, drafts, worker, attempt, now, spent)
    return completed, claim(tx, run_id, worker, lease_seconds, now)


def fail(
    tx: Tx,
    upload_id: str,
    error: str,
    worker: str | None,
    attempt: int | None,
    now: float,
    spent: Spent | None = None,
) -> bool:
    run_id = may_settle(tx, upload_id, worker, attempt)
    if run_id is None:
        return False
    tx.run(
        "UPDATE uploads SET status = ?, error = ?, worker = NULL, lease_expires = NULL,"
        " finished_at = ?, started_at = coalesce(started_at, ?) WHERE id = ?",
        (UploadStatus.FAILED.value, error, now, now, upload_id),
    )
    tx.run("UPDATE runs SET failed_items = failed_items + 1 WHERE id = ?", (run_id,))
    spend(tx, upload_id, run_id, spent)
    forget_asking(tx, upload_id)
    return True


def release(
    tx: Tx,
    upload_id: str,
    worker: str | None,
    attempt: int | None,
    spent: Spent | None = None,
) -> bool:
    run_id, status, holder, attempts = upload_state(tx, upload_id)
    if status != UploadStatus.LOADING or not holds(status, holder, attempts, worker, attempt):
        return False
    tx.run(
        "UPDATE uploads SET status = ?, worker = NULL, lease_expires = NULL WHERE id = ?",
        (UploadStatus.PENDING.value, upload_id),
    )
    spend(tx, upload_id, run_id, spent)
    forget_asking(tx, upload_id)
    return True


def forget_asking(tx: Tx, upload_id: str) -> None:
    """An upload's claim ended without an answer (failed, released): the request it was
    asking for is nobody's now (see _answers.py)."""
    tx.run("DELETE FROM answers WHERE answered = 0 AND upload_id = ?", (upload_id,))


def finish_run(tx: Tx, run_id: str, now: float) -> Run:
    run = get_run(tx, run_id, lock=True)
    status = final_status(run.total_items, run.completed_items, run.failed_items)
    if status == RunStatus.CANCELLED:
        live = tx.one(
            "SELECT 1 FROM uploads WHERE run_id = ? AND status = ? AND lease_expires > ? LIMIT 1",
            (run_id, UploadStatus.LOADING.value, now),
        )
        if live is not None:
            status = RunStatus.RUNNING
    tx.run(
        "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
        (status.value, now if status.finished else None, run_id),
    )
    return get_run(tx, run_id)
