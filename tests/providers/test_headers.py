"""Parsing Retry-After and rate-limit headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cardmill import Limit
from cardmill.providers import rate_hint, retry_after
from cardmill.providers._headers import is_spend_limit, limit_hit, parse_duration


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after-ms": "1234", "retry-after": "9"}) == 1.234
    assert retry_after({"retry-after": "90"}) == 90.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    got = retry_after({"retry-after": when})
    assert got is not None
    assert 115 <= got <= 121
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_durations() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_duration("6m0s") == 360
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("2026-01-01T00:00:30Z", now=now) == 30
    assert parse_duration("garbage") is None


def test_anthropic_headers() -> None:
    hint = rate_hint(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2020-01-01T00:00:00Z",
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "29000",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "8000",
        }
    )
    assert hint is not None
    assert (hint.requests_limit, hint.requests_remaining, hint.requests_reset) == (50, 0, 0)
    assert (hint.input_tokens_limit, hint.output_tokens_limit) == (30000, 8000)
    assert limit_hit(hint, "") == Limit.REQUESTS
    assert rate_hint({"content-type": "application/json"}) is None


def test_limit_from_message_and_spend() -> None:
    assert limit_hit(None, "exceed the rate limit of 40,000 input tokens per minute") == (
        Limit.INPUT_TOKENS
    )
    assert limit_hit(None, "Number of requests has exceeded your rate limit") == Limit.REQUESTS
    assert limit_hit(None, "slow down") == Limit.UNKNOWN
    assert is_spend_limit("You have reached your specified workspace API usage limits")
    assert not is_spend_limit("Number of requests has exceeded your rate limit")


def test_provider_errors_take_either_form() -> None:
    from cardmill import Overloaded, RateLimited

    positional = RateLimited(2.5, "input_tokens")
    assert (positional.retry_after, positional.limit) == (2.5, Limit.INPUT_TOKENS)
    assert str(positional) == "rate limited (429)"
    keyword = RateLimited("429 rate_limit_error: slow", retry_after=3, limit=Limit.REQUESTS)
    assert (str(keyword), keyword.retry_after, keyword.limit) == (
        "429 rate_limit_error: slow",
        3,
        Limit.REQUESTS,
    )
    assert RateLimited().limit == Limit.UNKNOWN
    assert RateLimited(1, "output tokens").limit == Limit.OUTPUT_TOKENS
    assert Overloaded(4).retry_after == 4.0
    assert str(Overloaded()) == "overloaded (529)"
    with pytest.raises(TypeError, match="retry_after must be a number"):
        RateLimited("message", "soon")
