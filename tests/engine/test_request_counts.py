"""The engine records each upload's requests and 429s with its settlement."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from cardmill import (
    Engine,
    LimitKind,
    PermanentError,
    RateLimited,
    RetryPolicy,
    RunStatus,
    Storage,
    TransientError,
)
from cardmill.engine import Event, RateLimitHit
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .conftest import docs


def limited(retry_after: float = 1.0) -> RateLimited:
    return RateLimited("slow down", retry_after=retry_after, limit=LimitKind.REQUESTS)


async def test_stored_requests_and_429s_are_the_scripts(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    run = await storage.create_run(docs(5))
    script = {
        "doc0000.txt": [Step(0.1, error=limited()), Step(0.1, error=limited()), Step(0.1)],
        "doc0001.txt": [Step(0.1, error=TransientError("reset")), Step(0.1)],
        "doc0002.txt": [Step(0.1, error=PermanentError("bad request"))],
        "doc0004.txt": [Step(0.1, error=limited()), Step(0.1, error=PermanentError("no"))],
    }
    provider = ScriptedProvider(script, default=Step(0.1))
    summary = await Engine(storage, provider, concurrency=2).execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    uploads = {u.name: u for u in await storage.list_uploads(run.id)}
    expected = {
        "doc0000.txt": (3, 2),
        "doc0001.txt": (2, 0),
        "doc0002.txt": (1, 0),
        "doc0003.txt": (1, 0),
        "doc0004.txt": (2, 1),
    }
    assert {n: (u.requests, u.rate_limited) for n, u in uploads.items()} == expected
    assert all(u.requests == provider.calls_for(n) for n, u in uploads.items())
    stored = await storage.get_run(run.id)
    assert (stored.requests, stored.rate_limited) == (9, 3)
    assert (stored.requests, stored.rate_limited) == (summary.requests, summary.rate_limited)
    await check_invariants(storage, run.id)


async def test_requests_made_before_a_cancel_are_kept_and_resume_adds_to_them(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    run = await storage.create_run(docs(1))
    script = {"doc0000.txt": [Step(1.0, error=limited(retry_after=60.0)), Step(1.0)]}
    provider = ScriptedProvider(script)
    with trio.CancelScope() as scope:

        def cancel_on_429(event: Event) -> None:
            if isinstance(event, RateLimitHit):
                scope.cancel()

        await Engine(storage, provider, observer=cancel_on_429).execute(run.id)
    cancelled = await storage.get_run(run.id)
    assert cancelled.status == RunStatus.CANCELLED
    (u,) = await storage.list_uploads(run.id)
    # Released (while waiting out the Retry-After): its 429 is recorded with the release.
    assert (u.requests, u.rate_limited, cancelled.requests, cancelled.rate_limited) == (1, 1, 1, 1)
    summary = await Engine(storage, provider).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    (u,) = await storage.list_uploads(run.id)
    assert (u.requests, u.rate_limited) == (2, 1) == (provider.calls_for(u.name), 1)
    assert (summary.run.requests, summary.run.rate_limited) == (2, 1)
    await check_invariants(storage, run.id)


@pytest.mark.parametrize("attempts", [0, 3])
async def test_an_upload_that_gives_up_on_429s_records_every_one(
    storage: Storage, autojump_clock: trio.testing.MockClock, attempts: int
) -> None:
    run = await storage.create_run(docs(1))
    provider = ScriptedProvider(default=Step(0.1, error=limited()))
    retry = RetryPolicy(max_rate_limited=attempts)
    summary = await Engine(storage, provider, retry=retry).execute(run.id)
    assert summary.run.status == RunStatus.FAILED
    made = provider.calls_for("doc0000.txt")
    assert made >= 1
    (u,) = await storage.list_uploads(run.id)
    assert (u.requests, u.rate_limited) == (made, made)
    assert (summary.run.requests, summary.run.rate_limited) == (made, made)
