"""The README's examples, run as printed there."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import trio

from cardmill import RunStatus, SQLiteStorage
from cardmill.testing import FakeAnthropicServer

from .cli.conftest import EXAMPLES, cardmill_command

README = Path(__file__).resolve().parents[1] / "README.md"
KEY = "fake-key-readme"


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def embedding_example() -> str:
    text = section("Embedding cardmill in a trio program")
    code: str = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    return code


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "CARDMILL_"))
    }


async def run_example(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    (folder / "example.py").write_text(embedding_example())
    # Run from a checkout, as the README says: its paths are in examples/.
    shutil.copytree(EXAMPLES, folder / "examples")
    return await trio.run_process(
        [sys.executable, "example.py"],
        cwd=folder,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_the_embedding_example_without_a_key_fails_cleanly_leaving_no_run(
    tmp_path: Path,
) -> None:
    done = await run_example(tmp_path, clean_env())
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        "cardmill.errors.InputError: no Anthropic API key: pass api_key=... or set "
        "ANTHROPIC_API_KEY"
    )
    assert not await trio.Path(tmp_path / "cardmill.db").exists()


async def test_the_embedding_example_with_a_key_makes_cards(tmp_path: Path) -> None:
    async with FakeAnthropicServer(api_key=KEY) as server:
        env = {**clean_env(), "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = await run_example(tmp_path, env)
        assert len(server.requests) == 2
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines()[0] == "succeeded 4 cards, 0 × 429"
    async with SQLiteStorage.open(tmp_path / "cardmill.db") as storage:
        (run,) = await storage.list_runs()
    assert run.name == "reading list"


async def test_the_quickstart_prints_what_the_readme_shows(tmp_path: Path) -> None:
    shown = section("Quickstart").split("The first command prints something like:")[1]
    sample = shown.split("```")[1].strip().splitlines()
    done = await trio.run_process(
        [*cardmill_command(), "analyze", str(EXAMPLES)],
        cwd=tmp_path,
        env=clean_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    first = done.stderr.decode().splitlines()[0]
    assert first == sample[0].replace("examples/", str(EXAMPLES))
    printed = done.stdout.decode().splitlines()
    # The same rows in the same order; run ids, counts and times differ.
    assert [line.split(" ")[0] for line in printed] == [line.split(" ")[0] for line in sample[1:]]
    model = next(line for line in printed if line.startswith("model "))
    assert model in sample


# Commands the README shows that a test cannot run as they are, and where they are tested.
NOT_RUN_HERE: Final = {
    ".venv/bin/cardmill serve": "runs until stopped: tests/cli/test_serve.py",
    ".venv/bin/cardmill analyze examples/ --provider anthropic": (
        "against the loopback server: tests/cli/test_loopback_serve.py"
    ),
}
_SYNOPSIS: Final = re.compile(r"\[|\.\.\.|\(|\b[A-Z]{3,}\b")


def readme_commands() -> list[str]:
    """Each cardmill command of the README's code blocks, as printed (without the
    set-up before it on its line, such as the venv and pip install, or comments).
    Synopsis lines (``cardmill show RUN [--db FILE]``) are not commands."""
    commands = []
    fenced = ""  # the open block's language, or "" outside blocks
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = "" if fenced else line[3:] or "text"
            continue
        if fenced == "text":
            for part in line.split(" # ")[0].split("&&"):
                command = part.strip()
                starts = command.startswith(("cardmill ", ".venv/bin/cardmill "))
                if starts and not _SYNOPSIS.search(command):
                    commands.append(command)
    return commands


def test_every_readme_command_is_run_or_said_where_it_is_tested() -> None:
    commands = readme_commands()
    assert set(NOT_RUN_HERE) <= set(commands)
    assert "cardmill analyze examples/ --recipe examples/recipes/insights.toml" in commands


async def test_every_readme_command_runs_offline_as_printed(tmp_path: Path) -> None:
    # A checkout, as the README assumes: examples/ and docs/ beside the database.
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    shutil.copytree(README.parent / "docs", tmp_path / "docs")
    program = shlex.join(cardmill_command())
    ran = []
    for command in readme_commands():
        if command in NOT_RUN_HERE:
            continue
        line = re.sub(r"^(\.venv/bin/)?cardmill ", program + " ", command)
        done = await trio.run_process(
            ["sh", "-c", line],
            cwd=tmp_path,
            env=clean_env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr.decode())
        assert "Traceback" not in done.stderr.decode(), command
        ran.append(command)
    assert len(ran) >= 5, ran
    async with SQLiteStorage.open(tmp_path / "cardmill.db") as storage:
        runs = await storage.list_runs()
    assert sorted(r.recipe_name for r in runs) == ["flashcards", "insights", "study-cards"]
    assert all(r.status == RunStatus.SUCCEEDED for r in runs)
