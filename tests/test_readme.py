"""The README's examples, run as printed there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import trio

from cardmill import SQLiteStorage
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
