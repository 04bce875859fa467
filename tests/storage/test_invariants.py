"""check_invariants sees a run whose cost or batches were tampered with in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cardmill import CardDraft, Document, SQLiteStorage, Usage
from cardmill.testing import InvariantViolation, check_invariants

DOCS = [Document("a.txt", b"a"), Document("b.txt", b"b")]


def tampered(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql, args)
    conn.close()


async def prepared(path: Path) -> tuple[str, str]:
    """A run with one upload completed at a cost (3 requests, 2 of them 429s) and one held
    by a batch."""
    async with SQLiteStorage.open(path) as storage:
        run = await storage.create_run(DOCS)
        a, b = await storage.list_uploads(run.id)
        await storage.complete_upload(
            a.id, [CardDraft("t", "b")], usage=Usage(3, 4), cost_usd=0.2, requests=3, rate_limited=2
        )
        made = await storage.create_batch(run.id, [b.id], lease_seconds=60)
        assert made is not None
        await check_invariants(storage, run.id)
        return run.id, made[0].id


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE runs SET cost_nanos = cost_nanos + 1", "run cost_usd=0.200000001"),
        ("UPDATE uploads SET cost_nanos = 0", "uploads add up to 0.0"),
        ("UPDATE runs SET output_tokens = 5", "run usage"),
        ("UPDATE uploads SET cache_read_tokens = 1", "run usage"),
        ("UPDATE runs SET requests = requests + 1", "run requests=4 but its uploads add up to 3"),
        ("UPDATE uploads SET rate_limited = 0", "run rate_limited=2 but its uploads add up to 0"),
        ("UPDATE uploads SET requests = 1 WHERE requests = 3", "rate_limited=2 above requests=1"),
        ("UPDATE runs SET rate_limited = 5", "run rate_limited=5 above requests=3"),
        ("UPDATE batch_items SET attempt = 9", "lists attempt 9"),
        ("DELETE FROM batch_items", "which does not list it"),
        ("UPDATE batches SET state = 'done'", "which is done"),
        ("UPDATE uploads SET worker = 'batch:batch-nope' WHERE worker LIKE 'batch:%'", "not exist"),
    ],
)
async def test_a_broken_total_or_batch_is_reported(tmp_path: Path, sql: str, message: str) -> None:
    path = tmp_path / "c.db"
    run_id, _ = await prepared(path)
    tampered(path, sql)
    async with SQLiteStorage.open(path) as storage:
        with pytest.raises(InvariantViolation, match=message):
            await check_invariants(storage, run_id)


async def test_an_upload_held_by_another_runs_batch_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    run_id, batch_id = await prepared(path)
    async with SQLiteStorage.open(path) as storage:
        other = await storage.create_run(DOCS[:1])
    tampered(path, "UPDATE batches SET run_id = ? WHERE id = ?", other.id, batch_id)
    async with SQLiteStorage.open(path) as storage:
        with pytest.raises(InvariantViolation, match=f"of run {other.id}"):
            await check_invariants(storage, run_id)
