"""Reading documents off the event loop: hostile ones fail alone, good ones still go through."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from cardmill import Analysis, Document, DocumentError
from cardmill.providers import ExtractiveProvider, OpenAICompatibleProvider
from cardmill.providers._reading import read_off_loop
from cardmill.providers._text import sections as real_sections

from . import readers

HOSTILE_HTML = b"<a " * 40_000  # 120 KB: quadratic in html.parser, minutes of work
GOOD = [
    Document(f"good-{i}.md", b"# Good\n\nThis one is fine. It makes a card.\n") for i in range(3)
]


async def gather(
    analyze: Callable[[Document], Awaitable[Any]], documents: list[Document]
) -> dict[str, Any]:
    """Every document's outcome, analysed concurrently as the engine would: its result,
    or the exception it raised."""
    outcomes: dict[str, Any] = {}

    async def one(document: Document) -> None:
        try:
            outcomes[document.name] = await analyze(document)
        except DocumentError as exc:
            outcomes[document.name] = exc

    async with trio.open_nursery() as nursery:
        for document in documents:
            nursery.start_soon(one, document)
    return outcomes


def openai_provider() -> OpenAICompatibleProvider:
    def answer(request: httpx.Request) -> httpx.Response:
        cards: dict[str, Any] = {
            "cards": [{"title": "Good", "body": "Fine.", "tags": [], "quote": None}]
        }
        message = {"role": "assistant", "content": json.dumps(cards)}
        return httpx.Response(200, json={"choices": [{"message": message}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return OpenAICompatibleProvider(base_url="http://127.0.0.1:9/v1", client=client)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: ExtractiveProvider(parse_timeout=30), "no text to make cards from"),
        (openai_provider, "HTML page has no visible text"),
    ],
    ids=["extractive", "openai"],
)
async def test_hostile_html_fails_alone_and_good_documents_after_it_complete(
    make: Callable[[], Any], reason: str
) -> None:
    hostile = [Document(f"hostile-{i}.html", HOSTILE_HTML) for i in range(6)]
    outcomes = await gather(make().analyze, hostile + GOOD)
    for document in GOOD:
        assert isinstance(outcomes[document.name], Analysis), outcomes[document.name]
    for document in hostile:
        error = outcomes[document.name]
        assert isinstance(error, DocumentError)
        assert str(error) == f"{document.name}: {reason}"


async def test_a_parse_past_its_deadline_frees_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline is in real time: the stuck readers never return, so it always passes.
    provider = ExtractiveProvider(parse_timeout=2)
    slots = 4
    started, release = threading.Semaphore(0), threading.Event()

    def sections(document: Document) -> Any:
        if document.name.startswith("stuck"):
            started.release()
            release.wait()  # lost in a hostile file until the test ends
        return real_sections(document)

    monkeypatch.setattr("cardmill.providers._extractive.sections", sections)
    stuck = [Document(f"stuck-{i}.html", b"<h1>Never</h1><p>Read.</p>") for i in range(slots)]
    try:
        async with trio.open_nursery() as nursery:
            results: dict[str, Any] = {}

            async def run() -> None:
                results.update(await gather(provider.analyze, stuck + GOOD))

            nursery.start_soon(run)
            for _ in range(slots):
                await trio.to_thread.run_sync(started.acquire)
    finally:
        release.set()
    for document in GOOD:
        assert isinstance(results[document.name], Analysis), results[document.name]
    for document in stuck:
        assert str(results[document.name]) == (
            f"{document.name}: still being read after 2 s; given up"
        )


async def test_a_virtual_clock_does_not_time_out_a_reader(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # With autojump, trio's clock leaps while every task waits on a reader thread: a
    # deadline in trio's time would fail a document being read fine.
    provider = ExtractiveProvider(parse_timeout=10)
    release = threading.Event()

    def sections(document: Document) -> Any:
        release.wait()
        return real_sections(document)

    monkeypatch.setattr("cardmill.providers._extractive.sections", sections)
    document = Document("slow.html", b"<h1>Slow</h1><p>Read in the end.</p>")
    async with trio.open_nursery() as nursery:
        # Something else waits in trio's time (a heartbeat, a paced request): the clock
        # jumps to it, past the reading deadline, while the reader thread runs.
        nursery.start_soon(trio.sleep, 1000)
        nursery.start_soon(trio.to_thread.run_sync, threading.Timer(0.2, release.set).run)
        analysis = await provider.analyze(document)
        assert trio.current_time() >= 1000
        nursery.cancel_scope.cancel()
    assert analysis.cards[0].title == "Slow"


async def test_a_reader_process_past_its_deadline_is_killed() -> None:
    limiter = trio.CapacityLimiter(2)
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    stuck = [Document(f"stuck-{i}.pdf", str(port).encode(), "text/plain") for i in range(2)]
    good = [Document(f"good-{i}.txt", b"fine", "text/plain") for i in range(2)]
    pids: list[int] = []

    async def analyze(document: Document, seconds: float = 5) -> str:
        reader = readers.sleep_forever if document.name.startswith("stuck") else readers.text
        read = partial(read_off_loop, limiter=limiter, seconds=seconds, isolated=True)
        return await read(reader, document)

    # Worker processes are started first (a loaded machine may take seconds to start
    # one), so that the deadline measures the reading, not the start.
    warm = await gather(partial(analyze, seconds=120), good)
    assert list(warm.values()) == ["fine", "fine"]

    async def collect_pids() -> None:
        async with listener:
            while True:
                conn = await listener.accept()
                async with conn:
                    pids.append(int(await conn.receive_some()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_pids)
        results = await gather(analyze, stuck + good)
        nursery.cancel_scope.cancel()  # never wait on a reader that was killed first
    assert [results[d.name] for d in good] == ["fine", "fine"]
    for document in stuck:
        assert str(results[document.name]) == (
            f"{document.name}: still being read after 5 s; given up"
        )
    assert len(pids) == len(stuck)  # both stuck readers ran in their processes
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped, not left running


@pytest.mark.parametrize(
    "line",
    [
        "# a" + " " * 5_000 + "x",  # cubic for a lazy heading pattern with trailing runs
        "# a " + "#" * 100_000 + " x",
        "[" * 200_000,  # quadratic for a link pattern that rescans the line
        "[a](" * 100_000,
        "*a" * 100_000 + "**",
        "_" * 200_000,
    ],
    ids=["heading-spaces", "heading-hashes", "brackets", "open-links", "stars", "underscores"],
)
async def test_hostile_markdown_lines_are_read_in_linear_time(line: str) -> None:
    document = Document("hostile.md", f"{line}\n\nThe text under it is fine.\n".encode())
    analysis = await ExtractiveProvider(parse_timeout=30).analyze(document)
    assert analysis.cards[-1].body == "The text under it is fine."


async def test_html_nested_past_the_parser_limit_fails_with_a_reason() -> None:
    provider = ExtractiveProvider()
    fine = b"<div>" * 200 + b"<h1>Deep</h1><p>Still read. Fine.</p>"
    assert (await provider.analyze(Document("fine.html", fine))).cards[0].title == "Deep"
    deep = b"<div>" * 300 + b"<p>Too deep to read.</p>"
    with pytest.raises(DocumentError) as caught:
        await provider.analyze(Document("deep.html", deep))
    assert str(caught.value) == "deep.html: HTML nested more than 256 elements deep"


@pytest.mark.parametrize("isolated", [False, True], ids=["thread", "process"])
async def test_a_reader_that_raises_gives_its_slot_back(isolated: bool) -> None:
    limiter = trio.CapacityLimiter(1)
    document = Document("gone.txt", b"", "text/plain")
    with pytest.raises(KeyboardInterrupt):
        await read_off_loop(
            readers.interrupted, document, limiter=limiter, seconds=10, isolated=isolated
        )
    assert limiter.borrowed_tokens == 0
    assert await read_off_loop(readers.text, GOOD[0], limiter=limiter, seconds=10)
