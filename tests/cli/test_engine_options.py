"""Every command builds its engine the same way: --lease, and the shared rate limit."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest
import trio

from cardmill.testing import FakeAnthropicServer

from .. import pg
from .conftest import cardmill_command

KEY = "fake-key-engine-options"


def lease_left(db: Path) -> float:
    """Seconds until the one LOADING upload's lease expires, by this machine's clock."""
    with sqlite3.connect(db) as conn:
        (expires,) = conn.execute(
            "SELECT lease_expires FROM uploads WHERE status = 'loading'"
        ).fetchone()
    return float(expires) - time.time()


async def hold_one_request(
    args: list[str], env: dict[str, str], server: FakeAnthropicServer, db: Path
) -> float:
    """Start the command, wait until its request hangs at the server, read the lease,
    then interrupt the command."""
    seen = len(server.requests)
    server.inject("hang")
    async with trio.open_nursery() as nursery:
        command = [*cardmill_command(), *args]
        process = await nursery.start(partial(trio.run_process, command, env=env, check=False))
        with trio.fail_after(60):
            while len(server.requests) <= seen:  # noqa: ASYNC110
                await trio.sleep(0.05)
        left = lease_left(db)
        process.send_signal(signal.SIGINT)
    return left


async def test_lease_option_is_honoured_by_analyze_and_resume(
    tmp_path: Path, env: dict[str, str]
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    db = Path(env["CARDMILL_DB"])
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        left = await hold_one_request(
            ["analyze", str(doc), "--lease", "5", "-q"], run_env, server, db
        )
        assert 0 < left <= 5.5
        with sqlite3.connect(db) as conn:
            (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
        left = await hold_one_request(["resume", run_id, "--lease", "7", "-q"], run_env, server, db)
        assert 5.5 < left <= 7.5


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


async def test_analyze_on_postgres_shares_the_rate_limit_with_workers(
    tmp_path: Path, env: dict[str, str], schema: str
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSome text.\n")
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {
            **env,
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "CARDMILL_PG_SCHEMA": schema,
        }
        done = await trio.run_process(
            [*cardmill_command(), "analyze", str(doc), "--db", pg.DSN, "-q"],
            env=run_env,
            check=False,
            capture_stderr=True,
            capture_stdout=True,
        )
    assert done.returncode == 0, done.stderr.decode()
    with psycopg.connect(pg.DSN) as conn:
        names = [n for (n,) in conn.execute(f'SELECT name FROM "{schema}".rate_limits')]
    assert len(names) == 1
    assert names[0].startswith("anthropic:")
    assert KEY not in names[0]
