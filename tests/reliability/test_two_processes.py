"""Two cardmill processes on one run in one SQLite file."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import trio

from cardmill import SQLiteStorage
from cardmill.testing import FakeAnthropicServer

from .conftest import cardmill_command, verify_database

KEY = "fake-key-two-processes"


async def test_analyze_and_resume_share_a_run(tmp_path: Path, env: dict[str, str]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"n{i:02d}.md").write_text(f"# N{i}\n\nNumber {i}. Unique text {i}.\n")
    db = Path(env["CARDMILL_DB"])
    async with FakeAnthropicServer(latency=0.25, api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        logs = [tmp_path / "first.err", tmp_path / "second.err"]
        files = [open(log, "wb") for log in logs]  # noqa: ASYNC230, SIM115
        run_process = partial(trio.run_process, check=False, env=run_env)
        async with trio.open_nursery() as nursery:
            first = await nursery.start(
                partial(run_process, stderr=files[0]),
                [*cardmill_command(), "analyze", str(folder), "--concurrency", "3"],
            )
            with trio.fail_after(30):
                while not any(r.status == 200 for r in server.requests):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            async with SQLiteStorage.open(db) as storage:
                (run,) = await storage.list_runs()
            second = await nursery.start(
                partial(run_process, stderr=files[1]),
                [*cardmill_command(), "resume", run.id, "--concurrency", "3"],
            )
        for file in files:
            file.close()
        for process, log in zip((first, second), logs, strict=True):
            errors = log.read_bytes()
            assert process.returncode == 0, errors.decode()
            assert b"database is locked" not in errors
            assert b"Traceback" not in errors
        # Both worked on the run; no document went to the model twice.
        texts = Counter(
            request.body["messages"][0]["content"][0]["text"] for request in server.requests
        )
        assert len(texts) == 40
        assert set(texts.values()) == {1}
        user_agents = {r.headers.get("x-stainless-retry-count") for r in server.requests}
        assert user_agents == {"0"}
    (run,) = await verify_database(db, finished=True)
    assert run.completed_items == 40
    async with SQLiteStorage.open(db) as storage:
        workers = {u.attempts for u in await storage.list_uploads(run.id)}
        assert workers == {1}
