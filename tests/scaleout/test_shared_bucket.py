"""SharedBucket through PostgreSQL: one pace for every worker, on the database's clock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import trio

from cardmill.engine import Limits, SharedBucket
from cardmill.storage import PostgresStorage

from .. import pg


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


async def test_a_worker_with_a_fast_clock_cannot_take_every_slot(schema: str) -> None:
    # Worker A's clock runs a minute ahead of B's. The shared pace is one request a
    # second: after A's admission, B's must come about a second later by the database's
    # clock, not a minute later by A's.
    def ahead() -> float:
        return time.time() + 60.0

    limits = Limits(requests_per_minute=60)
    async with (
        PostgresStorage.open(pg.DSN, schema=schema, clock=ahead) as a_store,
        PostgresStorage.open(pg.DSN, schema=schema) as b_store,
    ):
        a = SharedBucket(a_store, "key", limits)
        b = SharedBucket(b_store, "key", limits)
        first = await a.acquire()
        with trio.fail_after(30):
            second = await b.acquire()
        assert 0.9 <= second.sent_at - first.sent_at < 5.0
        # And the other way round: A gets no slot before B's has passed.
        with trio.fail_after(30):
            third = await a.acquire()
        assert 0.9 <= third.sent_at - second.sent_at < 5.0
