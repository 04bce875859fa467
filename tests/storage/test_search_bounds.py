"""What one search reads is bounded whatever the query, and stops when its caller leaves.

Work is counted, never timed: SQLite's progress handler looks at the search's `Stop`
every few virtual machine steps, so its looks measure what a statement did; the cards
the search checks one by one are counted where they are checked.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from cardmill import CardDraft, Document, SQLiteStorage
from cardmill.model import Card
from cardmill.storage import _search, _sqlbackend, _sqlite, _stop
from cardmill.storage._search import CardFilter
from cardmill.storage._sqlite import SQLiteTx
from cardmill.storage._stop import Stop, Stopped

from .test_contract_search import PEOPLE


async def moon_run(storage: SQLiteStorage, cards: int) -> str:
    """A run whose every card holds the word "moon", 100 cards a document."""
    documents = [Document(f"d{i}.md", f"doc {i}".encode()) for i in range(cards // 100)]
    run = await storage.create_run(documents)
    for n, upload in enumerate(await storage.list_uploads(run.id)):
        drafts = [CardDraft(f"moon {n}.{i}", "the moon and the sea") for i in range(100)]
        assert await storage.complete_upload(upload.id, drafts)
    return run.id


def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Stop]:
    """The `Stop` of every search from now on."""
    made: list[Stop] = []

    async def recording(call: Callable[[Stop], Awaitable[Any]]) -> Any:
        stop = Stop()
        made.append(stop)
        return await call(stop)

    monkeypatch.setattr(_sqlbackend, "stoppable", recording)
    monkeypatch.setattr(_sqlite, "PROGRESS_STEPS", 50)
    return made


async def first_page_work(path: Path, cards: int, made: list[Stop]) -> int:
    """The work of the first page of "moon", on a new database of ``cards`` cards."""
    async with SQLiteStorage.open(path) as storage:
        run_id = await moon_run(storage, cards)
        page = await storage.search_cards(run_id, text="moon", limit=10)
        assert [c.title for c in page.cards] == [f"moon 0.{i}" for i in range(10)]
        assert page.next_cursor is not None
    return made[-1].looks


async def test_a_word_most_cards_hold_reads_a_page_not_every_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = recorded(monkeypatch)
    monkeypatch.setattr(_search, "INDEX_BUDGET", 50)
    small = await first_page_work(tmp_path / "small.db", 200, made)
    large = await first_page_work(tmp_path / "large.db", 1600, made)
    # Eight times the matches, about the same work: the index is asked for 51 at most.
    assert large < 1.5 * small
    # The counter does see work grow: sorting every match into the run's order, as a
    # budget without bound would, reads all of them.
    monkeypatch.setattr(_search, "INDEX_BUDGET", 10**9)
    every_small = await first_page_work(tmp_path / "every-small.db", 200, made)
    every_large = await first_page_work(tmp_path / "every-large.db", 1600, made)
    assert every_large > 4 * every_small


async def test_a_statement_stops_once_its_stop_is_set() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n"
    stop = Stop()
    tx = SQLiteTx(conn)

    def count(row: int) -> int:
        if row == 10_000:
            stop.set()  # as the event loop would, from another thread
        return row

    conn.create_function("seen", 1, count)
    with pytest.raises(Stopped), tx.watch(stop):
        tx.all(f"SELECT count(seen(i)) FROM ({endless})")
    assert stop.looks > 0
    # The handler is gone with the watch: the connection works as before.
    assert tx.one("SELECT count(*) FROM (SELECT 1 UNION ALL SELECT 2)") == (2,)
    with tx.watch(Stop()):
        assert tx.one(
            "SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
            " SELECT i + 1 FROM n WHERE i < 100000) SELECT i FROM n)"
        ) == (100_000,)
    conn.close()


async def test_a_cancelled_search_stops_its_read_and_frees_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteStorage.open(tmp_path / "c.db") as storage:
        run = await storage.create_run(
            [Document(f"p{i}.md", b"people") for i in range(4)], recipe=PEOPLE
        )
        for upload in await storage.list_uploads(run.id):
            people = [PEOPLE.draft({"person": f"p{i}", "age": 1}) for i in range(300)]
            assert await storage.complete_upload(upload.id, people)
        checked: list[str] = []
        entered, release = threading.Event(), threading.Event()
        plain = CardFilter.matches

        def matches(self: CardFilter, card: Card) -> bool:
            checked.append(card.title)
            if len(checked) == 1:
                entered.set()
                release.wait()
            return plain(self, card)

        monkeypatch.setattr(CardFilter, "matches", matches)
        scope = trio.CancelScope()

        async def search() -> None:
            with scope:
                # No card holds 2: without a stop it would check all 1,200.
                await storage.search_cards(run.id, field=("age", "2"), limit=10)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(search)
                await trio.to_thread.run_sync(entered.wait)
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                release.set()
        finally:
            release.set()
        assert scope.cancelled_caught
        # The card being checked when the stop came is the last.
        assert len(checked) == 1
        monkeypatch.setattr(CardFilter, "matches", plain)
        page = await storage.search_cards(run.id, field=("age", "1"), limit=3)
        assert [c.title for c in page.cards] == ["p0", "p1", "p2"]


async def test_a_search_finishing_normally_is_not_stopped(tmp_path: Path) -> None:
    async with SQLiteStorage.open(tmp_path / "c.db") as storage:
        run_id = await moon_run(storage, 100)
        with trio.testing.assert_checkpoints():
            page = await storage.search_cards(run_id, text="moon", limit=500)
        assert len(page.cards) == 100
        assert page.next_cursor is None
    assert _stop.PROGRESS_STEPS >= 100
