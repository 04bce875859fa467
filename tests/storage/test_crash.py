"""Crash test: SIGKILL a process in the middle of storage writes, then check everything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from cardmill import SQLiteStorage
from cardmill.testing import check_invariants

from ..conftest import thorough

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 200 if thorough() else 20


async def check_all(path: Path) -> int:
    async with SQLiteStorage.open(path) as storage:
        runs = await storage.list_runs()
        for run in runs:
            await check_invariants(storage, run.id)
        return sum(r.total_cards for r in runs)


@pytest.mark.slow
def test_sigkill_at_random_instants_keeps_invariants(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(20261128)
    cards_seen = []
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), str(kill)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        cards_seen.append(trio.run(check_all, path))
    # The child made progress between kills: the test exercised real writes.
    assert cards_seen[-1] > cards_seen[0] > 0
