"""AnthropicProvider's Message Batches: the real SDK against FakeAnthropicServer."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from cardmill import (
    BatchCounts,
    Document,
    DocumentError,
    InvalidOutput,
    Overloaded,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
    Usage,
)
from cardmill.providers import (
    BATCH_MAX_BYTES,
    BATCH_MAX_REQUESTS,
    AnthropicProvider,
    BatchProvider,
    BatchResult,
)
from cardmill.testing import BatchItemFault, FakeAnthropicServer, make_pdf

KEY = "fake-anthropic-batch-key-0123456789"


def doc(i: int) -> Document:
    return Document(f"notes-{i}.md", f"# Topic {i}\n\nFact number {i} is true.\n".encode())


def provider(server: FakeAnthropicServer, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(api_key=KEY, base_url=server.url, **kwargs)


async def submit(p: AnthropicProvider, n: int, prefix: str = "u") -> str:
    items = [await p.batch_request(doc(i), f"{prefix}{i}") for i in range(n)]
    return (await p.create_batch(items)).provider_batch_id


async def results(p: AnthropicProvider, batch_id: str) -> dict[str, BatchResult]:
    return {r.custom_id: r async for r in p.batch_results(batch_id)}


def test_it_is_a_batch_provider_with_the_api_limits_by_default() -> None:
    p = AnthropicProvider(api_key=KEY, base_url="http://127.0.0.1:9")
    assert isinstance(p, BatchProvider)
    assert (p.batch_max_requests, p.batch_max_bytes) == (BATCH_MAX_REQUESTS, BATCH_MAX_BYTES)
    small = AnthropicProvider(
        api_key=KEY, base_url="http://127.0.0.1:9", batch_max_requests=5, batch_max_bytes=999
    )
    assert (small.batch_max_requests, small.batch_max_bytes) == (5, 999)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_max_requests": 0}, "batch_max_requests must be from 1 to 100000"),
        ({"batch_max_requests": 100_001}, "batch_max_requests must be from 1 to 100000"),
        ({"batch_max_bytes": 0}, "batch_max_bytes must be from 1 to 256000000"),
        ({"batch_max_bytes": BATCH_MAX_BYTES + 1}, "batch_max_bytes must be from 1 to 256000000"),
    ],
)
def test_batch_limits_beyond_the_api_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnthropicProvider(api_key=KEY, base_url="http://127.0.0.1:9", **kwargs)


@pytest.mark.parametrize(
    "document",
    [doc(1), Document("leaf.pdf", make_pdf([["Leaves", "", "Leaves are green."]]))],
    ids=["markdown", "pdf"],
)
async def test_a_batch_item_sends_exactly_the_params_of_a_synchronous_request(
    document: Document,
) -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        await p.analyze(document)
        item = await p.batch_request(document, "doc-1")
        await p.create_batch([item])
        sync = server.requests[0]
    assert sync.path == "/v1/messages"
    assert set(item) == {"custom_id", "params"}
    assert item["custom_id"] == "doc-1"
    assert item["params"] == sync.body
    # and the server received them unchanged
    (submitted,) = server.batch_log
    assert submitted.params == sync.body
    assert submitted.custom_id == "doc-1"


async def test_a_document_that_cannot_be_sent_fails_before_anything_is_sent() -> None:
    async with FakeAnthropicServer() as server, provider(server) as p:
        with pytest.raises(DocumentError, match="unsupported type application/octet-stream"):
            await p.batch_request(Document("x.bin", b"\x00\x01", "application/octet-stream"), "a")
        with pytest.raises(DocumentError, match="not a PDF"):
            await p.batch_request(Document("x.pdf", b"nope", "application/pdf"), "b")
    assert server.requests == []


@pytest.mark.parametrize("custom_id", ["", "a" * 65, "has space", "dot.ted", "é", "a/b"])
async def test_a_custom_id_the_api_would_refuse_is_refused_here(custom_id: str) -> None:
    async with FakeAnthropicServer() as server, provider(server) as p:
        with pytest.raises(ValueError, match="custom_id must be 1 to 64 letters"):
            await p.batch_request(doc(1), custom_id)
    assert server.requests == []


async def test_succeeded_results_read_as_synchronous_answers_with_cache_reads() -> None:
    async with FakeAnthropicServer(batch_delay=None, cards=2) as server, provider(server) as p:
        batch_id = await submit(p, 3)
        status = await p.retrieve_batch(batch_id)
        assert status.processing_status == "in_progress"
        assert status.counts == BatchCounts(processing=3)
        assert not status.ended
        server.end_batch(batch_id)
        ended = await p.retrieve_batch(batch_id)
        got = await results(p, batch_id)
    assert ended.ended
    assert ended.counts == BatchCounts(succeeded=3)
    assert sorted(got) == ["u0", "u1", "u2"]
    first, second = got["u0"], got["u1"]
    for r in got.values():
        assert r.kind == "succeeded"
        assert r.error is None
        assert r.analysis is not None
        assert len(r.analysis.cards) == 2
    assert first.analysis is not None
    assert second.analysis is not None
    assert first.analysis.cards[0].title.startswith("# Topic 0")
    assert second.analysis.cards[0].title.startswith("# Topic 1")
    # the system prompt is written to the cache once, then read from it
    assert first.analysis.usage.cache_creation_input_tokens > 0
    assert first.analysis.usage.cache_read_input_tokens == 0
    assert second.analysis.usage.cache_read_input_tokens > 0
    assert second.analysis.usage.cache_creation_input_tokens == 0
    assert second.analysis.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("fault", "kind", "error", "message"),
    [
        ("invalid_request_error", "errored", PermanentError, "invalid_request_error"),
        ("api_error", "errored", TransientError, "api_error"),
        ("overloaded_error", "errored", Overloaded, "overloaded_error"),
        ("invalid_tool_input", "succeeded", InvalidOutput, "is not a list"),
        ("max_tokens", "succeeded", InvalidOutput, "cut off at max_tokens=4096"),
        ("expired", "expired", None, None),
    ],
)
async def test_each_kind_of_result_maps_to_what_the_synchronous_request_raises(
    fault: BatchItemFault,
    kind: str,
    error: type[ProviderError] | None,
    message: str | None,
) -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        server.fail_batch_item("u1", fault)
        batch_id = await submit(p, 3)
        server.end_batch(batch_id)
        got = await results(p, batch_id)
    assert got["u0"].kind == got["u2"].kind == "succeeded"
    assert got["u0"].analysis is not None
    hit = got["u1"]
    assert hit.kind == kind
    assert hit.analysis is None
    if error is None:
        assert hit.error is None
        return
    assert type(hit.error) is error
    assert message is not None
    assert message in str(hit.error)
    assert hit.error.usage is not None
    if kind == "succeeded":  # the answer was billed
        assert hit.error.usage.input_tokens > 0
        assert hit.error.usage.output_tokens > 0
    else:  # an errored request costs nothing
        assert hit.error.usage == Usage()


async def test_params_that_are_not_a_messages_request_are_errored_when_the_batch_ends() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        good = await p.batch_request(doc(0), "good")
        status = await p.create_batch([good, {"custom_id": "bad", "params": {"model": "x"}}])
        server.end_batch(status.provider_batch_id)
        got = await results(p, status.provider_batch_id)
    assert got["good"].kind == "succeeded"
    assert got["bad"].kind == "errored"
    assert isinstance(got["bad"].error, PermanentError)


async def test_a_whole_batch_expires() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        batch_id = await submit(p, 4)
        server.end_batch(batch_id, processed=0)
        status = await p.retrieve_batch(batch_id)
        got = await results(p, batch_id)
    assert status.counts == BatchCounts(expired=4)
    assert {r.kind for r in got.values()} == {"expired"}
    assert all(r.analysis is None and r.error is None for r in got.values())


async def test_results_before_the_batch_ended_are_a_transient_error() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        batch_id = await submit(p, 1)
        with pytest.raises(TransientError, match="in_progress"):
            await results(p, batch_id)
        server.end_batch(batch_id)
        assert (await results(p, batch_id))["u0"].kind == "succeeded"


async def test_cancel_ends_the_batch_with_unprocessed_requests_canceled() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        batch_id = await submit(p, 3)
        canceling = await p.cancel_batch(batch_id)
        assert canceling.processing_status == "canceling"
        assert (await p.retrieve_batch(batch_id)).processing_status == "canceling"
        server.end_batch(batch_id, processed=1)  # one finished before the cancel took
        ended = await p.retrieve_batch(batch_id)
        got = await results(p, batch_id)
        # an ended batch cannot be canceled again
        with pytest.raises(PermanentError, match="400 invalid_request_error"):
            await p.cancel_batch(batch_id)
    assert ended.counts == BatchCounts(succeeded=1, canceled=2)
    assert got["u0"].kind == "succeeded"
    assert got["u1"].kind == got["u2"].kind == "canceled"
    assert got["u1"].error is None
    assert got["u1"].analysis is None


async def test_a_canceled_batch_ends_by_itself_when_the_server_processes_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with FakeAnthropicServer(batch_delay=3600) as server, provider(server) as p:
        batch_id = await submit(p, 2)
        await p.cancel_batch(batch_id)
        await trio.sleep(1)
        status = await p.retrieve_batch(batch_id)
    assert status.processing_status == "ended"
    assert status.counts == BatchCounts(canceled=2)


async def test_find_batches_pages_back_until_a_batch_is_older() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        ids = [await submit(p, 1, prefix=f"b{i}x") for i in range(103)]
        since = (await p.retrieve_batch(ids[-3])).created_at
        assert since is not None
        recent = await p.find_batches(since)
        assert server.batch_calls["list"] == 1  # the first page already went older
        everything = await p.find_batches(since - timedelta(days=1))
        assert server.batch_calls["list"] == 3  # 100 + 3 batches: two pages, and then none
        none = await p.find_batches(datetime.now(UTC) + timedelta(hours=1))
    assert [s.provider_batch_id for s in recent] == ids[-1:-4:-1]
    assert [s.provider_batch_id for s in everything] == ids[::-1]
    assert none == []


async def test_find_batches_wants_a_time_zone() -> None:
    async with FakeAnthropicServer() as server, provider(server) as p:
        with pytest.raises(ValueError, match="created_after must be an aware datetime"):
            await p.find_batches(datetime(2026, 1, 1))
    assert server.requests == []


async def test_create_batch_refuses_an_empty_or_oversized_batch_without_sending() -> None:
    async with FakeAnthropicServer() as server, provider(server, batch_max_requests=2) as p:
        items = [await p.batch_request(doc(i), f"u{i}") for i in range(3)]
        with pytest.raises(ValueError, match="a batch holds 1 to 2 requests, not 3"):
            await p.create_batch(items)
        with pytest.raises(ValueError, match="a batch holds 1 to 2 requests, not 0"):
            await p.create_batch([])
    assert server.requests == []


@pytest.mark.parametrize(
    ("limits", "items", "error", "message"),
    [
        ({"batch_max_requests": 2}, 3, PermanentError, "400 invalid_request_error"),
        ({"batch_max_bytes": 2000}, 3, PermanentError, "413 request_too_large"),
    ],
)
async def test_the_server_refuses_a_batch_over_its_limits(
    limits: dict[str, Any], items: int, error: type[ProviderError], message: str
) -> None:
    async with FakeAnthropicServer(**limits) as server, provider(server) as p:
        requests = [await p.batch_request(doc(i), f"u{i}") for i in range(items)]
        with pytest.raises(error, match=message):
            await p.create_batch(requests)
    assert server.batch_log == []


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "duplicate"),
        ([{"custom_id": "a b", "params": {}}], "pattern"),
        ([{"custom_id": "a", "params": "text"}], "params"),
    ],
)
async def test_the_server_refuses_bad_custom_ids_and_params_as_a_permanent_error(
    requests: list[dict[str, Any]], message: str
) -> None:
    async with FakeAnthropicServer() as server, provider(server) as p:
        with pytest.raises(PermanentError, match=message):
            await p.create_batch(requests)
    assert server.batch_log == []


@pytest.mark.parametrize(
    ("fault", "error", "check"),
    [
        ("429", RateLimited, lambda e: e.retry_after == 1.0),
        ("429-spend", PermanentError, lambda e: "spend limit" in str(e)),
        ("500", TransientError, lambda e: "500 api_error" in str(e)),
        ("529", Overloaded, lambda e: "529" in str(e)),
        ("401", PermanentError, lambda e: "401 authentication_error" in str(e)),
    ],
)
async def test_errors_of_the_batch_endpoints_are_classified_and_never_show_the_key(
    fault: Any, error: type[ProviderError], check: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        item = await p.batch_request(doc(0), "u0")
        caught: list[ProviderError] = []
        for call in (
            lambda: p.create_batch([item]),
            lambda: p.retrieve_batch("msgbatch_x"),
            lambda: p.cancel_batch("msgbatch_x"),
            lambda: p.find_batches(datetime.now(UTC)),
            lambda: results(p, "msgbatch_x"),
        ):
            server.inject_batch(fault)
            with pytest.raises(error) as raised:
                await call()
            caught.append(raised.value)
        assert server.batch_log == []
    for exc in caught:
        assert check(exc), exc
        assert KEY not in str(exc)
        assert KEY not in repr(exc)
        assert exc.__cause__ is None
        assert exc.usage == Usage()
    assert KEY not in caplog.text


async def test_an_unknown_batch_is_a_permanent_error() -> None:
    async with FakeAnthropicServer() as server, provider(server) as p:
        with pytest.raises(PermanentError, match="404 not_found_error"):
            await p.retrieve_batch("msgbatch_nope")
    assert server.batch_calls["retrieve"] == 1


async def test_a_connection_error_is_transient_and_hides_credentials_in_the_url() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    p = AnthropicProvider(api_key=KEY, base_url=f"http://user:s3cr3t-pw@127.0.0.1:{port}")
    async with p:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: p.retrieve_batch("msgbatch_x"),
            lambda: p.create_batch([{}]),
        ]
        for call in calls:
            with pytest.raises(TransientError, match="connection error") as caught:
                await call()
            assert "s3cr3t-pw" not in str(caught.value)
            assert KEY not in str(caught.value)


async def serve_results(
    port_box: list[int], body: list[bytes], first_seen: trio.Event | None = None
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A bare HTTP server for one ended batch whose results are ``body``, sent chunk by
    chunk; with ``first_seen``, it waits for it after the first chunk."""
    await trio.lowlevel.checkpoint()

    async def serve(stream: trio.SocketStream) -> None:
        # A client that hangs up on a bad line is not the server's failure.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await answer(stream)

    async def answer(stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some()
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            if path.endswith("/results"):
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/binary\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for i, data in enumerate(body):
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))
                    if i == 0 and first_seen is not None:
                        await first_seen.wait()
                await stream.send_all(b"0\r\n\r\n")
                continue
            batch = {
                "id": "msgbatch_s",
                "type": "message_batch",
                "processing_status": "ended",
                "request_counts": {
                    "processing": 0,
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 1,
                    "expired": 1,
                },
                "created_at": "2026-01-01T00:00:00Z",
                "expires_at": "2026-01-02T00:00:00Z",
                "ended_at": "2026-01-01T01:00:00Z",
                "results_url": f"http://127.0.0.1:{port_box[0]}/v1/messages/batches/msgbatch_s/results",
            }
            data = json.dumps(batch).encode()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(data), data)
            )

    return serve


