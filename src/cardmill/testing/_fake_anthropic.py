"""FakeAnthropicServer: a loopback HTTP server speaking enough of the Messages API.

It lets the real ``anthropic`` SDK (and so ``AnthropicProvider``, and the CLI in a
subprocess) be tested end to end without the internet: tool_use answers built from the
request's own tool schema, hidden rate limits with 429 and the rate-limit headers,
injected 529/500/401 and broken answers, the Message Batches endpoints, and a log of
every request.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self, final
from urllib.parse import parse_qs

import attrs
import h11
import trio

from ..model import LimitKind
from ._fake_batches import BatchItemFault, BatchSubmission, _Batch, _BatchBook
from ._fill import fill_schema
from ._hidden import HiddenLimits

__all__ = ["BatchItemFault", "BatchSubmission", "FakeAnthropicServer", "Fault", "RecordedRequest"]

Fault = Literal[
    "429",
    "429-spend",
    "529",
    "500",
    "400",
    "401",
    "413",
    "malformed",
    "invalid_tool_input",
    "max_tokens",
    "reset",
    "hang",
]
"""The faults `FakeAnthropicServer.inject` takes: each answers one request that way."""
BatchEndpoint = Literal["create", "retrieve", "list", "results", "cancel"]
"""A Message Batches endpoint, as `FakeAnthropicServer.hold_batch_call` and
`FakeAnthropicServer.batch_calls` name it."""
_MAX_BODY: Final = 64 * 1024 * 1024


@final
@attrs.frozen
class RecordedRequest:
    """One request the server received (headers without credentials), and the JSON it
    answered with (``response``; its ``usage`` says what the request was billed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    status: int
    response: Any = None

    @property
    def usage(self) -> dict[str, int]:
        """The usage block of a successful answer; empty for an error."""
        if isinstance(self.response, dict) and isinstance(self.response.get("usage"), dict):
            return dict(self.response["usage"])
        return {}


@final
class FakeAnthropicServer:
    """A Messages API on 127.0.0.1 (a free port, or ``port``) for end-to-end tests of the
    real SDK.

    Use it as ``async with FakeAnthropicServer(...) as server:`` and point the SDK at
    ``server.url`` (``ANTHROPIC_BASE_URL`` for a subprocess).

    Args:
        latency: seconds per successful answer, or a function of a ``random.Random``.
        requests_per_minute: hidden request limit (None: unlimited).
        input_tokens_per_minute: hidden input-token limit (None: unlimited), charged
            with the server's own count (a quarter of the request body's bytes, the
            cached system prompt excepted), which the client cannot see before it sends.
        output_tokens_per_minute: hidden output-token limit (None: unlimited).
        burst_seconds: bucket capacity in seconds of refill, for every limit or per limit
            (``{LimitKind.REQUESTS: 1.0}``: a strict per-second request bucket).
        headers: send ``anthropic-ratelimit-*`` headers.
        api_key: when set, any other ``x-api-key`` is answered 401.
        fault_rates: random faults, e.g. ``{"529": 0.05, "500": 0.05}``.
        cards: cards per answer (capped by the schema's ``maxItems``).
        hostile: answer as a model talked into ignoring the schema's limits would: all
            ``cards`` cards, 40 tags each, bodies of 10,000 characters.
        seed: for latencies and random faults.
        batch_delay: seconds (of trio time) a message batch stays ``in_progress`` before
            it ends with every request answered; ``None``: it ends only when
            `end_batch` says so. A canceled batch ends as soon as it can (with ``None``,
            at `end_batch`).
        batch_max_requests: the most requests a batch may hold (the API's 100,000).
        batch_max_bytes: the largest batch create body, in bytes (the API's 256 MB).
        port: the TCP port to listen on (0: any free one; `url` says which).

    The batch endpoints (``/v1/messages/batches``: create, retrieve, list, results,
    cancel) answer as the API does; each request of an ended batch is answered like a
    ``/v1/messages`` request (schema, usage, cache reads). `batch_log` holds every
    request ever submitted in a batch, `batch_calls` counts the calls per endpoint.
    """

    def __init__(
        self,
        *,
        latency: float | Callable[[random.Random], float] = 0.0,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
        burst_seconds: float | dict[LimitKind, float] = 60.0,
        headers: bool = True,
        api_key: str | None = None,
        fault_rates: dict[Fault, float] | None = None,
        cards: int = 3,
        hostile: bool = False,
        seed: int = 0,
        batch_delay: float | None = 0.0,
        batch_max_requests: int = 100_000,
        batch_max_bytes: int = 256 * 1000 * 1000,
        port: int = 0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 to 65535, not {port}")
        self._hostile = hostile
        self._latency = latency
        self._wanted = (requests_per_minute, input_tokens_per_minute, output_tokens_per_minute)
        self._burst = burst_seconds
        self._headers = headers
        self._api_key = api_key
        self._fault_rates = dict(fault_rates or {})
        self._cards = cards
        self._rng = random.Random(seed)
        self._faults: deque[Fault] = deque()
        self._limits: HiddenLimits | None = None
        self._cached: set[str] = set()  # system prompts already in the cache
        self._nursery: trio.Nursery | None = None
        self._wanted_port = port
        self._port = 0
        self._in_flight = 0
        self.peak_in_flight = 0
        self.requests: list[RecordedRequest] = []
        self._batch_delay = batch_delay
        self._batch_faults: deque[Fault] = deque()
        self._batch_holds: dict[str, tuple[int, trio.Event]] = {}
        self._book = _BatchBook(
            base_url=lambda: self.url,
            respond=self._respond,
            request_text=_request_text,
            max_requests=batch_max_requests,
            max_bytes=batch_max_bytes,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Loopback only: nothing outside this machine can reach the fake. Listening
        # first: a busy port raises OSError with nothing left open.
        listeners = await trio.open_tcp_listeners(self._wanted_port, host="127.0.0.1")
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        self._port = listeners[0].socket.getsockname()[1]
        self._nursery.start_soon(trio.serve_listeners, self._serve_connection, listeners)
        self._start_buckets()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        await self._cm.__aexit__(exc_type, exc, tb)

    @property
    def url(self) -> str:
        """Base URL for the SDK: ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._port}"

    # -- control --------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """The next requests get these faults, in order, before any limit is checked."""
        self._faults.extend(faults)

    def inject_batch(self, *faults: Fault) -> None:
        """The next calls to the batch endpoints get these faults, in order (``429``
        with Retry-After, ``500``, ``529``, ``401``, ...)."""
        self._batch_faults.extend(faults)

    def hold_batch_call(self, endpoint: BatchEndpoint, *, lines: int = 0) -> trio.Event:
        """Hold the next call to a batch endpoint for good, as an answer lost on the way.

        The call takes effect first (a held ``create`` makes the batch, a held ``cancel``
        cancels it); a held ``results`` sends its first ``lines`` result lines, then
        nothing more. The returned event is set when the call is held: a test can stop
        the client at that exact point of its progress.
        """
        reached = trio.Event()
        self._batch_holds[endpoint] = (lines, reached)
        return reached

    def fail_batch_item(self, custom_id: str, fault: BatchItemFault) -> None:
        """The next batch holding a request with this ``custom_id`` answers it so."""
        self._book.pending_faults[custom_id] = fault

    def end_batch(self, batch_id: str, *, processed: int | None = None) -> None:
        """End a batch now: its first ``processed`` requests are answered (all of a batch
        in progress, none of one being canceled, by default), the others are canceled
        (a canceling batch) or expired. ``processed=0`` expires a whole batch.

        Raises:
            KeyError: no batch has this id.
        """
        self._book.finish(self._book.batches[batch_id], processed)

    def batch_results(self, batch_id: str) -> list[dict[str, Any]]:
        """The result lines of an ended batch, as its results endpoint sends them (each
        succeeded one with the ``usage`` it was billed); empty while it runs.

        Raises:
            KeyError: no batch has this id.
        """
        return list(self._book.batches[batch_id].results or [])

    def batch_status(self, batch_id: str) -> str:
        """A batch's ``processing_status``.

        Raises:
            KeyError: no batch has this id.
        """
        return self._book.batches[batch_id].status

    @property
    def batch_log(self) -> list[BatchSubmission]:
        """Every request submitted in an accepted batch, in order: how many times each
        ``custom_id`` or document was sent."""
        return list(self._book.log)

    @property
    def batch_calls(self) -> Counter[str]:
        """Calls per batch endpoint: ``create``, ``retrieve``, ``list``, ``results``,
        ``cancel`` (refused calls too)."""
        return Counter(self._book.calls)

    def set_limits(
        self,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
    ) -> None:
        """Change the hidden limits now (each bucket keeps what it holds)."""
        self._wanted = (requests_per_minute, input_tokens_per_minute, output_tokens_per_minute)
        if self._limits is None:
            self._start_buckets()
        else:
            self._limits.set_limits(*self._wanted, now=trio.current_time())

    def _start_buckets(self) -> None:
        rpm, itpm, otpm = self._wanted
        self._limits = HiddenLimits(
            requests_per_minute=rpm,
            input_tokens_per_minute=itpm,
            output_tokens_per_minute=otpm,
            burst_seconds=self._burst,
            now=trio.current_time(),
        )

    def statuses(self) -> list[int]:
        """Status codes answered so far, in order."""
        return [r.status for r in self.requests]

    # -- HTTP -----------------------------------------------------------------------------

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                keep = await self._answer(conn, stream, request, body)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        payload: bytes,
        headers: dict[str, str],
    ) -> None:
        all_headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            *headers.items(),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=all_headers)))
        await stream.send_all(conn.send(h11.Data(data=payload)))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _answer(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request, raw: bytes
    ) -> bool:
        now = trio.current_time()
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        path, _, query = request.target.decode().partition("?")
        method = request.method.decode()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        hold: tuple[int, trio.Event] | None = None
        if path.startswith("/v1/messages/batches"):
            status, payload, extra, mode = self._decide_batch(
                method, path, query, headers, body, raw
            )
            endpoint = _endpoint(method, path)
            if endpoint is not None:
                hold = self._batch_holds.pop(endpoint, None)
        else:
            status, payload, extra, mode = self._decide(path, headers, body, raw, now)
        shown = {k: v for k, v in headers.items() if k not in ("x-api-key", "authorization")}
        self.requests.append(
            RecordedRequest(
                method, path, shown, body, now, status, None if mode == "jsonl" else payload
            )
        )
        if mode == "jsonl":
            await self._send_lines(conn, stream, payload, hold)
            return True
        if hold is not None:
            hold[1].set()
            await trio.sleep_forever()
        if mode == "batch":
            await self._send(conn, stream, status, json.dumps(payload).encode(), extra)
            return True
        if mode == "hang":
            await trio.sleep_forever()
        if status == 200:
            latency = self._latency(self._rng) if callable(self._latency) else self._latency
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            try:
                await trio.sleep(latency)
            finally:
                self._in_flight -= 1
            if self._limits is not None and isinstance(payload, dict):
                self._limits.finish(trio.current_time(), payload["usage"]["output_tokens"])
        if mode == "reset":
            # Promise a body, send half of it, hang up.
            data = json.dumps(payload).encode()
            head = [("content-type", "application/json"), ("content-length", str(len(data)))]
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=head)))
            await stream.send_all(conn.send(h11.Data(data=data[: len(data) // 2])))
            return False
        data = (
            b'{"id": "msg_broken", "type": "mess'
            if mode == "malformed"
            else json.dumps(payload).encode()
        )
        await self._send(conn, stream, status, data, extra)
        return True

    async def _send_lines(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        lines: list[dict[str, Any] | bytes],
        hold: tuple[int, trio.Event] | None = None,
    ) -> None:
        # No content-length: h11 sends the JSONL chunked, a line at a time, as a file
        # download streams.
        head = [("content-type", "application/binary")]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=head)))
        for sent, line in enumerate(lines):
            if hold is not None and sent == hold[0]:
                hold[1].set()
                await trio.sleep_forever()
            # A line given as bytes is sent as it is (one the client cannot read).
            data = line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode()
            await stream.send_all(conn.send(h11.Data(data=data)))
        if hold is not None:
            hold[1].set()
            await trio.sleep_forever()
        await stream.send_all(conn.send(h11.EndOfMessage()))

    def _decide_batch(
        self, method: str, path: str, query: str, headers: dict[str, str], body: Any, raw: bytes
    ) -> tuple[int, Any, dict[str, str], str]:
        answer = self._batch_answer(method, path, query, headers, body, raw)
        status, payload, extra, mode = answer
        return status, payload, extra, mode if mode == "jsonl" else "batch"

    def _batch_answer(
        self, method: str, path: str, query: str, headers: dict[str, str], body: Any, raw: bytes
    ) -> tuple[int, Any, dict[str, str], str]:
        book = self._book
        rest = path.removeprefix("/v1/messages/batches").strip("/")
        batch_id, _, action = rest.partition("/")
        route = (method, bool(batch_id), action)
        endpoint = _endpoint(method, path)
        if endpoint is None:
            return self._error(404, "not_found_error", f"no route {method} {path}")
        book.calls[endpoint] += 1
        if not self._authorized(headers):
            return self._error(401, "authentication_error", "invalid x-api-key")
        fault = self._batch_faults.popleft() if self._batch_faults else None
        if fault is not None:
            refused = self._status_fault(fault)
            if refused is not None:
                return refused
        if route == ("POST", False, ""):
            answer, batch = book.create(body, raw)
            if batch is not None:
                self._schedule(batch, self._batch_delay)
            return answer
        if route == ("GET", False, ""):
            return book.list({k: v[-1] for k, v in parse_qs(query).items()})
        if route == ("GET", True, ""):
            return book.retrieve(batch_id)
        if route == ("GET", True, "results"):
            return book.results(batch_id)
        answer, batch = book.cancel(batch_id)
        if batch is not None and self._batch_delay is not None:
            self._schedule(batch, 0.0)
        return answer

    def _schedule(self, batch: _Batch, delay: float | None) -> None:
        if delay is None or self._nursery is None:
            return

        async def end_later() -> None:
            await trio.sleep(delay)
            self._book.finish(batch, None)

        self._nursery.start_soon(end_later)

    def _respond(self, params: dict[str, Any], raw: bytes, fault: str | None) -> Any:
        usage = self._input_usage(params, raw)
        known: Fault | None = fault if fault in ("invalid_tool_input", "max_tokens") else None  # type: ignore[assignment]
        return self._message(params, usage, known)

    @staticmethod
    def _error(status: int, kind: str, message: str) -> tuple[int, Any, dict[str, str], str]:
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        return status, payload, {}, "error"

    def _authorized(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        presented = headers.get("x-api-key") or bearer.removeprefix("Bearer ").strip()
        return self._api_key is None or presented == self._api_key

    def _status_fault(self, fault: Fault) -> tuple[int, Any, dict[str, str], str] | None:
        """The error answer of a fault that is a status code, or None."""
        if fault == "429":
            status, payload, _, mode = self._error(
                429, "rate_limit_error", "Number of requests has exceeded your rate limit"
            )
            return status, payload, {"retry-after": "1"}, mode
        if fault == "429-spend":
            return self._error(
                429,
                "rate_limit_error",
                "You have reached your specified workspace API usage limits",
            )
        if fault == "529":
            return self._error(529, "overloaded_error", "Overloaded")
        if fault == "500":
            return self._error(500, "api_error", "Internal server error")
        if fault == "400":
            return self._error(400, "invalid_request_error", "messages: invalid content")
        if fault == "401":
            return self._error(401, "authentication_error", "invalid x-api-key")
        if fault == "413":
            return self._error(
                413, "request_too_large", "Request exceeds the maximum allowed number of bytes"
            )
        return None

    def _decide(
        self, path: str, headers: dict[str, str], body: Any, raw: bytes, now: float
    ) -> tuple[int, Any, dict[str, str], str]:
        def error(
            status: int, kind: str, message: str, **extra: str
        ) -> tuple[int, Any, dict[str, str], str]:
            payload = {"type": "error", "error": {"type": kind, "message": message}}
            return status, payload, dict(extra), "error"

        if path != "/v1/messages":
            return error(404, "not_found_error", f"no route {path}")
        if not self._authorized(headers):
            return error(401, "authentication_error", "invalid x-api-key")
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            return error(
                400, "invalid_request_error", "body must be a JSON object with model and messages"
            )
        fault: Fault | None = self._faults.popleft() if self._faults else None
        if fault is None:
            roll = self._rng.random()
            for name, share in self._fault_rates.items():
                if roll < share:
                    fault = name
                    break
                roll -= share
        if fault is not None:
            refused = self._status_fault(fault)
            if refused is not None:
                return refused
        usage = self._input_usage(body, raw)
        charged = usage["input_tokens"] + usage["cache_creation_input_tokens"]
        limited = self._check_limits(now, charged)
        if limited is not None:
            return limited
        rate_headers = self._rate_headers(now)
        message = self._message(body, usage, fault)
        return 200, message, rate_headers, fault or "ok"

    def _input_usage(self, body: dict[str, Any], raw: bytes) -> dict[str, int]:
        """The server's own count of a request's input tokens (a quarter of its bytes),
        with a system prompt marked for caching written to the cache the first time and
        read from it after; cache reads do not count toward the input-token limit."""
        system = body.get("system")
        cached = ""
        if isinstance(system, list):
            blocks = [b for b in system if isinstance(b, dict) and b.get("cache_control")]
            cached = "".join(str(b.get("text", "")) for b in blocks)
        cached_tokens = len(cached.encode()) // 4
        total = len(raw) // 4
        first = cached not in self._cached
        if cached:
            self._cached.add(cached)
        return {
            "input_tokens": max(1, total - cached_tokens),
            "cache_creation_input_tokens": cached_tokens if first else 0,
            "cache_read_input_tokens": 0 if first else cached_tokens,
        }

    def _check_limits(self, now: float, cost: float) -> tuple[int, Any, dict[str, str], str] | None:
        assert self._limits is not None
        verdict = self._limits.admit(now, cost)
        if verdict.refused_by is None:
            return None
        what = verdict.refused_by.value.replace("_", " ")
        per_minute = self._limits.per_minute(verdict.refused_by) or 0
        message = (
            f"This request would exceed the rate limit for your organization of "
            f"{int(per_minute)} {what} per minute."
        )
        headers = {"retry-after": str(max(1, math.ceil(verdict.wait)))}
        headers.update(self._rate_headers(now))
        payload = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
        return 429, payload, headers, "error"

    def _rate_headers(self, now: float) -> dict[str, str]:
        out: dict[str, str] = {"request-id": f"req_{self._rng.getrandbits(48):012x}"}
        if not self._headers or self._limits is None:
            return out
        hint = self._limits.hint(now)
        wall = datetime.now(UTC)
        for kind in ("requests", "input_tokens", "output_tokens"):
            limit = getattr(hint, f"{kind}_limit")
            if limit is None:
                continue
            name = kind.replace("_", "-")
            reset = wall + timedelta(seconds=getattr(hint, f"{kind}_reset") or 0.0)
            out[f"anthropic-ratelimit-{name}-limit"] = str(int(limit))
            out[f"anthropic-ratelimit-{name}-remaining"] = str(
                int(getattr(hint, f"{kind}_remaining") or 0)
            )
            out[f"anthropic-ratelimit-{name}-reset"] = reset.isoformat().replace("+00:00", "Z")
        return out

    def _message(self, body: dict[str, Any], usage: dict[str, int], fault: Fault | None) -> Any:
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        tool = next((t for t in tools if t.get("name") == choice.get("name")), None)
        if tool is None and tools:
            tool = tools[0]
        text = _request_text(body)
        stop = "tool_use"
        if tool is not None:
            tool_input = fill_schema(
                tool.get("input_schema", {}), text, self._cards, "", self._hostile
            )
            if fault == "invalid_tool_input":
                tool_input = {"cards": "not a list"}
            if fault == "max_tokens":
                stop = "max_tokens"
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": "toolu_fake", "name": tool["name"], "input": tool_input}
            ]
        else:
            content = [{"type": "text", "text": text[:200] or "ok"}]
            stop = "end_turn"
        output_tokens = len(json.dumps(content)) // 4
        return {
            "id": f"msg_{self._rng.getrandbits(48):012x}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": output_tokens},
        }


def _endpoint(method: str, path: str) -> BatchEndpoint | None:
    """The batch endpoint a call goes to, or None for no route."""
    rest = path.removeprefix("/v1/messages/batches").strip("/")
    batch_id, _, action = rest.partition("/")
    known: dict[tuple[str, bool, str], BatchEndpoint] = {
        ("POST", False, ""): "create",
        ("GET", False, ""): "list",
        ("GET", True, ""): "retrieve",
        ("GET", True, "results"): "results",
        ("POST", True, "cancel"): "cancel",
    }
    return known.get((method, bool(batch_id), action))


def _request_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for block in content or []:
            if block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif block.get("type") == "document":
                parts.append("A PDF document about its own subject.")
    text = " ".join(parts)
    inside = re.search(r"<document[^>]*>(.*?)</document>", text, re.S)
    if inside:
        text = inside.group(1)
    return " ".join(text.split())
