"""cardmill.aio on asyncio loops: results, errors, two runs at once, a notebook's await."""

from __future__ import annotations

import ast
import asyncio
import itertools
from pathlib import Path

import pytest

import cardmill
import cardmill.aio
from cardmill.aio import _bridge

from .helpers import Ticker, check, documents, scripted

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_analyze_offline_by_default_as_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text(
        "# A\n\nThe mitochondria is the powerhouse of the cell.\n"
    )
    (tmp_path / "notes" / "b.txt").write_text("Photosynthesis turns light into sugar.\n")
    db = tmp_path / "cards.db"

    async def main() -> cardmill.RunSummary:
        return await cardmill.aio.analyze([tmp_path / "notes"], db=str(db))

    summary = asyncio.run(main())
    assert summary.run.status == cardmill.RunStatus.SUCCEEDED
    assert summary.run.provider == "extractive"
    assert summary.run.total_items == 2
    assert check(db, summary.run.id).total_cards == summary.run.total_cards > 0

    async def read() -> tuple[list[cardmill.Run], list[cardmill.Upload], list[cardmill.Card]]:
        return (
            await cardmill.aio.list_runs(db=str(db)),
            await cardmill.aio.list_uploads("latest", db=str(db)),
            await cardmill.aio.list_cards(summary.run.id, db=str(db)),
        )

    runs, uploads, cards = asyncio.run(read())
    assert [r.id for r in runs] == [summary.run.id]
    # Named as the CLI names them: the path as given, then the walk.
    assert [Path(u.name).name for u in uploads] == ["a.md", "b.txt"]
    assert len(cards) == summary.run.total_cards
    assert not _bridge._guests  # every guest run ended with its last call


