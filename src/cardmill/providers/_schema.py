"""The card schema we ask models for, and validation of what comes back."""

from __future__ import annotations

import json
from typing import Any, Final

from .._recipe import STUDY_CARDS, Recipe
from ..errors import InvalidDraft, InvalidOutput
from ..model import CardDraft

__all__ = ["SYSTEM_PROMPT", "TOOL_NAME", "card_schema", "drafts_from"]

TOOL_NAME: Final = "record_cards"

SYSTEM_PROMPT: Final = STUDY_CARDS.system_prompt()
"""The system prompt of the default recipe (the study cards)."""


def card_schema(max_cards: int, recipe: Recipe = STUDY_CARDS) -> dict[str, Any]:
    """JSON schema of the tool input / response format: ``{"cards": [...]}``.

    The recipe's schema (see `Recipe.schema`) with ``max_cards`` as the most cards.
    """
    schema = recipe.schema()
    schema["properties"]["cards"]["maxItems"] = max_cards
    return schema


def drafts_from(data: Any, max_cards: int, recipe: Recipe = STUDY_CARDS) -> tuple[CardDraft, ...]:
    """Validate a model's ``{"cards": [...]}`` against a recipe and clip it to the limits.

    Untrusted documents can talk a model into thousands of cards or enormous ones: at
    most ``max_cards`` are kept, every field is clipped to its limit and a card repeated
    word for word is kept once. Structure that is wrong (not a list, a card without a
    title) is refused. For a recipe other than the study cards, each card's values are
    checked and clipped by [`Recipe.draft`][cardmill.Recipe.draft]: a value of the wrong
    type, out of range or missing where required is refused.

    Raises:
        InvalidOutput: with what is wrong.
    """
    if not isinstance(data, dict):
        raise InvalidOutput(f"expected an object, got {type(data).__name__}")
    cards = data.get("cards")
    if not isinstance(cards, list):
        raise InvalidOutput("'cards' is not a list")
    drafts: list[CardDraft] = []
    seen: set[tuple[str, str]] = set()
    if recipe.stores_fields:
        for i, card in enumerate(cards[:max_cards]):
            if not isinstance(card, dict):
                raise InvalidOutput(f"cards[{i}] is not an object")
            try:
                draft = recipe.draft(card, where=f"cards[{i}]")
            except InvalidDraft as exc:
                raise InvalidOutput(str(exc)) from None
            key = (draft.title, json.dumps(dict(draft.fields or {}), sort_keys=True))
            if key not in seen:  # a card said twice is kept once
                seen.add(key)
                drafts.append(draft)
        return tuple(drafts)
    for i, card in enumerate(cards[:max_cards]):
        if not isinstance(card, dict):
            raise InvalidOutput(f"cards[{i}] is not an object")
        title, body = card.get("title"), card.get("body", "")
        tags, quote = card.get("tags") or [], card.get("quote")
        if not isinstance(title, str) or not title.strip():
            raise InvalidOutput(f"cards[{i}] has no title")
        if not isinstance(body, str):
            raise InvalidOutput(f"cards[{i}].body is not a string")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidOutput(f"cards[{i}].tags is not a list of strings")
        if quote is not None and not isinstance(quote, str):
            raise InvalidOutput(f"cards[{i}].quote is not a string")
        try:
            draft = CardDraft.clipped(title, body, [t for t in tags if t.strip()], quote)
        except InvalidDraft as exc:
            raise InvalidOutput(f"cards[{i}]: {exc}") from None
        if (draft.title, draft.body) not in seen:  # a card said twice is kept once
            seen.add((draft.title, draft.body))
            drafts.append(draft)
    return tuple(drafts)
