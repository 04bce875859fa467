"""Reading documents off the event loop: hostile ones fail alone, good ones still go through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from cardmill import Analysis, Document, PermanentError
from cardmill.providers import ExtractiveProvider

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
        except PermanentError as exc:
            outcomes[document.name] = exc

    async with trio.open_nursery() as nursery:
        for document in documents:
            nursery.start_soon(one, document)
    return outcomes


async def test_hostile_html_fails_alone_and_good_documents_after_it_complete() -> None:
    provider = ExtractiveProvider(parse_timeout=30)
    hostile = [Document(f"hostile-{i}.html", HOSTILE_HTML) for i in range(6)]
    outcomes = await gather(provider.analyze, hostile + GOOD)
    for document in GOOD:
        assert isinstance(outcomes[document.name], Analysis), outcomes[document.name]
    for document in hostile:
        error = outcomes[document.name]
        assert isinstance(error, PermanentError)
        assert str(error) == f"{document.name}: no text to make cards from"


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
    with pytest.raises(PermanentError) as caught:
        await provider.analyze(Document("deep.html", deep))
    assert str(caught.value) == "deep.html: HTML nested more than 256 elements deep"
