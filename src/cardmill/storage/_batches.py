"""The provider-batch transactions, written once for every SQL backend (see _transactions.py).

Lock order, on PostgreSQL: `create_batch` takes the run (KEY SHARE) and then its uploads,
skipping any locked, as a claim does; `update_batch` and `set_batch_submitted` take the
batch row, then (to release) its uploads. Settlements take an upload, then its run, and
never a batch, so no cycle can form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ..errors import BatchNotFound, InputError, RunNotFound
from ..model import (
    BATCH_HOLDER_PREFIX,
    Batch,
    BatchCounts,
    BatchItem,
    BatchState,
    RunStatus,
    UploadStatus,
)
from ._base import SUBMITTED_FROM, to_datetime
from ._transactions import VISIBLE, Tx, require_run

__all__ = ["create_batch"]

BATCH_COLUMNS: Final = (
    "id, run_id, state, provider_batch_id, size, processing, succeeded, errored, canceled,"
    " expired, created_at, updated_at, creator"
)
# Few enough placeholders for any SQLite build and for PostgreSQL.
_CHUNK: Final = 500
OPEN_STATES: Final = tuple(s.value for s in BatchState if s.open)


def batch_row(row: Any) -> Batch:
    created, updated = to_datetime(row[10]), to_datetime(row[11])
    assert created is not None
    assert updated is not None
    return Batch(
        row[0],
        row[1],
        BatchState(row[2]),
        row[3],
        row[4],
        BatchCounts(row[5], row[6], row[7], row[8], row[9]),
        created,
        updated,
        row[12],
    )


def _batch(tx: Tx, batch_id: str, *, lock: bool = False) -> Batch:
    sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?" + (tx.lock if lock else "")
    row = tx.one(sql, (batch_id,))
    if row is None:
        raise BatchNotFound(batch_id)
    return batch_row(row)


def create_batch(
    tx: Tx,
    run_id: str,
    upload_ids: Sequence[str],
    batch_id: str,
    lease_seconds: float,
    now: float,
    creator: str | None = None,
) -> tuple[Batch, tuple[BatchItem, ...]] | None:
    """Take the claimable ones of ``upload_ids`` (distinct, in order) and record a batch."""
    # The run row is held as a claim holds it (see _transactions.claim): a finish_run
    # sees the batch's leases or runs entirely before it.
    run = tx.one(f"SELECT status FROM runs WHERE id = ? AND {VISIBLE}" + tx.share, (run_id,))
    if run is None:
        raise RunNotFound(run_id)
    free: dict[str, int] = {}
    for start in range(0, len(upload_ids), _CHUNK):
        chunk = upload_ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = tx.all(
            f"SELECT id, attempts FROM uploads WHERE id IN ({marks}) AND run_id = ?"
            " AND (status = ? OR (status = ? AND lease_expires <= ?))" + tx.skip_locked,
            (*chunk, run_id, UploadStatus.PENDING.value, UploadStatus.LOADING.value, now),
        )
        free.update((r[0], r[1]) for r in rows)
    taken = [(i, free[i] + 1) for i in upload_ids if i in free]
    if not taken:
        return None
    holder = f"{BATCH_HOLDER_PREFIX}{batch_id}"
    tx.run(
        "INSERT INTO batches (id, run_id, state, size, processing, succeeded, errored,"
        " canceled, expired, created_at, updated_at, creator)"
        " VALUES (?, ?, ?, ?, 0, 0, 0, 0, 0, ?, ?, ?)",
        (batch_id, run_id, BatchState.SUBMITTING.value, len(taken), now, now, creator),
    )
    tx.many(
        "UPDATE uploads SET status = ?, attempts = ?, worker = ?, lease_expires = ?,"
        " started_at = coalesce(started_at, ?) WHERE id = ?",
        [
            (UploadStatus.LOADING.value, attempt, holder, now + lease_seconds, now, upload_id)
            for upload_id, attempt in taken
        ],
    )
    tx.many(
        "INSERT INTO batch_items (batch_id, upload_id, ordinal, custom_id, attempt)"
        " VALUES (?, ?, ?, ?, ?)",
        [(batch_id, u, n, u, attempt) for n, (u, attempt) in enumerate(taken)],
    )
    if run[0] != RunStatus.RUNNING.value:
        tx.run(
            "UPDATE runs SET status = ?, started_at = coalesce(started_at, ?),"
            " finished_at = NULL WHERE id = ?",
            (RunStatus.RUNNING.value, now, run_id),
        )
    items = tuple(BatchItem(batch_id, u, u, attempt) for u, attempt in taken)
    return _batch(tx, batch_id), items


def set_batch_submitted(tx: Tx, batch_id: str, provider_batch_id: str, now: float) -> Batch:
    batch = _batch(tx, batch_id, lock=True)
    if batch.provider_batch_id == provider_batch_id:
        return batch
    if batch.provider_batch_id is not None or batch.state not in SUBMITTED_FROM:
        raise InputError(
            f"batch {batch_id} is {batch.state} with provider id {batch.provider_batch_id!r}"
        )
    other = tx.one("SELECT id FROM batches WHERE provider_batch_id = ?", (provider_batch_id,))
    if other is not None:
        raise InputError(f"provider batch {provider_batch_id!r} is already batch {other[0]}")
    state = BatchState.LIVE if batch.state == BatchState.SUBMITTING else batch.state
    tx.run(
        "UPDATE batches SET state = ?, provider_batch_id = ?, updated_at = ? WHERE id = ?",
        (state.value, provider_batch_id, now, batch_id),
    )
    return _batch(tx, batch_id)


def update_batch(
    tx: Tx,
    batch_id: str,
    state: BatchState | None,
    counts: BatchCounts | None,
    now: float,
    expect: BatchState | None = None,
) -> Batch:
    # The row is locked (PostgreSQL) or the transaction holds the write lock (SQLite):
    # the state compared is the one written over.
    batch = _batch(tx, batch_id, lock=True)
    if not batch.state.open or (expect is not None and batch.state != expect):
        return batch
    # The uploads this batch still holds: LOADING under its name (a batch's holder name
    # is its own, so whatever holds it under that name holds it by this batch's claim).
    held = "SELECT upload_id FROM batch_items WHERE batch_id = ?"
    where = f" WHERE status = ? AND worker = ? AND id IN ({held})"
    args = (UploadStatus.LOADING.value, batch.holder, batch_id)
    if state == BatchState.DONE:
        (count,) = tx.one("SELECT count(*) FROM uploads" + where, args)
        if count:
            raise InputError(f"batch {batch_id} still holds {count} uploads")
    if state == BatchState.ABANDONED:
        tx.run(
            "UPDATE uploads SET status = ?, worker = NULL, lease_expires = NULL" + where,
            (UploadStatus.PENDING.value, *args),
        )
    new_state = batch.state if state is None else state
    c = batch.counts if counts is None else counts
    tx.run(
        "UPDATE batches SET state = ?, processing = ?, succeeded = ?, errored = ?,"
        " canceled = ?, expired = ?, updated_at = ? WHERE id = ?",
        (
            new_state.value,
            c.processing,
            c.succeeded,
            c.errored,
            c.canceled,
            c.expired,
            now,
            batch_id,
        ),
    )
    return _batch(tx, batch_id)


def get_batch(tx: Tx, batch_id: str) -> Batch:
    return _batch(tx, batch_id)


def list_batches(tx: Tx, run_id: str, open_only: bool) -> list[Batch]:
    require_run(tx, run_id)
    sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE run_id = ?"
    args: tuple[Any, ...] = (run_id,)
    if open_only:
        sql += f" AND state IN ({', '.join('?' * len(OPEN_STATES))})"
        args += OPEN_STATES
    return [batch_row(r) for r in tx.all(sql + " ORDER BY seq", args)]


def batch_items(tx: Tx, batch_id: str) -> list[BatchItem]:
    _batch(tx, batch_id)
    rows = tx.all(
        "SELECT upload_id, custom_id, attempt FROM batch_items WHERE batch_id = ? ORDER BY ordinal",
        (batch_id,),
    )
    return [BatchItem(batch_id, r[0], r[1], r[2]) for r in rows]
