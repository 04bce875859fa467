"""Child process for the ingest crash test: creates a run and stops reading mid-way.

Usage: python ingest_child.py DATABASE
Writes runs in chunks of four documents; when asked for the eleventh document (two chunks
committed, a third being read) it prints "reading" and waits to be killed.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import trio

from cardmill import Document, SQLiteStorage
from cardmill.storage._sqlbackend import SQLBackend


def documents() -> Iterator[Document]:
    for i in range(20):
        if i == 10:
            print("reading", flush=True)
            threading.Event().wait()
        yield Document(f"{i}.txt", f"document {i}".encode())


async def main(path: str) -> None:
    SQLBackend._chunk_rows = 4
    async with SQLiteStorage.open(path) as storage:
        await storage.create_run(documents())


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
