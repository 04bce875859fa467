"""Reuse: the second run of a folder with 1% of it changed, against the first run.

A folder of N distinct text files goes through the real ``anthropic`` SDK
(`AnthropicProvider`) to `FakeAnthropicServer` on 127.0.0.1, answering after ~100 ms
(lognormal), with `Engine` (concurrency 8) and a `SQLiteStorage` in a temporary
directory. Then 1% of the files are rewritten and the same N names make a second run
in the same database: its unchanged uploads are completed from the first run's answers
(reuse, on by default), and only the changed ones are sent. Requests are counted at the
server; cost is each request's reported usage at cardmill's default price table. Wall
time covers reading the folder, creating the run and executing it.

Then what reuse costs a first run, where nothing can be reused: fresh runs of the same
documents with the offline `ExtractiveProvider` (which answers at once, so the storage's
writes are all there is) with reuse on and off, side by side, alternating.

    python benchmarks/reuse.py --quick
    python benchmarks/reuse.py
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package, which httpx
# imports: keep this folder off the path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import attrs
import trio

from cardmill import Document, Engine, ExtractiveProvider, SQLiteStorage
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer, check_invariants, lognormal

KEY = "fake-key-bench-reuse"


@attrs.frozen
class Measured:
    """One run, as the server and the stored run saw it."""

    server_requests: int
    requests: int
    reused: int
    cost_usd: float
    saved_cost_usd: float
    wall_s: float
    #: of ``wall_s``, the time in ``Engine.execute`` (the rest: reading, creating the run)
    execute_s: float
    #: the revision markers of the documents the server was sent
    sent: frozenset[str]


def write_folder(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):
        path = folder / f"note-{i:04d}.txt"
        path.write_text(
            f"Note {i}\n\nA short note on topic {i % 37}, number {i} of {n}. "
            f"It says something of its own: {i * 7919 % 10007} is its figure.\n"
        )
        paths.append(path)
    return paths


def read_folder(folder: Path) -> list[Document]:
    return [Document.from_path(p, name=p.name) for p in sorted(folder.iterdir())]


def change(paths: list[Path], count: int) -> list[int]:
    """Rewrite ``count`` of the files, spread over the folder; their indexes."""
    step = len(paths) // count
    changed = [k * step for k in range(count)]
    for i in changed:
        with paths[i].open("a") as f:
            f.write(f"Revised: revision-{i:04d}.\n")
    return changed


async def one_run(
    server: FakeAnthropicServer, db: Path, folder: Path, concurrency: int
) -> Measured:
    before = len(server.requests)
    async with SQLiteStorage.open(db) as storage:
        async with AnthropicProvider(api_key=KEY, base_url=server.url) as provider:
            start = time.perf_counter()
            docs = await trio.to_thread.run_sync(read_folder, folder)
            run = await storage.create_run(docs)
            created = time.perf_counter()
            summary = await Engine(
                storage, provider, concurrency=concurrency, rng=random.Random(1)
            ).execute(run.id)
            end = time.perf_counter()
        await check_invariants(storage, run.id)
    seen = server.requests[before:]
    assert summary.run.completed_items == len(docs), summary.run
    assert all(r.status == 200 for r in seen), [r.status for r in seen if r.status != 200]
    sent = frozenset(m for r in seen for m in re.findall(r"revision-\d+", json.dumps(r.body)))
    assert summary.reused == summary.run.reused_items, (summary.reused, summary.run)
    return Measured(
        server_requests=len(seen),
        requests=summary.run.requests,
        reused=summary.run.reused_items,
        cost_usd=summary.run.cost_usd,
        saved_cost_usd=summary.run.saved_cost_usd,
        wall_s=end - start,
        execute_s=end - created,
        sent=sent,
    )


async def measure(n: int, latency: float, concurrency: int) -> tuple[Measured, Measured, int]:
    with tempfile.TemporaryDirectory() as directory:
        where = Path(directory)
        folder, db = where / "notes", where / "cardmill.db"
        paths = write_folder(folder, n)
        async with FakeAnthropicServer(
            latency=lognormal(latency, 0.3), api_key=KEY, seed=3
        ) as server:
            first = await one_run(server, db, folder, concurrency)
            changed = change(paths, max(1, n // 100))
            second = await one_run(server, db, folder, concurrency)
    # Correctness, not speed: run 1 sent everything, run 2 exactly the changed files.
    assert first.server_requests == first.requests == n, first
    assert first.reused == 0, first
    assert first.cost_usd > 0, first
    assert second.server_requests == second.requests == len(changed), second
    assert second.reused == n - len(changed), second
    assert second.sent == {f"revision-{i:04d}" for i in changed}, second.sent
    assert second.saved_cost_usd > 0, second
    return first, second, len(changed)


async def offline_rate(documents: list[Document], reuse: bool) -> float:
    """Uploads per second of a fresh run of ``documents``, offline, in a new database."""
    with tempfile.TemporaryDirectory() as directory:
        async with SQLiteStorage.open(Path(directory) / "fresh.db") as storage:
            run = await storage.create_run(documents)
            started = time.perf_counter()
            summary = await Engine(storage, ExtractiveProvider(), reuse=reuse).execute(run.id)
            elapsed = time.perf_counter() - started
            assert summary.completed == len(documents), summary
            assert summary.reused == 0, summary
            return len(documents) / elapsed


async def overhead(n: int, rounds: int) -> tuple[float, float]:
    """The best offline rate of ``rounds`` fresh runs with reuse on, and off."""
    documents = [
        Document(f"d{i:05d}.md", f"# Note {i}\n\nThe {i}th note says one thing.\n".encode())
        for i in range(n)
    ]
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        on.append(await offline_rate(documents, True))
        off.append(await offline_rate(documents, False))
    return max(on), max(off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--latency", type=float, default=0.1, help="median seconds")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    n = args.docs or (200 if args.quick else 1000)
    if n < 100:
        parser.error("--docs must be >= 100 (1% of them are changed)")
    first, second, changed = trio.run(measure, n, args.latency, args.concurrency)
    rate_on, rate_off = trio.run(overhead, n, 2 if args.quick else 3)
    print(f"{'documents':<30} {n}, {changed} changed before run 2")
    print(
        f"{'provider':<30} FakeAnthropicServer, ~{args.latency * 1000:.0f} ms, "
        f"concurrency {args.concurrency}"
    )
    print(f"{'':<30} {'run 1':>12} {'run 2':>12} {'run 2/run 1':>12}")
    ratios = {
        "requests": second.server_requests / first.server_requests,
        "cost": second.cost_usd / first.cost_usd,
        "wall": second.wall_s / first.wall_s,
    }
    print(
        f"{'requests at the server':<30} {first.server_requests:>12} "
        f"{second.server_requests:>12} {ratios['requests']:>12.4f}"
    )
    print(f"{'run.requests':<30} {first.requests:>12} {second.requests:>12}")
    print(f"{'reused uploads':<30} {first.reused:>12} {second.reused:>12}")
    print(
        f"{'cost_usd':<30} {first.cost_usd:>12.6f} {second.cost_usd:>12.6f} {ratios['cost']:>12.4f}"
    )
    print(f"{'saved_cost_usd':<30} {first.saved_cost_usd:>12.6f} {second.saved_cost_usd:>12.6f}")
    print(
        f"{'wall time (s)':<30} {first.wall_s:>12.2f} {second.wall_s:>12.2f} "
        f"{ratios['wall']:>12.4f}"
    )
    print(
        f"{'  of which Engine.execute (s)':<30} {first.execute_s:>12.2f} {second.execute_s:>12.2f}"
    )
    print(
        f"{'first run offline, uploads/s':<30} {rate_on:>12.0f} {rate_off:>12.0f} "
        f"{rate_on / rate_off:>12.4f}  (reuse on, off, on/off)"
    )
    print(
        json.dumps(
            {
                "benchmark": "reuse",
                "documents": n,
                "changed": changed,
                "run1_server_requests": first.server_requests,
                "run2_server_requests": second.server_requests,
                "run2_reused": second.reused,
                "run1_cost_usd": round(first.cost_usd, 6),
                "run2_cost_usd": round(second.cost_usd, 6),
                "run2_saved_cost_usd": round(second.saved_cost_usd, 6),
                "run1_wall_s": round(first.wall_s, 3),
                "run2_wall_s": round(second.wall_s, 3),
                "run1_execute_s": round(first.execute_s, 3),
                "run2_execute_s": round(second.execute_s, 3),
                "requests_ratio": round(ratios["requests"], 4),
                "cost_ratio": round(ratios["cost"], 4),
                "wall_ratio": round(ratios["wall"], 4),
                "offline_fresh_uploads_per_s_reuse_on": round(rate_on, 1),
                "offline_fresh_uploads_per_s_reuse_off": round(rate_off, 1),
                "offline_fresh_on_off_ratio": round(rate_on / rate_off, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
