"""The search's matching rules and bounds, and the pace chart's bins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cardmill import Card, CardDraft, MemoryStorage
from cardmill.web._chart import HEIGHT, CompletionBins
from cardmill.web._search import MAX_QUERY_CHARS, CardQuery, search_cards

from .conftest import doc, settle


def card(**kwargs: object) -> Card:
    values: dict[str, object] = {
        "id": "u.0",
        "run_id": "r",
        "upload_id": "u",
        "ordinal": 0,
        "title": "Tide tables",
        "body": "The moon pulls the sea.",
        "tags": ("Sea", "moon"),
        "quote": "spring tides",
    }
    values.update(kwargs)
    return Card(**values)  # type: ignore[arg-type]


def test_every_word_must_match_somewhere_case_aside() -> None:
    assert CardQuery(text="MOON tide").matches(card())
    assert CardQuery(text="spring").matches(card())  # the quote
    assert CardQuery(text="sea").matches(card(body="x", title="y", tags=("SEA",)))
    assert not CardQuery(text="moon sun").matches(card())
    assert CardQuery(text="   ").matches(card())


def test_filters_combine() -> None:
    assert CardQuery(tag="sea", text="moon").matches(card())
    assert not CardQuery(tag="se").matches(card())
    assert not CardQuery(upload_id="v").matches(card())
    assert CardQuery(upload_id="u", tag="MOON").matches(card())


def test_query_text_is_bounded() -> None:
    query = CardQuery(text="a" * 10_000, tag="t" * 10_000)
    assert query.text is not None
    assert len(query.text) == MAX_QUERY_CHARS
    assert query.tag == "t" * MAX_QUERY_CHARS
    assert len(CardQuery(text=" ".join("w" * 3 for _ in range(60))).terms) == 12


async def test_search_pages_stop_at_the_limit_and_say_more_follow() -> None:
    storage = MemoryStorage()
    run = await storage.create_run([doc("a.md")])
    await settle(storage, run, {"a.md": [CardDraft(f"n{i}", "b") for i in range(7)]})
    first = await search_cards(storage, run.id, CardQuery(), limit=3)
    assert [c.title for c in first.cards] == ["n0", "n1", "n2"]
    assert first.more
    last = await search_cards(storage, run.id, CardQuery(), offset=6, limit=3)
    assert [c.title for c in last.cards] == ["n6"]
    assert not last.more
    exact = await search_cards(storage, run.id, CardQuery(), offset=4, limit=3)
    assert [c.title for c in exact.cards] == ["n4", "n5", "n6"]
    assert not exact.more
    with pytest.raises(ValueError, match="offset"):
        await search_cards(storage, run.id, CardQuery(), offset=-1)


def test_completions_fall_in_their_bins_and_strays_in_the_ends() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bins = CompletionBins(start, start + timedelta(seconds=60), bins=6)
    for seconds in (1, 2, 3, 15, 59):
        bins.add(start + timedelta(seconds=seconds))
    bins.add(start - timedelta(hours=1))  # a worker's clock behind
    bins.add(start + timedelta(hours=1))  # or ahead
    chart = bins.chart()
    assert [bar.count for bar in chart.bars] == [4, 1, 0, 0, 0, 2]
    assert chart.total == 7
    assert chart.peak_per_minute == 4 * 60 / 10
    assert chart.bars[0].height == HEIGHT - 4
    assert chart.bars[2].height == 0
    assert chart.bars[1].x == pytest.approx(100.0)


def test_an_instant_run_still_has_a_span() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bins = CompletionBins(start, start)
    bins.add(start)
    chart = bins.chart()
    assert chart.span_seconds == 1.0
    assert chart.total == 1
