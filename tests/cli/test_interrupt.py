"""Ctrl-C at any point after a run exists leaves it resumable, and says how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from cardmill import SQLiteStorage, UploadStatus
from cardmill.cli import main
from cardmill.cli._collect import MAX_FILE_BYTES
from cardmill.testing import check_invariants


def test_ctrl_c_while_unreadable_files_are_recorded_leaves_a_resumable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run exists, the engine has not started: the unreadable file is being recorded
    # as failed when Ctrl-C lands.
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CARDMILL_DB"):
        monkeypatch.delenv(key, raising=False)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nThe first document says something useful.\n")
    with (folder / "big.txt").open("wb") as big:
        big.truncate(MAX_FILE_BYTES + 10)  # too large: recorded as failed before the run
    db = str(tmp_path / "x.db")

    async def interrupted(self: Any, *args: Any, **kwargs: Any) -> bool:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(SQLiteStorage, "fail_upload", interrupted)
        first = CliRunner().invoke(main, ["analyze", str(folder), "--db", db])
    assert first.exit_code == 130, first.output
    assert "Resume with: cardmill resume run-" in first.stderr
    run_id = first.stderr.split("cardmill resume ")[1].split()[0]

    resumed = CliRunner().invoke(main, ["resume", run_id, "--db", db])
    assert resumed.exit_code == 1, resumed.output  # PARTIAL: the big file failed

    async def check() -> dict[str, UploadStatus]:
        async with SQLiteStorage.open(db) as storage:
            await check_invariants(storage, run_id)
            return {Path(u.name).name: u.status for u in await storage.list_uploads(run_id)}

    assert trio.run(check) == {"a.md": UploadStatus.COMPLETED, "big.txt": UploadStatus.FAILED}
