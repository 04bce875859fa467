"""AnthropicProvider: the real anthropic SDK against FakeAnthropicServer over loopback."""

from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any

import pytest
import trio

from cardmill import (
    Document,
    DocumentError,
    InputError,
    InvalidOutput,
    LimitKind,
    MemoryStorage,
    Overloaded,
    PermanentError,
    RateLimited,
    RunStatus,
    TransientError,
)
from cardmill.engine import Engine, Limits, RetryPolicy
from cardmill.providers import DEFAULT_ANTHROPIC_MODEL, AnthropicProvider
from cardmill.providers._text import html_to_text
from cardmill.testing import FakeAnthropicServer, Fault, make_pdf

KEY = "fake-anthropic-test-key-0123456789"
MD = Document("notes.md", b"# Llamas\n\nLlamas are calm animals. They carry loads.\n")


def provider(server: FakeAnthropicServer, **kwargs: object) -> AnthropicProvider:
    return AnthropicProvider(api_key=KEY, base_url=server.url, **kwargs)  # type: ignore[arg-type]


async def test_text_request_on_the_wire() -> None:
    async with FakeAnthropicServer() as server:
        async with provider(server) as p:
            analysis = await p.analyze(MD)
        (request,) = server.requests
    assert request.path == "/v1/messages"
    body = request.body
    assert body["model"] == DEFAULT_ANTHROPIC_MODEL
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tool_choice"] == {"type": "tool", "name": "record_cards"}
    (tool,) = body["tools"]
    assert tool["input_schema"]["properties"]["cards"]["maxItems"] == 20
    text = body["messages"][0]["content"][0]
    assert text["type"] == "text"
    assert "Llamas are calm animals." in text["text"]
    assert "x-api-key" not in request.headers  # credentials are not recorded
    assert "authorization" not in request.headers
    assert len(analysis.cards) == 3
    assert analysis.cards[0].title.startswith("# Llamas")
    assert analysis.usage.input_tokens > 0
    assert analysis.usage.output_tokens > 0


async def test_pdf_goes_as_a_native_document_block() -> None:
    pdf = make_pdf([["Photosynthesis", "", "Plants turn light into sugar."]])
    async with FakeAnthropicServer() as server:
        async with provider(server) as p:
            await p.analyze(Document("leaf.pdf", pdf))
        (request,) = server.requests
    block = request.body["messages"][0]["content"][0]
    assert block["type"] == "document"
    assert block["source"]["media_type"] == "application/pdf"
    assert base64.b64decode(block["source"]["data"]) == pdf


async def test_html_is_sent_as_its_visible_text() -> None:
    html = b"<html><style>p{color:red}</style><body><h1>Tea</h1><p>Steep it.</p></body></html>"
    async with FakeAnthropicServer() as server:
        async with provider(server) as p:
            await p.analyze(Document("tea.html", html))
        (request,) = server.requests
    text = request.body["messages"][0]["content"][0]["text"]
    assert "# Tea" in text
    assert "Steep it." in text
    assert "color:red" not in text


async def test_hostile_html_is_read_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parse cannot finish until a task on the event loop has run while it was going.
    started, ticked = threading.Event(), threading.Event()

    def parse(*args: Any) -> str:
        started.set()
        if not ticked.wait(timeout=10):
            raise AssertionError("the event loop stood still while the page was parsed")
        return html_to_text(*args)

    async def tick() -> None:
        await trio.to_thread.run_sync(started.wait)
        ticked.set()  # only a running event loop gets here

    monkeypatch.setattr("cardmill.providers._anthropic.html_to_text", parse)
    hostile = Document("hostile.html", b"<a " * 40_000)
    async with FakeAnthropicServer() as server:
        async with provider(server) as p, trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            with pytest.raises(DocumentError, match=r"^hostile.html: no text$"):
                await p.analyze(hostile)
        assert server.requests == []


async def test_model_from_environment_and_base_url_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeAnthropicServer() as server:
        monkeypatch.setenv("CARDMILL_MODEL", "claude-test-model")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        async with AnthropicProvider() as p:
            await p.analyze(MD)
        assert server.requests[0].body["model"] == "claude-test-model"


def fast_version(name: str) -> tuple[int, ...] | None:
    """(major, minor) of a Haiku alias such as ``claude-haiku-4-5``; None for others."""
    match = re.fullmatch(r"claude-haiku-(\d+)(?:-(\d))?", name)
    return None if match is None else tuple(int(g or 0) for g in match.groups())


