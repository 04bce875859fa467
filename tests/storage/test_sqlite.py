"""What only the SQLite backend promises: a recognisable, versioned, shared file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from cardmill import CardDraft, DatabaseError, Document, SQLiteStorage, StorageError
from cardmill.testing import check_invariants


async def test_new_file_is_wal_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with SQLiteStorage.open(path) as storage:
        assert storage.path == str(path)
        await storage.create_run([Document("a.txt", b"a")])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x43524D4C
    conn.close()


async def test_text_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not sqlite at all\n" * 100)
    with pytest.raises(DatabaseError, match="not a cardmill database"):
        async with SQLiteStorage.open(path):
            pass


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match=r"other\.db: not a cardmill database"):
        async with SQLiteStorage.open(path):
            pass


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SQLiteStorage.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DatabaseError, match="newer cardmill"):
        async with SQLiteStorage.open(path):
            pass


async def test_directory_and_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="is a directory"):
        async with SQLiteStorage.open(tmp_path):
            pass
    with pytest.raises(DatabaseError, match="cannot open"):
        async with SQLiteStorage.open(tmp_path / "missing" / "x.db"):
            pass


async def test_closed_storage_says_so(tmp_path: Path) -> None:
    storage = await SQLiteStorage.connect(tmp_path / "c.db")
    await storage.aclose()
    await storage.aclose()
    with pytest.raises(StorageError, match="closed"):
        await storage.list_runs()


async def test_cards_unique_per_upload_and_ordinal_in_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    async with SQLiteStorage.open(path) as storage:
        run = await storage.create_run([Document("a.txt", b"a")])
        (u,) = await storage.list_uploads(run.id)
        await storage.complete_upload(u.id, [CardDraft("t", "b")])
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO cards (upload_id, ordinal, title, body, tags, created_at)"
            " VALUES (?, 0, 'x', 'y', '[]', 0)",
            (u.id,),
        )
    conn.close()


async def test_two_connections_share_one_run(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteStorage.open(path) as a, SQLiteStorage.open(path) as b:
        run = await a.create_run([Document(f"{i}.txt", b"x") for i in range(40)])
        done: list[str] = []

        async def work(storage: SQLiteStorage, worker: str) -> None:
            while u := await storage.claim_upload(run.id, worker=worker, lease_seconds=60):
                assert await storage.complete_upload(u.id, [CardDraft("t", "b")], worker=worker)
                done.append(u.id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(work, a, "a")
            nursery.start_soon(work, b, "b")
        assert len(done) == len(set(done)) == 40
        await check_invariants(b, run.id)


def fts_is_whole(path: Path) -> None:
    """FTS5's own check: the index holds exactly the words of the cards table."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO cards_fts(cards_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()


async def test_the_search_index_follows_the_cards_through_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "search.db"
    async with SQLiteStorage.open(path) as storage:
        gone = await storage.create_run([Document("a.txt", b"a")])
        run = await storage.create_run([Document("b.txt", b"b"), Document("c.txt", b"c")])
        (a,) = await storage.list_uploads(gone.id)
        b, c = await storage.list_uploads(run.id)
        assert await storage.complete_upload(a.id, [CardDraft("zebra", "x")] * 5)
        assert await storage.complete_upload(b.id, [CardDraft("moon", "tide")])
        assert await storage.complete_upload(c.id, [CardDraft("sun", "moonrise")])
    fts_is_whole(path)
    # Rows deleted by hand leave gaps; VACUUM renumbers implicit rowids, never `seq`.
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM cards WHERE upload_id = ?", (a.id,))
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    fts_is_whole(path)
    async with SQLiteStorage.open(path) as storage:
        found = await storage.search_cards(run.id, text="moon")
        assert [card.title for card in found.cards] == ["moon", "sun"]
        assert (await storage.search_cards(run.id, text="tide")).cards[0].title == "moon"
        assert (await storage.search_cards(gone.id, text="zebra")).cards == ()
