"""Batch mode end to end: the real console script in a subprocess, the real ``anthropic``
SDK against the loopback FakeAnthropicServer, a SQLite file or PostgreSQL; kill -9 at
each point of a batch's life, the cost cap, cancel and Ctrl-C, then resume."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import RunStatus, SQLiteStorage, UploadStatus, Usage
from cardmill._cost import DEFAULT_PRICES, cost_of
from cardmill.model import BatchState
from cardmill.providers import DEFAULT_ANTHROPIC_MODEL
from cardmill.storage import PostgresStorage, Storage
from cardmill.testing import FakeAnthropicServer, check_invariants

from .. import pg
from ..big_recipe import write_big_recipe
from .conftest import cardmill, cardmill_command

KEY = "fake-key-batch-e2e"
DOCS = 6
CARDS = 3  # the fake server's cards per answer
POLL = ["--batch-poll", "0.05"]
PRICE = DEFAULT_PRICES.price_for(DEFAULT_ANTHROPIC_MODEL)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(DOCS):
        (docs / f"note{i}.md").write_text(
            f"# Note {i}\n\nNote {i} says one thing. Then another. "
            "And a third one, at some length, to give the request some weight.\n"
        )
    return docs


def _env(env: dict[str, str], server: FakeAnthropicServer, db: str) -> dict[str, str]:
    return {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url, "CARDMILL_DB": db}


#: The PostgreSQL schema of each DSN a test uses (the command line's CARDMILL_PG_SCHEMA).
_SCHEMA: dict[str, str] = {}


@asynccontextmanager
async def _opened(db: str) -> AsyncIterator[Storage]:
    if db in _SCHEMA:
        async with PostgresStorage.open(db, schema=_SCHEMA[db]) as storage:
            yield storage
    else:
        async with SQLiteStorage.open(db) as storage:
            yield storage


def _usage(line: dict[str, Any]) -> Usage:
    raw = line["result"]["message"]["usage"]
    return Usage(
        input_tokens=raw["input_tokens"],
        output_tokens=raw["output_tokens"],
        cache_read_input_tokens=raw.get("cache_read_input_tokens", 0),
        cache_creation_input_tokens=raw.get("cache_creation_input_tokens", 0),
    )


def _billed(server: FakeAnthropicServer, *, batch: bool) -> float:
    """What the server's answers cost: each succeeded batch request at the batch price."""
    assert PRICE is not None
    total = 0.0
    for batch_id in {s.batch_id for s in server.batch_log}:
        for line in server.batch_results(batch_id):
            if line["result"]["type"] == "succeeded":
                total += cost_of(_usage(line), PRICE, batch=batch)
    return total


async def _finished(db: str, run_id: str, *, cards: int = CARDS) -> Any:
    """The run, SUCCEEDED with every upload COMPLETED and its ``cards`` each, invariants
    exact."""
    async with _opened(db) as storage:
        await check_invariants(storage, run_id)
        run = await storage.get_run(run_id)
        assert run.status == RunStatus.SUCCEEDED, run
        uploads = await storage.list_uploads(run_id)
        assert {u.status for u in uploads} == {UploadStatus.COMPLETED}
        assert (run.completed_items, run.total_cards) == (DOCS, DOCS * cards)
        assert len(await storage.list_cards(run_id)) == DOCS * cards
        return run


def _once_each(server: FakeAnthropicServer) -> None:
    """Every document went to the server in exactly one accepted batch."""
    sent = _documents_sent(server)
    assert sent == Counter({f"Note {i}": 1 for i in range(DOCS)}), sent


def _documents_sent(server: FakeAnthropicServer) -> Counter[str]:
    """How many times each document was submitted in an accepted batch."""
    found = (re.search(r"Note \d+", s.text) for s in server.batch_log)
    return Counter(m.group(0) if m else "?" for m in found)


