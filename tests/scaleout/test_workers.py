"""Several `cardmill worker` processes sharing runs through PostgreSQL."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import Document, RunStatus, UploadStatus
from cardmill.storage import PostgresStorage
from cardmill.testing import FakeAnthropicServer, check_invariants

from .. import pg
from ..cli.conftest import cardmill_command

KEY = "fake-key-scaleout"


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


def worker_env(schema: str, server: FakeAnthropicServer) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CARDMILL_"))}
    env.update(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url, CARDMILL_PG_SCHEMA=schema)
    return env


async def make_run(schema: str, n: int) -> str:
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        docs = (Document(f"doc{i:04d}.md", f"# Doc {i}\n\nText {i}.\n".encode()) for i in range(n))
        return (await storage.create_run(docs)).id


def texts(server: FakeAnthropicServer) -> Counter[str]:
    return Counter(
        r.body["messages"][0]["content"][0]["text"] for r in server.requests if r.status == 200
    )


@pytest.mark.slow
async def test_four_workers_one_run_of_a_thousand(schema: str, tmp_path: Path) -> None:
    run_id = await make_run(schema, 1000)
    async with FakeAnthropicServer(
        latency=0.05, requests_per_minute=4800, burst_seconds=2, api_key=KEY
    ) as server:
        env = worker_env(schema, server)
        logs = [tmp_path / f"w{i}.err" for i in range(4)]
        done: list[Any] = []

        async def worker(log: Path) -> None:
            with open(log, "wb") as err:  # noqa: ASYNC230
                command = [*cardmill_command(), "worker", "--db", pg.DSN, "--run", run_id]
                done.append(
                    await trio.run_process(
                        [*command, "--concurrency", "4"], env=env, check=False, stderr=err
                    )
                )

        async with trio.open_nursery() as nursery:
            for log in logs:
                nursery.start_soon(worker, log)
        for process, log in zip(done, logs, strict=False):
            assert process.returncode == 0, log.read_text()
        seen = texts(server)
    assert len(seen) == 1000
    assert set(seen.values()) == {1}  # no upload was completed twice
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        run = await storage.get_run(run_id)
        assert run.status == RunStatus.SUCCEEDED
        assert run.total_cards == 3000
        await check_invariants(storage, run_id)
    # Every worker did a share of the work.
    shares = [log.read_text() for log in logs]
    assert all("completed" in text for text in shares)


@pytest.mark.slow
async def test_killed_worker_uploads_are_retaken_after_the_lease(schema: str) -> None:
    run_id = await make_run(schema, 120)
    async with FakeAnthropicServer(latency=0.5, api_key=KEY) as server:
        env = worker_env(schema, server)
        command = [*cardmill_command(), "worker", "--db", pg.DSN, "--run", run_id, "--lease", "3"]
        run = partial(trio.run_process, env=env, check=False)
        async with trio.open_nursery() as nursery:
            # "elsewhere": as if on another machine, so only the lease can free its uploads.
            victim = await nursery.start(
                run, [*command, "--worker-name", "elsewhere", "--concurrency", "4"]
            )
            with trio.fail_after(30):
                while len(server.requests) < 8:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
                held = {
                    u.id
                    for u in await storage.list_uploads(run_id, UploadStatus.LOADING)
                    if (u.worker or "").startswith("elsewhere:")
                }
            assert held, "the victim held nothing when it died"
            survivors = [
                await nursery.start(run, [*command, "--concurrency", "4"]) for _ in range(2)
            ]
        assert victim.returncode == -signal.SIGKILL
        assert [s.returncode for s in survivors] == [0, 0]
    async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
        final = await storage.get_run(run_id)
        assert final.status == RunStatus.SUCCEEDED
        await check_invariants(storage, run_id)
        retaken = [u for u in await storage.list_uploads(run_id) if u.id in held]
        assert all(u.status == UploadStatus.COMPLETED and u.attempts >= 2 for u in retaken)
