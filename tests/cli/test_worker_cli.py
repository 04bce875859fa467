"""`cardmill worker` on the command line: what it says when it works, and when it finds
nothing to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from cardmill import Document, SQLiteStorage
from cardmill.cli import main


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CARDMILL_DB"):
        monkeypatch.delenv(key, raising=False)
    return str(tmp_path / "worker.db")


def _make(db: str, documents: int) -> str:
    async def make() -> str:
        async with SQLiteStorage.open(db) as storage:
            if not documents:
                return ""
            made = await storage.create_run(
                Document(f"d{i}.md", f"# D{i}\n\nDocument {i} says a thing.\n".encode())
                for i in range(documents)
            )
            return made.id

    return trio.run(make)


def test_a_worker_with_nothing_to_do_says_so(db: str) -> None:
    _make(db, 0)
    empty = CliRunner().invoke(main, ["worker", "--db", db])
    assert empty.exit_code == 0, empty.output
    assert empty.stderr.splitlines()[-1] == (
        "cardmill worker: nothing to do: there are no runs in the database"
    )

    run_id = _make(db, 2)
    first = CliRunner().invoke(main, ["worker", "--db", db])
    assert first.exit_code == 0, first.output
    assert "nothing to do" not in first.stderr

    again = CliRunner().invoke(main, ["worker", "--db", db])
    assert again.exit_code == 0, again.output
    assert again.stderr.splitlines()[-1] == (
        "cardmill worker: nothing to do: no upload is left in 1 run"
    )
    one = CliRunner().invoke(main, ["worker", "--db", db, "--run", run_id])
    assert one.stderr.splitlines()[-1] == (
        f"cardmill worker: nothing to do: run {run_id} is SUCCEEDED, no upload is left"
    )


def test_a_workers_summary_writes_times_as_the_others_do(db: str) -> None:
    run_id = _make(db, 2)
    done = CliRunner().invoke(main, ["worker", "--db", db])
    assert done.exit_code == 0, done.output
    (line,) = [
        x for x in done.stderr.splitlines() if x.startswith(f"cardmill worker: run {run_id}")
    ]
    assert re.fullmatch(
        rf"cardmill worker: run {run_id} SUCCEEDED: 2 completed and 0 failed here, "
        r"2 requests here \(0 × 429\), 2 for the run, run cost \$0\.00",
        line,
    ), line
