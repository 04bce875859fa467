"""A run keeps the provider and model it was made with: resume, worker and cancel go on
with them, a --model that differs is refused, and each answer is priced at its model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cardmill import Usage
from cardmill._cost import DEFAULT_PRICES, cost_of
from cardmill.testing import FakeAnthropicServer

from .test_cli import cardmill, one_line_error

KEY = "fake-key-run-model"
MODEL = "claude-opus-4-5"
POLL = ["--batch-poll", "0.05"]


def _usage(raw: dict[str, Any]) -> Usage:
    return Usage(
        raw["input_tokens"],
        raw["output_tokens"],
        cache_read_input_tokens=raw.get("cache_read_input_tokens", 0),
        cache_creation_input_tokens=raw.get("cache_creation_input_tokens", 0),
    )


def _billed(server: FakeAnthropicServer, *, batch: bool) -> tuple[set[str], float]:
    """The models the server was asked for, and what its answers cost at MODEL's price."""
    price = DEFAULT_PRICES.price_for(MODEL)
    assert price is not None
    if not batch:
        answered = [r for r in server.requests if r.status == 200]
        models = {r.body["model"] for r in answered}
        return models, sum(cost_of(_usage(r.usage), price) for r in answered)
    models = {s.params["model"] for s in server.batch_log}
    total = 0.0
    for batch_id in {s.batch_id for s in server.batch_log}:
        for line in server.batch_results(batch_id):
            if line["result"]["type"] == "succeeded":
                usage = _usage(line["result"]["message"]["usage"])
                total += cost_of(usage, price, batch=True)
    return models, total


@pytest.mark.parametrize("batch", [False, True], ids=["sync", "batch"])
async def test_resume_goes_on_with_the_runs_model_and_prices_it(
    env: dict[str, str], tmp_path: Path, batch: bool
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"n{i}.md").write_text(f"# Note {i}\n\nNote {i} says one thing at length.\n")
    mode = ["--batch", *POLL] if batch else []
    async with FakeAnthropicServer(api_key=KEY, batch_delay=0.0) as server:
        run_env = {
            **env,
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "CARDMILL_DB": str(tmp_path / "runs.db"),
        }
        # Stopped before anything is sent (a cap of 0): the run is left to resume.
        first = await cardmill(
            "analyze", str(folder), "--model", MODEL, *mode, "--max-cost", "0", "--json",
            env=run_env,
        )  # fmt: skip
        assert first.returncode == 3, first.stderr.decode()
        run_id = json.loads(first.stdout)["run"]["id"]
        assert (json.loads(first.stdout)["run"]["model"], server.requests) == (MODEL, [])

        other = await cardmill("resume", run_id, "--model", "claude-haiku-4-5", env=run_env)
        assert other.returncode == 2
        line = one_line_error(other.stderr)
        assert MODEL in line
        assert "claude-haiku-4-5" in line
        assert server.requests == []

        again = await cardmill("resume", run_id, *mode, *POLL, "--json", env=run_env)
        assert again.returncode == 0, again.stderr.decode()
        data = json.loads(again.stdout)
        assert data["model"] == MODEL
        models, billed = _billed(server, batch=batch)
        assert models == {MODEL}
        assert data["run"]["cost_usd"] == pytest.approx(billed, rel=1e-6)
        assert billed > 0

        shown = await cardmill("show", run_id, env=run_env)
        assert f"{MODEL} (anthropic)" in shown.stdout.decode()


async def test_worker_and_cancel_go_on_with_the_runs_model(
    env: dict[str, str], tmp_path: Path
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nOne thing.\n")
    async with FakeAnthropicServer(api_key=KEY) as server:
        run_env = {
            **env,
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": server.url,
            "CARDMILL_DB": str(tmp_path / "runs.db"),
        }
        first = await cardmill(
            "analyze", str(doc), "--model", MODEL, "--max-cost", "0", "--json", env=run_env
        )
        run_id = json.loads(first.stdout)["run"]["id"]
        refused = await cardmill(
            "worker", "--run", run_id, "--model", "claude-haiku-4-5", env=run_env
        )
        assert refused.returncode == 2
        assert MODEL in one_line_error(refused.stderr)
        cancel = await cardmill("cancel", run_id, "--model", "claude-haiku-4-5", env=run_env)
        assert cancel.returncode == 2
        assert MODEL in one_line_error(cancel.stderr)
        # Nor another provider: a run's cards all come from the one it was made with.
        for command in (("resume", run_id), ("worker", "--run", run_id)):
            other = await cardmill(*command, "--provider", "extractive", env=run_env)
            assert other.returncode == 2, command
            line = one_line_error(other.stderr)
            assert "made with provider anthropic, not extractive" in line, line
        worker = await cardmill("worker", "--run", run_id, env=run_env)
        assert worker.returncode == 0, worker.stderr.decode()
        assert {r.body["model"] for r in server.requests} == {MODEL}


async def test_a_worker_refuses_a_cap_it_cannot_price_at_the_runs_model(
    env: dict[str, str], tmp_path: Path
) -> None:
    from cardmill import Document, SQLiteStorage

    db = tmp_path / "runs.db"
    async with SQLiteStorage.open(str(db)) as storage:
        run = await storage.create_run(
            [Document("a.md", b"# A\n\ntext", "text/markdown")],
            provider="anthropic",
            model="claude-unpriced-1",
        )
    run_env = {**env, "ANTHROPIC_API_KEY": KEY, "CARDMILL_DB": str(db)}
    # The worker's own default model has a price; the run's has none.
    refused = await cardmill("worker", "--run", run.id, "--max-cost", "1", env=run_env)
    assert refused.returncode == 2, refused.stderr.decode()
    line = one_line_error(refused.stderr)
    assert "no price is known for model 'claude-unpriced-1'" in line, line
    # Serving every run, the worker leaves that one alone and says why.
    every = await cardmill("worker", "--max-cost", "1", env=run_env)
    assert every.returncode == 0, every.stderr.decode()
    assert f"run {run.id}: --max-cost: no price is known" in every.stderr.decode()
