"""The real console script in a subprocess: the main job, listings, export, exit codes."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import SQLiteStorage
from cardmill.providers import DEFAULT_ANTHROPIC_MODEL
from cardmill.testing import FakeAnthropicServer, check_invariants

from .conftest import EXAMPLES, cardmill_command


async def cardmill(*args: str, env: dict[str, str], cwd: Path | None = None) -> Any:
    return await trio.run_process(
        [*cardmill_command(), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
        cwd=cwd,
    )


def one_line_error(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


async def test_analyze_examples_offline_then_export_and_list(env: dict[str, str]) -> None:
    done = await cardmill("analyze", str(EXAMPLES), env=env)
    assert done.returncode == 0, done.stderr.decode()
    first = done.stderr.decode().splitlines()[0]
    assert "offline extractive provider" in first
    assert "analysing 4 documents" in first
    assert "SUCCEEDED" in done.stdout.decode()

    runs = await cardmill("runs", "--json", env=env)
    (run,) = json.loads(runs.stdout)
    assert run["status"] == "succeeded"
    assert run["completed_items"] == 4
    total = run["total_cards"]
    assert total >= 8

    shown = await cardmill("show", run["id"], "--json", env=env)
    detail = json.loads(shown.stdout)
    assert {u["status"] for u in detail["uploads"]} == {"completed"}
    assert sum(u["card_count"] for u in detail["uploads"]) == total

    jsonl = await cardmill("export", run["id"], "--format", "jsonl", env=env)
    lines = jsonl.stdout.decode().splitlines()
    assert len(lines) == total
    assert all(json.loads(line)["title"] for line in lines)

    out = Path(env["CARDMILL_DB"]).with_name("cards.csv")
    written = await cardmill("export", run["id"], "--format", "csv", "-o", str(out), env=env)
    assert written.returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == total

    md = await cardmill("export", run["id"], "--format", "md", env=env)
    assert md.stdout.decode().count("\n### ") == total

    text = await cardmill("show", run["id"], env=env)
    assert "honeybees.html" in text.stdout.decode()


async def test_json_summary_of_analyze(env: dict[str, str], tmp_path: Path) -> None:
    doc = tmp_path / "one.md"
    doc.write_text("# One\n\nA single card here.\n")
    done = await cardmill("analyze", str(doc), "--json", "--quiet", env=env)
    assert done.returncode == 0
    assert done.stderr == b""
    data = json.loads(done.stdout)
    assert data["run"]["status"] == "succeeded"
    assert data["summary"]["requests"] == 1


async def test_the_summary_names_the_provider_and_its_model(
    env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "one.md"
    doc.write_text("# One\n\nA single card here.\n")
    key = "fake-key-model"
    async with FakeAnthropicServer(api_key=key) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": server.url}
        default = await cardmill("analyze", str(doc), "-q", env=run_env)
        chosen = await cardmill(
            "analyze", str(doc), "-q", "--json", "--model", "claude-sonnet-4-5", env=run_env
        )
        from_env = await cardmill(
            "analyze",
            str(doc),
            "-q",
            "--json",
            env={**run_env, "CARDMILL_MODEL": "claude-opus-4-5"},
        )
        sent = [r.body["model"] for r in server.requests]
    assert sent == [DEFAULT_ANTHROPIC_MODEL, "claude-sonnet-4-5", "claude-opus-4-5"]
    assert f"\nmodel      {DEFAULT_ANTHROPIC_MODEL} (anthropic)\n" in default.stdout.decode()
    for done, model in ((chosen, "claude-sonnet-4-5"), (from_env, "claude-opus-4-5")):
        data = json.loads(done.stdout)
        assert (data["provider"], data["model"]) == ("anthropic", model)
    offline = await cardmill("analyze", str(doc), "-q", env=env)
    assert "\nmodel      none (extractive, offline)\n" in offline.stdout.decode()
    offline_json = json.loads((await cardmill("analyze", str(doc), "-q", "--json", env=env)).stdout)
    assert (offline_json["provider"], offline_json["model"]) == ("extractive", None)


async def test_bad_input_exits_2_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    missing = await cardmill("analyze", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2
    assert "nope: no such file or directory" in one_line_error(missing.stderr)

    (tmp_path / "ok.md").write_text("# ok\n\nfine.\n")
    await cardmill("analyze", str(tmp_path / "ok.md"), "--quiet", env=env)
    unknown = await cardmill("show", "run-doesnotexist", env=env)
    assert unknown.returncode == 2
    assert "no run with id 'run-doesnotexist'" in one_line_error(unknown.stderr)
    resumed = await cardmill("resume", "run-doesnotexist", env=env)
    assert resumed.returncode == 2

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    refused = await cardmill("runs", "--db", str(foreign), env=env)
    assert refused.returncode == 2
    assert "not a cardmill database" in one_line_error(refused.stderr)

    nodb = await cardmill("runs", "--db", str(tmp_path / "none.db"), env=env)
    assert nodb.returncode == 2
    usage = await cardmill("analyze", env=env)
    assert usage.returncode == 2
    key = await cardmill("analyze", str(tmp_path / "ok.md"), "--provider", "anthropic", env=env)
    assert key.returncode == 2
    assert "ANTHROPIC_API_KEY" in one_line_error(key.stderr)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["analyze", "--conccurency", "3", "x"],
            "No such option '--conccurency'. Did you mean '--concurrency'? "
            "See 'cardmill analyze --help'.",
        ),
        (
            ["anaylze", "x"],
            "No such command 'anaylze'. Did you mean 'analyze'? See 'cardmill --help'.",
        ),
        (["export"], "Missing argument 'RUN'. See 'cardmill export --help'."),
        (["runs", "extra"], "Got unexpected extra argument (extra). See 'cardmill runs --help'."),
    ],
)
async def test_a_mistyped_command_or_option_is_one_line_saying_where_help_is(
    env: dict[str, str], args: list[str], line: str
) -> None:
    done = await cardmill(*args, env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == f"cardmill: error: {line}"
    assert done.stdout == b""


@pytest.mark.parametrize(
    ("provider", "names"),
    [
        ("anthropic", ["no Anthropic API key", "ANTHROPIC_API_KEY"]),
        ("openai", ["no OpenAI API key", "OPENAI_API_KEY", "OPENAI_BASE_URL"]),
    ],
)
async def test_a_missing_key_names_the_variable_and_the_offline_provider(
    env: dict[str, str], tmp_path: Path, provider: str, names: list[str]
) -> None:
    doc = tmp_path / "ok.md"
    doc.write_text("# ok\n\nfine.\n")
    for command in (["analyze", str(doc)], ["worker"]):
        done = await cardmill(*command, "--provider", provider, env=env)
        assert done.returncode == 2
        line = one_line_error(done.stderr)  # nothing announced before it
        for name in [*names, "--provider extractive"]:
            assert name in line, line
        assert "api_key" not in line  # the command line has no such option
    assert not await trio.Path(env["CARDMILL_DB"]).exists()


async def test_partial_run_exits_1_and_names_the_bad_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nThis one works.\n")
    (tmp_path / "junk.pdf").write_bytes(b"\x00\x01 not a pdf" * 50)
    done = await cardmill("analyze", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "PARTIAL" in done.stdout.decode()
    assert "junk.pdf: not a PDF" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


async def test_sigint_cancels_and_resume_finishes_without_duplicates(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(12):
        (folder / f"doc{i:02d}.md").write_text(f"# Doc {i}\n\nSentence {i} is here.\n")
    db = env["CARDMILL_DB"]
    async with FakeAnthropicServer(latency=0.4, api_key="fake-key-cli") as server:
        env = {**env, "ANTHROPIC_API_KEY": "fake-key-cli", "ANTHROPIC_BASE_URL": server.url}
        async with trio.open_nursery() as nursery:
            command = [*cardmill_command(), "analyze", str(folder), "--concurrency", "2"]
            process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
            )
            # Wait until some uploads are done, then press Ctrl-C.
            with trio.fail_after(30):
                while sum(r.status == 200 for r in server.requests) < 3:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
        assert process.returncode == 130
        async with SQLiteStorage.open(db) as storage:
            (run,) = await storage.list_runs()
            assert run.status.name == "CANCELLED"
            assert 0 < run.completed_items < 12
            await check_invariants(storage, run.id)
        resumed = await cardmill("resume", run.id, env=env)
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert "resuming" in resumed.stderr.decode()
    async with SQLiteStorage.open(db) as storage:
        run = await storage.get_run(run.id)
        assert run.status.name == "SUCCEEDED"
        await check_invariants(storage, run.id)
        cards = await storage.list_cards(run.id)
        assert run.total_cards == len(cards) == 12 * 3
        assert len({(c.upload_id, c.ordinal) for c in cards}) == len(cards)
        assert len(await storage.list_uploads(run.id)) == 12