def test_documents_and_a_provider_of_ones_own(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    provider = scripted()

    async def main() -> cardmill.RunSummary:
        return await cardmill.aio.analyze(documents(5), db=db, provider=provider, concurrency=2)

    summary = asyncio.run(main())
    assert summary.run.status == cardmill.RunStatus.SUCCEEDED
    assert summary.run.total_cards == 10
    assert provider.peak_in_flight == 2
    assert len(provider.calls) == 5


def test_two_runs_at_once_on_one_loop_and_the_loop_keeps_ticking(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")

    async def main() -> tuple[cardmill.RunSummary, cardmill.RunSummary, Ticker]:
        ticker = Ticker()
        async with asyncio.TaskGroup() as group:
            group.create_task(ticker.run())
            a = group.create_task(
                cardmill.aio.analyze(documents(8), db=db, provider=scripted(0.02))
            )
            b = group.create_task(
                cardmill.aio.analyze(documents(8), db=db, provider=scripted(0.02))
            )
            await asyncio.wait([a, b])
            ticker.stop()
        return a.result(), b.result(), ticker

    a, b, ticker = asyncio.run(main())
    assert a.run.id != b.run.id
    for summary in (a, b):
        assert summary.run.status == cardmill.RunStatus.SUCCEEDED
        assert check(Path(db), summary.run.id).total_cards == 16
    assert ticker.ticks > 0  # the loop was served while both ran


def test_errors_are_cardmills_own_not_trio_groups(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")

    async def missing_path() -> None:
        await cardmill.aio.analyze([tmp_path / "nowhere"], db=db)

    with pytest.raises(cardmill.InputError, match="nowhere: no such file or directory"):
        asyncio.run(missing_path())

    async def no_sources() -> None:
        await cardmill.aio.analyze([], db=db)

    with pytest.raises(cardmill.InputError, match="no documents given"):
        asyncio.run(no_sources())

    async def unknown_run() -> None:
        await cardmill.aio.create_run(documents(1), db=db)
        await cardmill.aio.get_run("r-nope", db=db)

    with pytest.raises(cardmill.RunNotFound):
        asyncio.run(unknown_run())

    async def bad_provider() -> None:
        await cardmill.aio.analyze(documents(1), db=db, provider="claude-ish")

    with pytest.raises(cardmill.InputError, match="provider: 'claude-ish'"):
        asyncio.run(bad_provider())

    async def no_such_folder() -> None:
        await cardmill.aio.analyze(documents(1), db=str(tmp_path / "nowhere" / "other.db"))

    with pytest.raises(cardmill.InputError, match="nowhere"):
        asyncio.run(no_such_folder())

    async def not_a_database() -> None:
        await cardmill.aio.list_runs(db=str(tmp_path))

    with pytest.raises(cardmill.InputError, match="is a directory"):
        asyncio.run(not_a_database())
    assert not _bridge._guests


def test_a_trio_api_awaited_from_asyncio_names_cardmill_aio(tmp_path: Path) -> None:
    async def engine() -> None:
        await cardmill.Engine(cardmill.MemoryStorage(), scripted()).execute("r-1")

    async def database() -> None:
        async with cardmill.SQLiteStorage.open(tmp_path / "c.db"):
            pass

    for attempt in (engine, database):
        with pytest.raises(cardmill.WrongEventLoop, match=r"cardmill\.aio") as caught:
            asyncio.run(attempt())
        assert "\n" not in str(caught.value)


def test_a_notebook_cell_awaits_at_top_level(tmp_path: Path) -> None:
    # As Jupyter runs a cell: compiled with top-level await, on a loop already running.
    source, db = str(EXAMPLES / "rate-limits.md"), str(tmp_path / "nb.db")
    cell = f"""
import cardmill.aio
summary = await cardmill.aio.analyze([{source!r}], db={db!r})
async for seen in cardmill.aio.follow(summary.run.id, db={db!r}):
    last = seen
"""
    code = compile(cell, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, object] = {}

    async def kernel() -> None:
        await eval(code, namespace)

    asyncio.run(kernel())
    summary = namespace["summary"]
    assert isinstance(summary, cardmill.RunSummary)
    assert summary.run.status == cardmill.RunStatus.SUCCEEDED
    last = namespace["last"]
    assert isinstance(last, cardmill.aio.RunProgress)
    assert last.finished
    assert last.run.total_cards == summary.run.total_cards


def test_follow_sees_a_run_analysed_elsewhere_until_it_is_finished(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")

    async def main() -> list[cardmill.aio.RunProgress]:
        run = await cardmill.aio.create_run(documents(6), db=db, provider="extractive")
        seen: list[cardmill.aio.RunProgress] = []

        async def watch() -> None:
            async for now in cardmill.aio.follow(run.id, db=db, interval=0.01):
                seen.append(now)

        async with asyncio.TaskGroup() as group:
            group.create_task(watch())
            group.create_task(cardmill.aio.resume(run.id, db=db))
        return seen

    seen = asyncio.run(main())
    assert seen[0].run.status in (cardmill.RunStatus.PENDING, cardmill.RunStatus.RUNNING)
    assert seen[-1].finished
    assert seen[-1].run.completed_items == 6
    assert all(a != b for a, b in itertools.pairwise(seen))  # only changes


def test_follow_refuses_a_bad_interval(tmp_path: Path) -> None:
    async def main() -> None:
        async for _ in cardmill.aio.follow("latest", db=str(tmp_path / "c.db"), interval=0):
            pass

    with pytest.raises(cardmill.InputError, match="interval"):
        asyncio.run(main())


def test_reading_a_database_not_made_yet_finds_no_runs_and_makes_no_file(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "not-yet.db")

    async def main() -> list[cardmill.Run]:
        for read in (cardmill.aio.get_run, cardmill.aio.progress, cardmill.aio.list_cards):
            with pytest.raises(cardmill.RunNotFound, match="run-123"):
                await read("run-123", db=db)
        with pytest.raises(cardmill.RunNotFound):
            await cardmill.aio.list_uploads("run-123", db=db)
        with pytest.raises(cardmill.RunNotFound):
            await cardmill.aio.resume("run-123", db=db)
        with pytest.raises(cardmill.InputError, match="no runs in this database yet"):
            await cardmill.aio.get_run("latest", db=db)
        return await cardmill.aio.list_runs(db=db)

    assert asyncio.run(main()) == []
    assert not Path(db).exists()


def test_a_run_made_for_workers_needs_no_key_where_it_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    db = str(tmp_path / "queue.db")

    async def main() -> cardmill.Run:
        return await cardmill.aio.create_run(documents(2), db=db, provider="anthropic")

    run = asyncio.run(main())
    assert (run.provider, run.status) == ("anthropic", cardmill.RunStatus.PENDING)
    assert run.model  # the default model, which the workers will use
    # Analysing it here does need the key, and says so in one line.
    with pytest.raises(cardmill.InputError, match="ANTHROPIC_API_KEY"):
        asyncio.run(cardmill.aio.resume(run.id, db=db))
    assert asyncio.run(cardmill.aio.get_run(run.id, db=db)).status == cardmill.RunStatus.PENDING


def test_a_second_analysis_reuses_the_first_ones_answers_unless_told_not_to(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "c.db")

    async def main() -> tuple[int, int, int]:
        first = await cardmill.aio.analyze(documents(3), db=db, provider="extractive")
        again = await cardmill.aio.analyze(documents(3), db=db, provider="extractive")
        fresh = await cardmill.aio.analyze(documents(3), db=db, provider="extractive", reuse=False)
        return first.reused, again.reused, fresh.reused

    assert asyncio.run(main()) == (0, 3, 0)
    sync = cardmill.analyze_sync(documents(3), db=db, provider="extractive")
    assert (sync.reused, sync.run.reused_items) == (3, 3)