async def read_results(
    body: list[bytes],
    first_seen: trio.Event | None = None,
    into: list[BatchResult] | None = None,
) -> tuple[list[str], BaseException | None]:
    kinds: list[str] = []
    failure: BaseException | None = None
    port_box: list[int] = []
    serve = await serve_results(port_box, body, first_seen)
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        port_box.append(listener.socket.getsockname()[1])
        url = f"http://127.0.0.1:{port_box[0]}"
        async with AnthropicProvider(api_key=KEY, base_url=url) as p:
            with trio.fail_after(20):
                try:
                    async for result in p.batch_results("msgbatch_s"):
                        kinds.append(result.kind)
                        if into is not None:
                            into.append(result)
                        if first_seen is not None:
                            first_seen.set()
                except ProviderError as exc:
                    failure = exc
        nursery.cancel_scope.cancel()
    return kinds, failure


async def test_results_are_streamed_a_line_at_a_time() -> None:
    # The server sends one line, then waits until the provider has yielded it: a
    # provider that read the whole body first would never get there.
    lines = [
        b'{"custom_id": "a", "result": {"type": "expired"}}\n',
        b'{"custom_id": "b", "result": {"type": "canceled"}}\n',
    ]
    kinds, failure = await read_results(lines, trio.Event())
    assert failure is None
    assert kinds == ["expired", "canceled"]


