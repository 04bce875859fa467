"""cardmill.analyze_sync and resume_sync: scripts, threads, and signals as in the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trio

import cardmill

from .helpers import check, documents, scripted


def test_a_script_analyses_and_resumes(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    summary = cardmill.analyze_sync(documents(3), db=db, provider=scripted())
    assert summary.run.status == cardmill.RunStatus.SUCCEEDED
    assert check(Path(db), summary.run.id).total_cards == 6
    again = cardmill.resume_sync("latest", db=db, provider=scripted())
    assert again.run.id == summary.run.id
    assert again.requests == 0  # a finished run is left as it is


def test_from_worker_threads_at_once(tmp_path: Path) -> None:
    # As a Celery worker's or a Django server's threads would call it.
    db = str(tmp_path / "c.db")
    results: list[cardmill.RunSummary] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(cardmill.analyze_sync(documents(4), db=db, provider=scripted()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({r.run.id for r in results}) == 3
    for summary in results:
        assert check(Path(db), summary.run.id).total_cards == 8


def test_errors_are_raised_unwrapped(tmp_path: Path) -> None:
    with pytest.raises(cardmill.InputError, match="no such file or directory"):
        cardmill.analyze_sync([tmp_path / "missing.md"], db=str(tmp_path / "c.db"))
    with pytest.raises(cardmill.RunNotFound):
        cardmill.resume_sync("r-none", db=str(tmp_path / "c.db"))


def test_refused_inside_a_running_loop(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")

    async def in_asyncio() -> None:
        cardmill.analyze_sync(documents(1), db=db)

    with pytest.raises(cardmill.WrongEventLoop, match=r"await cardmill\.aio\.analyze") as caught:
        asyncio.run(in_asyncio())
    assert "\n" not in str(caught.value)

    async def in_trio() -> None:
        cardmill.resume_sync("latest", db=db)

    with pytest.raises(cardmill.WrongEventLoop, match="trio"):
        trio.run(in_trio)
    assert not (tmp_path / "c.db").exists()  # refused before anything was done


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import cardmill, cardmill.aio
    from cardmill.testing import ScriptedProvider, Step

    mode, db = sys.argv[1], sys.argv[2]
    provider = ScriptedProvider(default=Step(latency=3600.0))
    docs = [cardmill.Document(f"d{i}.md", b"# D\\n\\nText.\\n") for i in range(4)]

    def observer(event):
        if type(event).__name__ == "UploadStarted":
            print("started", flush=True)

    options = dict(db=db, provider=provider, observer=observer)
    try:
        if mode == "sync":
            cardmill.analyze_sync(docs, **options)
        else:
            asyncio.run(cardmill.aio.analyze(docs, **options))
    except cardmill.Terminated:
        print("terminated", flush=True)
        sys.exit(143)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


@pytest.mark.parametrize(
    ("mode", "signum", "said", "status"),
    [
        ("sync", signal.SIGTERM, "terminated", 143),
        ("sync", signal.SIGINT, "interrupted", 130),
        ("asyncio", signal.SIGINT, "interrupted", 130),
    ],
)
def test_a_signal_stops_the_run_resumable(
    tmp_path: Path, mode: str, signum: int, said: str, status: int
) -> None:
    db = tmp_path / "c.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ANTHROPIC_API_KEY", None)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"  # progress, not a sleep
        child.send_signal(signum)
        out, _ = child.communicate(timeout=120)
    assert out.split()[-1] == said
    assert child.returncode == status

    async def stopped() -> tuple[cardmill.Run, list[cardmill.Upload]]:
        async with cardmill.SQLiteStorage.open(db) as storage:
            [run] = await storage.list_runs()
            return run, await storage.list_uploads(run.id)

    run, uploads = trio.run(stopped)
    assert run.status == cardmill.RunStatus.CANCELLED
    assert {u.status for u in uploads} == {cardmill.UploadStatus.PENDING}
    summary = cardmill.resume_sync(run.id, db=str(db), provider=scripted())
    assert summary.run.status == cardmill.RunStatus.SUCCEEDED
    assert check(db, run.id).total_cards == 8
