"""Parsing Retry-After and rate-limit headers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardmill import LimitKind
from cardmill.errors import MAX_RETRY_AFTER
from cardmill.providers import rate_hint, retry_after
from cardmill.providers._headers import (
    MAX_RATE_NUMBER,
    MAX_RESET,
    is_spend_limit,
    limit_hit,
    parse_duration,
)


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
    assert limit_hit(hint, "") == LimitKind.REQUESTS
    assert rate_hint({"content-type": "application/json"}) is None


def test_limit_from_message_and_spend() -> None:
    assert limit_hit(None, "exceed the rate limit of 40,000 input tokens per minute") == (
        LimitKind.INPUT_TOKENS
    )
    assert limit_hit(None, "Number of requests has exceeded your rate limit") == LimitKind.REQUESTS
    assert limit_hit(None, "slow down") is None
    assert is_spend_limit("You have reached your specified workspace API usage limits")
    assert not is_spend_limit("Number of requests has exceeded your rate limit")


def test_provider_errors_take_a_message_and_keywords() -> None:
    from cardmill import Overloaded, RateLimited

    keyword = RateLimited("429 rate_limit_error: slow", retry_after=3, limit=LimitKind.REQUESTS)
    assert (str(keyword), keyword.retry_after, keyword.limit) == (
        "429 rate_limit_error: slow",
        3,
        LimitKind.REQUESTS,
    )
    assert RateLimited().limit is None  # the answer did not say which
    assert str(RateLimited()) == "rate limited (429)"
    assert Overloaded(retry_after=4).retry_after == 4.0
    assert str(Overloaded()) == "overloaded (529)"
    with pytest.raises(TypeError):
        RateLimited(2.5, "input_tokens")  # type: ignore[arg-type,call-arg]
    with pytest.raises(TypeError, match="retry_after must be a number"):
        RateLimited("message", retry_after="soon")  # type: ignore[arg-type]


# -- hostile numbers: a header must never make us wait for ever ------------------------

FAR_FUTURE = "Fri, 31 Dec 9999 23:59:59 GMT"
# Beyond a float's range ("1e999", 400 nines) reads as infinite, like "inf" itself.
NOT_FINITE = ["inf", "-inf", "Infinity", "nan", "NaN", "1e999", "-1e999", "9" * 400, "-5", "-0.5"]


@pytest.mark.parametrize("value", NOT_FINITE)
def test_retry_after_that_is_not_a_finite_wait_is_absent(value: str) -> None:
    assert retry_after({"retry-after": value}) is None
    assert retry_after({"retry-after-ms": value}) is None
    assert retry_after({"retry-after-ms": value, "retry-after": "7"}) == 7.0


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "1e300"},
        {"retry-after": "86400"},
        {"retry-after-ms": "1e300"},
        {"retry-after": FAR_FUTURE},
    ],
    ids=["seconds", "a-day", "ms", "date"],
)
def test_huge_retry_after_is_clamped_to_the_maximum(headers: dict[str, str]) -> None:
    assert retry_after(headers) == MAX_RETRY_AFTER


@pytest.mark.parametrize("value", NOT_FINITE)
def test_rate_limit_numbers_that_are_not_finite_counts_are_absent(value: str) -> None:
    hint = rate_hint(
        {
            "anthropic-ratelimit-requests-limit": value,
            "anthropic-ratelimit-requests-remaining": value,
            "anthropic-ratelimit-requests-reset": value,
            "x-ratelimit-limit-tokens": value,
            "x-ratelimit-remaining-tokens": value,
            "x-ratelimit-reset-tokens": value,
            "anthropic-ratelimit-output-tokens-limit": "100",
        }
    )
    assert hint is not None
    assert hint.requests_limit is None
    assert hint.requests_remaining is None
    assert hint.requests_reset is None
    assert hint.input_tokens_limit is None
    assert hint.input_tokens_remaining is None
    assert hint.input_tokens_reset is None
    assert hint.output_tokens_limit == 100


def test_absurd_rate_limit_numbers_are_clamped() -> None:
    hint = rate_hint(
        {
            "anthropic-ratelimit-requests-limit": "1e300",
            "anthropic-ratelimit-requests-remaining": "1" + "0" * 300,
            "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
            "anthropic-ratelimit-input-tokens-limit": "1e20",
            "anthropic-ratelimit-input-tokens-reset": "99999999h",
            "anthropic-ratelimit-output-tokens-reset": "1e300",
        }
    )
    assert hint is not None
    assert hint.requests_limit == hint.requests_remaining == MAX_RATE_NUMBER
    assert hint.input_tokens_limit == MAX_RATE_NUMBER
    assert hint.requests_reset == hint.input_tokens_reset == MAX_RESET
    assert hint.output_tokens_reset == MAX_RESET


@given(st.text(max_size=40) | st.floats().map(repr) | st.integers().map(str))
def test_any_header_value_gives_a_bounded_number_or_none(value: str) -> None:
    waits = [
        retry_after({"retry-after": value}),
        retry_after({"retry-after-ms": value}),
        parse_duration(value),
    ]
    hint = rate_hint({"x-ratelimit-limit-requests": value, "x-ratelimit-reset-tokens": value})
    counts = [] if hint is None else [hint.requests_limit]
    for got, ceiling in [(w, MAX_RETRY_AFTER) for w in waits[:2]] + [
        (waits[2], MAX_RESET),
        *((c, MAX_RATE_NUMBER) for c in counts),
    ]:
        assert got is None or 0 <= got <= ceiling, (value, got)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -1.0])
def test_errors_drop_a_retry_after_that_is_not_a_finite_wait(value: float) -> None:
    from cardmill import Overloaded, RateLimited

    assert RateLimited("429", retry_after=value).retry_after is None
    assert Overloaded("529", retry_after=value).retry_after is None


def test_errors_clamp_a_huge_retry_after() -> None:
    from cardmill import Overloaded, RateLimited

    assert RateLimited("429", retry_after=1e300).retry_after == MAX_RETRY_AFTER
    assert Overloaded(retry_after=10**400).retry_after == MAX_RETRY_AFTER
    assert RateLimited(retry_after=30).retry_after == 30.0
    with pytest.raises(TypeError, match="retry_after must be a number"):
        RateLimited("429", retry_after="soon")  # type: ignore[arg-type]
