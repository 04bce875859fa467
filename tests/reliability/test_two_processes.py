"""Two cardmill processes on one run in one SQLite file."""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing

from cardmill import SQLiteStorage
from cardmill.testing import FakeAnthropicServer

from .conftest import cardmill_command, verify_database

KEY = "fake-key-two-processes"
DOCS = 40


class Gate:
    """A server latency that doubles as a progress hook, in a test whose clock is frozen.

    The fake server asks for a latency once per answer, after logging the request.
    ``reached`` is set at the ``reached_at``-th answer. With ``hold``, the answers after
    it wait one (virtual) second, which passes only when the test moves the clock.
    """

    def __init__(self, *, reached_at: int, hold: bool) -> None:
        self.reached_at = reached_at
        self.hold = hold
        self.answers = 0
        self.reached = trio.Event()

    def __call__(self, rng: random.Random) -> float:
        self.answers += 1
        if self.answers >= self.reached_at:
            self.reached.set()
        return 1.0 if self.hold and self.answers > self.reached_at else 0.0


async def progress_or_exit(event: trio.Event, process: trio.Process) -> None:
    """Wait for ``event``; a process that exits first ends the wait (and fails below)."""
    async with trio.open_nursery() as nursery:

        async def exited() -> None:
            await process.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(exited)
        await event.wait()
        nursery.cancel_scope.cancel()


def request_texts(server: FakeAnthropicServer) -> Counter[str]:
    return Counter(r.body["messages"][0]["content"][0]["text"] for r in server.requests)


async def test_analyze_and_resume_share_a_run(
    tmp_path: Path, env: dict[str, str], mock_clock: trio.testing.MockClock
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(DOCS):
        (folder / f"n{i:02d}.md").write_text(f"# N{i}\n\nNumber {i}. Unique text {i}.\n")
    db = Path(env["CARDMILL_DB"])
    # One server per process, so each one's requests are told apart.
    first_gate = Gate(reached_at=2, hold=True)
    second_gate = Gate(reached_at=1, hold=False)
    async with (
        FakeAnthropicServer(latency=first_gate, api_key=KEY) as first_server,
        FakeAnthropicServer(latency=second_gate, api_key=KEY) as second_server,
    ):
        outputs = [tmp_path / "first.out", tmp_path / "second.out"]
        logs = [tmp_path / "first.err", tmp_path / "second.err"]
        files = [open(f, "wb") for f in outputs + logs]  # noqa: ASYNC230, SIM115

        def run_process(server: FakeAnthropicServer, i: int) -> partial[Any]:
            run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
            return partial(
                trio.run_process, check=False, env=run_env, stdout=files[i], stderr=files[i + 2]
            )

        async with trio.open_nursery() as nursery:
            command = [*cardmill_command(), "analyze", str(folder), "--concurrency", "3"]
            first = await nursery.start(run_process(first_server, 0), [*command, "--json"])
            # The first process has had answers and the rest of its answers are held:
            # the second cannot find the run finished, whatever its start-up takes.
            await progress_or_exit(first_gate.reached, first)
            async with SQLiteStorage.open(db) as storage:
                (run,) = await storage.list_runs()
            command = [*cardmill_command(), "resume", run.id, "--concurrency", "3", "--json"]
            second = await nursery.start(run_process(second_server, 1), command)
            await progress_or_exit(second_gate.reached, second)
            first_gate.hold = False
            mock_clock.jump(1)
        for file in files:
            file.close()
    for process, log in zip((first, second), logs, strict=True):
        errors = log.read_bytes()
        assert process.returncode == 0, errors.decode()
        assert b"database is locked" not in errors
        assert b"Traceback" not in errors
    # Each process completed uploads of its own, and together all of them, once.
    # (A process that found the run finished reports no summary: it did nothing.)
    reports = [json.loads(out.read_text()) for out in outputs]
    done = [report.get("summary", {}).get("completed", 0) for report in reports]
    assert min(done) >= 1, done
    assert sum(done) == DOCS, done
    texts = [request_texts(first_server), request_texts(second_server)]
    assert [sum(t.values()) for t in texts] == done
    assert not set(texts[0]) & set(texts[1])
    assert len(texts[0] | texts[1]) == DOCS
    assert set((texts[0] + texts[1]).values()) == {1}
    retries = {
        r.headers.get("x-stainless-retry-count")
        for server in (first_server, second_server)
        for r in server.requests
    }
    assert retries == {"0"}
    (run,) = await verify_database(db, finished=True)
    assert run.completed_items == DOCS
    async with SQLiteStorage.open(db) as storage:
        attempts = {u.attempts for u in await storage.list_uploads(run.id)}
        assert attempts == {1}
