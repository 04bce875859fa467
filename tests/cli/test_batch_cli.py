"""`analyze --batch`, `resume`, `cancel` and `show` with batches, in process: the
database is a MemoryStorage shared by the commands, the provider the in-process batch API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from cardmill import Document, MemoryStorage, Recipe, RunStatus, UploadStatus
from cardmill.cli import main
from cardmill.cli._progress import Progress
from cardmill.engine import BatchProgress, BatchSubmitted
from cardmill.model import BatchCounts, BatchState
from cardmill.testing import check_invariants

from ..engine.batch_fakes import OK, PERMANENT, FakeBatchAPI


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a", "b", "c"):
        (docs / f"{name}.md").write_text(f"# {name}\n\nWhat {name} says, at some length.\n")
    return docs


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[MemoryStorage, FakeBatchAPI]:
    storage = MemoryStorage()
    api = FakeBatchAPI(seconds_per_request=0.0, clock=time.monotonic)

    @contextlib.asynccontextmanager
    async def open_storage(db: str, *, create: bool) -> AsyncIterator[MemoryStorage]:
        await trio.lowlevel.checkpoint()
        yield storage

    def make_provider(choice: str, model: str | None, recipe: Recipe | None = None) -> Any:
        if choice == "extractive":
            from cardmill.providers import ExtractiveProvider

            return ExtractiveProvider(), "the offline extractive provider"
        return api, "the in-process batch API"

    for module in ("cardmill.cli._runner", "cardmill.cli._commands"):
        monkeypatch.setattr(f"{module}.open_storage", open_storage, raising=False)
    monkeypatch.setattr("cardmill.cli._runner.make_provider", make_provider)
    return storage, api


def _run_id(output: str) -> str:
    return output.split("run ", 1)[1].split()[0]


def test_analyze_batch_sends_one_batch_and_shows_it(
    folder: Path, world: tuple[MemoryStorage, FakeBatchAPI]
) -> None:
    storage, api = world
    result = CliRunner().invoke(main, ["analyze", str(folder), "--batch", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"]["status"] == "succeeded"
    assert data["summary"]["requests"] == 3
    assert len(api.submissions) == 1
    run_id = data["run"]["id"]
    trio.run(check_invariants, storage, run_id)

    shown = CliRunner().invoke(main, ["show", run_id])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("BATCH"))
    assert "DONE" in lines[header + 1]
    assert lines[header + 1].endswith("msgbatch_0001")
    as_json = json.loads(CliRunner().invoke(main, ["show", run_id, "--json"]).stdout)
    assert [b["state"] for b in as_json["batches"]] == ["done"]


def test_show_lists_failed_uploads_with_their_reason_then_the_batches(
    folder: Path, world: tuple[MemoryStorage, FakeBatchAPI]
) -> None:
    _, api = world
    api.outcome = lambda name, n: PERMANENT if name.endswith("b.md") else OK
    result = CliRunner().invoke(main, ["analyze", str(folder), "--batch", "--json"])
    assert result.exit_code == 1, result.output
    run_id = json.loads(result.stdout)["run"]["id"]
    lines = CliRunner().invoke(main, ["show", run_id]).stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAILED"))
    assert lines[failed].endswith("b.md")
    assert lines[failed + 1].strip() == "invalid_request_error: bad image"
    assert lines[-3:-1] == ["", lines[-2]]
    assert lines[-2].startswith("BATCH")
    assert lines[-1].endswith("msgbatch_0001")


def test_batch_with_a_provider_without_batches_is_one_line_and_makes_no_run(
    folder: Path, world: tuple[MemoryStorage, FakeBatchAPI]
) -> None:
    storage, _ = world
    result = CliRunner().invoke(
        main, ["analyze", str(folder), "--batch", "--provider", "extractive"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "cardmill: error: --batch: the extractive provider cannot send batches; "
        "use --provider anthropic\n"
    )
    assert trio.run(storage.list_runs) == []


def _interrupt_at_first_poll(api: FakeBatchAPI, *, twice: bool) -> None:
    def ctrl_c(polls: int) -> None:
        if polls == 1:
            os.kill(os.getpid(), signal.SIGINT)
            if twice:
                threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    api.seconds_per_request = 3600.0
    api.on_poll = ctrl_c


def test_ctrl_c_once_leaves_the_batch_live_and_says_how_to_collect_or_cancel(
    folder: Path, world: tuple[MemoryStorage, FakeBatchAPI]
) -> None:
    storage, api = world
    _interrupt_at_first_poll(api, twice=False)
    result = CliRunner().invoke(main, ["analyze", str(folder), "--batch"])
    assert result.exit_code == 130, result.output
    run_id = _run_id(result.stderr.split("batches of ")[1])
    assert f"Collect their results with: cardmill resume {run_id}" in result.stderr
    assert f"cancel them with: cardmill cancel {run_id}" in result.stderr
    assert result.stderr.count("interrupted") == 1
    [batch] = trio.run(storage.list_batches, run_id)
    assert batch.state == BatchState.LIVE
    assert "cancel" not in api.calls

    # later: the batch has ended; resume collects it without sending anything again
    api.seconds_per_request = 0.0
    resumed = CliRunner().invoke(main, ["resume", run_id])
    assert resumed.exit_code == 0, resumed.output
    assert "collecting 1 open batch" in resumed.stderr
    assert len(api.submissions) == 1
    assert trio.run(storage.get_run, run_id).status == RunStatus.SUCCEEDED


def test_ctrl_c_twice_cancels_the_batches(
    folder: Path, world: tuple[MemoryStorage, FakeBatchAPI]
) -> None:
    storage, api = world
    api.cancel_delay = 0.0
    _interrupt_at_first_poll(api, twice=True)
    result = CliRunner().invoke(main, ["analyze", str(folder), "--batch"])
    assert "cancel" in api.calls, result.output
    assert "cancelling the batches of run" in result.stderr
    assert result.exit_code == 1, result.output  # CANCELLED: the run is not done
    run_id = json.loads(CliRunner().invoke(main, ["runs", "--json"]).stdout)[0]["id"]
    run = trio.run(storage.get_run, run_id)
    assert run.status == RunStatus.CANCELLED
    uploads = trio.run(storage.list_uploads, run_id)
    assert {u.status for u in uploads} == {UploadStatus.PENDING}


def test_cancel_command_cancels_live_batches(
    folder: Path, world: tuple[MemoryStorage, FakeBatchAPI]
) -> None:
    storage, api = world
    _interrupt_at_first_poll(api, twice=False)
    first = CliRunner().invoke(main, ["analyze", str(folder), "--batch"])
    run_id = _run_id(first.stderr.split("batches of ")[1])
    api.cancel_delay = 0.0
    cancelled = CliRunner().invoke(main, ["cancel", run_id])
    assert cancelled.exit_code == 1, cancelled.output
    assert "cancelling 1 batch" in cancelled.stderr
    assert "cancel" in api.calls
    [batch] = trio.run(storage.list_batches, run_id)
    assert batch.state == BatchState.DONE
    assert batch.counts.canceled == 3
    assert "resume: cardmill resume" in cancelled.stdout
    again = CliRunner().invoke(main, ["cancel", run_id])
    assert again.stderr.startswith(f"cardmill: run {run_id} has no open batches")


def test_the_progress_line_shows_the_batch_counts() -> None:
    async def main_() -> str:
        storage = MemoryStorage()
        run = await storage.create_run([Document("a.txt", b"a"), Document("b.txt", b"b")])
        ids = [u.id for u in await storage.list_uploads(run.id)]
        made = await storage.create_batch(run.id, ids, lease_seconds=60)
        assert made is not None
        progress = Progress(run, None, live=False, batch=True)
        progress(BatchSubmitted(made[0], 0.0))
        progress(BatchProgress(made[0], BatchCounts(processing=1, succeeded=1), 1.0))
        return progress.line()

    line = trio.run(main_)
    assert "0/2 uploads · 0 cards · 1 batch open: 1 processing, 1 succeeded, 0 errored" in line
