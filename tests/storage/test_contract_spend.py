"""The storage contract for usage and cost: every backend must pass every test here."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from cardmill import CardDraft, Document, InputError, Storage, UploadStatus, Usage
from cardmill.testing import check_invariants

from .conftest import Backend, FakeClock

DOCS = [Document(f"{i}.txt", f"doc {i}".encode()) for i in range(4)]
CARD = [CardDraft("t", "b")]


def usage(n: int) -> Usage:
    return Usage(n, 2 * n, 3 * n, 4 * n)


async def test_settlements_add_usage_and_cost_to_the_upload_and_the_run(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    a, b, c, d = await storage.list_uploads(run.id)
    assert run.usage == Usage()
    assert run.cost_usd == 0
    claimed = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert claimed is not None
    assert await storage.release_upload(a.id, worker="w", usage=usage(1), cost_usd=0.1)
    assert await storage.complete_upload(a.id, CARD, usage=usage(10), cost_usd=0.2)
    assert await storage.fail_upload(b.id, "bad", usage=usage(100), cost_usd=0.000_000_3)
    third = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert third is not None
    assert third.id == c.id
    done, _ = await storage.complete_and_claim(
        c.id,
        CARD,
        worker="w",
        attempt=third.attempts,
        run_id=run.id,
        lease_seconds=30,
        usage=usage(1000),
        cost_usd=1.5,
    )
    assert done
    # Usage without cost, and cost without usage, each count.
    assert await storage.release_upload(d.id, usage=Usage(output_tokens=7))
    assert await storage.complete_upload(d.id, CARD, cost_usd=2)
    by_id = {u.id: u for u in await storage.list_uploads(run.id)}
    assert by_id[a.id].usage == usage(11)
    assert by_id[a.id].cost_usd == 0.3  # 0.1 + 0.2 in whole nano-dollars: exactly 0.3
    assert by_id[b.id].usage == usage(100)
    assert by_id[b.id].cost_usd == 0.000_000_3
    assert by_id[c.id].usage == usage(1000)
    assert by_id[c.id].cost_usd == 1.5
    assert by_id[d.id].usage == Usage(output_tokens=7)
    assert by_id[d.id].cost_usd == 2
    again = await storage.get_run(run.id)
    assert again.usage == usage(1111) + Usage(output_tokens=7)
    assert again.cost_usd == 3.8000003
    assert [r.cost_usd for r in await storage.list_runs()] == [3.8000003]
    await check_invariants(storage, run.id)


async def test_costs_are_kept_in_whole_nano_dollars(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    for _ in range(10):
        assert await storage.release_upload(u.id, cost_usd=0.1) is False
    # Only calls that change something record: a release of a PENDING upload does not.
    assert (await storage.get_run(run.id)).cost_usd == 0
    for _ in range(3):
        await storage.claim_upload(run.id, worker="w", lease_seconds=30)
        assert await storage.release_upload(u.id, cost_usd=0.1 + 4e-10)
    (u,) = await storage.list_uploads(run.id)
    # Each 0.1000000004 is 100_000_000 nano-dollars; 3 of them are exactly 0.3.
    assert u.cost_usd == 0.3
    assert (await storage.get_run(run.id)).cost_usd == 0.3


async def test_only_the_pacing_count_of_usage_is_not_kept(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    assert await storage.complete_upload(u.id, CARD, usage=Usage(5, 6, 7, 8, 999))
    (u,) = await storage.list_uploads(run.id)
    assert u.usage == Usage(5, 6, 7, 8)
    assert u.usage.limit_input_tokens is None
    assert (await storage.get_run(run.id)).usage == Usage(5, 6, 7, 8)


async def test_fenced_out_and_repeated_settlements_add_nothing(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:2])
    a, b = await storage.list_uploads(run.id)
    assert await storage.fail_upload(b.id, "no", cost_usd=0.25)
    first = await storage.claim_upload(run.id, worker="old", lease_seconds=10)
    assert first is not None
    clock.advance(11)
    second = await storage.claim_upload(run.id, worker="new", lease_seconds=10)
    assert second is not None
    assert second.id == a.id
    stale = first.attempts
    spent, cost = usage(5), 0.5
    assert not await storage.complete_upload(a.id, CARD, worker="old", usage=spent, cost_usd=cost)
    assert not await storage.complete_upload(
        a.id, CARD, worker="new", attempt=stale, usage=spent, cost_usd=cost
    )
    assert not await storage.fail_upload(a.id, "x", worker="old", usage=spent, cost_usd=cost)
    assert not await storage.release_upload(
        a.id, worker="new", attempt=stale, usage=spent, cost_usd=cost
    )
    assert not await storage.renew_lease(a.id, worker="old", lease_seconds=5)
    done, _ = await storage.complete_and_claim(
        a.id, CARD, worker="old", run_id=run.id, lease_seconds=10, usage=spent, cost_usd=cost
    )
    assert not done
    assert (await storage.get_run(run.id)).cost_usd == 0.25
    assert await storage.complete_upload(
        a.id, CARD, worker="new", attempt=second.attempts, usage=spent, cost_usd=cost
    )
    # Repeats of a settled upload change nothing, and so add nothing.
    assert not await storage.complete_upload(a.id, CARD, usage=spent, cost_usd=cost)
    assert not await storage.fail_upload(a.id, "late", usage=spent, cost_usd=cost)
    assert not await storage.release_upload(a.id, usage=spent, cost_usd=cost)
    assert not await storage.fail_upload(b.id, "no", cost_usd=0.25)
    assert not await storage.complete_upload(b.id, CARD, cost_usd=0.25)
    a_now, b_now = await storage.list_uploads(run.id)
    assert (a_now.usage, a_now.cost_usd) == (usage(5), 0.5)
    assert (b_now.usage, b_now.cost_usd) == (Usage(), 0.25)
    got = await storage.get_run(run.id)
    assert (got.usage, got.cost_usd) == (usage(5), 0.75)
    await check_invariants(storage, run.id)


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf, -math.inf, 1e300, "1", True])
async def test_a_cost_that_cannot_be_added_up_is_refused_naming_it(
    storage: Storage, bad: object
) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.complete_upload(u.id, CARD, cost_usd=bad),  # type: ignore[arg-type]
        lambda: storage.fail_upload(u.id, "x", cost_usd=bad),  # type: ignore[arg-type]
        lambda: storage.release_upload(u.id, cost_usd=bad),  # type: ignore[arg-type]
        lambda: storage.complete_and_claim(
            u.id,
            CARD,
            worker="w",
            run_id=run.id,
            lease_seconds=1,
            cost_usd=bad,  # type: ignore[arg-type]
        ),
    ]
    await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    for call in calls:
        with pytest.raises(InputError, match="cost_usd"):
            await call()
    (u,) = await storage.list_uploads(run.id)
    assert (u.status, u.cost_usd) == (UploadStatus.LOADING, 0)
    assert (await storage.get_run(run.id)).cost_usd == 0


async def test_usage_that_is_not_a_usage_is_refused(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    with pytest.raises(InputError, match="usage must be a Usage"):
        await storage.complete_upload(u.id, CARD, usage={"input_tokens": 5})  # type: ignore[arg-type]
    assert (await storage.list_uploads(run.id))[0].status == UploadStatus.PENDING


async def test_usage_and_cost_survive_reopen(backend: Backend) -> None:
    async with backend.open() as storage:
        run = await storage.create_run(DOCS[:1])
        (u,) = await storage.list_uploads(run.id)
        await storage.complete_upload(u.id, CARD, usage=usage(3), cost_usd=0.123456789)
    async with backend.open() as storage:
        (u,) = await storage.list_uploads(run.id)
        assert (u.usage, u.cost_usd) == (usage(3), 0.123456789)
        got = await storage.get_run(run.id)
        assert (got.usage, got.cost_usd) == (usage(3), 0.123456789)


async def test_settlements_add_requests_and_429s_to_the_upload_and_the_run(
    storage: Storage,
) -> None:
    run = await storage.create_run(DOCS)
    a, b, c, d = await storage.list_uploads(run.id)
    assert (run.requests, run.rate_limited) == (0, 0)
    await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert await storage.release_upload(a.id, worker="w", requests=3, rate_limited=2)
    assert await storage.complete_upload(a.id, CARD, requests=2, rate_limited=1)
    assert await storage.fail_upload(b.id, "bad", requests=5, rate_limited=5)
    third = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert third is not None
    assert third.id == c.id
    done, _ = await storage.complete_and_claim(
        c.id,
        CARD,
        worker="w",
        attempt=third.attempts,
        run_id=run.id,
        lease_seconds=30,
        requests=1,
    )
    assert done
    # Counts without usage or cost record, and a settlement without counts adds none.
    assert await storage.complete_upload(d.id, CARD, usage=usage(1), cost_usd=0.5)
    by_id = {u.id: u for u in await storage.list_uploads(run.id)}
    got = [(by_id[u.id].requests, by_id[u.id].rate_limited) for u in (a, b, c, d)]
    assert got == [(5, 3), (5, 5), (1, 0), (0, 0)]
    again = await storage.get_run(run.id)
    assert (again.requests, again.rate_limited) == (11, 8)
    assert [(r.requests, r.rate_limited) for r in await storage.list_runs()] == [(11, 8)]
    await check_invariants(storage, run.id)


async def test_fenced_out_and_repeated_settlements_add_no_requests(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:1])
    (a,) = await storage.list_uploads(run.id)
    first = await storage.claim_upload(run.id, worker="old", lease_seconds=10)
    assert first is not None
    clock.advance(11)
    second = await storage.claim_upload(run.id, worker="new", lease_seconds=10)
    assert second is not None
    assert not await storage.complete_upload(a.id, CARD, worker="old", requests=4, rate_limited=3)
    assert not await storage.fail_upload(
        a.id, "x", attempt=first.attempts, requests=4, rate_limited=3
    )
    assert not await storage.release_upload(a.id, worker="old", requests=4, rate_limited=3)
    done, _ = await storage.complete_and_claim(
        a.id, CARD, worker="old", run_id=run.id, lease_seconds=10, requests=4, rate_limited=3
    )
    assert not done
    assert await storage.complete_upload(
        a.id, CARD, worker="new", attempt=second.attempts, requests=2, rate_limited=1
    )
    assert not await storage.complete_upload(a.id, CARD, requests=4, rate_limited=3)
    assert not await storage.fail_upload(a.id, "late", requests=4, rate_limited=3)
    assert not await storage.release_upload(a.id, requests=4, rate_limited=3)
    (a,) = await storage.list_uploads(run.id)
    got = await storage.get_run(run.id)
    assert (a.requests, a.rate_limited, got.requests, got.rate_limited) == (2, 1, 2, 1)
    await check_invariants(storage, run.id)


@pytest.mark.parametrize(
    ("counts", "named"),
    [
        ({"requests": -1}, "requests"),
        ({"requests": 1_000_001}, "requests"),
        ({"requests": 2**63}, "requests"),
        ({"requests": 1.0}, "requests"),
        ({"requests": True}, "requests"),
        ({"requests": "3"}, "requests"),
        ({"requests": 2, "rate_limited": -1}, "rate_limited"),
        ({"requests": 2, "rate_limited": 3}, "rate_limited"),
        ({"rate_limited": 1}, "rate_limited"),
        ({"requests": 2, "rate_limited": math.nan}, "rate_limited"),
    ],
)
async def test_request_counts_that_cannot_be_added_up_are_refused_naming_them(
    storage: Storage, counts: dict[str, object], named: str
) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.complete_upload(u.id, CARD, **counts),  # type: ignore[arg-type]
        lambda: storage.fail_upload(u.id, "x", **counts),  # type: ignore[arg-type]
        lambda: storage.release_upload(u.id, **counts),  # type: ignore[arg-type]
        lambda: storage.complete_and_claim(
            u.id,
            CARD,
            worker="w",
            run_id=run.id,
            lease_seconds=1,
            **counts,  # type: ignore[arg-type]
        ),
    ]
    await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    for call in calls:
        with pytest.raises(InputError, match=f"^{named} "):
            await call()
    (u,) = await storage.list_uploads(run.id)
    assert (u.status, u.requests, u.rate_limited) == (UploadStatus.LOADING, 0, 0)
    got = await storage.get_run(run.id)
    assert (got.requests, got.rate_limited) == (0, 0)


async def test_request_counts_survive_reopen(backend: Backend) -> None:
    async with backend.open() as storage:
        run = await storage.create_run(DOCS[:1])
        (u,) = await storage.list_uploads(run.id)
        await storage.complete_upload(u.id, CARD, requests=7, rate_limited=6)
    async with backend.open() as storage:
        (u,) = await storage.list_uploads(run.id)
        got = await storage.get_run(run.id)
        assert (u.requests, u.rate_limited, got.requests, got.rate_limited) == (7, 6, 7, 6)
