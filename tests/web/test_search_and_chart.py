"""The search's matching rules and bounds, and the pace chart's bins."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cardmill import CardDraft, Field, MemoryStorage, Recipe, SQLiteStorage
from cardmill.web._chart import HEIGHT, CompletionBins
from cardmill.web._search import MAX_QUERY_CHARS, CardQuery, search_cards

from ..storage.test_contract_search import store_fields
from .conftest import client_of, doc, settle


async def tide_run(storage: MemoryStorage) -> tuple[str, str]:
    run = await storage.create_run([doc("u.md"), doc("v.md")])
    await settle(
        storage,
        run,
        {
            "u.md": [
                CardDraft(
                    "Tide tables", "The moon pulls the sea.", ("Sea", "moon"), "spring tides"
                ),
                CardDraft("y", "x", ("SEA",)),
            ],
            "v.md": [CardDraft("Sun", "Light.")],
        },
    )
    return run.id, (await storage.list_uploads(run.id))[0].id


async def found(storage: MemoryStorage, run_id: str, **query: str) -> list[str]:
    page = await search_cards(storage, run_id, CardQuery(**query))
    return [c.title for c in page.cards]


async def test_every_word_must_match_somewhere_case_aside() -> None:
    storage = MemoryStorage()
    run_id, _ = await tide_run(storage)
    assert await found(storage, run_id, text="MOON tide") == ["Tide tables"]
    assert await found(storage, run_id, text="spring") == ["Tide tables"]  # the quote
    assert await found(storage, run_id, text="sea") == ["Tide tables", "y"]  # a tag
    assert await found(storage, run_id, text="moon sun") == []
    assert await found(storage, run_id, text="   ") == ["Tide tables", "y", "Sun"]


async def test_filters_combine() -> None:
    storage = MemoryStorage()
    run_id, u = await tide_run(storage)
    assert await found(storage, run_id, tag="sea", text="moon") == ["Tide tables"]
    assert await found(storage, run_id, tag="se") == []
    assert await found(storage, run_id, upload_id="v") == []
    assert await found(storage, run_id, upload_id=u, tag="MOON") == ["Tide tables"]


def test_query_text_is_bounded() -> None:
    query = CardQuery(text="a" * 10_000, tag="t" * 10_000)
    assert query.text is not None
    assert len(query.text) == MAX_QUERY_CHARS
    assert query.tag == "t" * MAX_QUERY_CHARS


async def test_search_pages_stop_at_the_limit_and_say_more_follow() -> None:
    storage = MemoryStorage()
    run = await storage.create_run([doc("a.md")])
    await settle(storage, run, {"a.md": [CardDraft(f"n{i}", "b") for i in range(7)]})
    first = await search_cards(storage, run.id, CardQuery(), limit=3)
    assert [c.title for c in first.cards] == ["n0", "n1", "n2"]
    assert (first.offset, first.more) == (0, True)
    # By cursor, one call; by page number, the cursors followed from the first page.
    second = await search_cards(storage, run.id, CardQuery(), after=first.next_cursor, limit=3)
    assert [c.title for c in second.cards] == ["n3", "n4", "n5"]
    last = await search_cards(storage, run.id, CardQuery(), page=3, limit=3)
    assert [c.title for c in last.cards] == ["n6"]
    assert (last.offset, last.more) == (6, False)
    beyond = await search_cards(storage, run.id, CardQuery(), page=9, limit=3)
    assert (beyond.cards, beyond.offset, beyond.more) == ((), 24, False)
    exact = await search_cards(storage, run.id, CardQuery(), limit=7)
    assert len(exact.cards) == 7
    assert not exact.more
    with pytest.raises(ValueError, match="page"):
        await search_cards(storage, run.id, CardQuery(), page=0)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_field_search_over_a_stored_huge_integer_answers(kind: str, tmp_path: Path) -> None:
    recipe = Recipe("people", "One card per person.", (Field("person"), Field("age", "integer")))
    async with (
        MemoryStorage() if kind == "memory" else SQLiteStorage.open(tmp_path / "c.db")
    ) as storage:
        run = await storage.create_run([doc("a.md")], recipe=recipe)
        drafts = [recipe.draft({"person": n, "age": 1}) for n in ("Huge", "Small")]
        await settle(storage, run, {"a.md": drafts})
        (upload,) = await storage.list_uploads(run.id)
        # A database written before integers were bounded may hold one of 401 digits.
        await store_fields(storage, upload.id, 0, json.dumps({"person": "Huge", "age": 10**400}))
        path = f"/runs/{run.id}/cards"
        async with client_of(storage) as client:
            for value, want in [("1e400", str(10**400)), ("1", "Small")]:
                answer = await client.get(path, params={"field": "age", "value": value})
                assert answer.status_code == 200, answer.text
                assert answer.text.count('<article class="card"') == 1, value
                assert want in answer.text
            for value in ("1e999", "-1e400", "inf", "nan"):
                answer = await client.get(path, params={"field": "age", "value": value})
                assert answer.status_code == 200, answer.text
                assert answer.text.count('<article class="card"') == 0, value


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


def test_a_span_under_a_minute_gives_counts_in_whole_seconds_and_no_rate() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # A run over in a fraction of a second: one bin of one second, no rate per minute.
    bins = CompletionBins(start, start + timedelta(milliseconds=200))
    for _ in range(30):
        bins.add(start + timedelta(milliseconds=100))
    chart = bins.chart()
    assert [bar.count for bar in chart.bars] == [30]
    assert chart.span_seconds == 1.0
    assert not chart.rated
    # Ten seconds: ten bins of a second each, still no rate.
    bins = CompletionBins(start, start + timedelta(seconds=10))
    assert len(bins.chart().bars) == 10
    assert not bins.chart().rated
    # A minute or more is rated, in its sixty bins.
    bins = CompletionBins(start, start + timedelta(seconds=60))
    assert len(bins.chart().bars) == 60
    assert bins.chart().rated
