"""Kill -9 a real `cardmill analyze` at random instants, then `cardmill resume` it."""

from __future__ import annotations

import random
import signal
from functools import partial
from pathlib import Path

import pytest
import trio

from cardmill import SQLiteStorage
from cardmill.testing import FakeAnthropicServer, lognormal

from ..conftest import thorough
from .conftest import cardmill, cardmill_command, verify_database

KEY = "fake-key-kill-test"
TRIALS = 200 if thorough() else 20
DOCS = 30


@pytest.mark.slow
async def test_sigkill_at_random_instants_then_resume(tmp_path: Path, env: dict[str, str]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(DOCS):
        (folder / f"note{i:02d}.md").write_text(
            f"# Note {i}\n\nThe {i}th note says one thing. Then another.\n"
        )
    rng = random.Random(20261128)
    outcomes = {"resumed": 0, "finished_before_kill": 0, "killed_before_run": 0}
    limiter = trio.CapacityLimiter(2)
    async with FakeAnthropicServer(
        latency=lognormal(0.12, 0.5),
        requests_per_minute=900,
        burst_seconds=2,
        fault_rates={"529": 0.03, "500": 0.03},
        api_key=KEY,
        seed=7,
    ) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}

        async def trial(number: int, delay: float) -> None:
            async with limiter:
                db = tmp_path / f"kill{number:03d}.db"
                command = [*cardmill_command(), "analyze", str(folder), "--db", str(db)]
                async with trio.open_nursery() as nursery:
                    process = await nursery.start(
                        partial(
                            trio.run_process,
                            [*command, "--concurrency", "4", "--quiet"],
                            check=False,
                            env=run_env,
                            capture_stdout=True,
                            capture_stderr=True,
                        )
                    )
                    await trio.sleep(delay)
                    process.send_signal(signal.SIGKILL)
                if process.returncode == 0:
                    outcomes["finished_before_kill"] += 1
                if not db.exists():
                    outcomes["killed_before_run"] += 1
                    return
                runs = await verify_database(db, finished=False)
                if not runs:
                    outcomes["killed_before_run"] += 1
                    return
                (run,) = runs
                if not run.status.finished:
                    resumed = await cardmill(
                        "resume", run.id, "--db", str(db), "--quiet", env=run_env
                    )
                    assert resumed.returncode == 0, resumed.stderr.decode()
                    outcomes["resumed"] += 1
                await verify_database(db, finished=True)
                async with SQLiteStorage.open(db) as storage:
                    done = await storage.get_run(run.id)
                    assert done.completed_items == DOCS

        async with trio.open_nursery() as nursery:
            for number in range(TRIALS):
                nursery.start_soon(trial, number, rng.uniform(1.0, 3.5))
    print(f"kill trials: {TRIALS}, {outcomes}")
    # The kills must mostly land mid-run, or the test proves little.
    assert outcomes["resumed"] >= TRIALS // 2
