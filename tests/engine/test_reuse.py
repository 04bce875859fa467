"""Reuse in the engine: an upload whose key was answered before is completed without a
request, in the same one-transaction settle; counters equal the persisted cards."""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from cardmill import (
    Analysis,
    CardDraft,
    Document,
    MemoryStorage,
    SQLiteStorage,
    Storage,
    UploadStatus,
    Usage,
)
from cardmill.engine import Engine, UploadCompleted, answer_key
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .conftest import docs


class ContentProvider:
    """Answers each document with one card naming its content, and counts requests."""

    name = "content"
    model = "content-1"

    def __init__(self, version: str = "v1", latency: float = 0.01) -> None:
        self.version = version
        self.latency = latency
        self.calls: Counter[str] = Counter()

    def request_fingerprint(self) -> str:
        return f"{self.name}:{self.model}:{self.version}"

    async def analyze(self, document: Document) -> Analysis:
        self.calls[document.name] += 1
        await trio.sleep(self.latency)
        digest = hashlib.sha256(document.data).hexdigest()[:16]
        return Analysis((CardDraft(f"card of {digest}", "body"),), Usage(100, 10))


def doc(name: str, text: str) -> Document:
    return Document(name, text.encode(), "text/plain")


async def run_of(storage: Storage, documents: list[Document], provider: object, **kw: object):  # type: ignore[no-untyped-def]
    run = await storage.create_run(documents)
    engine = Engine(storage, provider, poll_interval=0.01, **kw)  # type: ignore[arg-type]
    return await engine.execute(run.id)


async def test_a_folder_run_again_pays_only_for_what_changed(storage: Storage) -> None:
    provider = ContentProvider()
    first = [doc(f"{i}.txt", f"note {i}") for i in range(6)]
    one = await run_of(storage, first, provider)
    assert (one.requests, one.reused, one.run.reused_items) == (6, 0, 0)
    # Three added, one changed: four requests, five copies.
    second = [
        *first[:5],
        doc("5.txt", "note 5, changed"),
        *(doc(f"n{i}", f"new {i}") for i in range(3)),
    ]
    provider.calls.clear()
    two = await run_of(storage, second, provider)
    assert sorted(provider.calls) == ["5.txt", "n0", "n1", "n2"]
    assert (two.requests, two.reused, two.completed) == (4, 5, 9)
    assert (two.run.reused_items, two.run.saved_tokens) == (5, 5 * 110)
    await check_invariants(storage, two.run.id)
    uploads = await storage.list_uploads(two.run.id)
    assert [u.reused for u in uploads] == [True] * 5 + [False] * 4
    # The copies are the cards the earlier answers gave, this run's own.
    before = {c.title for c in await storage.list_cards(one.run.id)}
    for card in await storage.list_cards(two.run.id):
        assert card.run_id == two.run.id
    reused = {u.id for u in uploads if u.reused}
    assert {
        c.title for c in await storage.list_cards(two.run.id) if c.upload_id in reused
    } <= before


async def test_a_new_prompt_or_model_or_no_reuse_sends_everything_again(storage: Storage) -> None:
    documents = [doc(f"{i}.txt", f"note {i}") for i in range(3)]
    await run_of(storage, documents, ContentProvider("v1"))
    for provider, options in (
        (ContentProvider("v2"), {}),  # another prompt or schema
        (ContentProvider("v1"), {"reuse": False}),
    ):
        summary = await run_of(storage, documents, provider, **options)
        assert (summary.requests, summary.reused) == (3, 0)
    other = ContentProvider("v1")
    other.model = "content-2"  # the fingerprint is the provider's: its model is in it
    other.request_fingerprint = lambda: "content:content-2:v1"  # type: ignore[method-assign]
    assert (await run_of(storage, documents, other)).requests == 3
    # A provider that does not say what determines its answers is never reused.
    scripted = ScriptedProvider(default=Step(cards=1))
    await run_of(storage, documents, scripted)
    assert (await run_of(storage, documents, scripted)).requests == 3


async def test_the_same_document_twice_in_one_run_is_sent_once() -> None:
    storage = MemoryStorage()
    provider = ContentProvider(latency=1.0)
    same = [doc(f"copy-{i}.txt", "the same words") for i in range(4)]
    summary = await run_of(storage, same, provider, concurrency=4)
    assert sum(provider.calls.values()) == 1
    assert (summary.completed, summary.reused) == (4, 3)
    await check_invariants(storage, summary.run.id)


