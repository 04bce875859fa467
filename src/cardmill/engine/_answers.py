"""Reasons and answers as the engine records them: one clean line, checked cards."""

from __future__ import annotations

from ..model import CardDraft, clean_text

__all__ = ["clean_reason", "invalid_answer", "invalid_cards", "reason"]


def clean_reason(text: str) -> str:
    """A reason on one line that every store can hold (providers quote bad text)."""
    return " ".join(clean_text(text).split())


def reason(exc: BaseException) -> str:
    """``exc`` as a one-line reason; its type's name when it says nothing."""
    return clean_reason(str(exc)) or type(exc).__name__


def invalid_cards(cards: object) -> str | None:
    """What is wrong with an answer's cards before they reach storage (providers are
    user code: a bad answer fails its upload, not the run)."""
    if not isinstance(cards, tuple | list):
        return f"expected a sequence of cards, got {type(cards).__name__}"
    for i, card in enumerate(cards):
        if not isinstance(card, CardDraft):
            return f"cards[{i}] is a {type(card).__name__}, not a CardDraft"
    return None


def invalid_answer(analysis: object) -> str | None:
    """What is wrong with a provider's answer (an `Analysis`) before it reaches storage."""
    cards = getattr(analysis, "cards", None)
    if not isinstance(cards, tuple | list):
        return f"expected an Analysis with a sequence of cards, got {type(analysis).__name__}"
    return invalid_cards(cards)
