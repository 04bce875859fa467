"""What providers say about their limits: usage, rate hints and limit kinds.

These values sit below every other module (`cardmill.errors` uses them to describe a 429)
and import nothing of cardmill. Import them from `cardmill` or `cardmill.model`, which
re-export them.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final, final

import attrs

__all__ = ["MAX_REPORTED_TOKENS", "LimitKind", "RateHint", "Usage"]


class LimitKind(StrEnum):
    """Which of a provider's limits: requests, input tokens or output tokens a minute."""

    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"


MAX_REPORTED_TOKENS: Final = 1_000_000_000
"""The most tokens one request may report in any `Usage` field; more is taken as nonsense."""


def _token_count(value: object) -> int:
    """A token count as a provider reported it: a whole number from 0 to
    `MAX_REPORTED_TOKENS`. Anything else (negative, not a number, not finite, beyond
    any context window) is no report at all: 0."""
    n: int
    if isinstance(value, bool):
        return 0
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value.strip())
        except ValueError:
            return 0
    else:
        return 0
    return n if 0 <= n <= MAX_REPORTED_TOKENS else 0


def _optional_token_count(value: object) -> int | None:
    return None if value is None else _token_count(value)


@final
@attrs.frozen
class Usage:
    """Tokens one request used, as the provider reported them.

    ``limit_input_tokens`` is what the provider counted against its input-token limit
    when that is not simply the uncached input: OpenAI counts a request's
    ``max_tokens`` on top of its prompt. ``None`` (the usual case) means
    `rate_limited_input_tokens` is worked out from the other fields.

    Each count is taken as the provider sent it only when it is a whole number from 0 to
    `MAX_REPORTED_TOKENS`; a negative, non-numeric, non-finite or absurd count from a
    misbehaving server or proxy is read as 0, so it can neither stall the pace nor skew
    the run's totals.
    """

    input_tokens: int = attrs.field(default=0, converter=_token_count)
    output_tokens: int = attrs.field(default=0, converter=_token_count)
    cache_read_input_tokens: int = attrs.field(default=0, converter=_token_count)
    cache_creation_input_tokens: int = attrs.field(default=0, converter=_token_count)
    limit_input_tokens: int | None = attrs.field(default=None, converter=_optional_token_count)

    @property
    def rate_limited_input_tokens(self) -> int:
        """The input tokens that count toward an input-token rate limit: uncached input
        and cache writes, unless the provider said otherwise (`limit_input_tokens`).
        Cache reads do not count (Anthropic, for current models); providers that count
        them report them in ``input_tokens``."""
        if self.limit_input_tokens is not None:
            return self.limit_input_tokens
        return self.input_tokens + self.cache_creation_input_tokens

    def __add__(self, other: Usage) -> Usage:
        counted = None
        if self.limit_input_tokens is not None or other.limit_input_tokens is not None:
            counted = self.rate_limited_input_tokens + other.rate_limited_input_tokens
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            counted,
        )


@final
@attrs.frozen
class RateHint:
    """What the provider's rate-limit headers said about our quota.

    Limits are per minute, as providers state them; ``*_reset`` are seconds from the
    moment the answer was received until that bucket is full again. ``None`` means the
    header was absent.
    """

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset: float | None = None
    input_tokens_limit: float | None = None
    input_tokens_remaining: float | None = None
    input_tokens_reset: float | None = None
    output_tokens_limit: float | None = None
    output_tokens_remaining: float | None = None
    output_tokens_reset: float | None = None

    @property
    def empty(self) -> bool:
        """True when no header was present."""
        return all(v is None for v in attrs.astuple(self))