def test_the_default_model_is_a_fast_model_of_the_sdk_of_its_release() -> None:
    # Whether the installed SDK still lists it is the SDK's business: a newer release
    # may drop or add models, and the default must keep working (the API, not the
    # SDK's list, decides which names it takes).
    assert fast_version(DEFAULT_ANTHROPIC_MODEL) is not None, "the default is a Haiku"


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(InputError) as caught:
        AnthropicProvider()
    assert str(caught.value) == ("no Anthropic API key: pass api_key=... or set ANTHROPIC_API_KEY")


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (Document("bad.txt", bytes(range(1, 256)) * 4, "text/plain"), "binary content"),
        (Document("empty.md", b"   \n", "text/markdown"), "empty document"),
        (Document("blob.bin", b"\x00\x01\x02", "application/octet-stream"), "unsupported"),
        (Document("fake.pdf", b"not a pdf at all", "application/pdf"), "not a PDF"),
        (Document("huge.txt", b"word " * 200_000, "text/plain"), "fit in one request"),
    ],
)
async def test_bad_documents_fail_before_any_request(document: Document, reason: str) -> None:
    async with FakeAnthropicServer() as server:
        with pytest.raises(DocumentError, match=reason):
            async with provider(server) as p:
                await p.analyze(document)
        assert server.requests == []


# -- the classification matrix ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("429", RateLimited, "429 rate_limit_error"),
        ("429-spend", PermanentError, "spend limit"),
        ("529", Overloaded, "529 overloaded_error"),
        ("500", TransientError, "500 api_error"),
        ("400", PermanentError, "400 invalid_request_error"),
        ("401", PermanentError, "401 authentication_error"),
        ("413", PermanentError, "413 request_too_large"),
        ("malformed", TransientError, "malformed response"),
        ("reset", TransientError, "connection"),
    ],
)
async def test_classification(fault: Fault, error: type[Exception], text: str) -> None:
    async with FakeAnthropicServer() as server:
        server.inject(fault)
        with pytest.raises(error, match=text) as caught:
            async with provider(server) as p:
                await p.analyze(MD)
    assert KEY not in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_429_reads_retry_after_limit_and_headers() -> None:
    # One request's worth of bucket, refilled in ten seconds: the second one is refused.
    async with FakeAnthropicServer(requests_per_minute=6, burst_seconds=10) as server:
        async with provider(server) as p:
            await p.analyze(MD)
            with pytest.raises(RateLimited) as caught:
                await p.analyze(MD)
    exc = caught.value
    assert exc.retry_after is not None
    assert 9 <= exc.retry_after <= 10
    assert exc.limit == LimitKind.REQUESTS
    assert exc.hint is not None
    assert exc.hint.requests_limit == 6
    assert exc.hint.requests_remaining == 0


async def test_429_on_input_tokens_names_that_limit() -> None:
    async with FakeAnthropicServer(input_tokens_per_minute=600, burst_seconds=60) as server:
        big = Document("big.txt", b"token " * 2000)
        async with provider(server) as p:
            with pytest.raises(RateLimited) as caught:
                for _ in range(5):
                    await p.analyze(big)
    assert caught.value.limit == LimitKind.INPUT_TOKENS


async def test_success_reports_rate_hint() -> None:
    async with FakeAnthropicServer(requests_per_minute=50, input_tokens_per_minute=40_000) as s:
        async with provider(s) as p:
            analysis = await p.analyze(MD)
    hint = analysis.hint
    assert hint is not None
    assert (hint.requests_limit, hint.requests_remaining) == (50, 49)
    assert hint.input_tokens_limit == 40_000
    assert hint.requests_reset is not None
    assert 0 <= hint.requests_reset <= 2


async def test_timeout_is_transient() -> None:
    async with FakeAnthropicServer() as server:
        server.inject("hang")
        with pytest.raises(TransientError, match="timed out"):
            async with provider(server, timeout=0.3) as p:
                await p.analyze(MD)


async def test_invalid_tool_input_raises_invalid_output_with_its_usage() -> None:
    async with FakeAnthropicServer() as server:
        server.inject("invalid_tool_input")
        async with provider(server) as p:
            with pytest.raises(InvalidOutput, match="'cards' is not a list") as caught:
                await p.analyze(MD)
            (bad,) = server.requests
            # One call is one request; the answer's usage travels with the error.
            assert caught.value.usage is not None
            assert caught.value.usage.input_tokens == bad.usage["input_tokens"] > 0
            assert caught.value.usage.output_tokens == bad.usage["output_tokens"] > 0
            analysis = await p.analyze(MD)
        assert len(server.requests) == 2
        assert len(analysis.cards) == 3


