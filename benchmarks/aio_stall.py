"""The asyncio loop beside a busy cardmill.aio run: how long a 10 ms ticker waits.

    python benchmarks/aio_stall.py --quick    # 1,000 uploads
    python benchmarks/aio_stall.py            # 5,000 uploads, and PDFs read offline

A ticker sleeps 10 ms in a loop on the asyncio loop and records how late each tick
wakes. It runs, side by side in one process: on an idle loop (the machine's own noise),
beside `cardmill.aio.analyze` of many small documents answered at once (the most
scheduler work per second the engine can make, SQLite writes in its thread), beside an
offline run that reads PDFs (in worker processes), and beside the naive
``trio.run`` called inside a coroutine, which blocks the loop for the whole run.
Uploads per second through `cardmill.aio` are set against the same run under
``trio.run``: the cost of guest mode.
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package (httpx needs it).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import trio

import cardmill
import cardmill.aio
from cardmill import CardDraft, Document, Usage
from cardmill.providers import Analysis
from cardmill.testing import make_pdf

CARDS = tuple(CardDraft(f"card {i}", "a body of a card " * 8, ("tag",)) for i in range(5))
TICK = 0.01


class Instant:
    """A provider that answers at once with five cards."""

    name = "instant"

    async def analyze(self, document: Document) -> Analysis:
        await trio.lowlevel.checkpoint()
        return Analysis(CARDS, Usage())


def documents(n: int) -> Iterator[Document]:
    for i in range(n):
        yield Document(f"doc{i:06d}.md", f"# Doc {i}\n\nSome text of doc {i}.\n".encode())


def pdfs(n: int) -> Iterator[Document]:
    for i in range(n):
        text = [f"Page {p} of document {i}: the tides follow the moon." for p in range(3)]
        yield Document(f"doc{i:04d}.pdf", make_pdf([[line] for line in text]), "application/pdf")


async def ticked(work: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """Run ``work`` beside a 10 ms ticker: how late the ticks were, and how long it took."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            late.append(time.perf_counter() - start - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is waiting before the work starts
    start = time.perf_counter()
    try:
        await work()
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        await task
    late.sort()
    return {
        "ticks": len(late),
        "expected_ticks": round(elapsed / TICK),
        "worst_stall_ms": round(late[-1] * 1000, 2) if late else round(elapsed * 1000, 2),
        "p99_stall_ms": round(late[int(len(late) * 0.99)] * 1000, 2) if late else 0.0,
        "median_stall_ms": round(statistics.median(late) * 1000, 2) if late else 0.0,
        "elapsed_s": round(elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for CI")
    args = parser.parse_args()
    n = 1_000 if args.quick else 5_000
    n_pdfs = 20 if args.quick else 200
    where = Path(tempfile.mkdtemp())
    results: dict[str, object] = {"benchmark": "aio_stall", "uploads": n, "pdfs": n_pdfs}
    rates: dict[str, float] = {}

    async def scenarios() -> None:
        results["idle"] = await ticked(lambda: asyncio.sleep(1.0 if args.quick else 3.0))

        async def busy() -> None:
            summary = await cardmill.aio.analyze(
                documents(n), db=str(where / "busy.db"), provider=Instant()
            )
            assert summary.run.completed_items == n
            rates["aio"] = n / summary.elapsed

        results["busy"] = await ticked(busy)

        async def offline_pdfs() -> None:
            summary = await cardmill.aio.analyze(
                pdfs(n_pdfs), db=str(where / "pdfs.db"), provider="extractive"
            )
            assert summary.run.completed_items == n_pdfs, summary.run

        results["pdfs_offline"] = await ticked(offline_pdfs)

        async def blocking() -> None:
            await _blocking_trio_run(where / "blocking.db", n)

        results["trio_run_inside_a_coroutine"] = await ticked(blocking)

    asyncio.run(scenarios())
    rates["trio"] = trio.run(_trio_rate, where / "trio.db", n)
    results["aio_uploads_per_s"] = round(rates["aio"], 1)
    results["trio_uploads_per_s"] = round(rates["trio"], 1)
    results["guest_vs_trio_ratio"] = round(rates["aio"] / rates["trio"], 3)
    busy = results["busy"]
    idle = results["idle"]
    assert isinstance(busy, dict)
    assert isinstance(idle, dict)
    results["worst_stall_ms"] = busy["worst_stall_ms"]
    results["idle_worst_stall_ms"] = idle["worst_stall_ms"]
    print(json.dumps(results))


async def _blocking_trio_run(db: Path, n: int) -> None:
    # What a user who does not know cardmill.aio writes: the loop waits for all of it.
    async def run() -> None:
        async with cardmill.SQLiteStorage.open(db) as storage:
            made = await storage.create_run(documents(n))
            await cardmill.Engine(storage, Instant()).execute(made.id)

    trio.run(run)
    await asyncio.sleep(0)


async def _trio_rate(db: Path, n: int) -> float:
    async with cardmill.SQLiteStorage.open(db) as storage:
        run = await storage.create_run(documents(n))
        summary = await cardmill.Engine(storage, Instant()).execute(run.id)
        return n / summary.elapsed


if __name__ == "__main__":
    main()
