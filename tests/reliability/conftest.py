from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from cardmill import RunStatus, SQLiteStorage, UploadStatus
from cardmill.testing import check_invariants

from ..cli.conftest import cardmill_command as cardmill_command
from ..cli.conftest import env as env

pytestmark = pytest.mark.reliability


async def cardmill(*args: str, env: dict[str, str]) -> Any:
    return await trio.run_process(
        [*cardmill_command(), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


async def verify_database(path: Path, *, finished: bool) -> list[Any]:
    """Every run in the file: invariants exact, one set of cards per upload, no duplicate
    card within an upload. Returns the runs."""
    async with SQLiteStorage.open(path) as storage:
        runs = await storage.list_runs()
        for run in runs:
            await check_invariants(storage, run.id)
            if finished:
                assert run.status == RunStatus.SUCCEEDED, run
            for upload in await storage.list_uploads(run.id):
                cards = await storage.list_cards(run.id, upload.id)
                assert [c.ordinal for c in cards] == list(range(len(cards)))
                if upload.status == UploadStatus.COMPLETED:
                    assert len(cards) == upload.card_count
                    content = Counter((c.title, c.body, c.quote) for c in cards)
                    assert max(content.values(), default=1) == 1, f"duplicate card in {upload}"
                else:
                    assert cards == []
        return runs