async def test_an_answer_is_kept_before_its_upload_is_completed() -> None:
    """A crash between the answer and the settle does not pay for it again."""
    storage = MemoryStorage()
    provider = ContentProvider()
    run = await storage.create_run([doc("a.txt", "words")])
    engine = Engine(storage, provider)
    original = storage.complete_and_claim

    async def crash(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt  # the process dies as the cards are written

    storage.complete_and_claim = crash  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        await engine.execute(run.id)
    storage.complete_and_claim = original  # type: ignore[method-assign]
    (left,) = await storage.list_uploads(run.id)
    assert left.status == UploadStatus.PENDING
    again = await Engine(storage, provider).execute(run.id)
    assert sum(provider.calls.values()) == 1
    # Its own answer, recovered: not reused, nothing saved, its one request counted once.
    assert (again.requests, again.reused, again.run.total_cards) == (0, 0, 1)
    assert (again.run.requests, again.run.usage, again.run.reused_items) == (1, Usage(100, 10), 0)
    assert again.run.saved_tokens == 0
    await check_invariants(storage, run.id)


def test_the_key_covers_content_and_fingerprint_not_the_name() -> None:
    provider = ContentProvider()
    a, renamed = doc("a.txt", "words"), doc("b/c.txt", "words")
    assert answer_key(provider, a) == answer_key(provider, renamed)
    assert answer_key(provider, a) != answer_key(provider, doc("a.txt", "words!"))
    assert answer_key(provider, a) != answer_key(ContentProvider("v2"), a)
    html = Document("a.txt", b"words", "text/html")
    assert answer_key(provider, a) != answer_key(provider, html)
    assert answer_key(ScriptedProvider(), a) is None


@given(
    first=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    second=st.lists(st.integers(0, 8), min_size=1, max_size=8),
    concurrency=st.integers(1, 3),
    sqlite=st.booleans(),
)
def test_reused_and_fresh_uploads_keep_counters_equal_to_cards(
    first: list[int], second: list[int], concurrency: int, sqlite: bool
) -> None:
    """Two runs over documents drawn from a small pool (repeats within and across runs):
    the invariants hold, each content is asked for once in all, and every reused card
    is the answer for its own upload's content."""

    async def main(storage: Storage) -> None:
        provider = ContentProvider(latency=0.001)
        made = []
        for numbers in (first, second):
            documents = [doc(f"d{i}-{n}", f"content {n}") for i, n in enumerate(numbers)]
            made.append(await run_of(storage, documents, provider, concurrency=concurrency))
        assert sum(provider.calls.values()) == len(set(first) | set(second))
        for summary in made:
            await check_invariants(storage, summary.run.id)
            cards = {c.upload_id: c for c in await storage.list_cards(summary.run.id)}
            for upload in await storage.list_uploads(summary.run.id):
                document = await storage.load_document(upload.id)
                digest = hashlib.sha256(document.data).hexdigest()[:16]
                assert cards[upload.id].title == f"card of {digest}"
                assert upload.answer_key == answer_key(provider, document)

    async def with_storage() -> None:
        if not sqlite:
            await main(MemoryStorage())
            return
        with tempfile.TemporaryDirectory() as folder:
            async with SQLiteStorage.open(Path(folder) / "r.db") as storage:
                await main(storage)

    trio.run(with_storage, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_reused_uploads_are_told_as_reused_and_cost_nothing(storage: Storage) -> None:
    provider = ContentProvider()
    await run_of(storage, docs(1), provider)
    seen: list[UploadCompleted] = []
    summary = await run_of(
        storage,
        docs(1),
        provider,
        observer=lambda e: seen.append(e) if isinstance(e, UploadCompleted) else None,
    )
    assert [(e.reused, e.attempts) for e in seen] == [(True, 0)]
    assert (summary.requests, summary.run.cost_usd, summary.run.usage) == (0, 0.0, Usage())


async def test_the_kits_scripted_provider_takes_part_when_given_a_fingerprint() -> None:
    storage = MemoryStorage()
    documents = [doc(f"{i}.txt", f"note {i}") for i in range(3)]
    plain = ScriptedProvider(default=Step(cards=1))
    await run_of(storage, documents, plain)
    assert (await run_of(storage, documents, plain)).requests == 3  # never reused
    kept = ScriptedProvider(default=Step(cards=2), fingerprint="v1")
    await run_of(storage, documents, kept)
    again = await run_of(storage, documents, kept)
    assert (again.requests, again.reused, len(kept.calls)) == (0, 3, 3)
    other = ScriptedProvider(default=Step(cards=2), fingerprint="v2")
    assert (await run_of(storage, documents, other)).requests == 3
    await check_invariants(storage, again.run.id)
