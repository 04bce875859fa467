"""Engine overhead: uploads/s with a zero-latency provider, against a raw sqlite3 loop.

    python benchmarks/engine.py --quick    # 1,000 uploads; RSS at 1,000 vs 10,000
    python benchmarks/engine.py            # 10,000 uploads x 10 cards; RSS at 10k vs 100k

The raw loop does, in one thread with no engine, the same per-upload transactions the
SQLite backend does (read the document; then store 10 cards + status + counters and
claim the next upload, in one transaction): it is the storage's own limit, so
``sqlite_vs_raw_ratio`` is the share of it the engine keeps.
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package (httpx needs it).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import resource
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trio

from cardmill import CardDraft, Document, MemoryStorage, SQLiteStorage, Storage, Usage
from cardmill.engine import Engine
from cardmill.providers import Analysis

CARDS = tuple(
    CardDraft(f"card {i}", "a body of a card " * 8, ("tag",), "a quote") for i in range(10)
)


class Instant:
    """A provider that answers at once with ten cards."""

    name = "instant"

    async def analyze(self, document: Document) -> Analysis:
        await trio.lowlevel.checkpoint()
        return Analysis(CARDS, Usage())


def documents(n: int) -> Iterator[Document]:
    for i in range(n):
        yield Document(f"doc{i:06d}.txt", b"some text " * 10, "text/plain")


async def engine_rate(storage: Storage, n: int) -> float:
    run = await storage.create_run(documents(n))
    start = time.perf_counter()
    summary = await Engine(storage, Instant(), concurrency=8).execute(run.id)
    elapsed = time.perf_counter() - start
    assert summary.run.completed_items == n, summary.run
    return n / elapsed


async def memory_rate(n: int) -> float:
    return await engine_rate(MemoryStorage(), n)


async def sqlite_rate(path: Path, n: int) -> float:
    async with SQLiteStorage.open(path) as storage:
        return await engine_rate(storage, n)


def raw_rate(path: Path, n: int) -> float:
    """The same transactions, in one thread, no engine, no trio."""

    async def prepare() -> str:
        async with SQLiteStorage.open(path) as storage:
            return (await storage.create_run(documents(n))).id

    run_id = trio.run(prepare)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")

    def claim(now: float) -> str | None:
        row = conn.execute(
            "SELECT id FROM uploads WHERE run_id = ? AND status = 'pending'"
            " ORDER BY position LIMIT 1",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE uploads SET status = 'loading', attempts = attempts + 1, worker = 'w',"
            " lease_expires = ? WHERE id = ?",
            (now + 60, row[0]),
        )
        return str(row[0])

    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    upload_id = claim(time.time())
    conn.execute("COMMIT")
    while upload_id is not None:
        now = time.time()
        conn.execute("SELECT data FROM documents WHERE upload_id = ?", (upload_id,)).fetchone()
        # Complete this upload and claim the next in one transaction, as the backend does.
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO cards (upload_id, ordinal, title, body, tags, quote, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(upload_id, i, c.title, c.body, '["tag"]', c.quote, now) for i, c in enumerate(CARDS)],
        )
        conn.execute(
            "UPDATE uploads SET status = 'completed', card_count = 10, worker = NULL,"
            " lease_expires = NULL, finished_at = ? WHERE id = ?",
            (now, upload_id),
        )
        conn.execute(
            "UPDATE runs SET completed_items = completed_items + 1,"
            " total_cards = total_cards + 10 WHERE id = ?",
            (run_id,),
        )
        upload_id = claim(now)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def peak_rss_mb(n: int) -> float:
    """Peak RSS of a fresh process that creates and executes an n-upload SQLite run."""
    with tempfile.TemporaryDirectory() as directory:
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(n), str(Path(directory) / "rss.db")],
            check=True,
            capture_output=True,
            text=True,
        )
    return float(out.stdout.strip())


def rss_child(n: int, path: str) -> None:
    trio.run(sqlite_rate, Path(path), n)
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(kib / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(int(args.rss_child[0]), args.rss_child[1])
        return
    n = 1_000 if args.quick else 10_000
    small, large = (1_000, 10_000) if args.quick else (10_000, 100_000)
    with tempfile.TemporaryDirectory() as directory:
        memory = trio.run(memory_rate, n)
        sqlite = trio.run(sqlite_rate, Path(directory) / "engine.db", n)
        raw = raw_rate(Path(directory) / "raw.db", n)
    rss_small, rss_large = peak_rss_mb(small), peak_rss_mb(large)
    rows = [
        ("uploads (x 10 cards)", f"{n:,}"),
        ("Engine + MemoryStorage", f"{memory:,.0f} uploads/s"),
        ("Engine + SQLiteStorage", f"{sqlite:,.0f} uploads/s"),
        ("raw sqlite3 loop, one thread", f"{raw:,.0f} uploads/s"),
        ("SQLite engine / raw loop", f"{sqlite / raw:.2f}"),
        (f"peak RSS, {small:,} uploads", f"{rss_small:.1f} MB"),
        (f"peak RSS, {large:,} uploads", f"{rss_large:.1f} MB"),
        ("RSS ratio", f"{rss_large / rss_small:.2f}"),
    ]
    for key, value in rows:
        print(f"{key:<32} {value}")
    print(
        json.dumps(
            {
                "benchmark": "engine",
                "uploads": n,
                "memory_uploads_per_s": round(memory, 1),
                "sqlite_uploads_per_s": round(sqlite, 1),
                "raw_sqlite_uploads_per_s": round(raw, 1),
                "sqlite_vs_raw_ratio": round(sqlite / raw, 3),
                f"rss_{small // 1000}k_mb": round(rss_small, 1),
                f"rss_{large // 1000}k_mb": round(rss_large, 1),
                "rss_10k_mb": round(rss_small if small == 10_000 else rss_large, 1),
                "rss_100k_mb": round(rss_large, 1) if large == 100_000 else None,
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