async def _analyze_batch(folder: Path, db: str, env: dict[str, str]) -> None:
    async with FakeAnthropicServer(api_key=KEY, batch_delay=0.2) as server:
        run_env = _env(env, server, db)
        done = await cardmill("analyze", str(folder), "--batch", "--json", *POLL, env=run_env)
        assert done.returncode == 0, done.stderr.decode()
        data = json.loads(done.stdout)
        run_id = data["run"]["id"]
        run = await _finished(db, run_id)
        _once_each(server)
        assert server.batch_calls["create"] == 1
        billed = _billed(server, batch=True)
        assert billed > 0
        # the run's cost is each request's usage at the batch price: half the sync price
        assert run.cost_usd == pytest.approx(billed, rel=1e-6)
        assert billed == pytest.approx(_billed(server, batch=False) / 2)
        assert data["run"]["cost_usd"] == pytest.approx(billed, rel=1e-6)
        assert data["summary"]["cost_usd"] == pytest.approx(billed, rel=1e-6)

        shown = json.loads((await cardmill("show", run_id, "--json", env=run_env)).stdout)
        assert shown["run"]["cost_usd"] == pytest.approx(billed, rel=1e-6)
        assert [b["state"] for b in shown["batches"]] == ["done"]
        (provider_id,) = {s.batch_id for s in server.batch_log}
        assert shown["batches"][0]["provider_batch_id"] == provider_id
        text = (await cardmill("show", run_id, env=run_env)).stdout.decode()
        assert f"${run.cost_usd:.4f}" in text
        assert provider_id in text


async def test_analyze_batch_completes_with_the_batch_price(
    folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    await _analyze_batch(folder, str(tmp_path / "batch.db"), env)


async def _until(check: Callable[[], bool]) -> None:
    """Wait for the server's logs to show some progress (the tests' only clock)."""
    while True:
        if check():
            return
        await trio.sleep(0.01)


Stage = Callable[[FakeAnthropicServer], Awaitable[None]]


async def _create_refused_for_now(server: FakeAnthropicServer) -> None:
    # The batch is recorded (SUBMITTING), its create refused with a Retry-After: the
    # client waits to send it again and is killed while it waits. Nothing reached the
    # provider: resume abandons the record and sends the uploads in a new batch.
    server.inject_batch("429")
    await _until(lambda: any(r.status == 429 for r in server.requests))


async def _create_answer_lost(server: FakeAnthropicServer) -> None:
    # The create reached the server and made the batch; its answer never comes back.
    await server.hold_batch_call("create").wait()


async def _polling(server: FakeAnthropicServer) -> None:
    await _until(lambda: server.batch_calls["retrieve"] >= 2)


async def _collecting(server: FakeAnthropicServer) -> None:
    held = server.hold_batch_call("results", lines=DOCS // 2)
    await _until(lambda: server.batch_calls["retrieve"] >= 1)
    (batch_id,) = {s.batch_id for s in server.batch_log}
    server.end_batch(batch_id)
    await held.wait()


async def _kill_then_resume(
    folder: Path, db: str, env: dict[str, str], stage: Stage, *, adopted: bool
) -> None:
    async with FakeAnthropicServer(api_key=KEY, batch_delay=None) as server:
        run_env = _env(env, server, db)
        command = [*cardmill_command(), "analyze", str(folder), "--batch", "--quiet", *POLL]
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    check=False,
                    env=run_env,
                    capture_stdout=True,
                    capture_stderr=True,
                )
            )
            with trio.fail_after(30):
                await stage(server)
            process.send_signal(signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        async with _opened(db) as storage:
            (run,) = await storage.list_runs()
            await check_invariants(storage, run.id)
            assert run.status == RunStatus.RUNNING
            (batch,) = await storage.list_batches(run.id)
            assert batch.state in (BatchState.SUBMITTING, BatchState.LIVE)
            assert run.completed_items < DOCS
        creates = server.batch_calls["create"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_end_batches, server)
            # A plain resume: a run sent in batches goes on in batches, so what the dead
            # process had not sent goes in a new batch, never one request at a time.
            resumed = await cardmill("resume", run.id, "--quiet", *POLL, env=run_env)
            nursery.cancel_scope.cancel()
        assert resumed.returncode == 0, resumed.stderr.decode()
        await _finished(db, run.id)
        _once_each(server)
        assert not [r for r in server.requests if r.path.rstrip("/") == "/v1/messages"]
        # adopted: the batch the dead process made is taken over, nothing is sent again
        assert server.batch_calls["create"] == creates + (0 if adopted else 1)
        async with _opened(db) as storage:
            states = Counter(b.state for b in await storage.list_batches(run.id))
        expected = (
            {BatchState.DONE: 1} if adopted else {BatchState.ABANDONED: 1, BatchState.DONE: 1}
        )
        assert states == Counter(expected)


@pytest.mark.parametrize(
    ("stage", "adopted"),
    [
        (_create_refused_for_now, False),
        (_create_answer_lost, True),
        (_polling, True),
        (_collecting, True),
    ],
    ids=["create-not-taken", "create-answer-lost", "polling", "collecting"],
)
async def test_kill_9_during_a_batch_then_resume_sends_each_upload_once(
    folder: Path, env: dict[str, str], tmp_path: Path, stage: Stage, adopted: bool
) -> None:
    await _kill_then_resume(folder, str(tmp_path / "kill.db"), env, stage, adopted=adopted)


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "sync"])
async def test_max_cost_stops_then_a_higher_cap_finishes(
    folder: Path, env: dict[str, str], tmp_path: Path, batch: bool
) -> None:
    # A 48 KB recipe: its prompt and schema are most of each request's bill. Output is
    # priced low, so the budget of a whole max_tokens of output does not hide it.
    recipe = write_big_recipe(tmp_path / "big.toml")
    prices = tmp_path / "prices.toml"
    prices.write_text(f'[models."{DEFAULT_ANTHROPIC_MODEL}"]\ninput = 1.0\noutput = 0.01\n')
    db = str(tmp_path / "cap.db")
    mode = ["--batch", *POLL] if batch else ["--concurrency", "1"]
    mode += ["--recipe", str(recipe), "--prices", str(prices)]
    async with FakeAnthropicServer(api_key=KEY, batch_delay=0.0) as server:
        run_env = _env(env, server, db)
        whole = await cardmill(
            "analyze", str(folder), *mode, "--db", f"{db}.whole", "--json", env=run_env
        )
        assert whole.returncode == 0, whole.stderr.decode()
        full = json.loads(whole.stdout)["run"]["cost_usd"]
        server.requests.clear()
        before = len(server.batch_log)
        cap = 0.8 * full
        first = await cardmill(
            "analyze", str(folder), *mode, "--max-cost", str(cap), "--json", env=run_env
        )
        assert first.returncode == 3, first.stderr.decode()
        data = json.loads(first.stdout)
        run_id = data["run"]["id"]
        assert data["summary"]["capped"] is True
        if batch:
            # the cap as given, not rounded to cents (a cap under a cent is not "$0.00")
            assert data["summary"]["stopped"].startswith(f"cost cap of ${cap:.4f} ")
        spent = data["run"]["cost_usd"]
        # Estimates count the recipe's prompt and schema, so they are not passed: the
        # documented bound (what requests in flight cost beyond their estimates) is 0.
        assert 0 < spent <= cap
        async with _opened(db) as storage:
            await check_invariants(storage, run_id)
            pending = await storage.list_uploads(run_id, UploadStatus.PENDING)
            assert 0 < len(pending) < DOCS
            assert (await storage.get_run(run_id)).status == RunStatus.CANCELLED
        sent = len(server.batch_log) - before if batch else len(server.requests)
        assert sent == DOCS - len(pending)

        higher = 1.5 * full
        again = await cardmill(
            "resume", run_id, *mode, "--max-cost", str(higher), "--json", env=run_env
        )
        assert again.returncode == 0, again.stderr.decode()
        run = await _finished(db, run_id, cards=1)  # the recipe's cards: one a note
        assert spent < run.cost_usd <= higher
        if batch:
            assert Counter(_documents_sent(server).values()) == {2: DOCS}  # whole run, this
        else:
            assert len(server.requests) == DOCS


