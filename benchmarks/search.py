"""Card search on a big run: first page, a deep page, rare and common words, a tag.

A run of 100,000 cards (10,000 documents of 10 cards) is stored in SQLite, and in
PostgreSQL when one is reachable (CARDMILL_TEST_PG_DSN, default: the local server; the
benchmark uses its own schema and drops it). Each query is timed as one
`Storage.search_cards` call and as one request to the viewer's cards page (Starlette
in-process, over httpx's ASGI transport); the figure is the median of several runs,
after one warm-up.

    python benchmarks/search.py --quick     # 2,000 cards, a few seconds
    python benchmarks/search.py             # 100,000 cards, ~2 min
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds http.py: keep it from shadowing the standard library's http package,
# which httpx imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from cardmill import CardDraft, Document, SQLiteStorage, Storage
from cardmill.storage import PostgresStorage
from cardmill.web import create_app

DSN = os.environ.get("CARDMILL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CARDS_PER_DOC = 10
WORDS = [
    "cell",
    "membrane",
    "protein",
    "enzyme",
    "river",
    "delta",
    "glacier",
    "orbit",
    "planet",
    "comet",
    "market",
    "price",
    "supply",
    "demand",
    "verb",
    "noun",
    "clause",
    "poem",
    "meter",
    "rhyme",
    "atom",
    "bond",
    "charge",
    "field",
    "wave",
    "light",
]
RARE = "zymurgy"
COMMON = "note"
TAG = "tag07"


def card(n: int, total: int) -> CardDraft:
    words = [WORDS[(n * 7 + k * 13) % len(WORDS)] for k in range(12)]
    body = f"A {COMMON} on {' '.join(words)}, number {n}."
    if n == total * 9 // 10:  # one card, deep in the run
        body += f" It mentions {RARE}."
    tags = (f"tag{n % 20:02d}", WORDS[n % len(WORDS)])
    return CardDraft(f"Card {n}: {words[0]} and {words[1]}", body, tags, f"quote {n}")


async def fill(storage: Storage, total: int) -> str:
    docs = [Document(f"doc{i:05d}.md", f"# {i}".encode()) for i in range(total // CARDS_PER_DOC)]
    run = await storage.create_run(docs, name="search")
    for i, upload in enumerate(await storage.list_uploads(run.id)):
        first = i * CARDS_PER_DOC
        drafts = [card(first + k, total) for k in range(CARDS_PER_DOC)]
        assert await storage.complete_upload(upload.id, drafts)
    return run.id


async def median_ms(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await call()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def measure(storage: Storage, run_id: str, repeat: int) -> dict[str, dict[str, float]]:
    uploads = await storage.list_uploads(run_id)
    deep_upload = uploads[len(uploads) * 9 // 10]
    # A cursor 90% into the run, got through the API: one card of a deep upload.
    marker = await storage.search_cards(run_id, upload_id=deep_upload.id, limit=1)
    deep = marker.next_cursor
    assert deep is not None
    queries: dict[str, dict[str, str]] = {
        "first_page": {},
        "deep_page": {"after": deep},
        "rare_word": {"text": RARE},
        "common_word": {"text": COMMON},
        "common_word_deep": {"text": COMMON, "after": deep},
        "two_words": {"text": "glacier orb"},
        "tag": {"tag": TAG},
    }
    found = await storage.search_cards(run_id, text=RARE)
    assert len(found.cards) == 1, found
    app = create_app(storage)
    storage_ms: dict[str, float] = {}
    http_ms: dict[str, float] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        for name, q in queries.items():
            storage_ms[name] = await median_ms(
                lambda q=q: storage.search_cards(run_id, **q),  # type: ignore[misc]
                repeat,
            )
            params = {("q" if k == "text" else k): v for k, v in q.items()}

            async def get(params: dict[str, str] = params) -> None:
                response = await client.get(f"/runs/{run_id}/cards", params=params)
                assert response.status_code == 200, response.text[:200]

            http_ms[name] = await median_ms(get, repeat)
    return {"storage": storage_ms, "http": http_ms}


@asynccontextmanager
async def postgres() -> AsyncIterator[tuple[Storage, str] | None]:
    try:
        import psycopg

        with psycopg.connect(DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception:  # no driver or no server: the PostgreSQL rows are left out
        yield None
        return
    schema = f"bench_{secrets.token_hex(4)}"
    try:
        async with PostgresStorage.open(DSN, schema=schema) as storage:
            yield storage, schema
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def analyze(schema: str) -> None:
    """What autovacuum does within a minute of a load this size: the planner's statistics."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{schema}".cards, "{schema}".uploads')


async def bench(total: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "search", "cards": total}
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStorage.open(Path(tmp) / "search.db") as sqlite:
            start = time.perf_counter()
            run_id = await fill(sqlite, total)
            out["sqlite_fill_s"] = round(time.perf_counter() - start, 1)
            got = await measure(sqlite, run_id, repeat)
            out["sqlite"], out["sqlite_http"] = got["storage"], got["http"]
    async with postgres() as opened:
        if opened is not None:
            pg, schema = opened
            start = time.perf_counter()
            run_id = await fill(pg, total)
            out["postgres_fill_s"] = round(time.perf_counter() - start, 1)
            await trio.to_thread.run_sync(analyze, schema)
            got = await measure(pg, run_id, repeat)
            out["postgres"], out["postgres_http"] = got["storage"], got["http"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 cards")
    args = parser.parse_args()
    total, repeat = (2_000, 3) if args.quick else (100_000, 7)
    result = trio.run(bench, total, repeat)
    columns = [k for k in ("sqlite", "sqlite_http", "postgres", "postgres_http") if k in result]
    print(f"{total:,} cards; median ms of {repeat} runs")
    print(f"{'query':<18}" + "".join(f"{c:>15}" for c in columns))
    for name in result["sqlite"]:
        print(f"{name:<18}" + "".join(f"{result[c][name]:>15.1f}" for c in columns))
    for c in ("sqlite", "postgres"):
        if f"{c}_fill_s" in result:
            print(f"{'stored in (' + c + ')':<18}{result[c + '_fill_s']:>15.1f} s")
    rounded = {
        k: {q: round(ms, 2) for q, ms in v.items()} if isinstance(v, dict) else v
        for k, v in result.items()
    }
    print(json.dumps(rounded))


if __name__ == "__main__":
    main()
