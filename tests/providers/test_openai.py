"""OpenAICompatibleProvider against an httpx mock transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cardmill import (
    Document,
    InputError,
    InvalidOutput,
    LimitKind,
    Overloaded,
    PermanentError,
    RateLimited,
    TransientError,
    Usage,
)
from cardmill.providers import OpenAICompatibleProvider
from cardmill.providers._headers import MAX_RATE_NUMBER
from cardmill.testing import make_pdf

KEY = "fake-openai-test-key-42"
DOC = Document("notes.md", b"# Owls\n\nOwls hunt at night. They hear very well.\n")
CARDS = {"cards": [{"title": "Owls", "body": "They hunt at night.", "tags": ["owl"], "quote": "x"}]}


def answer(content: Any = CARDS, finish: str = "stop", status: int = 200, **headers: str) -> Any:
    def respond(request: httpx.Request) -> httpx.Response:
        body = {
            "choices": [
                {
                    "message": {"role": "assistant", "content": json.dumps(content)},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30},
        }
        return httpx.Response(status, json=body, headers=headers)

    return respond


def error(status: int, message: str, code: str = "error", **headers: str) -> Any:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, json={"error": {"message": message, "code": code}}, headers=headers
        )

    return respond


def make(
    *handlers: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request] | None = None
) -> OpenAICompatibleProvider:
    queue = list(handlers)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        return step(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAICompatibleProvider(
        api_key=KEY, base_url="http://127.0.0.1:9/v1", model="local-model", client=client
    )


async def test_request_and_answer() -> None:
    seen: list[httpx.Request] = []
    async with make(answer(), seen=seen) as provider:
        analysis = await provider.analyze(DOC)
    (request,) = seen
    assert str(request.url) == "http://127.0.0.1:9/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body["model"] == "local-model"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["cards"]
    assert "Owls hunt at night." in body["messages"][1]["content"]
    assert [c.title for c in analysis.cards] == ["Owls"]
    assert (analysis.usage.input_tokens, analysis.usage.output_tokens) == (120, 30)
    # OpenAI counts max_tokens against the tokens-per-minute limit, with the prompt.
    assert analysis.usage.rate_limited_input_tokens == 120 + 4096


async def test_a_server_counting_only_the_prompt_is_told_so() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer()))
    async with OpenAICompatibleProvider(
        base_url="http://127.0.0.1:9/v1", max_tokens_count=False, client=client
    ) as provider:
        analysis = await provider.analyze(DOC)
    assert analysis.usage.rate_limited_input_tokens == 120
    assert analysis.usage.limit_input_tokens is None


async def test_pdf_is_sent_as_text() -> None:
    seen: list[httpx.Request] = []
    pdf = Document("p.pdf", make_pdf([["Comets", "", "Comets are icy."]]))
    async with make(answer(), seen=seen) as provider:
        await provider.analyze(pdf)
    assert "Comets are icy." in json.loads(seen[0].content)["messages"][1]["content"]


async def test_rate_limit_headers_and_retry_after_ms() -> None:
    headers = {
        "retry-after-ms": "1500",
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m30s",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "12000",
        "x-ratelimit-reset-tokens": "250ms",
    }
    async with make(error(429, "Rate limit reached for requests", **headers)) as provider:
        with pytest.raises(RateLimited) as caught:
            await provider.analyze(DOC)
    exc = caught.value
    assert exc.retry_after == 1.5
    assert exc.limit == LimitKind.REQUESTS
    assert exc.hint is not None
    assert (exc.hint.requests_limit, exc.hint.requests_reset) == (500, 90)
    assert (exc.hint.input_tokens_remaining, exc.hint.input_tokens_reset) == (12000, 0.25)


async def test_hostile_rate_limit_headers_cannot_pause_for_ever() -> None:
    headers = {
        "retry-after-ms": "1e400",
        "retry-after": "inf",
        "x-ratelimit-limit-requests": "nan",
        "x-ratelimit-remaining-requests": "-1",
        "x-ratelimit-limit-tokens": "1e300",
        "x-ratelimit-reset-tokens": "Infinity",
    }
    async with make(error(429, "Rate limit reached", **headers)) as provider:
        with pytest.raises(RateLimited) as caught:
            await provider.analyze(DOC)
    assert caught.value.retry_after is None
    assert caught.value.hint is not None
    assert caught.value.hint.requests_limit is None
    assert caught.value.hint.requests_remaining is None
    assert caught.value.hint.input_tokens_limit == MAX_RATE_NUMBER
    assert caught.value.hint.input_tokens_reset is None
    async with make(error(529, "overloaded", **{"retry-after": "1e999"})) as provider:
        with pytest.raises(Overloaded) as overloaded:
            await provider.analyze(DOC)
    assert overloaded.value.retry_after is None


@pytest.mark.parametrize(
    ("handler", "kind", "text"),
    [
        (
            error(429, "You exceeded your current quota", "insufficient_quota"),
            PermanentError,
            "spend",
        ),
        (error(529, "overloaded"), Overloaded, "529"),
        (error(503, "The engine is currently overloaded"), Overloaded, "503"),
        (error(500, "boom"), TransientError, "500 error: boom"),
        (error(400, "bad schema", "invalid_request_error"), PermanentError, "400"),
        (error(401, f"Incorrect API key provided: {KEY}"), PermanentError, r"401 error: .*\*\*\*"),
        (error(404, "model not found"), PermanentError, "404"),
    ],
)
async def test_classification(handler: Any, kind: type[Exception], text: str) -> None:
    async with make(handler) as provider:
        with pytest.raises(kind, match=text) as caught:
            await provider.analyze(DOC)
    assert KEY not in str(caught.value)


async def test_malformed_and_cut_off_answers() -> None:
    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{nope")

    async with make(not_json) as provider:
        with pytest.raises(TransientError, match="not JSON"):
            await provider.analyze(DOC)
    async with make(answer(finish="length")) as provider:
        with pytest.raises(InvalidOutput, match="cut off") as caught:
            await provider.analyze(DOC)
        # The answer was billed all the same (and counted with its max_tokens).
        assert caught.value.usage == Usage(120, 30, limit_input_tokens=120 + 4096)
    async with make(answer({"cards": "nope"}), answer()) as provider:
        with pytest.raises(InvalidOutput, match="'cards' is not a list"):
            await provider.analyze(DOC)
        assert len((await provider.analyze(DOC)).cards) == 1  # one request per call


async def test_an_error_answer_says_it_used_no_tokens() -> None:
    async with make(error(400, "bad schema", "invalid_request_error")) as provider:
        with pytest.raises(PermanentError) as caught:
            await provider.analyze(DOC)
    assert caught.value.usage == Usage()


async def test_connection_errors_are_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    async with make(refuse) as provider:
        with pytest.raises(TransientError, match="connection error"):
            await provider.analyze(DOC)
    async with make(slow) as provider:
        with pytest.raises(TransientError, match="timed out"):
            await provider.analyze(DOC)


@pytest.mark.parametrize("key", [KEY + "\r", " " + KEY, KEY[:6] + "\x7f" + KEY[6:], KEY + "\u2028"])
def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    with pytest.raises(InputError, match=r"^api_key has ") as given:
        OpenAICompatibleProvider(api_key=key)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with pytest.raises(InputError, match=r"^OPENAI_API_KEY has ") as from_env:
        OpenAICompatibleProvider()
    for error in (given.value, from_env.value):
        assert "\n" not in str(error)
        assert KEY[:8] not in str(error)
        assert KEY[-8:] not in str(error)


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError) as caught:
        OpenAICompatibleProvider()
    assert str(caught.value) == (
        "no OpenAI API key: pass api_key=... or set OPENAI_API_KEY "
        "(a local server needs none: pass its base_url=...)"
    )
    monkeypatch.setenv("OPENAI_API_KEY", "")
    with pytest.raises(InputError, match="no OpenAI API key"):
        OpenAICompatibleProvider()  # an empty key is no key
    with pytest.raises(InputError, match="must start with http"):
        OpenAICompatibleProvider(base_url="localhost:8000")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    local = OpenAICompatibleProvider()  # local servers need no key
    assert local.base_url == "http://127.0.0.1:11434/v1"
    assert KEY not in repr(OpenAICompatibleProvider(api_key=KEY))
