"""Nothing the command prints can drive the terminal: names, errors and titles from
files, models or a database have their control characters escaped."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

import pytest
import trio

from cardmill._printable import printable
from cardmill.cli._runner import setup_logging

from .conftest import cardmill_command
from .test_cli import cardmill

# ESC (clear the screen), the one-byte C1 CSI, BEL, a right-to-left override.
HOSTILE = "x\x1b[2J\x9b31m\x07\u202ey"
RAW = [b"\x1b", "\x9b".encode(), b"\x07", "\u202e".encode()]


def assert_inert(output: bytes) -> None:
    for raw in RAW:
        assert raw not in output, (raw, output)


def test_printable_escapes_what_acts_on_a_terminal() -> None:
    assert printable(HOSTILE) == "x\\x1b[2J\\x9b31m\\x07\\u202ey"
    assert printable("caf\udce9\n\tok") == "caf\\udce9\\n\\tok"
    assert printable("a\r\nb\rc\n\td\x1b", lines=True) == "a\r\nb\\rc\n\td\\x1b"
    assert printable("héllo · 1×429 …") == "héllo · 1×429 …"


def poison(db: Path) -> str:
    """Write hostile text where another program (or an older version) could have."""
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
        conn.execute("UPDATE runs SET name = ?", (HOSTILE,))
        conn.execute(
            "UPDATE uploads SET name = ?, error = ? WHERE status = 'failed'", (HOSTILE,) * 2
        )
        conn.execute("UPDATE cards SET title = ?, body = ?", (HOSTILE,) * 2)
    return str(run_id)


async def test_progress_summary_runs_and_show_print_no_control_characters(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "in\x1b]0;title\x07"
    folder.mkdir()
    (folder / "good.md").write_text("# Owls\n\nOwls hunt at night.\n")
    (folder / "bad\x9b2J\u202e.txt").write_bytes(b"")  # fails: empty document
    done = await cardmill("analyze", str(folder), env=env)
    assert done.returncode == 1, done.stderr.decode()
    assert "failed: " in done.stderr.decode()
    assert "bad\\x9b2J\\u202e.txt" in done.stderr.decode()
    assert_inert(done.stdout + done.stderr)

    run_id = poison(Path(env["CARDMILL_DB"]))
    for command in (["runs"], ["show", run_id], ["resume", run_id]):
        shown = await cardmill(*command, env=env)
        assert shown.returncode in (0, 1), shown.stderr.decode()
        assert_inert(shown.stdout + shown.stderr)
        assert "x\\x1b[2J\\x9b31m\\x07\\u202ey" in (shown.stdout + shown.stderr).decode()


async def test_export_escapes_on_a_terminal_and_keeps_data_in_a_pipe(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "owls.md").write_text("# Owls\n\nOwls hunt at night.\n")
    done = await cardmill("analyze", str(tmp_path / "owls.md"), "--quiet", env=env)
    assert done.returncode == 0, done.stderr.decode()
    run_id = poison(Path(env["CARDMILL_DB"]))

    piped = await cardmill("export", run_id, "--format", "md", env=env)
    assert HOSTILE.encode() in piped.stdout  # data for a program stays as stored

    leader, follower = os.openpty()
    try:
        process = await trio.run_process(
            [*cardmill_command(), "export", run_id, "--format", "md"],
            stdout=follower,
            capture_stderr=True,
            check=False,
            env=env,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:  # the terminal's other end closed
                    raise
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert process.returncode == 0, process.stderr.decode()
    assert_inert(shown)
    assert b"### x\\x1b[2J\\x9b31m\\x07\\u202ey" in shown


def test_log_records_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    for handler in before:
        root.removeHandler(handler)
    try:
        setup_logging(1)
        logging.getLogger("cardmill.engine").info("reclaimed %s", HOSTILE)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)
    err = capsys.readouterr().err
    assert "reclaimed x\\x1b[2J\\x9b31m\\x07\\u202ey" in err
    assert_inert(err.encode())
