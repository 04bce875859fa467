"""A search request's work is bounded by the viewer whatever its query string says, and
stops when its client leaves. Counted in storage calls and checked cards, not timed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import httpx
import trio
import trio.testing

from cardmill import CardDraft, Document, MemoryStorage, SQLiteStorage
from cardmill.model import Card, CardPage
from cardmill.storage import Storage
from cardmill.storage._search import CardFilter
from cardmill.web import create_app
from cardmill.web._search import MAX_PAGE_WITHOUT_CURSOR

from ..storage.test_contract_search import PEOPLE
from .conftest import doc, settle


class Counting:
    """A storage that counts its searches."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.searches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def search_cards(self, run_id: str, **query: Any) -> CardPage:
        self.searches += 1
        return await self._inner.search_cards(run_id, **query)


async def test_a_deep_page_without_a_cursor_is_refused_before_any_search() -> None:
    storage = MemoryStorage()
    run = await storage.create_run([doc(f"d{i}.md") for i in range(6)])
    cards = [CardDraft(f"c{i}", "b") for i in range(250)]
    await settle(storage, run, {f"d{i}.md": cards for i in range(6)})  # 30 pages
    counting = Counting(storage)
    app = create_app(cast(Storage, counting))
    path = f"/runs/{run.id}/cards"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:

        async def work(**params: object) -> tuple[int, int, str]:
            counting.searches = 0
            answer = await client.get(path, params=params)  # type: ignore[arg-type]
            return answer.status_code, counting.searches, answer.text

        assert (await work(page=1))[:2] == (200, 1)
        code, searches, text = await work(page=400)
        assert (code, searches) == (400, 0)
        assert "page 400 of a search is reached with the next links" in text
        assert (await work(page=MAX_PAGE_WITHOUT_CURSOR))[:2] == (200, MAX_PAGE_WITHOUT_CURSOR)
        assert (await work(page=MAX_PAGE_WITHOUT_CURSOR + 1))[:2] == (400, 0)
        # With the cursor its link carries, any page is one search.
        page = await storage.search_cards(run.id, limit=50)
        for _ in range(MAX_PAGE_WITHOUT_CURSOR + 1):
            assert page.next_cursor is not None
            page = await storage.search_cards(run.id, limit=50, after=page.next_cursor)
        code, searches, text = await work(page=MAX_PAGE_WITHOUT_CURSOR + 3, after=page.next_cursor)
        assert (code, searches) == (200, 1)
        # Its way back is the first page, not a previous page it could not reach.
        assert f"page={MAX_PAGE_WITHOUT_CURSOR + 2}" not in text
        assert "first page" in text


async def test_a_search_stops_when_its_client_leaves(tmp_path: Path, monkeypatch: Any) -> None:
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
        app = create_app(storage)
        gone = trio.Event()
        sent: list[dict[str, Any]] = []
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/runs/{run.id}/cards",
            "raw_path": f"/runs/{run.id}/cards".encode(),
            # No card holds 2: a search to the end would check all 1,200.
            "query_string": b"field=age&value=2",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, scope, receive, send)  # type: ignore[arg-type]
                await trio.to_thread.run_sync(entered.wait)
                gone.set()
                await trio.testing.wait_all_tasks_blocked()
                release.set()
        finally:
            release.set()
        # The card being checked when the stop came is the last.
        assert len(checked) == 1
        monkeypatch.setattr(CardFilter, "matches", plain)
        # The storage's thread is free for the next request.
        page = await storage.search_cards(run.id, field=("age", "1"), limit=3)
        assert [c.title for c in page.cards] == ["p0", "p1", "p2"]


class CountingUploads:
    """A storage that counts the uploads it reads, and can hold a read of them until
    it is cancelled (``hold``): ``entered`` is set once a held read starts."""

    def __init__(self, inner: Storage, *, hold: str = "") -> None:
        self._inner = inner
        self.read = 0
        self.hold = hold
        self.entered = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _held(self, name: str) -> None:
        if self.hold == name:
            self.entered.set()
            await trio.sleep_forever()

    def iter_uploads(self, run_id: str, **kwargs: Any) -> Any:
        inner = self._inner.iter_uploads(run_id, **kwargs)
        outer = self

        class Counted:
            # A plain iterator, as the storage's own: one dropped half-way needs no closing.
            def __aiter__(self) -> Counted:
                return self

            async def __anext__(self) -> Any:
                await outer._held("iter_uploads")
                upload = await anext(inner)
                outer.read += 1
                return upload

        return Counted()

    async def get_uploads(self, run_id: str, upload_ids: Any) -> Any:
        await self._held("get_uploads")
        found = await self._inner.get_uploads(run_id, upload_ids)
        self.read += len(found)
        return found


async def _long_run(storage: MemoryStorage) -> tuple[str, str]:
    """A run of 3,000 uploads whose only cards are those of its last: its id, and the
    last upload's id."""
    run = await storage.create_run([doc(f"d{i:04}.md") for i in range(3000)])
    last = (await storage.list_uploads(run.id))[-1]
    assert await storage.complete_upload(last.id, [CardDraft("deep tide", "b")])
    return run.id, last.id


async def test_the_cards_page_reads_the_uploads_it_names_not_the_whole_run() -> None:
    storage = MemoryStorage()
    run_id, last_id = await _long_run(storage)
    counting = CountingUploads(storage)
    app = create_app(cast(Storage, counting))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        for params, shown in [
            ({"upload": "no such upload"}, False),
            ({"upload": "no such upload", "after": "2990:0"}, False),
            ({"q": "deep"}, True),
            ({"upload": last_id}, True),
        ]:
            counting.read = 0
            answer = await client.get(f"/runs/{run_id}/cards", params=params)
            assert answer.status_code == 200, params
            # The document menu's one read, and the page's own uploads: not 3,000.
            assert counting.read <= 2_000 + 1, (params, counting.read)
            assert ("deep tide" in answer.text) is shown, params
            if shown:
                # The card names its document, though it lies past what the menu reads.
                assert "d2999.md" in answer.text, params


async def _left_early(app: Any, path: str, query: bytes, counting: CountingUploads) -> list[Any]:
    """Ask ``path`` and leave while the storage read that ``counting`` holds is going:
    what the app sent by the time every task is blocked (nothing still waiting)."""
    gone = trio.Event()
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    finished = False

    async def ask() -> None:
        nonlocal finished
        await app(scope, receive, send)
        finished = True
        counting.entered.set()  # an app that never reads what is held wakes the test too

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await counting.entered.wait()
        gone.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert finished, f"{path} still reading after its client left"
    return sent


async def test_the_cards_page_stops_reading_uploads_when_its_client_leaves() -> None:
    storage = MemoryStorage()
    run_id, _ = await _long_run(storage)
    for held in ("get_uploads", "iter_uploads"):
        counting = CountingUploads(storage, hold=held)
        app = create_app(cast(Storage, counting))
        sent = await _left_early(app, f"/runs/{run_id}/cards", b"q=deep", counting)
        assert sent[0]["status"] == 499, held


async def test_the_run_page_stops_reading_uploads_when_its_client_leaves() -> None:
    storage = MemoryStorage()
    run_id, _ = await _long_run(storage)
    counting = CountingUploads(storage, hold="iter_uploads")
    app = create_app(cast(Storage, counting))
    sent = await _left_early(app, f"/runs/{run_id}", b"", counting)
    assert sent[0]["status"] == 499
