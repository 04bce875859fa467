"""A run with a recipe of the user's own, against the loopback Messages API: kill -9 in
the middle, resume, and the cards keep their fields."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import signal
from functools import partial
from pathlib import Path

import trio

from cardmill import Recipe, RunStatus, SQLiteStorage, UploadStatus
from cardmill.testing import FakeAnthropicServer, lognormal

from .conftest import cardmill, cardmill_command, verify_database
from .test_kill_resume import KillAtAnswer

KEY = "fake-key-recipe-kill"
DOCS = 12
CARDS = 3

RECIPE = """
name = "hazards"
instructions = "List the hazards the document describes."
max_cards = 5

[[fields]]
name = "hazard"
type = "string"
max_chars = 120

[[fields]]
name = "severity"
type = "enum"
choices = ["low", "medium", "high"]

[[fields]]
name = "likelihood"
type = "integer"
minimum = 1
maximum = 5

[[fields]]
name = "score"
type = "number"
minimum = 0
maximum = 10

[[fields]]
name = "mitigated"
type = "boolean"

[[fields]]
name = "owners"
type = "list"
required = false
max_items = 2
"""


async def test_a_user_recipe_run_killed_in_flight_resumes_with_its_recipe(
    tmp_path: Path, env: dict[str, str]
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(DOCS):
        (folder / f"site{i:02d}.md").write_text(f"# Site {i}\n\nLoose cable {i}. Wet floor.\n")
    recipe_file = tmp_path / "hazards.toml"
    recipe_file.write_text(RECIPE)
    recipe = Recipe.from_toml(RECIPE)
    other = tmp_path / "other.toml"
    other.write_text(RECIPE.replace("max_cards = 5", "max_cards = 4"))
    db = tmp_path / "hazards.db"
    killer = KillAtAnswer(random.Random(14).randint(3, DOCS - 2), lognormal(0.05, 0.5))
    async with FakeAnthropicServer(
        latency=killer, requests_per_minute=900, burst_seconds=2, api_key=KEY, cards=CARDS
    ) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        command = [*cardmill_command(), "analyze", str(folder), "--db", str(db)]
        command += ["--recipe", str(recipe_file), "--concurrency", "3", "--quiet"]
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(trio.run_process, command, check=False, env=run_env, capture_stdout=True)
            )

            async def wake_on_exit() -> None:
                await process.wait()
                killer.reached.set()

            nursery.start_soon(wake_on_exit)
            await killer.reached.wait()
            process.send_signal(signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        async with SQLiteStorage.open(db) as storage:
            (run,) = await storage.list_runs()
            assert run.status == RunStatus.RUNNING
            assert await storage.list_uploads(run.id, UploadStatus.LOADING)
            assert (run.recipe_name, run.recipe_digest) == ("hazards", recipe.digest)
            assert await storage.get_recipe(run.id) == recipe
        await verify_database(db, finished=False)

        refused = await cardmill(
            "resume", run.id, "--db", str(db), "--recipe", str(other), env=run_env
        )
        assert refused.returncode == 2
        message = refused.stderr.decode()
        assert message.count("\n") == 1, message
        assert f"hazards@{recipe.digest[:12]}" in message
        assert "not hazards@" in message  # the other one, named too

        killer.n = math.inf  # type: ignore[assignment]  # no more answers held back
        resumed = await cardmill("resume", run.id, "--db", str(db), "--quiet", env=run_env)
        assert resumed.returncode == 0, resumed.stderr.decode()

    (done,) = await verify_database(db, finished=True)
    assert (done.completed_items, done.total_cards) == (DOCS, DOCS * CARDS)
    async with SQLiteStorage.open(db) as storage:
        cards = await storage.list_cards(done.id)
    for card in cards:
        assert card.fields is not None
        assert card.fields["severity"] == "low"
        assert card.fields["likelihood"] == 3
        assert card.fields["score"] == 5.0
        assert card.fields["mitigated"] is True
        assert len(card.fields["owners"]) == 2  # type: ignore[arg-type]
        assert card.title == card.fields["hazard"]
        assert len(card.title) <= 120

    out = await cardmill("export", done.id, "--db", str(db), "--format", "csv", env=env)
    rows = list(csv.reader(io.StringIO(out.stdout.decode())))
    assert rows[0] == [
        "document",
        "ordinal",
        "hazard",
        "severity",
        "likelihood",
        "score",
        "mitigated",
        "owners",
        "upload_id",
    ]
    assert len(rows) == 1 + DOCS * CARDS
    assert rows[1][3:7] == ["low", "3", "5.0", "true"]
    out = await cardmill("export", done.id, "--db", str(db), "--format", "jsonl", env=env)
    first = json.loads(out.stdout.decode().splitlines()[0])
    assert first["fields"]["likelihood"] == 3
    assert first["fields"]["owners"] == list(cards[0].fields["owners"])  # type: ignore[index,arg-type]
    shown = await cardmill("show", done.id, "--db", str(db), "--json", env=env)
    assert json.loads(shown.stdout)["run"]["recipe"] == f"hazards@{recipe.digest[:12]}"
