"""Recipes on the command line: listing, printing, analysing, resuming, exporting."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import trio

from cardmill import FLASHCARDS, KEY_POINTS, STUDY_CARDS, Document, Recipe, SQLiteStorage
from cardmill.testing import FakeAnthropicServer, check_invariants

from .conftest import EXAMPLES
from .test_cli import cardmill, one_line_error

FIXTURE = Path(__file__).resolve().parents[1] / "storage" / "data" / "cardmill-0.1.0.db"
INSIGHTS = EXAMPLES / "recipes" / "insights.toml"
KEY = "fake-key-recipes"


async def test_recipes_lists_the_builtins_and_shows_one_as_toml(env: dict[str, str]) -> None:
    listed = await cardmill("recipes", env=env)
    assert listed.returncode == 0
    lines = listed.stdout.decode().splitlines()
    for name in ("study-cards", "flashcards", "key-points"):
        (line,) = [x for x in lines if x.startswith(name + " ")]
        assert "string" in line
    shown = await cardmill("recipes", "show", "flashcards", env=env)
    assert shown.returncode == 0
    assert Recipe.from_toml(shown.stdout.decode()) == FLASHCARDS
    missing = await cardmill("recipes", "show", "nope", env=env)
    assert missing.returncode == 2
    assert "no such built-in" in one_line_error(missing.stderr)


async def test_a_bad_recipe_file_is_one_line_and_no_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\ninstructions = "x"\n[[fields]]\nname = "c"\ntype = "enum"\n')
    done = await cardmill("analyze", str(EXAMPLES), "--recipe", str(bad), env=env)
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert f"{bad}: recipe 'b': field 'c': an enum needs choices" in line
    assert not await trio.Path(env["CARDMILL_DB"]).exists()


async def test_offline_key_points_run_names_its_recipe(env: dict[str, str]) -> None:
    done = await cardmill("analyze", str(EXAMPLES), "--recipe", "key-points", "--json", env=env)
    assert done.returncode == 0, done.stderr.decode()
    run = json.loads(done.stdout)["run"]
    assert run["recipe"] == KEY_POINTS.label
    assert run["recipe_name"] == "key-points"
    listed = json.loads((await cardmill("runs", "--json", env=env)).stdout)
    assert [r["recipe"] for r in listed] == [KEY_POINTS.label]
    shown = await cardmill("show", run["id"], env=env)
    assert f"recipe     {KEY_POINTS.label}" in shown.stdout.decode()
    md = (await cardmill("export", run["id"], "--format", "md", env=env)).stdout.decode()
    assert "- **why**: " in md
    assert "- **point**" not in md  # the title field is the heading
    rows = list(
        csv.reader(
            io.StringIO(
                (await cardmill("export", run["id"], "--format", "csv", env=env)).stdout.decode()
            )
        )
    )
    assert rows[0] == ["document", "ordinal", "point", "why", "quote", "upload_id"]


async def test_offline_run_names_the_fields_it_cannot_fill(
    env: dict[str, str], tmp_path: Path
) -> None:
    required = tmp_path / "required.toml"
    required.write_text(
        INSIGHTS.read_text()
        .replace("required = false\n", "")
        .replace("max_items", "required = true\nmax_items")
    )
    refused = await cardmill("analyze", str(EXAMPLES), "--recipe", str(required), env=env)
    assert refused.returncode == 2
    line = one_line_error(refused.stderr)
    assert "cannot fill the required fields category, confidence, follow_up, people;" in line
    optional = tmp_path / "optional.toml"
    optional.write_text(
        'name = "notes"\ninstructions = "Notes."\n[[fields]]\nname = "note"\n'
        '[[fields]]\nname = "mood"\ntype = "enum"\nchoices = ["ok"]\nrequired = false\n'
    )
    done = await cardmill("analyze", str(EXAMPLES), "--recipe", str(optional), "-q", env=env)
    assert done.returncode == 0, done.stderr.decode()
    first = done.stderr.decode().splitlines()[0]
    assert first.startswith("cardmill: warning: the offline extractive provider cannot fill mood")


async def test_the_example_recipe_runs_offline_filling_what_it_can(env: dict[str, str]) -> None:
    done = await cardmill("analyze", str(EXAMPLES), "--recipe", str(INSIGHTS), "--json", env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().splitlines()[0] == (
        "cardmill: warning: the offline extractive provider cannot fill category, confidence,"
        " follow_up, people of recipe 'insights': its cards leave them out"
    )
    run = json.loads(done.stdout)["run"]
    assert run["completed_items"] == 4
    exported = await cardmill("export", run["id"], env=env)
    cards = [json.loads(line) for line in exported.stdout.decode().splitlines()]
    assert len(cards) == run["total_cards"] > 4
    assert {tuple(card["fields"]) for card in cards} == {("insight",)}


async def test_the_example_recipe_against_the_loopback_server(env: dict[str, str]) -> None:
    async with FakeAnthropicServer(api_key=KEY, cards=2) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        done = await cardmill(
            "analyze", str(EXAMPLES), "--recipe", str(INSIGHTS), "--json", env=run_env
        )
        assert done.returncode == 0, done.stderr.decode()
    run = json.loads(done.stdout)["run"]
    # Two cards an answer; a long document's two are word for word the same, kept once.
    assert run["completed_items"] == 4
    assert 4 <= run["total_cards"] <= 8
    csv_out = (await cardmill("export", run["id"], "--format", "csv", env=env)).stdout.decode()
    rows = list(csv.reader(io.StringIO(csv_out)))
    assert len(rows) == 1 + run["total_cards"]
    assert rows[0][2:7] == ["insight", "category", "confidence", "follow_up", "people"]
    assert rows[1][3:6] == ["finding", "0.5", "true"]
    md = (await cardmill("export", run["id"], "--format", "md", env=env)).stdout.decode()
    assert "- **category**: finding\n- **confidence**: 0.5\n- **follow_up**: yes\n" in md


async def test_a_database_of_the_previous_release_upgrades_resumes_and_exports(
    env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE, db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    env = {**env, "CARDMILL_DB": str(db)}
    listed = json.loads((await cardmill("runs", "--json", env=env)).stdout)
    assert [(r["name"], r["status"], r["recipe_name"]) for r in listed] == [
        ("half", "cancelled", "study-cards"),  # newest first
        ("finished", "succeeded", "study-cards"),
    ]
    half = listed[0]["id"]
    refused = await cardmill("resume", half, "--recipe", "flashcards", env=env)
    assert refused.returncode == 2
    assert f"recipe {STUDY_CARDS.label}, not {FLASHCARDS.label}" in one_line_error(refused.stderr)
    resumed = await cardmill("resume", half, "--recipe", "study-cards", "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr.decode()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    async with SQLiteStorage.open(db) as storage:
        run = await storage.get_run(half)
        assert (run.completed_items, run.total_items) == (3, 3)
        await check_invariants(storage, half)
        assert await storage.get_recipe(half) == STUDY_CARDS
    out = (await cardmill("export", half, "--format", "jsonl", env=env)).stdout.decode()
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["title"] == "Alpha"  # stored by the previous release
    assert all("fields" not in r for r in records)
    assert {r["document"] for r in records} == {"a.md", "b.md", "c.txt"}


async def test_a_worker_serves_each_run_with_its_own_recipe(
    env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "work.db"
    docs = [Document("owls.md", b"# Owls\n\nOwls hunt at night. They hear well.\n")]
    async with SQLiteStorage.open(db) as storage:
        points = await storage.create_run(docs, recipe=KEY_POINTS)
        plain = await storage.create_run(docs)
    done = await cardmill("worker", "--db", str(db), env=env)
    assert done.returncode == 0, done.stderr.decode()
    async with SQLiteStorage.open(db) as storage:
        (card,) = await storage.list_cards(points.id)
        assert card.fields == {"point": "Owls", "why": card.body, "quote": "Owls hunt at night."}
        (study,) = await storage.list_cards(plain.id)
        assert study.fields is None
        for run in (points, plain):
            assert (await storage.get_run(run.id)).status.value == "succeeded"


async def test_deeply_nested_recipe_and_prices_files_exit_2_in_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    deep = "[" * 5000 + "]" * 5000
    recipe = tmp_path / "deep.toml"
    recipe.write_text(f'name = "r"\ninstructions = "x"\nfields = {deep}\n')
    done = await cardmill("analyze", str(EXAMPLES), "--recipe", str(recipe), env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        f"cardmill: error: {recipe}: tables and arrays nested more than 16 levels deep"
    )
    prices = tmp_path / "prices.toml"
    prices.write_text(f'[models."m"]\ninput = 1\noutput = {deep}\n')
    done = await cardmill("analyze", str(EXAMPLES), "--dry-run", "--prices", str(prices), env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        f"cardmill: error: {prices}: tables and arrays nested more than 16 levels deep"
    )
    assert not await trio.Path(env["CARDMILL_DB"]).exists()
