"""What the summary counts is what happened: requests the server received, and words
that agree with their numbers."""

from __future__ import annotations

import io
import json
from pathlib import Path

from cardmill import Document, Run, SQLiteStorage
from cardmill.cli._progress import Progress
from cardmill.cli._runner import summary_table
from cardmill.engine import RunSummary
from cardmill.testing import FakeAnthropicServer

from .test_cli import cardmill

KEY = "fake-key-counts"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"

# Each of these fails before a request could be made.
BAD = {
    "empty.md": (b"", "empty document"),
    "blank.html": (b"<html><body><script>1</script></body></html>", "no text"),
    "deep.html": (b"<div>" * 300 + b"<p>Too deep to read.</p>", "nested more than 256"),
    "junk.txt": (bytes(range(256)) * 16, "binary content, not text"),
    "fake.pdf": (b"not a pdf at all", "not a PDF"),
    "huge.txt": (b"word " * 130_000, "fit in one request"),
}


async def test_requests_are_those_the_server_received(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"good-{i}.md").write_text(f"# Good {i}\n\nThis one is fine. It makes cards.\n")
    for name, (data, _) in BAD.items():
        (folder / name).write_bytes(data)
    picture = tmp_path / "pic.png"  # named, but of another type: left out as in a folder
    picture.write_bytes(PNG)
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill("analyze", str(folder), str(picture), "--json", "-q", env=run_env)
        received = len(server.requests)
    assert done.returncode == 1, done.stderr.decode()  # PARTIAL
    summary = json.loads(done.stdout)
    assert received == 3
    assert summary["summary"]["requests"] == received
    assert summary["run"]["completed_items"] == 3
    assert summary["run"]["failed_items"] == len(BAD)
    shown = await cardmill("show", summary["run"]["id"], "--json", env=env)
    errors = {Path(u["name"]).name: u["error"] for u in json.loads(shown.stdout)["uploads"]}
    for name, (_, reason) in BAD.items():
        assert reason in errors[name], (name, errors[name])
    assert "pic.png" not in errors


async def test_one_of_anything_is_singular(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "one.md").write_text("# One\n\nA single card here.\n")
    (folder / "pic.png").write_bytes(PNG)
    done = await cardmill("analyze", str(folder), env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().startswith(
        "cardmill: analysing 1 document (skipped 1 file of another type) with "
    )
    (run,) = json.loads((await cardmill("runs", "--json", env=env)).stdout)
    written = await cardmill("export", run["id"], "-o", str(tmp_path / "cards.jsonl"), env=env)
    assert written.stderr.decode() == f"cardmill: wrote 1 card to {tmp_path / 'cards.jsonl'}\n"

    async with SQLiteStorage.open(env["CARDMILL_DB"]) as storage:
        pending = await storage.create_run([Document("one.md", b"# One\n\nOne card.\n")])
    resumed = await cardmill("resume", pending.id, env=env)
    assert f"resuming {pending.id}: 1 of 1 upload left, with " in resumed.stderr.decode()


async def test_many_of_anything_is_plural(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(2):
        (folder / f"doc-{i}.md").write_text(f"# Doc {i}\n\nA card here.\n")
        (folder / f"pic-{i}.png").write_bytes(PNG)
    done = await cardmill("analyze", str(folder), env=env)
    assert done.stderr.decode().startswith(
        "cardmill: analysing 2 documents (skipped 2 files of other types) with "
    )


def summary(requests: int, retries: int) -> RunSummary:
    return RunSummary(Run("run-x", "run-x"), requests, 0, 0, retries, 0, 0, 1.0, 1, None)


def test_the_summary_counts_requests_and_retries_in_words_that_agree() -> None:
    for requests, retries, expected in (
        (1, 1, "requests   1 by this command (0 × 429, 0 × 529, 1 retry), 1 for the run"),
        (2, 0, "requests   2 by this command (0 × 429, 0 × 529, 0 retries), 2 for the run"),
        (3, 2, "requests   3 by this command (0 × 429, 0 × 529, 2 retries), 3 for the run"),
    ):
        out = io.StringIO()
        run = Run("run-x", "run-x", requests=requests)
        summary_table(summary(requests, retries), run, "x.db", out)
        assert expected in out.getvalue()


async def test_progress_counts_in_words_that_agree() -> None:
    one = Progress(Run("run-x", "run-x", total_items=1, total_cards=1), io.StringIO(), live=False)
    assert one.line().startswith("0/1 upload · 1 card · 0 in flight · ")
    two = Progress(Run("run-x", "run-x", total_items=2, total_cards=2), io.StringIO(), live=False)
    assert two.line().startswith("0/2 uploads · 2 cards · 0 in flight · ")
