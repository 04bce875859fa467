"""Reading rate-limit and Retry-After headers, as Anthropic and OpenAI send them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from ..errors import Limit
from ._base import RateHint

__all__ = ["limit_hit", "parse_duration", "rate_hint", "retry_after"]

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def parse_duration(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a reset header: ``"12"``, ``"1m30s"``, ``"250ms"`` or an RFC 3339 time."""
    if value is None:
        return None
    text = value.strip()
    plain = _number(text)
    if plain is not None:
        return max(plain, 0.0)
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max((at - (now or datetime.now(UTC))).total_seconds(), 0.0)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait: ``retry-after-ms`` first (precise), then ``retry-after``.

    ``retry-after`` may be seconds (any size: a minute and more is honoured) or an HTTP
    date.
    """
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    from email.utils import parsedate_to_datetime

    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max((at - datetime.now(UTC)).total_seconds(), 0.0)


def rate_hint(headers: Mapping[str, str]) -> RateHint | None:
    """The rate-limit headers of an answer, or None when there are none.

    Anthropic: ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,
    remaining,reset}``; OpenAI-style: ``x-ratelimit-{limit,remaining,reset}-{requests,
    tokens}``.
    """

    def anthropic(kind: str, field: str) -> str | None:
        return headers.get(f"anthropic-ratelimit-{kind}-{field}")

    def openai(kind: str, field: str) -> str | None:
        return headers.get(f"x-ratelimit-{field}-{kind}")

    input_kind = "input-tokens" if anthropic("input-tokens", "limit") is not None else "tokens"
    hint = RateHint(
        requests_limit=_number(anthropic("requests", "limit") or openai("requests", "limit")),
        requests_remaining=_number(
            anthropic("requests", "remaining") or openai("requests", "remaining")
        ),
        requests_reset=parse_duration(
            anthropic("requests", "reset") or openai("requests", "reset")
        ),
        input_tokens_limit=_number(anthropic(input_kind, "limit") or openai("tokens", "limit")),
        input_tokens_remaining=_number(
            anthropic(input_kind, "remaining") or openai("tokens", "remaining")
        ),
        input_tokens_reset=parse_duration(
            anthropic(input_kind, "reset") or openai("tokens", "reset")
        ),
        output_tokens_limit=_number(anthropic("output-tokens", "limit")),
        output_tokens_remaining=_number(anthropic("output-tokens", "remaining")),
        output_tokens_reset=parse_duration(anthropic("output-tokens", "reset")),
    )
    return None if hint.empty else hint


def limit_hit(hint: RateHint | None, message: str) -> Limit:
    """Which limit a 429 was about: from the headers (what ran out), else the message."""
    if hint is not None:
        if hint.input_tokens_remaining == 0:
            return Limit.INPUT_TOKENS
        if hint.output_tokens_remaining == 0:
            return Limit.OUTPUT_TOKENS
        if hint.requests_remaining == 0:
            return Limit.REQUESTS
    lowered = message.lower()
    if "input token" in lowered or "input_tokens" in lowered:
        return Limit.INPUT_TOKENS
    if "output token" in lowered or "output_tokens" in lowered:
        return Limit.OUTPUT_TOKENS
    if "tokens per min" in lowered or "(tpm)" in lowered:
        return Limit.INPUT_TOKENS
    if "request" in lowered:
        return Limit.REQUESTS
    return Limit.UNKNOWN


_SPEND: Final = re.compile(
    r"spend limit|spending limit|usage limit|credit balance|billing|insufficient_quota|"
    r"exceeded your current quota",
    re.IGNORECASE,
)


def is_spend_limit(message: str) -> bool:
    """A 429 that no waiting will fix: the account's money or quota has run out."""
    return bool(_SPEND.search(message))


def scrub(text: str, secret: str | None) -> str:
    """Remove a secret from a message before it is raised, logged or stored."""
    if secret:
        text = text.replace(secret, "***")
    return " ".join(text.split())
