"""`cardmill runs` lists the newest run first; `latest` names it wherever a run is taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from cardmill import SQLiteStorage
from cardmill.cli import main


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CARDMILL_DB", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    return str(tmp_path / "latest.db")


def _analysed(tmp_path: Path, db: str, name: str) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{name}.md").write_text(f"# {name.title()}\n\nThe {name} document says a thing.\n")
    done = CliRunner().invoke(main, ["analyze", str(folder), "--db", db, "--name", name, "--json"])
    assert done.exit_code == 0, done.output
    run_id: str = json.loads(done.stdout)["run"]["id"]
    return run_id


def test_runs_lists_newest_first_and_latest_names_the_newest(tmp_path: Path, db: str) -> None:
    first = _analysed(tmp_path, db, "first")
    second = _analysed(tmp_path, db, "second")

    listed = CliRunner().invoke(main, ["runs", "--db", db, "--json"])
    assert [r["id"] for r in json.loads(listed.stdout)] == [second, first]
    table = CliRunner().invoke(main, ["runs", "--db", db]).stdout.splitlines()
    assert [line.split()[0] for line in table[1:]] == [second, first]

    shown = CliRunner().invoke(main, ["show", "latest", "--db", db, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["run"]["id"] == second

    exported = CliRunner().invoke(main, ["export", "latest", "--db", db])
    assert exported.exit_code == 0, exported.output
    cards = [json.loads(line) for line in exported.stdout.splitlines()]
    assert cards
    assert {c["run_id"] for c in cards} == {second}

    resumed = CliRunner().invoke(main, ["resume", "latest", "--db", db])
    assert resumed.exit_code == 0, resumed.output
    assert f"run {second} already SUCCEEDED" in resumed.stderr

    worked = CliRunner().invoke(main, ["worker", "--db", db, "--run", "latest"])
    assert worked.exit_code == 0, worked.output


@pytest.mark.parametrize("command", ["show", "export", "resume", "cancel"])
def test_latest_without_runs_is_one_line(db: str, command: str) -> None:
    async def make_empty() -> None:
        async with SQLiteStorage.open(db):
            pass

    trio.run(make_empty)
    done = CliRunner().invoke(main, [command, "latest", "--db", db])
    assert done.exit_code == 2, done.output
    assert done.stderr == "cardmill: error: RUN latest: there are no runs in this database yet\n"


def test_help_says_what_run_may_be() -> None:
    for command in ("show", "export", "resume", "cancel"):
        shown = CliRunner().invoke(main, [command, "--help"])
        assert "`latest` for the newest run" in shown.stdout, command