async def _interrupted(
    folder: Path,
    db: str,
    env: dict[str, str],
    server: FakeAnthropicServer,
    stop: signal.Signals = signal.SIGINT,
) -> tuple[str, Any]:
    """An ``analyze --batch`` stopped by one Ctrl-C (or ``stop``) once its batch is live
    and looked at: the run's id, and the process's exit code and stderr."""
    command = [*cardmill_command(), "analyze", str(folder), "--batch", "--quiet", *POLL]
    err = Path(f"{db}.err")
    with err.open("wb") as stderr:  # noqa: ASYNC230
        async with trio.open_nursery() as nursery:
            analyze = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    check=False,
                    env=_env(env, server, db),
                    capture_stdout=True,
                    stderr=stderr,
                )
            )
            with trio.fail_after(30):
                await _until(lambda: server.batch_calls["retrieve"] >= 1)
            analyze.send_signal(stop)
    async with _opened(db) as storage:
        (run,) = await storage.list_runs()
    return run.id, (analyze.returncode, await trio.Path(err).read_text())


async def _end_batches(server: FakeAnthropicServer) -> None:
    """End every batch of the server, again and again (a provider that finishes them)."""
    while True:
        for batch_id in {s.batch_id for s in server.batch_log}:
            server.end_batch(batch_id)
        await trio.sleep(0.05)


