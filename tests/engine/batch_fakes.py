"""An in-process batch API for the batch executor's tests, in trio time.

It keeps what Anthropic's Message Batches API keeps: each batch processes its requests
over time (one every ``seconds_per_request``, from its creation), tallies them
(processing, succeeded, errored, canceled, expired), ends when all are processed, expires
what is still processing after ``expires_after``, cancels on request (what has not been
processed by then is canceled, after ``cancel_delay``), and lists batches by creation
time. Every create call it accepts is logged with the custom ids it held. It bills each
answer by what its request held, as the loopback server does: a quarter of the bytes of
its system prompt, messages and tool schema as input tokens.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import trio

from cardmill import CardDraft, Document, Usage
from cardmill.errors import (
    DocumentError,
    InvalidOutput,
    PermanentError,
    ProviderError,
    TransientError,
)
from cardmill.model import BatchCounts
from cardmill.providers import Analysis, BatchResult, BatchStatus

#: What the fake does with one request: a card, an answer that is not cards, a server
#: error, an invalid request, or never processed (it expires).
OK, INVALID, TRANSIENT, PERMANENT, NEVER = "ok", "invalid", "transient", "permanent", "never"

#: Output tokens of every answer.
OUTPUT_TOKENS = 200
#: Bytes a token, as FakeAnthropicServer counts a request's input.
BYTES_PER_TOKEN = 4


def stamp(t: float) -> datetime:
    """Trio time as the datetime the fake and MemoryStorage(clock=trio.current_time) use."""
    return datetime.fromtimestamp(t, UTC)


@attrs.define
class FakeBatch:
    id: str
    custom_ids: tuple[str, ...]
    outcomes: tuple[str, ...]
    created: float
    canceled_at: float | None = None


@attrs.define
class FakeBatchAPI:
    """A `BatchProvider` whose API lives in this process.

    ``outcome(document_name, times_sent)`` scripts each request (``times_sent`` counts
    from 1); ``refuse`` names documents `batch_request` refuses (DocumentError).
    ``create_errors`` are raised, in order, by the next create calls before anything is
    created; ``lose_answers`` is how many next create calls create the batch, then raise
    a TransientError as if the answer was lost; ``results_errors`` how many next reads
    of results fail at once with a TransientError.

    Each request carries ``system`` (a system prompt) and ``tool_schema``, and is billed
    `BYTES_PER_TOKEN` bytes a token of them and its messages (`billed`). With
    ``counts_prompt`` it says how many tokens they take besides the document
    (``overhead_tokens``, as the real providers do); without, it does not.
    """

    name: str = "fake-batch"
    model: str = "claude-haiku-4-5"
    max_tokens: int = 1000
    batch_max_requests: int = 100_000
    batch_max_bytes: int = 256_000_000
    seconds_per_request: float = 10.0
    expires_after: float = 24 * 3600.0
    cancel_delay: float = 30.0
    outcome: Callable[[str, int], str] = lambda _name, _n: OK
    refuse: frozenset[str] = frozenset()
    create_errors: list[ProviderError] = attrs.field(factory=list)
    lose_answers: int = 0
    results_errors: int = 0
    cancel_errors: list[ProviderError] = attrs.field(factory=list)
    results_at: list[float] = attrs.field(factory=list)
    batches: dict[str, FakeBatch] = attrs.field(factory=dict)
    submissions: list[tuple[str, tuple[str, ...]]] = attrs.field(factory=list)
    sent: dict[str, int] = attrs.field(factory=dict)
    names: dict[str, str] = attrs.field(factory=dict)
    calls: list[str] = attrs.field(factory=list)
    polled: list[float] = attrs.field(factory=list)
    on_poll: Callable[[int], None] | None = None
    #: While set and not yet fired, create calls wait for it (counted in ``held``)
    #: before anything is created: a create call in flight.
    hold_creates: trio.Event | None = None
    held: int = 0
    #: Its own time: trio's (virtual in tests), or a process-wide clock when it lives
    #: across several trio.run calls (each has a time base of its own).
    clock: Callable[[], float] = trio.current_time
    system: str = ""
    tool_schema: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object"})
    counts_prompt: bool = True
    #: The model every answer names (None: it names none).
    answered_by: str | None = None
    usages: dict[str, Usage] = attrs.field(factory=dict)

    def custom_ids_sent(self) -> list[str]:
        return [c for _, ids in self.submissions for c in ids]

    def _params(self, document: Document) -> dict[str, Any]:
        return {
            "name": document.name,
            "system": self.system,
            "tools": [{"name": "record_cards", "input_schema": dict(self.tool_schema)}],
            "messages": [{"role": "user", "content": document.data.decode("latin-1")}],
        }

    @staticmethod
    def _billed(params: Mapping[str, Any]) -> Usage:
        sent = {k: params[k] for k in ("system", "messages", "tools")}
        return Usage(
            input_tokens=len(json.dumps(sent).encode()) // BYTES_PER_TOKEN,
            output_tokens=OUTPUT_TOKENS,
        )

    def billed(self, document: Document) -> Usage:
        """The usage an answer about ``document`` reports."""
        return self._billed(self._params(document))

    def overhead_tokens(self) -> int | None:
        """The input tokens of a request besides its document's bytes (None unless
        ``counts_prompt``)."""
        if not self.counts_prompt:
            return None
        return self.billed(Document("", b"")).input_tokens + 1

    async def batch_request(self, document: Document, custom_id: str) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        if document.name in self.refuse:
            raise DocumentError(f"{document.name}: cannot be sent")
        return {"custom_id": custom_id, "params": self._params(document)}

    async def create_batch(self, requests: Sequence[Mapping[str, Any]]) -> BatchStatus:
        await trio.lowlevel.checkpoint()
        self.calls.append("create")
        if self.hold_creates is not None and not self.hold_creates.is_set():
            self.held += 1
            await self.hold_creates.wait()
        if self.create_errors:
            raise self.create_errors.pop(0)
        body = json.dumps({"requests": list(requests)}).encode()
        if len(requests) > self.batch_max_requests or len(body) > self.batch_max_bytes:
            raise PermanentError(f"batch too large: {len(requests)} requests, {len(body)} B")
        custom_ids = tuple(str(r["custom_id"]) for r in requests)
        if len(set(custom_ids)) != len(custom_ids):
            raise PermanentError("custom_id values must be unique")
        outcomes = []
        for r in requests:
            name = str(r["params"]["name"])
            self.names[str(r["custom_id"])] = name
            self.usages[str(r["custom_id"])] = self._billed(r["params"])
            self.sent[name] = self.sent.get(name, 0) + 1
            outcomes.append(self.outcome(name, self.sent[name]))
        batch = FakeBatch(
            f"msgbatch_{len(self.batches) + 1:04d}",
            custom_ids,
            tuple(outcomes),
            self.clock(),
        )
        self.batches[batch.id] = batch
        self.submissions.append((batch.id, custom_ids))
        if self.lose_answers:
            self.lose_answers -= 1
            raise TransientError("connection reset while reading the answer")
        return self._status(batch)

    def _state(self, batch: FakeBatch, i: int) -> str:
        """Where request ``i`` is now: processing or its result kind."""
        now = self.clock()
        done_at = batch.created + (i + 1) * self.seconds_per_request
        outcome = batch.outcomes[i]
        if (
            outcome != NEVER
            and done_at <= now
            and (batch.canceled_at is None or done_at <= batch.canceled_at)
        ):
            return {OK: "succeeded", INVALID: "succeeded"}.get(outcome, "errored")
        if batch.canceled_at is not None and now >= batch.canceled_at + self.cancel_delay:
            return "canceled"
        if now >= batch.created + self.expires_after:
            return "expired"
        return "processing"

    def _status(self, batch: FakeBatch) -> BatchStatus:
        states = [self._state(batch, i) for i in range(len(batch.custom_ids))]
        counts = BatchCounts(
            processing=states.count("processing"),
            succeeded=states.count("succeeded"),
            errored=states.count("errored"),
            canceled=states.count("canceled"),
            expired=states.count("expired"),
        )
        if counts.processing == 0:
            status = "ended"
        elif batch.canceled_at is not None:
            status = "canceling"
        else:
            status = "in_progress"
        return BatchStatus(batch.id, status, counts, stamp(batch.created))

    def _batch(self, provider_batch_id: str) -> FakeBatch:
        try:
            return self.batches[provider_batch_id]
        except KeyError:
            raise PermanentError(f"no batch {provider_batch_id}") from None

    async def retrieve_batch(self, provider_batch_id: str) -> BatchStatus:
        await trio.lowlevel.checkpoint()
        self.calls.append("retrieve")
        self.polled.append(self.clock())
        if self.on_poll is not None:
            self.on_poll(len(self.polled))
        return self._status(self._batch(provider_batch_id))

    async def batch_results(self, provider_batch_id: str) -> AsyncIterator[BatchResult]:
        batch = self._batch(provider_batch_id)
        if not self._status(batch).ended:
            raise PermanentError(f"batch {provider_batch_id} has not ended")
        self.calls.append("results")
        self.results_at.append(self.clock())
        if self.results_errors:
            self.results_errors -= 1
            raise TransientError("connection reset while streaming results")
        for i, custom_id in enumerate(batch.custom_ids):
            await trio.lowlevel.checkpoint()
            yield self._result(batch, i, custom_id)

    def _result(self, batch: FakeBatch, i: int, custom_id: str) -> BatchResult:
        kind = self._state(batch, i)
        if kind in ("canceled", "expired"):
            return BatchResult(custom_id, kind)
        outcome = batch.outcomes[i]
        name = self.names[custom_id]
        usage = self.usages[custom_id]
        if outcome == OK:
            card = CardDraft(title=f"About {name}", body=f"What {name} says.")
            analysis = Analysis((card,), usage, model=self.answered_by)
            return BatchResult(custom_id, "succeeded", analysis=analysis)
        if outcome == INVALID:
            return BatchResult(
                custom_id, "succeeded", error=InvalidOutput("output cut off", usage=usage)
            )
        if outcome == TRANSIENT:
            return BatchResult(custom_id, "errored", error=TransientError("api_error: boom"))
        return BatchResult(
            custom_id, "errored", error=PermanentError("invalid_request_error: bad image")
        )

    async def cancel_batch(self, provider_batch_id: str) -> BatchStatus:
        await trio.lowlevel.checkpoint()
        self.calls.append("cancel")
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        batch = self._batch(provider_batch_id)
        if batch.canceled_at is None and not self._status(batch).ended:
            batch.canceled_at = self.clock()
        return self._status(batch)

    async def find_batches(self, created_after: datetime) -> list[BatchStatus]:
        await trio.lowlevel.checkpoint()
        self.calls.append("find")
        found = [self._status(b) for b in self.batches.values()]
        found = [s for s in found if s.created_at is not None and s.created_at >= created_after]
        return sorted(found, key=lambda s: s.created_at or created_after, reverse=True)