async def test_a_line_split_across_chunks_is_one_result() -> None:
    body = [
        b'{"custom_id": "a", "res',
        b'ult": {"type": "expired"}}\n{"custom_id"',
        b': "b", "result": {"type": "canceled"}}',
    ]
    kinds, failure = await read_results(body)
    assert failure is None
    assert kinds == ["expired", "canceled"]


def _answer_holding(value: str) -> bytes:
    """A succeeded result line for ``b`` whose tool input holds ``value`` (raw JSON)."""
    return (
        b'{"custom_id": "b", "result": {"type": "succeeded", "message": {"id": "m",'
        b' "type": "message", "role": "assistant", "model": "x", "content": [{"type":'
        b' "tool_use", "id": "t", "name": "record_cards", "input": {"cards": '
        + value.encode()
        + b"}}]}}}\n"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"custom_id": "b", not json\n', "not JSON"),
        (_answer_holding("1" * 5000), "not JSON"),  # past int()'s digit limit
        (_answer_holding("[" * 3000 + "]" * 3000), "not JSON"),  # past the parser's depth
    ],
    ids=["not-json", "long-integer", "deep-arrays"],
)
async def test_an_unreadable_results_line_is_an_error_of_its_own_request_only(
    line: bytes, message: str
) -> None:
    before = b'{"custom_id": "a", "result": {"type": "expired"}}\n'
    after = b'{"custom_id": "c", "result": {"type": "canceled"}}\n'
    got: list[BatchResult] = []
    _kinds, failure = await read_results([before, line, after], into=got)
    assert failure is None
    assert [(r.custom_id, r.kind) for r in got] == [
        ("a", "expired"),
        ("b", "errored"),
        ("c", "canceled"),
    ]
    assert isinstance(got[1].error, TransientError)
    assert message in str(got[1].error)


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b"[1, 2]\n", b'{"result": {"type": "expired"}, "custom_id": "b", x}\n'],
    ids=["not-json", "not-an-object", "custom-id-not-first"],
)
async def test_a_results_line_that_names_no_request_is_logged_and_skipped(
    line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    before = b'{"custom_id": "a", "result": {"type": "expired"}}\n'
    after = b'{"custom_id": "c", "result": {"type": "canceled"}}\n'
    got: list[BatchResult] = []
    with caplog.at_level(logging.WARNING, logger="cardmill.providers"):
        _kinds, failure = await read_results([before, line, after], into=got)
    assert failure is None
    assert [r.custom_id for r in got] == ["a", "c"]
    assert "names no request" in caplog.text
    assert KEY not in caplog.text


async def test_a_results_line_too_long_to_hold_is_an_error_of_its_request_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("cardmill.providers._anthropic._MAX_RESULT_LINE", 1000)
    before = b'{"custom_id": "a", "result": {"type": "expired"}}\n'
    long = [b'{"custom_id": "b", "result": {"type": "succeeded", "x": "', b"y" * 800]
    rest = [b"z" * 800, b"z" * 800 + b'"}}\n{"custom_id": "c", "result": {"type": "canceled"}}\n']
    got: list[BatchResult] = []
    _kinds, failure = await read_results([before, *long, *rest], into=got)
    assert failure is None
    assert [(r.custom_id, r.kind) for r in got] == [
        ("a", "expired"),
        ("b", "errored"),
        ("c", "canceled"),
    ]
    assert "too long" in str(got[1].error)


@pytest.mark.parametrize("batch_id", ["", "a/b", "../x", "..", "msgbatch x", "a%2F", "x" * 257])
async def test_a_batch_id_the_api_never_gives_is_refused_without_a_request(
    batch_id: str,
) -> None:
    async with FakeAnthropicServer() as server, provider(server) as p:
        for call in (p.retrieve_batch, p.cancel_batch, lambda b: results(p, b)):
            with pytest.raises(ValueError, match="provider_batch_id must be"):
                await call(batch_id)
    assert server.requests == []


async def test_leaving_the_results_early_closes_the_stream_and_the_provider_goes_on() -> None:
    async with FakeAnthropicServer(batch_delay=None) as server, provider(server) as p:
        batch_id = await submit(p, 5)
        server.end_batch(batch_id)
        stream = p.batch_results(batch_id)
        assert isinstance(stream, AsyncGenerator)
        async with aclosing(stream):
            async for _first in stream:
                break
        assert len(await results(p, batch_id)) == 5
