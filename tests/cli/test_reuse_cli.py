"""A folder run again pays only for what changed: requests counted at the loopback server."""

from __future__ import annotations

import json
import math
import random
import re
import signal
import sqlite3
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import Document, SQLiteStorage
from cardmill.storage import PostgresStorage
from cardmill.testing import FakeAnthropicServer, check_invariants

from .. import pg
from .conftest import cardmill_command
from .test_cli import cardmill, one_line_error

KEY = "fake-key-reuse"
_NAME = re.compile(r"Make cards from the document '([^']+)'")


def sent(server: FakeAnthropicServer) -> Counter[str]:
    """The requests the server received for each document (by its name)."""
    names: Counter[str] = Counter()
    for request in server.requests:
        if request.path.endswith("/v1/messages"):
            found = _NAME.search(json.dumps(request.body))
            assert found is not None
            names[Path(found.group(1)).name] += 1
    return names


def notes(folder: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(start, start + count):
        (folder / f"note{i:02d}.md").write_text(f"# Note {i}\n\nThe {i}th note says one thing.\n")
    return folder


def env_for(env: dict[str, str], server: FakeAnthropicServer) -> dict[str, str]:
    return {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}


async def analyze(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = await cardmill("analyze", *args, "--json", "-q", env=env)
    assert done.returncode == 0, done.stderr.decode()
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def test_three_added_and_one_changed_send_four_requests(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes", 6)
    async with FakeAnthropicServer(api_key=KEY) as server:
        first = await analyze(str(folder), env=env_for(env, server))
        assert sum(sent(server).values()) == 6
        notes(folder, 3, start=6)
        (folder / "note02.md").write_text("# Note 2\n\nChanged: it says something else now.\n")
        server.requests.clear()
        planned = await cardmill("analyze", str(folder), "--dry-run", env=env_for(env, server))
        assert planned.returncode == 0, planned.stderr.decode()
        assert "5 of 9 documents answered before" in planned.stderr.decode()
        assert planned.stdout.decode().count("(reused: answered before)") == 5
        second = await cardmill("analyze", str(folder), env=env_for(env, server))
        assert second.returncode == 0, second.stderr.decode()
        names = sent(server)
    assert names == Counter({f"note{i:02d}.md": 1 for i in (2, 6, 7, 8)})
    text = second.stdout.decode()
    assert re.search(r"^reuse +5 reused, 4 sent, \$\d+\.\d+ saved \([\d,]+ tokens\)$", text, re.M)
    async with SQLiteStorage.open(env["CARDMILL_DB"]) as storage:
        old, new = await storage.list_runs()
        await check_invariants(storage, new.id)
        assert (new.reused_items, new.requests, new.completed_items) == (5, 4, 9)
        by_name = {u.name: u for u in await storage.list_uploads(old.id)}
        reused = [u for u in await storage.list_uploads(new.id) if u.reused]
        assert sorted(Path(u.name).name for u in reused) == [
            f"note{i:02d}.md" for i in (0, 1, 3, 4, 5)
        ]
        assert new.saved_cost_usd == pytest.approx(sum(by_name[u.name].cost_usd for u in reused))
        assert new.saved_cost_usd > 0
        assert new.cost_usd == pytest.approx(
            sum(u.cost_usd for u in await storage.list_uploads(new.id))
        )
        for upload in reused:  # the earlier cards, copied: this run's own
            copies = await storage.list_cards(new.id, upload.id)
            earlier = await storage.list_cards(old.id, by_name[upload.name].id)
            assert [c.draft for c in copies] == [c.draft for c in earlier]
            assert {c.upload_id for c in copies} == {upload.id}
    shown = (await cardmill("show", new.id, env=env)).stdout.decode()
    assert shown.count("(reused)") == 5
    assert first["run"]["reused_items"] == 0


async def test_a_new_recipe_or_model_or_no_reuse_sends_everything_again(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes", 3)
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = env_for(env, server)
        await analyze(str(folder), env=run_env)
        for extra in (["--recipe", "flashcards"], ["--model", "claude-sonnet-4-5"], ["--no-reuse"]):
            server.requests.clear()
            report = await analyze(str(folder), *extra, env=run_env)
            assert sum(sent(server).values()) == 3, extra
            assert report["run"]["reused_items"] == 0
        # Each of those answers is kept too: the same options again send nothing.
        server.requests.clear()
        report = await analyze(str(folder), "--recipe", "flashcards", env=run_env)
        assert sum(sent(server).values()) == 0
        assert report["run"]["reused_items"] == 3


async def test_like_runs_a_folder_again_as_an_earlier_run_was(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes", 2)
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = env_for(env, server)
        first = await analyze(str(folder), "--recipe", "key-points", env=run_env)
        notes(folder, 1, start=2)
        server.requests.clear()
        again = await analyze(str(folder), "--like", first["run"]["id"], env=run_env)
    assert sum(sent(server).values()) == 1
    assert again["run"]["recipe"].startswith("key-points@")
    assert (again["run"]["reused_items"], again["run"]["model"]) == (2, first["run"]["model"])
    missing = await cardmill("analyze", str(folder), "--like", "run-nope", env=env)
    assert missing.returncode != 0
    assert "run-nope" in missing.stderr.decode()


async def test_cache_shows_and_forgets_what_is_kept(env: dict[str, str], tmp_path: Path) -> None:
    folder = notes(tmp_path / "notes", 3)
    empty = await cardmill("cache", "--json", env=env)
    assert json.loads(empty.stdout)["answers"] == 0
    await analyze(str(folder), "--provider", "extractive", env=env)
    shown = json.loads((await cardmill("cache", "--json", env=env)).stdout)
    assert shown["answers"] == 3
    assert shown["size"] > 0
    assert shown["models"] == {"": 3}
    kept = await cardmill("cache", "clear", "--before", "2000-01-01", env=env)
    assert kept.stdout.decode().startswith("forgot 0 answers")
    bad = await cardmill("cache", "clear", "--before", "yesterday", env=env)
    assert bad.returncode == 2
    assert one_line_error(bad.stderr).startswith("cardmill: error: --before: 'yesterday' is not")
    gone = await cardmill("cache", "clear", env=env)
    assert gone.stdout.decode().startswith("forgot 3 answers")
    assert json.loads((await cardmill("cache", "--json", env=env)).stdout)["answers"] == 0


def kept_answers(db: str, run_id: str) -> set[str]:
    """The documents of a run whose answer is kept (completed, or kept before that)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT u.name FROM uploads u JOIN answers a ON a.key = u.answer_key"
            " WHERE u.run_id = ? AND a.answered = 1",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    return {Path(name).name for (name,) in rows}


class HoldAnswer:
    """A latency that holds back the server's ``n``-th answer for good, and says so."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.answers = 0
        self.reached = trio.Event()

    def __call__(self, rng: random.Random) -> float:
        self.answers += 1
        if self.answers == self.n:
            self.reached.set()
            return math.inf
        return 0.02


async def test_kill_9_during_the_second_run_then_resume_sends_each_request_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes", 4)
    db = env["CARDMILL_DB"]
    async with FakeAnthropicServer(api_key=KEY) as server:
        await analyze(str(folder), env=env_for(env, server))
    notes(folder, 8, start=4)
    holder = HoldAnswer(5)
    async with FakeAnthropicServer(api_key=KEY, latency=holder) as server:
        run_env = env_for(env, server)
        command = [*cardmill_command(), "analyze", str(folder), "--concurrency", "3", "-q"]
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(trio.run_process, command, check=False, env=run_env, capture_stdout=True)
            )

            async def wake_on_exit() -> None:
                await process.wait()
                holder.reached.set()

            nursery.start_soon(wake_on_exit)
            await holder.reached.wait()
            process.send_signal(signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        async with SQLiteStorage.open(db) as storage:
            run = (await storage.list_runs())[-1]
        answered = kept_answers(db, run.id)  # answers that reached the process before it died
        assert answered
        resumed = await cardmill("resume", run.id, "-q", env=run_env)
        assert resumed.returncode == 0, resumed.stderr.decode()
        names = sent(server)
    # Every new document was sent, and every answer that came back was paid once: only
    # the requests in flight at the kill (at most --concurrency) are sent again.
    assert set(names) == {f"note{i:02d}.md" for i in range(4, 12)}
    fresh = {f"note{i:02d}.md" for i in range(4, 12)}
    assert answered & fresh
    assert all(names[name] == (1 if name in fresh else 0) for name in answered)
    assert len([name for name, n in names.items() if n > 1]) <= 3
    assert all(n <= 2 for n in names.values())
    async with SQLiteStorage.open(db) as storage:
        done = await storage.get_run(run.id)
        await check_invariants(storage, run.id)
    assert (done.completed_items, done.reused_items) == (12, 4)


@pytest.mark.slow
async def test_two_postgres_workers_racing_on_the_same_new_documents_send_each_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    """One run holds every document twice; two worker processes, two uploads in flight
    each, claim copies of the same content at the same time."""
    pg.require()
    schema = pg.new_schema()
    try:
        async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
            run = await storage.create_run(
                Document(f"copy{c}-{i}.md", f"# Doc {i}\n\nThe same words, {i}.\n".encode())
                for i in range(4)
                for c in range(2)
            )
        async with FakeAnthropicServer(api_key=KEY, latency=0.4) as server:
            run_env = {**env_for(env, server), "CARDMILL_PG_SCHEMA": schema}
            command = [*cardmill_command(), "worker", "--db", pg.DSN, "--concurrency", "2"]
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(
                        partial(
                            trio.run_process,
                            command,
                            check=True,
                            env=run_env,
                            capture_stdout=True,
                            capture_stderr=True,
                        )
                    )
            per_text = Counter(
                json.dumps(r.body["messages"][0]["content"][0]) for r in server.requests
            )
        assert len(server.requests) == 4
        assert set(per_text.values()) == {1}
        async with PostgresStorage.open(pg.DSN, schema=schema) as storage:
            done = await storage.get_run(run.id)
            await check_invariants(storage, run.id)
        assert (done.completed_items, done.reused_items, done.requests) == (8, 4, 4)
    finally:
        pg.drop_schema(schema)


def contents(path: Path) -> bytes:
    return path.read_bytes()


def set_user_version(db: Path, version: int) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


async def test_a_dry_run_writes_nothing_to_any_database(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes", 2)
    db = Path(env["CARDMILL_DB"])
    await analyze(str(folder), "--provider", "extractive", env=env)
    current = contents(db)
    planned = await cardmill("analyze", str(folder), "--dry-run", env=env)
    assert "2 of 2 documents answered before" in planned.stderr.decode()
    assert contents(db) == current
    # A database of another schema version is not migrated to look: nothing is reused.
    set_user_version(db, 6)
    older = contents(db)
    planned = await cardmill("analyze", str(folder), "--dry-run", env=env)
    assert planned.returncode == 0, planned.stderr.decode()
    assert "answered before" not in planned.stderr.decode()
    assert contents(db) == older
    empty = tmp_path / "empty.db"
    empty.touch()
    planned = await cardmill("analyze", str(folder), "--dry-run", "--db", str(empty), env=env)
    assert planned.returncode == 0, planned.stderr.decode()
    assert contents(empty) == b""


async def test_like_a_run_of_a_programs_own_provider_takes_the_provider_given(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = notes(tmp_path / "notes", 1)
    async with SQLiteStorage.open(env["CARDMILL_DB"]) as storage:
        run = await storage.create_run([Document("x.md", b"# X\n\nWords.\n")], provider="mine")
    refused = await cardmill("analyze", str(folder), "--like", run.id, env=env)
    assert refused.returncode == 2
    assert "made with provider 'mine'" in one_line_error(refused.stderr)
    done = await analyze(str(folder), "--like", run.id, "--provider", "extractive", env=env)
    assert done["run"]["provider"] == "extractive"
