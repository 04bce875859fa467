"""Validating what a model returns: untrusted, so bounded."""

from __future__ import annotations

import pytest

from cardmill import InvalidOutput
from cardmill.providers import drafts_from


def test_ten_thousand_cards_become_the_configured_maximum() -> None:
    data = {
        "cards": [{"title": f"t{i}", "body": "b", "tags": [], "quote": "q"} for i in range(10_000)]
    }
    assert len(drafts_from(data, 20)) == 20


def test_enormous_fields_are_clipped() -> None:
    card = {
        "title": "T" * 50_000,
        "body": "B " * 50_000,
        "tags": ["x" * 500] * 500,
        "quote": "Q" * 9999,
    }
    (draft,) = drafts_from({"cards": [card]}, 5)
    assert len(draft.title) == 200
    assert len(draft.body) <= 4000
    assert len(draft.tags) == 1  # clipped tags that repeat are kept once
    assert draft.quote is not None
    assert len(draft.quote) == 1000


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "expected an object"),
        ({"cards": {}}, "not a list"),
        ({"cards": ["x"]}, r"cards\[0\] is not an object"),
        ({"cards": [{"title": "", "body": "b"}]}, "no title"),
        ({"cards": [{"title": "t", "body": 3}]}, "body is not a string"),
        ({"cards": [{"title": "t", "body": "b", "tags": "a,b"}]}, "tags is not a list"),
        ({"cards": [{"title": "t", "body": "b", "quote": 7}]}, "quote is not a string"),
    ],
)
def test_malformed_structures_are_refused(data: object, problem: str) -> None:
    with pytest.raises(InvalidOutput, match=problem):
        drafts_from(data, 5)


def test_repeated_cards_are_kept_once() -> None:
    card = {"title": "Same", "body": "Same body", "tags": [], "quote": "q"}
    other = {"title": "Other", "body": "Same body", "tags": [], "quote": "q"}
    drafts = drafts_from({"cards": [card, card, other, card]}, 10)
    assert [d.title for d in drafts] == ["Same", "Other"]