async def test_ctrl_c_once_leaves_the_batch_live_then_resume_collects(
    folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    db = str(tmp_path / "sigint.db")
    async with FakeAnthropicServer(api_key=KEY, batch_delay=None) as server:
        run_id, (code, said) = await _interrupted(folder, db, env, server)
        assert code == 130, said
        assert f"Collect their results with: cardmill resume {run_id}" in said
        assert f"cancel them with: cardmill cancel {run_id}" in said
        async with _opened(db) as storage:
            (batch,) = await storage.list_batches(run_id)
            await check_invariants(storage, run_id)
        assert batch.state == BatchState.LIVE
        assert server.batch_calls["cancel"] == 0
        (batch_id,) = {s.batch_id for s in server.batch_log}
        assert server.batch_status(batch_id) == "in_progress"

        server.end_batch(batch_id)
        run_env = _env(env, server, db)
        resumed = await cardmill("resume", run_id, "--quiet", *POLL, env=run_env)
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert server.batch_calls["create"] == 1
    await _finished(db, run_id)
    _once_each(server)


async def test_sigterm_leaves_the_batch_live_then_resume_collects(
    folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    db = str(tmp_path / "sigterm.db")
    async with FakeAnthropicServer(api_key=KEY, batch_delay=None) as server:
        run_id, (code, said) = await _interrupted(folder, db, env, server, signal.SIGTERM)
        assert code == 143, said
        assert f"terminated (SIGTERM); the batches of run {run_id} go on" in said
        assert f"Collect their results with: cardmill resume {run_id}" in said
        assert "Ctrl-C again" not in said  # no second signal is waited for
        async with _opened(db) as storage:
            (batch,) = await storage.list_batches(run_id)
            await check_invariants(storage, run_id)
        assert batch.state == BatchState.LIVE
        assert server.batch_calls["cancel"] == 0

        (batch_id,) = {s.batch_id for s in server.batch_log}
        server.end_batch(batch_id)
        resumed = await cardmill("resume", run_id, "--quiet", *POLL, env=_env(env, server, db))
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert server.batch_calls["create"] == 1
    await _finished(db, run_id)
    _once_each(server)


async def test_cancel_a_live_batch_keeps_what_it_finished_then_resume(
    folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    db = str(tmp_path / "cancel.db")
    async with FakeAnthropicServer(api_key=KEY, batch_delay=None) as server:
        run_id, _ = await _interrupted(folder, db, env, server)
        run_env = _env(env, server, db)
        (batch_id,) = {s.batch_id for s in server.batch_log}

        async def end_when_canceling() -> None:
            await _until(lambda: server.batch_status(batch_id) == "canceling")
            server.end_batch(batch_id, processed=2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_when_canceling)
            cancelled = await cardmill("cancel", run_id, *POLL, env=run_env)
        assert cancelled.returncode == 1, cancelled.stderr.decode()
        assert "cancelling 1 batch" in cancelled.stderr.decode()
        assert server.batch_calls["cancel"] == 1
        async with _opened(db) as storage:
            await check_invariants(storage, run_id)
            stopped = await storage.get_run(run_id)
            assert stopped.status == RunStatus.CANCELLED
            assert stopped.completed_items == 2
            assert len(await storage.list_uploads(run_id, UploadStatus.PENDING)) == DOCS - 2

        # resume sends only the cancelled uploads, in a new batch
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_end_batches, server)
            resumed = await cardmill("resume", run_id, "--batch", "--quiet", *POLL, env=run_env)
            nursery.cancel_scope.cancel()
        assert resumed.returncode == 0, resumed.stderr.decode()
    await _finished(db, run_id)
    assert sorted(_documents_sent(server).values()) == [1, 1, 2, 2, 2, 2]


@pytest.fixture
def pg_db() -> Any:
    pg.require()
    schema = pg.new_schema()
    _SCHEMA[pg.DSN] = schema
    try:
        yield pg.DSN, schema
    finally:
        pg.drop_schema(schema)
        _SCHEMA.pop(pg.DSN, None)


async def test_batch_run_on_postgres(folder: Path, env: dict[str, str], pg_db: Any) -> None:
    dsn, schema = pg_db
    await _analyze_batch(folder, dsn, {**env, "CARDMILL_PG_SCHEMA": schema})


async def test_kill_9_while_polling_then_resume_on_postgres(
    folder: Path, env: dict[str, str], pg_db: Any
) -> None:
    dsn, schema = pg_db
    await _kill_then_resume(
        folder, dsn, {**env, "CARDMILL_PG_SCHEMA": schema}, _create_answer_lost, adopted=True
    )
