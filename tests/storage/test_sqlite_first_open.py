"""A new SQLite database opened by several threads and processes at the same moment:
each gets the one database, none "not a cardmill database" or "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio

from cardmill import Document, SQLiteStorage
from cardmill.cli._dbpath import check_sqlite_path


def _open_and_use(db: Path, start: threading.Barrier, errors: list[BaseException]) -> None:
    async def use() -> None:
        check_sqlite_path(str(db), create=True)  # as the CLI does, a moment before
        async with SQLiteStorage.open(db) as storage:
            await storage.create_run([Document("a.md", b"# A\n\nText.\n")])

    try:
        start.wait()
        trio.run(use)
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("attempt", range(8))
def test_threads_opening_a_new_database_at_once(tmp_path: Path, attempt: int) -> None:
    db = tmp_path / f"new-{attempt}.db"
    errors: list[BaseException] = []
    start = threading.Barrier(6)
    threads = [threading.Thread(target=_open_and_use, args=(db, start, errors)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    async def runs() -> int:
        async with SQLiteStorage.open(db) as storage:
            return len(await storage.list_runs())

    assert trio.run(runs) == 6


CHILD = """
import sys, trio
from cardmill import Document, SQLiteStorage
from cardmill.cli._dbpath import check_sqlite_path

async def main():
    check_sqlite_path(sys.argv[1], create=True)
    async with SQLiteStorage.open(sys.argv[1]) as storage:
        await storage.create_run([Document("a.md", b"# A\\n\\nText.\\n")])

trio.run(main)
"""


def test_processes_opening_a_new_database_at_once(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
