"""The Message Batches endpoints of `FakeAnthropicServer`: batches, their items and results.

The book answers each batch call with what the real API sends (the same JSON shapes, ids
``msgbatch_...``, RFC 3339 times), refuses what it refuses (1 to 100,000 requests, 256 MB,
``custom_id`` pattern and uniqueness), and, when a batch ends, answers each of its items
with the server's own Messages logic. Requests whose params are not a valid Messages
request are errored with ``invalid_request_error`` when the batch ends, as the API
validates params asynchronously.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, final

import attrs

__all__ = ["BatchItemFault", "BatchSubmission"]

BatchItemFault = Literal[
    "invalid_request_error",
    "api_error",
    "overloaded_error",
    "invalid_tool_input",
    "max_tokens",
    "expired",
    "unreadable",
]
"""What `FakeAnthropicServer.fail_batch_item` does to one request of a batch: errored with
that error type, a succeeded answer that is not valid cards (``invalid_tool_input``, or
cut off at ``max_tokens``), ``expired`` (never processed), or ``unreadable``: its
succeeded result line holds an integer of 5,000 digits, more than Python's JSON parser
reads (its ``custom_id`` still comes first)."""

_CUSTOM_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ERROR_MESSAGES: Final = {
    "invalid_request_error": "messages: invalid request",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}

Answer = tuple[int, Any, dict[str, str], str]
Responder = Callable[[dict[str, Any], bytes, str | None], Any]


@final
@attrs.frozen
class BatchSubmission:
    """One request of a batch the server accepted: its batch, ``custom_id`` and params.

    ``text`` is the document's text as the server reads it from the params (the part inside
    ``<document ...>`` for text, a placeholder for a PDF).
    """

    batch_id: str
    custom_id: str
    params: Any
    text: str


@attrs.define
class _Batch:
    id: str
    created_at: datetime
    items: list[tuple[str, Any]]
    status: str = "in_progress"
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    results: list[dict[str, Any]] | None = None
    faults: dict[str, BatchItemFault] = attrs.field(factory=dict)

    def counts(self) -> dict[str, int]:
        tally = Counter(r["result"]["type"] for r in self.results or [])
        return {
            "processing": 0 if self.results is not None else len(self.items),
            "succeeded": tally["succeeded"],
            "errored": tally["errored"],
            "canceled": tally["canceled"],
            "expired": tally["expired"],
        }


def _rfc3339(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def _error(status: int, kind: str, message: str) -> Answer:
    return status, {"type": "error", "error": {"type": kind, "message": message}}, {}, "error"


@final
class _BatchBook:
    """The batches a server holds; every method answers one HTTP call."""

    def __init__(
        self,
        *,
        base_url: Callable[[], str],
        respond: Responder,
        request_text: Callable[[Any], str],
        max_requests: int,
        max_bytes: int,
    ) -> None:
        self._base_url = base_url
        self._respond = respond
        self._request_text = request_text
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.batches: dict[str, _Batch] = {}
        self.order: list[str] = []  # oldest first
        self.log: list[BatchSubmission] = []
        self.calls: Counter[str] = Counter()
        self.pending_faults: dict[str, BatchItemFault] = {}
        self._serial = 0

    def view(self, batch: _Batch) -> dict[str, Any]:
        ended = batch.status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": batch.counts(),
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + timedelta(hours=24)),
            "ended_at": _rfc3339(batch.ended_at),
            "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
            "archived_at": None,
            "results_url": (
                f"{self._base_url()}/v1/messages/batches/{batch.id}/results" if ended else None
            ),
        }

    def create(self, body: Any, raw: bytes) -> tuple[Answer, _Batch | None]:
        if len(raw) > self.max_bytes:
            return _error(
                413, "request_too_large", "Request exceeds the maximum allowed number of bytes"
            ), None
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list):
            return _error(400, "invalid_request_error", "requests: Field required"), None
        if not 1 <= len(requests) <= self.max_requests:
            return _error(
                400,
                "invalid_request_error",
                f"requests: a batch holds 1 to {self.max_requests} requests, not {len(requests)}",
            ), None
        seen: set[str] = set()
        items: list[tuple[str, Any]] = []
        for i, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                return _error(
                    400,
                    "invalid_request_error",
                    f"requests.{i}.custom_id: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,64}$'",
                ), None
            if custom_id in seen:
                return _error(
                    400,
                    "invalid_request_error",
                    f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}",
                ), None
            seen.add(custom_id)
            params = request.get("params")
            if not isinstance(params, dict):
                return _error(
                    400, "invalid_request_error", f"requests.{i}.params: Input should be an object"
                ), None
            items.append((custom_id, params))
        self._serial += 1
        batch_id = f"msgbatch_{self._serial:06d}{len(self.log):08x}"
        batch = _Batch(batch_id, datetime.now(UTC), items)
        for custom_id, _params in items:
            fault = self.pending_faults.pop(custom_id, None)
            if fault is not None:
                batch.faults[custom_id] = fault
        self.batches[batch_id] = batch
        self.order.append(batch_id)
        self.log.extend(
            BatchSubmission(batch_id, custom_id, params, self._request_text(params))
            for custom_id, params in items
        )
        return (200, self.view(batch), {}, "ok"), batch

    def _find(self, batch_id: str) -> _Batch | Answer:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, "not_found_error", f"no message batch {batch_id!r}")
        return batch

    def retrieve(self, batch_id: str) -> Answer:
        batch = self._find(batch_id)
        if not isinstance(batch, _Batch):
            return batch
        return 200, self.view(batch), {}, "ok"

    def list(self, query: dict[str, str]) -> Answer:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return _error(400, "invalid_request_error", "limit: must be from 1 to 1000")
        newest_first = list(reversed(self.order))
        after, before = query.get("after_id"), query.get("before_id")
        if after is not None:
            if after not in self.batches:
                return _error(400, "invalid_request_error", f"after_id: no batch {after!r}")
            chosen = newest_first[newest_first.index(after) + 1 :]
            page, has_more = chosen[:limit], len(chosen) > limit
        elif before is not None:
            if before not in self.batches:
                return _error(400, "invalid_request_error", f"before_id: no batch {before!r}")
            chosen = newest_first[: newest_first.index(before)]
            page, has_more = chosen[-limit:], len(chosen) > limit
        else:
            page, has_more = newest_first[:limit], len(newest_first) > limit
        payload = {
            "data": [self.view(self.batches[b]) for b in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
        return 200, payload, {}, "ok"

    def cancel(self, batch_id: str) -> tuple[Answer, _Batch | None]:
        batch = self._find(batch_id)
        if not isinstance(batch, _Batch):
            return batch, None
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.cancel_initiated_at = datetime.now(UTC)
            return (200, self.view(batch), {}, "ok"), batch
        if batch.status == "canceling":
            return (200, self.view(batch), {}, "ok"), None
        return _error(
            400, "invalid_request_error", f"message batch {batch_id} has ended: cannot cancel"
        ), None

    def results(self, batch_id: str) -> Answer:
        batch = self._find(batch_id)
        if not isinstance(batch, _Batch):
            return batch
        if batch.results is None:
            return _error(
                400,
                "invalid_request_error",
                f"message batch {batch_id} is still {batch.status}: results are not ready",
            )
        lines: list[Any] = [
            _unreadable(line) if batch.faults.get(line["custom_id"]) == "unreadable" else line
            for line in batch.results
        ]
        return 200, lines, {}, "jsonl"

    def finish(self, batch: _Batch, processed: int | None) -> None:
        """End ``batch``: its first ``processed`` requests (all of them for a batch in
        progress, none for one being canceled, by default) are answered; the rest are
        canceled (when canceling) or expired."""
        if batch.results is not None:
            return
        if processed is None:
            processed = len(batch.items) if batch.status == "in_progress" else 0
        unanswered = "canceled" if batch.status == "canceling" else "expired"
        results: list[dict[str, Any]] = []
        for i, (custom_id, params) in enumerate(batch.items):
            fault = batch.faults.get(custom_id)
            if i >= processed or fault == "expired":
                result: dict[str, Any] = {"type": unanswered if i >= processed else "expired"}
            elif fault in _ERROR_MESSAGES:
                result = self._errored(fault, _ERROR_MESSAGES[fault])
            elif not isinstance(params.get("messages"), list) or "model" not in params:
                result = self._errored(
                    "invalid_request_error", "params: must be a Messages request"
                )
            else:
                raw = json.dumps(params).encode()
                message = self._respond(params, raw, None if fault == "unreadable" else fault)
                result = {"type": "succeeded", "message": message}
            results.append({"custom_id": custom_id, "result": result})
        batch.results = results
        batch.status = "ended"
        batch.ended_at = datetime.now(UTC)

    def _errored(self, kind: str, message: str) -> dict[str, Any]:
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": f"req_fake_{len(self.log):08x}",
            },
        }


def _unreadable(line: dict[str, Any]) -> bytes:
    """``line`` as JSON with one more member, an integer no JSON parser of Python reads."""
    text = json.dumps(line)
    return (text[:-1] + ', "padding": ' + "7" * 5000 + "}\n").encode()
