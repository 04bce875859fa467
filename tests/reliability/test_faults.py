"""Fault matrix: every way a provider can fail, through the real SDK and the engine.

Each row sends three documents through Engine + AnthropicProvider + FakeAnthropicServer
with concurrency 1, the faults landing on the first document's requests. Every upload
must end COMPLETED or FAILED with a precise one-line reason, retries must stay within
the policy, and the storage invariants must hold.
"""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from cardmill import (
    Document,
    LimitKind,
    MemoryStorage,
    RateLimited,
    RunStatus,
    UploadStatus,
)
from cardmill.engine import Engine, RetryPolicy
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer, Fault, ScriptedProvider, Step, check_invariants

pytestmark = pytest.mark.reliability

KEY = "fake-key-fault-matrix"
POLICY = RetryPolicy(max_attempts=4, base_delay=0.02, max_delay=0.1)
DOCS = [
    Document(f"doc{i}.md", f"# Doc {i}\n\nIt says {i}. Nothing more.\n".encode()) for i in range(3)
]

ROWS: list[tuple[str, list[Fault], str | None, int]] = [
    # (row, faults injected on the first document, its FAILED reason or None, requests for it)
    ("529 burst", ["529", "529", "529"], None, 4),
    ("500s", ["500", "500"], None, 3),
    (
        "500 forever",
        ["500", "500", "500", "500"],
        "gave up after 4 attempts: 500 api_error: Internal server error",
        4,
    ),
    ("timeout", ["hang"], None, 2),
    ("connection reset mid-body", ["reset", "reset"], None, 3),
    ("malformed JSON", ["malformed"], None, 2),
    (
        "tool input fails the schema",
        ["invalid_tool_input"] * 3,
        "model output invalid after 3 tries: 'cards' is not a list",
        3,
    ),
    ("schema fails once, then fine", ["invalid_tool_input"], None, 2),
    (
        "output truncated by max_tokens",
        ["max_tokens"] * 3,
        "model output invalid after 3 tries: output cut off at max_tokens=4096",
        3,
    ),
    ("401", ["401"], "401 authentication_error: invalid x-api-key", 1),
    ("400", ["400"], "400 invalid_request_error: messages: invalid content", 1),
    (
        "413",
        ["413"],
        "413 request_too_large: Request exceeds the maximum allowed number of bytes",
        1,
    ),
    (
        "spend limit 429",
        ["429-spend"],
        "spend limit: 429 rate_limit_error: "
        "You have reached your specified workspace API usage limits",
        1,
    ),
    ("429 with Retry-After", ["429", "429"], None, 3),
]


@pytest.mark.parametrize(("row", "faults", "reason", "requests"), ROWS, ids=[r[0] for r in ROWS])
async def test_fault_row(row: str, faults: list[Fault], reason: str | None, requests: int) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(DOCS)
    async with FakeAnthropicServer(api_key=KEY) as server:
        server.inject(*faults)
        async with AnthropicProvider(api_key=KEY, base_url=server.url, timeout=0.5) as provider:
            engine = Engine(
                storage,
                provider,
                concurrency=1,
                retry=POLICY,
                rng=random.Random(0),
                request_timeout=5.0,
            )
            summary = await engine.execute(run.id)
        assert len(server.requests) == requests + len(DOCS) - 1
    await check_invariants(storage, run.id)
    first, *rest = await storage.list_uploads(run.id)
    assert all(u.status == UploadStatus.COMPLETED for u in rest)
    if reason is None:
        assert first.status == UploadStatus.COMPLETED
        assert summary.run.status == RunStatus.SUCCEEDED
    else:
        assert first.status == UploadStatus.FAILED
        assert first.error == reason
        assert summary.run.status == RunStatus.PARTIAL
    assert summary.retries <= POLICY.max_attempts


async def test_429_storm_with_retry_after_beyond_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every document is refused three times with Retry-After: 90; all complete, late."""
    storage = MemoryStorage()
    docs = [Document(f"d{i}.txt", b"text") for i in range(6)]
    run = await storage.create_run(docs)
    storm = RateLimited("429 rate_limit_error", retry_after=90.0, limit=LimitKind.REQUESTS)
    provider = ScriptedProvider(
        {d.name: [Step(0.05, error=storm)] * 3 for d in docs}, default=Step(1.0, cards=2)
    )
    summary = await Engine(storage, provider, concurrency=3, rng=random.Random(0)).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.rate_limited == 18
    assert summary.run.total_cards == 12
    assert trio.current_time() >= 3 * 90
    # Retry-After was honoured in full: a document's next try came 90 s or more later.
    assert len(provider.calls) == 24
    for doc in docs:
        times = [t for name, t in provider.calls if name == doc.name]
        assert all(b - a >= 90 for a, b in itertools.pairwise(times))
    await check_invariants(storage, run.id)
