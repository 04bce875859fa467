"""The API key never goes to another origin: a redirect away from the API's origin (the
results download, or any call) is followed without credentials. Two loopback servers on
two ports are two origins."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio

from cardmill import Document
from cardmill.providers import AnthropicProvider, BatchResult

KEY = "fake-key-redirected-0123456789"
LINE = b'{"custom_id": "a", "result": {"type": "expired"}}\n'


@attrs.define
class _Server:
    """A bare HTTP server: ``answer(path)`` gives each response's status, headers and
    body; every request's head is kept."""

    answer: Callable[[str], tuple[int, dict[str, str], bytes]]
    heads: list[dict[str, str]] = attrs.field(factory=list)
    port: int = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some()
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                first, *lines = head.decode("latin-1").split("\r\n")
                path = first.split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)
                }
                self.heads.append({"path": path, **headers})
                status, extra, body = self.answer(path)
                out = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                await stream.send_all(("\r\n".join(out) + "\r\n\r\n").encode() + body)


def _batch(results_url: str) -> bytes:
    return json.dumps(
        {
            "id": "msgbatch_r",
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {
                "processing": 0,
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 1,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T01:00:00Z",
            "results_url": results_url,
        }
    ).encode()


async def _two_origins(
    api_answer: Callable[[_Server, _Server, str], tuple[int, dict[str, str], bytes]],
    call: Callable[[AnthropicProvider], Awaitable[object]],
) -> tuple[_Server, _Server, object]:
    elsewhere = _Server(lambda _path: (200, {"content-type": "application/binary"}, LINE))
    api = _Server(lambda path: api_answer(api, elsewhere, path))
    async with trio.open_nursery() as nursery:
        for server in (api, elsewhere):
            (listener,) = await nursery.start(
                functools.partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1")
            )
            server.port = listener.socket.getsockname()[1]
        async with AnthropicProvider(api_key=KEY, base_url=f"http://127.0.0.1:{api.port}") as p:
            with trio.fail_after(20):
                try:
                    got: object = await call(p)
                except Exception as exc:  # what the call made of it is checked below
                    got = exc
        nursery.cancel_scope.cancel()
    return api, elsewhere, got


def _no_credentials(server: _Server) -> None:
    assert server.heads, "the other origin was never asked"
    for head in server.heads:
        assert "x-api-key" not in head
        assert "authorization" not in head
        assert KEY not in json.dumps(head)


async def _results(p: AnthropicProvider) -> list[BatchResult]:
    return [r async for r in p.batch_results("msgbatch_r")]


async def test_a_results_download_redirected_to_another_origin_gets_no_api_key() -> None:
    def answer(api: _Server, elsewhere: _Server, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.endswith("/results"):
            return 302, {"location": f"http://127.0.0.1:{elsewhere.port}/file.jsonl"}, b""
        return (
            200,
            {"content-type": "application/json"},
            _batch(f"http://127.0.0.1:{api.port}/v1/messages/batches/msgbatch_r/results"),
        )

    api, elsewhere, got = await _two_origins(answer, _results)
    _no_credentials(elsewhere)
    assert any(h.get("x-api-key") == KEY for h in api.heads)  # the API itself is sent it
    assert isinstance(got, list)
    assert [r.kind for r in got] == ["expired"]


@pytest.mark.parametrize("status", [301, 307, 308])
async def test_a_message_redirected_to_another_origin_gets_no_api_key(status: int) -> None:
    def answer(_api: _Server, elsewhere: _Server, path: str) -> tuple[int, dict[str, str], bytes]:
        return status, {"location": f"http://127.0.0.1:{elsewhere.port}{path}"}, b""

    async def analyze(p: AnthropicProvider) -> object:
        return await p.analyze(Document("a.md", b"# A\n\nSome text.\n"))

    _api, elsewhere, _got = await _two_origins(answer, analyze)
    _no_credentials(elsewhere)
