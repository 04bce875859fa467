"""What the asyncio tests share: documents, a provider that says where it is, checks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import trio

import cardmill
from cardmill.testing import ScriptedProvider, Step, check_invariants


def documents(count: int) -> list[cardmill.Document]:
    return [
        cardmill.Document(f"doc-{i:02}.md", f"# Doc {i}\n\nSentence {i} of text.\n".encode())
        for i in range(count)
    ]


def scripted(latency: float = 0.005) -> ScriptedProvider:
    return ScriptedProvider(default=Step(latency=latency, cards=2))


def check(db: Path, run_id: str) -> cardmill.Run:
    """The storage invariants of the run, checked in a trio run of their own."""

    async def read() -> cardmill.Run:
        async with cardmill.SQLiteStorage.open(db) as storage:
            await check_invariants(storage, run_id)
            return await storage.get_run(run_id)

    return trio.run(read)


class Ticker:
    """A 10 ms asyncio ticker: how often it ran, and the longest it waited past its time."""

    def __init__(self) -> None:
        self.ticks = 0
        self.worst = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.01)
            last = now
            self.ticks += 1

    def stop(self) -> None:
        self._stop.set()
