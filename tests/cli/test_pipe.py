"""A reader that goes away (`cardmill export RUN | head -1`) ends a command the way it
ends a Unix tool: quietly, with the status a shell shows for SIGPIPE."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import trio

from cardmill import CardDraft, Document, SQLiteStorage

from .conftest import cardmill_command
from .test_cli import cardmill

CLOSED_PIPE = 141  # 128 + SIGPIPE


@pytest.fixture
async def finished_run(env: dict[str, str], tmp_path: Path) -> str:
    doc = tmp_path / "one.md"
    doc.write_text("# One\n\nA card here. And a second sentence.\n")
    done = await cardmill("analyze", str(doc), "-q", "--json", env=env)
    assert done.returncode == 0, done.stderr.decode()
    run_id: str = json.loads(done.stdout)["run"]["id"]
    return run_id


async def into_a_closed_pipe(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the command with its stdout a pipe nobody reads: the reader closed its end
    before the command wrote anything, as `| true` may."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = await trio.run_process(
            [*cardmill_command(), *args],
            stdout=write_end,
            capture_stderr=True,
            check=False,
            env=env,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


COMMANDS = [
    ["runs"],
    ["runs", "--json"],
    ["show", "RUN"],
    ["show", "RUN", "--json"],
    ["export", "RUN"],
    ["export", "RUN", "--format", "md"],
    ["export", "RUN", "--format", "csv"],
    ["resume", "RUN", "-q"],
    ["resume", "RUN", "-q", "--json"],
    ["--help"],
    ["--version"],
    ["export", "--help"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
async def test_every_command_ends_quietly_when_its_reader_is_gone(
    args: list[str], env: dict[str, str], finished_run: str
) -> None:
    args = [finished_run if a == "RUN" else a for a in args]
    status, stderr = await into_a_closed_pipe(args, env)
    assert (status, stderr.decode()) == (CLOSED_PIPE, "")


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
async def test_analyze_finishes_its_run_and_ends_quietly_when_its_reader_is_gone(
    json_flag: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "one.md"
    doc.write_text("# One\n\nA card here.\n")
    status, stderr = await into_a_closed_pipe(["analyze", str(doc), "-q", *json_flag], env)
    assert (status, stderr.decode()) == (CLOSED_PIPE, "")
    (run,) = json.loads((await cardmill("runs", "--json", env=env)).stdout)
    assert run["status"] == "succeeded"


async def test_export_into_head_stops_quietly_after_the_first_line(
    env: dict[str, str],
) -> None:
    async with SQLiteStorage.open(env["CARDMILL_DB"]) as storage:
        run = await storage.create_run(Document(f"doc{i:03d}.md", b"x") for i in range(100))
        drafts = [CardDraft(f"Card {n}", "A body of some length. " * 10) for n in range(50)]
        async for upload in storage.iter_uploads(run.id):
            await storage.complete_upload(upload.id, drafts)
    # 5,000 cards, over a megabyte: far more than a pipe holds, so the export is still
    # writing when the reader goes.
    process = await trio.lowlevel.open_process(
        [*cardmill_command(), "export", run.id, "--format", "md"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        first = await process.stdout.receive_some(100)
        await process.stdout.aclose()  # `head -1` has its line and exits
        stderr = b""
        with trio.fail_after(60):
            while chunk := await process.stderr.receive_some():
                stderr += chunk
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert first.startswith(b"# ")
    assert (status, stderr.decode()) == (CLOSED_PIPE, "")


# -- progress on a stderr that is closed or whose reader went away ---------------------


class _GoneReader:
    """A stderr whose reader has exited: every write raises EPIPE."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


async def test_progress_into_a_closed_pipe_is_silenced_not_fatal() -> None:
    from typing import Any, cast

    from cardmill import Run, Upload
    from cardmill.cli._progress import Progress
    from cardmill.engine import UploadFailed

    stream = _GoneReader()
    progress = Progress(Run("run-1", "r", total_items=2), cast(Any, stream), live=False)
    upload = Upload("up-1", "run-1", "a.md", "text/markdown", 1, "0" * 64)
    progress(UploadFailed(upload, "a.md: empty document", 1, 0.0))  # must not raise
    progress.draw()
    progress.clear()
    assert stream.writes == 1  # silenced after the first failure
    assert (progress.done, progress.failed) == (1, 1)


async def test_a_run_with_stderr_closed_finishes(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "one.md").write_text("# One\n\nA card here. And a second sentence.\n")
    (folder / "empty.md").write_bytes(b"")  # its failure prints a progress line
    done = await trio.run_process(
        [*cardmill_command(), "analyze", str(folder), "--json"],
        capture_stdout=True,
        check=False,
        env=env,
        preexec_fn=lambda: os.close(2),
    )
    assert done.returncode == 1  # PARTIAL: the empty file failed, the rest completed
    run = json.loads(done.stdout)["run"]
    assert (run["completed_items"], run["failed_items"], run["status"]) == (1, 1, "partial")
    async with SQLiteStorage.open(env["CARDMILL_DB"]) as storage:
        from cardmill.testing import check_invariants

        await check_invariants(storage, run["id"])
