"""Kill -9 a real `cardmill analyze` at random points of its progress, then resume it."""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from cardmill import RunStatus, SQLiteStorage, UploadStatus
from cardmill.testing import FakeAnthropicServer, lognormal

from ..conftest import thorough
from .conftest import cardmill, cardmill_command, verify_database

KEY = "fake-key-kill-test"
TRIALS = 200 if thorough() else 20
DOCS = 30
CARDS = 3  # the fake server's cards per answer


class KillAtAnswer:
    """A server latency that doubles as a progress hook.

    The fake server asks for a latency once per answer it is about to give, after it has
    logged the request. The ``n``-th answer is held back for good and ``reached`` is
    set: whatever happens next, the run exists and one of its uploads is in flight.
    """

    def __init__(self, n: int, latency: Callable[[random.Random], float]) -> None:
        self.n = n
        self.answers = 0
        self.reached = trio.Event()
        self._latency = latency

    def __call__(self, rng: random.Random) -> float:
        self.answers += 1
        if self.answers == self.n:
            self.reached.set()
            return math.inf
        return self._latency(rng)


@pytest.mark.slow
async def test_sigkill_at_random_points_of_progress_then_resume(
    tmp_path: Path, env: dict[str, str]
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(DOCS):
        (folder / f"note{i:02d}.md").write_text(
            f"# Note {i}\n\nThe {i}th note says one thing. Then another.\n"
        )
    rng = random.Random(20261128)
    killed_in_flight: list[int] = []
    limiter = trio.CapacityLimiter(2)

    async def trial(number: int, n: int) -> None:
        async with limiter:
            killer = KillAtAnswer(n, lognormal(0.12, 0.5))
            async with FakeAnthropicServer(
                latency=killer,
                requests_per_minute=900,
                burst_seconds=2,
                fault_rates={"529": 0.03, "500": 0.03},
                api_key=KEY,
                seed=number,
            ) as server:
                run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
                db = tmp_path / f"kill{number:03d}.db"
                log = tmp_path / f"kill{number:03d}.err"
                command = [*cardmill_command(), "analyze", str(folder), "--db", str(db)]
                with open(log, "wb") as stderr:  # noqa: ASYNC230
                    async with trio.open_nursery() as nursery:
                        process = await nursery.start(
                            partial(
                                trio.run_process,
                                [*command, "--concurrency", "4", "--quiet"],
                                check=False,
                                env=run_env,
                                capture_stdout=True,
                                stderr=stderr,
                            )
                        )

                        async def wake_on_exit() -> None:
                            await process.wait()
                            killer.reached.set()

                        nursery.start_soon(wake_on_exit)
                        await killer.reached.wait()
                        process.send_signal(signal.SIGKILL)
                why = f"analyze ended ({process.returncode}) before answer {n}: {log.read_text()}"
                assert killer.answers >= n, why
                assert process.returncode == -signal.SIGKILL

                # The run existed, and was in flight when it died.
                async with SQLiteStorage.open(db) as storage:
                    (run,) = await storage.list_runs()
                    assert run.status == RunStatus.RUNNING, run
                    assert run.completed_items < DOCS
                    assert await storage.list_uploads(run.id, UploadStatus.LOADING)
                await verify_database(db, finished=False)
                killed_in_flight.append(number)

                resumed = await cardmill("resume", run.id, "--db", str(db), "--quiet", env=run_env)
                assert resumed.returncode == 0, resumed.stderr.decode()
                (done,) = await verify_database(db, finished=True)
                assert (done.completed_items, done.total_cards) == (DOCS, DOCS * CARDS)

    async with trio.open_nursery() as nursery:
        for number in range(TRIALS):
            nursery.start_soon(trial, number, rng.randint(1, DOCS))
    print(f"kill trials: {TRIALS}, every one killed a run in flight and resumed it")
    assert sorted(killed_in_flight) == list(range(TRIALS))
