"""SIGTERM (``docker stop``, systemd, Kubernetes) stops a command as Ctrl-C does: in-flight
uploads back to PENDING, the run resumable, the way to resume said, exit status 143."""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import Document, Run, RunStatus, SQLiteStorage, UploadStatus
from cardmill.testing import FakeAnthropicServer, check_invariants

from .conftest import cardmill_command
from .test_cli import cardmill

KEY = "fake-key-sigterm"
DOCS = 6


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(DOCS):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\nNote {i} says one thing, then another.\n")
    return docs


def _env(env: dict[str, str], server: FakeAnthropicServer) -> dict[str, str]:
    return {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}


async def _until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(30):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def _terminated(
    args: list[str], env: dict[str, str], err: Path, ready: Callable[[], bool]
) -> tuple[int, str]:
    """``cardmill ARGS`` sent SIGTERM once ``ready()``: its exit status and stderr."""
    with err.open("wb") as stderr:
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    [*cardmill_command(), *args],
                    check=False,
                    env=env,
                    capture_stdout=True,
                    stderr=stderr,
                )
            )
            await _until(ready)
            process.send_signal(signal.SIGTERM)
    return process.returncode, await trio.Path(err).read_text()


async def _resumable(db: str) -> str:
    """The database's one run: CANCELLED, nothing LOADING, nothing COMPLETED, invariants
    exact. Returns its id."""
    async with SQLiteStorage.open(db) as storage:
        (run,) = await storage.list_runs()
        await check_invariants(storage, run.id)
        assert run.status == RunStatus.CANCELLED, run
        assert await storage.list_uploads(run.id, UploadStatus.LOADING) == []
        assert len(await storage.list_uploads(run.id, UploadStatus.PENDING)) == DOCS
        return run.id


async def _resume_finishes(run_id: str, env: dict[str, str], server: FakeAnthropicServer) -> None:
    """``cardmill resume`` finishes the run; each document was sent once, but the two
    that were in flight (never answered) once more."""
    hung = [_note(r.body) for r in server.requests[:2]]
    resumed = await cardmill("resume", run_id, "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr.decode()
    async with SQLiteStorage.open(env["CARDMILL_DB"]) as storage:
        run = await storage.get_run(run_id)
        await check_invariants(storage, run_id)
        assert run.status == RunStatus.SUCCEEDED
        assert len(await storage.list_cards(run_id)) == run.total_cards == DOCS * 3
    sent = Counter(_note(r.body) for r in server.requests)
    assert sent == Counter([f"Note {i}" for i in range(DOCS)] + hung), sent


async def _pending_run(db: str, folder: Path) -> Run:
    """A run of the folder's documents, made and not started."""
    documents = await trio.to_thread.run_sync(_documents, folder)
    async with SQLiteStorage.open(db) as storage:
        return await storage.create_run(documents)


def _documents(folder: Path) -> list[Document]:
    return [Document(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


def _note(body: Any) -> str:
    found = re.search(r"Note \d+", str(body))
    return found.group(0) if found else "?"


@pytest.mark.parametrize("command", ["analyze", "resume"])
async def test_sigterm_leaves_the_run_resumable_and_says_how(
    command: str, folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    db = env["CARDMILL_DB"]
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = _env(env, server)
        if command == "analyze":
            args = ["analyze", str(folder), "--concurrency", "2"]
        else:
            made = await _pending_run(db, folder)
            args = ["resume", made.id, "--concurrency", "2"]
        server.inject("hang", "hang")  # two uploads in flight, for good
        code, said = await _terminated(
            args, run_env, tmp_path / "err.txt", lambda: len(server.requests) >= 2
        )
        assert code == 143, said
        run_id = await _resumable(db)
        assert f"terminated (SIGTERM); run {run_id} is resumable" in said, said
        assert f"Resume with: cardmill resume {run_id}" in said, said
        assert "Traceback" not in said
        await _resume_finishes(run_id, run_env, server)


async def test_sigterm_stops_a_worker_and_says_how_to_resume(
    folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    db = env["CARDMILL_DB"]
    made = await _pending_run(db, folder)
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = _env(env, server)
        server.inject("hang", "hang")
        code, said = await _terminated(
            ["worker", "--provider", "anthropic", "--concurrency", "2"],
            run_env,
            tmp_path / "err.txt",
            lambda: len(server.requests) >= 2,
        )
        assert code == 143, said
        assert await _resumable(db) == made.id
        assert f"cardmill worker: terminated (SIGTERM); the uploads of run {made.id}" in said
        assert f"Resume with: cardmill resume {made.id}" in said, said
        assert "Traceback" not in said
        await _resume_finishes(made.id, run_env, server)


_TWICE = """
import os, signal, sys
import trio
from cardmill.cli._signals import EXIT_TERMINATED, Terminated, terminable

async def work():
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        await trio.sleep_forever()
    finally:
        # A second SIGTERM while the command unwinds, once the first was taken: it is
        # still pending when the receiver closes.
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.CancelScope(shield=True):
            await trio.sleep(0.01)

try:
    trio.run(terminable, work)
except Terminated:
    sys.exit(EXIT_TERMINATED)
"""


async def test_a_second_sigterm_while_stopping_still_ends_with_status_143() -> None:
    import sys

    done = await trio.run_process([sys.executable, "-c", _TWICE], check=False)
    assert done.returncode == 143  # not -15, killed by the signal delivered again
