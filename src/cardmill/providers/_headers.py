"""Reading rate-limit and Retry-After headers, as Anthropic and OpenAI send them.

Headers are outside input: a number that is not finite or is negative (``inf``, ``nan``,
``1e999``, ``-5``) is read as absent, and a huge one is cut to a maximum, so no header
can pause the engine for ever or make it pace at an absurd rate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from ..errors import MAX_RETRY_AFTER, InputError
from ..model import LimitKind, RateHint

__all__ = [
    "MAX_RATE_NUMBER",
    "MAX_RESET",
    "limit_hit",
    "parse_duration",
    "rate_hint",
    "retry_after",
]

MAX_RATE_NUMBER: Final = 1e12
"""The largest limit or remaining count read from a header, far above any tier's."""
MAX_RESET: Final = 86_400.0
"""The longest reset read from a header, in seconds: a day, the longest window
providers count limits over."""

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _bounded(value: float | None, maximum: float) -> float | None:
    """None for what no header can honestly say (not finite, negative); else at most
    ``maximum``."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return min(value, maximum)


def _count(value: str | None) -> float | None:
    return _bounded(_number(value), MAX_RATE_NUMBER)


def parse_duration(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a reset header: ``"12"``, ``"1m30s"``, ``"250ms"`` or an RFC 3339 time.

    A time in the past is 0; a value that is not a finite, non-negative duration is None;
    a longer one than `MAX_RESET` is cut to it.
    """
    if value is None:
        return None
    text = value.strip()
    plain = _number(text)
    if plain is not None:
        return _bounded(plain, MAX_RESET)
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return _bounded(sum(float(n) * scale[u] for n, u in parts), MAX_RESET)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return _bounded(max((at - (now or datetime.now(UTC))).total_seconds(), 0.0), MAX_RESET)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait: ``retry-after-ms`` first (precise), then ``retry-after``.

    ``retry-after`` may be seconds (a minute and more is honoured, up to
    `MAX_RETRY_AFTER`) or an HTTP date. A value that is not a
    finite, non-negative number is read as absent.
    """
    ms = _bounded(_number(headers.get("retry-after-ms")), math.inf)
    if ms is not None:
        return min(ms / 1000.0, MAX_RETRY_AFTER)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return _bounded(seconds, MAX_RETRY_AFTER)
    from email.utils import parsedate_to_datetime

    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return _bounded(max((at - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER)


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
        requests_limit=_count(anthropic("requests", "limit") or openai("requests", "limit")),
        requests_remaining=_count(
            anthropic("requests", "remaining") or openai("requests", "remaining")
        ),
        requests_reset=parse_duration(
            anthropic("requests", "reset") or openai("requests", "reset")
        ),
        input_tokens_limit=_count(anthropic(input_kind, "limit") or openai("tokens", "limit")),
        input_tokens_remaining=_count(
            anthropic(input_kind, "remaining") or openai("tokens", "remaining")
        ),
        input_tokens_reset=parse_duration(
            anthropic(input_kind, "reset") or openai("tokens", "reset")
        ),
        output_tokens_limit=_count(anthropic("output-tokens", "limit")),
        output_tokens_remaining=_count(anthropic("output-tokens", "remaining")),
        output_tokens_reset=parse_duration(anthropic("output-tokens", "reset")),
    )
    return None if hint.empty else hint


def limit_hit(hint: RateHint | None, message: str) -> LimitKind | None:
    """Which limit a 429 was about: from the headers (what ran out), else the message."""
    if hint is not None:
        if hint.input_tokens_remaining == 0:
            return LimitKind.INPUT_TOKENS
        if hint.output_tokens_remaining == 0:
            return LimitKind.OUTPUT_TOKENS
        if hint.requests_remaining == 0:
            return LimitKind.REQUESTS
    lowered = message.lower()
    if "input token" in lowered or "input_tokens" in lowered:
        return LimitKind.INPUT_TOKENS
    if "output token" in lowered or "output_tokens" in lowered:
        return LimitKind.OUTPUT_TOKENS
    if "tokens per min" in lowered or "(tpm)" in lowered:
        return LimitKind.INPUT_TOKENS
    if "request" in lowered:
        return LimitKind.REQUESTS
    return None


_SPEND: Final = re.compile(
    r"spend limit|spending limit|usage limit|credit balance|billing|insufficient_quota|"
    r"exceeded your current quota",
    re.IGNORECASE,
)


def is_spend_limit(message: str) -> bool:
    """A 429 that no waiting will fix: the account's money or quota has run out."""
    return bool(_SPEND.search(message))


def check_api_key(key: str, source: str) -> str:
    """``key``, if it can go in an HTTP header as it is.

    A key is printable ASCII with no spaces. Surrounding whitespace is refused too, not
    stripped: a key read with a stray carriage return (a ``.env`` file with Windows line
    ends) is a mistake to fix where it was made. The HTTP library would refuse the header
    in a message that shows the key, escaped, where no scrubbing finds it.

    Args:
        key: the API key.
        source: where it came from, for the message (``"ANTHROPIC_API_KEY"``).

    Raises:
        InputError: the key has whitespace, a control or a non-ASCII character; the
            message says which and where, never the key.
    """
    for position, char in enumerate(key, start=1):
        if "!" <= char <= "~":
            continue
        named = {"\r": "a carriage return", "\n": "a line feed", "\t": "a tab", " ": "a space"}
        if char in named:
            what = named[char]
        elif char.isspace():
            what = "whitespace"
        elif char.isascii() or not char.isprintable():
            what = "a control character"
        else:
            what = "a non-ASCII character"
        where = (
            "at its start"
            if position == 1
            else "at its end"
            if position == len(key)
            else f"at character {position} of {len(key)}"
        )
        raise InputError(
            f"{source} has {what} (U+{ord(char):04X}) {where}: an API key is printable "
            "ASCII with no spaces"
        )
    return key


def scrub(text: str, secret: str | None) -> str:
    """Remove a secret from a message before it is raised, logged or stored, as text and
    as the escaped bytes an HTTP library shows."""
    if secret:
        for form in (secret, repr(secret.encode("utf-8", "replace"))[2:-1]):
            text = text.replace(form, "***")
    return " ".join(text.split())