async def test_output_cut_by_max_tokens_is_invalid_output() -> None:
    async with FakeAnthropicServer() as server:
        server.inject("max_tokens")
        async with provider(server) as p:
            with pytest.raises(InvalidOutput, match="cut off at max_tokens=4096"):
                await p.analyze(MD)
        assert len(server.requests) == 1


async def test_every_re_ask_is_paced_counted_and_billed() -> None:
    # Each document's answer is invalid twice before it is valid: nine requests for three
    # documents. Each passes the engine's bucket and is in the summary, tokens included.
    documents = [Document(f"d{i}.md", f"# D{i}\n\nText {i}.".encode()) for i in range(3)]
    async with FakeAnthropicServer() as server:
        server.inject(*("invalid_tool_input",) * 6)
        storage = MemoryStorage()
        run = await storage.create_run(documents)
        async with provider(server) as p:
            engine = Engine(storage, p, concurrency=3, limits=Limits(requests_per_minute=600))
            summary = await engine.execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert len(server.requests) == 9
    assert engine.bucket.statistics().admitted == 9
    assert summary.requests == 9
    assert summary.input_tokens == sum(r.usage["input_tokens"] for r in server.requests)
    assert summary.output_tokens == sum(r.usage["output_tokens"] for r in server.requests)


async def test_output_that_stays_invalid_fails_the_upload_after_the_retries() -> None:
    async with FakeAnthropicServer() as server:
        server.inject("max_tokens", "max_tokens")
        storage = MemoryStorage()
        run = await storage.create_run([MD])
        async with provider(server) as p:
            engine = Engine(storage, p, retry=RetryPolicy(output_retries=1))
            summary = await engine.execute(run.id)
    assert summary.run.status == RunStatus.FAILED
    (upload,) = await storage.list_uploads(run.id)
    assert upload.error == ("model output invalid after 2 tries: output cut off at max_tokens=4096")
    assert summary.requests == len(server.requests) == 2


async def test_hostile_output_is_clipped_to_the_limits() -> None:
    async with FakeAnthropicServer(hostile=True, cards=500) as server:
        async with provider(server, max_cards=7) as p:
            analysis = await p.analyze(MD)
    assert len(analysis.cards) == 7
    for card in analysis.cards:
        assert len(card.title) <= 200
        assert len(card.body) <= 4000
        assert len(card.tags) <= 12


async def test_the_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeAnthropicServer(api_key="a-different-key") as server, provider(server) as p:
        assert KEY not in repr(p)
        with pytest.raises(PermanentError) as caught:
            await p.analyze(MD)
    assert "401" in str(caught.value)
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert KEY not in caplog.text
    async with FakeAnthropicServer(api_key=KEY) as server, provider(server) as p:
        await p.analyze(MD)
    assert KEY not in caplog.text


async def test_concurrent_requests_share_one_client() -> None:
    async with FakeAnthropicServer(latency=0.5) as server:
        async with provider(server) as p, trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(p.analyze, MD)
        assert len(server.requests) == 4
        assert server.peak_in_flight == 4  # all four were in flight together


BAD_KEYS = [
    (KEY + "\r", "has a carriage return (U+000D) at its end"),  # a CRLF .env file
    (KEY + "\n", "has a line feed (U+000A) at its end"),
    (" " + KEY, "has a space (U+0020) at its start"),
    (KEY[:10] + "\t" + KEY[10:], "has a tab (U+0009) at character 11 of"),
    (KEY + "\u2003", "has whitespace (U+2003) at its end"),
    (KEY[:10] + "\x00" + KEY[10:], "has a control character (U+0000) at character 11 of"),
    (KEY + "\u200b", "has a control character (U+200B) at its end"),
    (KEY[:10] + "é" + KEY[10:], "has a non-ASCII character (U+00E9) at character 11 of"),
]


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS)
def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, key: str, reason: str
) -> None:
    with pytest.raises(InputError) as given:
        AnthropicProvider(api_key=key, base_url="http://127.0.0.1:9")
    assert str(given.value).startswith(f"api_key {reason}")
    errors = [given.value]
    if "\x00" not in key:  # the environment cannot hold a NUL
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        with pytest.raises(InputError) as from_env:
            AnthropicProvider(base_url="http://127.0.0.1:9")
        assert str(from_env.value).startswith(f"ANTHROPIC_API_KEY {reason}")
        errors.append(from_env.value)
    for error in errors:
        message = str(error)
        assert "\n" not in message
        assert KEY[:8] not in message
        assert KEY[-8:] not in message
