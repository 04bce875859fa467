"""A Message Batches server written from Anthropic's documented shapes, not from our fake:
an ``httpx2`` transport handler with knobs for what the documentation allows (ids of
other shapes, results out of order and at another URL, unknown fields)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import anthropic
import attrs
import httpx2

from cardmill.providers import AnthropicProvider

BASE = "http://batches.test"
KEY = "docs-server-secret-key-0123456789"
TOOL = "record_cards"


def message(title: str, *, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A succeeded request's Message: one card, with an unknown field or two."""
    return {
        "id": "msg_01docs",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-5-5",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": TOOL,
                "input": {"cards": [{"title": title, "body": f"{title} body"}]},
            }
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 100, "output_tokens": 20},
        "container": None,
        "a_field_added_later": {"nested": [1, 2]},
    }


@attrs.define
class DocsBatchServer:
    """Answers create, retrieve, list, results and cancel as the documentation shows.

    ``batch_id`` makes the id of a new batch; ``results_url`` its results URL from the
    id; ``order`` reorders a batch's results lines.
    """

    batch_id: Callable[[int], str] = lambda n: f"msgbatch_{n:024d}"
    results_url: Callable[[str], str] = lambda b: f"{BASE}/v1/messages/batches/{b}/results"
    order: Callable[[list[str]], list[str]] = lambda lines: list(reversed(lines))
    archived_at: str | None = None
    batches: dict[str, list[str]] = attrs.field(factory=dict)  # id -> custom_ids
    seen: list[httpx2.Request] = attrs.field(factory=list)

    def view(self, batch_id: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        n = len(self.batches[batch_id])
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {
                "processing": 0,
                "succeeded": n,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": now.isoformat(),
            "ended_at": now.isoformat(),
            "expires_at": (now + timedelta(hours=24)).isoformat(),
            "archived_at": self.archived_at,
            "cancel_initiated_at": None,
            "results_url": self.results_url(batch_id),
            "a_field_added_later": True,
        }

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        path = unquote(request.url.raw_path.decode().partition("?")[0])
        if request.method == "POST" and path == "/v1/messages/batches":
            body = json.loads(request.content)
            batch_id = self.batch_id(len(self.batches) + 1)
            self.batches[batch_id] = [r["custom_id"] for r in body["requests"]]
            return httpx2.Response(200, json=self.view(batch_id))
        if request.method == "GET" and path == "/v1/messages/batches":
            data = [self.view(b) for b in reversed(self.batches)]
            return httpx2.Response(
                200,
                json={
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        for batch_id in self.batches:
            url = httpx2.URL(self.results_url(batch_id))
            if (
                request.method == "GET"
                and request.url.path == url.path
                and (not url.host or url.host == request.url.host)
            ):
                lines = [
                    json.dumps(
                        {
                            "custom_id": c,
                            "result": {"type": "succeeded", "message": message(f"card {c}")},
                        }
                    )
                    for c in self.batches[batch_id]
                ]
                return httpx2.Response(200, content="\n".join(self.order(lines)).encode())
            if request.method == "GET" and path == f"/v1/messages/batches/{batch_id}":
                return httpx2.Response(200, json=self.view(batch_id))
            if request.method == "POST" and path == f"/v1/messages/batches/{batch_id}/cancel":
                return httpx2.Response(200, json=self.view(batch_id))
        return httpx2.Response(
            404,
            json={"type": "error", "error": {"type": "not_found_error", "message": path}},
        )

    def provider(self, **kwargs: Any) -> AnthropicProvider:
        """An AnthropicProvider whose SDK talks to this server (and nowhere else)."""
        client = anthropic.AsyncAnthropic(
            api_key=KEY,
            base_url=BASE,
            max_retries=0,
            default_headers={"x-api-key": KEY},
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle)),
        )
        return AnthropicProvider(client=client, **kwargs)
