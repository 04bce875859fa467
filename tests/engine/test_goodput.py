"""Whole-engine behaviour against a simulated API with a hidden limit, in virtual time.

These are exact, deterministic virtual-time runs (no wall clock). The benchmark
(benchmarks/ratelimit.py) reports the same figures over many seeds and scenarios.
"""

from __future__ import annotations

import random

import trio
import trio.testing

from cardmill import MemoryStorage, RunStatus
from cardmill.engine import Engine
from cardmill.testing import SimulatedAPI, check_invariants, lognormal

from .conftest import docs


async def test_speedup_at_concurrency_two_when_no_limit_binds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    elapsed = {}
    for concurrency in (1, 2):
        storage = MemoryStorage()
        run = await storage.create_run(docs(100))
        summary = await Engine(storage, SimulatedAPI(latency=1.0), concurrency=concurrency).execute(
            run.id
        )
        elapsed[concurrency] = summary.elapsed
    assert elapsed[1] / elapsed[2] == 2.0


async def test_rate_bound_run_finds_the_hidden_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = SimulatedAPI(requests_per_minute=120, latency=lognormal(1.0, 0.3), seed=7)
    storage = MemoryStorage()
    run = await storage.create_run(docs(300))
    summary = await Engine(storage, api, concurrency=8, rng=random.Random(7)).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    await check_invariants(storage, run.id)
    stats = api.statistics()
    assert stats.accepted == 300
    first_429 = stats.rejected_at[0]
    steady = [t for t in stats.accepted_at if t >= first_429 + 20]
    goodput = (len(steady) - 1) / (steady[-1] - steady[0]) / 2.0
    assert goodput >= 0.9
    assert stats.rate_limited / stats.requests <= 0.02
